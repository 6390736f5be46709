//! Which databases an instance may touch.

use crate::error::StorageError;
use donut_format::DbName;
use std::collections::BTreeSet;

/// Which databases an instance may touch.
#[derive(Debug, Clone)]
pub struct Grant {
    /// `None`: every database of the store.
    pub names: Option<BTreeSet<DbName>>,
    /// May the instance create databases (within `names`)?
    pub may_create: bool,
}

impl Grant {
    pub fn all() -> Grant {
        Grant {
            names: None,
            may_create: true,
        }
    }

    pub fn only(names: impl IntoIterator<Item = DbName>, may_create: bool) -> Grant {
        Grant {
            names: Some(names.into_iter().collect()),
            may_create,
        }
    }

    pub fn check(&self, name: &str) -> Result<DbName, StorageError> {
        let name = DbName::new(name).map_err(|e| StorageError::Denied(e.to_string()))?;
        match &self.names {
            Some(names) if !names.contains(&name) => Err(StorageError::Denied(format!(
                "this instance may not use database {name:?}"
            ))),
            _ => Ok(name),
        }
    }
}
