//! Errors of opening a database, and the storage error behind the last
//! SQLITE_IOERR / SQLITE_BUSY the VFS reported.

use crate::port::StorageError;
use std::cell::RefCell;

/// Opening a database, or running SQL on it, failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {name:?}: {detail}")]
    Storage {
        op: &'static str,
        name: String,
        detail: String,
        /// True for `not-found`.
        not_found: bool,
    },
    #[error("database {name:?} is corrupt: {detail}")]
    Corrupt { name: String, detail: String },
    #[error("database {name:?}: {source}{}{}", code_suffix(source), detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Sqlite {
        name: String,
        #[source]
        source: rusqlite::Error,
        /// What storage said, when SQLite's error came from the VFS.
        detail: Option<String>,
    },
}

impl Error {
    /// Storage refused `op` on database `name`.
    pub fn storage(op: &'static str, name: &str, error: StorageError) -> Error {
        Error::Storage {
            op,
            name: name.to_string(),
            not_found: matches!(error, StorageError::NotFound(_)),
            detail: describe_storage_error(&error),
        }
    }

    /// SQLite failed on database `name`; takes what storage said behind
    /// it ([`last_storage_error`]).
    pub fn sqlite(name: &str, source: rusqlite::Error) -> Error {
        Error::Sqlite {
            name: name.to_string(),
            source,
            detail: last_storage_error(),
        }
    }

    /// True if the database does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Storage {
                not_found: true,
                ..
            }
        )
    }
}

/// Human words for a storage error.
pub fn describe_storage_error(error: &StorageError) -> String {
    match error {
        StorageError::NotFound(m) => format!("not found: {m}"),
        StorageError::AlreadyExists(m) => format!("already exists: {m}"),
        StorageError::Conflict => "conflict: another writer committed first".to_string(),
        StorageError::Busy(m) => format!("busy: {m}"),
        StorageError::Throttled(m) => format!("throttled: {m}"),
        StorageError::TooLarge(m) => format!("too large: {m}"),
        StorageError::Denied(m) => format!("denied: {m}"),
        StorageError::Corrupt(m) => format!("corrupt: {m}"),
        StorageError::Unavailable(m) => format!("unavailable: {m}"),
        StorageError::Invalid(m) => format!("invalid: {m}"),
    }
}

thread_local! {
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub(crate) fn set_last(message: String) {
    LAST.with(|last| *last.borrow_mut() = Some(message));
}

/// What the storage layer said the last time the VFS failed an operation
/// (SQLite itself only reports "disk I/O error" or "database is locked").
/// Taking it clears it.
pub fn last_storage_error() -> Option<String> {
    LAST.with(|last| last.borrow_mut().take())
}

/// The name of an SQLite (extended) result code (README, "Error codes",
/// lists those DonutDB itself gives); `None` for a number SQLite does not
/// define. SQLite's messages ("database is locked", "disk I/O error") do not
/// say which of them it was, and the difference is what a caller acts on.
pub fn error_code_name(extended_code: i32) -> Option<&'static str> {
    use rusqlite::ffi;
    // Every primary and extended result code of sqlite3.h, so a client
    // sees `SQLITE_CONSTRAINT_UNIQUE`, not only `SQLITE_CONSTRAINT`.
    Some(match extended_code {
        ffi::SQLITE_ERROR => "SQLITE_ERROR",
        ffi::SQLITE_INTERNAL => "SQLITE_INTERNAL",
        ffi::SQLITE_PERM => "SQLITE_PERM",
        ffi::SQLITE_ABORT => "SQLITE_ABORT",
        ffi::SQLITE_BUSY => "SQLITE_BUSY",
        ffi::SQLITE_LOCKED => "SQLITE_LOCKED",
        ffi::SQLITE_NOMEM => "SQLITE_NOMEM",
        ffi::SQLITE_READONLY => "SQLITE_READONLY",
        ffi::SQLITE_INTERRUPT => "SQLITE_INTERRUPT",
        ffi::SQLITE_IOERR => "SQLITE_IOERR",
        ffi::SQLITE_CORRUPT => "SQLITE_CORRUPT",
        ffi::SQLITE_NOTFOUND => "SQLITE_NOTFOUND",
        ffi::SQLITE_FULL => "SQLITE_FULL",
        ffi::SQLITE_CANTOPEN => "SQLITE_CANTOPEN",
        ffi::SQLITE_PROTOCOL => "SQLITE_PROTOCOL",
        ffi::SQLITE_EMPTY => "SQLITE_EMPTY",
        ffi::SQLITE_SCHEMA => "SQLITE_SCHEMA",
        ffi::SQLITE_TOOBIG => "SQLITE_TOOBIG",
        ffi::SQLITE_CONSTRAINT => "SQLITE_CONSTRAINT",
        ffi::SQLITE_MISMATCH => "SQLITE_MISMATCH",
        ffi::SQLITE_MISUSE => "SQLITE_MISUSE",
        ffi::SQLITE_NOLFS => "SQLITE_NOLFS",
        ffi::SQLITE_AUTH => "SQLITE_AUTH",
        ffi::SQLITE_FORMAT => "SQLITE_FORMAT",
        ffi::SQLITE_RANGE => "SQLITE_RANGE",
        ffi::SQLITE_NOTADB => "SQLITE_NOTADB",
        ffi::SQLITE_NOTICE => "SQLITE_NOTICE",
        ffi::SQLITE_WARNING => "SQLITE_WARNING",
        ffi::SQLITE_ERROR_MISSING_COLLSEQ => "SQLITE_ERROR_MISSING_COLLSEQ",
        ffi::SQLITE_ERROR_RETRY => "SQLITE_ERROR_RETRY",
        ffi::SQLITE_ERROR_SNAPSHOT => "SQLITE_ERROR_SNAPSHOT",
        ffi::SQLITE_IOERR_READ => "SQLITE_IOERR_READ",
        ffi::SQLITE_IOERR_SHORT_READ => "SQLITE_IOERR_SHORT_READ",
        ffi::SQLITE_IOERR_WRITE => "SQLITE_IOERR_WRITE",
        ffi::SQLITE_IOERR_FSYNC => "SQLITE_IOERR_FSYNC",
        ffi::SQLITE_IOERR_DIR_FSYNC => "SQLITE_IOERR_DIR_FSYNC",
        ffi::SQLITE_IOERR_TRUNCATE => "SQLITE_IOERR_TRUNCATE",
        ffi::SQLITE_IOERR_FSTAT => "SQLITE_IOERR_FSTAT",
        ffi::SQLITE_IOERR_UNLOCK => "SQLITE_IOERR_UNLOCK",
        ffi::SQLITE_IOERR_RDLOCK => "SQLITE_IOERR_RDLOCK",
        ffi::SQLITE_IOERR_DELETE => "SQLITE_IOERR_DELETE",
        ffi::SQLITE_IOERR_BLOCKED => "SQLITE_IOERR_BLOCKED",
        ffi::SQLITE_IOERR_NOMEM => "SQLITE_IOERR_NOMEM",
        ffi::SQLITE_IOERR_ACCESS => "SQLITE_IOERR_ACCESS",
        ffi::SQLITE_IOERR_CHECKRESERVEDLOCK => "SQLITE_IOERR_CHECKRESERVEDLOCK",
        ffi::SQLITE_IOERR_LOCK => "SQLITE_IOERR_LOCK",
        ffi::SQLITE_IOERR_CLOSE => "SQLITE_IOERR_CLOSE",
        ffi::SQLITE_IOERR_DIR_CLOSE => "SQLITE_IOERR_DIR_CLOSE",
        ffi::SQLITE_IOERR_SHMOPEN => "SQLITE_IOERR_SHMOPEN",
        ffi::SQLITE_IOERR_SHMSIZE => "SQLITE_IOERR_SHMSIZE",
        ffi::SQLITE_IOERR_SHMLOCK => "SQLITE_IOERR_SHMLOCK",
        ffi::SQLITE_IOERR_SHMMAP => "SQLITE_IOERR_SHMMAP",
        ffi::SQLITE_IOERR_SEEK => "SQLITE_IOERR_SEEK",
        ffi::SQLITE_IOERR_DELETE_NOENT => "SQLITE_IOERR_DELETE_NOENT",
        ffi::SQLITE_IOERR_MMAP => "SQLITE_IOERR_MMAP",
        ffi::SQLITE_IOERR_GETTEMPPATH => "SQLITE_IOERR_GETTEMPPATH",
        ffi::SQLITE_IOERR_CONVPATH => "SQLITE_IOERR_CONVPATH",
        ffi::SQLITE_IOERR_VNODE => "SQLITE_IOERR_VNODE",
        ffi::SQLITE_IOERR_AUTH => "SQLITE_IOERR_AUTH",
        ffi::SQLITE_IOERR_BEGIN_ATOMIC => "SQLITE_IOERR_BEGIN_ATOMIC",
        ffi::SQLITE_IOERR_COMMIT_ATOMIC => "SQLITE_IOERR_COMMIT_ATOMIC",
        ffi::SQLITE_IOERR_ROLLBACK_ATOMIC => "SQLITE_IOERR_ROLLBACK_ATOMIC",
        ffi::SQLITE_IOERR_DATA => "SQLITE_IOERR_DATA",
        ffi::SQLITE_IOERR_CORRUPTFS => "SQLITE_IOERR_CORRUPTFS",
        ffi::SQLITE_LOCKED_SHAREDCACHE => "SQLITE_LOCKED_SHAREDCACHE",
        ffi::SQLITE_LOCKED_VTAB => "SQLITE_LOCKED_VTAB",
        ffi::SQLITE_BUSY_RECOVERY => "SQLITE_BUSY_RECOVERY",
        ffi::SQLITE_BUSY_SNAPSHOT => "SQLITE_BUSY_SNAPSHOT",
        ffi::SQLITE_BUSY_TIMEOUT => "SQLITE_BUSY_TIMEOUT",
        ffi::SQLITE_CANTOPEN_NOTEMPDIR => "SQLITE_CANTOPEN_NOTEMPDIR",
        ffi::SQLITE_CANTOPEN_ISDIR => "SQLITE_CANTOPEN_ISDIR",
        ffi::SQLITE_CANTOPEN_FULLPATH => "SQLITE_CANTOPEN_FULLPATH",
        ffi::SQLITE_CANTOPEN_CONVPATH => "SQLITE_CANTOPEN_CONVPATH",
        ffi::SQLITE_CANTOPEN_SYMLINK => "SQLITE_CANTOPEN_SYMLINK",
        ffi::SQLITE_CORRUPT_VTAB => "SQLITE_CORRUPT_VTAB",
        ffi::SQLITE_CORRUPT_SEQUENCE => "SQLITE_CORRUPT_SEQUENCE",
        ffi::SQLITE_CORRUPT_INDEX => "SQLITE_CORRUPT_INDEX",
        ffi::SQLITE_READONLY_RECOVERY => "SQLITE_READONLY_RECOVERY",
        ffi::SQLITE_READONLY_CANTLOCK => "SQLITE_READONLY_CANTLOCK",
        ffi::SQLITE_READONLY_ROLLBACK => "SQLITE_READONLY_ROLLBACK",
        ffi::SQLITE_READONLY_DBMOVED => "SQLITE_READONLY_DBMOVED",
        ffi::SQLITE_READONLY_CANTINIT => "SQLITE_READONLY_CANTINIT",
        ffi::SQLITE_READONLY_DIRECTORY => "SQLITE_READONLY_DIRECTORY",
        ffi::SQLITE_ABORT_ROLLBACK => "SQLITE_ABORT_ROLLBACK",
        ffi::SQLITE_CONSTRAINT_CHECK => "SQLITE_CONSTRAINT_CHECK",
        ffi::SQLITE_CONSTRAINT_COMMITHOOK => "SQLITE_CONSTRAINT_COMMITHOOK",
        ffi::SQLITE_CONSTRAINT_FOREIGNKEY => "SQLITE_CONSTRAINT_FOREIGNKEY",
        ffi::SQLITE_CONSTRAINT_FUNCTION => "SQLITE_CONSTRAINT_FUNCTION",
        ffi::SQLITE_CONSTRAINT_NOTNULL => "SQLITE_CONSTRAINT_NOTNULL",
        ffi::SQLITE_CONSTRAINT_PRIMARYKEY => "SQLITE_CONSTRAINT_PRIMARYKEY",
        ffi::SQLITE_CONSTRAINT_TRIGGER => "SQLITE_CONSTRAINT_TRIGGER",
        ffi::SQLITE_CONSTRAINT_UNIQUE => "SQLITE_CONSTRAINT_UNIQUE",
        ffi::SQLITE_CONSTRAINT_VTAB => "SQLITE_CONSTRAINT_VTAB",
        ffi::SQLITE_CONSTRAINT_ROWID => "SQLITE_CONSTRAINT_ROWID",
        ffi::SQLITE_CONSTRAINT_PINNED => "SQLITE_CONSTRAINT_PINNED",
        ffi::SQLITE_CONSTRAINT_DATATYPE => "SQLITE_CONSTRAINT_DATATYPE",
        ffi::SQLITE_NOTICE_RECOVER_WAL => "SQLITE_NOTICE_RECOVER_WAL",
        ffi::SQLITE_NOTICE_RECOVER_ROLLBACK => "SQLITE_NOTICE_RECOVER_ROLLBACK",
        ffi::SQLITE_WARNING_AUTOINDEX => "SQLITE_WARNING_AUTOINDEX",
        ffi::SQLITE_AUTH_USER => "SQLITE_AUTH_USER",
        _ => return None,
    })
}

/// ` [SQLITE_…]` for an SQLite failure, empty otherwise.
fn code_suffix(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match error_code_name(f.extended_code) {
            Some(name) => format!(" [{name}]"),
            None => format!(" [code {}]", f.extended_code),
        },
        _ => String::new(),
    }
}

/// The SQLite error `e` with its result code's name and what storage said
/// behind it: `database is locked [SQLITE_BUSY_TIMEOUT] (throttled: …)`.
pub fn describe_sqlite_error(e: &rusqlite::Error) -> String {
    let text = format!("{e}{}", code_suffix(e));
    match last_storage_error() {
        Some(detail) => format!("{text} ({detail})"),
        None => text,
    }
}
