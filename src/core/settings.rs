//! The settings one breaker runs with. Defaults come from the in-process breaker that riskgate
//! replaces; the configuration layer validates user input before it becomes a [`Settings`].

use std::time::Duration;

use super::inputs::{KindActions, Mode};

/// How a breaker decides. Passed by reference into every core operation rather than stored in
/// each breaker, so that a million idle breakers share one copy and a settings change applies
/// to the next decision without touching breaker state.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Failures inside `failure_window` that open the breaker. Default 5.
    pub failure_threshold: u32,
    /// Sliding window over which failures (and, for the rate rules, outcomes) are counted.
    /// Default 60 s.
    pub failure_window: Duration,
    /// Minimum time OPEN before recovery is tested. Default 300 s.
    pub open_timeout: Duration,
    /// Successful probe orders that close the breaker again; also the most probe permits
    /// outstanding at once. Default 3.
    pub half_open_max_tries: u32,
    /// How long a probe permit may stay unreported before it counts as a failure. Default 30 s.
    pub half_open_timeout: Duration,
    /// What a failure of each kind does. Default: every kind counts.
    pub failure_kinds: KindActions,
    /// Opens when failures / outcomes in the window reach this fraction (0-1]. Default off.
    pub failure_rate_threshold: Option<f64>,
    /// An outcome whose reported latency is at least this is slow. Default off.
    pub slow_call: Option<Duration>,
    /// Opens when slow outcomes / outcomes in the window reach this fraction. Default off.
    pub slow_call_rate_threshold: Option<f64>,
    /// Outcomes the window must hold before a rate rule may open the breaker. Default 20.
    pub minimum_calls: u32,
    /// Each consecutive opening multiplies the open time by this. Default 1 (no backoff).
    pub open_backoff_multiplier: f64,
    /// The longest open time backoff may reach. Default 3600 s.
    pub max_open_timeout: Duration,
    /// A backed-off open time is shortened by up to this fraction (never below
    /// `open_timeout`), so accounts that failed together do not all retry together. Default 0.1.
    pub open_backoff_jitter: f64,
    /// After this long CLOSED, the next opening uses `open_timeout` again. Default 3600 s.
    pub backoff_reset: Duration,
    /// Reduce-only orders pass an OPEN or HALF_OPEN breaker. Default false.
    pub allow_reduce_only_when_open: bool,
    /// How strictly the breaker is applied. Default enforce.
    pub mode: Mode,
}

impl Settings {
    /// Whether a rate rule needs outcome counts.
    pub fn has_rate_rules(&self) -> bool {
        self.failure_rate_threshold.is_some()
            || (self.slow_call.is_some() && self.slow_call_rate_threshold.is_some())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            failure_threshold: 5,
            failure_window: Duration::from_secs(60),
            open_timeout: Duration::from_secs(300),
            half_open_max_tries: 3,
            half_open_timeout: Duration::from_secs(30),
            failure_kinds: KindActions::default(),
            failure_rate_threshold: None,
            slow_call: None,
            slow_call_rate_threshold: None,
            minimum_calls: 20,
            open_backoff_multiplier: 1.0,
            max_open_timeout: Duration::from_secs(3600),
            open_backoff_jitter: 0.1,
            backoff_reset: Duration::from_secs(3600),
            allow_reduce_only_when_open: false,
            mode: Mode::Enforce,
        }
    }
}
