//! Counters of storage calls made by guests. One guest call is one
//! sequential round trip as the guest sees it (the host may split it into
//! several concurrent backend requests).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Declares every counter once: the live [`StorageStats`] (atomics the
/// host bumps), its [`StatsSnapshot`] (plain numbers), and the arithmetic
/// between snapshots.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters of one instance's storage calls, or of several
        /// that share them.
        #[derive(Debug, Default)]
        pub struct StorageStats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of [`StorageStats`] at one moment; subtract two to get a
        /// delta.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl StorageStats {
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }

        impl StatsSnapshot {
            /// Field-by-field sum, for adding up several calls.
            pub fn plus(&self, other: &StatsSnapshot) -> StatsSnapshot {
                StatsSnapshot {
                    $($name: self.$name + other.$name,)*
                }
            }

            pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
                StatsSnapshot {
                    $($name: self.$name - earlier.$name,)*
                }
            }
        }
    };
}

counters! {
    read_root,
    /// Root compare-and-swaps attempted (including database creation).
    commit_root,
    commit_conflicts,
    /// Root swaps that waited first because the one before went unanswered.
    commit_backoffs,
    /// Calls that reached the backend (all-cached calls are not counted).
    get_sectors_calls,
    get_sectors_items,
    get_sectors_bytes,
    /// Sectors served by the host's shared cache (in memory).
    sector_cache_hits,
    /// Sectors served by the persistent sector cache (on disk).
    disk_cache_hits,
    put_sectors_calls,
    put_sectors_items,
    put_sectors_bytes,
    lock_calls,
    /// Leases renewed by the host (in the background or on a call), not
    /// counted as the guest's round trips.
    lease_renewals,
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
            "  get-sectors: {} calls, {} sectors, {} bytes ({} from the host cache, {} from the disk cache)",
            self.get_sectors_calls,
            self.get_sectors_items,
            self.get_sectors_bytes,
            self.sector_cache_hits,
            self.disk_cache_hits
        )?;
        writeln!(
            f,
            "  put-sectors: {} calls, {} sectors, {} bytes",
            self.put_sectors_calls, self.put_sectors_items, self.put_sectors_bytes
        )?;
        write!(f, "  lock:        {}", self.lock_calls)
    }
}

/// Requests by operation, capacity units and bytes, as DynamoDB bills
/// them: what the DynamoDB backend's answers reported (`--stats`), or what
/// the billing model (`Metered`) computed. One type for both.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RequestStats {
    pub requests: std::collections::BTreeMap<&'static str, u64>,
    pub read_capacity_units: f64,
    pub write_capacity_units: f64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Unprocessed keys or items that had to be sent again.
    pub unprocessed_retries: u64,
    /// Attempts the SDK sent, by operation: its own re-sends (throttling,
    /// a lost answer) included. AWS counts and bills each.
    pub attempts: std::collections::BTreeMap<String, u64>,
}

impl fmt::Display for RequestStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self.requests.values().sum();
        writeln!(f, "DynamoDB requests: {total}")?;
        for (op, n) in &self.requests {
            writeln!(f, "  {op:<15} {n}")?;
        }
        writeln!(
            f,
            "  capacity:       {:.1} RCU, {:.1} WCU",
            self.read_capacity_units, self.write_capacity_units
        )?;
        writeln!(
            f,
            "  bytes:          {} read, {} written",
            self.bytes_read, self.bytes_written
        )?;
        writeln!(f, "  unprocessed:    {} re-sent", self.unprocessed_retries)?;
        let attempts: u64 = self.attempts.values().sum();
        write!(
            f,
            "  SDK attempts:   {attempts} ({} re-sent by the SDK)",
            attempts.saturating_sub(total)
        )?;
        for (op, n) in &self.attempts {
            write!(f, "\n    {op:<13} {n}")?;
        }
        Ok(())
    }
}

impl RequestStats {
    /// What happened since `earlier`.
    pub fn since(&self, earlier: &RequestStats) -> RequestStats {
        let mut requests = self.requests.clone();
        for (op, n) in &earlier.requests {
            *requests.entry(op).or_default() -= n;
        }
        requests.retain(|_, n| *n > 0);
        let mut attempts = self.attempts.clone();
        for (op, n) in &earlier.attempts {
            *attempts.entry(op.clone()).or_default() -= n;
        }
        attempts.retain(|_, n| *n > 0);
        RequestStats {
            requests,
            read_capacity_units: self.read_capacity_units - earlier.read_capacity_units,
            write_capacity_units: self.write_capacity_units - earlier.write_capacity_units,
            bytes_read: self.bytes_read - earlier.bytes_read,
            bytes_written: self.bytes_written - earlier.bytes_written,
            unprocessed_retries: self.unprocessed_retries - earlier.unprocessed_retries,
            attempts,
        }
    }
}
