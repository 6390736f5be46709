//! DonutDB's items in one DynamoDB table: a string partition key and a
//! number sort key; roots, locks and sectors are one item each, and the
//! catalog (for `ls`) is one partition of small items.

use crate::{DbId, DbName, Hash, hash, hash_hex};

/// The partition key attribute (a string).
pub const HASH_KEY: &str = "hash_key";
/// The sort key attribute (a number).
pub const RANGE_KEY: &str = "range_key";
/// A sector's bytes, or a meta item's body (binary).
pub const ATTR_BODY: &str = "b";
/// A meta item's version (a number).
pub const ATTR_VERSION: &str = "v";
/// How a sector's body is encoded ([`CODEC_RAW`], [`CODEC_ZSTD`]); absent
/// means raw.
pub const ATTR_CODEC: &str = "c";
/// A catalog entry's database name (a string).
pub const ATTR_NAME: &str = "n";
/// Whose root a current root item is (a string): the database id in hex,
/// or [`HOLDS_NOTHING`] for a tombstone. A root swap's condition checks it
/// with the version (a name's versions restart once `gc` removed a
/// removed database). Absent on root items written before it existed.
pub const ATTR_HOLDS: &str = "d";
/// [`ATTR_HOLDS`] of a tombstone.
pub const HOLDS_NOTHING: &str = "-";
/// The partition key of the catalog's items.
pub const CATALOG_KEY: &str = "catalog";

/// A sector body stored as is.
pub const CODEC_RAW: u8 = 0;
/// A sector body compressed with zstd (stored only when smaller).
pub const CODEC_ZSTD: u8 = 1;

/// The partition key of database `name`'s root item.
pub fn root_key(name: &DbName) -> String {
    format!("r/{name}")
}

/// The partition key of database `name`'s lock item.
pub fn lock_key(name: &DbName) -> String {
    format!("l/{name}")
}

/// The partition key of database `name`'s GC state item.
pub fn gc_key(name: &DbName) -> String {
    format!("g/{name}")
}

/// The partition key of a family's item (`key`: `family::family_key`, the
/// database id in hex).
pub fn family_item_key(key: &DbName) -> String {
    format!("f/{key}")
}

/// The partition key of database `name`'s intent items (sort key:
/// `IntentKey::sort_number`).
pub fn intent_key(name: &DbName) -> String {
    format!("i/{name}")
}

/// The partition key of a sector of database `db` (sort key 0).
pub fn sector_key(db: DbId, sector: &Hash) -> String {
    format!("s/{}/{}", db.hex(), hash_hex(sector))
}

/// Length of [`sector_key`]: `s/`, 32 hex digits, `/`, 64 hex digits.
pub const SECTOR_KEY_BYTES: usize = 2 + 32 + 1 + 64;

/// A catalog entry's sort key: a 63-bit hash of the name (a DynamoDB
/// number), so the entries are one partition and `ls` is a Query.
pub fn catalog_range(name: &DbName) -> u64 {
    let h = hash(name.as_str().as_bytes());
    u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]) >> 1
}

/// What a sector item adds to its body, as DynamoDB sizes items (attribute
/// names plus values): the keys, the sort key's number, the codec.
pub const SECTOR_ITEM_OVERHEAD_BYTES: usize = HASH_KEY.len()
    + SECTOR_KEY_BYTES
    + RANGE_KEY.len()
    + 1
    + ATTR_CODEC.len()
    + 1
    + ATTR_BODY.len();

/// What a meta item adds to its body and its database name: the keys (the
/// `r/` or `l/` prefix), the sort key's number, the version attribute and
/// its number (≤ 8 bytes at the versions a database reaches).
pub const META_ITEM_OVERHEAD_BYTES: usize =
    HASH_KEY.len() + 2 + RANGE_KEY.len() + 1 + 8 + ATTR_BODY.len();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_what_docs_format_md_says() {
        let name = DbName::new("app.db").unwrap();
        assert_eq!(root_key(&name), "r/app.db");
        assert_eq!(lock_key(&name), "l/app.db");
        let key = sector_key(DbId([0xab; 16]), &[0xcd; 32]);
        assert_eq!(key.len(), SECTOR_KEY_BYTES);
        assert!(key.starts_with("s/abab") && key.ends_with("cdcd"));
        assert!(catalog_range(&name) < 1 << 63);
        // The billing model's figures (BENCHMARKS.md) were measured with these.
        assert_eq!(SECTOR_ITEM_OVERHEAD_BYTES, 8 + 99 + 9 + 1 + 1 + 1 + 1);
        assert_eq!(META_ITEM_OVERHEAD_BYTES, 8 + 2 + 9 + 1 + 8 + 1);
    }
}
