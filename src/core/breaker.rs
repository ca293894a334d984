//! One account's circuit breaker as a synchronous state machine.
//!
//! Every operation takes the settings in force and `now`, first applies whatever time alone
//! has caused (recovery due, a probe lease expired), then the operation itself, and returns
//! the transitions that happened. It never reads a clock, never does I/O and never blocks; the
//! registry owns locking, scheduling (`next_deadline`), events and persistence.

use std::time::Duration;

use super::cold::History;
use super::decision::{Decision, Denial, Disposition, Failure, Outcome, Pass, Probe};
use super::inputs::{FailureKind, Intent, KindAction, Report};
use super::permit::Permit;
use super::settings::Settings;
use super::time::Timestamp;
use super::transition::{Cause, State, Transition, Transitions};

/// Failures kept beyond the window so that a permit reported again after its failure left the
/// window is still recognised as a duplicate. Bounds the memory of a failing account.
pub(crate) const FAILURE_MEMORY: usize = 32;

/// Marks a failure reported without a permit: it cannot be recognised if reported again.
pub(super) const NO_PERMIT: u64 = u64::MAX;

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
    /// Everything else, allocated the first time it is written: an account that only ever
    /// traded costs a pointer for it.
    pub(super) cold: History,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new()
    }
}

impl Breaker {
    /// A new CLOSED breaker with no history.
    pub fn new() -> Self {
        Breaker::starting_at(0)
    }

    /// A new CLOSED breaker whose first generation is `generation`. The registry starts each
    /// breaker it creates at a generation of its own (the creation time in microseconds), so
    /// that the permits of an earlier breaker of the same account, forgotten to make room, are
    /// stale to it: none can be taken for one of its own or counted twice.
    pub fn starting_at(generation: u64) -> Self {
        Breaker {
            state: State::Closed,
            tripped: false,
            generation,
            next_sequence: 0,
            cold: History::default(),
        }
    }

    /// Asks for a permit to place one new order.
    pub fn check(&mut self, settings: &Settings, now: Timestamp) -> (Decision, Transitions) {
        self.check_order(settings, now, Intent::New)
    }

    /// Asks whether an order of `intent` may be placed. Cancels always pass; reduce-only
    /// orders pass a breaker that is not CLOSED when the settings allow it, and never take a
    /// probe permit.
    pub fn check_order(
        &mut self,
        settings: &Settings,
        now: Timestamp,
        intent: Intent,
    ) -> (Decision, Transitions) {
        // The hot path: a CLOSED breaker has nothing to tick. Answering here, with the empty
        // transitions built in place, keeps it to a few stores.
        if self.state == State::Closed && intent != Intent::Cancel {
            let permit = self.issue_permit();
            return (
                Decision::Allowed {
                    permit,
                    probe: false,
                },
                Transitions::default(),
            );
        }
        let transitions = self.tick(settings, now);
        let decision = match (intent, self.state) {
            (Intent::Cancel, _) => Decision::Passed(Pass::Cancel),
            (_, State::Closed) => Decision::Allowed {
                permit: self.issue_permit(),
                probe: false,
            },
            (Intent::ReduceOnly, _) if settings.allow_reduce_only_when_open => {
                Decision::Passed(Pass::ReduceOnly)
            }
            (_, State::Open) if self.tripped => Decision::Denied(Denial::Tripped {
                retry_after: self.retry_after(now),
            }),
            (_, State::Open) => Decision::Denied(Denial::Open {
                retry_after: self.retry_after(now).unwrap_or(Duration::ZERO),
                rule: self
                    .cold
                    .opened_by
                    .unwrap_or(Cause::FailureThresholdReached),
            }),
            (Intent::ReduceOnly, State::HalfOpen) => {
                Decision::Denied(Denial::ReduceOnlyWhileRecovering)
            }
            (Intent::New, State::HalfOpen)
                if self.cold.probes.len() < settings.half_open_max_tries as usize =>
            {
                let permit = self.issue_permit();
                self.cold.probes.push(Probe {
                    sequence: permit.sequence,
                    expires_at: now.saturating_add(settings.half_open_timeout),
                });
                Decision::Allowed {
                    permit,
                    probe: true,
                }
            }
            (Intent::New, State::HalfOpen) => Decision::Denied(Denial::ProbesInFlight {
                retry_after: self
                    .earliest_probe_expiry()
                    .map_or(Duration::ZERO, |at| at.saturating_duration_since(now)),
            }),
        };
        (decision, transitions)
    }

    fn retry_after(&self, now: Timestamp) -> Option<Duration> {
        self.cold
            .recovery_at
            .map(|at| at.saturating_duration_since(now))
    }

    /// Records how an order ended, with nothing more known than success or failure.
    pub fn record(
        &mut self,
        settings: &Settings,
        permit: Option<Permit>,
        outcome: Outcome,
        now: Timestamp,
    ) -> (Disposition, Transitions) {
        let report = match outcome {
            Outcome::Success => Report::success(),
            Outcome::Failure => Report::failure(FailureKind::Unspecified),
        };
        self.report(settings, permit, &report, now)
    }

    /// Records how an order ended. `permit` is `None` for an outcome reported without one,
    /// which applies to the current generation.
    pub fn report(
        &mut self,
        settings: &Settings,
        permit: Option<Permit>,
        report: &Report,
        now: Timestamp,
    ) -> (Disposition, Transitions) {
        let mut transitions = self.tick(settings, now);
        if permit.is_some_and(|p| p.generation != self.generation) {
            return (Disposition::Stale, transitions);
        }
        let sequence = permit.map_or(NO_PERMIT, |p| p.sequence);
        if self.state == State::Closed
            && sequence != NO_PERMIT
            && (self.cold.failures.iter().any(|f| f.sequence == sequence)
                || self.cold.remembered.contains(&sequence))
        {
            return (Disposition::Duplicate, transitions);
        }
        let action = if report.failed {
            settings.failure_kinds.get(report.kind)
        } else {
            KindAction::Count
        };
        let disposition = match self.state {
            State::Closed if action == KindAction::Ignore => Disposition::Ignored,
            State::Closed => {
                if let Some(t) = self.record_closed(settings, sequence, report, action, now) {
                    transitions.push(t);
                }
                Disposition::Recorded
            }
            State::HalfOpen => {
                let index = match permit {
                    Some(_) => self.cold.probes.iter().position(|p| p.sequence == sequence),
                    // Without a permit, the outcome answers for the oldest outstanding probe.
                    None => (!self.cold.probes.is_empty()).then_some(0),
                };
                match (index, report.failed) {
                    // An ignored kind frees the probe without judging the account.
                    (Some(index), true) if action == KindAction::Ignore => {
                        self.cold.probes.remove(index);
                        Disposition::Ignored
                    }
                    (Some(index), false) => {
                        self.cold.probes.remove(index);
                        self.cold.probe_successes += 1;
                        if self.cold.probe_successes >= settings.half_open_max_tries {
                            transitions.push(self.close(Cause::ProbesSucceeded, settings, now));
                        }
                        Disposition::Recorded
                    }
                    (Some(index), true) => {
                        let probe = self.cold.probes.remove(index);
                        self.remember_failure(Failure::new(now, probe.sequence, report));
                        transitions.push(self.reopen(settings, action, report, now));
                        Disposition::Recorded
                    }
                    (None, true) if permit.is_none() && action == KindAction::Ignore => {
                        Disposition::Ignored
                    }
                    // A failure reported without a permit while recovery is tested: an order
                    // went out and failed, which is all the evidence the probes look for.
                    (None, true) if permit.is_none() => {
                        self.remember_failure(Failure::new(now, NO_PERMIT, report));
                        transitions.push(self.reopen(settings, action, report, now));
                        Disposition::Recorded
                    }
                    (None, _) if permit.is_some() && sequence < self.next_sequence => {
                        Disposition::Duplicate
                    }
                    (None, _) => Disposition::Ignored,
                }
            }
            State::Open => Disposition::Ignored,
        };
        (disposition, transitions)
    }

    /// Counts an outcome in CLOSED and applies the trip rules in order: a kind that trips, the
    /// failure count, the failure rate, the slow-call rate.
    fn record_closed(
        &mut self,
        settings: &Settings,
        sequence: u64,
        report: &Report,
        action: KindAction,
        now: Timestamp,
    ) -> Option<Transition> {
        let slow = settings
            .slow_call
            .is_some_and(|limit| report.latency.is_some_and(|l| l >= limit));
        if settings.has_rate_rules() {
            self.cold.window.get_or_insert_with(Box::default).add(
                settings.failure_window,
                now,
                report.failed,
                slow,
            );
        }
        if report.failed {
            self.cold
                .failures
                .push_back(Failure::new(now, sequence, report));
            self.forget_old_failures(settings, now);
        }
        let rule = if report.failed && action == KindAction::Trip {
            Some(Cause::FailureKindTrip)
        } else if report.failed
            && self.failures_in_window(settings, now) >= settings.failure_threshold
        {
            Some(Cause::FailureThresholdReached)
        } else {
            self.rate_rule_fired(settings, now)
        };
        let rule = rule?;
        self.cold
            .failures
            .retain(|f| in_window(settings, f.at, now));
        if !report.failed {
            // A slow success fired the slow-call rule: keep it as the explanation.
            let mut trigger = Failure::new(now, sequence, report);
            trigger.kind = FailureKind::Unspecified;
            trigger.detail = Some(
                format!(
                    "slow: {:?}{}",
                    report.latency.unwrap_or_default(),
                    report
                        .detail
                        .as_deref()
                        .map(|d| format!("; {d}"))
                        .unwrap_or_default()
                )
                .into(),
            );
            self.remember_failure(trigger);
        }
        let kind = (rule == Cause::FailureKindTrip).then_some(report.kind);
        Some(self.open(rule, kind, settings, now, None))
    }

    /// The rate rule that the window's counts fire, if any.
    fn rate_rule_fired(&self, settings: &Settings, now: Timestamp) -> Option<Cause> {
        let totals = self
            .cold
            .window
            .as_ref()?
            .totals(settings.failure_window, now);
        if totals.calls == 0 || totals.calls < settings.minimum_calls {
            return None;
        }
        let rate = |n: u32| f64::from(n) / f64::from(totals.calls);
        if settings
            .failure_rate_threshold
            .is_some_and(|threshold| rate(totals.failures) >= threshold)
        {
            return Some(Cause::FailureRateReached);
        }
        if settings.slow_call.is_some()
            && settings
                .slow_call_rate_threshold
                .is_some_and(|threshold| rate(totals.slow) >= threshold)
        {
            return Some(Cause::SlowCallRateReached);
        }
        None
    }

    /// A failed probe opens the breaker again.
    fn reopen(
        &mut self,
        settings: &Settings,
        action: KindAction,
        report: &Report,
        now: Timestamp,
    ) -> Transition {
        if action == KindAction::Trip {
            self.open(
                Cause::FailureKindTrip,
                Some(report.kind),
                settings,
                now,
                None,
            )
        } else {
            self.open(Cause::ProbeFailed, None, settings, now, None)
        }
    }

    /// Operator reset: CLOSED, all counters cleared, whatever the state.
    pub fn reset(&mut self, settings: &Settings, now: Timestamp) -> Transition {
        self.close(Cause::OperatorReset, settings, now)
    }

    /// Operator trip: OPEN and held there until reset.
    pub fn trip(&mut self, settings: &Settings, now: Timestamp) -> Transition {
        self.trip_until(settings, now, None)
    }

    /// Operator trip: OPEN and held there until reset or, with `until`, until then; then
    /// recovery is tested as usual.
    pub fn trip_until(
        &mut self,
        settings: &Settings,
        now: Timestamp,
        until: Option<Timestamp>,
    ) -> Transition {
        self.tripped = true;
        self.open(Cause::OperatorTrip, None, settings, now, until)
    }

    /// Applies what time alone causes: recovery testing when the open timeout has elapsed, a
    /// failure when a probe lease has expired. The registry calls it at `next_deadline`.
    pub fn tick(&mut self, settings: &Settings, now: Timestamp) -> Transitions {
        let mut transitions = Transitions::default();
        match self.state {
            State::Open if self.cold.recovery_at.is_some_and(|at| at <= now) => {
                let from = self.state;
                let cause = if self.tripped {
                    Cause::TripExpired
                } else {
                    Cause::OpenTimeoutElapsed
                };
                self.start_generation(State::HalfOpen);
                self.tripped = false;
                self.cold.recovery_at = None;
                transitions.push(self.transition(from, cause, None, settings, now));
            }
            State::HalfOpen => {
                if let Some(expired) = self
                    .cold
                    .probes
                    .iter()
                    .find(|p| p.expires_at <= now)
                    .copied()
                {
                    self.remember_failure(Failure::expired(now, expired.sequence));
                    transitions.push(self.open(Cause::ProbeExpired, None, settings, now, None));
                }
            }
            _ => {}
        }
        transitions
    }

    /// When the breaker next needs a `tick`, if ever.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        match self.state {
            State::Open => self.cold.recovery_at,
            State::HalfOpen => self.earliest_probe_expiry(),
            State::Closed => None,
        }
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
        self.cold.probes.iter().map(|p| p.expires_at).min()
    }

    pub(super) fn failures_in_window(&self, settings: &Settings, now: Timestamp) -> u32 {
        saturating_u32(
            self.cold
                .failures
                .iter()
                .filter(|f| in_window(settings, f.at, now))
                .count(),
        )
    }

    /// Takes the failures that left the window out of `failures`. The permit of each, if it had
    /// one, joins the newest `FAILURE_MEMORY` remembered, so that it is still recognised if
    /// reported again; a failure without a permit could never be recognised and is forgotten. A
    /// failing account's record so carries a permit sequence (a byte or two) for each
    /// remembered failure, not the whole failure.
    fn forget_old_failures(&mut self, settings: &Settings, now: Timestamp) {
        while self
            .cold
            .failures
            .front()
            .is_some_and(|f| !in_window(settings, f.at, now))
        {
            let cold = &mut *self.cold;
            let Some(failure) = cold.failures.pop_front() else {
                break;
            };
            if failure.sequence != NO_PERMIT {
                if cold.remembered.len() >= FAILURE_MEMORY {
                    cold.remembered.pop_front();
                }
                cold.remembered.push_back(failure.sequence);
            }
        }
    }

    /// Adds a failed or expired probe to the failures that explain an OPEN breaker.
    fn remember_failure(&mut self, failure: Failure) {
        if self.cold.failures.len() >= FAILURE_MEMORY {
            self.cold.failures.pop_front();
        }
        self.cold.failures.push_back(failure);
    }

    fn start_generation(&mut self, state: State) {
        self.state = state;
        self.generation += 1;
        self.next_sequence = 0;
        self.cold.probes.clear();
        self.cold.probe_successes = 0;
        self.cold.window = None;
        // The generation's permits are stale from now on: none needs recognising again.
        self.cold.remembered.clear();
    }

    /// Opens the breaker. A tripped breaker is held until `held_until` (or reset); otherwise
    /// recovery is tested after the open time, grown by backoff for consecutive openings.
    fn open(
        &mut self,
        cause: Cause,
        kind: Option<FailureKind>,
        settings: &Settings,
        now: Timestamp,
        held_until: Option<Timestamp>,
    ) -> Transition {
        let from = self.state;
        if cause != Cause::OperatorTrip {
            let recovered_long_ago = from == State::Closed
                && self
                    .cold
                    .closed_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= settings.backoff_reset);
            self.cold.open_streak = if recovered_long_ago {
                1
            } else {
                self.cold.open_streak.saturating_add(1)
            };
        }
        self.start_generation(State::Open);
        self.cold.opened_at = Some(now);
        self.cold.opened_by = Some(cause);
        self.cold.recovery_at = if self.tripped {
            held_until
        } else {
            Some(now.saturating_add(self.open_time(settings, now)))
        };
        self.transition(from, cause, kind, settings, now)
    }

    /// `open_timeout`, times `open_backoff_multiplier` for each consecutive opening after the
    /// first, capped by `max_open_timeout`, shortened by up to `open_backoff_jitter` (never
    /// below `open_timeout`). The jitter is derived from the breaker's generation and `now`,
    /// so the core stays deterministic.
    fn open_time(&self, settings: &Settings, now: Timestamp) -> Duration {
        let base = settings.open_timeout;
        if self.cold.open_streak <= 1 || settings.open_backoff_multiplier <= 1.0 {
            return base;
        }
        let exponent = i32::try_from(self.cold.open_streak - 1)
            .unwrap_or(i32::MAX)
            .min(1_000);
        let cap = settings.max_open_timeout.max(base).as_secs_f64();
        let grown = (base.as_secs_f64() * settings.open_backoff_multiplier.powi(exponent)).min(cap);
        let jitter = settings.open_backoff_jitter.clamp(0.0, 1.0) * unit(self.generation, now);
        Duration::from_secs_f64((grown * (1.0 - jitter)).max(base.as_secs_f64()).min(cap))
    }

    fn close(&mut self, cause: Cause, settings: &Settings, now: Timestamp) -> Transition {
        let from = self.state;
        self.start_generation(State::Closed);
        self.tripped = false;
        self.cold.failures.clear();
        self.cold.opened_at = None;
        self.cold.opened_by = None;
        self.cold.recovery_at = None;
        if cause == Cause::OperatorReset {
            // A deliberate reset starts afresh: no backoff carries over.
            self.cold.open_streak = 0;
            self.cold.closed_at = None;
        } else {
            self.cold.closed_at = Some(now);
        }
        self.transition(from, cause, None, settings, now)
    }

    fn transition(
        &self,
        from: State,
        cause: Cause,
        failure_kind: Option<FailureKind>,
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
            recovery_at: self.cold.recovery_at,
            failure_kind,
        }
    }
}

/// A number in [0, 1) derived from `generation` and `now` (splitmix64).
fn unit(generation: u64, now: Timestamp) -> f64 {
    let mut z = generation
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(now.as_unix_nanos());
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

pub(super) fn in_window(settings: &Settings, at: Timestamp, now: Timestamp) -> bool {
    now.saturating_duration_since(at) < settings.failure_window
}

pub(super) fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
