//! What a breaker shows without changing: its state, its generation, why and since when it is
//! open, its probes and the failures that count. The registry builds its views from these.

use super::breaker::{in_window, saturating_u32, Breaker};
use super::decision::{Failure, Probe};
use super::settings::Settings;
use super::time::Timestamp;
use super::transition::{Cause, State};

impl Breaker {
    pub fn state(&self) -> State {
        self.state
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn is_tripped(&self) -> bool {
        self.tripped
    }

    pub fn opened_at(&self) -> Option<Timestamp> {
        self.cold.opened_at
    }

    pub fn recovery_at(&self) -> Option<Timestamp> {
        self.cold.recovery_at
    }

    pub fn probes(&self) -> &[Probe] {
        &self.cold.probes
    }

    pub fn probe_successes(&self) -> u32 {
        self.cold.probe_successes
    }

    /// OPEN and HALF_OPEN: the rule that opened the breaker.
    pub fn opened_by(&self) -> Option<Cause> {
        (self.state != State::Closed)
            .then_some(self.cold.opened_by)
            .flatten()
    }

    /// Consecutive openings counted for backoff.
    pub fn open_streak(&self) -> u32 {
        self.cold.open_streak
    }

    /// The failures that `failure_count` counts, oldest first: in OPEN and HALF_OPEN, the
    /// outcomes that opened the breaker.
    pub fn failures<'a>(
        &'a self,
        settings: &'a Settings,
        now: Timestamp,
    ) -> impl Iterator<Item = &'a Failure> + 'a {
        let closed = self.state == State::Closed;
        self.cold
            .failures
            .iter()
            .filter(move |f| !closed || in_window(settings, f.at, now))
    }

    /// CLOSED: failures inside the window at `now`. OPEN and HALF_OPEN: the failures that
    /// opened the breaker, with any failed or expired probes since.
    pub fn failure_count(&self, settings: &Settings, now: Timestamp) -> u32 {
        match self.state {
            State::Closed => self.failures_in_window(settings, now),
            _ => saturating_u32(self.cold.failures.len()),
        }
    }

    /// Whether the breaker holds nothing worth keeping, so that forgetting it (and creating it
    /// anew, at a generation of its own, on the account's next call) changes no decision: CLOSED
    /// and not held by an operator, no failure (or slow outcome) inside the window, no probe,
    /// and no backoff still counting. Successes in a
    /// rate window are not worth keeping: forgetting them can only make a rate rule open
    /// sooner.
    pub fn is_idle(&self, settings: &Settings, now: Timestamp) -> bool {
        if self.state != State::Closed || self.tripped {
            return false;
        }
        let cold = &*self.cold;
        // Without backoff, the streak changes no open time.
        let backoff_over = cold.open_streak == 0
            || settings.open_backoff_multiplier <= 1.0
            || cold
                .closed_at
                .is_some_and(|at| now.saturating_duration_since(at) >= settings.backoff_reset);
        let window_clear = cold.window.as_ref().is_none_or(|window| {
            let totals = window.totals(settings.failure_window, now);
            totals.failures == 0 && totals.slow == 0
        });
        // A failure in the window counts. One that left it, and the permits `remembered` keeps
        // to recognise a failure reported again, need not be kept: a breaker made anew starts
        // at a generation of its own (see [`Breaker::starting_at`]), so every permit of the one
        // forgotten is stale to it and no report can count twice.
        let window_failures = cold.failures.iter().any(|f| in_window(settings, f.at, now));
        !window_failures && cold.probes.is_empty() && backoff_over && window_clear
    }

    /// The times of the failures that `failure_count` counts, oldest first.
    pub fn failure_times<'a>(
        &'a self,
        settings: &'a Settings,
        now: Timestamp,
    ) -> impl Iterator<Item = Timestamp> + 'a {
        let closed = self.state == State::Closed;
        self.cold
            .failures
            .iter()
            .filter(move |f| !closed || in_window(settings, f.at, now))
            .map(|f| f.at)
    }
}
