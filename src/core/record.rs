//! The persisted form of a breaker: plain data that a store writes and reads back.
//!
//! Kept apart from [`Breaker`](super::Breaker) so that the breaker's in-memory layout can
//! change without changing what stores hold.

use super::breaker::{Breaker, NO_PERMIT};
use super::cold::{Cold, History};
use super::decision::{Failure, Probe};
use super::inputs::FailureKind;
use super::time::Timestamp;
use super::transition::{Cause, State};
use super::window::RateWindow;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerRecord {
    pub state: State,
    pub tripped: bool,
    pub generation: u64,
    pub next_sequence: u64,
    pub failures: Vec<FailureRecord>,
    /// CLOSED: the permit sequences of the newest failures that left the window, oldest first
    /// (kept to recognise a permit reported again).
    pub remembered: Vec<u64>,
    pub opened_at: Option<Timestamp>,
    pub recovery_at: Option<Timestamp>,
    pub probes: Vec<ProbeRecord>,
    pub probe_successes: u32,
    pub opened_by: Option<Cause>,
    pub open_streak: u32,
    pub closed_at: Option<Timestamp>,
    pub window: Option<RateWindow>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureRecord {
    pub at: Timestamp,
    /// The sequence of the permit the failure was reported with, if any.
    pub permit_sequence: Option<u64>,
    pub kind: FailureKind,
    pub order_id: Option<Box<str>>,
    pub detail: Option<Box<str>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeRecord {
    pub sequence: u64,
    pub expires_at: Timestamp,
}

impl Breaker {
    /// Everything a store needs to bring this breaker back after a restart.
    pub fn to_record(&self) -> BreakerRecord {
        BreakerRecord {
            state: self.state,
            tripped: self.tripped,
            generation: self.generation,
            next_sequence: self.next_sequence,
            failures: self
                .cold
                .failures
                .iter()
                .map(|f| FailureRecord {
                    at: f.at,
                    permit_sequence: (f.sequence != NO_PERMIT).then_some(f.sequence),
                    kind: f.kind,
                    order_id: f.order_id.clone(),
                    detail: f.detail.clone(),
                })
                .collect(),
            remembered: self.cold.remembered.iter().copied().collect(),
            opened_at: self.cold.opened_at,
            recovery_at: self.cold.recovery_at,
            probes: self
                .cold
                .probes
                .iter()
                .map(|p| ProbeRecord {
                    sequence: p.sequence,
                    expires_at: p.expires_at,
                })
                .collect(),
            probe_successes: self.cold.probe_successes,
            opened_by: self.cold.opened_by,
            open_streak: self.cold.open_streak,
            closed_at: self.cold.closed_at,
            window: self.cold.window.as_deref().cloned(),
        }
    }

    /// A breaker brought back from its record.
    pub fn from_record(record: BreakerRecord) -> Self {
        Breaker {
            state: record.state,
            tripped: record.tripped,
            generation: record.generation,
            next_sequence: record.next_sequence,
            cold: History::of(Cold {
                failures: record
                    .failures
                    .into_iter()
                    .map(|f| Failure {
                        at: f.at,
                        sequence: f.permit_sequence.unwrap_or(NO_PERMIT),
                        kind: f.kind,
                        order_id: f.order_id,
                        detail: f.detail,
                    })
                    .collect(),
                remembered: record.remembered.into(),
                opened_at: record.opened_at,
                recovery_at: record.recovery_at,
                probes: record
                    .probes
                    .into_iter()
                    .map(|p| Probe {
                        sequence: p.sequence,
                        expires_at: p.expires_at,
                    })
                    .collect(),
                probe_successes: record.probe_successes,
                opened_by: record.opened_by,
                open_streak: record.open_streak,
                closed_at: record.closed_at,
                window: record.window.map(Box::new),
            }),
        }
    }
}
