//! What a breaker answers: a check's decision (allowed with a permit, passed, denied and why),
//! a report's disposition, and the failures and probes it shows to explain itself.

use std::time::Duration;

use super::inputs::{FailureKind, Report};
use super::permit::Permit;
use super::time::Timestamp;
use super::transition::Cause;

/// How an order ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    Failure,
}

/// The answer to a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        permit: Permit,
        probe: bool,
    },
    /// Allowed outside the breaker: no permit, nothing changed.
    Passed(Pass),
    Denied(Denial),
}

/// Why an order passed without a permit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pass {
    /// Cancels are never blocked.
    Cancel,
    /// A reduce-only order while the breaker is not CLOSED, allowed by the settings.
    ReduceOnly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// Opened by `rule`; recovery is tested after `retry_after`.
    Open { retry_after: Duration, rule: Cause },
    /// Held open by an operator: until reset (`retry_after` unset) or for `retry_after` more.
    Tripped { retry_after: Option<Duration> },
    /// Testing recovery with every probe permit in use; the earliest lease ends after
    /// `retry_after` at the latest.
    ProbesInFlight { retry_after: Duration },
    /// Testing recovery: only new orders may pass, as probes, and reduce-only orders are not
    /// allowed to pass a breaker that is not CLOSED.
    ReduceOnlyWhileRecovering,
}

/// What a reported outcome did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Disposition {
    Recorded,
    Stale,
    Duplicate,
    Ignored,
}

/// A reported failure (or the outcome that fired a rate rule), kept to count it and to explain
/// an opening.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub at: Timestamp,
    /// The permit's sequence, or `NO_PERMIT`.
    pub(super) sequence: u64,
    pub kind: FailureKind,
    pub order_id: Option<Box<str>>,
    pub detail: Option<Box<str>>,
}

impl Failure {
    pub(super) fn new(at: Timestamp, sequence: u64, report: &Report) -> Self {
        Failure {
            at,
            sequence,
            kind: report.kind,
            order_id: report.order_id.clone(),
            detail: report.detail.clone(),
        }
    }

    /// A probe that was never reported.
    pub(super) fn expired(at: Timestamp, sequence: u64) -> Self {
        Failure {
            at,
            sequence,
            kind: FailureKind::Timeout,
            order_id: None,
            detail: Some("probe permit expired unreported".into()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub sequence: u64,
    pub expires_at: Timestamp,
}
