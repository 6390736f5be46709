//! The instance's caches of immutable sectors, keyed by (database id,
//! content hash): they serve every connection and every version.

use donut_format::lru::Lru;
use donut_format::{Chunk, DbId, Hash};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

/// Page bytes kept per instance.
pub const PAGE_CACHE_BYTES: usize = 32 << 20;
/// Manifest chunks kept per instance.
pub const CHUNK_CACHE_BYTES: usize = 8 << 20;

pub struct Caches {
    pub pages: Lru<(DbId, Hash), Rc<[u8]>>,
    pub chunks: Lru<(DbId, Hash), Arc<Chunk>>,
}

thread_local! {
    static CACHES: RefCell<Caches> = RefCell::new(Caches {
        pages: Lru::new(PAGE_CACHE_BYTES),
        chunks: Lru::new(CHUNK_CACHE_BYTES),
    });
}

pub fn with<R>(f: impl FnOnce(&mut Caches) -> R) -> R {
    CACHES.with(|c| f(&mut c.borrow_mut()))
}
