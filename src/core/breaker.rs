//! One account's circuit breaker as a synchronous state machine.
//!
//! Every operation takes the settings in force and `now`, first applies whatever time alone
//! has caused (recovery due, a probe lease expired), then the operation itself, and returns
//! the transitions that happened. It never reads a clock, never does I/O and never blocks; the
//! registry owns locking, scheduling (`next_deadline`), events and persistence.

use std::collections::VecDeque;
use std::time::Duration;

use super::permit::Permit;
use super::settings::Settings;
use super::time::Timestamp;

/// Failures kept beyond the window so that a permit reported again after its failure left the
/// window is still recognised as a duplicate. Bounds the memory of a failing account.
pub(crate) const FAILURE_MEMORY: usize = 32;

/// Marks a failure reported without a permit: it cannot be recognised if reported again.
pub(super) const NO_PERMIT: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

/// Why a breaker changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    FailureThresholdReached,
    OpenTimeoutElapsed,
    ProbesSucceeded,
    ProbeFailed,
    ProbeExpired,
    OperatorReset,
    OperatorTrip,
}

/// One state change, as the core saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub cause: Cause,
    /// The generation the transition started.
    pub generation: u64,
    /// The breaker's failure count after the transition.
    pub failure_count: u32,
    pub at: Timestamp,
    /// When recovery will be tested, for transitions into an OPEN that recovers by itself.
    pub recovery_at: Option<Timestamp>,
}

/// The transitions of one operation: at most one caused by time passing and one caused by the
/// operation itself. Inline, so that operations never allocate for them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transitions([Option<Transition>; 2]);

impl Transitions {
    /// Just `transition`.
    pub fn one(transition: Transition) -> Self {
        Transitions([Some(transition), None])
    }

    fn push(&mut self, transition: Transition) {
        if let Some(slot) = self.0.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some(transition);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Transition> + '_ {
        self.0.iter().flatten().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0[0].is_none()
    }
}

/// How an order ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    Failure,
}

/// The answer to a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed { permit: Permit, probe: bool },
    Denied(Denial),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// Opened on failures; recovery is tested after `retry_after`.
    Open { retry_after: Duration },
    /// Held open by an operator until reset.
    Tripped,
    /// Testing recovery with every probe permit in use; the earliest lease ends after
    /// `retry_after` at the latest.
    ProbesInFlight { retry_after: Duration },
}

/// What a reported outcome did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Disposition {
    Recorded,
    Stale,
    Duplicate,
    Ignored,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Failure {
    pub(super) at: Timestamp,
    /// The permit's sequence, or `NO_PERMIT`.
    pub(super) sequence: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub sequence: u64,
    pub expires_at: Timestamp,
}

/// One account's breaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breaker {
    pub(super) state: State,
    /// Held OPEN by an operator: no automatic recovery until reset.
    pub(super) tripped: bool,
    /// Starts anew on every transition; permits of earlier generations are stale.
    pub(super) generation: u64,
    /// The sequence of the next permit issued in this generation.
    pub(super) next_sequence: u64,
    /// CLOSED: this generation's failures, oldest first, including up to `FAILURE_MEMORY` that
    /// left the window (kept only to recognise duplicates). OPEN and HALF_OPEN: the failures
    /// that opened the breaker, plus failed or expired probes: the answer to "why".
    pub(super) failures: VecDeque<Failure>,
    /// When the breaker last opened.
    pub(super) opened_at: Option<Timestamp>,
    /// When recovery is tested; `None` unless OPEN and not tripped.
    pub(super) recovery_at: Option<Timestamp>,
    /// HALF_OPEN: outstanding probe permits and when each counts as failed.
    pub(super) probes: Vec<Probe>,
    /// HALF_OPEN: probes that succeeded in this generation.
    pub(super) probe_successes: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new()
    }
}

impl Breaker {
    /// A new CLOSED breaker with no history.
    pub fn new() -> Self {
        Breaker {
            state: State::Closed,
            tripped: false,
            generation: 0,
            next_sequence: 0,
            failures: VecDeque::new(),
            opened_at: None,
            recovery_at: None,
            probes: Vec::new(),
            probe_successes: 0,
        }
    }

    /// Asks for a permit to place one order.
    pub fn check(&mut self, settings: &Settings, now: Timestamp) -> (Decision, Transitions) {
        let transitions = self.tick(settings, now);
        let decision = match self.state {
            State::Closed => Decision::Allowed {
                permit: self.issue_permit(),
                probe: false,
            },
            State::Open if self.tripped => Decision::Denied(Denial::Tripped),
            State::Open => Decision::Denied(Denial::Open {
                retry_after: self
                    .recovery_at
                    .map_or(Duration::ZERO, |at| at.saturating_duration_since(now)),
            }),
            State::HalfOpen if self.probes.len() < settings.half_open_max_tries as usize => {
                let permit = self.issue_permit();
                self.probes.push(Probe {
                    sequence: permit.sequence,
                    expires_at: now.saturating_add(settings.half_open_timeout),
                });
                Decision::Allowed {
                    permit,
                    probe: true,
                }
            }
            State::HalfOpen => Decision::Denied(Denial::ProbesInFlight {
                retry_after: self
                    .earliest_probe_expiry()
                    .map_or(Duration::ZERO, |at| at.saturating_duration_since(now)),
            }),
        };
        (decision, transitions)
    }

    /// Records how an order ended. `permit` is `None` for an outcome reported without one,
    /// which applies to the current generation.
    pub fn record(
        &mut self,
        settings: &Settings,
        permit: Option<Permit>,
        outcome: Outcome,
        now: Timestamp,
    ) -> (Disposition, Transitions) {
        let mut transitions = self.tick(settings, now);
        if permit.is_some_and(|p| p.generation != self.generation) {
            return (Disposition::Stale, transitions);
        }
        let sequence = permit.map_or(NO_PERMIT, |p| p.sequence);
        if self.state == State::Closed
            && sequence != NO_PERMIT
            && self.failures.iter().any(|f| f.sequence == sequence)
        {
            return (Disposition::Duplicate, transitions);
        }
        let disposition = match (self.state, outcome) {
            (State::Closed, Outcome::Success) => Disposition::Recorded,
            (State::Closed, Outcome::Failure) => {
                self.failures.push_back(Failure { at: now, sequence });
                self.forget_old_failures(settings, now);
                if self.failures_in_window(settings, now) >= settings.failure_threshold {
                    self.failures.retain(|f| in_window(settings, f.at, now));
                    transitions.push(self.open(Cause::FailureThresholdReached, settings, now));
                }
                Disposition::Recorded
            }
            (State::HalfOpen, _) => {
                let index = match permit {
                    Some(_) => self.probes.iter().position(|p| p.sequence == sequence),
                    // Without a permit, the outcome answers for the oldest outstanding probe.
                    None => (!self.probes.is_empty()).then_some(0),
                };
                match (index, outcome) {
                    (Some(index), Outcome::Success) => {
                        self.probes.remove(index);
                        self.probe_successes += 1;
                        if self.probe_successes >= settings.half_open_max_tries {
                            transitions.push(self.close(Cause::ProbesSucceeded, settings, now));
                        }
                        Disposition::Recorded
                    }
                    (Some(index), Outcome::Failure) => {
                        let probe = self.probes.remove(index);
                        self.remember_failure(now, probe.sequence);
                        transitions.push(self.open(Cause::ProbeFailed, settings, now));
                        Disposition::Recorded
                    }
                    // A failure reported without a permit while recovery is tested: an order
                    // went out and failed, which is all the evidence the probes look for.
                    (None, Outcome::Failure) if permit.is_none() => {
                        self.remember_failure(now, NO_PERMIT);
                        transitions.push(self.open(Cause::ProbeFailed, settings, now));
                        Disposition::Recorded
                    }
                    (None, _) if permit.is_some() && sequence < self.next_sequence => {
                        Disposition::Duplicate
                    }
                    (None, _) => Disposition::Ignored,
                }
            }
            (State::Open, _) => Disposition::Ignored,
        };
        (disposition, transitions)
    }

    /// Operator reset: CLOSED, all counters cleared, whatever the state.
    pub fn reset(&mut self, settings: &Settings, now: Timestamp) -> Transition {
        self.close(Cause::OperatorReset, settings, now)
    }

    /// Operator trip: OPEN and held there until reset.
    pub fn trip(&mut self, settings: &Settings, now: Timestamp) -> Transition {
        self.tripped = true;
        self.open(Cause::OperatorTrip, settings, now)
    }

    /// Applies what time alone causes: recovery testing when the open timeout has elapsed, a
    /// failure when a probe lease has expired. The registry calls it at `next_deadline`.
    pub fn tick(&mut self, settings: &Settings, now: Timestamp) -> Transitions {
        let mut transitions = Transitions::default();
        match self.state {
            State::Open if !self.tripped && self.recovery_at.is_some_and(|at| at <= now) => {
                let from = self.state;
                self.start_generation(State::HalfOpen);
                self.recovery_at = None;
                transitions.push(self.transition(from, Cause::OpenTimeoutElapsed, settings, now));
            }
            State::HalfOpen => {
                if let Some(expired) = self.probes.iter().find(|p| p.expires_at <= now).copied() {
                    self.remember_failure(now, expired.sequence);
                    transitions.push(self.open(Cause::ProbeExpired, settings, now));
                }
            }
            _ => {}
        }
        transitions
    }

    /// When the breaker next needs a `tick`, if ever.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        match self.state {
            State::Open => self.recovery_at,
            State::HalfOpen => self.earliest_probe_expiry(),
            State::Closed => None,
        }
    }

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
        self.opened_at
    }

    pub fn recovery_at(&self) -> Option<Timestamp> {
        self.recovery_at
    }

    pub fn probes(&self) -> &[Probe] {
        &self.probes
    }

    pub fn probe_successes(&self) -> u32 {
        self.probe_successes
    }

    /// CLOSED: failures inside the window at `now`. OPEN and HALF_OPEN: the failures that
    /// opened the breaker, with any failed or expired probes since.
    pub fn failure_count(&self, settings: &Settings, now: Timestamp) -> u32 {
        match self.state {
            State::Closed => self.failures_in_window(settings, now),
            _ => saturating_u32(self.failures.len()),
        }
    }

    /// The times of the failures that `failure_count` counts, oldest first.
    pub fn failure_times<'a>(
        &'a self,
        settings: &'a Settings,
        now: Timestamp,
    ) -> impl Iterator<Item = Timestamp> + 'a {
        let closed = self.state == State::Closed;
        self.failures
            .iter()
            .filter(move |f| !closed || in_window(settings, f.at, now))
            .map(|f| f.at)
    }

    fn issue_permit(&mut self) -> Permit {
        let permit = Permit {
            generation: self.generation,
            sequence: self.next_sequence,
        };
        self.next_sequence += 1;
        permit
    }

    fn earliest_probe_expiry(&self) -> Option<Timestamp> {
        self.probes.iter().map(|p| p.expires_at).min()
    }

    fn failures_in_window(&self, settings: &Settings, now: Timestamp) -> u32 {
        saturating_u32(
            self.failures
                .iter()
                .filter(|f| in_window(settings, f.at, now))
                .count(),
        )
    }

    /// Drops failures that left the window, except the newest `FAILURE_MEMORY`.
    fn forget_old_failures(&mut self, settings: &Settings, now: Timestamp) {
        while self.failures.len() > FAILURE_MEMORY
            && self
                .failures
                .front()
                .is_some_and(|f| !in_window(settings, f.at, now))
        {
            self.failures.pop_front();
        }
    }

    /// Adds a failed or expired probe to the failures that explain an OPEN breaker.
    fn remember_failure(&mut self, now: Timestamp, sequence: u64) {
        if self.failures.len() >= FAILURE_MEMORY {
            self.failures.pop_front();
        }
        self.failures.push_back(Failure { at: now, sequence });
    }

    fn start_generation(&mut self, state: State) {
        self.state = state;
        self.generation += 1;
        self.next_sequence = 0;
        self.probes.clear();
        self.probe_successes = 0;
    }

    fn open(&mut self, cause: Cause, settings: &Settings, now: Timestamp) -> Transition {
        let from = self.state;
        self.start_generation(State::Open);
        self.opened_at = Some(now);
        self.recovery_at = (!self.tripped).then(|| now.saturating_add(settings.open_timeout));
        self.transition(from, cause, settings, now)
    }

    fn close(&mut self, cause: Cause, settings: &Settings, now: Timestamp) -> Transition {
        let from = self.state;
        self.start_generation(State::Closed);
        self.tripped = false;
        self.failures.clear();
        self.opened_at = None;
        self.recovery_at = None;
        self.transition(from, cause, settings, now)
    }

    fn transition(
        &self,
        from: State,
        cause: Cause,
        settings: &Settings,
        now: Timestamp,
    ) -> Transition {
        Transition {
            from,
            to: self.state,
            cause,
            generation: self.generation,
            failure_count: self.failure_count(settings, now),
            at: now,
            recovery_at: self.recovery_at,
        }
    }
}

fn in_window(settings: &Settings, at: Timestamp, now: Timestamp) -> bool {
    now.saturating_duration_since(at) < settings.failure_window
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
