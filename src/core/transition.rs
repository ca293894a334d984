//! What happens to a breaker: its states, the causes of its transitions, and the transitions
//! an operation reports (at most two: time's, then the operation's own).

use super::inputs::FailureKind;
use super::time::Timestamp;

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
    /// A failure of a kind configured to trip.
    FailureKindTrip,
    /// Failures / outcomes in the window reached the failure-rate threshold.
    FailureRateReached,
    /// Slow outcomes / outcomes in the window reached the slow-call-rate threshold.
    SlowCallRateReached,
    /// A timed operator trip ended; recovery is being tested.
    TripExpired,
    /// A firm-wide or group halt began (an event of the registry, never of one breaker).
    Halted,
    /// A firm-wide or group halt ended (an event of the registry, never of one breaker).
    Resumed,
}

impl Cause {
    /// A short key, for metrics labels and logs.
    pub fn key(self) -> &'static str {
        match self {
            Cause::FailureThresholdReached => "failure_threshold_reached",
            Cause::OpenTimeoutElapsed => "open_timeout_elapsed",
            Cause::ProbesSucceeded => "probes_succeeded",
            Cause::ProbeFailed => "probe_failed",
            Cause::ProbeExpired => "probe_expired",
            Cause::OperatorReset => "operator_reset",
            Cause::OperatorTrip => "operator_trip",
            Cause::FailureKindTrip => "failure_kind_trip",
            Cause::FailureRateReached => "failure_rate_reached",
            Cause::SlowCallRateReached => "slow_call_rate_reached",
            Cause::TripExpired => "trip_expired",
            Cause::Halted => "halted",
            Cause::Resumed => "resumed",
        }
    }
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
    /// For `FailureKindTrip`: the kind that tripped.
    pub failure_kind: Option<FailureKind>,
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

    pub(super) fn push(&mut self, transition: Transition) {
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
