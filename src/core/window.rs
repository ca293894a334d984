//! The outcome counts behind the rate rules: a time window cut into buckets, so that an
//! account's memory stays the same however many outcomes it reports.
//!
//! The window covers between `BUCKETS - 1` and `BUCKETS` bucket widths of the most recent
//! outcomes (an outcome leaves it when its whole bucket has), the way resilience4j's
//! time-based sliding window does.

use std::time::Duration;

use super::time::Timestamp;

/// Buckets a window is cut into.
pub const BUCKETS: usize = 10;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

/// Outcome counts over the failure window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateWindow {
    /// The bucket width the counts were taken with, in nanoseconds.
    pub width: u64,
    /// The index (time / width) of the newest bucket.
    pub newest: u64,
    pub buckets: [Bucket; BUCKETS],
}

impl RateWindow {
    /// The width of one bucket of a window of `window`.
    pub fn width_for(window: Duration) -> u64 {
        u64::try_from(window.as_nanos() / BUCKETS as u128)
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Adds one outcome at `now`.
    pub fn add(&mut self, window: Duration, now: Timestamp, failed: bool, slow: bool) {
        self.advance(window, now);
        let bucket = &mut self.buckets[(self.newest % BUCKETS as u64) as usize];
        bucket.calls = bucket.calls.saturating_add(1);
        bucket.failures = bucket.failures.saturating_add(u32::from(failed));
        bucket.slow = bucket.slow.saturating_add(u32::from(slow));
    }

    /// The totals over the window at `now`.
    pub fn totals(&self, window: Duration, now: Timestamp) -> Bucket {
        let mut view = self.clone();
        view.advance(window, now);
        view.buckets
            .iter()
            .fold(Bucket::default(), |sum, b| Bucket {
                calls: sum.calls.saturating_add(b.calls),
                failures: sum.failures.saturating_add(b.failures),
                slow: sum.slow.saturating_add(b.slow),
            })
    }

    /// Drops the buckets that left the window by `now`; all of them if the width changed.
    fn advance(&mut self, window: Duration, now: Timestamp) {
        let width = Self::width_for(window);
        let index = now.as_unix_nanos() / width;
        if width != self.width {
            *self = RateWindow {
                width,
                newest: index,
                ..RateWindow::default()
            };
            return;
        }
        if index <= self.newest {
            // Time never runs backwards under the registry's lock; a record from a clock that
            // did counts in the newest bucket.
            return;
        }
        let stale = (index - self.newest).min(BUCKETS as u64);
        for step in 1..=stale {
            self.buckets[((self.newest + step) % BUCKETS as u64) as usize] = Bucket::default();
        }
        self.newest = index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + secs * 1_000_000_000)
    }

    #[test]
    fn outcomes_leave_the_window_with_their_bucket() {
        let window = Duration::from_secs(10);
        let mut w = RateWindow::default();
        w.add(window, at(0), true, false);
        w.add(window, at(5), false, true);
        let t = w.totals(window, at(9));
        assert_eq!((t.calls, t.failures, t.slow), (2, 1, 1));
        // The bucket of t=0 is dropped once ten newer buckets have started.
        let t = w.totals(window, at(10));
        assert_eq!((t.calls, t.failures, t.slow), (1, 0, 1));
        let t = w.totals(window, at(30));
        assert_eq!(t, Bucket::default());
    }

    #[test]
    fn a_changed_window_starts_counting_afresh() {
        let mut w = RateWindow::default();
        w.add(Duration::from_secs(10), at(0), true, false);
        assert_eq!(w.totals(Duration::from_secs(20), at(1)).calls, 0);
    }
}
