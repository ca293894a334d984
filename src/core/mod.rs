//! The breaker core: a pure, synchronous state machine per account.
//!
//! Owns the semantics of SPEC section 2 and nothing else: no I/O, no clock reads, no locks, no
//! async. Every operation takes the [`Settings`] in force and the current [`Timestamp`] and
//! returns what changed; `next_deadline` says when time alone will change something, so the
//! registry can schedule it.
//!
//! ```
//! use std::time::Duration;
//! use riskgate::core::{Breaker, Cause, Decision, Denial, Outcome, Settings, State, Timestamp};
//!
//! let settings = Settings { failure_threshold: 2, ..Settings::default() };
//! let mut breaker = Breaker::new();
//! let t0 = Timestamp::from_unix_nanos(1_700_000_000_000_000_000);
//! for _ in 0..2 {
//!     let (Decision::Allowed { permit, .. }, _) = breaker.check(&settings, t0) else { unreachable!() };
//!     breaker.record(&settings, Some(permit), Outcome::Failure, t0);
//! }
//! assert_eq!(breaker.state(), State::Open);
//! let later = t0.saturating_add(Duration::from_secs(60));
//! assert_eq!(
//!     breaker.check(&settings, later).0,
//!     Decision::Denied(Denial::Open {
//!         retry_after: Duration::from_secs(240),
//!         rule: Cause::FailureThresholdReached,
//!     })
//! );
//! // Time alone tests recovery: the registry ticks the breaker at its deadline.
//! assert_eq!(breaker.next_deadline(), Some(t0.saturating_add(settings.open_timeout)));
//! breaker.tick(&settings, t0.saturating_add(settings.open_timeout));
//! assert_eq!(breaker.state(), State::HalfOpen);
//! ```

mod breaker;
mod cold;
mod decision;
mod inputs;
mod overrides;
pub mod permit;
mod reading;
mod record;
mod settings;
mod time;
mod transition;
mod window;

pub use breaker::Breaker;
pub use decision::{Decision, Denial, Disposition, Failure, Outcome, Pass, Probe};
pub use inputs::{FailureKind, Intent, KindAction, KindActions, Mode, Report};
pub use overrides::{Overrides, SettingsError, MAX_SECS, SETTING_KEYS};
pub use permit::{Permit, PermitError};
pub use record::{BreakerRecord, FailureRecord, ProbeRecord};
pub use settings::Settings;
pub use time::{human_duration, Timestamp};
pub use transition::{Cause, State, Transition, Transitions};
pub use window::{Bucket, RateWindow, BUCKETS};

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod rules_tests;
#[cfg(test)]
mod tests;
