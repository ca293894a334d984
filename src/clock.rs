//! The service clock: the only place that reads time for the breakers.
//!
//! [`SystemClock`] anchors a monotonic clock to the wall clock once at start-up, so timestamps
//! are wall-clock meaningful (events, `opened_at`) yet never go backwards while the process runs.
//! [`ManualClock`] is moved by hand in tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::Timestamp;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// A cheaper reading that may lag [`Clock::now`] by a few milliseconds, and is never ahead
    /// of it: for answers that read time but record nothing with it (a check of a CLOSED
    /// breaker counts its failures in the window).
    fn recent(&self) -> Timestamp {
        self.now()
    }
}

#[derive(Debug)]
pub struct SystemClock {
    /// The wall clock at `start`, in nanoseconds since the Unix epoch.
    wall_at_start: Timestamp,
    /// The monotonic clock at start-up, in nanoseconds.
    start: u64,
}

impl SystemClock {
    pub fn new() -> Self {
        let start = monotonic::precise();
        // A wall clock before 1970 is a broken host; time then starts at the epoch.
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        SystemClock {
            wall_at_start: Timestamp::ZERO.saturating_add(since_epoch),
            start,
        }
    }

    fn since_start(&self, monotonic: u64) -> Timestamp {
        self.wall_at_start
            .saturating_add(Duration::from_nanos(monotonic.saturating_sub(self.start)))
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        self.since_start(monotonic::precise())
    }

    fn recent(&self) -> Timestamp {
        self.since_start(monotonic::coarse())
    }
}

/// The kernel's monotonic clock, in nanoseconds. The coarse reading is the same clock as of the
/// last timer tick (1-4 ms old, never ahead): it costs a quarter of a precise one on a
/// virtual machine, where reading the time-stamp counter is slow.
mod monotonic {
    use rustix::time::{clock_gettime, ClockId, Timespec};

    pub(super) fn precise() -> u64 {
        nanos(clock_gettime(ClockId::Monotonic))
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    pub(super) fn coarse() -> u64 {
        nanos(clock_gettime(ClockId::MonotonicCoarse))
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) fn coarse() -> u64 {
        precise()
    }

    fn nanos(time: Timespec) -> u64 {
        let seconds = u64::try_from(time.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(time.tv_nsec).unwrap_or(0);
        seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_readings_never_run_ahead_and_neither_reading_goes_back() {
        let clock = SystemClock::new();
        let (mut last_now, mut last_recent) = (Timestamp::ZERO, Timestamp::ZERO);
        for _ in 0..100_000 {
            let recent = clock.recent();
            let now = clock.now();
            assert!(recent <= now, "{recent:?} > {now:?}");
            assert!(now >= last_now && recent >= last_recent);
            (last_now, last_recent) = (now, recent);
        }
    }
}
