//! The framing the GC state, family and intent items share: a 4-byte
//! magic first, and the first 8 bytes of SHA-256 of everything before
//! them last (docs/format.md gives each item's fields between).

use crate::FormatError;
use sha2::{Digest, Sha256};

/// Bytes of the trailing checksum.
pub(crate) const CHECKSUM_LEN: usize = 8;

/// Appends the checksum of `out` to it.
pub(crate) fn seal(out: &mut Vec<u8>) {
    let checksum = Sha256::digest(&out[..]);
    out.extend_from_slice(&checksum[..CHECKSUM_LEN]);
}

/// The bytes before the checksum, once the length (at least
/// `header_len` and the checksum), the magic and the checksum are right.
pub(crate) fn unseal<'a>(
    bytes: &'a [u8],
    what: &'static str,
    magic: &[u8; 4],
    header_len: usize,
) -> Result<&'a [u8], FormatError> {
    let need = header_len + CHECKSUM_LEN;
    if bytes.len() < need {
        return Err(FormatError::Truncated {
            what,
            len: bytes.len(),
            need,
        });
    }
    if bytes[..4] != *magic {
        return Err(FormatError::BadMagic { what });
    }
    let (body, checksum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(body)[..CHECKSUM_LEN] != *checksum {
        return Err(FormatError::Checksum { what });
    }
    Ok(body)
}
