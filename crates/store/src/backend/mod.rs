//! Storage backends: where roots, locks and sectors live.
//!
//! A backend knows items, not formats: *meta items* (a database's root or
//! lock; small, versioned, replaced by compare-and-swap) and *sectors*
//! (immutable, content-addressed bytes, keyed by database id and hash). The
//! format and the commit protocol live in `donut-format` and the guest; the
//! storage layer (`donut-host`'s `storage`, `crate::db`) checks names, grants and hashes. So a new
//! backend implements only these few calls, and the simulator can attack
//! exactly them.

pub mod dynamo;
pub mod local;
pub mod memory;
pub mod metered;

use crate::stats::RequestStats;
use async_trait::async_trait;
use donut_format::{DbId, DbName, Hash, IntentKey};
use std::sync::{Arc, Mutex};

/// Which meta item of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetaKind {
    Root,
    Lock,
    /// What `gc` retired of a database: its oldest kept version, and
    /// what restores and forks are under way (docs/format.md, "Garbage
    /// collection").
    Gc,
    /// The databases sharing one database id (a fork family), keyed by
    /// `donut_format::family_key` (docs/format.md, "Garbage collection").
    Family,
}

impl MetaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetaKind::Root => "root",
            MetaKind::Lock => "lock",
            MetaKind::Gc => "gc",
            MetaKind::Family => "family",
        }
    }

    /// What `debug stats` counts it as.
    pub fn item_kind(self) -> ItemKind {
        match self {
            MetaKind::Root => ItemKind::Root,
            MetaKind::Lock => ItemKind::Lock,
            MetaKind::Gc | MetaKind::Family => ItemKind::Gc,
        }
    }
}

/// A meta item as stored: its version (compared by compare-and-swap) and the
/// encoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub version: u64,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The backend failed or could not be reached; a write's outcome may be
    /// unknown.
    #[error("{0}")]
    Unavailable(String),
    /// Throttled past the retry deadline.
    #[error("throttled: {0}")]
    Throttled(String),
    /// An item or request over a backend limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// A stored item that cannot be read back as written.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// Refused for want of permission, or because the table is gone:
    /// nothing was applied.
    #[error("denied: {0}")]
    Denied(String),
    /// A request the backend refuses as malformed: nothing was applied.
    #[error("invalid: {0}")]
    Invalid(String),
}

impl BackendError {
    /// True if the request certainly applied nothing (a write answered
    /// `Unavailable` may have landed).
    pub fn is_definite(&self) -> bool {
        !matches!(self, BackendError::Unavailable(_))
    }
}

/// A commit's fence: the version of the database's lock item that the
/// committing lease holder last wrote. Anyone who takes the lease over (or
/// renews, or releases it) writes a new version, so "the lock item is still
/// at this version" means "the lease is still mine". Checked with the root
/// swap, atomically where the backend can (DynamoDB: a ConditionCheck in the
/// same TransactWriteItems).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub lock_version: u64,
}

/// Whose root item a root swap replaces, besides its version. A name's
/// versions restart at 1 once `gc` removed what a removed database left,
/// so a version alone does not tell one database from the next of its
/// name: a swap checks both, or a handle on the removed database would
/// commit over its namesake (issue 31).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaces {
    /// A tombstone, or no root item (`expected` is then `None`): the name
    /// holds no database.
    Nothing,
    /// The root of this database.
    Database(DbId),
}

impl Replaces {
    /// Does the stored root item `body` hold what this says it replaces?
    pub fn holds(self, body: &[u8]) -> bool {
        match self {
            Replaces::Nothing => donut_format::Tombstone::is_tombstone(body),
            Replaces::Database(db) => root_db(body) == Some(db),
        }
    }
}

/// The database id a root item's body names: `None` for a tombstone (or
/// a body that is no root).
pub fn root_db(body: &[u8]) -> Option<DbId> {
    donut_format::Root::decode(body).ok().map(|root| root.db_id)
}

/// A commit as a backend receives it (the new root travels beside it).
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    pub name: &'a DbName,
    pub db: DbId,
    /// The root version it replaces; `None`: the name has no root.
    pub expected: Option<u64>,
    /// Whose root item is at `expected` (checked with the version).
    pub replaces: Replaces,
    /// Sectors the new root needs that are not stored yet.
    pub sectors: &'a [(Hash, Vec<u8>)],
    /// Only while the lease is still held (see [`Fence`]).
    pub fence: Option<Fence>,
    /// A GC state item swapped in the same atomic step (see [`StateSwap`]).
    pub state: Option<StateSwap<'a>>,
}

/// A restore's or fork's root write also swaps the GC state item holding
/// its mark: the root lands only while the state is still the one that
/// held the mark (a `gc` run that dropped the mark changed it), and a run
/// that decided from the state before the landing fails its own
/// compare-and-swap (docs/format.md, "Garbage collection"). Every backend
/// does this in one atomic step (DynamoDB: the same TransactWriteItems;
/// local: under `meta.lock`, root before state; memory: one update).
#[derive(Debug, Clone, Copy)]
pub struct StateSwap<'a> {
    /// Whose GC state (the restored database's, or a fork's source's).
    pub name: &'a DbName,
    /// The state's version as read (it held the mark).
    pub expected: u64,
    /// The state to write.
    pub meta: &'a Meta,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutMetaError {
    /// The item's version was not the expected one.
    #[error("conflict: the item changed")]
    Conflict,
    /// The commit's fence failed: its lease was taken over or lapsed.
    #[error("the lease fencing this commit was lost")]
    Fenced,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// A point where the host decides something from time alone
/// ([`Backend::yield_point`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YieldPoint {
    /// Is a held lease still good (`lock.remaining-ms`, an exclusive
    /// writer's claim)?
    LeaseCheck,
}

impl YieldPoint {
    pub fn as_str(self) -> &'static str {
        match self {
            YieldPoint::LeaseCheck => "lease check",
        }
    }
}

/// What kind of item, for [`StoredSummary::by_kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ItemKind {
    /// A database's current root (or tombstone).
    Root,
    /// A kept root version (docs/format.md, "History").
    History,
    /// A lock item.
    Lock,
    /// A page or manifest chunk.
    Sector,
    /// A catalog entry (DynamoDB: `ls` without a Scan).
    Catalog,
    /// `gc`'s bookkeeping: a database's GC state, a family's item.
    Gc,
    /// An intent item (docs/format.md, "Intents").
    Intent,
    /// Anything else in the store (not DonutDB's).
    Other,
}

impl ItemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Root => "root",
            ItemKind::History => "history",
            ItemKind::Lock => "lock",
            ItemKind::Sector => "sector",
            ItemKind::Catalog => "catalog",
            ItemKind::Gc => "gc",
            ItemKind::Intent => "intent",
            ItemKind::Other => "other",
        }
    }
}

/// Items and bytes of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindSummary {
    pub items: u64,
    pub bytes: u64,
}

/// Counts and sizes of what a backend stores, for `debug stats`, tests and
/// limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredSummary {
    pub items: u64,
    pub bytes: u64,
    pub largest_item_bytes: u64,
    /// The same by kind of item.
    pub by_kind: std::collections::BTreeMap<ItemKind, KindSummary>,
}

impl StoredSummary {
    /// Counts one item of `kind` and `bytes`.
    pub fn add(&mut self, kind: ItemKind, bytes: u64) {
        self.add_many(kind, 1, bytes, bytes);
    }

    /// Counts `items` items of `kind`, `bytes` in all, the largest
    /// `largest_bytes`.
    pub fn add_many(&mut self, kind: ItemKind, items: u64, bytes: u64, largest_bytes: u64) {
        self.items += items;
        self.bytes += bytes;
        self.largest_item_bytes = self.largest_item_bytes.max(largest_bytes);
        let of_kind = self.by_kind.entry(kind).or_default();
        of_kind.items += items;
        of_kind.bytes += bytes;
    }
}

/// The primitives every backend implements. All reads of meta items are
/// strongly consistent.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Where the data lives, for messages ("local directory /x").
    fn describe(&self) -> String;

    async fn get_meta(&self, kind: MetaKind, name: &DbName) -> Result<Option<Meta>, BackendError>;

    /// Stores `meta` if the item is at version `expected` (`None`: absent).
    /// A root is swapped with [`Backend::put_root`], which also checks
    /// whose root it replaces; here only its version is checked.
    async fn put_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: Option<u64>,
        meta: Meta,
    ) -> Result<(), PutMetaError>;

    /// Stores `meta` as the root of `name` (with its history item) if the
    /// root item is at version `expected` (`None`: absent) and holds what
    /// `replaces` says, checked together in one step.
    async fn put_root(
        &self,
        name: &DbName,
        expected: Option<u64>,
        replaces: Replaces,
        meta: Meta,
    ) -> Result<(), PutMetaError>;

    /// Every database with a root, in name order.
    async fn list_roots(&self) -> Result<Vec<(DbName, Meta)>, BackendError>;

    /// Version `version` of the root of `name` as its history keeps it
    /// (strongly consistent): every root write also writes its history
    /// item (docs/format.md, "History"). `None`: never written, retired,
    /// or above the current root (an item an earlier database of the same
    /// name left: every backend bounds time travel by the head).
    async fn get_root_version(
        &self,
        name: &DbName,
        version: u64,
    ) -> Result<Option<Meta>, BackendError>;

    /// The kept root versions of `name`, newest first: those below `below`
    /// (all, if `None`), at most `limit` of them. Strongly consistent.
    async fn root_history(
        &self,
        name: &DbName,
        below: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Meta>, BackendError>;

    /// Sectors by hash, in the order asked; `None` where absent. Bytes are as
    /// stored: the storage layer verifies them against their hashes.
    async fn get_sectors(
        &self,
        db: DbId,
        hashes: &[Hash],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError>;

    /// Stores sectors; storing one that exists is harmless.
    async fn put_sectors(&self, db: DbId, sectors: &[(Hash, Vec<u8>)]) -> Result<(), BackendError>;

    /// Items and bytes stored (all databases).
    async fn summary(&self) -> Result<StoredSummary, BackendError>;

    /// Deletes sectors (`gc` only: sectors no kept version references).
    /// Absent ones are no error, so a run killed midway can run again.
    async fn delete_sectors(&self, db: DbId, hashes: &[Hash]) -> Result<(), BackendError>;

    /// Deletes kept versions of `name`'s root (history items) that `gc`
    /// retired: never the current root's own version.
    async fn delete_root_versions(
        &self,
        name: &DbName,
        versions: &[u64],
    ) -> Result<(), BackendError>;

    /// Deletes a meta item if it is at version `expected` (`gc` removing
    /// what is left of a removed database: its tombstone — with its
    /// catalog entry —, lock and GC state).
    async fn delete_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: u64,
    ) -> Result<(), PutMetaError>;

    /// Stores an intent item of `name` (docs/format.md, "Intents"): the
    /// body as `donut_format::Intent` encodes it. Writing the same key
    /// again stores the same item.
    async fn put_intent(
        &self,
        name: &DbName,
        key: IntentKey,
        body: Vec<u8>,
    ) -> Result<(), BackendError>;

    /// `name`'s intent items whose bound is below `bound_below`, in key
    /// order, at most `limit` of them. Strongly consistent.
    async fn list_intents(
        &self,
        name: &DbName,
        bound_below: u64,
        limit: usize,
    ) -> Result<Vec<(IntentKey, Vec<u8>)>, BackendError>;

    /// Deletes intent items (`gc`, once what they list is dealt with).
    /// Absent ones are no error.
    async fn delete_intents(&self, name: &DbName, keys: &[IntentKey]) -> Result<(), BackendError>;

    /// Would `commit` send these sectors and the root (and a fence's
    /// check, if `fenced`) in one request?
    fn commits_in_one_request(&self, sectors: &[(Hash, Vec<u8>)], fenced: bool) -> bool {
        let _ = (sectors, fenced);
        false
    }

    /// A commit: stores `sectors`, then swaps the root of `name` from
    /// `expected` to `meta` (if `fence`, only while the lock item is at its
    /// version; if `state`, swapping that GC state item in the same atomic
    /// step — which every backend must override this to do). A backend
    /// that can do this in one request, or check the fence atomically with
    /// the swap, overrides it (and `commits_in_one_request`).
    async fn commit(&self, commit: Commit<'_>, meta: Meta) -> Result<(), PutMetaError> {
        commit_in_two(self, commit, meta).await
    }

    /// A point where the host decides something from time alone (is a
    /// lease still good?), with no request: a deterministic scheduler (the
    /// simulator's backend) may run other clients here. Nothing elsewhere.
    async fn yield_point(&self, point: YieldPoint) {
        let _ = point;
    }

    /// This backend with what its requests cost also added to `bill` (one
    /// call's share), if it reports what DynamoDB billed; `None` if it
    /// does not (`metered::billed` then bills with the model).
    fn billed_to(&self, bill: &Arc<Mutex<RequestStats>>) -> Option<Arc<dyn Backend>> {
        let _ = bill;
        None
    }
}

/// A commit as two requests: the sectors, then the root swap. A fence is
/// checked by reading the lock item between them: a separate step, so a
/// takeover in between is caught only by the root's own compare-and-swap
/// (which every commit has). Backends with transactions do better.
pub async fn commit_in_two<B: Backend + ?Sized>(
    backend: &B,
    commit: Commit<'_>,
    meta: Meta,
) -> Result<(), PutMetaError> {
    let Commit {
        name,
        db,
        expected,
        replaces,
        sectors,
        fence,
        state,
    } = commit;
    if state.is_some() {
        // Two requests cannot make the root and the state one step.
        return Err(BackendError::Invalid(
            "this backend cannot swap a gc state with a root".to_string(),
        )
        .into());
    }
    if !sectors.is_empty() {
        backend.put_sectors(db, sectors).await?;
    }
    if let Some(fence) = fence {
        let lock = backend.get_meta(MetaKind::Lock, name).await?;
        if lock.map(|m| m.version) != Some(fence.lock_version) {
            return Err(PutMetaError::Fenced);
        }
    }
    backend.put_root(name, expected, replaces, meta).await
}

/// Sectors as (hash, bytes), borrowed.
pub type Sectors<'a> = &'a [(Hash, Vec<u8>)];

/// How a commit travels on a backend with transactions (DynamoDB, and the
/// wrappers that model it). `None`: the sectors, then a conditional put
/// ([`commit_in_two`]). `Some((ahead, inside))`: `ahead` stored first in
/// batches, then one transaction of `inside`, the root and the fence's
/// condition check (and a [`StateSwap`]'s conditional put) — a fenced or
/// state-swapping commit always swaps its root that way, so the fence, the
/// state and the swap are one step.
pub fn transaction_plan<'a>(
    one_request: bool,
    commit: &Commit<'a>,
) -> Option<(Sectors<'a>, Sectors<'a>)> {
    match (
        one_request,
        commit.fence.is_some() || commit.state.is_some(),
    ) {
        (true, _) => Some((&[], commit.sectors)),
        (false, true) => Some((commit.sectors, &[])),
        (false, false) => None,
    }
}

pub use donut_format::limits::{
    ITEM_BYTES_MAX, ONE_REQUEST_BYTES_MAX, ONE_REQUEST_SECTORS_MAX, ROOT_ACTIONS,
    TRANSACTION_ACTIONS_MAX,
};
/// Most keys one DynamoDB `BatchGetItem` request takes.
pub const BATCH_GET_MAX: usize = 100;
/// Most items one DynamoDB `BatchWriteItem` request takes.
pub const BATCH_WRITE_MAX: usize = 25;

/// Does a commit of `sectors` (fenced or not) fit in one request? Counts
/// distinct sectors: a transaction writes each key once.
pub fn fits_one_request(sectors: &[(Hash, Vec<u8>)], fenced: bool) -> bool {
    let distinct: std::collections::HashSet<&Hash> = sectors.iter().map(|s| &s.0).collect();
    distinct.len() + ROOT_ACTIONS + fenced as usize <= TRANSACTION_ACTIONS_MAX
        && sectors.iter().map(|s| s.1.len()).sum::<usize>() <= ONE_REQUEST_BYTES_MAX
}

/// A backend wrapped around another (billing, latency, fault injection):
/// every call it does not override goes to [`Layer::inner`] unchanged, so
/// a wrapper writes only what it changes. It is a [`Backend`] through the
/// blanket impl below.
#[async_trait]
pub trait Layer: Send + Sync + 'static {
    type Inner: Backend + ?Sized;

    /// The backend underneath.
    fn inner(&self) -> &Self::Inner;

    fn describe(&self) -> String {
        self.inner().describe()
    }

    async fn get_meta(&self, kind: MetaKind, name: &DbName) -> Result<Option<Meta>, BackendError> {
        self.inner().get_meta(kind, name).await
    }

    async fn put_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: Option<u64>,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        self.inner().put_meta(kind, name, expected, meta).await
    }

    async fn put_root(
        &self,
        name: &DbName,
        expected: Option<u64>,
        replaces: Replaces,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        self.inner().put_root(name, expected, replaces, meta).await
    }

    async fn list_roots(&self) -> Result<Vec<(DbName, Meta)>, BackendError> {
        self.inner().list_roots().await
    }

    async fn get_root_version(
        &self,
        name: &DbName,
        version: u64,
    ) -> Result<Option<Meta>, BackendError> {
        self.inner().get_root_version(name, version).await
    }

    async fn root_history(
        &self,
        name: &DbName,
        below: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Meta>, BackendError> {
        self.inner().root_history(name, below, limit).await
    }

    async fn get_sectors(
        &self,
        db: DbId,
        hashes: &[Hash],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        self.inner().get_sectors(db, hashes).await
    }

    async fn put_sectors(&self, db: DbId, sectors: &[(Hash, Vec<u8>)]) -> Result<(), BackendError> {
        self.inner().put_sectors(db, sectors).await
    }

    async fn summary(&self) -> Result<StoredSummary, BackendError> {
        self.inner().summary().await
    }

    async fn delete_sectors(&self, db: DbId, hashes: &[Hash]) -> Result<(), BackendError> {
        self.inner().delete_sectors(db, hashes).await
    }

    async fn delete_root_versions(
        &self,
        name: &DbName,
        versions: &[u64],
    ) -> Result<(), BackendError> {
        self.inner().delete_root_versions(name, versions).await
    }

    async fn delete_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: u64,
    ) -> Result<(), PutMetaError> {
        self.inner().delete_meta(kind, name, expected).await
    }

    async fn put_intent(
        &self,
        name: &DbName,
        key: IntentKey,
        body: Vec<u8>,
    ) -> Result<(), BackendError> {
        self.inner().put_intent(name, key, body).await
    }

    async fn list_intents(
        &self,
        name: &DbName,
        bound_below: u64,
        limit: usize,
    ) -> Result<Vec<(IntentKey, Vec<u8>)>, BackendError> {
        self.inner().list_intents(name, bound_below, limit).await
    }

    async fn delete_intents(&self, name: &DbName, keys: &[IntentKey]) -> Result<(), BackendError> {
        self.inner().delete_intents(name, keys).await
    }

    fn commits_in_one_request(&self, sectors: &[(Hash, Vec<u8>)], fenced: bool) -> bool {
        self.inner().commits_in_one_request(sectors, fenced)
    }

    async fn commit(&self, commit: Commit<'_>, meta: Meta) -> Result<(), PutMetaError> {
        self.inner().commit(commit, meta).await
    }

    async fn yield_point(&self, point: YieldPoint) {
        self.inner().yield_point(point).await
    }

    /// `None`: a wrapper that changes calls cannot hand out the backend
    /// underneath it (billing then uses the model over the wrapper).
    fn billed_to(&self, bill: &Arc<Mutex<RequestStats>>) -> Option<Arc<dyn Backend>> {
        let _ = bill;
        None
    }
}

#[async_trait]
impl<L: Layer> Backend for L {
    fn describe(&self) -> String {
        Layer::describe(self)
    }

    async fn get_meta(&self, kind: MetaKind, name: &DbName) -> Result<Option<Meta>, BackendError> {
        Layer::get_meta(self, kind, name).await
    }

    async fn put_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: Option<u64>,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        Layer::put_meta(self, kind, name, expected, meta).await
    }

    async fn put_root(
        &self,
        name: &DbName,
        expected: Option<u64>,
        replaces: Replaces,
        meta: Meta,
    ) -> Result<(), PutMetaError> {
        Layer::put_root(self, name, expected, replaces, meta).await
    }

    async fn list_roots(&self) -> Result<Vec<(DbName, Meta)>, BackendError> {
        Layer::list_roots(self).await
    }

    async fn get_root_version(
        &self,
        name: &DbName,
        version: u64,
    ) -> Result<Option<Meta>, BackendError> {
        Layer::get_root_version(self, name, version).await
    }

    async fn root_history(
        &self,
        name: &DbName,
        below: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Meta>, BackendError> {
        Layer::root_history(self, name, below, limit).await
    }

    async fn get_sectors(
        &self,
        db: DbId,
        hashes: &[Hash],
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        Layer::get_sectors(self, db, hashes).await
    }

    async fn put_sectors(&self, db: DbId, sectors: &[(Hash, Vec<u8>)]) -> Result<(), BackendError> {
        Layer::put_sectors(self, db, sectors).await
    }

    async fn summary(&self) -> Result<StoredSummary, BackendError> {
        Layer::summary(self).await
    }

    async fn delete_sectors(&self, db: DbId, hashes: &[Hash]) -> Result<(), BackendError> {
        Layer::delete_sectors(self, db, hashes).await
    }

    async fn delete_root_versions(
        &self,
        name: &DbName,
        versions: &[u64],
    ) -> Result<(), BackendError> {
        Layer::delete_root_versions(self, name, versions).await
    }

    async fn delete_meta(
        &self,
        kind: MetaKind,
        name: &DbName,
        expected: u64,
    ) -> Result<(), PutMetaError> {
        Layer::delete_meta(self, kind, name, expected).await
    }

    async fn put_intent(
        &self,
        name: &DbName,
        key: IntentKey,
        body: Vec<u8>,
    ) -> Result<(), BackendError> {
        Layer::put_intent(self, name, key, body).await
    }

    async fn list_intents(
        &self,
        name: &DbName,
        bound_below: u64,
        limit: usize,
    ) -> Result<Vec<(IntentKey, Vec<u8>)>, BackendError> {
        Layer::list_intents(self, name, bound_below, limit).await
    }

    async fn delete_intents(&self, name: &DbName, keys: &[IntentKey]) -> Result<(), BackendError> {
        Layer::delete_intents(self, name, keys).await
    }

    fn commits_in_one_request(&self, sectors: &[(Hash, Vec<u8>)], fenced: bool) -> bool {
        Layer::commits_in_one_request(self, sectors, fenced)
    }

    async fn commit(&self, commit: Commit<'_>, meta: Meta) -> Result<(), PutMetaError> {
        Layer::commit(self, commit, meta).await
    }

    async fn yield_point(&self, point: YieldPoint) {
        Layer::yield_point(self, point).await
    }

    fn billed_to(&self, bill: &Arc<Mutex<RequestStats>>) -> Option<Arc<dyn Backend>> {
        Layer::billed_to(self, bill)
    }
}

/// A shared backend is a backend, so wrappers compose over `Arc<dyn Backend>`.
impl<B: Backend + ?Sized> Layer for std::sync::Arc<B> {
    type Inner = B;

    fn inner(&self) -> &B {
        self
    }

    fn billed_to(&self, bill: &Arc<Mutex<RequestStats>>) -> Option<Arc<dyn Backend>> {
        self.as_ref().billed_to(bill)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sectors(n: usize) -> Vec<(Hash, Vec<u8>)> {
        (0..n)
            .map(|i| (donut_format::hash(&i.to_le_bytes()), vec![0u8; 100]))
            .collect()
    }

    #[test]
    fn one_request_commits_count_every_action() {
        assert!(fits_one_request(&sectors(98), false));
        assert!(!fits_one_request(&sectors(99), false));
        assert!(fits_one_request(&sectors(97), true));
        assert!(
            !fits_one_request(&sectors(98), true),
            "98 + fence + root + history = 101"
        );
        // A sector twice is one action.
        let mut twice = sectors(97);
        twice.push(twice[0].clone());
        assert!(fits_one_request(&twice, true));
    }
}
