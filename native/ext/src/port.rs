//! The native port: `donut_vfs::port` over the store's [`Client`] — the
//! same calls, checks and intents as a guest's `donut:storage`, without a
//! component boundary. Each call runs on the extension's tokio runtime
//! (`block_on`: SQLite's callbacks are synchronous).

use donut_store::StorageError as StoreError;
use donut_store::client::{Client, HeldLease, LockMode as StoreLockMode, OpenDatabase};
use donut_vfs::port::{Database, Lock, LockMode, Port, Sector, StorageError, StoredRoot};
use std::any::Any;
use std::sync::{Arc, Mutex, PoisonError};

/// What the port's databases and locks share.
struct Shared {
    runtime: tokio::runtime::Runtime,
    client: Mutex<Client>,
}

impl Shared {
    /// Runs `call` on the client to completion.
    fn call<T>(
        &self,
        call: impl AsyncFnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StorageError> {
        let mut client = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        self.runtime.block_on(call(&mut client)).map_err(port_error)
    }
}

fn port_error(e: StoreError) -> StorageError {
    match e {
        StoreError::NotFound(m) => StorageError::NotFound(m),
        StoreError::AlreadyExists(m) => StorageError::AlreadyExists(m),
        StoreError::Conflict => StorageError::Conflict,
        StoreError::Busy(m) => StorageError::Busy(m),
        StoreError::Throttled(m) => StorageError::Throttled(m),
        StoreError::TooLarge(m) => StorageError::TooLarge(m),
        StoreError::Denied(m) => StorageError::Denied(m),
        StoreError::Corrupt(m) => StorageError::Corrupt(m),
        StoreError::Unavailable(m) => StorageError::Unavailable(m),
        StoreError::Invalid(m) => StorageError::Invalid(m),
        // The client traps only past a call quota, which this port sets
        // none of.
        StoreError::Trap(m) => StorageError::Invalid(format!("host fault: {m}")),
    }
}

/// Storage for the extension's VFS.
pub struct NativePort {
    shared: Arc<Shared>,
}

impl NativePort {
    pub fn new(runtime: tokio::runtime::Runtime, client: Client) -> NativePort {
        NativePort {
            shared: Arc::new(Shared {
                runtime,
                client: Mutex::new(client),
            }),
        }
    }

    fn database(&self, open: OpenDatabase) -> Box<dyn Database> {
        Box::new(NativeDatabase {
            shared: self.shared.clone(),
            open: Mutex::new(open),
        })
    }
}

impl Port for NativePort {
    fn open(&self, name: &str) -> Result<Box<dyn Database>, StorageError> {
        let open = self.shared.call(async |client| client.open(name))?;
        Ok(self.database(open))
    }

    fn create(&self, name: &str, page_size: u32) -> Result<Box<dyn Database>, StorageError> {
        let open = self
            .shared
            .call(async |client| client.create(name, page_size).await)?;
        Ok(self.database(open))
    }

    fn hash_all(&self, items: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, StorageError> {
        self.shared.call(async |client| client.hash_all(items))
    }
}

struct NativeDatabase {
    shared: Arc<Shared>,
    open: Mutex<OpenDatabase>,
}

impl NativeDatabase {
    fn call<T>(
        &self,
        call: impl AsyncFnOnce(&mut Client, &mut OpenDatabase) -> Result<T, StoreError>,
    ) -> Result<T, StorageError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        self.shared
            .call(async |client| call(client, &mut open).await)
    }
}

impl Database for NativeDatabase {
    fn read_root(&self) -> Result<StoredRoot, StorageError> {
        let meta = self.call(async |client, db| client.read_root(db).await)?;
        Ok(StoredRoot {
            version: meta.version,
            body: meta.body,
        })
    }

    fn get_sectors(&self, hashes: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.call(async |client, db| client.get_sectors(db, hashes).await)
    }

    fn put_sectors(&self, sectors: &[Sector]) -> Result<(), StorageError> {
        self.call(async |client, db| client.put_sectors(db, sectors.to_vec()).await)
    }

    fn commit_root(
        &self,
        expected_version: u64,
        body: &[u8],
        fence: Option<&dyn Lock>,
        sectors: &[Sector],
    ) -> Result<u64, StorageError> {
        let fence = match fence {
            None => None,
            Some(lock) => match lock.as_any().downcast_ref::<NativeLock>() {
                Some(lock) => Some(lock.held.shared()),
                None => {
                    return Err(StorageError::Invalid(
                        "a commit fenced by a lock of another port".into(),
                    ));
                }
            },
        };
        self.call(async |client, db| {
            let (body, sectors) = (body.to_vec(), sectors.to_vec());
            client
                .commit_root(db, expected_version, body, fence, sectors)
                .await
        })
    }

    fn newest_version_seen(&self) -> u64 {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let client = self.shared.client.lock();
        client
            .unwrap_or_else(PoisonError::into_inner)
            .newest_version_seen(&open)
    }

    fn acquire(&self, mode: LockMode, lease_ms: u32) -> Result<Box<dyn Lock>, StorageError> {
        let mode = match mode {
            LockMode::Shared => StoreLockMode::Shared,
            LockMode::Exclusive => StoreLockMode::Exclusive,
        };
        let held = self.call(async |client, db| client.acquire(db, mode, lease_ms).await)?;
        Ok(Box::new(NativeLock {
            shared: self.shared.clone(),
            held,
        }))
    }
}

struct NativeLock {
    shared: Arc<Shared>,
    held: HeldLease,
}

impl Lock for NativeLock {
    fn renew(&self, lease_ms: u32) -> Result<(), StorageError> {
        let held = &self.held;
        self.shared
            .call(async |client| client.renew(held, lease_ms).await)
    }

    fn release(&self) -> Result<(), StorageError> {
        let held = &self.held;
        self.shared.call(async |client| client.release(held).await)
    }

    fn remaining_ms(&self) -> u64 {
        let held = &self.held;
        self.shared
            .call(async |client| Ok(client.remaining_ms(held).await))
            .unwrap_or(0)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
