//! Which databases an instance may touch, and how.

use crate::error::StorageError;
use donut_format::DbName;
use std::collections::BTreeSet;

/// Which databases an instance may touch, and how. Names are compared
/// byte for byte (as storage keys them): another case, a Unicode
/// look-alike or an escaped spelling is another name, outside the grant.
#[derive(Debug, Clone)]
pub struct Grant {
    /// `None`: every database of the store; otherwise these names and
    /// those that start with one of `prefixes`.
    pub names: Option<BTreeSet<DbName>>,
    /// Name prefixes the grant covers besides `names` (only with `names`
    /// set). A prefix covers the names that start with it, so `alpha-`
    /// covers `alpha-1` but not `alpha` or `alphabet`.
    pub prefixes: BTreeSet<String>,
    /// May the instance create databases (within the grant)?
    pub may_create: bool,
    /// May its owner remove databases (within the grant)? Not a guest's
    /// power (the WIT has no remove): a service's, on the tenant's behalf.
    pub may_remove: bool,
    /// Reads only: no sectors stored, no root swapped, no exclusive lock.
    pub read_only: bool,
}

impl Grant {
    pub fn all() -> Grant {
        Grant {
            names: None,
            prefixes: BTreeSet::new(),
            may_create: true,
            may_remove: true,
            read_only: false,
        }
    }

    pub fn only(names: impl IntoIterator<Item = DbName>, may_create: bool) -> Grant {
        Grant {
            names: Some(names.into_iter().collect()),
            prefixes: BTreeSet::new(),
            may_create,
            may_remove: false,
            read_only: false,
        }
    }

    /// The databases whose names start with one of `prefixes`.
    pub fn prefixed(prefixes: impl IntoIterator<Item = String>, may_create: bool) -> Grant {
        Grant {
            names: Some(BTreeSet::new()),
            prefixes: prefixes.into_iter().collect(),
            may_create,
            may_remove: false,
            read_only: false,
        }
    }

    /// The same grant, for reads only.
    pub fn read_only(mut self) -> Grant {
        self.read_only = true;
        self.may_create = false;
        self.may_remove = false;
        self
    }

    /// Does the grant cover `name`?
    pub fn covers(&self, name: &DbName) -> bool {
        match &self.names {
            None => true,
            Some(names) => {
                names.contains(name)
                    || self
                        .prefixes
                        .iter()
                        .any(|prefix| name.as_str().starts_with(prefix.as_str()))
            }
        }
    }

    /// `name` validated and within the grant.
    pub fn check(&self, name: &str) -> Result<DbName, StorageError> {
        let name = DbName::new(name).map_err(|e| StorageError::Denied(e.to_string()))?;
        if !self.covers(&name) {
            return Err(StorageError::Denied(format!(
                "this instance may not use database {name:?}"
            )));
        }
        Ok(name)
    }

    /// Refuses `what` (a write to `name`) under a read-only grant.
    pub fn check_write(&self, name: &DbName, what: &str) -> Result<(), StorageError> {
        if self.read_only {
            return Err(StorageError::Denied(format!(
                "this instance may only read: {what} {name:?} is refused"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DbName {
        DbName::new(s).unwrap()
    }

    #[test]
    fn a_prefix_covers_only_names_that_start_with_it_byte_for_byte() {
        let grant = Grant::prefixed(["alpha-".to_string()], true);
        assert!(grant.covers(&name("alpha-1")));
        assert!(grant.covers(&name("alpha-")));
        for outside in [
            "alpha",
            "alphabet",
            "Alpha-1",
            "ALPHA-1",
            "alpha_1",
            "аlpha-1", // Cyrillic а
            "alpha‐1", // U+2010 hyphen
            "alpha%2D1",
            "beta-alpha-1",
            " alpha-1x",
        ] {
            let Ok(outside) = DbName::new(outside) else {
                continue;
            };
            assert!(!grant.covers(&outside), "{outside:?}");
        }
        assert!(
            grant.check("alpha-/../beta").is_err(),
            "separators are illegal"
        );
        assert!(grant.check("..").is_err());
    }

    #[test]
    fn a_read_only_grant_refuses_writes_and_creation() {
        let grant = Grant::only([name("a.db")], true).read_only();
        assert!(grant.check("a.db").is_ok());
        assert!(grant.check_write(&name("a.db"), "commit to").is_err());
        assert!(!grant.may_create);
    }
}
