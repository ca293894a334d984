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
