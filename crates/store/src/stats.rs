//! Counters of storage calls made by guests. One guest call is one
//! sequential round trip as the guest sees it (the host may split it into
//! several concurrent backend requests).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct StorageStats {
    pub read_root: AtomicU64,
    /// Root compare-and-swaps attempted (including database creation).
    pub commit_root: AtomicU64,
    pub commit_conflicts: AtomicU64,
    /// Root swaps that waited first because the one before went unanswered.
    pub commit_backoffs: AtomicU64,
    /// Calls that reached the backend (all-cached calls are not counted).
    pub get_sectors_calls: AtomicU64,
    pub get_sectors_items: AtomicU64,
    pub get_sectors_bytes: AtomicU64,
    /// Sectors served by the host's shared cache.
    pub sector_cache_hits: AtomicU64,
    pub put_sectors_calls: AtomicU64,
    pub put_sectors_items: AtomicU64,
    pub put_sectors_bytes: AtomicU64,
    pub lock_calls: AtomicU64,
    /// Leases renewed by the host (in the background or on a call), not
    /// counted as the guest's round trips.
    pub lease_renewals: AtomicU64,
}

/// A copy of [`StorageStats`] at one moment; subtract two to get a delta.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub read_root: u64,
    pub commit_root: u64,
    pub commit_conflicts: u64,
    pub commit_backoffs: u64,
    pub get_sectors_calls: u64,
    pub get_sectors_items: u64,
    pub get_sectors_bytes: u64,
    pub sector_cache_hits: u64,
    pub put_sectors_calls: u64,
    pub put_sectors_items: u64,
    pub put_sectors_bytes: u64,
    pub lock_calls: u64,
    pub lease_renewals: u64,
}

impl StorageStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            read_root: get(&self.read_root),
            commit_root: get(&self.commit_root),
            commit_conflicts: get(&self.commit_conflicts),
            commit_backoffs: get(&self.commit_backoffs),
            get_sectors_calls: get(&self.get_sectors_calls),
            get_sectors_items: get(&self.get_sectors_items),
            get_sectors_bytes: get(&self.get_sectors_bytes),
            sector_cache_hits: get(&self.sector_cache_hits),
            put_sectors_calls: get(&self.put_sectors_calls),
            put_sectors_items: get(&self.put_sectors_items),
            put_sectors_bytes: get(&self.put_sectors_bytes),
            lock_calls: get(&self.lock_calls),
            lease_renewals: get(&self.lease_renewals),
        }
    }
}

impl StatsSnapshot {
    /// Storage calls, each one sequential round trip for the guest.
    pub fn round_trips(&self) -> u64 {
        self.read_root
            + self.commit_root
            + self.get_sectors_calls
            + self.put_sectors_calls
            + self.lock_calls
    }

    /// Field-by-field sum, for adding up several calls.
    pub fn plus(&self, other: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            read_root: self.read_root + other.read_root,
            commit_root: self.commit_root + other.commit_root,
            commit_conflicts: self.commit_conflicts + other.commit_conflicts,
            commit_backoffs: self.commit_backoffs + other.commit_backoffs,
            get_sectors_calls: self.get_sectors_calls + other.get_sectors_calls,
            get_sectors_items: self.get_sectors_items + other.get_sectors_items,
            get_sectors_bytes: self.get_sectors_bytes + other.get_sectors_bytes,
            sector_cache_hits: self.sector_cache_hits + other.sector_cache_hits,
            put_sectors_calls: self.put_sectors_calls + other.put_sectors_calls,
            put_sectors_items: self.put_sectors_items + other.put_sectors_items,
            put_sectors_bytes: self.put_sectors_bytes + other.put_sectors_bytes,
            lock_calls: self.lock_calls + other.lock_calls,
            lease_renewals: self.lease_renewals + other.lease_renewals,
        }
    }

    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            read_root: self.read_root - earlier.read_root,
            commit_root: self.commit_root - earlier.commit_root,
            commit_conflicts: self.commit_conflicts - earlier.commit_conflicts,
            commit_backoffs: self.commit_backoffs - earlier.commit_backoffs,
            get_sectors_calls: self.get_sectors_calls - earlier.get_sectors_calls,
            get_sectors_items: self.get_sectors_items - earlier.get_sectors_items,
            get_sectors_bytes: self.get_sectors_bytes - earlier.get_sectors_bytes,
            sector_cache_hits: self.sector_cache_hits - earlier.sector_cache_hits,
            put_sectors_calls: self.put_sectors_calls - earlier.put_sectors_calls,
            put_sectors_items: self.put_sectors_items - earlier.put_sectors_items,
            put_sectors_bytes: self.put_sectors_bytes - earlier.put_sectors_bytes,
            lock_calls: self.lock_calls - earlier.lock_calls,
            lease_renewals: self.lease_renewals - earlier.lease_renewals,
        }
    }
}

impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "storage calls (round trips): {}", self.round_trips())?;
        writeln!(f, "  read-root:   {}", self.read_root)?;
        writeln!(
            f,
            "  commit-root: {} ({} conflicts, {} after a backoff)",
            self.commit_root, self.commit_conflicts, self.commit_backoffs
        )?;
        writeln!(
            f,
            "  get-sectors: {} calls, {} sectors, {} bytes ({} from the host cache)",
            self.get_sectors_calls,
            self.get_sectors_items,
            self.get_sectors_bytes,
            self.sector_cache_hits
        )?;
        writeln!(
            f,
            "  put-sectors: {} calls, {} sectors, {} bytes",
            self.put_sectors_calls, self.put_sectors_items, self.put_sectors_bytes
        )?;
        write!(f, "  lock:        {}", self.lock_calls)
    }
}
