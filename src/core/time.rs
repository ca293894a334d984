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

/// A duration the way an operator reads it: `250ms`, `4.5s`, `5m`, `4m12s`, `2h3m`.
pub fn human_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    let secs = duration.as_secs();
    if millis < 1_000 {
        format!("{millis}ms")
    } else if secs < 60 {
        let tenths = millis / 100;
        if tenths.is_multiple_of(10) {
            format!("{secs}s")
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else if secs < 3_600 {
        match secs % 60 {
            0 => format!("{}m", secs / 60),
            s => format!("{}m{s}s", secs / 60),
        }
    } else {
        match (secs % 3_600) / 60 {
            0 => format!("{}h", secs / 3_600),
            m => format!("{}h{m}m", secs / 3_600),
        }
    }
}

#[cfg(test)]
mod human_tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_millis(4_500)), "4.5s");
        assert_eq!(human_duration(Duration::from_secs(30)), "30s");
        assert_eq!(human_duration(Duration::from_secs(300)), "5m");
        assert_eq!(human_duration(Duration::from_secs(252)), "4m12s");
        assert_eq!(human_duration(Duration::from_secs(7_380)), "2h3m");
    }
}
