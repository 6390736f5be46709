//! Database names and page sizes: validated once, at the edge.

use crate::{PAGE_SIZE_MAX, PAGE_SIZE_MIN};
use std::fmt;

/// Longest database name, in bytes of UTF-8.
pub const NAME_MAX_BYTES: usize = 255;

/// A validated database name: 1..=255 bytes of UTF-8, no control characters,
/// no `/`, `\` or `@`, not `.` or `..`, no leading or trailing white space.
/// Names become parts of item keys and, for the local backend, of file
/// names, so the rules keep both unambiguous; `@` separates a name from a
/// past version (`app.db@12`, [`crate::DbRef`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DbName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("database name is empty")]
    Empty,
    #[error("database name is {len} bytes; the limit is {NAME_MAX_BYTES}")]
    TooLong { len: usize },
    #[error("database name {name:?} contains a control character")]
    ControlCharacter { name: String },
    #[error("database name {name:?} contains {ch:?}, which is not allowed")]
    Separator { name: String, ch: char },
    #[error("database name {name:?} is reserved")]
    Reserved { name: String },
    #[error("database name {name:?} starts or ends with white space")]
    Whitespace { name: String },
}

impl DbName {
    pub fn new(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > NAME_MAX_BYTES {
            return Err(NameError::TooLong { len: name.len() });
        }
        if name.chars().any(char::is_control) {
            return Err(NameError::ControlCharacter {
                name: name.escape_debug().to_string(),
            });
        }
        if let Some(ch) = name.chars().find(|c| matches!(c, '/' | '\\' | '@')) {
            return Err(NameError::Separator {
                name: name.to_string(),
                ch,
            });
        }
        if name == "." || name == ".." {
            return Err(NameError::Reserved {
                name: name.to_string(),
            });
        }
        if name.trim() != name {
            return Err(NameError::Whitespace {
                name: name.to_string(),
            });
        }
        Ok(DbName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Debug-formats as the quoted name, so messages read `"app.db"`.
impl fmt::Debug for DbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for DbName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("page size {0} is not a power of two between {PAGE_SIZE_MIN} and {PAGE_SIZE_MAX}")]
pub struct PageSizeError(pub u64);

/// Accepts SQLite's page sizes: powers of two from 512 to 65536.
pub fn validate_page_size(size: u64) -> Result<u32, PageSizeError> {
    if size.is_power_of_two() && (PAGE_SIZE_MIN as u64..=PAGE_SIZE_MAX as u64).contains(&size) {
        Ok(size as u32)
    } else {
        Err(PageSizeError(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "app.db",
            "a",
            "tenant-1/x".replace('/', "_").as_str(),
            "données",
            "a b",
        ] {
            assert_eq!(DbName::new(name).unwrap().as_str(), name);
        }
        assert!(DbName::new(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn rejects_illegal_names() {
        assert_eq!(DbName::new(""), Err(NameError::Empty));
        assert!(matches!(
            DbName::new("a/b"),
            Err(NameError::Separator { .. })
        ));
        assert!(matches!(DbName::new("/"), Err(NameError::Separator { .. })));
        assert!(matches!(
            DbName::new("a@1"),
            Err(NameError::Separator { ch: '@', .. })
        ));
        assert!(matches!(
            DbName::new("a\\b"),
            Err(NameError::Separator { .. })
        ));
        assert!(matches!(DbName::new(".."), Err(NameError::Reserved { .. })));
        assert!(matches!(DbName::new("."), Err(NameError::Reserved { .. })));
        assert!(matches!(
            DbName::new("a\nb"),
            Err(NameError::ControlCharacter { .. })
        ));
        assert!(matches!(
            DbName::new("a\0"),
            Err(NameError::ControlCharacter { .. })
        ));
        assert!(matches!(
            DbName::new(" a"),
            Err(NameError::Whitespace { .. })
        ));
        assert_eq!(
            DbName::new(&"x".repeat(256)),
            Err(NameError::TooLong { len: 256 })
        );
    }

    #[test]
    fn page_sizes() {
        for ok in [512u64, 1024, 4096, 65536] {
            assert_eq!(validate_page_size(ok), Ok(ok as u32));
        }
        for bad in [0u64, 256, 1000, 4097, 131072] {
            assert_eq!(validate_page_size(bad), Err(PageSizeError(bad)));
        }
    }
}
