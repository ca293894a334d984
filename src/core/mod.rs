//! The breaker core: a pure, synchronous state machine per account.
//!
//! Owns the semantics of SPEC section 2 and nothing else: no I/O, no clock reads, no locks, no
//! async. Every operation takes the [`Settings`] in force and the current [`Timestamp`] and
//! returns what changed; `next_deadline` says when time alone will change something, so the
//! registry can schedule it.

mod breaker;
pub mod permit;
mod record;
mod settings;
mod time;

pub use breaker::{
    Breaker, Cause, Decision, Denial, Disposition, Outcome, Probe, State, Transition, Transitions,
};
pub use permit::{Permit, PermitError};
pub use record::{BreakerRecord, FailureRecord, ProbeRecord};
pub use settings::Settings;
pub use time::Timestamp;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
