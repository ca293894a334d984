//! What a breaker remembers beyond its state and permit numbering (failures, rate counts,
//! probes, opening and backoff), allocated the first time it is written: an account that only
//! ever traded costs one pointer for it.

use std::collections::VecDeque;

use super::decision::{Failure, Probe};
use super::time::Timestamp;
use super::transition::Cause;
use super::window::RateWindow;

/// What a breaker remembers beyond its state and permit numbering.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Cold {
    /// CLOSED: this generation's failures in the window, oldest first. OPEN and HALF_OPEN: the
    /// failures that opened the breaker, plus failed or expired probes: the answer to "why".
    pub(super) failures: VecDeque<Failure>,
    /// CLOSED: the permits (sequences) of the newest `FAILURE_MEMORY` failures of this
    /// generation that left the window, oldest first: kept only to recognise a permit reported
    /// again.
    pub(super) remembered: VecDeque<u64>,
    /// When the breaker last opened.
    pub(super) opened_at: Option<Timestamp>,
    /// When recovery is tested; `None` unless OPEN and not tripped.
    pub(super) recovery_at: Option<Timestamp>,
    /// HALF_OPEN: outstanding probe permits and when each counts as failed.
    pub(super) probes: Vec<Probe>,
    /// HALF_OPEN: probes that succeeded in this generation.
    pub(super) probe_successes: u32,
    /// OPEN and HALF_OPEN: the rule that opened the breaker.
    pub(super) opened_by: Option<Cause>,
    /// Consecutive openings without `backoff_reset` CLOSED in between (for backoff).
    pub(super) open_streak: u32,
    /// When the breaker last closed after being open.
    pub(super) closed_at: Option<Timestamp>,
    /// CLOSED with a rate rule: outcome counts over the window.
    pub(super) window: Option<Box<RateWindow>>,
}

/// A breaker's [`Cold`] part: read as empty until first written, then boxed.
#[derive(Clone, Debug, Default)]
pub(super) struct History(Option<Box<Cold>>);

impl History {
    pub(super) fn of(cold: Cold) -> Self {
        if cold == NO_HISTORY {
            History(None)
        } else {
            History(Some(Box::new(cold)))
        }
    }
}

impl std::ops::Deref for History {
    type Target = Cold;

    fn deref(&self) -> &Cold {
        self.0.as_deref().unwrap_or(&NO_HISTORY)
    }
}

impl std::ops::DerefMut for History {
    fn deref_mut(&mut self) -> &mut Cold {
        self.0.get_or_insert_with(Box::default)
    }
}

impl PartialEq for History {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for History {}

/// What every breaker without a history reads.
static NO_HISTORY: Cold = Cold {
    failures: VecDeque::new(),
    remembered: VecDeque::new(),
    opened_at: None,
    recovery_at: None,
    probes: Vec::new(),
    probe_successes: 0,
    opened_by: None,
    open_streak: 0,
    closed_at: None,
    window: None,
};
