//! The settings one breaker runs with. Defaults come from the in-process breaker that riskgate
//! replaces; the configuration layer validates user input before it becomes a [`Settings`].

use std::time::Duration;

/// How a breaker decides. Passed by reference into every core operation rather than stored in
/// each breaker, so that a million idle breakers share one copy and a settings change applies
/// to the next decision without touching breaker state.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Failures inside `failure_window` that open the breaker. Default 5.
    pub failure_threshold: u32,
    /// Sliding window over which failures are counted. Default 60 s.
    pub failure_window: Duration,
    /// Minimum time OPEN before recovery is tested. Default 300 s.
    pub open_timeout: Duration,
    /// Successful probe orders that close the breaker again; also the most probe permits
    /// outstanding at once. Default 3.
    pub half_open_max_tries: u32,
    /// How long a probe permit may stay unreported before it counts as a failure. Default 30 s.
    pub half_open_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            failure_threshold: 5,
            failure_window: Duration::from_secs(60),
            open_timeout: Duration::from_secs(300),
            half_open_max_tries: 3,
            half_open_timeout: Duration::from_secs(30),
        }
    }
}
