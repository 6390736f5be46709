//! Limits both sides of the storage boundary share: the host enforces
//! them on every call, the guest stays within them. One name and one value
//! each (ARCHITECTURE.md, "Codemap").

/// Most sectors one `get-sectors`, `put-sectors` or `hash-all` call may
/// carry.
pub const SECTORS_PER_CALL_MAX: usize = 10_000;
/// Most bytes one `put-sectors` or `hash-all` call may carry.
pub const PUT_CALL_BYTES_MAX: usize = 64 << 20;
/// Largest sector: DynamoDB's 400 KB item limit, less room for the key.
pub const SECTOR_BYTES_MAX: usize = 390 * 1024;
/// Most database and lock handles one instance may hold at once: host
/// memory a guest could otherwise grow without bound, outside its own
/// memory limit.
pub const HANDLES_PER_INSTANCE_MAX: usize = 4096;
/// Longest lease a guest may ask for.
pub const LEASE_MS_MAX: u32 = 10 * 60 * 1000;

/// Most actions one DynamoDB `TransactWriteItems` takes: a one-request
/// commit's sector puts, its root put, its root's history put and its
/// fence's condition check all count.
pub const TRANSACTION_ACTIONS_MAX: usize = 100;
/// Actions of a commit besides its sectors: the root put and the history
/// put (docs/format.md, "History").
pub const ROOT_ACTIONS: usize = 2;
/// Most sectors a one-request commit carries: every action but the root's
/// two puts (and the fence's check, for a fenced commit: 97). The guest
/// sends a commit this small in the `commit-root` call itself.
pub const ONE_REQUEST_SECTORS_MAX: usize = TRANSACTION_ACTIONS_MAX - ROOT_ACTIONS;
/// Most sector bytes a one-request commit carries (`TransactWriteItems`:
/// 4 MB, with room for keys and the root).
pub const ONE_REQUEST_BYTES_MAX: usize = 3 << 20;
/// Largest item a backend stores (DynamoDB's item size limit); every
/// backend holds to it, so a store can move between them.
pub const ITEM_BYTES_MAX: usize = 400 * 1024;

/// The environment variable in which the host tells a guest its instance's
/// memory limit in bytes; the guest sizes its journal budget and spill
/// threshold from it.
pub const MEMORY_LIMIT_ENV: &str = "DONUT_MEMORY_LIMIT_BYTES";

/// The environment variable naming a file, in the guest's own file system,
/// to append the change log to (a JSON line per VFS call); the host's
/// `--change-log FILE` sets it and grants only that file's directory.
pub const CHANGE_LOG_ENV: &str = "DONUT_CHANGE_LOG";
