//! A least-recently-used map bounded by the bytes of its values, for caches
//! of immutable sectors (the guest's per-instance cache and the host's
//! shared one). A content hash names one content forever, so entries are
//! never stale; only space evicts them.

use std::collections::HashMap;
use std::hash::Hash as StdHash;

pub struct Lru<K, V> {
    entries: HashMap<K, (V, usize, u64)>,
    bytes: usize,
    limit_bytes: usize,
    tick: u64,
}

impl<K: StdHash + Eq + Clone, V: Clone> Lru<K, V> {
    pub fn new(limit_bytes: usize) -> Self {
        Lru {
            entries: HashMap::new(),
            bytes: 0,
            limit_bytes,
            tick: 0,
        }
    }

    pub fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|entry| {
            entry.2 = tick;
            entry.0.clone()
        })
    }

    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    pub fn insert(&mut self, key: K, value: V, size: usize) {
        self.tick += 1;
        if let Some(old) = self.entries.insert(key, (value, size, self.tick)) {
            self.bytes -= old.1;
        }
        self.bytes += size;
        if self.bytes > self.limit_bytes {
            self.evict();
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops the oldest entries down to 3/4 of the limit, so eviction's sort
    /// is paid once per quarter of the cache.
    fn evict(&mut self) {
        let target = self.limit_bytes / 4 * 3;
        let mut by_age: Vec<(K, usize, u64)> = self
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), v.1, v.2))
            .collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_first() {
        let mut lru = Lru::new(100);
        for i in 0..10u8 {
            lru.insert(i, i, 10);
        }
        assert!(lru.get(&0).is_some()); // touch the oldest
        lru.insert(10, 10, 10); // over the limit: evict to 75
        assert!(lru.get(&0).is_some(), "recently used survives");
        assert!(lru.get(&1).is_none(), "least recently used goes");
        assert!(lru.bytes() <= 100);
    }
}
