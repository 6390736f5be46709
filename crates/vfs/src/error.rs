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

/// The name of an SQLite (extended) result code, for the codes DonutDB
/// gives (README, "Error codes") and their primary classes; `None` for
/// others. SQLite's messages ("database is locked", "disk I/O error") do not
/// say which of them it was, and the difference is what a caller acts on.
pub fn error_code_name(extended_code: i32) -> Option<&'static str> {
    use rusqlite::ffi;
    Some(match extended_code {
        ffi::SQLITE_ERROR => "SQLITE_ERROR",
        ffi::SQLITE_PERM => "SQLITE_PERM",
        ffi::SQLITE_BUSY => "SQLITE_BUSY",
        ffi::SQLITE_BUSY_SNAPSHOT => "SQLITE_BUSY_SNAPSHOT",
        ffi::SQLITE_BUSY_TIMEOUT => "SQLITE_BUSY_TIMEOUT",
        ffi::SQLITE_NOMEM => "SQLITE_NOMEM",
        ffi::SQLITE_READONLY => "SQLITE_READONLY",
        ffi::SQLITE_READONLY_DBMOVED => "SQLITE_READONLY_DBMOVED",
        ffi::SQLITE_IOERR => "SQLITE_IOERR",
        ffi::SQLITE_IOERR_READ => "SQLITE_IOERR_READ",
        ffi::SQLITE_IOERR_SHORT_READ => "SQLITE_IOERR_SHORT_READ",
        ffi::SQLITE_IOERR_WRITE => "SQLITE_IOERR_WRITE",
        ffi::SQLITE_IOERR_FSYNC => "SQLITE_IOERR_FSYNC",
        ffi::SQLITE_IOERR_DELETE => "SQLITE_IOERR_DELETE",
        ffi::SQLITE_IOERR_LOCK => "SQLITE_IOERR_LOCK",
        ffi::SQLITE_IOERR_RDLOCK => "SQLITE_IOERR_RDLOCK",
        ffi::SQLITE_IOERR_COMMIT_ATOMIC => "SQLITE_IOERR_COMMIT_ATOMIC",
        ffi::SQLITE_IOERR_CORRUPTFS => "SQLITE_IOERR_CORRUPTFS",
        ffi::SQLITE_CORRUPT => "SQLITE_CORRUPT",
        ffi::SQLITE_FULL => "SQLITE_FULL",
        ffi::SQLITE_CANTOPEN => "SQLITE_CANTOPEN",
        ffi::SQLITE_CONSTRAINT => "SQLITE_CONSTRAINT",
        ffi::SQLITE_MISUSE => "SQLITE_MISUSE",
        ffi::SQLITE_AUTH => "SQLITE_AUTH",
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
