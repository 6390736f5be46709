//! SQLite's C VFS interface over [`MainDb`] and in-memory files.
//!
//! Written against `libsqlite3-sys` directly: the VFS must report
//! `SQLITE_IOCAP_BATCH_ATOMIC` and answer the atomic-write file controls,
//! which no VFS crate does.

use crate::error::set_last;
use crate::main_file::{MainDb, Writer};
use crate::memfs;
use crate::memory::MemoryPlan;
use crate::port::Port;
use crate::shared::Vfs;
use libsqlite3_sys as ffi;
use std::ffi::{CStr, CString, c_char, c_int, c_void};

/// What a `sqlite3_file` of ours points to.
enum Inner {
    Main(MainDb),
    Mem {
        vfs: &'static Vfs,
        data: memfs::Shared,
        name: Option<String>,
        delete_on_close: bool,
    },
}

/// SQLite allocates `szOsFile` bytes and hands them to xOpen; ours are this.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    inner: *mut Inner,
}

/// The SQLite functions the VFS itself calls. A VFS in a process that
/// links SQLite uses the linked ones ([`SqliteApi::linked`]); a loadable
/// extension must use those of the SQLite that loaded it, from the API
/// table SQLite hands its entry point (`sqlite3_api_routines`).
#[derive(Clone, Copy)]
pub struct SqliteApi {
    pub vfs_find: unsafe extern "C" fn(*const c_char) -> *mut ffi::sqlite3_vfs,
    pub vfs_register: unsafe extern "C" fn(*mut ffi::sqlite3_vfs, c_int) -> c_int,
    /// Memory SQLite frees with `sqlite3_free` (pragma answers).
    pub malloc: unsafe extern "C" fn(c_int) -> *mut c_void,
}

impl SqliteApi {
    /// The functions of the SQLite this process links.
    pub fn linked() -> SqliteApi {
        SqliteApi {
            vfs_find: ffi::sqlite3_vfs_find,
            vfs_register: ffi::sqlite3_vfs_register,
            malloc: ffi::sqlite3_malloc,
        }
    }

    /// `text` as a NUL-terminated string in SQLite's memory, which SQLite
    /// frees with `sqlite3_free` (null if SQLite has none to give).
    pub fn string(&self, text: &str) -> *mut c_char {
        let bytes = text.as_bytes();
        let Ok(size) = c_int::try_from(bytes.len() + 1) else {
            return std::ptr::null_mut();
        };
        // SAFETY: SQLite's allocator; `size` bytes are written, the last a
        // NUL.
        unsafe {
            let out = (self.malloc)(size) as *mut u8;
            if !out.is_null() {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), out, bytes.len());
                *out.add(bytes.len()) = 0;
            }
            out as *mut c_char
        }
    }
}

/// Registers a DonutDB VFS named `name` over `port`, for the life of the
/// process (SQLite keeps a pointer to it), and returns its shared state.
/// Connections open through it with `Connection::open_with_flags_and_vfs`.
///
/// # Panics
///
/// If a VFS of that name is registered already, or `name` holds a NUL.
pub fn register(name: &str, port: Box<dyn Port>) -> &'static Vfs {
    register_with(name, port, SqliteApi::linked())
}

/// [`register`], and makes the VFS the linked SQLite's default — the one
/// SQLite seeds its random-number generator from (`random()`,
/// `randomblob()`, temporary names): the first draw after this asks the
/// VFS's `xRandomness`, the operating system's randomness through
/// `getrandom` (in a component, `wasi:random`, which only the simulator
/// makes deterministic). For a process whose own default VFS has no good
/// randomness: the `unix` VFS SQLite compiles for WASI finds no
/// `/dev/urandom` and seeds from the time in seconds and a constant pid,
/// so every instance started within a second drew the same numbers.
///
/// # Panics
///
/// If a VFS of that name is registered already, or `name` holds a NUL.
pub fn register_default(name: &str, port: Box<dyn Port>) -> &'static Vfs {
    let state = register_inner(name, port, SqliteApi::linked(), true);
    // Reset the generator: a draw made before this (under the old default)
    // must not keep its seed.
    // SAFETY: a null buffer with length 0 is SQLite's documented reset.
    unsafe { ffi::sqlite3_randomness(0, std::ptr::null_mut()) };
    state
}

/// [`register`] through `api`: the SQLite the VFS is registered with.
///
/// # Panics
///
/// If a VFS of that name is registered already, or `name` holds a NUL.
pub fn register_with(name: &str, port: Box<dyn Port>, api: SqliteApi) -> &'static Vfs {
    register_inner(name, port, api, false)
}

/// Registers the VFS with `api`'s SQLite, as its default if `default`.
fn register_inner(name: &str, port: Box<dyn Port>, api: SqliteApi, default: bool) -> &'static Vfs {
    let z_name = CString::new(name).expect("a VFS name without NUL");
    // SAFETY: a NUL-terminated name.
    let existing = unsafe { (api.vfs_find)(z_name.as_ptr()) };
    assert!(
        existing.is_null(),
        "a VFS named {name:?} is registered already"
    );
    let state: &'static Vfs = Box::leak(Box::new(Vfs::new(port, MemoryPlan::instance(), api)));
    let z_name: &'static CStr = Box::leak(z_name.into_boxed_c_str());
    let vfs = Box::leak(Box::new(ffi::sqlite3_vfs {
        iVersion: 2,
        szOsFile: std::mem::size_of::<File>() as c_int,
        mxPathname: 512,
        pNext: std::ptr::null_mut(),
        zName: z_name.as_ptr(),
        pAppData: state as *const Vfs as *mut c_void,
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: Some(x_dl_open),
        xDlError: Some(x_dl_error),
        xDlSym: Some(x_dl_sym),
        xDlClose: Some(x_dl_close),
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: Some(x_current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    }));
    // SAFETY: `vfs` is leaked, so it outlives every connection.
    let rc = unsafe { (api.vfs_register)(vfs, c_int::from(default)) };
    assert_eq!(rc, ffi::SQLITE_OK, "registering the {name:?} VFS");
    state
}

/// The state of a VFS [`register`] made, from SQLite's pointer to it.
unsafe fn state(vfs: *mut ffi::sqlite3_vfs) -> &'static Vfs {
    // SAFETY: `register` set pAppData to a leaked `Vfs`.
    unsafe { &*((*vfs).pAppData as *const Vfs) }
}

static MAIN_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// In-memory files share the callbacks; `Inner` tells them apart.
static MEM_METHODS: ffi::sqlite3_io_methods = MAIN_METHODS;

unsafe fn inner<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Inner {
    // SAFETY: SQLite passes back the file xOpen initialised with a live box.
    unsafe { &mut *(*(file as *mut File)).inner }
}

unsafe fn c_str<'a>(ptr: *const c_char) -> Option<&'a str> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: SQLite passes NUL-terminated strings.
        unsafe { CStr::from_ptr(ptr) }.to_str().ok()
    }
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let file = file as *mut File;
    // SAFETY: `file` points to szOsFile bytes owned by SQLite.
    unsafe {
        (*file).base.pMethods = std::ptr::null();
        (*file).inner = std::ptr::null_mut();
    }
    let name = unsafe { c_str(name) };
    let vfs = unsafe { state(vfs) };
    let _serial = vfs.serial();
    let mut flags = flags;
    let (inner, methods) = if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
        let Some(name) = name else {
            return ffi::SQLITE_CANTOPEN;
        };
        if donut_format::DbRef::parse(name).is_ok_and(|r| r.at.is_some()) {
            // `NAME@AT`, a past version: SQLite is told it opened read-only,
            // so a write fails as "attempt to write a readonly database"
            // before it reaches storage (which would refuse it too).
            flags = (flags & !(ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE))
                | ffi::SQLITE_OPEN_READONLY;
        }
        let create = flags & ffi::SQLITE_OPEN_CREATE != 0;
        match MainDb::open(vfs, name, create) {
            Ok(db) => (Inner::Main(db), &MAIN_METHODS),
            Err(fail) => return fail.code,
        }
    } else if flags & ffi::SQLITE_OPEN_WAL != 0 {
        set_last("DonutDB does not support WAL mode".into());
        return ffi::SQLITE_CANTOPEN;
    } else {
        (
            Inner::Mem {
                vfs,
                data: vfs.memfs.open(name),
                name: name.map(str::to_string),
                delete_on_close: flags & ffi::SQLITE_OPEN_DELETEONCLOSE != 0,
            },
            &MEM_METHODS,
        )
    };
    unsafe {
        (*file).inner = Box::into_raw(Box::new(inner));
        (*file).base.pMethods = methods;
        if !out_flags.is_null() {
            *out_flags = flags;
        }
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    _sync_dir: c_int,
) -> c_int {
    let Some(name) = (unsafe { c_str(name) }) else {
        return ffi::SQLITE_OK;
    };
    let vfs = unsafe { state(vfs) };
    let _serial = vfs.serial();
    vfs.memfs.delete(name);
    // Deleting a super-journal commits a multi-database transaction.
    match vfs.commit_staged(name) {
        Ok(()) => ffi::SQLITE_OK,
        Err(fail) => fail.code,
    }
}

unsafe extern "C" fn x_access(
    _vfs: *mut ffi::sqlite3_vfs,
    _name: *const c_char,
    _flags: c_int,
    out: *mut c_int,
) -> c_int {
    // SQLite asks about journals (hot-journal recovery) and WAL files. Ours
    // live in memory and never outlive a transaction that storage saw, so
    // there is never anything to recover: answer "absent".
    unsafe { *out = 0 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n_out: c_int,
    out: *mut c_char,
) -> c_int {
    let bytes = unsafe { CStr::from_ptr(name) }.to_bytes_with_nul();
    if bytes.len() > n_out as usize {
        return ffi::SQLITE_CANTOPEN;
    }
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr() as *const c_char, out, bytes.len()) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_dl_open(_vfs: *mut ffi::sqlite3_vfs, _name: *const c_char) -> *mut c_void {
    std::ptr::null_mut()
}

unsafe extern "C" fn x_dl_error(_vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) {
    let msg = c"loadable extensions are not available in DonutDB guests".to_bytes_with_nul();
    let len = msg.len().min(n.max(0) as usize);
    if len > 0 {
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr() as *const c_char, out, len);
            *out.add(len - 1) = 0;
        }
    }
}

type DlSym = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char);

unsafe extern "C" fn x_dl_sym(
    _vfs: *mut ffi::sqlite3_vfs,
    _handle: *mut c_void,
    _symbol: *const c_char,
) -> Option<DlSym> {
    None
}

unsafe extern "C" fn x_dl_close(_vfs: *mut ffi::sqlite3_vfs, _handle: *mut c_void) {}

unsafe extern "C" fn x_randomness(
    _vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    let buf = unsafe { std::slice::from_raw_parts_mut(out as *mut u8, n.max(0) as usize) };
    if getrandom::fill(buf).is_err() {
        buf.fill(0);
    }
    n
}

unsafe extern "C" fn x_sleep(_vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    std::thread::sleep(std::time::Duration::from_micros(micros.max(0) as u64));
    micros
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Julian day number of the Unix epoch, in milliseconds.
const UNIX_EPOCH_JULIAN_MS: i64 = 210_866_760_000_000;

unsafe extern "C" fn x_current_time(_vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    unsafe { *out = (unix_ms() + UNIX_EPOCH_JULIAN_MS) as f64 / 86_400_000.0 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_current_time_int64(_vfs: *mut ffi::sqlite3_vfs, out: *mut i64) -> c_int {
    unsafe { *out = unix_ms() + UNIX_EPOCH_JULIAN_MS };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_get_last_error(
    _vfs: *mut ffi::sqlite3_vfs,
    _n: c_int,
    _out: *mut c_char,
) -> c_int {
    0
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    let file = file as *mut File;
    let inner = unsafe { (*file).inner };
    if inner.is_null() {
        return ffi::SQLITE_OK;
    }
    let _serial = unsafe { &*inner }.vfs().serial();
    // SAFETY: created by Box::into_raw in x_open, closed once.
    let inner = unsafe { Box::from_raw(inner) };
    unsafe { (*file).inner = std::ptr::null_mut() };
    if let Inner::Mem {
        vfs,
        name: Some(name),
        delete_on_close: true,
        ..
    } = *inner
    {
        vfs.memfs.delete(&name);
    }
    ffi::SQLITE_OK
}

// The io methods SQLite calls: each the `unlogged_` one below, logged
// when the change log is on (`crate::change_log`).

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let (at, len) = (Some(offset as u64), Some(amount as u64));
    unsafe {
        logged(file, "read", at, len, || {
            unlogged_read(file, buf, amount, offset)
        })
    }
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let (at, len) = (Some(offset as u64), Some(amount as u64));
    unsafe {
        logged(file, "write", at, len, || {
            unlogged_write(file, buf, amount, offset)
        })
    }
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    let len = Some(size as u64);
    unsafe {
        logged(file, "truncate", None, len, || {
            unlogged_truncate(file, size)
        })
    }
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    unsafe { logged(file, "sync", None, None, || unlogged_sync(file, flags)) }
}

unsafe extern "C" fn x_file_size(
    file: *mut ffi::sqlite3_file,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    unsafe {
        logged(file, "file_size", None, None, || {
            unlogged_file_size(file, out)
        })
    }
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let level_asked = Some(level as u64);
    unsafe {
        logged(file, "lock", None, level_asked, || {
            unlogged_lock(file, level)
        })
    }
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let level_asked = Some(level as u64);
    unsafe {
        logged(file, "unlock", None, level_asked, || {
            unlogged_unlock(file, level)
        })
    }
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    unsafe {
        logged(file, "check_reserved_lock", None, None, || {
            unlogged_check_reserved_lock(file, out)
        })
    }
}

/// Runs `call` on `file`; with the change log on, logs it (the file's
/// name, the root version it reads after the call).
unsafe fn logged(
    file: *mut ffi::sqlite3_file,
    action: &'static str,
    offset: Option<u64>,
    length: Option<u64>,
    call: impl FnOnce() -> c_int,
) -> c_int {
    let vfs = unsafe { inner(file) }.vfs();
    let _serial = vfs.serial();
    if !vfs.logging.get() {
        return call();
    }
    let started = std::time::Instant::now();
    let code = call();
    let (name, version) = match unsafe { inner(file) } {
        Inner::Main(db) => (db.name().to_string(), Some(db.snapshot_version())),
        Inner::Mem { name, .. } => (name.clone().unwrap_or_else(|| "(temporary)".into()), None),
    };
    let logged = crate::change_log::Call {
        action,
        file: &name,
        offset,
        length,
        started,
    };
    vfs.log(&logged, code, version);
    code
}

impl Inner {
    fn vfs(&self) -> &'static Vfs {
        match self {
            Inner::Main(db) => db.vfs(),
            Inner::Mem { vfs, .. } => vfs,
        }
    }
}

unsafe fn unlogged_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let buf = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, amount.max(0) as usize) };
    let complete = match unsafe { inner(file) } {
        Inner::Main(db) => match db.read(buf, offset as u64) {
            Ok(complete) => complete,
            Err(fail) => return fail.code,
        },
        Inner::Mem { data, .. } => memfs::read(data, buf, offset as usize),
    };
    if complete {
        ffi::SQLITE_OK
    } else {
        ffi::SQLITE_IOERR_SHORT_READ
    }
}

unsafe fn unlogged_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let buf = unsafe { std::slice::from_raw_parts(buf as *const u8, amount.max(0) as usize) };
    match unsafe { inner(file) } {
        Inner::Main(db) => match db.write(buf, offset as u64) {
            Ok(()) => ffi::SQLITE_OK,
            Err(fail) => fail.code,
        },
        Inner::Mem { data, .. } => match memfs::write(data, buf, offset as usize) {
            Ok(()) => ffi::SQLITE_OK,
            Err(full) => {
                set_last(full.to_string());
                ffi::SQLITE_FULL
            }
        },
    }
}

unsafe fn unlogged_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    match unsafe { inner(file) } {
        Inner::Main(db) => db.truncate(size as u64),
        Inner::Mem { data, .. } => memfs::truncate(data, size as usize),
    }
    ffi::SQLITE_OK
}

unsafe fn unlogged_sync(file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    match unsafe { inner(file) } {
        Inner::Main(db) => match db.sync() {
            Ok(()) => ffi::SQLITE_OK,
            Err(fail) => fail.code,
        },
        Inner::Mem { .. } => ffi::SQLITE_OK,
    }
}

unsafe fn unlogged_file_size(file: *mut ffi::sqlite3_file, out: *mut ffi::sqlite3_int64) -> c_int {
    let size = match unsafe { inner(file) } {
        Inner::Main(db) => db.file_size(),
        Inner::Mem { data, .. } => data.borrow().len() as u64,
    };
    unsafe { *out = size as ffi::sqlite3_int64 };
    ffi::SQLITE_OK
}

unsafe fn unlogged_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    match unsafe { inner(file) } {
        Inner::Main(db) => match db.lock(level) {
            Ok(()) => ffi::SQLITE_OK,
            Err(fail) => fail.code,
        },
        Inner::Mem { .. } => ffi::SQLITE_OK,
    }
}

unsafe fn unlogged_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    if let Inner::Main(db) = unsafe { inner(file) } {
        db.unlock(level);
    }
    ffi::SQLITE_OK
}

unsafe fn unlogged_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // Writers never lock storage; only this connection's own state counts.
    let reserved = match unsafe { inner(file) } {
        Inner::Main(db) => db.lock_level() >= ffi::SQLITE_LOCK_RESERVED,
        Inner::Mem { .. } => false,
    };
    unsafe { *out = reserved as c_int };
    ffi::SQLITE_OK
}

/// Pragmas whose settings would break the commit protocol. (WAL needs
/// shared memory, which this VFS does not offer, so SQLite itself keeps the
/// current journal mode and answers with it; every `synchronous` level
/// commits, since SQLite sends SQLITE_FCNTL_SYNC even when it skips xSync.)
fn refused_pragma(name: &str, value: Option<&str>) -> Option<String> {
    let value = value?.trim().trim_matches(['\'', '"']).to_ascii_lowercase();
    match (name.to_ascii_lowercase().as_str(), value.as_str()) {
        ("locking_mode", "exclusive") => Some(
            "DonutDB does not support locking_mode=EXCLUSIVE: a connection must see other writers' commits; PRAGMA donut_writer=exclusive keeps the write lease instead"
                .into(),
        ),
        _ => None,
    }
}

/// DonutDB's own pragmas: `None` if `name` is another pragma; the answer is
/// the current setting.
fn donut_pragma(
    db: &mut MainDb,
    name: &str,
    value: Option<&str>,
) -> Option<Result<String, String>> {
    writer_pragma(db, name, value)
        .or_else(|| memory_pragma(db, name, value))
        .or_else(|| open_root_pragma(db, name, value))
        .or_else(|| version_pragma(db, name, value))
}

/// `PRAGMA donut_version`: the root version the connection reads (in a
/// transaction, the snapshot it pinned; between transactions, the last
/// root it saw; for `NAME@VERSION`, that version).
fn version_pragma(
    db: &mut MainDb,
    name: &str,
    value: Option<&str>,
) -> Option<Result<String, String>> {
    if !name.eq_ignore_ascii_case("donut_version") {
        return None;
    }
    Some(match value {
        None => Ok(db.snapshot_version().to_string()),
        Some(_) => {
            Err("donut_version cannot be set: open NAME@VERSION to read a past version".into())
        }
    })
}

/// `PRAGMA donut_open_root_fresh`: 1 while the root read at open stands in
/// for the next transaction's (for a moment after opening), else 0; `= 0`
/// ends that, so the next transaction reads the root whenever it starts (a
/// session kept open past the request that opened it).
fn open_root_pragma(
    db: &mut MainDb,
    name: &str,
    value: Option<&str>,
) -> Option<Result<String, String>> {
    if !name.eq_ignore_ascii_case("donut_open_root_fresh") {
        return None;
    }
    let value = value.map(|v| v.trim().trim_matches(['\'', '"']).to_ascii_lowercase());
    match value.as_deref() {
        None => {}
        Some("0" | "off" | "false" | "no") => db.spend_open_root(),
        Some(other) => {
            return Some(Err(format!(
                "donut_open_root_fresh can only be set to 0, not {other:?}"
            )));
        }
    }
    Some(Ok(u8::from(db.open_root_fresh()).to_string()))
}

/// `PRAGMA donut_journal_bytes_max [= N]` (the instance's budget for
/// in-memory journals, `memfs`), `PRAGMA donut_journal_bytes` (what they
/// hold now) and `PRAGMA donut_spill_bytes [= N]` (this connection's pending
/// pages past which a write transaction stores them early).
fn memory_pragma(
    db: &mut MainDb,
    name: &str,
    value: Option<&str>,
) -> Option<Result<String, String>> {
    let name = name.to_ascii_lowercase();
    let value = value.map(|v| v.trim().trim_matches(['\'', '"']));
    let bytes = |v: &str| {
        v.parse::<usize>()
            .map_err(|_| format!("{name} is a number of bytes, not {v:?}"))
    };
    let answer = match (name.as_str(), value) {
        ("donut_journal_bytes", None) => Ok(db.vfs().memfs.held_bytes()),
        ("donut_journal_bytes", Some(_)) => Err("donut_journal_bytes cannot be set".to_string()),
        ("donut_journal_bytes_max", None) => Ok(db.vfs().memfs.budget_bytes()),
        ("donut_journal_bytes_max", Some(v)) => {
            bytes(v).inspect(|&b| db.vfs().memfs.set_budget_bytes(b))
        }
        ("donut_spill_bytes", None) => Ok(db.spill_bytes()),
        ("donut_spill_bytes", Some(v)) => bytes(v).inspect(|&b| db.set_spill_bytes(b)),
        _ => return None,
    };
    Some(answer.map(|b| b.to_string()))
}

/// `PRAGMA donut_writer [= optimistic | lease | exclusive]` and `PRAGMA donut_lease_ms
/// [= N]`: the connection's writer mode (ARCHITECTURE.md, "Concurrency").
fn writer_pragma(
    db: &mut MainDb,
    name: &str,
    value: Option<&str>,
) -> Option<Result<String, String>> {
    let name = name.to_ascii_lowercase();
    let value = value.map(|v| v.trim().trim_matches(['\'', '"']).to_ascii_lowercase());
    let set = match (name.as_str(), value.as_deref()) {
        ("donut_writer" | "donut_lease_ms", None) => Ok(()),
        ("donut_writer", Some("optimistic")) => db.set_writer(Writer::Optimistic),
        ("donut_writer", Some("lease")) => db.set_writer(Writer::Lease),
        ("donut_writer", Some("exclusive")) => db.set_writer(Writer::Exclusive),
        ("donut_writer", Some(other)) => Err(format!(
            "donut_writer is optimistic, lease or exclusive, not {other:?}"
        )),
        ("donut_lease_ms", Some(ms)) => match ms.parse::<u32>() {
            Ok(ms) => db.set_lease_ms(ms),
            Err(_) => Err(format!("donut_lease_ms is a number of ms, not {ms:?}")),
        },
        _ => return None,
    };
    Some(set.map(|()| match (name.as_str(), db.writer()) {
        ("donut_writer", Writer::Optimistic) => "optimistic".to_string(),
        ("donut_writer", Writer::Lease) => "lease".to_string(),
        ("donut_writer", Writer::Exclusive) => "exclusive".to_string(),
        _ => db.lease_ms().to_string(),
    }))
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    let Inner::Main(db) = (unsafe { inner(file) }) else {
        return ffi::SQLITE_NOTFOUND;
    };
    let vfs = db.vfs();
    let _serial = vfs.serial();
    match op {
        ffi::SQLITE_FCNTL_BEGIN_ATOMIC_WRITE => {
            db.begin_atomic_write();
            ffi::SQLITE_OK
        }
        ffi::SQLITE_FCNTL_COMMIT_ATOMIC_WRITE => match db.commit_atomic_write() {
            Ok(()) => ffi::SQLITE_OK,
            Err(fail) => fail.code,
        },
        ffi::SQLITE_FCNTL_ROLLBACK_ATOMIC_WRITE => {
            db.rollback_atomic_write();
            ffi::SQLITE_OK
        }
        // Sent before every xSync, and in its place when `synchronous` is
        // off; its argument names the super-journal of a transaction that
        // writes several databases.
        ffi::SQLITE_FCNTL_SYNC => {
            let outcome = match unsafe { c_str(arg as *const c_char) } {
                None => db.sync(),
                Some(super_journal) => {
                    crate::main_file::stage(super_journal, db);
                    Ok(())
                }
            };
            match outcome {
                Ok(()) => ffi::SQLITE_OK,
                Err(fail) => fail.code,
            }
        }
        ffi::SQLITE_FCNTL_COMMIT_PHASETWO => match db.commit_phase_two() {
            Ok(()) => ffi::SQLITE_OK,
            Err(fail) => fail.code,
        },
        // Sent when the B-tree opens this file: the connection it belongs to.
        ffi::SQLITE_FCNTL_PDB => {
            if !arg.is_null() {
                // SAFETY: SQLite passes a `sqlite3**`.
                db.set_connection(unsafe { *(arg as *const *mut ffi::sqlite3) } as usize);
            }
            ffi::SQLITE_OK
        }
        ffi::SQLITE_FCNTL_HAS_MOVED => {
            // SAFETY: SQLite passes an `int*`.
            unsafe { *(arg as *mut c_int) = db.has_moved() as c_int };
            ffi::SQLITE_OK
        }
        ffi::SQLITE_FCNTL_PRAGMA => {
            // arg: char*[3] = { error message out, pragma name, value or NULL }
            let args = arg as *mut *mut c_char;
            let (name, value) = unsafe { (c_str(*args.add(1)), c_str(*args.add(2))) };
            if let Some(name) = name
                && let Some(answer) = donut_pragma(db, name, value)
            {
                let (code, text) = match answer {
                    Ok(text) => (ffi::SQLITE_OK, text),
                    Err(message) => (ffi::SQLITE_ERROR, message),
                };
                // SAFETY: SQLite frees the result with sqlite3_free.
                unsafe { *args = vfs.api.string(&text) };
                return code;
            }
            let Some(message) = name.and_then(|n| refused_pragma(n, value)) else {
                return ffi::SQLITE_NOTFOUND;
            };
            // SAFETY: SQLite frees the message with sqlite3_free.
            unsafe { *args = vfs.api.string(&message) };
            ffi::SQLITE_ERROR
        }
        _ => ffi::SQLITE_NOTFOUND,
    }
}

unsafe extern "C" fn x_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    512
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    match unsafe { inner(file) } {
        Inner::Main(_) => ffi::SQLITE_IOCAP_BATCH_ATOMIC | ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE,
        Inner::Mem { .. } => ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE,
    }
}

#[cfg(test)]
mod tests {
    use super::refused_pragma;

    #[test]
    fn refuses_settings_that_break_commits() {
        assert!(refused_pragma("locking_mode", Some("'exclusive'")).is_some());
        assert!(refused_pragma("LOCKING_MODE", Some("Exclusive")).is_some());
        assert!(refused_pragma("locking_mode", Some("normal")).is_none());
        assert!(refused_pragma("journal_mode", Some("WAL")).is_none());
        assert!(refused_pragma("synchronous", Some("0")).is_none());
        assert!(refused_pragma("journal_mode", None).is_none());
        assert!(refused_pragma("journal_mode", Some("memory")).is_none());
    }
}
