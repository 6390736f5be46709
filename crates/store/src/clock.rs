//! Wall-clock time for leases and pauses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Wall-clock time for leases: the system clock, or virtual time that a
/// test or the simulator moves.
#[derive(Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// Virtual time; pauses do not wait (whoever moves the time decides).
    /// A shared `AtomicU64` of milliseconds is one; the simulator also
    /// reads it with a skew per client, as hosts whose clocks disagree.
    Virtual(Arc<dyn VirtualTime>),
}

/// A source of virtual time, in milliseconds since the Unix epoch.
pub trait VirtualTime: Send + Sync {
    fn now_ms(&self) -> u64;
}

impl VirtualTime for AtomicU64 {
    fn now_ms(&self) -> u64 {
        self.load(Ordering::SeqCst)
    }
}

impl Clock {
    /// Waits `ms` on the system clock; virtual time is moved by whoever
    /// owns it (the simulator), so it does not wait.
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
            Clock::Virtual(time) => time.now_ms(),
        }
    }
}
