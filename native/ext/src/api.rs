//! The functions of the SQLite that loaded the extension, read from the
//! API table (`sqlite3_api_routines`) it hands the entry point. The table
//! is an array of function pointers that only ever grows at its end, so a
//! member's index (found in `sqlite3ext.h` by build.rs) is the same in
//! every SQLite that has it.
//!
//! Not libsqlite3-sys's `loadable_extension` feature: its bindings refuse
//! to load into a SQLite older than the one they were generated from
//! (3.45; Debian's `sqlite3` is 3.40), and with every workspace crate's
//! `bundled` SQLite unified into the same build it would change how they
//! call SQLite.

use donut_vfs::SqliteApi;
use libsqlite3_sys as ffi;
use std::ffi::{c_char, c_int, c_void};

mod index {
    include!(concat!(env!("OUT_DIR"), "/api_index.rs"));
}

/// The oldest SQLite the extension loads into: 3.14 answers
/// `SQLITE_OK_LOAD_PERMANENTLY` (the VFS must outlive the connection that
/// loaded it).
pub const SQLITE_VERSION_MIN: c_int = 3_014_000;

/// Reads the functions the VFS uses from `table`.
///
/// # Safety
///
/// `table` is null or the `sqlite3_api_routines` SQLite hands an
/// extension's entry point.
pub unsafe fn from_table(table: *const c_void) -> Result<SqliteApi, String> {
    if table.is_null() {
        return Err("loaded without SQLite's API table".into());
    }
    let table = table as *const *const c_void;
    // SAFETY: members up to `vfs_register` exist since SQLite 3.5;
    // the version is checked before any later one is read.
    let member = |index: usize| unsafe { *table.add(index) };
    let libversion_number = member(index::LIBVERSION_NUMBER);
    if libversion_number.is_null() {
        return Err("SQLite's API table has no sqlite3_libversion_number".into());
    }
    // SAFETY: that member's type in sqlite3ext.h.
    let version = unsafe {
        std::mem::transmute::<*const c_void, unsafe extern "C" fn() -> c_int>(libversion_number)()
    };
    if version < SQLITE_VERSION_MIN {
        return Err(format!(
            "SQLite {version} is older than the oldest DonutDB loads into ({SQLITE_VERSION_MIN})"
        ));
    }
    let (find, register, malloc) = (
        member(index::VFS_FIND),
        member(index::VFS_REGISTER),
        member(index::MALLOC),
    );
    if find.is_null() || register.is_null() || malloc.is_null() {
        return Err("SQLite's API table lacks the VFS functions".into());
    }
    // SAFETY: each member's type as sqlite3ext.h declares it.
    unsafe {
        Ok(SqliteApi {
            vfs_find: std::mem::transmute::<
                *const c_void,
                unsafe extern "C" fn(*const c_char) -> *mut ffi::sqlite3_vfs,
            >(find),
            vfs_register: std::mem::transmute::<
                *const c_void,
                unsafe extern "C" fn(*mut ffi::sqlite3_vfs, c_int) -> c_int,
            >(register),
            malloc: std::mem::transmute::<*const c_void, unsafe extern "C" fn(c_int) -> *mut c_void>(
                malloc,
            ),
        })
    }
}
