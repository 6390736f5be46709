//! `donut-store`: where DonutDB's items live and the operations on them,
//! with no WebAssembly runtime.
//!
//! - [`backend`]: the `Backend` trait and the memory, local and DynamoDB
//!   backends, and the billing model (`metered`);
//! - [`db`]: database operations on roots (read, create, swap, remove);
//!   [`history`]: kept versions (read at a version or time, list, restore);
//!   [`gc`]: retiring old versions and deleting what only they referenced;
//!   [`intent`]: what sectors stored before a commit point belong to;
//! - [`client`]: one instance's storage calls with their checks (the
//!   host's WIT adapter and the native extension's port both use it);
//! - [`lease`]: leases on a database's lock item;
//! - [`cache`]: the host-wide sector cache and version memory;
//!   [`disk_cache`]: the persistent sector cache shared by processes;
//! - [`grant`], [`quota`], [`clock`]: which databases an instance may use
//!   and how, what one call may ask of storage, and time;
//! - [`transfer`]: push and pull of SQLite files; [`migrate`]: reading
//!   the Go DonutDB's files;
//! - [`stats`]: request counters; [`error`]: the storage error.

pub mod backend;
pub mod cache;
pub mod client;
pub mod clock;
pub mod db;
pub mod disk_cache;
pub mod error;
pub mod gc;
pub mod grant;
pub mod history;
pub mod intent;
pub mod lease;
pub mod migrate;
pub mod quota;
pub mod stats;
pub mod transfer;

pub use backend::{Backend, local::LocalBackend, memory::MemoryBackend};
pub use clock::Clock;
pub use error::StorageError;
pub use grant::Grant;

/// 64 random bits from the OS (owner ids, transaction ids).
pub fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    u64::from_le_bytes(bytes)
}
