//! DonutDB as a SQLite loadable extension: `libdonutdb.so` registers the
//! `donutdb` VFS — the same VFS core, format and commit protocol as the
//! components, over a native port that calls `donut-store` directly — in
//! whatever SQLite loads it (the `sqlite3` shell, Python's `sqlite3`, any
//! program that loads extensions):
//!
//! ```text
//! sqlite> .load ./libdonutdb
//! sqlite> .open 'file:app.db?vfs=donutdb'
//! ```
//!
//! Where the databases live is read from the environment when the
//! extension loads: `DONUTDB_TABLE` names a DynamoDB table (region,
//! endpoint and credentials from the usual AWS variables and files);
//! without it, the local store in `DONUT_LOCAL` (default
//! `~/.local/share/donutdb`) — the same store `donut-host` uses, so the
//! CLI and the shell see the same databases; `DONUT_LOCAL=:memory:` keeps
//! them in the process's memory, gone when it exits (tests, benchmarks).
//! `DONUT_CHANGE_LOG` names a file to append a JSON line per VFS call to.
//!
//! The extension calls SQLite only through the API table its entry point
//! is handed (never a SQLite of its own): [`api`].

mod api;
mod port;

use donut_store::backend::Backend;
use donut_store::backend::dynamo::{DynamoBackend, DynamoOptions};
use donut_store::client::Client;
use donut_store::{Grant, LocalBackend, MemoryBackend};
use donut_vfs::SqliteApi;
use libsqlite3_sys as ffi;
use std::ffi::{c_char, c_int};
use std::sync::Arc;

/// The VFS's name: `?vfs=donutdb`.
pub const VFS_NAME: &str = "donutdb";
/// The DynamoDB table to use; without it, the local store.
pub const TABLE_ENV: &str = "DONUTDB_TABLE";
/// The local store's directory (the CLI's `--local` default), or
/// [`MEMORY_STORE`].
pub const LOCAL_ENV: &str = "DONUT_LOCAL";
/// `DONUT_LOCAL` for a store in the process's memory.
pub const MEMORY_STORE: &str = ":memory:";
/// Requests per call to DynamoDB before an error reaches SQLite
/// (throttling, transient errors): the CLI's.
const DYNAMO_ATTEMPTS_MAX: u32 = 8;

/// SQLite's entry point for `.load ./libdonutdb` (named after the file).
///
/// # Safety
///
/// Called by SQLite with its API table.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sqlite3_donutdb_init(
    _db: *mut ffi::sqlite3,
    error_out: *mut *mut c_char,
    api: *const std::ffi::c_void,
) -> c_int {
    // SAFETY: SQLite hands its API table to the entry point.
    let api = match unsafe { api::from_table(api) } {
        Ok(api) => api,
        Err(message) => return unsafe { refuse(None, error_out, &message) },
    };
    match registered(api) {
        // Stays loaded when the connection that loaded it closes: the VFS
        // lives in it.
        Ok(()) => ffi::SQLITE_OK_LOAD_PERMANENTLY,
        Err(message) => unsafe { refuse(Some(api), error_out, &message) },
    }
}

/// The default entry point, for loaders that do not derive one from the
/// file name.
///
/// # Safety
///
/// Called by SQLite with its API table.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sqlite3_extension_init(
    db: *mut ffi::sqlite3,
    error_out: *mut *mut c_char,
    api: *const std::ffi::c_void,
) -> c_int {
    unsafe { sqlite3_donutdb_init(db, error_out, api) }
}

/// Says why loading failed, in SQLite's memory (it frees the message).
unsafe fn refuse(api: Option<SqliteApi>, error_out: *mut *mut c_char, message: &str) -> c_int {
    eprintln!("donutdb: {message}");
    if let (Some(api), false) = (api, error_out.is_null()) {
        unsafe { *error_out = api.string(message) };
    }
    ffi::SQLITE_ERROR
}

/// Registers the VFS the first time the extension loads; later loads (by
/// other connections) find it there. A failed first load is tried again
/// by the next.
fn registered(api: SqliteApi) -> Result<(), String> {
    static REGISTERED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut registered = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
    if *registered {
        return Ok(());
    }
    let name = std::ffi::CString::new(VFS_NAME).expect("a name without NUL");
    // SAFETY: a NUL-terminated name.
    if !unsafe { (api.vfs_find)(name.as_ptr()) }.is_null() {
        return Err(format!(
            "a VFS named {VFS_NAME} is registered already (the extension loaded from another file?)"
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("donutdb")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the I/O runtime: {e}"))?;
    let backend = runtime.block_on(backend_from_env())?;
    let client = Client::new(backend, Grant::all());
    let port = port::NativePort::new(runtime, client);
    let vfs = donut_vfs::register_with(VFS_NAME, Box::new(port), api);
    vfs.change_log_from_env();
    *registered = true;
    Ok(())
}

/// The store the environment names ([`TABLE_ENV`], else [`LOCAL_ENV`]).
async fn backend_from_env() -> Result<Arc<dyn Backend>, String> {
    if let Some(table) = std::env::var_os(TABLE_ENV) {
        let table = table
            .into_string()
            .map_err(|t| format!("{TABLE_ENV}={t:?} is not UTF-8"))?;
        let options = DynamoOptions {
            table: table.clone(),
            region: None,
            endpoint: None,
            static_credentials: None,
            max_attempts: DYNAMO_ATTEMPTS_MAX,
            one_request_commit: true,
            single_writer_region: false,
            table_check_cache: None,
        };
        let dynamo = DynamoBackend::connect(&options, Vec::new())
            .await
            .map_err(|e| format!("DynamoDB table {table:?} ({TABLE_ENV}): {e}"))?;
        return Ok(Arc::new(dynamo));
    }
    let local = std::env::var_os(LOCAL_ENV);
    if local.as_deref() == Some(std::ffi::OsStr::new(MEMORY_STORE)) {
        return Ok(Arc::new(MemoryBackend::new()));
    }
    let dir = match (local, std::env::var_os("HOME")) {
        (Some(dir), _) => std::path::PathBuf::from(dir),
        (None, Some(home)) => std::path::PathBuf::from(home).join(".local/share/donutdb"),
        (None, None) => return Err(format!("no {TABLE_ENV}, {LOCAL_ENV} or HOME")),
    };
    let local = LocalBackend::open(&dir)
        .map_err(|e| format!("the local store {} ({LOCAL_ENV}): {e}", dir.display()))?;
    Ok(Arc::new(local))
}
