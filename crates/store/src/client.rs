//! A storage client: what one instance — a guest through the host's
//! `donut:storage` adapter, or a native VFS through its port — asks of
//! storage, one method per `donut:storage` function (wit/storage.wit says
//! what each does and promises), with every check that makes it safe to
//! hand to untrusted code: the grant, hashes, sizes, the call quota, the
//! intents recorded before sectors are stored outside a commit, leases and
//! fences, and the counters. It owns no handle table: callers keep the
//! [`OpenDatabase`] and [`HeldLease`] values it returns (the WIT adapter in
//! a resource table, the native port in its own structs).

use crate::backend::{
    Backend, BackendError, Commit, Fence, Meta, PutMetaError, Replaces, YieldPoint,
};
use crate::cache::{SectorCache, Versions};
use crate::clock::Clock;
use crate::db::read_root;
use crate::error::StorageError;
use crate::grant::Grant;
use crate::history::read_root_at;
use crate::intent;
use crate::lease::{
    Lease, LeaseRenewal, SharedLease, renew_in_background, renew_lease, update_lock, with_holder,
    without_holder,
};
use crate::quota::{CallQuota, QuotaExceeded, QuotaUse};
use crate::random_u64;
use crate::stats::{RequestStats, StorageStats};
use donut_format::limits::{
    LEASE_MS_MAX, PUT_CALL_BYTES_MAX, SECTOR_BYTES_MAX, SECTORS_PER_CALL_MAX,
};
use donut_format::{At, DbId, DbName, DbRef, HASH_LEN, Hash, LockState, Root, hash_hex, verify};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A database a client opened: its name, and what it learned of it.
pub struct OpenDatabase {
    name: DbName,
    /// Learned from the root; sectors are keyed by it.
    db_id: Option<DbId>,
    /// Opened as `NAME@AT`: a past version, read-only.
    at: Option<At>,
    /// That version's root, once read (it never changes).
    pinned: Option<(Meta, Root)>,
}

impl OpenDatabase {
    fn new(name: DbName, db_id: Option<DbId>, at: Option<At>) -> OpenDatabase {
        OpenDatabase {
            name,
            db_id,
            at,
            pinned: None,
        }
    }

    /// The database's name (without any `@AT`).
    pub fn name(&self) -> &DbName {
        &self.name
    }
}

/// How a lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// A lease a client holds on a database's lock.
pub struct HeldLease {
    lease: SharedLease,
    /// The background renewal, if one runs.
    renewer: Option<tokio::task::AbortHandle>,
}

impl HeldLease {
    /// The lease, to fence a commit with ([`Client::commit_root`]).
    pub fn shared(&self) -> SharedLease {
        self.lease.clone()
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        // Dropping without release leaves the lease to expire: a crashed
        // holder behaves the same way. The renewal stops with the handle.
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
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

/// One instance's storage state.
pub struct Client {
    backend: Arc<dyn Backend>,
    grant: Grant,
    clock: Clock,
    stats: Arc<StorageStats>,
    cache: Option<Arc<SectorCache>>,
    renewal: LeaseRenewal,
    /// Leases this instance holds, for on-call renewal.
    leases: Vec<std::sync::Weak<tokio::sync::Mutex<Lease>>>,
    /// Lock items as this instance last wrote them (version, state).
    known_locks: HashMap<DbName, (u64, LockState)>,
    /// Newest root versions this instance saw, when no cache is shared.
    versions: Versions,
    /// The newest root version of each name this instance read, created
    /// or committed, with the database id that version belongs to: at
    /// least the version any of its transactions on that database read,
    /// so the bound of the intents its `put-sectors` calls record
    /// (docs/format.md, "Intents"). Only used for that database id: a
    /// name removed and created again is another database whose versions
    /// start again at 1, and what was seen of the old one says nothing of
    /// it. One entry per name, replaced by what was seen last.
    seen: HashMap<DbName, (DbId, u64)>,
    /// Root swaps in a row that went unanswered (`unavailable`): the next
    /// one — usually the guest re-sending the same commit — backs off
    /// first ([`commit_backoff_ms`]).
    unanswered_commits: u32,
    /// What this call may ask of storage, what it asked, and the limit it
    /// reached if it did (the instance is then stopped).
    quota: CallQuota,
    quota_used: QuotaUse,
    quota_exceeded: Option<QuotaExceeded>,
    /// What this call's requests cost, if billed ([`Client::billed`]).
    bill: Option<Arc<std::sync::Mutex<RequestStats>>>,
    /// The most the bill may say, read and write capacity units, if
    /// capped ([`Client::limit_units_from_now`]).
    units_max: (Option<f64>, Option<f64>),
}

impl Client {
    pub fn new(backend: Arc<dyn Backend>, grant: Grant) -> Client {
        Client {
            backend,
            grant,
            clock: Clock::System,
            stats: Arc::new(StorageStats::default()),
            cache: None,
            renewal: LeaseRenewal::default(),
            leases: Vec::new(),
            known_locks: HashMap::new(),
            versions: Versions::default(),
            seen: HashMap::new(),
            unanswered_commits: 0,
            quota: CallQuota::unlimited(),
            quota_used: QuotaUse::default(),
            quota_exceeded: None,
            bill: None,
            units_max: (None, None),
        }
    }

    /// Bills this call's requests as DynamoDB does: what the DynamoDB
    /// backend's answers report, or the billing model's figures on the
    /// other backends ([`RequestStats`], read by [`Client::bill`]).
    pub fn billed(mut self) -> Self {
        let bill = Arc::new(std::sync::Mutex::new(RequestStats::default()));
        self.backend = crate::backend::metered::billed(&self.backend, &bill);
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

    /// The bill this call's requests are added to, if it is billed: its
    /// holder can read what the call cost even after the call is gone.
    pub fn bill_handle(&self) -> Option<Arc<std::sync::Mutex<RequestStats>>> {
        self.bill.clone()
    }

    /// Caps what this call's requests may cost from now on at
    /// `read_units` and `write_units` more capacity units (`None`: no cap)
    /// — what is left of a tenant's budget. A storage call is refused
    /// once the bill is past a cap, and a write before it runs if what it
    /// would cost (its items' sizes, uncompressed) would pass it; the
    /// instance is then stopped, as at a quota ([`QuotaExceeded::ReadUnits`],
    /// [`QuotaExceeded::WriteUnits`]). So a call overruns the cap by at
    /// most one call's reads. A call that is not billed is not capped.
    pub fn limit_units_from_now(&mut self, read_units: Option<f64>, write_units: Option<f64>) {
        let Some(bill) = self.bill() else {
            return;
        };
        self.units_max = (
            read_units.map(|units| bill.read_capacity_units + units.max(0.0)),
            write_units.map(|units| bill.write_capacity_units + units.max(0.0)),
        );
    }

    /// Refuses a storage call that the units cap does not allow: the bill
    /// so far is past a cap, or `write_units_ahead` more would pass the
    /// write cap.
    fn check_units(&mut self, write_units_ahead: f64) -> Result<(), StorageError> {
        let (Some(bill), (read_max, write_max)) = (self.bill(), self.units_max) else {
            return Ok(());
        };
        let over = if let Some(max) = read_max.filter(|&max| bill.read_capacity_units > max) {
            Some(QuotaExceeded::ReadUnits { max: max as u64 })
        } else {
            write_max
                .filter(|&max| bill.write_capacity_units + write_units_ahead > max)
                .map(|max| QuotaExceeded::WriteUnits { max: max as u64 })
        };
        match over {
            None => Ok(()),
            Some(exceeded) => {
                self.quota_exceeded = Some(exceeded);
                Err(StorageError::Trap(format!(
                    "the call reached {exceeded} and was stopped"
                )))
            }
        }
    }

    /// What this call has asked of storage so far.
    pub fn quota_used(&self) -> QuotaUse {
        self.quota_used
    }

    /// The per-call limit this call reached, if it did.
    pub fn quota_exceeded(&self) -> Option<QuotaExceeded> {
        self.quota_exceeded
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

    /// Counts work against the call's quota. Past a limit the instance is
    /// stopped (a trap: whatever it was doing, nothing more reaches
    /// storage; a commit not yet swapped never lands), and so is every
    /// later call.
    fn charge(&mut self, storage_calls: u64, sectors: u64, bytes: u64) -> Result<(), StorageError> {
        if self.quota_exceeded.is_none() && storage_calls > 0 {
            self.check_units(0.0)?;
        }
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
    /// swap: `create` and the CLI's.
    pub async fn create_database(
        &mut self,
        name: &str,
        page_size: u32,
    ) -> Result<(DbName, Root), StorageError> {
        let name = self.grant.check(name)?;
        if !self.grant.may_create {
            return Err(StorageError::Denied(format!(
                "this instance may not create databases ({name:?})"
            )));
        }
        self.stats.commit_root.fetch_add(1, Ordering::Relaxed);
        let root = crate::db::create_database(&*self.backend, &name, page_size).await?;
        self.saw(&name, root.db_id, root.version);
        Ok((name, root))
    }

    /// Remembers that `version`, of database `db_id`, is the current
    /// root of `name`: every caller saw it current (a strongly consistent
    /// root read, a creation, a commit), and calls are sequential, so the
    /// last one seen is the newest — of that database. A lower version
    /// than the one remembered, or another id, means the name was removed
    /// and created again (versions start again at 1, and a fork into the
    /// name may reuse an id): the old database's versions are forgotten.
    fn saw(&mut self, name: &DbName, db_id: DbId, version: u64) {
        self.seen.insert(name.clone(), (db_id, version));
    }

    /// The bound of an intent for sectors of database `db_id` (named
    /// `name`) stored now: the newest version of it this instance saw,
    /// or else the current one (read).
    async fn intent_bound(&mut self, name: &DbName, db_id: DbId) -> Result<u64, StorageError> {
        if let Some(&(seen_id, seen)) = self.seen.get(name)
            && seen_id == db_id
        {
            return Ok(seen);
        }
        self.charge(1, 0, 0)?;
        let (meta, root) = read_root(&*self.backend, name).await?;
        self.saw(name, root.db_id, meta.version);
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

    async fn db_id(&mut self, db: &mut OpenDatabase) -> Result<(DbName, DbId), StorageError> {
        if let Some(id) = db.db_id {
            return Ok((db.name.clone(), id));
        }
        // Sectors before any root read: the id costs a root read, counted
        // like the guest's own.
        self.charge(1, 0, 0)?;
        let (_, root) = self.read_handle_root(db).await?;
        Ok((db.name.clone(), root.db_id))
    }

    /// Refuses `what` (a write) on a past version's handle or under a
    /// read-only grant.
    fn check_write(&self, db: &OpenDatabase, what: &str) -> Result<(), StorageError> {
        if let Some(at) = db.at {
            return Err(StorageError::Denied(format!(
                "{what} {}@{at} is refused: a past version can only be read",
                db.name
            )));
        }
        self.grant.check_write(&db.name, what)
    }

    /// The root a handle reads: the current one, or its past version
    /// (read once). Binds the handle to the root's database id.
    async fn read_handle_root(
        &mut self,
        db: &mut OpenDatabase,
    ) -> Result<(Meta, Root), StorageError> {
        self.stats.read_root.fetch_add(1, Ordering::Relaxed);
        let (meta, root) = match (db.at, db.pinned.clone()) {
            (None, _) => read_root(&*self.backend, &db.name).await?,
            (Some(_), Some(pinned)) => pinned,
            (Some(at), None) => {
                let pinned = read_root_at(&*self.backend, &db.name, at).await?;
                db.pinned = Some(pinned.clone());
                pinned
            }
        };
        if db.at.is_none() {
            self.versions().saw(root.db_id, &db.name, meta.version);
            self.saw(&db.name, root.db_id, meta.version);
        }
        // The first root read binds the handle to that database id; a root
        // with another id means the name was removed and created again.
        db.db_id = Some(root.db_id);
        Ok((meta, root))
    }
}

/// A past version's handle (`pinned`) whose sectors are missing: if `gc`
/// retired its version since it was opened, says so ("snapshot expired")
/// instead of letting the guest report corruption.
async fn check_not_expired(
    backend: &dyn Backend,
    name: &DbName,
    pinned: Option<u64>,
) -> Result<(), StorageError> {
    let Some(version) = pinned else {
        return Ok(());
    };
    match crate::gc::is_retired(backend, name, version).await? {
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

/// Write units DynamoDB bills for an item of `bytes` (1 KB each, at least
/// one), its keys and attributes counted as the billing model does.
fn item_write_units(bytes: usize) -> f64 {
    use donut_format::items::dynamo::META_ITEM_OVERHEAD_BYTES;
    // A name is at most 255 bytes.
    (bytes + META_ITEM_OVERHEAD_BYTES + 255).div_ceil(1024) as f64
}

/// Write units `sectors` cost at most (uncompressed; the store may
/// compress), for [`Client::check_units`] before they are written.
fn sector_write_units(sectors: &[(Hash, Vec<u8>)]) -> f64 {
    use donut_format::items::dynamo::SECTOR_ITEM_OVERHEAD_BYTES;
    sectors
        .iter()
        .map(|(_, bytes)| (bytes.len() + SECTOR_ITEM_OVERHEAD_BYTES).div_ceil(1024) as f64)
        .sum()
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

fn check_lease_ms(lease_ms: u32) -> Result<(), StorageError> {
    if lease_ms == 0 || lease_ms > LEASE_MS_MAX {
        return Err(StorageError::Invalid(format!(
            "lease of {lease_ms} ms; it must be 1..={LEASE_MS_MAX}"
        )));
    }
    Ok(())
}

/// The `donut:storage` functions.
impl Client {
    /// SHA-256 of each item, in order, within one call's limits.
    pub fn hash_all(&self, items: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, StorageError> {
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

    /// Opens `NAME` or `NAME@AT` if the grant covers it (no request).
    pub fn open(&self, name: &str) -> Result<OpenDatabase, StorageError> {
        let reference = DbRef::parse(name).map_err(|e| StorageError::Denied(e.to_string()))?;
        let name = self.grant.check(reference.name.as_str())?;
        Ok(OpenDatabase::new(name, None, reference.at))
    }

    /// Creates a database and opens it.
    pub async fn create(
        &mut self,
        name: &str,
        page_size: u32,
    ) -> Result<OpenDatabase, StorageError> {
        self.charge(1, 0, 0)?;
        let (name, root) = self.create_database(name, page_size).await?;
        Ok(OpenDatabase::new(name, Some(root.db_id), None))
    }

    pub async fn read_root(&mut self, db: &mut OpenDatabase) -> Result<Meta, StorageError> {
        self.charge(1, 0, 0)?;
        let (meta, _) = self.read_handle_root(db).await?;
        self.charge(0, 0, meta.body.len() as u64)?;
        Ok(meta)
    }

    pub async fn get_sectors(
        &mut self,
        db: &mut OpenDatabase,
        hashes: &[Vec<u8>],
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
        let (name, db_id) = self.db_id(db).await?;
        let mut out: Vec<Option<Vec<u8>>> = vec![None; hashes.len()];
        let missing = self.read_cached(db_id, &hashes, &mut out);
        if missing.is_empty() {
            self.charge_read_bytes(&out)?;
            return Ok(out);
        }
        let wanted: Vec<Hash> = missing.iter().map(|&i| hashes[i]).collect();
        let found = self.backend.get_sectors(db_id, &wanted).await?;
        if found.iter().any(Option::is_none) {
            let pinned = db.pinned.as_ref().map(|p| p.0.version);
            check_not_expired(&*self.backend, &name, pinned).await?;
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

    pub async fn put_sectors(
        &mut self,
        db: &mut OpenDatabase,
        sectors: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        let checked = check_sectors(sectors)?;
        let bytes: usize = checked.iter().map(|s| s.1.len()).sum();
        // The sectors and their intent item.
        self.check_units(sector_write_units(&checked) + 1.0)?;
        self.charge(1, checked.len() as u64, bytes as u64)?;
        self.check_write(db, "storing sectors of")?;
        let (name, db_id) = self.db_id(db).await?;
        // Stored before their commit point: recorded first, so `gc` finds
        // them if no commit ever references them.
        let bound = self.intent_bound(&name, db_id).await?;
        let now_ms = self.clock.now_ms();
        intent::record(&*self.backend, &name, db_id, bound, &checked, now_ms).await?;
        self.backend.put_sectors(db_id, &checked).await?;
        self.stats.put_sectors_calls.fetch_add(1, Ordering::Relaxed);
        self.stored(db_id, &checked);
        Ok(())
    }

    /// Swaps the root from `expected_version` to `body` (with `sectors`),
    /// fenced by `fence` — a lease [`Client::acquire`] returned
    /// ([`HeldLease::shared`]) — if given. Returns the new version.
    pub async fn commit_root(
        &mut self,
        db: &mut OpenDatabase,
        expected_version: u64,
        body: Vec<u8>,
        fence: Option<SharedLease>,
        sectors: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<u64, StorageError> {
        let sectors = check_sectors(sectors)?;
        let bytes: usize = sectors.iter().map(|s| s.1.len()).sum::<usize>() + body.len();
        // The sectors, and the root and its history item (a transaction:
        // twice the units).
        self.check_units(sector_write_units(&sectors) + 4.0 * item_write_units(body.len()))?;
        self.charge(1, sectors.len() as u64, bytes as u64)?;
        self.check_write(db, "a commit to")?;
        let (name, db_id) = self.db_id(db).await?;
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
        let fence_guard = match &fence {
            Some(lease) => Some(lease.lock().await),
            None => None,
        };
        let fence_item = match &fence_guard {
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
                .commits_in_one_request(&sectors, fence_item.is_some())
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
                    replaces: Replaces::Database(db_id),
                    sectors: &sectors,
                    fence: fence_item,
                    state: None,
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
                self.saw(&name, db_id, root.version);
                Ok(root.version)
            }
            Err(PutMetaError::Conflict) => {
                self.stats.commit_conflicts.fetch_add(1, Ordering::Relaxed);
                Err(StorageError::Conflict)
            }
            Err(PutMetaError::Fenced) => {
                if let Some(lease) = &fence {
                    lease.lock().await.ended = true;
                }
                Err(StorageError::Busy(format!(
                    "the lease on {name:?} was taken over; the commit is refused"
                )))
            }
            Err(PutMetaError::Backend(e)) => Err(e.into()),
        }
    }

    pub async fn acquire(
        &mut self,
        db: &OpenDatabase,
        mode: LockMode,
        lease_ms: u32,
    ) -> Result<HeldLease, StorageError> {
        check_lease_ms(lease_ms)?;
        let name = db.name.clone();
        let owner = random_u64();
        let exclusive = mode == LockMode::Exclusive;
        self.charge(1, 0, 0)?;
        if exclusive {
            self.check_write(db, "an exclusive lease on")?;
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
        Ok(HeldLease { lease, renewer })
    }

    /// The newest root version any read of this database saw (no request).
    pub fn newest_version_seen(&self, db: &OpenDatabase) -> u64 {
        if let Some((pinned, _)) = &db.pinned {
            return pinned.version; // a past version: never newer
        }
        match db.db_id {
            Some(db_id) => self.versions().newest(db_id, &db.name),
            None => 0,
        }
    }

    /// The lease's fencing token.
    pub async fn token(&self, lock: &HeldLease) -> u64 {
        lock.lease.lock().await.token
    }

    pub async fn renew(&mut self, lock: &HeldLease, lease_ms: u32) -> Result<(), StorageError> {
        check_lease_ms(lease_ms)?;
        self.charge(1, 0, 0)?;
        self.stats.lock_calls.fetch_add(1, Ordering::Relaxed);
        let mut held = lock.lease.lock().await;
        held.lease_ms = lease_ms;
        renew_lease(&*self.backend, &self.clock, &mut held).await
    }

    pub async fn release(&mut self, lock: &HeldLease) -> Result<(), StorageError> {
        self.charge(1, 0, 0)?;
        self.stats.lock_calls.fetch_add(1, Ordering::Relaxed);
        let mut held = lock.lease.lock().await;
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

    /// What is left of the lease by this host's clock (0 once it ended).
    pub async fn remaining_ms(&mut self, lock: &HeldLease) -> u64 {
        self.backend.yield_point(YieldPoint::LeaseCheck).await;
        self.renew_due_leases().await;
        let held = lock.lease.lock().await;
        if held.ended {
            0
        } else {
            held.expires_ms.saturating_sub(self.clock.now_ms())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gc::{GcOptions, collect};
    use crate::{LocalBackend, MemoryBackend};
    use donut_format::salt::salted;
    use donut_format::{Intent, Salt, hash};

    /// Commits `root` with `version + 1` and `txn_id` through `client`.
    async fn commit_next(client: &mut Client, db: &mut OpenDatabase, mut root: Root) -> Root {
        let expected = root.version;
        root.version += 1;
        root.commit_ms = Clock::System.now_ms();
        root.txn_id = random_u64();
        let version = client
            .commit_root(db, expected, root.encode(), None, Vec::new())
            .await
            .expect("commit");
        assert_eq!(version, root.version);
        root
    }

    /// Retires every version but the newest (and a removal older than
    /// now: its final step).
    async fn gc_now(backend: &dyn Backend, name: &DbName) -> crate::gc::GcReport {
        let options = GcOptions {
            retain_ms: 0,
            now_ms: Clock::System.now_ms() + 1_000,
            write_units_max: None,
            keep_from: None,
        };
        collect(backend, name, options).await.expect("gc")
    }

    /// Issue 31, item 1: one long-lived client (the extension's) wrote
    /// x.db to version 8; x.db was removed and collected away, and created
    /// again (versions start at 1). The client's next spilled page was
    /// recorded with the old database's version as its intent's bound, so
    /// once the new database passed it, `gc` took the page's transaction
    /// for one that never committed and deleted a page the newest version
    /// reads.
    async fn a_client_living_across_a_removal_keeps_the_new_databases_sectors(
        backend: Arc<dyn Backend>,
    ) {
        let name = DbName::new("x.db").expect("legal name");
        let mut client = Client::new(backend.clone(), Grant::all());
        let mut db = client.create("x.db", 4096).await.expect("create");
        let mut root = read_root(&*backend, &name).await.expect("root").1;
        for _ in 0..7 {
            root = commit_next(&mut client, &mut db, root).await;
        }
        crate::db::remove_database(&*backend, &name)
            .await
            .expect("rm");
        assert!(gc_now(&*backend, &name).await.removed);
        // Another process creates it again; this client opens it.
        crate::db::create_database(&*backend, &name, 4096)
            .await
            .expect("created again");
        let mut db = client.open("x.db").expect("open");
        client.read_root(&mut db).await.expect("read");
        let (_, mut root) = read_root(&*backend, &name).await.expect("root");
        // A transaction on version 1 spills page 0, then commits as 2.
        let txn_id = random_u64();
        let page = salted(&[7u8; 4096], Salt::page(0, txn_id));
        let key = hash(&page);
        client
            .put_sectors(&mut db, vec![(key.to_vec(), page)])
            .await
            .expect("spill");
        let intents = backend
            .list_intents(&name, u64::MAX, 10)
            .await
            .expect("list");
        let bound = Intent::decode(&intents[0].1).expect("intent").bound;
        assert_eq!(bound, 1, "the bound is the version the transaction read");
        root.version += 1;
        root.txn_id = txn_id;
        root.commit_ms = Clock::System.now_ms();
        root.page_count = 1;
        root.overlay = vec![(0, key)];
        client
            .commit_root(&mut db, 1, root.encode(), None, Vec::new())
            .await
            .expect("commit");
        // Past the old database's versions, then collected.
        for _ in 0..9 {
            root = commit_next(&mut client, &mut db, root).await;
        }
        gc_now(&*backend, &name).await;
        let found = backend.get_sectors(root.db_id, &[key]).await.expect("read");
        assert!(found[0].is_some(), "page 0 of the newest version is gone");
    }

    #[tokio::test]
    async fn a_client_living_across_a_removal_keeps_the_new_databases_sectors_memory() {
        let backend = Arc::new(MemoryBackend::new());
        a_client_living_across_a_removal_keeps_the_new_databases_sectors(backend).await;
    }

    #[tokio::test]
    async fn a_client_living_across_a_removal_keeps_the_new_databases_sectors_local() {
        let dir = tempfile::tempdir().expect("dir");
        let backend = Arc::new(LocalBackend::open(dir.path()).expect("store"));
        a_client_living_across_a_removal_keeps_the_new_databases_sectors(backend).await;
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
}
