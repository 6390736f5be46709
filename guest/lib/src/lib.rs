//! SQLite on DonutDB, inside a `wasm32-wasip2` component.
//!
//! Link this crate, call [`open`] (or [`create`]) and use the returned
//! [`rusqlite::Connection`] as usual: pages live in the host's storage
//! (`donut:storage`), each transaction commits with one compare-and-swap of
//! the database's root, and every read transaction sees the snapshot it
//! started on. See `ARCHITECTURE.md` for the protocol.
//!
//! ```no_run
//! let conn = donut_guest::open("app.db")?;
//! conn.execute("insert into t(x) values (?1)", [42])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod port;

#[cfg(feature = "planted-bugs")]
pub use donut_vfs::planted;
pub use donut_vfs::{
    Error, LEASE_MS_DEFAULT, LEASE_MS_MAX, Writer, describe_sqlite_error, error_code_name,
    last_storage_error,
};

/// The `donut:storage` imports as wit-bindgen generated them; a component
/// that exports more of the package (the session component) reuses them
/// through wit-bindgen's `with`.
#[doc(hidden)]
#[allow(clippy::all, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "client",
        path: "../../wit",
    });
}

pub use rusqlite;

use bindings::donut::storage::storage::Database;
use donut_vfs::Vfs;
use donut_vfs::port::{StorageError, StoredRoot};
use rusqlite::{Connection, OpenFlags};

/// Name the VFS is registered under.
pub const VFS_NAME: &str = "donut";

/// The busy timeout of a new connection (rusqlite's default): how long
/// SQLite's busy handler retries a held lease before SQLITE_BUSY.
pub const BUSY_TIMEOUT_DEFAULT: std::time::Duration = std::time::Duration::from_secs(5);

thread_local! {
    /// The `donut` VFS over this instance's `donut:storage` imports,
    /// registered on first use (with the change log `DONUT_CHANGE_LOG`
    /// names, if any) as SQLite's default VFS: the instance has no other
    /// storage, and SQLite seeds `random()` and `randomblob()` from the
    /// default VFS's randomness — ours is `wasi:random`; WASI's `unix` VFS
    /// would seed from the time in seconds and a constant pid.
    static VFS: &'static Vfs = {
        let vfs = donut_vfs::register_default(VFS_NAME, Box::new(port::WitPort));
        vfs.change_log_from_env();
        vfs
    };
}

pub use donut_vfs::CHANGE_LOG_ENV;

/// Writes the change log — a JSON line per VFS call SQLite makes (time,
/// action, file, offset, length, result, duration, root version) — to
/// `sink` from now on; `None` stops it. Free when off.
pub fn set_change_log(sink: Option<Box<dyn std::io::Write>>) {
    vfs().set_change_log(sink);
}

fn vfs() -> &'static Vfs {
    VFS.with(|vfs| *vfs)
}

/// Opens an existing database.
pub fn open(name: &str) -> Result<Connection, Error> {
    let handle = vfs()
        .port()
        .open(name)
        .map_err(|e| Error::storage("open", name, e))?;
    connect(name, handle, None)
}

/// Opens a past version of a database, read-only: `at` is a version
/// (`"12"`) or an RFC 3339 time (`"2026-11-29T10:00:00Z"`), the same as
/// `open("NAME@AT")`. `PRAGMA donut_version` tells the version read.
pub fn open_at(name: &str, at: &str) -> Result<Connection, Error> {
    open(&format!("{name}@{at}"))
}

/// Creates a database with `page_size` (a power of two, 512..=65536) and
/// opens it. Fails if the name is taken.
pub fn create(name: &str, page_size: u32) -> Result<Connection, Error> {
    let handle = vfs()
        .port()
        .create(name, page_size)
        .map_err(|e| Error::storage("create", name, e))?;
    connect(name, handle, None)
}

/// Opens the database, creating it with `page_size` if it does not exist.
pub fn open_or_create(name: &str, page_size: u32) -> Result<Connection, Error> {
    let handle = vfs()
        .port()
        .open(name)
        .map_err(|e| Error::storage("open", name, e))?;
    match handle.read_root() {
        Ok(root) => connect(name, handle, Some(root)),
        Err(StorageError::NotFound(_)) => create(name, page_size),
        Err(e) => Err(Error::storage("open", name, e)),
    }
}

/// Runs `body` in a transaction that `retry` itself begins (deferred) and
/// commits, and runs the whole transaction again while it fails with
/// `SQLITE_BUSY` (a concurrent commit won, the lease is held, storage
/// throttled: nothing of it was stored), at most `attempts` times, with a
/// jittered backoff between attempts. Because `retry` owns the
/// transaction, everything `body` does through the [`rusqlite::Transaction`]
/// is in it: no statement can autocommit on its own and then run twice. A
/// commit whose outcome is unknown fails with another code and is not
/// retried.
///
/// ```no_run
/// let mut conn = donut_guest::open("app.db")?;
/// donut_guest::retry(&mut conn, 5, |tx| {
///     tx.execute("update accounts set balance = balance - 1 where id = 1", [])?;
///     tx.execute("update accounts set balance = balance + 1 where id = 2", [])
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn retry<T>(
    conn: &mut Connection,
    attempts: u32,
    body: impl FnMut(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    retry_with(
        conn,
        rusqlite::TransactionBehavior::Deferred,
        attempts,
        body,
    )
}

/// [`retry`] with the transaction begun as `behavior` says (`Immediate`
/// takes the write lock — a lease writer's lease — before `body` reads).
pub fn retry_with<T>(
    conn: &mut Connection,
    behavior: rusqlite::TransactionBehavior,
    attempts: u32,
    mut body: impl FnMut(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    assert!(attempts > 0, "retry needs at least one attempt");
    let mut attempt = 1;
    loop {
        let outcome = conn.transaction_with_behavior(behavior).and_then(|tx| {
            let out = body(&tx)?;
            tx.commit()?;
            Ok(out)
        });
        match outcome {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && attempt < attempts =>
            {
                std::thread::sleep(backoff(attempt));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The pause before running again a statement or transaction refused with
/// `SQLITE_BUSY`, after `attempt` refusals: jittered, exponential, at most
/// 100 ms (what [`retry`] waits).
pub fn retry_pause(attempt: u32) -> std::time::Duration {
    backoff(attempt)
}

/// Jittered exponential backoff before attempt `attempt + 1`: between half
/// and all of 1 ms · 2^attempt, at most 100 ms.
fn backoff(attempt: u32) -> std::time::Duration {
    let ceiling_us = (1000u64 << attempt.min(7)).min(100_000);
    let mut jitter = [0u8; 8];
    let _ = getrandom::fill(&mut jitter); // no randomness: the ceiling
    let us = ceiling_us / 2 + u64::from_le_bytes(jitter) % (ceiling_us / 2 + 1);
    std::time::Duration::from_micros(us)
}

/// For benchmarks: crosses into the host `n` times with a call that does no
/// storage work (`database.newest-version-seen`), then makes `n` root reads
/// (the cheapest call that reaches the backend); returns the nanoseconds
/// each kind took per call. What a storage call costs beyond its request.
pub fn probe_host_calls(name: &str, n: u32) -> Result<(u64, u64), Error> {
    assert!(n > 0, "probe at least one call");
    let handle = Database::open(name).map_err(|e| Error::storage("open", name, port::error(e)))?;
    handle
        .read_root()
        .map_err(|e| Error::storage("read", name, port::error(e)))?;
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(handle.newest_version_seen());
    }
    let boundary_ns = start.elapsed().as_nanos() as u64 / n as u64;
    let start = std::time::Instant::now();
    for _ in 0..n {
        let root = handle
            .read_root()
            .map_err(|e| Error::storage("read", name, port::error(e)))?;
        std::hint::black_box(root);
    }
    let root_read_ns = start.elapsed().as_nanos() as u64 / n as u64;
    Ok((boundary_ns, root_read_ns))
}

fn connect(
    name: &str,
    handle: Box<dyn donut_vfs::port::Database>,
    root: Option<StoredRoot>,
) -> Result<Connection, Error> {
    // Reading the root now both checks that the database exists (a clear
    // error instead of SQLite's "unable to open") and primes the snapshot the
    // VFS starts from, so opening costs one round trip.
    let root = match root {
        Some(root) => root,
        None => handle
            .read_root()
            .map_err(|e| Error::storage("open", name, e))?,
    };
    let root = Vfs::decode_root(name, &root).map_err(|detail| Error::Corrupt {
        name: name.to_string(),
        detail,
    })?;
    let page_count = root.page_count;
    let page_size = root.page_size;
    let vfs = vfs();
    vfs.prime(name, handle, root);
    // `NAME@AT` is a past version: the host refuses writes to it, and
    // SQLite says so first ("attempt to write a readonly database").
    let access = match name.contains('@') {
        true => OpenFlags::SQLITE_OPEN_READ_ONLY,
        false => OpenFlags::SQLITE_OPEN_READ_WRITE,
    };
    let flags = access | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_EXRESCODE;
    let conn = Connection::open_with_flags_and_vfs(name, flags, VFS_NAME)
        .map_err(|e| Error::sqlite(name, e))?;
    // What the sqlite3 shell has built in: `generate_series` (the math
    // functions are compiled in: SQLITE_ENABLE_MATH_FUNCTIONS).
    rusqlite::vtab::series::load_module(&conn).map_err(|e| Error::sqlite(name, e))?;
    if page_count == 0 {
        // SQLite fixes the page size with the first write; use the one the
        // database was created with.
        conn.pragma_update(None, "page_size", page_size)
            .map_err(|e| Error::sqlite(name, e))?;
    }
    // The schema is loaded now, on the root just read, rather than by the
    // first statement's `prepare` in a read transaction of its own that
    // would cost the statement a second root read (a one-shot query: one
    // root read, not two). Only an optimisation: if it fails (throttled,
    // say), the first statement loads the schema and reports the error.
    // Without waiting in SQLite's busy handler meanwhile: whoever opened
    // has not chosen a busy timeout yet.
    conn.busy_timeout(std::time::Duration::ZERO)
        .map_err(|e| Error::sqlite(name, e))?;
    let _ = vfs.loading_schema(|| conn.prepare("select 1 from sqlite_schema").map(drop));
    conn.busy_timeout(BUSY_TIMEOUT_DEFAULT)
        .map_err(|e| Error::sqlite(name, e))?;
    Ok(conn)
}
