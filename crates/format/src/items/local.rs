//! The local store's files (`donut-host --store DIR`): a marker file, one
//! file per meta item, and append-only packs of sectors.

use crate::{DbId, DbName, HASH_LEN, Hash, hash};

/// The marker file at the store's top, and what it holds.
pub const MARKER_FILE: &str = "DONUTDB";
pub const MARKER: &str = "donutdb local store v1\n";

/// A pack starts with this; then records back to back.
pub const PACK_MAGIC: &[u8; 8] = b"DNTPACK1";
/// A meta file starts with this.
pub const META_MAGIC: &[u8; 8] = b"DNTMETA1";
/// A pack record's header: database id (16), hash, body length (u32 LE);
/// the body follows.
pub const RECORD_HEADER_BYTES: usize = 16 + HASH_LEN + 4;
/// Bytes of a meta file's trailing checksum (the first bytes of the
/// SHA-256 of everything before it).
const META_CHECKSUM_BYTES: usize = 8;

/// One sector in a pack: where its body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackRecord {
    pub db: DbId,
    pub hash: Hash,
    /// Offset of the body from the pack's start.
    pub offset: u64,
    pub len: u32,
}

/// Appends one record to `pack` (which starts with [`PACK_MAGIC`]).
pub fn push_record(pack: &mut Vec<u8>, db: DbId, sector: &Hash, body: &[u8]) {
    let len = u32::try_from(body.len()).expect("a sector within ITEM_BYTES_MAX");
    pack.extend_from_slice(&db.0);
    pack.extend_from_slice(sector);
    pack.extend_from_slice(&len.to_le_bytes());
    pack.extend_from_slice(body);
}

/// The records of a pack, or what is wrong with it.
pub fn decode_pack(bytes: &[u8]) -> Result<Vec<PackRecord>, String> {
    if bytes.len() < PACK_MAGIC.len() || &bytes[..PACK_MAGIC.len()] != PACK_MAGIC {
        return Err("not a pack".to_string());
    }
    let mut records = Vec::new();
    let mut at = PACK_MAGIC.len();
    while at < bytes.len() {
        if bytes.len() - at < RECORD_HEADER_BYTES {
            return Err(format!("truncated record at byte {at}"));
        }
        let mut db = [0u8; 16];
        db.copy_from_slice(&bytes[at..at + 16]);
        let mut sector = [0u8; HASH_LEN];
        sector.copy_from_slice(&bytes[at + 16..at + 16 + HASH_LEN]);
        let len_at = at + 16 + HASH_LEN;
        let len = u32::from_le_bytes([
            bytes[len_at],
            bytes[len_at + 1],
            bytes[len_at + 2],
            bytes[len_at + 3],
        ]);
        let offset = at + RECORD_HEADER_BYTES;
        if offset + len as usize > bytes.len() {
            return Err(format!("record at byte {at} runs past the end"));
        }
        records.push(PackRecord {
            db: DbId(db),
            hash: sector,
            offset: offset as u64,
            len,
        });
        at = offset + len as usize;
    }
    Ok(records)
}

/// A meta file: magic, name, version, body, checksum.
pub fn encode_meta(name: &DbName, version: u64, body: &[u8]) -> Vec<u8> {
    let name = name.as_str().as_bytes();
    let name_len = u16::try_from(name.len()).expect("names are short");
    let body_len = u32::try_from(body.len()).expect("a meta body within ITEM_BYTES_MAX");
    let mut out = Vec::with_capacity(8 + 2 + name.len() + 8 + 4 + body.len() + 8);
    out.extend_from_slice(META_MAGIC);
    out.extend_from_slice(&name_len.to_le_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(body);
    let checksum = hash(&out);
    out.extend_from_slice(&checksum[..META_CHECKSUM_BYTES]);
    out
}

/// The file (under `meta/`) of database `name`'s meta item of `kind`
/// (`root` or `lock`): the kind and the SHA-256 of the name, so any legal
/// name makes a legal file name.
pub fn meta_file_name(kind: &str, name: &DbName) -> String {
    format!(
        "{kind}-{}",
        crate::hash_hex(&hash(name.as_str().as_bytes()))
    )
}

/// The directory (under `history/`) of database `name`'s kept roots: the
/// SHA-256 of the name, as for its meta files.
pub fn history_dir_name(name: &DbName) -> String {
    crate::hash_hex(&hash(name.as_str().as_bytes()))
}

/// The file of root version `version` in a history directory: the version
/// in 20 decimal digits, so names sort as versions do. Its bytes are a
/// meta file's ([`encode_meta`]).
pub fn history_file_name(version: u64) -> String {
    format!("{version:020}")
}

/// The file of an intent (docs/format.md, "Intents") in its database's
/// directory under `intents/` (named as history directories are): the
/// bound in 20 decimal digits and the id in 8 hex digits, so names sort
/// as keys do. Its bytes are the intent's own (they carry a checksum).
pub fn intent_file_name(key: crate::IntentKey) -> String {
    format!("{:020}-{:08x}", key.bound, key.id)
}

/// The key an intent file's name says; `None` for any other file.
pub fn parse_intent_file_name(name: &str) -> Option<crate::IntentKey> {
    let (bound, id) = name.split_once('-')?;
    if bound.len() != 20 || id.len() != 8 {
        return None;
    }
    Some(crate::IntentKey {
        bound: bound.parse().ok()?,
        id: u32::from_str_radix(id, 16).ok()?,
    })
}

/// The name, version and body of a meta file; `None` if it is damaged.
pub fn decode_meta(bytes: &[u8]) -> Option<(DbName, u64, Vec<u8>)> {
    let body_end = bytes.len().checked_sub(META_CHECKSUM_BYTES)?;
    if bytes.get(..8)? != META_MAGIC
        || hash(&bytes[..body_end])[..META_CHECKSUM_BYTES] != bytes[body_end..]
    {
        return None;
    }
    let name_len = u16::from_le_bytes(bytes.get(8..10)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(bytes.get(10..10 + name_len)?).ok()?;
    let at = 10 + name_len;
    let version = u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
    let len = u32::from_le_bytes(bytes.get(at + 8..at + 12)?.try_into().ok()?) as usize;
    let body = bytes.get(at + 12..at + 12 + len)?.to_vec();
    if at + 12 + len != body_end {
        return None;
    }
    Some((DbName::new(name).ok()?, version, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_decodes_to_its_records_and_a_cut_one_is_refused() {
        let mut pack = PACK_MAGIC.to_vec();
        push_record(&mut pack, DbId([1; 16]), &[2; 32], b"hello");
        push_record(&mut pack, DbId([3; 16]), &[4; 32], b"");
        let records = decode_pack(&pack).unwrap();
        assert_eq!(records.len(), 2);
        let first = records[0];
        assert_eq!(
            (first.db, first.hash, first.len),
            (DbId([1; 16]), [2; 32], 5)
        );
        let body = &pack[first.offset as usize..][..first.len as usize];
        assert_eq!(body, b"hello");
        assert!(decode_pack(&pack[..pack.len() - 1]).is_err());
        assert!(decode_pack(b"DNTPACK0").is_err());
    }

    #[test]
    fn a_meta_file_round_trips_and_a_flipped_bit_is_refused() {
        let name = DbName::new("a.db").unwrap();
        let mut bytes = encode_meta(&name, 7, b"body");
        assert_eq!(decode_meta(&bytes), Some((name, 7, b"body".to_vec())));
        bytes[12] ^= 1;
        assert_eq!(decode_meta(&bytes), None);
    }
}
