//! The storage port: what the VFS core needs from storage, one method per
//! `donut:storage` function (wit/storage.wit says what each does and
//! promises). `donut-guest` implements it over the WIT imports; a native
//! build would implement it over `donut-store`.
//!
//! Object-safe on purpose: the VFS keeps `Box<dyn Database>` handles in
//! SQLite's file structs, and a storage call costs a host crossing or a
//! request, next to which a virtual call is nothing.

use std::any::Any;

/// A storage failure, as `donut:storage`'s `error` variant describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageError {
    NotFound(String),
    AlreadyExists(String),
    /// The root moved: another writer committed first.
    Conflict,
    Busy(String),
    Throttled(String),
    TooLarge(String),
    Denied(String),
    Corrupt(String),
    Unavailable(String),
    Invalid(String),
}

/// A database's root as stored: its version and encoded body
/// (`donut_format::Root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRoot {
    pub version: u64,
    pub body: Vec<u8>,
}

/// How a lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// A sector to store: its content hash and bytes.
pub type Sector = (Vec<u8>, Vec<u8>);

/// Storage as a whole: opening databases, and work that needs none.
pub trait Port {
    /// Opens an existing database (no request: [`Database::read_root`]
    /// tells whether it exists).
    fn open(&self, name: &str) -> Result<Box<dyn Database>, StorageError>;
    /// Creates a database with `page_size`; fails if the name is taken.
    fn create(&self, name: &str, page_size: u32) -> Result<Box<dyn Database>, StorageError>;
    /// SHA-256 of each item, in order.
    fn hash_all(&self, items: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, StorageError>;
}

/// One database of the port.
pub trait Database {
    fn read_root(&self) -> Result<StoredRoot, StorageError>;
    /// The sectors with these hashes, `None` for each one not stored.
    fn get_sectors(&self, hashes: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StorageError>;
    fn put_sectors(&self, sectors: &[Sector]) -> Result<(), StorageError>;
    /// Swaps the root from `expected_version` to `body` (storing `sectors`
    /// with it when they fit one request), fenced by `fence` if given —
    /// a lock this database's [`Database::acquire`] returned. Returns the
    /// new version.
    fn commit_root(
        &self,
        expected_version: u64,
        body: &[u8],
        fence: Option<&dyn Lock>,
        sectors: &[Sector],
    ) -> Result<u64, StorageError>;
    /// The newest root version any read of this database saw (no request).
    fn newest_version_seen(&self) -> u64;
    fn acquire(&self, mode: LockMode, lease_ms: u32) -> Result<Box<dyn Lock>, StorageError>;
}

/// A held lease on a database's lock.
pub trait Lock: Any {
    fn renew(&self, lease_ms: u32) -> Result<(), StorageError>;
    fn release(&self) -> Result<(), StorageError>;
    fn remaining_ms(&self) -> u64;
    /// For a port to find its own lock type behind a `fence`.
    fn as_any(&self) -> &dyn Any;
}
