//! The service clock: the only place that reads time for the breakers.
//!
//! [`SystemClock`] anchors the kernel's monotonic clock to the wall clock once at start-up, so
//! timestamps are wall-clock meaningful (events, `opened_at`) yet never go backwards while the
//! process runs. [`ManualClock`] is moved by hand in tests.
//!
//! What holds under steps of the wall clock (an NTP step, an operator's `date -s`):
//! - **While running**, every duration (an open period, a probe's lease, a timed trip) is
//!   measured on the monotonic clock: a step in either direction changes none of them. The
//!   timestamps the service writes then differ from the host's wall clock by the step;
//!   [`SystemClock::offset`] says by how much, and the server logs it.
//! - **Across a restart**, stored instants (`recovery_at`, probe expiries, a trip's `until`)
//!   are compared with the new process's anchor, so time spent down counts. A clock that went
//!   backwards makes what is left of each period longer, never shorter. A clock that went
//!   forwards by Δ shortens each by up to Δ: an OPEN breaker is then due at once, and recovery
//!   is still tested through HALF_OPEN probes, never skipped; a timed trip ends up to Δ early
//!   and is then tested the same way; a trip without `until` is held whatever the clock does.

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

    /// How far the host's wall clock is from this clock, in nanoseconds, where that means
    /// anything (not for a hand-moved clock).
    fn wall_offset(&self) -> Option<i128> {
        None
    }
}

/// Where a [`SystemClock`] reads time: the kernel, or a test's hand.
pub trait TimeSource: Send + Sync + 'static {
    /// The wall clock, since the Unix epoch.
    fn wall(&self) -> Duration;
    /// A monotonic clock, in nanoseconds.
    fn precise(&self) -> u64;
    /// The same monotonic clock, possibly a few milliseconds behind and never ahead.
    fn coarse(&self) -> u64 {
        self.precise()
    }
}

/// The kernel's clocks.
#[derive(Debug, Default)]
pub struct Kernel;

impl TimeSource for Kernel {
    fn wall(&self) -> Duration {
        // A wall clock before 1970 is a broken host; time then starts at the epoch.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }

    #[inline]
    fn precise(&self) -> u64 {
        monotonic::precise()
    }

    #[inline]
    fn coarse(&self) -> u64 {
        monotonic::coarse()
    }
}

#[derive(Debug)]
pub struct SystemClock<S: TimeSource = Kernel> {
    source: S,
    /// The wall clock at `start`, in nanoseconds since the Unix epoch.
    wall_at_start: Timestamp,
    /// The monotonic clock at start-up, in nanoseconds.
    start: u64,
}

impl SystemClock {
    pub fn new() -> Self {
        SystemClock::with_source(Kernel)
    }
}

impl<S: TimeSource> SystemClock<S> {
    /// A clock anchored now to `source`'s wall clock.
    pub fn with_source(source: S) -> Self {
        let start = source.precise();
        let wall_at_start = Timestamp::ZERO.saturating_add(source.wall());
        SystemClock {
            source,
            wall_at_start,
            start,
        }
    }

    fn since_start(&self, monotonic: u64) -> Timestamp {
        self.wall_at_start
            .saturating_add(Duration::from_nanos(monotonic.saturating_sub(self.start)))
    }

    /// How far the host's wall clock is from this clock, in nanoseconds (positive: the wall
    /// clock is ahead): the sum of the steps since start-up, plus drift between the two.
    pub fn offset(&self) -> i128 {
        let wall = self.source.wall().as_nanos() as i128;
        wall - self.since_start(self.source.precise()).as_unix_nanos() as i128
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: TimeSource> Clock for SystemClock<S> {
    #[inline]
    fn now(&self) -> Timestamp {
        self.since_start(self.source.precise())
    }

    #[inline]
    fn recent(&self) -> Timestamp {
        self.since_start(self.source.coarse())
    }

    fn wall_offset(&self) -> Option<i128> {
        Some(self.offset())
    }
}

/// Nanoseconds on the clock that a cluster leader's fence is measured on: the kernel's boot
/// clock, which, unlike the monotonic clock, keeps counting while the machine is suspended (a
/// paused virtual machine must come back past its fence, not before it).
pub fn fence_clock_nanos() -> u64 {
    monotonic::boottime()
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
    pub(super) fn boottime() -> u64 {
        nanos(clock_gettime(ClockId::Boottime))
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    pub(super) fn boottime() -> u64 {
        precise()
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
    use std::sync::atomic::AtomicI64;
    use std::sync::Arc;

    use super::*;

    /// Clocks a test steps by hand: the wall clock jumps, the monotonic one only advances.
    #[derive(Debug, Default)]
    struct Stepped {
        wall_step: AtomicI64,
        monotonic: AtomicU64,
    }

    const START: Duration = Duration::from_secs(1_800_000_000);

    impl TimeSource for Stepped {
        fn wall(&self) -> Duration {
            let elapsed = Duration::from_nanos(self.monotonic.load(Ordering::SeqCst));
            let step = self.wall_step.load(Ordering::SeqCst);
            let wall = START + elapsed;
            if step >= 0 {
                wall + Duration::from_secs(step as u64)
            } else {
                wall.saturating_sub(Duration::from_secs(step.unsigned_abs()))
            }
        }

        fn precise(&self) -> u64 {
            self.monotonic.load(Ordering::SeqCst)
        }
    }

    impl TimeSource for Arc<Stepped> {
        fn wall(&self) -> Duration {
            (**self).wall()
        }

        fn precise(&self) -> u64 {
            (**self).precise()
        }
    }

    #[test]
    fn steps_of_the_wall_clock_while_running_change_no_duration_and_are_reported() {
        let source = Arc::new(Stepped::default());
        let clock = SystemClock::with_source(source.clone());
        let opened = clock.now();
        assert_eq!(opened, Timestamp::ZERO.saturating_add(START));
        assert_eq!(clock.offset(), 0);
        for step in [3600i64, -7200, 86_400 * 365] {
            source.wall_step.store(step, Ordering::SeqCst);
            source.monotonic.fetch_add(1_000_000_000, Ordering::SeqCst);
            let now = clock.now();
            assert!(now >= opened, "time went backwards on a step of {step} s");
            // Only the monotonic second passed, whatever the wall clock did.
            let elapsed = source.monotonic.load(Ordering::SeqCst) / 1_000_000_000;
            assert_eq!(now.saturating_duration_since(opened).as_secs(), elapsed);
            assert_eq!(clock.offset(), i128::from(step) * 1_000_000_000);
        }
    }

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
