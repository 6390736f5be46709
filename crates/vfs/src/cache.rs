//! The caches of immutable sectors a VFS's connections share, keyed by
//! (database id, content hash): they serve every connection and every
//! version.

use donut_format::lru::Lru;
use donut_format::{Chunk, DbId, Hash};
use std::rc::Rc;
use std::sync::Arc;

use crate::memory::{CACHE_ENTRY_OVERHEAD_BYTES, MemoryPlan};

pub struct Caches {
    pub pages: Lru<(DbId, Hash), Rc<[u8]>>,
    pub chunks: Lru<(DbId, Hash), Arc<Chunk>>,
}

impl Caches {
    /// Caches of the sizes `plan` gives them.
    pub fn new(plan: &MemoryPlan) -> Caches {
        Caches {
            pages: Lru::new(plan.page_cache_bytes),
            chunks: Lru::new(plan.chunk_cache_bytes),
        }
    }

    /// Keeps a page, charged with what its entry costs besides its bytes.
    pub fn insert_page(&mut self, db: DbId, page_hash: Hash, page: Rc<[u8]>) {
        let charged_bytes = page.len() + CACHE_ENTRY_OVERHEAD_BYTES;
        self.pages.insert((db, page_hash), page, charged_bytes);
    }
}
