//! The host-wide sector cache and version memory.

use crate::disk_cache::DiskCache;
use donut_format::lru::Lru;
use donut_format::{DbId, DbName, Hash};
use std::sync::Arc;

/// Sectors shared by every instance a host runs, keyed by (database id,
/// hash): verified once, never stale, bounded by bytes — in memory, and on
/// disk if given a [`DiskCache`] (shared with other processes). Beside
/// them, the newest root version of each database the host's instances
/// have read or committed ([`Versions`]).
pub struct SectorCache {
    lru: std::sync::Mutex<SectorLru>,
    /// The persistent tier, asked when memory misses.
    pub disk: Option<DiskCache>,
    /// The newest root versions the host's instances saw.
    pub versions: Versions,
}

type SectorLru = Lru<(DbId, Hash), Arc<[u8]>>;

impl SectorCache {
    pub fn new(limit_bytes: usize) -> Arc<SectorCache> {
        SectorCache::with_disk(limit_bytes, None)
    }

    /// A cache of `limit_bytes` in memory over `disk`.
    pub fn with_disk(limit_bytes: usize, disk: Option<DiskCache>) -> Arc<SectorCache> {
        Arc::new(SectorCache {
            lru: std::sync::Mutex::new(Lru::new(limit_bytes)),
            disk,
            versions: Versions::default(),
        })
    }

    pub fn lru(&self) -> std::sync::MutexGuard<'_, SectorLru> {
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fills `out` (one slot per hash) from memory, then disk; returns the
    /// indexes still missing and how many came from memory and from disk.
    /// What disk answers is kept in memory too.
    pub fn read(&self, db: DbId, hashes: &[Hash], out: &mut [Option<Vec<u8>>]) -> CacheRead {
        debug_assert_eq!(hashes.len(), out.len());
        let mut missing: Vec<usize> = Vec::new();
        {
            let mut lru = self.lru();
            for (i, h) in hashes.iter().enumerate() {
                match lru.get(&(db, *h)) {
                    Some(sector) => out[i] = Some(sector.to_vec()),
                    None => missing.push(i),
                }
            }
        }
        let memory_hits = hashes.len() - missing.len();
        let Some(disk) = &self.disk else {
            return CacheRead {
                missing,
                memory_hits,
                disk_hits: 0,
            };
        };
        // Disk is read without the memory tier's lock held.
        let before = missing.len();
        let mut from_disk = Vec::new();
        missing.retain(|&i| match disk.get(&db, &hashes[i]) {
            Some(sector) => {
                from_disk.push(i);
                out[i] = Some(sector);
                false
            }
            None => true,
        });
        let mut lru = self.lru();
        for i in from_disk {
            if let Some(sector) = &out[i] {
                lru.insert((db, hashes[i]), sector.as_slice().into(), sector.len());
            }
        }
        CacheRead {
            disk_hits: before - missing.len(),
            missing,
            memory_hits,
        }
    }

    /// Keeps verified sectors of `db` in memory, and on disk (which other
    /// processes share) if there is a disk tier.
    pub fn keep<'a>(&self, db: DbId, sectors: impl Iterator<Item = (&'a Hash, &'a [u8])>) {
        let sectors: Vec<_> = sectors.collect();
        {
            let mut lru = self.lru();
            for (hash, bytes) in &sectors {
                lru.insert((db, **hash), (*bytes).into(), bytes.len());
            }
        }
        // Disk is written without the memory tier's lock held.
        if let Some(disk) = &self.disk {
            for (hash, bytes) in sectors {
                disk.put(&db, hash, bytes);
            }
        }
    }
}

/// What [`SectorCache::read`] found.
pub struct CacheRead {
    /// Indexes of the hashes neither tier had.
    pub missing: Vec<usize>,
    pub memory_hits: usize,
    pub disk_hits: usize,
}

/// Most databases whose newest version [`Versions`] remembers.
const VERSIONS_MAX: usize = 100_000;

/// The newest root version seen of each database (by name and id: a fork
/// shares its source's id, and a name removed and created again gets a new
/// one): lets a guest tell whether a root it read a moment ago is still
/// the newest this host knows (`database.newest-version-seen`). Forgetting
/// is safe: it only makes the guest read the root again.
#[derive(Default)]
pub struct Versions(std::sync::Mutex<std::collections::HashMap<(DbId, DbName), u64>>);

impl Versions {
    pub fn saw(&self, db: DbId, name: &DbName, version: u64) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = (db, name.clone());
        if map.len() >= VERSIONS_MAX && !map.contains_key(&key) {
            map.clear();
        }
        let newest = map.entry(key).or_insert(0);
        *newest = (*newest).max(version);
    }

    pub fn newest(&self, db: DbId, name: &DbName) -> u64 {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(db, name.clone())).copied().unwrap_or(0)
    }
}
