//! A database's GC state item (docs/format.md, "Garbage collection"):
//! which versions `gc` retired, how far it collected their garbage, and
//! the restores and forks it must not collect under. Replaced by
//! compare-and-swap like a root, by `gc`, `restore` and `fork`.

use crate::sealed::{CHECKSUM_LEN, seal, unseal};
use crate::{DbId, FormatError};

pub const GC_STATE_MAGIC: [u8; 4] = *b"DGC1";
const HEADER_LEN: usize = 4 + 1 + 3 + 8 + 8 + 2;
const MARK_LEN: usize = 24;
/// Most restore marks a state holds (a restore refuses to start past it).
pub const RESTORE_MARKS_MAX: usize = 1024;
/// `flags` bit: [`GcState::forked`].
const FLAG_FORKED: u8 = 1;
/// `flags` bit: [`GcState::family`] is set (16 bytes after the header).
const FLAG_FAMILY: u8 = 2;
/// `flags` bit: each mark's third field is [`RestoreMark::lands_as`]
/// (set by every writer since; without it the field is a start time and
/// decodes as [`LANDS_AS_UNKNOWN`]).
const FLAG_LANDS_AS: u8 = 4;
/// [`RestoreMark::lands_as`] of a mark written before marks said where
/// their restore lands (a start time was stored there instead): `gc`
/// takes it for a restore landed at or below the head it reads.
pub const LANDS_AS_UNKNOWN: u64 = u64::MAX;
const FAMILY_LEN: usize = 16;

/// A restore or fork under way (or a restore done): it copies version
/// `source`'s root, so `gc` keeps what that root references while the
/// mark stands. A restore's or fork's root is written only in one atomic
/// step with this state item, while the mark stands (docs/format.md,
/// "Garbage collection"), so `gc` drops a mark without asking any clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreMark {
    pub source: u64,
    /// The restore's transaction id (its new root carries it); a fork's:
    /// random.
    pub txn_id: u64,
    /// A restore's: the version its root is written as (it lands as that
    /// or never). 0: a fork's mark, which its root write removes.
    pub lands_as: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GcState {
    /// Versions below it are retired: not readable, their history items
    /// and garbage deleted or being deleted.
    pub oldest: u64,
    /// The garbage of every commit up to this version is deleted
    /// (`collected <= oldest`; a run killed midway left it below).
    pub collected: u64,
    /// The database has forks, or is one: its sectors are shared by
    /// other names.
    pub forked: bool,
    /// The database id whose family item (`donut_format::family`) lists
    /// this database: `gc` checks the sectors that id's commits dropped
    /// against every member. `None` with `forked`: forked before families
    /// were recorded, and `gc` leaves its sectors.
    pub family: Option<DbId>,
    pub restores: Vec<RestoreMark>,
}

impl GcState {
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.collected <= self.oldest, "collected past oldest");
        assert!(self.restores.len() <= RESTORE_MARKS_MAX);
        let mut out = Vec::with_capacity(HEADER_LEN + self.restores.len() * MARK_LEN + 8);
        out.extend_from_slice(&GC_STATE_MAGIC);
        let mut flags = FLAG_LANDS_AS | if self.forked { FLAG_FORKED } else { 0 };
        if self.family.is_some() {
            flags |= FLAG_FAMILY;
        }
        out.push(flags);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&self.oldest.to_le_bytes());
        out.extend_from_slice(&self.collected.to_le_bytes());
        out.extend_from_slice(&(self.restores.len() as u16).to_le_bytes());
        if let Some(family) = self.family {
            out.extend_from_slice(&family.0);
        }
        for mark in &self.restores {
            out.extend_from_slice(&mark.source.to_le_bytes());
            out.extend_from_slice(&mark.txn_id.to_le_bytes());
            out.extend_from_slice(&mark.lands_as.to_le_bytes());
        }
        seal(&mut out);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<GcState, FormatError> {
        const WHAT: &str = "gc state";
        let body = unseal(bytes, WHAT, &GC_STATE_MAGIC, HEADER_LEN)?;
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8"));
        let count = u16::from_le_bytes([body[24], body[25]]) as usize;
        let flags = body[4];
        let marks_at = match flags & FLAG_FAMILY != 0 {
            true => HEADER_LEN + FAMILY_LEN,
            false => HEADER_LEN,
        };
        let need = marks_at + count * MARK_LEN;
        if body.len() != need {
            return Err(FormatError::Truncated {
                what: WHAT,
                len: bytes.len(),
                need: need + CHECKSUM_LEN,
            });
        }
        if flags & !(FLAG_FORKED | FLAG_FAMILY | FLAG_LANDS_AS) != 0 || bytes[5..8] != [0, 0, 0] {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!("unknown flags {flags:#04x}"),
            });
        }
        let state = GcState {
            oldest: u64_at(8),
            collected: u64_at(16),
            forked: flags & FLAG_FORKED != 0,
            family: (marks_at > HEADER_LEN)
                .then(|| DbId(bytes[HEADER_LEN..marks_at].try_into().expect("16 bytes"))),
            restores: (0..count)
                .map(|i| {
                    let at = marks_at + i * MARK_LEN;
                    RestoreMark {
                        source: u64_at(at),
                        txn_id: u64_at(at + 8),
                        lands_as: match flags & FLAG_LANDS_AS {
                            0 => LANDS_AS_UNKNOWN,
                            _ => u64_at(at + 16),
                        },
                    }
                })
                .collect(),
        };
        if state.collected > state.oldest || count > RESTORE_MARKS_MAX {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!(
                    "collected {} past oldest {} or {count} marks",
                    state.collected, state.oldest
                ),
            });
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_state_round_trips_and_detects_damage() {
        let state = GcState {
            oldest: 40,
            collected: 31,
            forked: true,
            family: Some(DbId([3; 16])),
            restores: vec![RestoreMark {
                source: 12,
                txn_id: 7,
                lands_as: 99,
            }],
        };
        let bytes = state.encode();
        assert_eq!(GcState::decode(&bytes).unwrap(), state);
        let mut bad = bytes.clone();
        bad[9] ^= 1;
        assert!(GcState::decode(&bad).is_err());
        assert!(GcState::decode(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(
            GcState::decode(&GcState::default().encode()).unwrap(),
            GcState::default()
        );
    }

    /// A state written before marks said where their restore lands holds
    /// a start time there: it must not read as a version.
    #[test]
    fn a_mark_written_with_a_start_time_decodes_as_landing_unknown() {
        let state = GcState {
            oldest: 4,
            collected: 4,
            restores: vec![RestoreMark {
                source: 3,
                txn_id: 7,
                lands_as: 1_700_000_000_000,
            }],
            ..GcState::default()
        };
        let mut body = state.encode();
        body.truncate(body.len() - CHECKSUM_LEN);
        body[4] &= !FLAG_LANDS_AS;
        seal(&mut body);
        let old = GcState::decode(&body).unwrap();
        assert_eq!(old.restores[0].lands_as, LANDS_AS_UNKNOWN);
    }
}
