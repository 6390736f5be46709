//! The storage boundary the simulator attacks: every backend call of every
//! client waits for the scheduler's turn, and the scheduler decides what
//! happens to it (proceed, fail before or after applying, apply partly,
//! kill the caller).

use async_trait::async_trait;
use donut_format::{DbId, DbName, Hash, IntentKey};
use donut_host::MemoryBackend;
use donut_host::backend::{
    Backend, BackendError, Commit, Layer, Meta, MetaKind, PutMetaError, Replaces, YieldPoint,
};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

/// What the scheduler lets a storage call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Runs as asked.
    Proceed,
    /// Refused as throttled (nothing applied), as DynamoDB does past the
    /// SDK's retries.
    Throttle,
    /// Fails before reaching the store: nothing applied, outcome unknown to
    /// the caller.
    FailBefore,
    /// Applied, but the caller hears "unavailable" (a timeout, a lost
    /// reply): the ambiguous outcome. On a root swap: the lost CAS reply.
    FailAfter,
    /// A batch write applied in part, then "unavailable".
    Partial,
    /// Applied, then the caller's whole guest is killed before it hears.
    KillAfter,
    /// A root swap refused as DynamoDB cancels a transaction, for a named
    /// reason: nothing applied, and the caller is told so definitely.
    Cancel(Cancellation),
}

/// The `TransactionCanceledException` reasons the simulator gives, each as
/// the DynamoDB backend reports it (`crates/store/src/backend/dynamo.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// Another transaction on the same item: throttled.
    TransactionConflict,
    /// The request broke a DynamoDB rule: invalid.
    ValidationError,
    /// The item collection is full: too large.
    ItemCollectionSizeLimitExceeded,
}

impl Cancellation {
    pub const ALL: [Cancellation; 3] = [
        Cancellation::TransactionConflict,
        Cancellation::ValidationError,
        Cancellation::ItemCollectionSizeLimitExceeded,
    ];

    fn error(self, what: &str) -> BackendError {
        let said = format!(
            "simulated: {what} cancelled (TransactionCanceledException [{self:?}]); nothing was applied"
        );
        match self {
            Cancellation::TransactionConflict => BackendError::Throttled(said),
            Cancellation::ValidationError => BackendError::Invalid(said),
            Cancellation::ItemCollectionSizeLimitExceeded => BackendError::TooLarge(said),
        }
    }
}

/// A deliberately planted bug in the storage layer (mutation checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBug {
    /// The root swap ignores its expected version: a last-writer-wins
    /// commit with no condition.
    UnconditionalCommit,
    /// A refused root swap still writes its history item (as a history
    /// written beside the swap instead of with it would): time travel to
    /// that version reads the loser's database.
    LosersHistory,
    /// A restore's or fork's root lands without its GC state (the
    /// review's finding 1 with its fix reverted): written even after `gc`
    /// dropped its mark and collected what its source version held.
    LandsWithoutMark,
}

/// What kind of storage call waits for its turn: which faults the
/// scheduler may give it depends on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// A read (root, lock, sectors).
    Read,
    /// A conditional write of a meta item (a lock, or a root by itself).
    MetaWrite,
    /// A batch of sectors.
    SectorWrite,
    /// A commit's root swap, with its sectors if it carries any, fenced by
    /// a lease or not.
    RootSwap { fenced: bool, sectors: bool },
    /// A lease check that needs no request (`Backend::yield_point`).
    LeaseCheck,
}

/// A storage call as the scheduler sees it: its kind, and words for the
/// trace ("swap root v27").
#[derive(Debug, Clone)]
pub struct StorageCall {
    pub kind: CallKind,
    pub what: String,
}

impl StorageCall {
    pub fn new(kind: CallKind, what: String) -> StorageCall {
        StorageCall { kind, what }
    }

    /// Changes the store (so it can apply and then lose its answer).
    pub fn writes(&self) -> bool {
        matches!(
            self.kind,
            CallKind::MetaWrite | CallKind::SectorWrite | CallKind::RootSwap { .. }
        )
    }

    /// Writes sectors (so it can apply in part).
    pub fn writes_sectors(&self) -> bool {
        matches!(
            self.kind,
            CallKind::SectorWrite | CallKind::RootSwap { sectors: true, .. }
        )
    }

    /// A commit's root swap (so it can be cancelled as a transaction).
    pub fn swaps_root(&self) -> bool {
        matches!(self.kind, CallKind::RootSwap { .. })
    }

    /// Depends on a lease still being held when it runs.
    pub fn lease_bound(&self) -> bool {
        matches!(
            self.kind,
            CallKind::RootSwap { fenced: true, .. } | CallKind::LeaseCheck
        )
    }
}

impl std::fmt::Display for StorageCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

/// The scheduler's side of the boundary, shared by every client's backend.
#[derive(Default)]
pub struct Turns {
    /// Calls waiting for their turn: client → what it asks.
    pub pending: BTreeMap<usize, StorageCall>,
    /// Decisions handed out, not yet picked up.
    pub granted: BTreeMap<usize, Decision>,
    /// Clients whose guest must die now (KillAfter happened).
    pub killed: BTreeSet<usize>,
    /// Root versions read, by client, in order (drained by the run loop:
    /// which versions a client may be reading).
    pub roots_read: Vec<(usize, u64)>,
}

pub type SharedTurns = Arc<Mutex<Turns>>;

pub fn lock(turns: &SharedTurns) -> MutexGuard<'_, Turns> {
    turns.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until the scheduler grants `client` a decision.
struct Turn {
    turns: SharedTurns,
    client: usize,
    op: Option<StorageCall>,
}

impl Future for Turn {
    type Output = Decision;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Decision> {
        let this = &mut *self;
        let mut turns = lock(&this.turns);
        if let Some(decision) = turns.granted.remove(&this.client) {
            assert!(
                !turns.pending.contains_key(&this.client),
                "a granted call is still pending"
            );
            return Poll::Ready(decision);
        }
        if let Some(op) = this.op.take() {
            let previous = turns.pending.insert(this.client, op);
            assert!(
                previous.is_none(),
                "client {} has two storage calls in flight",
                this.client
            );
        }
        // The simulator polls by hand after each grant: no waker needed.
        Poll::Pending
    }
}

/// One client's view of the shared in-memory store.
pub struct SimBackend {
    pub client: usize,
    pub turns: SharedTurns,
    pub store: MemoryBackend,
    /// Commits go in one request (sectors and root together), as DynamoDB's
    /// TransactWriteItems; otherwise sectors first, then the root.
    pub one_request: bool,
    pub bug: Option<StoreBug>,
}

impl SimBackend {
    async fn turn(&self, op: StorageCall) -> Decision {
        Turn {
            turns: self.turns.clone(),
            client: self.client,
            op: Some(op),
        }
        .await
    }

    /// After a KillAfter: the guest dies here, never hearing back.
    async fn die<T>(&self) -> T {
        lock(&self.turns).killed.insert(self.client);
        std::future::pending().await
    }

    fn unavailable(what: &str) -> BackendError {
        BackendError::Unavailable(format!("simulated: {what} timed out"))
    }

    fn throttled(what: &str) -> BackendError {
        BackendError::Throttled(format!("simulated: {what} throttled"))
    }

    /// A read, as the scheduler decides: it happens, or fails (nothing to
    /// apply), or its guest dies after it.
    async fn read<T>(
        &self,
        what: String,
        read: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        match self
            .turn(StorageCall::new(CallKind::Read, what.clone()))
            .await
        {
            Decision::Throttle | Decision::Cancel(_) => Err(Self::throttled(&what)),
            Decision::FailBefore | Decision::FailAfter | Decision::Partial => {
                Err(Self::unavailable(&what))
            }
            Decision::Proceed => read.await,
            Decision::KillAfter => self.die().await,
        }
    }

    /// A meta write, as the scheduler decides: refused before, applied,
    /// applied with its reply lost, or applied and then its guest killed.
    async fn write(
        &self,
        call: StorageCall,
        apply: impl Future<Output = Result<(), PutMetaError>>,
    ) -> Result<(), PutMetaError> {
        let what = call.what.clone();
        match self.turn(call).await {
            Decision::Throttle => Err(Self::throttled(&what).into()),
            Decision::Cancel(reason) => Err(reason.error(&what).into()),
            Decision::FailBefore => Err(Self::unavailable(&what).into()),
            Decision::Proceed => apply.await,
            Decision::FailAfter | Decision::Partial => {
                apply.await?;
                Err(Self::unavailable(&what).into())
            }
            Decision::KillAfter => {
                let _ = apply.await;
                self.die().await
            }
        }
    }

    /// A batch write (sectors put or deleted), as the scheduler decides:
    /// like a meta write, or applied in half then "unavailable";
    /// `apply(true)` applies it whole, `apply(false)` its first half; a
    /// kill after it applies it whole if `kill_whole`, else in half.
    async fn batch<F>(
        &self,
        what: String,
        kill_whole: bool,
        apply: impl Fn(bool) -> F,
    ) -> Result<(), BackendError>
    where
        F: Future<Output = Result<(), BackendError>>,
    {
        let call = StorageCall::new(CallKind::SectorWrite, what.clone());
        match self.turn(call).await {
            Decision::Throttle | Decision::Cancel(_) => Err(Self::throttled(&what)),
            Decision::FailBefore => Err(Self::unavailable(&what)),
            Decision::Proceed => apply(true).await,
            Decision::FailAfter => {
                apply(true).await?;
                Err(Self::unavailable(&what))
            }
            Decision::Partial => {
                apply(false).await?;
                Err(Self::unavailable(&what))
            }
            Decision::KillAfter => {
                let _ = apply(kill_whole).await;
                self.die().await
            }
        }
    }

    /// The planted bug: the expected version becomes whatever is current.
    async fn expected_root(&self, name: &DbName, expected: Option<u64>) -> Option<u64> {
        match self.bug {
            Some(StoreBug::UnconditionalCommit) => self
                .store
                .get_meta(MetaKind::Root, name)
                .await
                .ok()
                .flatten()
                .map(|m| m.version)
                .or(expected),
            Some(StoreBug::LosersHistory | StoreBug::LandsWithoutMark) | None => expected,
        }
    }

    /// The root swap (and fence), with no sectors: one step.
    async fn swap_root(&self, commit: Commit<'_>, meta: Meta) -> Result<(), PutMetaError> {
        let what = if commit.sectors.is_empty() {
            format!("swap root v{}", meta.version)
        } else {
            format!("commit v{} +{} sectors", meta.version, commit.sectors.len())
        };
        let kind = CallKind::RootSwap {
            fenced: commit.fence.is_some(),
            sectors: !commit.sectors.is_empty(),
        };
        let what = if commit.fence.is_some() {
            format!("{what} fenced")
        } else {
            what
        };
        let what = match commit.state {
            Some(state) => format!("{what} + gc state of {}", state.name.as_str()),
            None => what,
        };
        self.write(StorageCall::new(kind, what), async move {
            let mut commit = commit;
            commit.expected = self.expected_root(commit.name, commit.expected).await;
            if self.bug == Some(StoreBug::LandsWithoutMark) {
                commit.state = None;
            }
            let history = (self.bug == Some(StoreBug::LosersHistory)).then(|| meta.clone());
            let out = self.store.commit(commit, meta).await;
            if let (Some(meta), Err(PutMetaError::Conflict)) = (history, &out) {
                self.store.overwrite_history(commit.name, meta);
            }
            out
        })
        .await
    }
}

#[async_trait]
impl Layer for SimBackend {
    type Inner = MemoryBackend;

    fn inner(&self) -> &MemoryBackend {
        &self.store
    }

    fn describe(&self) -> String {
        "simulated store".to_string()
    }

    async fn yield_point(&self, point: YieldPoint) {
        // Other clients may run here (a lease may lapse meanwhile); of the
        // faults, only a kill means anything without a request.
        let call = StorageCall::new(CallKind::LeaseCheck, point.as_str().to_string());
        if self.turn(call).await == Decision::KillAfter {
            self.die::<()>().await
        }
    }

    async fn get_meta(&self, kind: MetaKind, name: &DbName) -> Result<Option<Meta>, BackendError> {
        let what = format!("get {}", kind.as_str());
        let found = self.read(what, self.store.get_meta(kind, name)).await?;
        if let (MetaKind::Root, Some(meta)) = (kind, &found) {
            lock(&self.turns)
                .roots_read
                .push((self.client, meta.version));
        }
        Ok(found)
    }

    async fn put_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: Option<u64>,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        let what = format!("put {} v{}", kind.as_str(), meta.version);
        self.write(StorageCall::new(CallKind::MetaWrite, what), async {
            let expected = match kind {
                MetaKind::Root => self.expected_root(name, expected).await,
                MetaKind::Lock | MetaKind::Gc | MetaKind::Family => expected,
            };
            self.store.put_meta(kind, name, expected, meta).await
        })
        .await
    }

    async fn put_root(
        &self,
        name: &DbName,
        expected: Option<u64>,
        replaces: Replaces,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        let what = format!("put root v{}", meta.version);
        self.write(StorageCall::new(CallKind::MetaWrite, what), async {
            let expected = self.expected_root(name, expected).await;
            self.store.put_root(name, expected, replaces, meta).await
        })
        .await
    }

    async fn get_root_version(
        &self,
        name: &DbName,
        version: u64,
    ) -> Result<Option<Meta>, BackendError> {
        let what = format!("get history v{version}");
        self.read(what, self.store.get_root_version(name, version))
            .await
    }

    async fn root_history(
        &self,
        name: &DbName,
        below: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Meta>, BackendError> {
        let what = format!("list history below {below:?}");
        self.read(what, self.store.root_history(name, below, limit))
            .await
    }

    async fn delete_sectors(&self, db: DbId, hashes: &[Hash]) -> Result<(), BackendError> {
        let what = format!("delete {} sectors", hashes.len());
        let half = hashes.len() / 2;
        // A kill lands mid-batch: half of it deleted.
        self.batch(what, false, |whole| {
            self.store
                .delete_sectors(db, if whole { hashes } else { &hashes[..half] })
        })
        .await
    }

    async fn delete_root_versions(
        &self,
        name: &DbName,
        versions: &[u64],
    ) -> Result<(), BackendError> {
        let what = format!("delete {} history items", versions.len());
        let call = StorageCall::new(CallKind::MetaWrite, what);
        let apply = async {
            self.store
                .delete_root_versions(name, versions)
                .await
                .map_err(PutMetaError::Backend)
        };
        self.write(call, apply).await.map_err(|e| match e {
            PutMetaError::Backend(e) => e,
            other => BackendError::Unavailable(other.to_string()),
        })
    }

    async fn delete_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: u64,
    ) -> Result<(), PutMetaError> {
        let what = format!("delete {} v{expected}", kind.as_str());
        let call = StorageCall::new(CallKind::MetaWrite, what);
        self.write(call, self.store.delete_meta(kind, name, expected))
            .await
    }

    async fn put_intent(
        &self,
        name: &DbName,
        key: IntentKey,
        body: Vec<u8>,
    ) -> Result<(), BackendError> {
        // Its id hashes random transaction ids: not in the trace.
        let what = format!("put intent bound {}", key.bound);
        // One item: a kill lands after it or before it, never half.
        self.batch(what, true, |_| {
            self.store.put_intent(name, key, body.clone())
        })
        .await
    }

    async fn list_intents(
        &self,
        name: &DbName,
        bound_below: u64,
        limit: usize,
    ) -> Result<Vec<(IntentKey, Vec<u8>)>, BackendError> {
        let what = format!("list intents below {bound_below}");
        self.read(what, self.store.list_intents(name, bound_below, limit))
            .await
    }

    async fn delete_intents(&self, name: &DbName, keys: &[IntentKey]) -> Result<(), BackendError> {
        let what = format!("delete {} intents", keys.len());
        let half = keys.len() / 2;
        self.batch(what, false, |whole| {
            self.store
                .delete_intents(name, if whole { keys } else { &keys[..half] })
        })
        .await
    }

    async fn get_sectors(
        &self,
        db: DbId,
        hashes: &[Hash],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let what = format!("get {} sectors", hashes.len());
        self.read(what, self.store.get_sectors(db, hashes)).await
    }

    async fn put_sectors(&self, db: DbId, sectors: &[(Hash, Vec<u8>)]) -> Result<(), BackendError> {
        let what = format!("put {} sectors", sectors.len());
        let half = sectors.len() / 2;
        // A kill lands after the batch applied whole.
        self.batch(what, true, |whole| {
            self.store
                .put_sectors(db, if whole { sectors } else { &sectors[..half] })
        })
        .await
    }

    fn commits_in_one_request(&self, sectors: &[(Hash, Vec<u8>)], fenced: bool) -> bool {
        self.one_request && donut_host::backend::fits_one_request(sectors, fenced)
    }

    async fn commit(&self, commit: Commit<'_>, meta: Meta) -> Result<(), PutMetaError> {
        if Layer::commits_in_one_request(self, commit.sectors, commit.fence.is_some()) {
            return self.swap_root(commit, meta).await;
        }
        // Two steps: a crash between them leaves sectors no root references
        // (harmless, content-addressed) and the old root in place.
        if !commit.sectors.is_empty() {
            Layer::put_sectors(self, commit.db, commit.sectors).await?;
        }
        let mut root_only = commit;
        root_only.sectors = &[];
        self.swap_root(root_only, meta).await
    }
}
