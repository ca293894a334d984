//! The service clock: the only place that reads time for the breakers.
//!
//! [`SystemClock`] anchors a monotonic clock to the wall clock once at start-up, so timestamps
//! are wall-clock meaningful (events, `opened_at`) yet never go backwards while the process runs.
//! [`ManualClock`] is moved by hand in tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::core::Timestamp;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

#[derive(Debug)]
pub struct SystemClock {
    /// The wall clock at `start`, in nanoseconds since the Unix epoch.
    wall_at_start: Timestamp,
    start: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        // A wall clock before 1970 is a broken host; time then starts at the epoch.
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        SystemClock {
            wall_at_start: Timestamp::ZERO.saturating_add(since_epoch),
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        self.wall_at_start.saturating_add(self.start.elapsed())
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    pub fn starting_at(at: Timestamp) -> Self {
        ManualClock {
            nanos: AtomicU64::new(at.as_unix_nanos()),
        }
    }

    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_nanos(self.nanos.load(Ordering::SeqCst))
    }
}
