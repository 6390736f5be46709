//! The fields of SQLite's database header (the first 100 bytes of page 1;
//! <https://www.sqlite.org/fileformat2.html#the_database_header>) that
//! DonutDB reads: the VFS to size a commit, push to check a file.

use crate::validate_page_size;

/// Length of SQLite's database header.
pub const HEADER_BYTES: usize = 100;
/// The header string every SQLite database starts with.
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";

fn u32_at(page1: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([page1[at], page1[at + 1], page1[at + 2], page1[at + 3]])
}

/// The page size the header declares (offset 16, big-endian; 1 means
/// 65536), unchecked, if `page1` starts with the header string.
pub fn declared_page_size(page1: &[u8]) -> Option<u64> {
    if page1.len() < HEADER_BYTES || &page1[..MAGIC.len()] != MAGIC {
        return None;
    }
    let raw = u16::from_be_bytes([page1[16], page1[17]]) as u64;
    Some(if raw == 1 { 65536 } else { raw })
}

/// The page size the header declares, if there is a header and the size
/// is one SQLite allows.
pub fn page_size(page1: &[u8]) -> Option<u32> {
    declared_page_size(page1).and_then(|size| validate_page_size(size).ok())
}

/// The in-header database size in pages (offset 28), if valid: the
/// "version-valid-for" number (offset 92) must equal the change counter
/// (offset 24), or SQLite itself ignores it.
pub fn page_count(page1: &[u8]) -> Option<u32> {
    if page1.len() < HEADER_BYTES {
        return None;
    }
    let (counter, size, valid_for) = (u32_at(page1, 24), u32_at(page1, 28), u32_at(page1, 92));
    (size > 0 && counter == valid_for).then_some(size)
}

/// The file change counter (offset 24).
pub fn change_counter(page1: &[u8]) -> Option<u32> {
    (page1.len() >= HEADER_BYTES).then(|| u32_at(page1, 24))
}

/// True if the file format versions (offsets 18 and 19) say WAL mode.
pub fn wal_mode(page1: &[u8]) -> bool {
    page1.len() >= HEADER_BYTES && (page1[18] == 2 || page1[19] == 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_count_needs_a_valid_header() {
        let mut page = vec![0u8; 512];
        page[24..28].copy_from_slice(&7u32.to_be_bytes());
        page[28..32].copy_from_slice(&42u32.to_be_bytes());
        assert_eq!(page_count(&page), None, "version-valid-for differs");
        page[92..96].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(page_count(&page), Some(42));
        assert_eq!(page_count(&page[..50]), None);
    }

    #[test]
    fn page_size_reads_one_as_65536_and_refuses_what_sqlite_would() {
        let mut page = vec![0u8; 100];
        assert_eq!(page_size(&page), None, "no header string");
        page[..16].copy_from_slice(MAGIC);
        page[16..18].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(page_size(&page), Some(65536));
        page[16..18].copy_from_slice(&4096u16.to_be_bytes());
        assert_eq!(page_size(&page), Some(4096));
        page[16..18].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(declared_page_size(&page), Some(1000));
        assert_eq!(page_size(&page), None, "not a power of two");
    }
}
