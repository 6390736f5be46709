//! `donut:storage` for guests: the thin WIT adapter over the store's
//! [`StoreClient`](donut_store::client::Client) — the instance's resource table of handles, and the
//! conversion of errors — and nothing the CLI or a library caller needs
//! without a guest (that lives in `donut_store`).

use donut_format::DbName;
pub use donut_format::limits::{
    HANDLES_PER_INSTANCE_MAX, LEASE_MS_MAX, PUT_CALL_BYTES_MAX, SECTOR_BYTES_MAX,
    SECTORS_PER_CALL_MAX,
};
use donut_store::backend::Backend;
pub use donut_store::cache::{SectorCache, Versions};
use donut_store::client::Client as StoreClient;
pub use donut_store::client::{
    COMMIT_BACKOFF_MS_BASE, COMMIT_BACKOFF_MS_MAX, HeldLease, LockMode, OpenDatabase,
    commit_backoff_ms,
};
pub use donut_store::clock::{Clock, VirtualTime};
pub use donut_store::db::{
    Stored, create_database, new_root, read_root, read_stored, remove_database, swap_root,
};
pub use donut_store::disk_cache::DiskCache;
pub use donut_store::error::StorageError;
pub use donut_store::gc::{GcOptions, GcReport, RETAIN_MS_DEFAULT, collect as collect_garbage};
pub use donut_store::grant::Grant;
pub use donut_store::history::{
    Restored, Version, fork, list_versions, read_root_at, restore, restore_over,
};
pub use donut_store::lease::LeaseRenewal;
pub use donut_store::quota::{CallQuota, QuotaExceeded, QuotaUse};
use donut_store::stats::{RequestStats, StorageStats};
use std::sync::Arc;
use wasmtime::component::{Resource, ResourceTable, ResourceTableError};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "donut:storage/client",
    imports: { default: async | trappable },
    trappable_error_type: {
        "donut:storage/types.error" => StorageError,
    },
    with: {
        "donut:storage/storage.database": OpenDatabase,
        "donut:storage/storage.lock": HeldLease,
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

/// The per-instance storage state, owned by the wasmtime store: the
/// client and the guest's handles to what it opened.
pub struct StorageCtx {
    client: StoreClient,
    table: Handles,
}

impl StorageCtx {
    pub fn new(backend: Arc<dyn Backend>, grant: Grant) -> StorageCtx {
        StorageCtx {
            client: StoreClient::new(backend, grant),
            table: Handles::default(),
        }
    }

    fn map(mut self, f: impl FnOnce(StoreClient) -> StoreClient) -> Self {
        self.client = f(self.client);
        self
    }

    /// [`donut_store::client::Client::billed`].
    pub fn billed(self) -> Self {
        self.map(StoreClient::billed)
    }

    /// What this call's requests have cost so far, if it is billed.
    pub fn bill(&self) -> Option<RequestStats> {
        self.client.bill()
    }

    /// Limits this call's storage work; past a limit the instance stops.
    pub fn with_quota(self, quota: CallQuota) -> Self {
        self.map(|c| c.with_quota(quota))
    }

    /// [`donut_store::client::Client::bill_handle`].
    pub fn bill_handle(&self) -> Option<Arc<std::sync::Mutex<RequestStats>>> {
        self.client.bill_handle()
    }

    /// [`donut_store::client::Client::limit_units_from_now`].
    pub fn limit_units_from_now(&mut self, read_units: Option<f64>, write_units: Option<f64>) {
        self.client.limit_units_from_now(read_units, write_units)
    }

    /// [`donut_store::client::Client::limit_from_now`].
    pub fn limit_from_now(&mut self, quota: CallQuota) {
        self.client.limit_from_now(quota)
    }

    /// What this call has asked of storage so far.
    pub fn quota_used(&self) -> QuotaUse {
        self.client.quota_used()
    }

    /// The per-call limit this call reached, if it did.
    pub fn quota_exceeded(&self) -> Option<QuotaExceeded> {
        self.client.quota_exceeded()
    }

    /// Creates database `name` if the grant allows, counted as one root
    /// swap: the guest's `create` and the CLI's.
    pub async fn create_database(
        &mut self,
        name: &str,
        page_size: u32,
    ) -> Result<(DbName, donut_format::Root), StorageError> {
        self.client.create_database(name, page_size).await
    }

    pub fn with_lease_renewal(self, renewal: LeaseRenewal) -> Self {
        self.map(|c| c.with_lease_renewal(renewal))
    }

    /// Shares `cache` with the other instances that use it.
    pub fn with_cache(self, cache: Arc<SectorCache>) -> Self {
        self.map(|c| c.with_cache(cache))
    }

    pub fn with_clock(self, clock: Clock) -> Self {
        self.map(|c| c.with_clock(clock))
    }

    pub fn with_stats(self, stats: Arc<StorageStats>) -> Self {
        self.map(|c| c.with_stats(stats))
    }

    pub fn stats(&self) -> Arc<StorageStats> {
        self.client.stats()
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
        self.client.hash_all(&items)
    }
}

impl donut::storage::storage::HostDatabase for StorageCtx {
    async fn open(&mut self, name: String) -> Result<Resource<OpenDatabase>, StorageError> {
        let db = self.client.open(&name)?;
        self.table.push(db)
    }

    async fn create(
        &mut self,
        name: String,
        page_size: u32,
    ) -> Result<Resource<OpenDatabase>, StorageError> {
        let db = self.client.create(&name, page_size).await?;
        self.table.push(db)
    }

    async fn name(&mut self, db: Resource<OpenDatabase>) -> wasmtime::Result<String> {
        Ok(self.table.get(&db)?.name().to_string())
    }

    async fn read_root(&mut self, db: Resource<OpenDatabase>) -> Result<WitRoot, StorageError> {
        let db = self.table.get_mut(&db)?;
        let meta = self.client.read_root(db).await?;
        Ok(WitRoot {
            version: meta.version,
            body: meta.body,
        })
    }

    async fn get_sectors(
        &mut self,
        db: Resource<OpenDatabase>,
        hashes: Vec<Vec<u8>>,
    ) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        let db = self.table.get_mut(&db)?;
        self.client.get_sectors(db, &hashes).await
    }

    async fn put_sectors(
        &mut self,
        db: Resource<OpenDatabase>,
        sectors: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StorageError> {
        let db = self.table.get_mut(&db)?;
        self.client.put_sectors(db, sectors).await
    }

    async fn commit_root(
        &mut self,
        db: Resource<OpenDatabase>,
        expected_version: u64,
        body: Vec<u8>,
        fence: Option<Resource<HeldLease>>,
        sectors: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<u64, StorageError> {
        let fence = match fence {
            Some(fence) => Some(self.table.get(&fence)?.shared()),
            None => None,
        };
        let db = self.table.get_mut(&db)?;
        self.client
            .commit_root(db, expected_version, body, fence, sectors)
            .await
    }

    async fn acquire(
        &mut self,
        db: Resource<OpenDatabase>,
        mode: WitLockMode,
        lease_ms: u32,
    ) -> Result<Resource<HeldLease>, StorageError> {
        let mode = match mode {
            WitLockMode::Shared => LockMode::Shared,
            WitLockMode::Exclusive => LockMode::Exclusive,
        };
        let db = self.table.get(&db)?;
        let lease = self.client.acquire(db, mode, lease_ms).await?;
        self.table.push(lease)
    }

    async fn newest_version_seen(&mut self, db: Resource<OpenDatabase>) -> wasmtime::Result<u64> {
        Ok(self.client.newest_version_seen(self.table.get(&db)?))
    }

    async fn drop(&mut self, db: Resource<OpenDatabase>) -> wasmtime::Result<()> {
        self.table.delete(db)?;
        Ok(())
    }
}

impl donut::storage::storage::HostLock for StorageCtx {
    async fn token(&mut self, lock: Resource<HeldLease>) -> wasmtime::Result<u64> {
        Ok(self.client.token(self.table.get(&lock)?).await)
    }

    async fn renew(
        &mut self,
        lock: Resource<HeldLease>,
        lease_ms: u32,
    ) -> Result<(), StorageError> {
        let lock = self.table.get(&lock)?;
        self.client.renew(lock, lease_ms).await
    }

    async fn release(&mut self, lock: Resource<HeldLease>) -> Result<(), StorageError> {
        let lock = self.table.get(&lock)?;
        self.client.release(lock).await
    }

    async fn remaining_ms(&mut self, lock: Resource<HeldLease>) -> wasmtime::Result<u64> {
        let lock = self.table.get(&lock)?;
        Ok(self.client.remaining_ms(lock).await)
    }

    async fn drop(&mut self, lock: Resource<HeldLease>) -> wasmtime::Result<()> {
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
    use donut_format::{Hash, Root};
    use std::sync::atomic::{AtomicU64, Ordering};

    fn borrow<T: 'static>(r: &Resource<T>) -> Resource<T> {
        Resource::new_borrow(r.rep())
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
        let replaces = donut_store::backend::Replaces::Database(current.db_id);
        donut_store::db::swap_root(backend, name, Some(version - 1), replaces, false, &root)
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

    async fn ctx_with_db(clock: Clock) -> (StorageCtx, Resource<OpenDatabase>) {
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
