//! Intent items (docs/format.md, "Intents"): what a write stores before
//! its commit point when the two are not one request — a large commit's
//! sectors, a transaction's spilled pages, a push. Written before the
//! sectors they list, so a commit refused or killed after them leaves a
//! record `gc` can collect them by, without a scan.
//!
//! An intent names the writing transaction (`txn_id`: every sector it
//! lists is salted with it) and a **bound**: a version that existed when
//! the intent was written and is at least the version the transaction
//! read. The transaction can then only ever commit as a version at most
//! `bound + 1`, so once `bound + 1` exists its fate is known: that
//! version carries its `txn_id`, or it never commits.

use crate::limits::{ITEM_BYTES_MAX, SECTORS_PER_CALL_MAX};
use crate::sealed::{CHECKSUM_LEN, seal, unseal};
use crate::{DbId, FormatError, Hash, Salt};
use sha2::{Digest, Sha256};

pub const INTENT_MAGIC: [u8; 4] = *b"DIN1";
const HEADER_LEN: usize = 4 + 1 + 3 + 16 + 8 + 8 + 8 + 4;
/// A key: hash (32), level (1), slot (4).
const KEY_LEN: usize = 32 + 1 + 4;
/// Most keys one intent lists: one `put-sectors` call's.
pub const INTENT_KEYS_MAX: usize = SECTORS_PER_CALL_MAX;
/// The largest intent body, with room for its item's key and attributes.
pub const INTENT_BYTES_MAX: usize = HEADER_LEN + INTENT_KEYS_MAX * KEY_LEN + CHECKSUM_LEN;
const _: () = assert!(INTENT_BYTES_MAX + 1024 <= ITEM_BYTES_MAX);

/// A sector an intent lists: its key and the position its salt names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntentSector {
    pub key: Hash,
    /// 0 for a page, a chunk's level (1..=4).
    pub level: u8,
    /// A page's index, or a chunk's number within its level.
    pub slot: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// The database id the sectors are keyed under.
    pub db_id: DbId,
    /// The transaction that salted them.
    pub txn_id: u64,
    /// The transaction commits as a version `<= bound + 1`, or never.
    pub bound: u64,
    /// When the intent was written (the writer's clock): for `debug`.
    pub written_ms: u64,
    pub sectors: Vec<IntentSector>,
}

/// Where an intent is stored among its database's: ordered by bound, so
/// `gc` reads only those whose fate is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IntentKey {
    pub bound: u64,
    /// The first 4 bytes of SHA-256 of (txn id, the keys): the same intent
    /// written twice (a re-sent call) is the same item. Nothing drawn by
    /// the host (a database id) goes in, so a simulation that seeds its
    /// guests' randomness lists intents in the same order every time.
    pub id: u32,
}

impl IntentKey {
    /// One number, ordered as the keys are: DynamoDB's sort key (at most
    /// 29 decimal digits, within its 38).
    pub fn sort_number(&self) -> u128 {
        ((self.bound as u128) << 32) | self.id as u128
    }

    pub fn from_sort_number(n: u128) -> Option<IntentKey> {
        let bound = u64::try_from(n >> 32).ok()?;
        Some(IntentKey {
            bound,
            id: n as u32,
        })
    }
}

impl IntentSector {
    /// The key of a salted sector and where its salt puts it.
    pub fn of(key: Hash, salt: Salt) -> IntentSector {
        IntentSector {
            key,
            level: salt.level,
            slot: salt.slot,
        }
    }
}

impl Intent {
    pub fn key(&self) -> IntentKey {
        let mut hasher = Sha256::new();
        hasher.update(self.txn_id.to_le_bytes());
        for sector in &self.sectors {
            hasher.update(sector.key);
        }
        let digest = hasher.finalize();
        IntentKey {
            bound: self.bound,
            id: u32::from_le_bytes(digest[..4].try_into().expect("4 bytes")),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        assert!(
            !self.sectors.is_empty() && self.sectors.len() <= INTENT_KEYS_MAX,
            "an intent lists 1..={INTENT_KEYS_MAX} sectors, not {}",
            self.sectors.len()
        );
        let mut out = Vec::with_capacity(HEADER_LEN + self.sectors.len() * KEY_LEN + 8);
        out.extend_from_slice(&INTENT_MAGIC);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.db_id.0);
        out.extend_from_slice(&self.txn_id.to_le_bytes());
        out.extend_from_slice(&self.bound.to_le_bytes());
        out.extend_from_slice(&self.written_ms.to_le_bytes());
        out.extend_from_slice(&(self.sectors.len() as u32).to_le_bytes());
        for sector in &self.sectors {
            assert!(sector.level <= crate::MAX_DEPTH, "level {}", sector.level);
            out.extend_from_slice(&sector.key);
            out.push(sector.level);
            out.extend_from_slice(&sector.slot.to_le_bytes());
        }
        seal(&mut out);
        debug_assert!(out.len() <= INTENT_BYTES_MAX);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Intent, FormatError> {
        const WHAT: &str = "intent";
        let body = unseal(bytes, WHAT, &INTENT_MAGIC, HEADER_LEN)?;
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8"));
        let count = u32::from_le_bytes(body[48..52].try_into().expect("4")) as usize;
        let need = HEADER_LEN + count.saturating_mul(KEY_LEN);
        if body.len() != need {
            return Err(FormatError::Truncated {
                what: WHAT,
                len: bytes.len(),
                need: need.saturating_add(CHECKSUM_LEN),
            });
        }
        if bytes[4..8] != [0; 4] || count == 0 || count > INTENT_KEYS_MAX {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!("flags {:?}, {count} sectors", &bytes[4..8]),
            });
        }
        let mut sectors = Vec::with_capacity(count);
        for i in 0..count {
            let at = HEADER_LEN + i * KEY_LEN;
            let level = bytes[at + 32];
            if level > crate::MAX_DEPTH {
                return Err(FormatError::Invalid {
                    what: WHAT,
                    detail: format!("sector {i} at level {level}"),
                });
            }
            sectors.push(IntentSector {
                key: bytes[at..at + 32].try_into().expect("32 bytes"),
                level,
                slot: u32::from_le_bytes(bytes[at + 33..at + 37].try_into().expect("4")),
            });
        }
        Ok(Intent {
            db_id: DbId(bytes[8..24].try_into().expect("16 bytes")),
            txn_id: u64_at(24),
            bound: u64_at(32),
            written_ms: u64_at(40),
            sectors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(n: usize) -> Intent {
        Intent {
            db_id: DbId([7; 16]),
            txn_id: 42,
            bound: 9,
            written_ms: 1_700_000_000_000,
            sectors: (0..n)
                .map(|i| IntentSector {
                    key: [i as u8; 32],
                    level: (i % 5) as u8,
                    slot: i as u32 * 3,
                })
                .collect(),
        }
    }

    #[test]
    fn intent_round_trips_and_detects_damage() {
        let one = intent(3);
        let bytes = one.encode();
        assert_eq!(Intent::decode(&bytes).unwrap(), one);
        for at in [0, 5, 30, 60, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(Intent::decode(&bad).is_err(), "damage at {at}");
        }
        assert!(Intent::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn the_largest_intent_fits_one_item() {
        let bytes = intent(INTENT_KEYS_MAX).encode();
        assert_eq!(bytes.len(), INTENT_BYTES_MAX);
        assert!(bytes.len() < ITEM_BYTES_MAX);
    }

    #[test]
    fn intent_keys_order_as_their_sort_numbers() {
        let a = IntentKey {
            bound: 3,
            id: u32::MAX,
        };
        let b = IntentKey { bound: 4, id: 0 };
        assert!(a < b && a.sort_number() < b.sort_number());
        let top = IntentKey {
            bound: u64::MAX,
            id: u32::MAX,
        };
        assert!(top.sort_number().to_string().len() <= 38);
        for key in [a, b, top] {
            assert_eq!(IntentKey::from_sort_number(key.sort_number()), Some(key));
        }
        assert_eq!(intent(3).key(), intent(3).key());
        assert_ne!(intent(3).key(), intent(4).key());
    }
}
