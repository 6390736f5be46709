//! The VFS core's storage port (`donut_vfs::port`) over the component's
//! `donut:storage` imports: one method per WIT function, errors mapped
//! variant for variant.

use crate::bindings::donut::storage::storage as wit;
use crate::bindings::donut::storage::types as wit_types;
use donut_vfs::port::{self, Sector, StorageError, StoredRoot};
use std::any::Any;

/// `donut:storage` as the VFS core's [`port::Port`].
pub(crate) struct WitPort;

pub(crate) struct WitDatabase(pub(crate) wit::Database);

struct WitLock(wit::Lock);

pub(crate) fn error(e: wit_types::Error) -> StorageError {
    use wit_types::Error as E;
    match e {
        E::NotFound(m) => StorageError::NotFound(m),
        E::AlreadyExists(m) => StorageError::AlreadyExists(m),
        E::Conflict => StorageError::Conflict,
        E::Busy(m) => StorageError::Busy(m),
        E::Throttled(m) => StorageError::Throttled(m),
        E::TooLarge(m) => StorageError::TooLarge(m),
        E::Denied(m) => StorageError::Denied(m),
        E::Corrupt(m) => StorageError::Corrupt(m),
        E::Unavailable(m) => StorageError::Unavailable(m),
        E::Invalid(m) => StorageError::Invalid(m),
    }
}

impl port::Port for WitPort {
    fn open(&self, name: &str) -> Result<Box<dyn port::Database>, StorageError> {
        let handle = wit::Database::open(name).map_err(error)?;
        Ok(Box::new(WitDatabase(handle)))
    }

    fn create(&self, name: &str, page_size: u32) -> Result<Box<dyn port::Database>, StorageError> {
        let handle = wit::Database::create(name, page_size).map_err(error)?;
        Ok(Box::new(WitDatabase(handle)))
    }

    fn hash_all(&self, items: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, StorageError> {
        wit::hash_all(items).map_err(error)
    }
}

impl port::Database for WitDatabase {
    fn read_root(&self) -> Result<StoredRoot, StorageError> {
        let root = self.0.read_root().map_err(error)?;
        Ok(StoredRoot {
            version: root.version,
            body: root.body,
        })
    }

    fn get_sectors(&self, hashes: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError> {
        self.0.get_sectors(hashes).map_err(error)
    }

    fn put_sectors(&self, sectors: &[Sector]) -> Result<(), StorageError> {
        self.0.put_sectors(sectors).map_err(error)
    }

    fn commit_root(
        &self,
        expected_version: u64,
        body: &[u8],
        fence: Option<&dyn port::Lock>,
        sectors: &[Sector],
    ) -> Result<u64, StorageError> {
        // The VFS fences a commit only with a lock this database gave it.
        let fence = fence.map(|lock| {
            &lock
                .as_any()
                .downcast_ref::<WitLock>()
                .expect("a fence from this port")
                .0
        });
        self.0
            .commit_root(expected_version, body, fence, sectors)
            .map_err(error)
    }

    fn newest_version_seen(&self) -> u64 {
        self.0.newest_version_seen()
    }

    fn acquire(
        &self,
        mode: port::LockMode,
        lease_ms: u32,
    ) -> Result<Box<dyn port::Lock>, StorageError> {
        let mode = match mode {
            port::LockMode::Shared => wit_types::LockMode::Shared,
            port::LockMode::Exclusive => wit_types::LockMode::Exclusive,
        };
        let lock = self.0.acquire(mode, lease_ms).map_err(error)?;
        Ok(Box::new(WitLock(lock)))
    }
}

impl port::Lock for WitLock {
    fn renew(&self, lease_ms: u32) -> Result<(), StorageError> {
        self.0.renew(lease_ms).map_err(error)
    }

    fn release(&self) -> Result<(), StorageError> {
        self.0.release().map_err(error)
    }

    fn remaining_ms(&self) -> u64 {
        self.0.remaining_ms()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
