//! The error of every storage operation: what a guest is told (the WIT
//! `error` variant), or a host fault that ends its call.

use crate::backend::BackendError;

/// A storage failure as the guest sees it, or a host fault that traps.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("conflict: another writer committed first")]
    Conflict,
    #[error("busy: {0}")]
    Busy(String),
    #[error("throttled: {0}")]
    Throttled(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("denied: {0}")]
    Denied(String),
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("invalid: {0}")]
    Invalid(String),
    /// A host-side fault (e.g. a bad resource handle): ends the call
    /// instead of answering the guest.
    #[error("host fault: {0}")]
    Trap(String),
}

impl From<BackendError> for StorageError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Unavailable(m) => StorageError::Unavailable(m),
            BackendError::Throttled(m) => StorageError::Throttled(m),
            BackendError::TooLarge(m) => StorageError::TooLarge(m),
            BackendError::Corrupt(m) => StorageError::Corrupt(m),
            BackendError::Denied(m) => StorageError::Denied(m),
            BackendError::Invalid(m) => StorageError::Invalid(m),
        }
    }
}
