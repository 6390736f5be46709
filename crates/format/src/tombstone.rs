//! The root of a removed database: keeps the name's version history going,
//! so a version number is never reused for a name (a handle on the removed
//! database can never compare-and-swap the next database of that name).

use crate::FormatError;
use sha2::{Digest, Sha256};

pub const TOMBSTONE_MAGIC: [u8; 8] = *b"DONUTRM1";
const TOMBSTONE_LEN: usize = 8 + 8 + 8 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    pub version: u64,
    pub removed_ms: u64,
}

impl Tombstone {
    pub fn is_tombstone(body: &[u8]) -> bool {
        body.len() >= 8 && body[..8] == TOMBSTONE_MAGIC
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TOMBSTONE_LEN);
        out.extend_from_slice(&TOMBSTONE_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.removed_ms.to_le_bytes());
        let checksum = Sha256::digest(&out);
        out.extend_from_slice(&checksum[..8]);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Tombstone, FormatError> {
        const WHAT: &str = "tombstone";
        if bytes.len() != TOMBSTONE_LEN {
            return Err(FormatError::Truncated {
                what: WHAT,
                len: bytes.len(),
                need: TOMBSTONE_LEN,
            });
        }
        if !Self::is_tombstone(bytes) {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        if Sha256::digest(&bytes[..24])[..8] != bytes[24..] {
            return Err(FormatError::Checksum { what: WHAT });
        }
        Ok(Tombstone {
            version: u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
            removed_ms: u64::from_le_bytes(bytes[16..24].try_into().unwrap()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstone_round_trips() {
        let t = Tombstone {
            version: 9,
            removed_ms: 1234,
        };
        let bytes = t.encode();
        assert!(Tombstone::is_tombstone(&bytes));
        assert_eq!(Tombstone::decode(&bytes).unwrap(), t);
        let mut bad = bytes.clone();
        bad[10] ^= 1;
        assert!(Tombstone::decode(&bad).is_err());
        assert!(!Tombstone::is_tombstone(b"DONUTDB3xxxxxxxx"));
    }
}
