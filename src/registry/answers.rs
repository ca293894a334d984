//! What the gate answers: a check's decision with its explanation, a report's disposition.
//! Kept small, since one is built and moved on every call.

use super::*;

/// Why a check was (or, in shadow mode, would have been) denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The account's breaker denied it.
    Breaker(Denial),
    /// The store cannot write, so the gate fails closed.
    StoreUnavailable,
    /// A firm-wide or group halt is in force (boxed: rare, and it keeps every answer small).
    Halted { scope: Scope, halt: Box<Halt> },
}

impl Denied {
    /// The layer that denied: the firm (a firm-wide halt, or the service's store), a group, or
    /// the account's breaker.
    pub fn layer(&self) -> Layer {
        match self {
            Denied::Breaker(_) => Layer::Account,
            Denied::StoreUnavailable => Layer::Firm,
            Denied::Halted { scope, .. } => Layer::from(scope),
        }
    }
}

/// The answer to a check. Kept small (the explanation of anything but a plain permit is boxed),
/// since it is built and moved on every `CheckTrade`.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    pub allowed: bool,
    /// True when the permit is a probe.
    pub probe: bool,
    /// The breaker's state after the check.
    pub state: State,
    pub mode: Mode,
    pub failure_count: u32,
    /// The permit, with the account tag that its text form carries; `None` without one.
    pub permit: Option<(u64, Permit)>,
    /// Why the answer is not a plain permit; `None` for one.
    explanation: Option<Box<Explanation>>,
}

/// Why a check was denied (or, in shadow mode, would have been), or passed without a permit.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Explanation {
    pub(super) denied: Option<Denied>,
    pub(super) passed: Option<Pass>,
    pub(super) reason: String,
    /// When an OPEN breaker denied: the outcomes that opened it.
    pub(super) tripped_by: Vec<Failure>,
}

/// The answer to a reported outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportResult {
    pub state: State,
    pub disposition: Disposition,
    pub failure_count: u32,
}

impl CheckResult {
    pub(super) fn new(allowed: bool, state: State, failure_count: u32, mode: Mode) -> Self {
        CheckResult {
            allowed,
            probe: false,
            state,
            mode,
            failure_count,
            permit: None,
            explanation: None,
        }
    }

    pub(super) fn explained(self, explanation: Explanation) -> Self {
        CheckResult {
            explanation: Some(Box::new(explanation)),
            ..self
        }
    }

    /// The generation that issued the permit (0 without one).
    pub fn generation(&self) -> u64 {
        self.permit.map_or(0, |(_, permit)| permit.generation)
    }

    /// The permit's text form (what the bot carries back); empty without a permit.
    pub fn permit_id(&self) -> String {
        self.permit
            .map(|(tag, permit)| permit::encode(tag, permit))
            .unwrap_or_default()
    }

    /// Why the check was denied; in shadow mode, why it would have been (with `allowed`).
    pub fn denied(&self) -> Option<&Denied> {
        self.explanation.as_ref()?.denied.as_ref()
    }

    /// Allowed without a permit: a cancel, or a reduce-only order past a breaker that is not
    /// CLOSED.
    pub fn passed(&self) -> Option<Pass> {
        self.explanation.as_ref()?.passed
    }

    /// Why the check was (or would have been) denied, or why it passed without a permit; empty
    /// for a plain permit.
    pub fn reason(&self) -> &str {
        self.explanation.as_ref().map_or("", |e| &e.reason)
    }

    /// [`CheckResult::reason`], owned.
    pub fn into_reason(self) -> String {
        self.explanation.map(|e| e.reason).unwrap_or_default()
    }

    /// When an OPEN breaker denied: the outcomes that opened it.
    pub fn tripped_by(&self) -> &[Failure] {
        self.explanation.as_ref().map_or(&[], |e| &e.tripped_by)
    }
}

impl Explanation {
    pub(super) fn reason(reason: String) -> Self {
        Explanation {
            reason,
            ..Explanation::default()
        }
    }

    pub(super) fn passed(pass: Pass) -> Self {
        Explanation {
            passed: Some(pass),
            reason: reasons::pass(pass),
            ..Explanation::default()
        }
    }
}

pub(super) const DISABLED: &str =
    "breaker disabled for this account: every order is allowed and nothing is recorded";

/// `reason`, marked as what shadow mode would have denied.
pub(super) fn shadowed(mode: Mode, reason: String) -> String {
    if mode == Mode::Shadow {
        format!("shadow mode, would deny: {reason}")
    } else {
        reason
    }
}

impl CheckResult {
    /// How the metrics label this answer.
    pub fn metric(&self) -> crate::metrics::Checked {
        use crate::metrics::Checked;
        match self.denied() {
            None if self.passed().is_some() => Checked::Passed,
            None => Checked::Allowed,
            Some(denied) => Checked::Denied {
                shadow: self.allowed,
                layer: match denied.layer() {
                    Layer::Firm => "firm",
                    Layer::Group(_) => "group",
                    Layer::Account => "account",
                },
                reason: denied.key(),
            },
        }
    }
}

impl Denied {
    /// A short key, for metrics labels.
    pub fn key(&self) -> &'static str {
        match self {
            Denied::Breaker(Denial::Open { .. }) => "breaker_open",
            Denied::Breaker(Denial::Tripped { .. }) => "operator_trip",
            Denied::Breaker(Denial::ProbesInFlight { .. }) => "probes_in_flight",
            Denied::Breaker(Denial::ReduceOnlyWhileRecovering) => "reduce_only_while_recovering",
            Denied::StoreUnavailable => "store_unavailable",
            Denied::Halted {
                scope: Scope::Group(_),
                ..
            } => "group_halted",
            Denied::Halted {
                scope: Scope::Firm, ..
            } => "firm_halted",
        }
    }
}
