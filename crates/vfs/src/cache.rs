//! The caches of immutable sectors a VFS's connections share, keyed by
//! (database id, content hash): they serve every connection and every
//! version.

use donut_format::lru::Lru;
use donut_format::{Chunk, DbId, Hash};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::memory::{CACHE_ENTRY_OVERHEAD_BYTES, MemoryPlan};

pub struct Caches {
    pub pages: Lru<(DbId, Hash), Rc<[u8]>>,
    pub chunks: Lru<(DbId, Hash), Arc<Chunk>>,
    /// A fingerprint of every page fetched or written, kept longer than
    /// the pages: a commit tells a page SQLite wrote back unchanged (a
    /// rollback's playback) from a changed one without its bytes, since
    /// salted keys differ even for the same bytes.
    fingerprints: HashMap<(DbId, Hash), u64>,
}

/// Most fingerprints kept (~3.5 MiB; 256 MiB of 4 KiB pages); all are
/// dropped when full.
const FINGERPRINTS_MAX: usize = 1 << 16;

impl Caches {
    /// Caches of the sizes `plan` gives them.
    pub fn new(plan: &MemoryPlan) -> Caches {
        Caches {
            pages: Lru::new(plan.page_cache_bytes),
            chunks: Lru::new(plan.chunk_cache_bytes),
            fingerprints: HashMap::new(),
        }
    }

    /// Remembers the fingerprint of page `page_hash`'s bytes.
    pub fn note_page(&mut self, db: DbId, page_hash: Hash, page: &[u8]) {
        if self.fingerprints.len() >= FINGERPRINTS_MAX {
            self.fingerprints.clear();
        }
        self.fingerprints.insert((db, page_hash), fingerprint(page));
    }

    /// Is `page` the bytes stored as `page_hash`? `Some(true)`: equal
    /// (cached); `Some(false)`: different, or nothing is known of them;
    /// `None`: the fingerprints match (compare the stored bytes).
    pub fn same_page(&mut self, db: DbId, page_hash: &Hash, page: &[u8]) -> Option<bool> {
        if let Some(cached) = self.pages.get(&(db, *page_hash)) {
            return Some(cached[..] == page[..]);
        }
        match self.fingerprints.get(&(db, *page_hash)) {
            Some(&known) if known == fingerprint(page) => None,
            _ => Some(false),
        }
    }

    /// Keeps a page, charged with what its entry costs besides its bytes.
    pub fn insert_page(&mut self, db: DbId, page_hash: Hash, page: Rc<[u8]>) {
        let charged_bytes = page.len() + CACHE_ENTRY_OVERHEAD_BYTES;
        self.note_page(db, page_hash, &page);
        self.pages.insert((db, page_hash), page, charged_bytes);
    }
}

/// A fast 64-bit fingerprint of a page (not a content hash: equal
/// fingerprints still need a comparison of the bytes).
fn fingerprint(page: &[u8]) -> u64 {
    let mut h: u64 = page.len() as u64;
    let mut words = page.chunks_exact(8);
    for word in &mut words {
        let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 29;
    }
    for &b in words.remainder() {
        h = (h ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    h
}
