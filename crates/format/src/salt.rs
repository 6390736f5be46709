//! Salted sectors (format v5): a page or manifest chunk is stored as its
//! bytes followed by a 16-byte salt naming where and by whom it was
//! written, and keyed by the hash of both. So a key is written by exactly
//! one transaction at exactly one position and, once a commit drops it, no
//! later commit writes it again: what `gc` relies on (docs/format.md,
//! "Sectors" and "Garbage collection").
//!
//! Readers strip the salt by length: plain pages are multiples of 32 bytes
//! (512..=65536) and plain chunks 4 more than one (4 + 32·n), so a stored
//! sector whose length is 16 or 20 more than a multiple of 32 carries a
//! salt, and one of 0 or 4 more (written before v5) does not.

use crate::{FormatError, MAX_DEPTH};

/// Bytes of a salt.
pub const SALT_BYTES: usize = 16;

/// Where a salted sector sits and which transaction wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Salt {
    /// 0 for a page; a chunk's level (1 = leaf .. 4) for a chunk.
    pub level: u8,
    /// A page's index, or a chunk's number within its level.
    pub slot: u32,
    /// The writing transaction's `txn_id` (the root it commits carries it).
    pub txn_id: u64,
}

impl Salt {
    /// The salt of page `index` written by transaction `txn_id`.
    pub fn page(index: u32, txn_id: u64) -> Salt {
        Salt {
            level: 0,
            slot: index,
            txn_id,
        }
    }

    /// The salt of chunk number `node` of `level` written by `txn_id`.
    pub fn chunk(level: u8, node: u64, txn_id: u64) -> Salt {
        assert!((1..=MAX_DEPTH).contains(&level), "chunk level {level}");
        let slot = u32::try_from(node).expect("a chunk number fits in 32 bits at every level");
        Salt {
            level,
            slot,
            txn_id,
        }
    }

    /// Layout: level (1 byte), 3 zero bytes, slot (u32 LE), txn_id (u64 LE).
    pub fn encode(&self) -> [u8; SALT_BYTES] {
        let mut out = [0u8; SALT_BYTES];
        out[0] = self.level;
        out[4..8].copy_from_slice(&self.slot.to_le_bytes());
        out[8..16].copy_from_slice(&self.txn_id.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8; SALT_BYTES]) -> Result<Salt, FormatError> {
        if bytes[0] > MAX_DEPTH || bytes[1..4] != [0, 0, 0] {
            return Err(FormatError::Invalid {
                what: "sector salt",
                detail: format!("level {} / reserved {:?}", bytes[0], &bytes[1..4]),
            });
        }
        Ok(Salt {
            level: bytes[0],
            slot: u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")),
            txn_id: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
        })
    }
}

/// `plain` followed by `salt`: the bytes a salted sector stores (and hashes).
pub fn salted(plain: &[u8], salt: Salt) -> Vec<u8> {
    assert!(
        !is_salted_len(plain.len()),
        "plain sectors are 0 or 4 bytes past a multiple of 32 (got {})",
        plain.len()
    );
    let mut out = Vec::with_capacity(plain.len() + SALT_BYTES);
    out.extend_from_slice(plain);
    out.extend_from_slice(&salt.encode());
    out
}

/// Does a stored sector of `len` bytes carry a salt?
pub fn is_salted_len(len: usize) -> bool {
    matches!(len % 32, 16 | 20)
}

/// A stored sector's plain bytes (the salt, if any, stripped).
pub fn plain(stored: &[u8]) -> &[u8] {
    if is_salted_len(stored.len()) {
        &stored[..stored.len() - SALT_BYTES]
    } else {
        stored
    }
}

/// Drops a stored sector's salt in place, if it has one.
pub fn strip(stored: &mut Vec<u8>) {
    if is_salted_len(stored.len()) {
        stored.truncate(stored.len() - SALT_BYTES);
    }
}

/// A stored sector's salt; `None` if it was written unsalted (before v5).
pub fn salt_of(stored: &[u8]) -> Result<Option<Salt>, FormatError> {
    if !is_salted_len(stored.len()) {
        return Ok(None);
    }
    let tail: &[u8; SALT_BYTES] = stored[stored.len() - SALT_BYTES..]
        .try_into()
        .expect("SALT_BYTES");
    Salt::decode(tail).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Chunk;

    #[test]
    fn lengths_tell_salted_from_plain() {
        for page_size in [512usize, 1024, 4096, 65536] {
            assert!(!is_salted_len(page_size));
            assert!(is_salted_len(page_size + SALT_BYTES));
        }
        for entries in 0..=256usize {
            let chunk_len = 4 + 32 * entries;
            assert!(!is_salted_len(chunk_len));
            assert!(is_salted_len(chunk_len + SALT_BYTES));
        }
    }

    #[test]
    fn a_salt_round_trips_and_strips() {
        let page = vec![7u8; 4096];
        let salt = Salt::page(41, 0xfeed_beef);
        let stored = salted(&page, salt);
        assert_eq!(stored.len(), 4096 + SALT_BYTES);
        assert_eq!(plain(&stored), &page[..]);
        assert_eq!(salt_of(&stored).unwrap(), Some(salt));
        assert_eq!(salt_of(&page).unwrap(), None);
        let mut owned = stored.clone();
        strip(&mut owned);
        assert_eq!(owned, page);
    }

    #[test]
    fn the_same_bytes_at_another_slot_or_by_another_transaction_get_another_key() {
        let page = vec![1u8; 512];
        let a = crate::hash(&salted(&page, Salt::page(3, 9)));
        assert_ne!(a, crate::hash(&salted(&page, Salt::page(4, 9))));
        assert_ne!(a, crate::hash(&salted(&page, Salt::page(3, 10))));
        assert_eq!(a, crate::hash(&salted(&page, Salt::page(3, 9))));
    }

    #[test]
    fn a_salted_chunk_decodes() {
        let mut chunk = Chunk::empty(2);
        chunk.entries[5] = [9; 32];
        let stored = salted(&chunk.encode(), Salt::chunk(2, 7, 1));
        assert_eq!(Chunk::decode(&stored).unwrap(), chunk);
    }

    #[test]
    fn a_bad_salt_is_refused() {
        let mut stored = salted(&[0u8; 512], Salt::page(0, 0));
        stored[512] = 9; // level 9
        assert!(salt_of(&stored).is_err());
    }
}
