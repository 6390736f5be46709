//! Errors of the guest library, and the storage error behind the last
//! SQLITE_IOERR / SQLITE_BUSY the VFS reported.

use crate::bindings::donut::storage::types::Error as StorageError;
use std::cell::RefCell;

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
    #[error("database {name:?}: {source}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Sqlite {
        name: String,
        #[source]
        source: rusqlite::Error,
        /// What storage said, when SQLite's error came from the VFS.
        detail: Option<String>,
    },
}

impl Error {
    pub(crate) fn storage(op: &'static str, name: &str, error: StorageError) -> Error {
        Error::Storage {
            op,
            name: name.to_string(),
            not_found: matches!(error, StorageError::NotFound(_)),
            detail: describe(&error),
        }
    }

    pub(crate) fn sqlite(name: &str, source: rusqlite::Error) -> Error {
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
pub(crate) fn describe(error: &StorageError) -> String {
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
