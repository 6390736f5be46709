//! The persistent sector cache: sectors kept in files under a directory, so
//! a new process finds what earlier ones read or wrote.
//!
//! Sectors are immutable and content-addressed, so an entry can never be
//! stale: it is either the sector's bytes or it is damaged, and a damaged
//! entry fails its hash check, is deleted and is read from storage again.
//! Layout, under the directory given (`DIR`):
//!
//! - `DIR/v1/<hh>/<db id hex><hash hex>`: one file per sector, its plain
//!   bytes; `<hh>` is the hash's first byte in hex (256 shards).
//! - `DIR/v1/<hh>/.tmp-<random>`: a write in progress. Entries are written
//!   to a temporary file and renamed into place, so a reader sees a whole
//!   entry or none; several processes may write the same entry at once (the
//!   bytes are the same). Nothing is synced: a torn file after a crash is
//!   damaged, and dropped when read.
//!
//! Entries are keyed by database id as well as hash, as storage keys
//! sectors: a cache shared by tenants answers a database only with sectors
//! of that database.
//!
//! **Bounded by bytes, least recently used out.** Each shard may hold
//! 1/256 of the bound. A read refreshes an entry's modification time (at
//! most every [`TOUCH_INTERVAL`]); a process that has written a quarter of
//! a shard's share since it last looked lists the shard and deletes its
//! oldest entries until it holds three quarters of its share. So a process
//! lists a shard once per quarter-share it writes, and many processes at
//! once can overshoot the bound by at most a quarter-share each.

use donut_format::{DbId, Hash};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Shards (subdirectories), by the hash's first byte.
pub const SHARDS: usize = 256;
/// The smallest bound a cache takes: 8 KiB a shard, so a shard keeps at
/// least one salted 4 KiB page (4,112 bytes) past an eviction to 3/4.
pub const DISK_CACHE_BYTES_MIN: u64 = 2 << 20;
/// The bound when none is given: 1 GiB.
pub const DISK_CACHE_BYTES_DEFAULT: u64 = 1 << 30;
/// A read refreshes an entry's time only when it is older than this, so a
/// hot entry costs one metadata write per interval, not one per read.
pub const TOUCH_INTERVAL: Duration = Duration::from_secs(600);
/// A temporary file older than this was left by a process that died.
const TEMP_AGE_MAX: Duration = Duration::from_secs(600);
/// The layout's directory: a new layout gets a new one.
const LAYOUT_DIR: &str = "v1";

/// Why the cache cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("sector cache {dir}: {source}")]
pub struct DiskCacheError {
    dir: String,
    #[source]
    source: std::io::Error,
}

/// What the cache did beyond answering (hits are counted by the caller,
/// `StorageStats::disk_cache_hits`).
#[derive(Debug, Default)]
pub struct DiskCacheCounters {
    pub writes: AtomicU64,
    /// Entries that failed their hash check and were deleted.
    pub corrupt_dropped: AtomicU64,
    /// Entries deleted to keep within the bound.
    pub evicted: AtomicU64,
}

/// A directory of sectors shared by the processes that use it.
pub struct DiskCache {
    dir: PathBuf,
    shard_bytes_max: u64,
    /// Bytes this process may still write into each shard before it lists
    /// it again.
    room: Mutex<Vec<i64>>,
    /// Set by the first failed write: the cache then only reads.
    write_failed: AtomicBool,
    first_write_error: Mutex<Option<String>>,
    pub counters: DiskCacheCounters,
}

impl DiskCache {
    /// Opens (creating) the cache in `dir`, bounded by `bytes_max` (at
    /// least [`DISK_CACHE_BYTES_MIN`]). Fails if the directory cannot be
    /// created or written: the caller runs without it.
    pub fn open(dir: &Path, bytes_max: u64) -> Result<DiskCache, DiskCacheError> {
        let root = dir.join(LAYOUT_DIR);
        let error = |source| DiskCacheError {
            dir: dir.display().to_string(),
            source,
        };
        fs::create_dir_all(&root).map_err(error)?;
        // Find out now, not at the first write, whether it can be written.
        let probe = root.join(format!(".probe-{:016x}", crate::random_u64()));
        fs::write(&probe, b"probe").map_err(error)?;
        let _ = fs::remove_file(&probe);
        let shard_bytes_max = bytes_max.max(DISK_CACHE_BYTES_MIN) / SHARDS as u64;
        Ok(DiskCache {
            dir: root,
            shard_bytes_max,
            room: Mutex::new(vec![(shard_bytes_max / 4) as i64; SHARDS]),
            write_failed: AtomicBool::new(false),
            first_write_error: Mutex::new(None),
            counters: DiskCacheCounters::default(),
        })
    }

    /// The bound, in bytes.
    pub fn bytes_max(&self) -> u64 {
        self.shard_bytes_max * SHARDS as u64
    }

    /// The first write that failed, if any (the cache stopped writing then).
    pub fn write_error(&self) -> Option<String> {
        lock(&self.first_write_error).clone()
    }

    fn shard_dir(&self, hash: &Hash) -> PathBuf {
        self.dir.join(format!("{:02x}", hash[0]))
    }

    fn entry_path(&self, db: &DbId, hash: &Hash) -> PathBuf {
        self.shard_dir(hash)
            .join(format!("{}{}", db.hex(), hex(hash)))
    }

    /// The sector, if cached and whole. A damaged entry is deleted.
    pub fn get(&self, db: &DbId, hash: &Hash) -> Option<Vec<u8>> {
        let path = self.entry_path(db, hash);
        let Ok(mut file) = fs::File::open(&path) else {
            return None;
        };
        let mut bytes = Vec::new();
        let read = std::io::Read::read_to_end(&mut file, &mut bytes);
        if read.is_err() || Sha256::digest(&bytes).as_slice() != hash {
            self.counters
                .corrupt_dropped
                .fetch_add(1, Ordering::Relaxed);
            let _ = fs::remove_file(&path);
            return None;
        }
        let now = SystemTime::now();
        let stale = file
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| now.duration_since(t).unwrap_or_default() > TOUCH_INTERVAL)
            .unwrap_or(false);
        if stale {
            let _ = file.set_modified(now);
        }
        Some(bytes)
    }

    /// Keeps `bytes` as the sector `hash` of `db`. The caller has verified
    /// the hash. Failures are remembered, not returned: a cache that cannot
    /// write still reads, and storage is still there.
    pub fn put(&self, db: &DbId, hash: &Hash, bytes: &[u8]) {
        debug_assert_eq!(Sha256::digest(bytes).as_slice(), hash);
        if self.write_failed.load(Ordering::Relaxed) {
            return;
        }
        let path = self.entry_path(db, hash);
        if path.exists() {
            return;
        }
        if let Err(e) = self.write_entry(&path, hash, bytes) {
            self.write_failed.store(true, Ordering::Relaxed);
            lock(&self.first_write_error).get_or_insert_with(|| e.to_string());
            return;
        }
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.spend_room(hash[0] as usize, bytes.len() as u64);
    }

    fn write_entry(&self, path: &Path, hash: &Hash, bytes: &[u8]) -> std::io::Result<()> {
        let shard = self.shard_dir(hash);
        let temp = shard.join(format!(".tmp-{:016x}", crate::random_u64()));
        let mut file = match fs::File::create_new(&temp) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(&shard)?;
                fs::File::create_new(&temp)?
            }
            Err(e) => return Err(e),
        };
        let written = file.write_all(bytes).and_then(|()| fs::rename(&temp, path));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }

    /// Counts `bytes` written into `shard`; past its room, lists the shard
    /// and evicts.
    fn spend_room(&self, shard: usize, bytes: u64) {
        {
            let mut room = lock(&self.room);
            room[shard] -= bytes as i64;
            if room[shard] >= 0 {
                return;
            }
            // One lister at a time per shard: the others see room again.
            room[shard] = i64::MAX / 2;
        }
        let held = self.evict(shard);
        let mut room = lock(&self.room);
        room[shard] = self.shard_bytes_max.saturating_sub(held) as i64;
    }

    /// Deletes the shard's oldest entries until it holds at most three
    /// quarters of its share, and temporary files left by dead processes.
    /// Returns the bytes it still holds.
    fn evict(&self, shard: usize) -> u64 {
        let dir = self.dir.join(format!("{shard:02x}"));
        let Ok(listing) = fs::read_dir(&dir) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut entries: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for entry in listing.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if entry.file_name().to_string_lossy().starts_with('.') {
                if now.duration_since(modified).unwrap_or_default() > TEMP_AGE_MAX {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            entries.push((modified, meta.len(), entry.path()));
        }
        let mut held: u64 = entries.iter().map(|e| e.1).sum();
        if held <= self.shard_bytes_max {
            return held;
        }
        let target = self.shard_bytes_max / 4 * 3;
        entries.sort_by_key(|e| e.0);
        for (_, len, path) in entries {
            if held <= target {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                self.counters.evicted.fetch_add(1, Ordering::Relaxed);
            }
            held = held.saturating_sub(len);
        }
        held
    }

    /// Bytes and entries in the cache now (lists every shard).
    pub fn usage(&self) -> (u64, u64) {
        let mut bytes = 0;
        let mut entries = 0;
        for shard in 0..SHARDS {
            let Ok(listing) = fs::read_dir(self.dir.join(format!("{shard:02x}"))) else {
                continue;
            };
            for entry in listing.flatten() {
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                if let Ok(meta) = entry.metadata() {
                    bytes += meta.len();
                    entries += 1;
                }
            }
        }
        (bytes, entries)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sector(i: u32, len: usize) -> (Hash, Vec<u8>) {
        let mut bytes: Vec<u8> = (0..len).map(|j| (j as u32 ^ i) as u8).collect();
        bytes[..4].copy_from_slice(&i.to_le_bytes()); // distinct for every i
        (donut_format::hash(&bytes), bytes)
    }

    fn db() -> DbId {
        DbId([7; 16])
    }

    #[test]
    fn an_entry_written_is_read_back_by_another_handle() {
        let dir = tempfile::tempdir().unwrap();
        let (hash, bytes) = sector(1, 4096);
        DiskCache::open(dir.path(), 64 << 20)
            .unwrap()
            .put(&db(), &hash, &bytes);
        let other = DiskCache::open(dir.path(), 64 << 20).unwrap();
        assert_eq!(other.get(&db(), &hash), Some(bytes));
        assert_eq!(other.get(&DbId([8; 16]), &hash), None);
    }

    #[test]
    fn a_damaged_entry_is_dropped_not_returned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 64 << 20).unwrap();
        let (hash, bytes) = sector(2, 4096);
        cache.put(&db(), &hash, &bytes);
        let path = cache.entry_path(&db(), &hash);
        let mut damaged = bytes.clone();
        damaged[100] ^= 1;
        fs::write(&path, &damaged).unwrap();
        assert_eq!(cache.get(&db(), &hash), None);
        assert!(!path.exists(), "the damaged entry was kept");
        assert_eq!(cache.counters.corrupt_dropped.load(Ordering::Relaxed), 1);
        // A torn (short) entry too.
        cache.put(&db(), &hash, &bytes);
        fs::write(&path, &bytes[..10]).unwrap();
        assert_eq!(cache.get(&db(), &hash), None);
    }

    #[test]
    fn the_cache_stays_within_its_bound_and_keeps_recent_entries() {
        let dir = tempfile::tempdir().unwrap();
        let bound = DISK_CACHE_BYTES_MIN * 2;
        let cache = DiskCache::open(dir.path(), bound).unwrap();
        let sectors: Vec<_> = (0..2000).map(|i| sector(i, 4096)).collect();
        for (hash, bytes) in &sectors {
            cache.put(&db(), hash, bytes);
        }
        // Another process keeps writing too.
        let other = DiskCache::open(dir.path(), bound).unwrap();
        for (hash, bytes) in (2000..2400).map(|i| sector(i, 4096)) {
            other.put(&db(), &hash, &bytes);
        }
        let (bytes, entries) = cache.usage();
        assert!(bytes <= bound + 2 * bound / 4, "{bytes} bytes over {bound}");
        assert!(entries > 0);
        assert!(cache.counters.evicted.load(Ordering::Relaxed) > 0);
        // The newest entries are there.
        let (hash, bytes) = sector(2399, 4096);
        assert_eq!(other.get(&db(), &hash), Some(bytes));
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        fs::write(&file, b"x").unwrap();
        let e = DiskCache::open(&file.join("cache"), 64 << 20)
            .err()
            .expect("opened a cache under a file");
        assert!(e.to_string().contains("a-file"), "{e}");
    }

    #[test]
    fn a_write_that_fails_stops_writing_and_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path(), 64 << 20).unwrap();
        // The layout directory replaced by a file: every write fails.
        fs::remove_dir_all(dir.path().join(LAYOUT_DIR)).unwrap();
        fs::write(dir.path().join(LAYOUT_DIR), b"x").unwrap();
        let (hash, bytes) = sector(3, 512);
        cache.put(&db(), &hash, &bytes);
        assert!(cache.write_error().is_some());
        assert_eq!(cache.get(&db(), &hash), None);
        cache.put(&db(), &hash, &bytes);
        assert_eq!(cache.counters.writes.load(Ordering::Relaxed), 0);
    }
}
