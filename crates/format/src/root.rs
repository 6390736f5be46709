//! The root: one small item per database, replaced by compare-and-swap at
//! every commit. Layout in `docs/format.md`, "Root".

use crate::manifest::{MAX_DEPTH, OVERLAY_MAX};
use crate::{FormatError, HASH_LEN, Hash, PAGE_COUNT_MAX, ZERO_HASH, hex, validate_page_size};
use sha2::{Digest, Sha256};

pub const ROOT_MAGIC: [u8; 8] = *b"DONUTDB3";
/// Version 3 (format v5) has the layout of version 2 and says its writer
/// salts the sectors it writes (`crate::salt`); version 2 added the inline
/// top chunk; version 1 roots (without it) are still read.
pub const ROOT_FORMAT_VERSION: u16 = 3;
const ROOT_FORMAT_VERSION_V2: u16 = 2;
const ROOT_FORMAT_VERSION_V1: u16 = 1;
/// The inline top chunk's length field (version 2).
const TOP_LEN_LEN: usize = 2;
/// The largest top chunk a root carries inline: 32 entries. A bigger one
/// is only stored as a sector (a reader fetches it with the head pages).
/// Stored bytes: a salted chunk carries its salt inline too.
pub const TOP_INLINE_BYTES_MAX: usize = 4 + 32 * HASH_LEN + crate::SALT_BYTES;
const HEADER_LEN: usize = 98;
const ENTRY_LEN: usize = 4 + HASH_LEN;
const CHECKSUM_LEN: usize = 8;

/// A database's identity, fixed at creation: sectors are keyed by it, so a
/// database removed and created again under the same name shares nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DbId(pub [u8; 16]);

impl DbId {
    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

/// The top of a manifest tree: `depth` levels (0 = empty), `top` its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeRef {
    pub depth: u8,
    pub top: Hash,
}

impl TreeRef {
    pub const EMPTY: TreeRef = TreeRef {
        depth: 0,
        top: ZERO_HASH,
    };
}

/// A decoded root. See `docs/format.md` for what each field means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    pub db_id: DbId,
    /// The version this root is stored as; the first root is version 1.
    pub version: u64,
    pub page_size: u32,
    /// Pages in the database file (its size is `page_count * page_size`).
    pub page_count: u32,
    /// Wall-clock time of the commit, milliseconds since the Unix epoch.
    pub commit_ms: u64,
    /// Random id of the transaction that wrote this root: lets a writer whose
    /// commit had an unknown outcome find out whether it landed.
    pub txn_id: u64,
    pub tree: TreeRef,
    /// Recent page → hash entries not yet merged into the tree; they take
    /// precedence over it. Sorted by page index, unique, at most OVERLAY_MAX.
    pub overlay: Vec<(u32, Hash)>,
    /// Set by an exclusive writer (`PRAGMA donut_writer = exclusive`): every
    /// writer that starts from this root must hold the database's lease to
    /// commit, so its holder may skip root reads while the lease lasts.
    pub lease_required: bool,
    /// The manifest's top chunk, encoded, when it is at most
    /// [`TOP_INLINE_BYTES_MAX`] bytes (it is also stored as a sector): a
    /// reader with nothing cached learns the next level's hashes from the
    /// root alone. `None` for an empty tree, a larger top, or a version 1
    /// root.
    pub top_inline: Option<Vec<u8>>,
}

/// `flags` bit: `Root::lease_required`.
const FLAG_LEASE_REQUIRED: u16 = 1;
/// Every flag bit this version knows; a root with others is refused.
const FLAGS_KNOWN: u16 = FLAG_LEASE_REQUIRED;

impl Root {
    /// The root of a new, empty database: version 1, or the version after
    /// the tombstone of a removed database of the same name.
    pub fn new_database(db_id: DbId, page_size: u32, commit_ms: u64, txn_id: u64) -> Root {
        Root {
            db_id,
            version: 1,
            page_size,
            page_count: 0,
            commit_ms,
            txn_id,
            tree: TreeRef::EMPTY,
            overlay: Vec::new(),
            lease_required: false,
            top_inline: None,
        }
    }

    pub fn encoded_len(&self) -> usize {
        let top_len = self.top_inline.as_ref().map_or(0, Vec::len);
        HEADER_LEN + self.overlay.len() * ENTRY_LEN + TOP_LEN_LEN + top_len + CHECKSUM_LEN
    }

    pub fn encode(&self) -> Vec<u8> {
        self.check_invariants()
            .expect("encoding a root that breaks its invariants");
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&ROOT_MAGIC);
        out.extend_from_slice(&ROOT_FORMAT_VERSION.to_le_bytes());
        let flags = if self.lease_required {
            FLAG_LEASE_REQUIRED
        } else {
            0
        };
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&self.db_id.0);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.page_size.to_le_bytes());
        out.extend_from_slice(&self.page_count.to_le_bytes());
        out.extend_from_slice(&self.commit_ms.to_le_bytes());
        out.extend_from_slice(&self.txn_id.to_le_bytes());
        out.push(self.tree.depth);
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&self.tree.top);
        out.extend_from_slice(&(self.overlay.len() as u16).to_le_bytes());
        debug_assert_eq!(out.len(), HEADER_LEN);
        for (index, hash) in &self.overlay {
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(hash);
        }
        let top = self.top_inline.as_deref().unwrap_or_default();
        out.extend_from_slice(&(top.len() as u16).to_le_bytes());
        out.extend_from_slice(top);
        let checksum = Sha256::digest(&out);
        out.extend_from_slice(&checksum[..CHECKSUM_LEN]);
        debug_assert_eq!(out.len(), self.encoded_len());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Root, FormatError> {
        const WHAT: &str = "root";
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(FormatError::Truncated {
                what: WHAT,
                len: bytes.len(),
                need: HEADER_LEN + CHECKSUM_LEN,
            });
        }
        if bytes[0..8] != ROOT_MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        let format_version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if ![
            ROOT_FORMAT_VERSION,
            ROOT_FORMAT_VERSION_V2,
            ROOT_FORMAT_VERSION_V1,
        ]
        .contains(&format_version)
        {
            return Err(FormatError::UnsupportedVersion {
                what: WHAT,
                version: format_version,
            });
        }
        let flags = u16::from_le_bytes([bytes[10], bytes[11]]);
        let overlay_len = u16::from_le_bytes([bytes[96], bytes[97]]) as usize;
        let overlay_end = HEADER_LEN + overlay_len * ENTRY_LEN;
        let top_len = match format_version {
            ROOT_FORMAT_VERSION_V1 => None,
            _ => bytes
                .get(overlay_end..overlay_end + TOP_LEN_LEN)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize),
        };
        let need = match (format_version, top_len) {
            (ROOT_FORMAT_VERSION_V1, _) => overlay_end + CHECKSUM_LEN,
            (_, Some(top_len)) => overlay_end + TOP_LEN_LEN + top_len + CHECKSUM_LEN,
            (_, None) => overlay_end + TOP_LEN_LEN + CHECKSUM_LEN,
        };
        if bytes.len() != need {
            return Err(FormatError::Truncated {
                what: WHAT,
                len: bytes.len(),
                need,
            });
        }
        let body_len = need - CHECKSUM_LEN;
        let checksum = Sha256::digest(&bytes[..body_len]);
        if bytes[body_len..] != checksum[..CHECKSUM_LEN] {
            return Err(FormatError::Checksum { what: WHAT });
        }
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let mut db_id = [0u8; 16];
        db_id.copy_from_slice(&bytes[12..28]);
        let mut top = ZERO_HASH;
        top.copy_from_slice(&bytes[64..96]);
        let overlay = (0..overlay_len)
            .map(|i| {
                let at = HEADER_LEN + i * ENTRY_LEN;
                let mut hash = ZERO_HASH;
                hash.copy_from_slice(&bytes[at + 4..at + ENTRY_LEN]);
                (u32_at(at), hash)
            })
            .collect();
        let root = Root {
            db_id: DbId(db_id),
            version: u64_at(28),
            page_size: u32_at(36),
            page_count: u32_at(40),
            commit_ms: u64_at(44),
            txn_id: u64_at(52),
            tree: TreeRef {
                depth: bytes[60],
                top,
            },
            overlay,
            lease_required: flags & FLAG_LEASE_REQUIRED != 0,
            top_inline: top_len.filter(|&len| len > 0).map(|len| {
                let at = overlay_end + TOP_LEN_LEN;
                bytes[at..at + len].to_vec()
            }),
        };
        if flags & !FLAGS_KNOWN != 0 {
            return Err(FormatError::Invalid {
                what: WHAT,
                detail: format!("unknown flags {flags:#06x}"),
            });
        }
        root.check_invariants()
            .map_err(|detail| FormatError::Invalid { what: WHAT, detail })?;
        Ok(root)
    }

    /// What every root must satisfy; checked on encode and decode.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.version == 0 {
            return Err("version 0".into());
        }
        validate_page_size(self.page_size as u64).map_err(|e| e.to_string())?;
        if self.page_count as u64 > PAGE_COUNT_MAX {
            return Err(format!("page count {} too large", self.page_count));
        }
        if self.tree.depth > MAX_DEPTH {
            return Err(format!("tree depth {} > {MAX_DEPTH}", self.tree.depth));
        }
        if self.tree.depth == 0 && self.tree.top != ZERO_HASH {
            return Err("empty tree with a top hash".into());
        }
        if self.overlay.len() > OVERLAY_MAX {
            return Err(format!(
                "overlay has {} entries > {OVERLAY_MAX}",
                self.overlay.len()
            ));
        }
        if !self.overlay.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err("overlay not sorted and unique".into());
        }
        if let Some(top) = &self.top_inline {
            self.check_top_inline(top)?;
        }
        Ok(())
    }

    /// An inline top is the tree's top chunk: small, its hash, its level.
    fn check_top_inline(&self, top: &[u8]) -> Result<(), String> {
        if top.len() > TOP_INLINE_BYTES_MAX {
            return Err(format!(
                "inline top chunk of {} bytes > {TOP_INLINE_BYTES_MAX}",
                top.len()
            ));
        }
        if crate::hash(top) != self.tree.top {
            return Err("inline top chunk does not match the tree's top hash".into());
        }
        let chunk = crate::Chunk::decode(top).map_err(|e| e.to_string())?;
        if chunk.level != self.tree.depth {
            return Err(format!(
                "inline top chunk of level {} in a tree of depth {}",
                chunk.level, self.tree.depth
            ));
        }
        Ok(())
    }

    /// Bytes of the database file this root describes.
    pub fn file_size(&self) -> u64 {
        self.page_count as u64 * self.page_size as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Root {
        Root {
            db_id: DbId([9; 16]),
            version: 42,
            page_size: 4096,
            page_count: 1000,
            commit_ms: 1_700_000_000_000,
            txn_id: 0xdead_beef,
            tree: TreeRef {
                depth: 2,
                top: [3; 32],
            },
            overlay: vec![(0, [1; 32]), (17, [2; 32])],
            lease_required: false,
            top_inline: None,
        }
    }

    #[test]
    fn lease_required_round_trips_and_unknown_flags_are_refused() {
        let mut root = sample();
        root.lease_required = true;
        let bytes = root.encode();
        assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 1);
        assert_eq!(Root::decode(&bytes).unwrap(), root);
        // A flag this version does not know, under a valid checksum.
        let mut unknown = bytes.clone();
        unknown[10] = 0b10;
        let body_len = unknown.len() - CHECKSUM_LEN;
        let checksum = Sha256::digest(&unknown[..body_len]);
        unknown[body_len..].copy_from_slice(&checksum[..CHECKSUM_LEN]);
        let err = Root::decode(&unknown).unwrap_err().to_string();
        assert!(err.contains("unknown flags"), "{err}");
    }

    #[test]
    fn root_round_trips() {
        let root = sample();
        let bytes = root.encode();
        assert_eq!(bytes.len(), root.encoded_len());
        assert_eq!(Root::decode(&bytes).unwrap(), root);
        let empty = Root::new_database(DbId([1; 16]), 512, 5, 6);
        assert_eq!(Root::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn root_detects_corruption() {
        let bytes = sample().encode();
        for at in [0, 9, 30, 70, 100, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(Root::decode(&bad).is_err(), "flip at {at} went unnoticed");
        }
        assert!(matches!(
            Root::decode(&bytes[..bytes.len() - 1]),
            Err(FormatError::Truncated { .. })
        ));
        assert!(matches!(
            Root::decode(b"short"),
            Err(FormatError::Truncated { .. })
        ));
    }

    /// A version 1 root (before the inline top): the same bytes less the
    /// top's length field, format version 1.
    fn encode_v1(root: &Root) -> Vec<u8> {
        assert!(root.top_inline.is_none());
        let v2 = root.encode();
        let mut v1 = v2[..v2.len() - CHECKSUM_LEN - TOP_LEN_LEN].to_vec();
        v1[8..10].copy_from_slice(&ROOT_FORMAT_VERSION_V1.to_le_bytes());
        let checksum = Sha256::digest(&v1);
        v1.extend_from_slice(&checksum[..CHECKSUM_LEN]);
        v1
    }

    #[test]
    fn a_version_1_root_is_still_read() {
        let root = sample();
        let v1 = encode_v1(&root);
        assert_eq!(v1.len(), root.encoded_len() - TOP_LEN_LEN);
        assert_eq!(Root::decode(&v1).unwrap(), root);
    }

    /// Format v4 wrote format_version 2 (unsalted sectors): still read;
    /// an unknown version is refused by name.
    #[test]
    fn a_version_2_root_is_still_read_and_version_4_is_refused() {
        let root = sample();
        let with_version = |version: u16| {
            let mut bytes = root.encode();
            bytes[8..10].copy_from_slice(&version.to_le_bytes());
            let body = bytes.len() - CHECKSUM_LEN;
            let checksum = Sha256::digest(&bytes[..body]);
            bytes[body..].copy_from_slice(&checksum[..CHECKSUM_LEN]);
            bytes
        };
        assert_eq!(Root::decode(&with_version(2)).unwrap(), root);
        assert_eq!(Root::decode(&with_version(3)).unwrap(), root);
        let refused = Root::decode(&with_version(4)).unwrap_err().to_string();
        assert!(refused.contains('4'), "{refused}");
    }

    #[test]
    fn an_inline_top_round_trips_and_must_be_the_tree_top() {
        let mut top = crate::Chunk::empty(2);
        top.entries[0] = [5; 32];
        top.entries[1] = [6; 32];
        let bytes = top.encode();
        let mut root = sample();
        root.tree.top = crate::hash(&bytes);
        root.top_inline = Some(bytes.clone());
        let encoded = root.encode();
        assert_eq!(encoded.len(), root.encoded_len());
        assert_eq!(Root::decode(&encoded).unwrap(), root);

        let mut other = root.clone();
        other.tree.top = [4; 32];
        assert!(other.check_invariants().unwrap_err().contains("top hash"));
        let mut deeper = root.clone();
        deeper.tree.depth = 3;
        assert!(deeper.check_invariants().unwrap_err().contains("level 2"));
        let mut big = crate::Chunk::empty(2);
        big.entries[40] = [7; 32];
        let big = big.encode();
        let mut too_big = root.clone();
        too_big.tree.top = crate::hash(&big);
        too_big.top_inline = Some(big);
        assert!(too_big.check_invariants().unwrap_err().contains("bytes"));
    }

    #[test]
    fn root_rejects_bad_page_size() {
        let mut root = sample();
        root.page_size = 1000;
        assert!(root.check_invariants().is_err());
    }
}
