//! `donut-host`'s exit codes (the `--help` footer and the README list them)
//! and the error each comes from.

use donut_host::backend::dynamo::ConnectError;
use donut_host::service::config::ConfigError;
use donut_host::storage::StorageError;
use donut_host::tenant::AddTenantError;
use donut_host::transfer::TransferError;

/// Success.
pub const OK: i32 = 0;
/// An SQL or storage error: the statement or the request failed.
pub const FAILURE: i32 = 1;
/// A usage error: a bad option, argument or name; nothing was run (clap
/// exits with the same code).
pub const USAGE: i32 = 2;
/// The database, or the version asked for, does not exist.
pub const NOT_FOUND: i32 = 3;

/// A command line the CLI itself refuses (the error is the message).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// How a failed command ends: its exit code and a hint for the next step.
pub struct Failure {
    pub code: i32,
    pub hint: Option<&'static str>,
}

/// What to do after "not found".
pub const NOT_FOUND_HINT: &str = "`donut-host ls` lists the databases, `donut-host versions DB` a database's kept versions; `donut-host create DB` makes a database";

/// The exit code of `e`, from the first cause in its chain that decides.
pub fn classify(e: &anyhow::Error) -> Failure {
    for cause in e.chain() {
        if cause.downcast_ref::<UsageError>().is_some() || is_usage(cause) {
            return Failure {
                code: USAGE,
                hint: None,
            };
        }
        if is_not_found(cause) {
            return Failure {
                code: NOT_FOUND,
                hint: Some(NOT_FOUND_HINT),
            };
        }
    }
    Failure {
        code: FAILURE,
        hint: None,
    }
}

/// Options, names or a tenants file refused before anything ran.
fn is_usage(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause.downcast_ref::<ConfigError>().is_some()
        || cause.downcast_ref::<AddTenantError>().is_some()
        || matches!(
            cause.downcast_ref::<ConnectError>(),
            Some(
                ConnectError::BadTableName { .. }
                    | ConnectError::EndpointScheme { .. }
                    | ConnectError::NoRegion
            )
        )
        || cause.downcast_ref::<donut_format::DbRefError>().is_some()
}

fn is_not_found(cause: &(dyn std::error::Error + 'static)) -> bool {
    let storage = match cause.downcast_ref::<TransferError>() {
        Some(TransferError::Storage(e)) => Some(e),
        _ => cause.downcast_ref::<StorageError>(),
    };
    matches!(storage, Some(StorageError::NotFound(_)))
}
