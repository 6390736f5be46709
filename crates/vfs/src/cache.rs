//! The caches of immutable sectors a VFS's connections share, keyed by
//! (database id, content hash): they serve every connection and every
//! version.

use donut_format::lru::Lru;
use donut_format::{Chunk, DbId, Hash};
use std::rc::Rc;
use std::sync::Arc;

/// Page bytes kept per VFS.
pub const PAGE_CACHE_BYTES: usize = 32 << 20;
/// Manifest chunks kept per VFS.
pub const CHUNK_CACHE_BYTES: usize = 8 << 20;

pub struct Caches {
    pub pages: Lru<(DbId, Hash), Rc<[u8]>>,
    pub chunks: Lru<(DbId, Hash), Arc<Chunk>>,
}

impl Caches {
    pub fn new() -> Caches {
        Caches {
            pages: Lru::new(PAGE_CACHE_BYTES),
            chunks: Lru::new(CHUNK_CACHE_BYTES),
        }
    }
}
