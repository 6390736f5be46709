//! Bytes-bounded caches of immutable sectors, keyed by content hash. A hash
//! names one content forever, so an entry is never stale: the caches live for
//! the whole instance and serve every connection and every version.

use donut_format::{Chunk, DbId, Hash};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// Page bytes kept per instance.
pub const PAGE_CACHE_BYTES: usize = 32 << 20;
/// Manifest chunks kept per instance.
pub const CHUNK_CACHE_BYTES: usize = 8 << 20;

/// A least-recently-used map bounded by the bytes of its values.
pub struct Lru<V> {
    entries: HashMap<(DbId, Hash), (V, usize, u64)>,
    bytes: usize,
    limit_bytes: usize,
    tick: u64,
}

impl<V: Clone> Lru<V> {
    pub fn new(limit_bytes: usize) -> Self {
        Lru {
            entries: HashMap::new(),
            bytes: 0,
            limit_bytes,
            tick: 0,
        }
    }

    pub fn get(&mut self, db: DbId, hash: &Hash) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(&(db, *hash)).map(|entry| {
            entry.2 = tick;
            entry.0.clone()
        })
    }

    pub fn insert(&mut self, db: DbId, hash: Hash, value: V, size: usize) {
        self.tick += 1;
        if let Some(old) = self.entries.insert((db, hash), (value, size, self.tick)) {
            self.bytes -= old.1;
        }
        self.bytes += size;
        if self.bytes > self.limit_bytes {
            self.evict();
        }
    }

    /// Drops the oldest entries down to 3/4 of the limit, so eviction's sort
    /// is paid once per quarter of the cache.
    fn evict(&mut self) {
        let target = self.limit_bytes / 4 * 3;
        let mut by_age: Vec<((DbId, Hash), usize, u64)> =
            self.entries.iter().map(|(k, v)| (*k, v.1, v.2)).collect();
        by_age.sort_unstable_by_key(|e| e.2);
        for (key, size, _) in by_age {
            if self.bytes <= target {
                break;
            }
            self.entries.remove(&key);
            self.bytes -= size;
        }
    }
}

pub struct Caches {
    pub pages: Lru<Rc<[u8]>>,
    pub chunks: Lru<Arc<Chunk>>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_first() {
        let db = DbId([0; 16]);
        let mut lru = Lru::new(100);
        for i in 0..10u8 {
            lru.insert(db, [i; 32], i, 10);
        }
        assert!(lru.get(db, &[0; 32]).is_some()); // touch the oldest
        lru.insert(db, [10; 32], 10, 10); // over the limit: evict to 75
        assert!(lru.get(db, &[0; 32]).is_some(), "recently used survives");
        assert!(lru.get(db, &[1; 32]).is_none(), "least recently used goes");
        assert!(lru.bytes <= 100);
    }
}
