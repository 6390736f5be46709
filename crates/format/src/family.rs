//! A family's item (docs/format.md, "Garbage collection"): the databases
//! that share one database id — an original and its forks — and where
//! each fork came from, so `gc` can check a sector one member dropped
//! against every member that may still hold it. Keyed by the database id
//! ([`family_key`]); replaced by compare-and-swap, by `fork` (before any
//! GC state or root of the fork is written) and by `gc` (a member whose
//! removal it completes).

use crate::sealed::{CHECKSUM_LEN, seal, unseal};
use crate::{DbId, DbName, FormatError};

pub const FAMILY_MAGIC: [u8; 4] = *b"DFM1";
/// Most entries a family holds: a fork past it is refused. Bounds the
/// item (≤ 512 × 530 bytes, under DynamoDB's 400 KB) and what a `gc`
/// run reads per family.
pub const FAMILY_MEMBERS_MAX: usize = 512;
const HEADER_LEN: usize = 4 + 1 + 3 + 2;
/// `flags` bit: [`Family::incomplete`].
const FLAG_INCOMPLETE: u8 = 1;
/// Member `flags` bits.
const MEMBER_REMOVED: u8 = 1;
const MEMBER_FORKED: u8 = 2;

/// Where a fork came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkSource {
    /// The source database and the version the fork copied.
    pub name: DbName,
    pub version: u64,
    /// The fork's first version (its root copies the source's body).
    pub fork_version: u64,
}

/// One database of the family (one incarnation of a name: a name removed
/// and forked again from the family is a second entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyMember {
    pub name: DbName,
    /// `None`: the database the family's id was created for.
    pub source: Option<ForkSource>,
    /// `gc` removed everything of it: it holds nothing.
    pub removed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Family {
    /// Some member forked before families were recorded (or by a host
    /// that does not record them) is missing: `gc` leaves the family's
    /// sectors.
    pub incomplete: bool,
    pub members: Vec<FamilyMember>,
}

/// The name under which the family of database id `db` is stored (the
/// id in hex: a legal name, and never confused with a database's, since
/// it lives under its own item kind).
pub fn family_key(db: DbId) -> DbName {
    DbName::new(&db.hex()).expect("hex digits are a legal name")
}

impl Family {
    /// Is `name` a member `gc` has not removed?
    pub fn holds(&self, name: &DbName) -> bool {
        self.members.iter().any(|m| m.name == *name && !m.removed)
    }

    pub fn encode(&self) -> Vec<u8> {
        assert!(self.members.len() <= FAMILY_MEMBERS_MAX, "family too large");
        let mut out = Vec::with_capacity(HEADER_LEN + self.members.len() * 64 + CHECKSUM_LEN);
        out.extend_from_slice(&FAMILY_MAGIC);
        out.push(if self.incomplete { FLAG_INCOMPLETE } else { 0 });
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&(self.members.len() as u16).to_le_bytes());
        for member in &self.members {
            let mut flags = 0;
            if member.removed {
                flags |= MEMBER_REMOVED;
            }
            if member.source.is_some() {
                flags |= MEMBER_FORKED;
            }
            out.push(flags);
            put_name(&mut out, &member.name);
            if let Some(source) = &member.source {
                put_name(&mut out, &source.name);
                out.extend_from_slice(&source.version.to_le_bytes());
                out.extend_from_slice(&source.fork_version.to_le_bytes());
            }
        }
        seal(&mut out);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Family, FormatError> {
        const WHAT: &str = "family";
        let invalid = |detail: String| FormatError::Invalid { what: WHAT, detail };
        let body = unseal(bytes, WHAT, &FAMILY_MAGIC, HEADER_LEN)?;
        let flags = body[4];
        if flags & !FLAG_INCOMPLETE != 0 || body[5..8] != [0, 0, 0] {
            return Err(invalid(format!("unknown flags {flags:#04x}")));
        }
        let count = u16::from_le_bytes([body[8], body[9]]) as usize;
        if count > FAMILY_MEMBERS_MAX {
            return Err(invalid(format!("{count} members")));
        }
        let mut reader = Reader {
            bytes: body,
            at: HEADER_LEN,
        };
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            let flags = reader.u8()?;
            if flags & !(MEMBER_REMOVED | MEMBER_FORKED) != 0 {
                return Err(invalid(format!("unknown member flags {flags:#04x}")));
            }
            let name = reader.name()?;
            let source = match flags & MEMBER_FORKED != 0 {
                false => None,
                true => Some(ForkSource {
                    name: reader.name()?,
                    version: reader.u64()?,
                    fork_version: reader.u64()?,
                }),
            };
            members.push(FamilyMember {
                name,
                source,
                removed: flags & MEMBER_REMOVED != 0,
            });
        }
        if reader.at != body.len() {
            return Err(invalid(format!(
                "{} bytes after the members",
                body.len() - reader.at
            )));
        }
        Ok(Family {
            incomplete: flags & FLAG_INCOMPLETE != 0,
            members,
        })
    }
}

fn put_name(out: &mut Vec<u8>, name: &DbName) {
    let bytes = name.as_str().as_bytes();
    assert!(
        bytes.len() <= u8::MAX as usize,
        "names are at most 255 bytes"
    );
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, len: usize) -> Result<&[u8], FormatError> {
        let end = self.at + len;
        if end > self.bytes.len() {
            return Err(FormatError::Truncated {
                what: "family",
                len: self.bytes.len(),
                need: end,
            });
        }
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn name(&mut self) -> Result<DbName, FormatError> {
        let len = self.u8()? as usize;
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes).map_err(|_| FormatError::Invalid {
            what: "family",
            detail: "a member name is not UTF-8".into(),
        })?;
        DbName::new(text).map_err(|e| FormatError::Invalid {
            what: "family",
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DbName {
        DbName::new(s).unwrap()
    }

    #[test]
    fn family_round_trips_and_detects_damage() {
        let family = Family {
            incomplete: false,
            members: vec![
                FamilyMember {
                    name: name("app.db"),
                    source: None,
                    removed: false,
                },
                FamilyMember {
                    name: name("branch"),
                    source: Some(ForkSource {
                        name: name("app.db"),
                        version: 7,
                        fork_version: 1,
                    }),
                    removed: true,
                },
            ],
        };
        let bytes = family.encode();
        assert_eq!(Family::decode(&bytes).unwrap(), family);
        for at in [0, 4, 9, 12, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(Family::decode(&bad).is_err(), "flipped byte {at}");
        }
        assert!(Family::decode(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(
            Family::decode(&Family::default().encode()).unwrap(),
            Family::default()
        );
    }

    #[test]
    fn a_family_key_is_a_legal_name() {
        assert_eq!(family_key(DbId([0xab; 16])).as_str(), "ab".repeat(16));
    }
}
