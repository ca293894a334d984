//! The core's notion of time: a point on the service clock, passed into every operation.
//!
//! The core never reads a clock. Callers (the registry, tests) hand it a [`Timestamp`], which
//! makes every transition reproducible and testable without sleeping.

use std::time::Duration;

/// Nanoseconds since the Unix epoch on the service clock.
///
/// Kept as a plain integer so that a breaker stays small and cheap to copy; the service clock
/// anchors it to the wall clock once at start-up and advances it monotonically from there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The epoch itself; useful as a starting point in tests.
    pub const ZERO: Timestamp = Timestamp(0);

    pub const fn from_unix_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    pub const fn as_unix_nanos(self) -> u64 {
        self.0
    }

    /// `self + duration`, saturating at the far future rather than wrapping.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }

    /// `self - duration`, saturating at the epoch.
    pub fn saturating_sub(self, duration: Duration) -> Self {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(nanos))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}
