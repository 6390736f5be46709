//! DonutDB's SQLite VFS core: the main database file mapped onto a root, a
//! manifest and content-addressed pages (docs/format.md), read snapshots,
//! pending writes and the commit protocol, the sector caches and the
//! in-memory journals — over a storage [`port`], so it carries no WIT
//! bindings and no wasmtime. `donut-guest` registers it over the
//! `donut:storage` imports inside a component.
//!
//! Modules: [`port`] (what the core needs from storage), `main_file` (the
//! main database file and the commit protocol), `sqlite_vfs` (SQLite's C
//! VFS callbacks over it, and [`register`]), `shared` ([`Vfs`], the state a
//! VFS's connections share), `memfs` (journals and temporary files in
//! memory), `memory` (how the instance's memory limit is shared among
//! them), `cache` (the sector caches), `error` (what the last failure
//! was, and SQLite result-code names).

mod cache;
mod change_log;
mod error;
mod main_file;
mod memfs;
mod memory;
pub mod port;
mod shared;
mod sqlite_vfs;

pub use donut_format::limits::CHANGE_LOG_ENV;
pub use error::{
    Error, describe_sqlite_error, describe_storage_error, error_code_name, last_storage_error,
};
pub use main_file::{LEASE_MS_DEFAULT, LEASE_MS_MAX, Writer};
pub use shared::Vfs;
pub use sqlite_vfs::{SqliteApi, register, register_default, register_with};

/// Deliberate bugs for the simulator's mutation checks: compiled only with
/// the `planted-bugs` feature (test components), off until switched on.
#[cfg(feature = "planted-bugs")]
pub mod planted {
    use std::cell::Cell;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Bug {
        /// Reads go to the latest root, not the transaction's snapshot.
        UnpinnedReads,
        /// An exclusive writer trusts its claim however little of its
        /// lease is left.
        TrustedClaims,
    }

    thread_local! {
        static ACTIVE: Cell<Option<Bug>> = const { Cell::new(None) };
    }

    pub fn plant(bug: Bug) {
        ACTIVE.with(|a| a.set(Some(bug)));
    }

    pub(crate) fn active(bug: Bug) -> bool {
        ACTIVE.with(|a| a.get() == Some(bug))
    }
}

/// The instance's memory limit, as the host tells it
/// ([`donut_format::limits::MEMORY_LIMIT_ENV`] in the WASI environment), if
/// it does.
pub(crate) fn memory_limit_bytes() -> Option<usize> {
    static LIMIT: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var(donut_format::limits::MEMORY_LIMIT_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
    })
}
