//! The persisted form of a breaker: plain data that a store writes and reads back.
//!
//! Kept apart from [`Breaker`](super::Breaker) so that the breaker's in-memory layout can
//! change without changing what stores hold.

use super::breaker::State;
use super::time::Timestamp;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerRecord {
    pub state: State,
    pub tripped: bool,
    pub generation: u64,
    pub next_sequence: u64,
    pub failures: Vec<FailureRecord>,
    pub opened_at: Option<Timestamp>,
    pub recovery_at: Option<Timestamp>,
    pub probes: Vec<ProbeRecord>,
    pub probe_successes: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureRecord {
    pub at: Timestamp,
    /// The sequence of the permit the failure was reported with, if any.
    pub permit_sequence: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeRecord {
    pub sequence: u64,
    pub expires_at: Timestamp,
}
