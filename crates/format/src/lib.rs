//! DonutDB's on-table format, v3, and the pure parts of its commit protocol.
//!
//! This crate owns every byte DonutDB stores (see `docs/format.md`): database
//! names, roots, manifest chunks and content hashes; and the bytes it reads
//! of SQLite's own header ([`sqlite_header`]). It has no SQLite and does
//! no I/O, so the guest (wasm32-wasip2) and the host (native) compile the same
//! source of truth. Loading of chunks is abstracted by [`ChunkSource`].

mod at;
pub mod family;
mod gc_state;
pub mod intent;
pub mod items;
pub mod limits;
mod lock;
pub mod lru;
mod manifest;
mod name;
mod root;
pub mod salt;
mod sealed;
pub mod sqlite_header;
mod tombstone;

pub use at::{At, DbRef, DbRefError, format_utc_ms, parse_at, parse_rfc3339_ms};
pub use family::{FAMILY_MEMBERS_MAX, Family, FamilyMember, ForkSource, family_key};
pub use gc_state::{GC_STATE_MAGIC, GcState, LANDS_AS_UNKNOWN, RESTORE_MARKS_MAX, RestoreMark};
pub use intent::{INTENT_KEYS_MAX, Intent, IntentKey, IntentSector};
pub use lock::{LOCK_HOLDERS_MAX, LockHolder, LockMode, LockState};
pub use manifest::{
    Chunk, ChunkKind, ChunkSource, FANOUT, HEAD_PAGES, MAX_DEPTH, Manifest, ManifestUpdate,
    NewSector, OVERLAY_MAX,
};
pub use name::{DbName, NameError, PageSizeError, validate_page_size};
pub use root::{DbId, ROOT_FORMAT_VERSION, ROOT_MAGIC, Root, TreeRef};
pub use salt::{SALT_BYTES, Salt};
pub use tombstone::{TOMBSTONE_MAGIC, Tombstone};

use sha2::{Digest, Sha256};

/// Length of a content hash in bytes (SHA-256).
pub const HASH_LEN: usize = 32;

/// A content hash: SHA-256 of a sector's plain bytes.
pub type Hash = [u8; HASH_LEN];

/// The hash that stands for "no sector": an absent page (reads as zeros) or
/// an empty subtree. No real content hashes to it.
pub const ZERO_HASH: Hash = [0; HASH_LEN];

/// Smallest and largest SQLite page sizes.
pub const PAGE_SIZE_MIN: u32 = 512;
pub const PAGE_SIZE_MAX: u32 = 65536;
/// Page size of a database created without one.
pub const PAGE_SIZE_DEFAULT: u32 = 4096;

/// SQLite's largest page number is 2^32 - 2; manifest indexes are page
/// number - 1, so they fit in a u32.
pub const PAGE_COUNT_MAX: u64 = u32::MAX as u64 - 1;

/// Hash of `bytes` as stored in keys and manifests.
pub fn hash(bytes: &[u8]) -> Hash {
    let digest = Sha256::digest(bytes);
    let mut out = ZERO_HASH;
    out.copy_from_slice(&digest);
    out
}

/// Lower-case hex of a hash, as used in item keys and messages.
pub fn hash_hex(hash: &Hash) -> String {
    hex(hash)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Parses lower- or upper-case hex into exactly `N` bytes.
pub fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Checks that `bytes` hash to `expected`; the error names the item.
pub fn verify(expected: &Hash, bytes: &[u8]) -> Result<(), FormatError> {
    let actual = hash(bytes);
    if &actual != expected {
        return Err(FormatError::HashMismatch {
            expected: hash_hex(expected),
            actual: hash_hex(&actual),
        });
    }
    Ok(())
}

/// A stored item that does not decode: corruption or a foreign format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{what}: truncated ({len} bytes, need {need})")]
    Truncated {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("{what}: bad magic")]
    BadMagic { what: &'static str },
    #[error("{what}: unsupported format version {version}")]
    UnsupportedVersion { what: &'static str, version: u16 },
    #[error("{what}: checksum mismatch")]
    Checksum { what: &'static str },
    #[error("sector hash mismatch: expected {expected}, stored bytes hash to {actual}")]
    HashMismatch { expected: String, actual: String },
    #[error("{what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let h = hash(b"donut");
        let text = hash_hex(&h);
        assert_eq!(text.len(), 64);
        assert_eq!(parse_hex::<32>(&text), Some(h));
        assert_eq!(parse_hex::<32>(&text[1..]), None);
        assert_eq!(parse_hex::<2>("zz00"), None);
    }

    #[test]
    fn verify_detects_a_flipped_bit() {
        let mut bytes = vec![7u8; 4096];
        let h = hash(&bytes);
        assert!(verify(&h, &bytes).is_ok());
        bytes[100] ^= 1;
        assert!(matches!(
            verify(&h, &bytes),
            Err(FormatError::HashMismatch { .. })
        ));
    }

    #[test]
    fn zero_hash_is_not_a_real_hash() {
        assert_ne!(hash(&[]), ZERO_HASH);
        assert_ne!(hash(&[0; 4096]), ZERO_HASH);
    }
}
