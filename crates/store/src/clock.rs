//! Wall-clock time for leases and pauses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Wall-clock time for leases: the system clock, or one a test moves.
#[derive(Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<AtomicU64>),
    /// A manual clock read with a fixed skew, as a host whose clock runs
    /// ahead (positive) or behind: the simulator gives each client one.
    Skewed(Arc<AtomicU64>, i64),
}

impl Clock {
    /// Waits `ms` on the system clock; a manual clock's time is moved by
    /// whoever owns it (the simulator), so it does not wait.
    pub async fn pause(&self, ms: u64) {
        if let Clock::System = self {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }

    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            Clock::Manual(ms) => ms.load(Ordering::SeqCst),
            Clock::Skewed(ms, skew_ms) => ms.load(Ordering::SeqCst).saturating_add_signed(*skew_ms),
        }
    }
}
