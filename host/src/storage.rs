//! `donut:storage` for guests: the thin WIT host implementation over
//! `donut-store` — handles, the instance's grant, hash checks, limits,
//! request counters — and nothing the CLI or a library caller needs
//! without a guest (that lives in `donut_store`).

pub use donut_format::limits::{
    HANDLES_PER_INSTANCE_MAX, LEASE_MS_MAX, PUT_CALL_BYTES_MAX, SECTOR_BYTES_MAX,
    SECTORS_PER_CALL_MAX,
};
use donut_format::{At, DbId, DbName, DbRef, HASH_LEN, Hash, LockState, Root, hash_hex, verify};
use donut_store::backend::{Backend, BackendError, Commit, Fence, Meta, PutMetaError};
pub use donut_store::cache::{SectorCache, Versions};
pub use donut_store::clock::{Clock, VirtualTime};
pub use donut_store::db::{
    Stored, create_database, new_root, read_root, read_stored, remove_database, swap_root,
};
pub use donut_store::disk_cache::DiskCache;
pub use donut_store::error::StorageError;
pub use donut_store::gc::{
    GcOptions, GcReport, RESTORE_GRACE_MS, RETAIN_MS_DEFAULT, collect as collect_garbage,
};
pub use donut_store::grant::Grant;
pub use donut_store::history::{
    Restored, Version, fork, list_versions, read_root_at, restore, restore_over,
};
use donut_store::intent;
pub use donut_store::lease::LeaseRenewal;
use donut_store::lease::{
    Lease, SharedLease, renew_in_background, renew_lease, update_lock, with_holder, without_holder,
};
pub use donut_store::quota::{CallQuota, QuotaExceeded, QuotaUse};
use donut_store::random_u64;
use donut_store::stats::{RequestStats, StorageStats};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use wasmtime::component::{Resource, ResourceTable, ResourceTableError};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "donut:storage/client",
    imports: { default: async | trappable },
    trappable_error_type: {
        "donut:storage/types.error" => StorageError,
    },
    with: {
        "donut:storage/storage.database": DatabaseHandle,
        "donut:storage/storage.lock": LockHandle,
    },
});

use donut::storage::types::{Error as WitError, LockMode as WitLockMode, Root as WitRoot};

/// The instance's resource table, its errors as storage errors: a bad
/// handle is a host fault that ends the call.
#[derive(Default)]
struct Handles {
    table: ResourceTable,
    /// Handles held now (at most [`HANDLES_PER_INSTANCE_MAX`]).
    live: usize,
}

fn fault(e: ResourceTableError) -> StorageError {
    StorageError::Trap(e.to_string())
}

impl Handles {
    fn push<T: Send + 'static>(&mut self, value: T) -> Result<Resource<T>, StorageError> {
        if self.live >= HANDLES_PER_INSTANCE_MAX {
            return Err(StorageError::TooLarge(format!(
                "{HANDLES_PER_INSTANCE_MAX} handles open at once; drop some first"
            )));
        }
        let handle = self.table.push(value).map_err(fault)?;
        self.live += 1;
        Ok(handle)
    }

    fn get<T: 'static>(&self, handle: &Resource<T>) -> Result<&T, StorageError> {
        self.table.get(handle).map_err(fault)
    }

    fn get_mut<T: 'static>(&mut self, handle: &Resource<T>) -> Result<&mut T, StorageError> {
        self.table.get_mut(handle).map_err(fault)
    }

    fn delete<T: 'static>(&mut self, handle: Resource<T>) -> Result<T, StorageError> {
        let value = self.table.delete(handle).map_err(fault)?;
        assert!(self.live > 0, "a handle deleted that was never pushed");
        self.live -= 1;
        Ok(value)
    }
}

/// An open database handle held by a guest.
pub struct DatabaseHandle {
    name: DbName,
    /// Learned from the root; sectors are keyed by it.
    db_id: Option<DbId>,
    /// Opened as `NAME@AT`: a past version, read-only.
    at: Option<At>,
    /// That version's root, once read (it never changes).
    pinned: Option<(Meta, Root)>,
}

impl DatabaseHandle {
    fn new(name: DbName, db_id: Option<DbId>, at: Option<At>) -> DatabaseHandle {
        DatabaseHandle {
            name,
            db_id,
            at,
            pinned: None,
        }
    }
}

pub struct LockHandle {
    lease: SharedLease,
    /// The background renewal, if one runs.
    renewer: Option<tokio::task::AbortHandle>,
}

impl Drop for LockHandle {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

/// The per-instance storage state, owned by the store.
pub struct StorageCtx {
    backend: Arc<dyn Backend>,
    grant: Grant,
    clock: Clock,
    table: Handles,
    stats: Arc<StorageStats>,
    cache: Option<Arc<SectorCache>>,
    renewal: LeaseRenewal,
    /// Leases this instance holds, for on-call renewal.
    leases: Vec<std::sync::Weak<tokio::sync::Mutex<Lease>>>,
    /// Lock items as this instance last wrote them (version, state).
    known_locks: std::collections::HashMap<DbName, (u64, LockState)>,
    /// Newest root versions this instance saw, when no cache is shared.
    versions: Versions,
    /// The newest root version of each database this instance read,
    /// created or committed: at least the version any of its transactions
    /// read, so the bound of the intents its `put-sectors` calls record
    /// (docs/format.md, "Intents"). Never forgets, unlike `versions`.
    seen: std::collections::HashMap<DbName, u64>,
    /// Root swaps in a row that went unanswered (`unavailable`): the next
    /// one — usually the guest re-sending the same commit — backs off
    /// first ([`commit_backoff_ms`]).
    unanswered_commits: u32,
    /// What this call may ask of storage, what it asked, and the limit it
    /// reached if it did (the instance is then stopped).
    quota: CallQuota,
    quota_used: QuotaUse,
    quota_exceeded: Option<QuotaExceeded>,
    /// What this call's requests cost, if billed ([`StorageCtx::billed`]).
    bill: Option<Arc<std::sync::Mutex<RequestStats>>>,
}

/// First and largest pause before a commit that follows an unanswered
/// one: full jitter over an exponential ceiling, as AWS advises for
/// re-sends (the SDK's own attempts back off the same way below this).
pub const COMMIT_BACKOFF_MS_BASE: u64 = 50;
pub const COMMIT_BACKOFF_MS_MAX: u64 = 2_000;

/// The pause before a commit that follows `unanswered` unanswered ones.
pub fn commit_backoff_ms(unanswered: u32, random: u64) -> u64 {
    let ceiling_ms = COMMIT_BACKOFF_MS_BASE
        .saturating_mul(1 << unanswered.saturating_sub(1).min(10))
        .min(COMMIT_BACKOFF_MS_MAX);
    random % (ceiling_ms + 1)
}

impl StorageCtx {
    pub fn new(backend: Arc<dyn Backend>, grant: Grant) -> StorageCtx {
        StorageCtx {
            backend,
            grant,
            clock: Clock::System,
            table: Handles::default(),
            stats: Arc::new(StorageStats::default()),
            cache: None,
            renewal: LeaseRenewal::default(),
            leases: Vec::new(),
            known_locks: std::collections::HashMap::new(),
            versions: Versions::default(),
            seen: std::collections::HashMap::new(),
            unanswered_commits: 0,
            quota: CallQuota::unlimited(),
            quota_used: QuotaUse::default(),
            quota_exceeded: None,
            bill: None,
        }
    }

    /// Bills this call's requests as DynamoDB does: what the DynamoDB
    /// backend's answers report, or the billing model's figures on the
    /// other backends ([`RequestStats`], read by [`StorageCtx::bill`]).
    pub fn billed(mut self) -> Self {
        let bill = Arc::new(std::sync::Mutex::new(RequestStats::default()));
        self.backend = donut_store::backend::metered::billed(&self.backend, &bill);
        self.bill = Some(bill);
        self
    }

    /// What this call's requests have cost so far, if it is billed.
    pub fn bill(&self) -> Option<RequestStats> {
        let bill = self.bill.as_ref()?;
        Some(bill.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Limits this call's storage work; past a limit the instance stops.
    pub fn with_quota(mut self, quota: CallQuota) -> Self {
        self.quota = quota;
        self
    }

    /// Allows `quota` more work from now on: a session's next request gets
    /// a call's quota of its own (what came before is not counted in it).
    pub fn limit_from_now(&mut self, quota: CallQuota) {
        let used = self.quota_used;
        let from_now = |max: Option<u64>, used: u64| max.map(|max| used.saturating_add(max));
        self.quota = CallQuota {
            storage_calls_max: from_now(quota.storage_calls_max, used.storage_calls),
            sectors_max: from_now(quota.sectors_max, used.sectors),
            bytes_max: from_now(quota.bytes_max, used.bytes),
        };
    }

    /// What this call has asked of storage so far.
    pub fn quota_used(&self) -> QuotaUse {
        self.quota_used
    }

    /// The per-call limit this call reached, if it did.
    pub fn quota_exceeded(&self) -> Option<QuotaExceeded> {
        self.quota_exceeded
    }

    /// Counts work against the call's quota. Past a limit the guest is
    /// stopped (a trap: whatever it was doing, nothing more reaches
    /// storage; a commit not yet swapped never lands), and so is every
    /// later call.
    fn charge(&mut self, storage_calls: u64, sectors: u64, bytes: u64) -> Result<(), StorageError> {
        let charged = match self.quota_exceeded {
            Some(exceeded) => Err(exceeded),
            None => self
                .quota
                .charge(&mut self.quota_used, storage_calls, sectors, bytes),
        };
        charged.map_err(|exceeded| {
            self.quota_exceeded = Some(exceeded);
            StorageError::Trap(format!("the call reached {exceeded} and was stopped"))
        })
    }

    /// Creates database `name` if the grant allows, counted as one root
    /// swap: the guest's `create` and the CLI's.
    pub async fn create_database(
        &mut self,
        name: &str,
        page_size: u32,
    ) -> Result<(DbName, donut_format::Root), StorageError> {
        let name = self.grant.check(name)?;
        if !self.grant.may_create {
            return Err(StorageError::Denied(format!(
                "this instance may not create databases ({name:?})"
            )));
        }
        self.stats.commit_root.fetch_add(1, Ordering::Relaxed);
        let root = create_database(&*self.backend, &name, page_size).await?;
        self.saw(&name, root.version);
        Ok((name, root))
    }

    /// Remembers that root version `version` of `name` exists.
    fn saw(&mut self, name: &DbName, version: u64) {
        let seen = self.seen.entry(name.clone()).or_default();
        *seen = (*seen).max(version);
    }

    /// The bound of an intent for sectors of `name` stored now: the
    /// newest version this instance saw, or else the current one (read).
    async fn intent_bound(&mut self, name: &DbName) -> Result<u64, StorageError> {
        if let Some(&seen) = self.seen.get(name) {
            return Ok(seen);
        }
        self.charge(1, 0, 0)?;
        let (meta, _) = read_root(&*self.backend, name).await?;
        self.saw(name, meta.version);
        Ok(meta.version)
    }

    /// The host-wide version memory if a cache is shared, else this
    /// instance's own.
    fn versions(&self) -> &Versions {
        match &self.cache {
            Some(cache) => &cache.versions,
            None => &self.versions,
        }
    }

    pub fn with_lease_renewal(mut self, renewal: LeaseRenewal) -> Self {
        self.renewal = renewal;
        self
    }

    /// Shares `cache` with the other instances that use it.
    pub fn with_cache(mut self, cache: Arc<SectorCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_stats(mut self, stats: Arc<StorageStats>) -> Self {
        self.stats = stats;
        self
    }

    pub fn stats(&self) -> Arc<StorageStats> {
        self.stats.clone()
    }
}

/// A past version's handle (`pinned`) whose sectors are missing: if `gc`
/// retired its version since it was opened, says so ("snapshot expired")
/// instead of letting the guest report corruption.
async fn check_not_expired(
    backend: Arc<dyn Backend>,
    name: &DbName,
    pinned: Option<u64>,
) -> Result<(), StorageError> {
    let Some(version) = pinned else {
        return Ok(());
    };
    match donut_store::gc::is_retired(&*backend, name, version).await? {
        Some(oldest) => Err(StorageError::NotFound(format!(
            "snapshot expired: version {version} of {name:?} was retired by gc while it \
             was read (the oldest kept version is {oldest})"
        ))),
        None => Ok(()),
    }
}

fn to_hash(bytes: &[u8]) -> Result<Hash, StorageError> {
    bytes.try_into().map_err(|_| {
        StorageError::Invalid(format!(
            "a sector hash is {HASH_LEN} bytes, not {}",
            bytes.len()
        ))
    })
}

/// Checks sectors a guest hands over: count, sizes, and that each hashes to
/// its key (a guest cannot store a sector under a false hash).
fn check_sectors(sectors: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Vec<(Hash, Vec<u8>)>, StorageError> {
    if sectors.len() > SECTORS_PER_CALL_MAX {
        return Err(StorageError::TooLarge(format!(
            "{} sectors in one call; the limit is {SECTORS_PER_CALL_MAX}",
            sectors.len()
        )));
    }
    let total: usize = sectors.iter().map(|s| s.1.len()).sum();
    if total > PUT_CALL_BYTES_MAX {
        return Err(StorageError::TooLarge(format!(
            "{total} bytes in one call; the limit is {PUT_CALL_BYTES_MAX}"
        )));
    }
    let mut checked = Vec::with_capacity(sectors.len());
    for (hash, bytes) in sectors {
        let hash = to_hash(&hash)?;
        if bytes.len() > SECTOR_BYTES_MAX {
            return Err(StorageError::TooLarge(format!(
                "sector {} is {} bytes; the limit is {SECTOR_BYTES_MAX}",
                hash_hex(&hash),
                bytes.len()
            )));
        }
        verify(&hash, &bytes).map_err(|e| StorageError::Invalid(e.to_string()))?;
        checked.push((hash, bytes));
    }
    Ok(checked)
}

impl StorageCtx {
    /// Counts stored sectors and keeps them in the host cache: pages just
    /// written are the likeliest next reads elsewhere.
    fn stored(&self, db_id: DbId, sectors: &[(Hash, Vec<u8>)]) {
        let bytes: usize = sectors.iter().map(|s| s.1.len()).sum();
        self.stats
            .put_sectors_items
            .fetch_add(sectors.len() as u64, Ordering::Relaxed);
        self.stats
            .put_sectors_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        if let Some(cache) = &self.cache {
            cache.keep(db_id, sectors.iter().map(|(h, b)| (h, b.as_slice())));
        }
    }

    /// Fills `out` from the host's caches (memory, then disk); returns the
    /// indexes of `hashes` still missing.
    fn read_cached(&self, db_id: DbId, hashes: &[Hash], out: &mut [Option<Vec<u8>>]) -> Vec<usize> {
        let Some(cache) = &self.cache else {
            return (0..hashes.len()).collect();
        };
        let read = cache.read(db_id, hashes, out);
        self.stats
            .sector_cache_hits
            .fetch_add(read.memory_hits as u64, Ordering::Relaxed);
        self.stats
            .disk_cache_hits
            .fetch_add(read.disk_hits as u64, Ordering::Relaxed);
        read.missing
    }

    /// On-call renewal: renews each held lease past a third of its length.
    async fn renew_due_leases(&mut self) {
        if self.renewal != LeaseRenewal::OnCall {
            return;
        }
        self.leases.retain(|l| l.strong_count() > 0);
        let leases: Vec<SharedLease> = self.leases.iter().filter_map(|l| l.upgrade()).collect();
        for lease in leases {
            let mut held = lease.lock().await;
            let now = self.clock.now_ms();
            let due = held.expires_ms.saturating_sub(held.lease_ms as u64 * 2 / 3);
            if !held.ended && now >= due {
                self.stats.lease_renewals.fetch_add(1, Ordering::Relaxed);
                let _ = renew_lease(&*self.backend, &self.clock, &mut held).await;
            }
        }
    }

    /// Counts the bytes a sector read returns (cache hits included).
    fn charge_read_bytes(&mut self, out: &[Option<Vec<u8>>]) -> Result<(), StorageError> {
        let bytes: usize = out.iter().flatten().map(Vec::len).sum();
        self.charge(0, 0, bytes as u64)
    }

    async fn db_id(
        &mut self,
        db: &Resource<DatabaseHandle>,
    ) -> Result<(DbName, DbId), StorageError> {
        let handle = self.table.get(db)?;
        let name = handle.name.clone();
        if let Some(id) = handle.db_id {
            return Ok((name, id));
        }
        // Sectors before any root read: the id costs a root read, counted
        // like the guest's own.
        self.charge(1, 0, 0)?;
        let (_, root) = self.read_handle_root(db).await?;
        Ok((name, root.db_id))
    }

    /// Refuses `what` (a write) on a past version's handle or under a
    /// read-only grant.
    fn check_write(&self, db: &Resource<DatabaseHandle>, what: &str) -> Result<(), StorageError> {
        let handle = self.table.get(db)?;
        if let Some(at) = handle.at {
            return Err(StorageError::Denied(format!(
                "{what} {}@{at} is refused: a past version can only be read",
                handle.name
            )));
        }
        self.grant.check_write(&handle.name, what)
    }

    /// The root a handle reads: the current one, or its past version
    /// (read once). Binds the handle to the root's database id.
    async fn read_handle_root(
        &mut self,
        db: &Resource<DatabaseHandle>,
    ) -> Result<(Meta, Root), StorageError> {
        self.stats.read_root.fetch_add(1, Ordering::Relaxed);
        let handle = self.table.get(db)?;
        let (name, at) = (handle.name.clone(), handle.at);
        let (meta, root) = match (at, handle.pinned.clone()) {
            (None, _) => read_root(&*self.backend, &name).await?,
            (Some(_), Some(pinned)) => pinned,
            (Some(at), None) => {
                let pinned = read_root_at(&*self.backend, &name, at).await?;
                self.table.get_mut(db)?.pinned = Some(pinned.clone());
                pinned
            }
        };
        if at.is_none() {
            self.versions().saw(root.db_id, &name, meta.version);
            self.saw(&name, meta.version);
        }
        // The first root read binds the handle to that database id; a root
        // with another id means the name was removed and created again.
        self.table.get_mut(db)?.db_id = Some(root.db_id);
        Ok((meta, root))
    }
}

impl donut::storage::types::Host for StorageCtx {
    fn convert_error(&mut self, err: StorageError) -> wasmtime::Result<WitError> {
        Ok(match err {
            StorageError::NotFound(m) => WitError::NotFound(m),
            StorageError::AlreadyExists(m) => WitError::AlreadyExists(m),
            StorageError::Conflict => WitError::Conflict,
            StorageError::Busy(m) => WitError::Busy(m),
            StorageError::Throttled(m) => WitError::Throttled(m),
            StorageError::TooLarge(m) => WitError::TooLarge(m),
            StorageError::Denied(m) => WitError::Denied(m),
            StorageError::Corrupt(m) => WitError::Corrupt(m),
            StorageError::Unavailable(m) => WitError::Unavailable(m),
            StorageError::Invalid(m) => WitError::Invalid(m),
            StorageError::Trap(e) => return Err(wasmtime::Error::msg(e)),
        })
    }
}

impl donut::storage::storage::Host for StorageCtx {
    async fn hash_all(&mut self, items: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, StorageError> {
        let total: usize = items.iter().map(Vec::len).sum();
        if items.len() > SECTORS_PER_CALL_MAX || total > PUT_CALL_BYTES_MAX {
            return Err(StorageError::TooLarge(format!(
                "{} items, {total} bytes to hash in one call; the limits are {SECTORS_PER_CALL_MAX} and {PUT_CALL_BYTES_MAX}",
                items.len()
            )));
        }
        Ok(items
            .iter()
            .map(|item| donut_format::hash(item).to_vec())
            .collect())
    }
}

impl donut::storage::storage::HostDatabase for StorageCtx {
    async fn open(&mut self, name: String) -> Result<Resource<DatabaseHandle>, StorageError> {
        let reference = DbRef::parse(&name).map_err(|e| StorageError::Denied(e.to_string()))?;
        let name = self.grant.check(reference.name.as_str())?;
        self.table
            .push(DatabaseHandle::new(name, None, reference.at))
    }

    async fn create(
        &mut self,
        name: String,
        page_size: u32,
    ) -> Result<Resource<DatabaseHandle>, StorageError> {
        self.charge(1, 0, 0)?;
        let (name, root) = self.create_database(&name, page_size).await?;
        self.table
            .push(DatabaseHandle::new(name, Some(root.db_id), None))
    }

    async fn name(&mut self, db: Resource<DatabaseHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&db)?.name.to_string())
    }

    async fn read_root(&mut self, db: Resource<DatabaseHandle>) -> Result<WitRoot, StorageError> {
        self.charge(1, 0, 0)?;
        let (meta, _) = self.read_handle_root(&db).await?;
        self.charge(0, 0, meta.body.len() as u64)?;
        Ok(WitRoot {
            version: meta.version,
            body: meta.body,
        })
    }

    async fn get_sectors(
        &mut self,
        db: Resource<DatabaseHandle>,
        hashes: Vec<Vec<u8>>,
    ) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        if hashes.len() > SECTORS_PER_CALL_MAX {
            return Err(StorageError::TooLarge(format!(
                "{} sectors in one call; the limit is {SECTORS_PER_CALL_MAX}",
                hashes.len()
            )));
        }
        let hashes: Vec<Hash> = hashes
            .iter()
            .map(|h| to_hash(h))
            .collect::<Result<_, _>>()?;
        self.charge(1, hashes.len() as u64, 0)?;
        let (name, db_id) = self.db_id(&db).await?;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; hashes.len()];
        let missing = self.read_cached(db_id, &hashes, &mut out);
        if missing.is_empty() {
            self.charge_read_bytes(&out)?;
            return Ok(out);
        }
        let wanted: Vec<Hash> = missing.iter().map(|&i| hashes[i]).collect();
        let found = self.backend.get_sectors(db_id, &wanted).await?;
        if found.iter().any(Option::is_none) {
            let pinned = self.table.get(&db)?.pinned.as_ref().map(|p| p.0.version);
            check_not_expired(self.backend.clone(), &name, pinned).await?;
        }
        let mut bytes = 0;
        for (hash, sector) in wanted.iter().zip(&found) {
            if let Some(sector) = sector {
                bytes += sector.len();
                verify(hash, sector).map_err(|e| {
                    StorageError::Corrupt(format!(
                        "sector {} of database {name:?} in the {}: {e}",
                        hash_hex(hash),
                        self.backend.describe()
                    ))
                })?;
            }
        }
        if let Some(cache) = &self.cache {
            let fetched = wanted.iter().zip(&found);
            cache.keep(db_id, fetched.filter_map(|(h, s)| Some((h, s.as_deref()?))));
        }
        for (&i, sector) in missing.iter().zip(found) {
            out[i] = sector;
        }
        self.charge_read_bytes(&out)?;
        self.stats.get_sectors_calls.fetch_add(1, Ordering::Relaxed);
        self.stats
            .get_sectors_items
            .fetch_add(wanted.len() as u64, Ordering::Relaxed);
        self.stats
            .get_sectors_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(out)
    }

    async fn put_sectors(
        &mut self,
        db: Resource<DatabaseHandle>,
        sectors: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        let checked = check_sectors(sectors)?;
        let bytes: usize = checked.iter().map(|s| s.1.len()).sum();
        self.charge(1, checked.len() as u64, bytes as u64)?;
        self.check_write(&db, "storing sectors of")?;
        let (name, db_id) = self.db_id(&db).await?;
        // Stored before their commit point: recorded first, so `gc` finds
        // them if no commit ever references them.
        let bound = self.intent_bound(&name).await?;
        let now_ms = self.clock.now_ms();
        intent::record(&*self.backend, &name, db_id, bound, &checked, now_ms).await?;
        self.backend.put_sectors(db_id, &checked).await?;
        self.stats.put_sectors_calls.fetch_add(1, Ordering::Relaxed);
        self.stored(db_id, &checked);
        Ok(())
    }

    async fn commit_root(
        &mut self,
        db: Resource<DatabaseHandle>,
        expected_version: u64,
        body: Vec<u8>,
        fence: Option<Resource<LockHandle>>,
        sectors: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<u64, StorageError> {
        let sectors = check_sectors(sectors)?;
        let bytes: usize = sectors.iter().map(|s| s.1.len()).sum::<usize>() + body.len();
        self.charge(1, sectors.len() as u64, bytes as u64)?;
        self.check_write(&db, "a commit to")?;
        let (name, db_id) = self.db_id(&db).await?;
        let root =
            Root::decode(&body).map_err(|e| StorageError::Invalid(format!("new root: {e}")))?;
        if root.version != expected_version + 1 {
            return Err(StorageError::Invalid(format!(
                "new root says version {} but replaces {expected_version}",
                root.version
            )));
        }
        if root.db_id != db_id {
            return Err(StorageError::Invalid(format!(
                "new root belongs to database id {}, not {}",
                root.db_id.hex(),
                db_id.hex()
            )));
        }
        self.renew_due_leases().await;
        // A fenced commit holds its lease's mutex until the swap is done, so
        // no renewal moves the lock item (the fence) under it.
        let fence_lease = match fence {
            Some(fence) => Some(self.table.get(&fence)?.lease.clone()),
            None => None,
        };
        let fence_guard = match &fence_lease {
            Some(lease) => Some(lease.lock().await),
            None => None,
        };
        let fence = match &fence_guard {
            None => None,
            Some(lease) => {
                if lease.name != name || !lease.exclusive {
                    return Err(StorageError::Invalid(format!(
                        "a commit to {name:?} can only be fenced by an exclusive lease on it"
                    )));
                }
                // By this host's clock the lease must have time left; the
                // backend then checks that nobody wrote the lock item since.
                if lease.ended || self.clock.now_ms() >= lease.expires_ms {
                    return Err(StorageError::Busy(format!(
                        "the lease on {name:?} lapsed; the commit is refused"
                    )));
                }
                Some(Fence {
                    lock_version: lease.lock_version,
                })
            }
        };
        if self.unanswered_commits > 0 {
            let pause_ms = commit_backoff_ms(self.unanswered_commits, random_u64());
            self.stats.commit_backoffs.fetch_add(1, Ordering::Relaxed);
            self.clock.pause(pause_ms).await;
        }
        self.stats.commit_root.fetch_add(1, Ordering::Relaxed);
        if !sectors.is_empty()
            && !self
                .backend
                .commits_in_one_request(&sectors, fence.is_some())
        {
            // The backend stores them in a request of its own first: one
            // more round trip, after their intent (the commit can only land
            // as `expected_version + 1`).
            self.stats.put_sectors_calls.fetch_add(1, Ordering::Relaxed);
            let now_ms = self.clock.now_ms();
            intent::record(
                &*self.backend,
                &name,
                db_id,
                expected_version,
                &sectors,
                now_ms,
            )
            .await?;
        }
        let meta = Meta {
            version: root.version,
            body,
        };
        let outcome = self
            .backend
            .commit(
                Commit {
                    name: &name,
                    db: db_id,
                    expected: Some(expected_version),
                    sectors: &sectors,
                    fence,
                },
                meta,
            )
            .await;
        drop(fence_guard);
        self.unanswered_commits = match &outcome {
            Err(PutMetaError::Backend(BackendError::Unavailable(_))) => {
                self.unanswered_commits.saturating_add(1)
            }
            _ => 0,
        };
        match outcome {
            Ok(()) => {
                self.stored(db_id, &sectors);
                self.versions().saw(db_id, &name, root.version);
                self.saw(&name, root.version);
                Ok(root.version)
            }
            Err(PutMetaError::Conflict) => {
                self.stats.commit_conflicts.fetch_add(1, Ordering::Relaxed);
                Err(StorageError::Conflict)
            }
            Err(PutMetaError::Fenced) => {
                if let Some(lease) = &fence_lease {
                    lease.lock().await.ended = true;
                }
                Err(StorageError::Busy(format!(
                    "the lease on {name:?} was taken over; the commit is refused"
                )))
            }
            Err(PutMetaError::Backend(e)) => Err(e.into()),
        }
    }

    async fn acquire(
        &mut self,
        db: Resource<DatabaseHandle>,
        mode: WitLockMode,
        lease_ms: u32,
    ) -> Result<Resource<LockHandle>, StorageError> {
        if lease_ms == 0 || lease_ms > LEASE_MS_MAX {
            return Err(StorageError::Invalid(format!(
                "lease of {lease_ms} ms; it must be 1..={LEASE_MS_MAX}"
            )));
        }
        let name = self.table.get(&db)?.name.clone();
        let owner = random_u64();
        let exclusive = matches!(mode, WitLockMode::Exclusive);
        self.charge(1, 0, 0)?;
        if exclusive {
            self.check_write(&db, "an exclusive lease on")?;
        }
        self.stats.lock_calls.fetch_add(1, Ordering::Relaxed);
        self.renew_due_leases().await;
        let (backend, clock) = (self.backend.clone(), self.clock.clone());
        let known = self.known_locks.get(&name).cloned();
        let ((token, expires_ms), lock_version, state) =
            update_lock(&*backend, &clock, &name, known, |state, now| {
                let state = with_holder(state, now, &name, owner, exclusive, lease_ms)?;
                let token = state.token;
                Ok((state, (token, now + lease_ms as u64)))
            })
            .await?;
        self.known_locks
            .insert(name.clone(), (lock_version, state.clone()));
        let lease = Arc::new(tokio::sync::Mutex::new(Lease {
            name,
            owner,
            token,
            exclusive,
            lease_ms,
            lock_version,
            expires_ms,
            state,
            ended: false,
        }));
        let renewer = match (self.renewal, tokio::runtime::Handle::try_current()) {
            (LeaseRenewal::Background, Ok(runtime)) => Some(
                runtime
                    .spawn(renew_in_background(
                        backend,
                        clock,
                        lease.clone(),
                        self.stats.clone(),
                    ))
                    .abort_handle(),
            ),
            _ => None,
        };
        self.leases.push(Arc::downgrade(&lease));
        self.table.push(LockHandle { lease, renewer })
    }

    async fn newest_version_seen(&mut self, db: Resource<DatabaseHandle>) -> wasmtime::Result<u64> {
        let handle = self.table.get(&db)?;
        if let Some((pinned, _)) = &handle.pinned {
            return Ok(pinned.version); // a past version: never newer
        }
        Ok(match handle.db_id {
            Some(db_id) => self.versions().newest(db_id, &handle.name),
            None => 0,
        })
    }

    async fn drop(&mut self, db: Resource<DatabaseHandle>) -> wasmtime::Result<()> {
        self.table.delete(db)?;
        Ok(())
    }
}

impl donut::storage::storage::HostLock for StorageCtx {
    async fn token(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<u64> {
        let lease = self.table.get(&lock)?.lease.clone();
        let token = lease.lock().await.token;
        Ok(token)
    }

    async fn renew(
        &mut self,
        lock: Resource<LockHandle>,
        lease_ms: u32,
    ) -> Result<(), StorageError> {
        if lease_ms == 0 || lease_ms > LEASE_MS_MAX {
            return Err(StorageError::Invalid(format!(
                "lease of {lease_ms} ms; it must be 1..={LEASE_MS_MAX}"
            )));
        }
        let lease = self.table.get(&lock)?.lease.clone();
        self.charge(1, 0, 0)?;
        self.stats.lock_calls.fetch_add(1, Ordering::Relaxed);
        let mut held = lease.lock().await;
        held.lease_ms = lease_ms;
        renew_lease(&*self.backend, &self.clock, &mut held).await
    }

    async fn release(&mut self, lock: Resource<LockHandle>) -> Result<(), StorageError> {
        let lease = self.table.get(&lock)?.lease.clone();
        self.charge(1, 0, 0)?;
        self.stats.lock_calls.fetch_add(1, Ordering::Relaxed);
        let mut held = lease.lock().await;
        if held.ended {
            return Ok(());
        }
        let known = Some((held.lock_version, held.state.clone()));
        let (version, state) =
            without_holder(&*self.backend, &self.clock, &held.name, known, held.owner).await?;
        held.ended = true;
        self.known_locks.insert(held.name.clone(), (version, state));
        Ok(())
    }

    async fn remaining_ms(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<u64> {
        self.backend
            .yield_point(donut_store::backend::YieldPoint::LeaseCheck)
            .await;
        self.renew_due_leases().await;
        let lease = self.table.get(&lock)?.lease.clone();
        let held = lease.lock().await;
        Ok(if held.ended {
            0
        } else {
            held.expires_ms.saturating_sub(self.clock.now_ms())
        })
    }

    async fn drop(&mut self, lock: Resource<LockHandle>) -> wasmtime::Result<()> {
        // Dropping without release leaves the lease to expire: a crashed
        // holder behaves the same way. The renewal stops with the handle.
        self.table.delete(lock)?;
        Ok(())
    }
}

/// Adds `donut:storage` to a linker whose store data gives a [`StorageCtx`].
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> &mut StorageCtx,
) -> wasmtime::Result<()> {
    Client::add_to_linker::<T, wasmtime::component::HasSelf<StorageCtx>>(linker, get)
}

#[cfg(test)]
#[path = "storage_hostile_tests.rs"]
mod hostile_tests;

#[cfg(test)]
mod tests {
    use super::donut::storage::storage::{HostDatabase, HostLock};
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use std::sync::atomic::AtomicU64;

    fn borrow<T: 'static>(r: &Resource<T>) -> Resource<T> {
        Resource::new_borrow(r.rep())
    }

    #[test]
    fn commit_backoff_grows_to_its_ceiling_and_is_jittered() {
        assert_eq!(
            commit_backoff_ms(1, u64::MAX),
            u64::MAX % (COMMIT_BACKOFF_MS_BASE + 1)
        );
        assert!(commit_backoff_ms(1, 7) <= COMMIT_BACKOFF_MS_BASE);
        assert_eq!(
            commit_backoff_ms(3, 4 * COMMIT_BACKOFF_MS_BASE),
            4 * COMMIT_BACKOFF_MS_BASE
        );
        for unanswered in [1, 5, 30, u32::MAX] {
            for random in [0, 1, 12_345, u64::MAX] {
                assert!(commit_backoff_ms(unanswered, random) <= COMMIT_BACKOFF_MS_MAX);
            }
        }
        assert_eq!(
            commit_backoff_ms(30, COMMIT_BACKOFF_MS_MAX),
            COMMIT_BACKOFF_MS_MAX
        );
    }

    /// Version `version` of `name`: page 1 alone, its bytes all `byte`.
    async fn one_page_version(
        backend: &dyn Backend,
        name: &DbName,
        version: u64,
        byte: u8,
    ) -> Hash {
        let (_, current) = donut_store::db::read_root(backend, name).await.unwrap();
        let txn_id = version * 1000;
        let page = donut_format::salt::salted(&[byte; 4096], donut_format::Salt::page(0, txn_id));
        let key = donut_format::hash(&page);
        backend
            .put_sectors(current.db_id, &[(key, page)])
            .await
            .unwrap();
        let root = Root {
            version,
            page_count: 1,
            overlay: vec![(0, key)],
            txn_id,
            ..current
        };
        donut_store::db::swap_root(backend, name, Some(version - 1), false, &root)
            .await
            .unwrap();
        key
    }

    #[tokio::test]
    async fn a_past_version_retired_while_it_is_read_says_snapshot_expired() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let name = DbName::new("a.db").unwrap();
        donut_store::db::create_database(&*backend, &name, 4096)
            .await
            .unwrap();
        let page = one_page_version(&*backend, &name, 2, 1).await;
        one_page_version(&*backend, &name, 3, 2).await;
        let mut ctx = StorageCtx::new(backend.clone(), Grant::all());
        let db = HostDatabase::open(&mut ctx, "a.db@2".into()).await.unwrap();
        let read = HostDatabase::get_sectors(&mut ctx, borrow(&db), vec![page.to_vec()]).await;
        assert!(read.unwrap()[0].is_some());
        let options = donut_store::gc::GcOptions {
            retain_ms: 0,
            now_ms: Clock::System.now_ms() + 1,
            write_units_max: None,
            keep_from: None,
        };
        let report = donut_store::gc::collect(&*backend, &name, options)
            .await
            .unwrap();
        assert_eq!(report.oldest_kept, 3);
        let read = HostDatabase::get_sectors(&mut ctx, borrow(&db), vec![page.to_vec()]).await;
        match read {
            Err(StorageError::NotFound(m)) if m.contains("snapshot expired") => {}
            other => panic!("{other:?}"),
        }
        // Looked up after gc, it is refused at once.
        let late = read_root_at(&*backend, &name, donut_format::At::Version(2)).await;
        assert!(matches!(late, Err(StorageError::NotFound(m)) if m.contains("no longer kept")));
    }

    async fn ctx_with_db(clock: Clock) -> (StorageCtx, Resource<DatabaseHandle>) {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let mut ctx = StorageCtx::new(backend, Grant::all()).with_clock(clock);
        let db = HostDatabase::create(&mut ctx, "l.db".into(), 4096)
            .await
            .unwrap();
        (ctx, db)
    }

    #[tokio::test]
    async fn leases_exclude_expire_and_fence() {
        let now = Arc::new(AtomicU64::new(1_000_000));
        let (mut ctx, db) = ctx_with_db(Clock::Virtual(now.clone())).await;
        let first = HostDatabase::acquire(&mut ctx, borrow(&db), WitLockMode::Exclusive, 5_000)
            .await
            .unwrap();
        let token = HostLock::token(&mut ctx, borrow(&first)).await.unwrap();
        // A second exclusive holder must wait.
        let second =
            HostDatabase::acquire(&mut ctx, borrow(&db), WitLockMode::Exclusive, 5_000).await;
        assert!(matches!(second, Err(StorageError::Busy(_))));
        // Renewing keeps it; after expiry another holder takes over with a
        // larger token, and the first can neither renew nor commit.
        now.fetch_add(4_000, Ordering::SeqCst);
        HostLock::renew(&mut ctx, borrow(&first), 5_000)
            .await
            .unwrap();
        now.fetch_add(6_000, Ordering::SeqCst);
        let taker = HostDatabase::acquire(&mut ctx, borrow(&db), WitLockMode::Exclusive, 5_000)
            .await
            .unwrap();
        assert!(HostLock::token(&mut ctx, borrow(&taker)).await.unwrap() > token);
        assert!(matches!(
            HostLock::renew(&mut ctx, borrow(&first), 5_000).await,
            Err(StorageError::Busy(_))
        ));
        let root = HostDatabase::read_root(&mut ctx, borrow(&db))
            .await
            .unwrap();
        let mut next = Root::decode(&root.body).unwrap();
        next.version += 1;
        let fenced = HostDatabase::commit_root(
            &mut ctx,
            borrow(&db),
            root.version,
            next.encode(),
            Some(borrow(&first)),
            Vec::new(),
        )
        .await;
        assert!(
            matches!(fenced, Err(StorageError::Busy(_))),
            "a lapsed lease committed"
        );
        // The current holder commits; releasing frees the lock.
        HostDatabase::commit_root(
            &mut ctx,
            borrow(&db),
            root.version,
            next.encode(),
            Some(borrow(&taker)),
            Vec::new(),
        )
        .await
        .unwrap();
        HostLock::release(&mut ctx, borrow(&taker)).await.unwrap();
        HostDatabase::acquire(&mut ctx, borrow(&db), WitLockMode::Shared, 1_000)
            .await
            .unwrap();
        HostDatabase::acquire(&mut ctx, borrow(&db), WitLockMode::Shared, 1_000)
            .await
            .unwrap();
        let exclusive =
            HostDatabase::acquire(&mut ctx, borrow(&db), WitLockMode::Exclusive, 1_000).await;
        assert!(
            matches!(exclusive, Err(StorageError::Busy(_))),
            "shared holders exclude writers"
        );
    }

    #[tokio::test]
    async fn a_lease_this_host_released_is_taken_again_in_one_request() {
        use crate::backend::metered::Metered;
        let store = Arc::new(Metered::new(MemoryBackend::new()));
        let mut ctx =
            StorageCtx::new(store.clone(), Grant::all()).with_lease_renewal(LeaseRenewal::OnCall);
        let db = HostDatabase::create(&mut ctx, "l.db".into(), 4096)
            .await
            .unwrap();
        let first = HostDatabase::acquire(&mut ctx, borrow(&db), WitLockMode::Exclusive, 5_000)
            .await
            .unwrap();
        let before = store.meter();
        HostLock::release(&mut ctx, borrow(&first)).await.unwrap();
        let again = HostDatabase::acquire(&mut ctx, borrow(&db), WitLockMode::Exclusive, 5_000)
            .await
            .unwrap();
        HostLock::renew(&mut ctx, borrow(&again), 5_000)
            .await
            .unwrap();
        let spent = store.meter().since(&before);
        // Release, acquire and renew: one conditional put each, no reads.
        assert_eq!(spent.requests.get("PutItem"), Some(&3), "{spent:?}");
        assert_eq!(spent.requests.get("GetItem"), None, "{spent:?}");
    }

    #[tokio::test]
    async fn hash_all_hashes_natively_within_the_call_limits() {
        use super::donut::storage::storage::Host;
        let (mut ctx, _db) = ctx_with_db(Clock::System).await;
        let hashes = Host::hash_all(&mut ctx, vec![b"a".to_vec(), Vec::new()])
            .await
            .unwrap();
        assert_eq!(hashes[0], donut_format::hash(b"a").to_vec());
        assert_eq!(hashes[1], donut_format::hash(b"").to_vec());
        let too_many = vec![Vec::new(); SECTORS_PER_CALL_MAX + 1];
        assert!(matches!(
            Host::hash_all(&mut ctx, too_many).await,
            Err(StorageError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn a_guest_cannot_store_a_sector_under_a_false_hash() {
        let (mut ctx, db) = ctx_with_db(Clock::System).await;
        let bytes = vec![7u8; 4096];
        let wrong = donut_format::hash(b"something else").to_vec();
        let out = HostDatabase::put_sectors(&mut ctx, borrow(&db), vec![(wrong, bytes)]).await;
        assert!(matches!(out, Err(StorageError::Invalid(_))));
    }

    #[tokio::test]
    async fn grants_and_names_are_checked_before_storage() {
        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let only = Grant::only([DbName::new("mine.db").unwrap()], false);
        let mut ctx = StorageCtx::new(backend.clone(), only);
        assert!(matches!(
            HostDatabase::open(&mut ctx, "theirs.db".into()).await,
            Err(StorageError::Denied(_))
        ));
        assert!(matches!(
            HostDatabase::create(&mut ctx, "mine.db".into(), 4096).await,
            Err(StorageError::Denied(_))
        ));
        assert!(matches!(
            HostDatabase::open(&mut ctx, "../x".into()).await,
            Err(StorageError::Denied(_))
        ));
        assert_eq!(backend.summary().await.unwrap().items, 0);
    }
}
