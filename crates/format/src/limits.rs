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
/// Longest lease a guest may ask for.
pub const LEASE_MS_MAX: u32 = 10 * 60 * 1000;
