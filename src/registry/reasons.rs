//! The human-readable texts of transitions and denials. Programs read the enums; people read
//! these, in events, CLI output and logs.

use std::time::Duration;

use crate::core::{Cause, Denial, Pass, Settings, Transition};

use super::events::OperatorAction;

/// What a transition means, in one line.
pub fn transition(
    t: &Transition,
    settings: &Settings,
    operator: Option<&OperatorAction>,
) -> String {
    let by = |verb: &str| match operator {
        Some(action) => format!("{verb} by {}: {}", action.operator, action.reason),
        None => format!("{verb} by an operator"),
    };
    let open_for = || match t.recovery_at {
        Some(at) => format!("open for {}", human(at.saturating_duration_since(t.at))),
        None => "held open".to_owned(),
    };
    match t.cause {
        Cause::FailureThresholdReached => format!(
            "{} failures within {} reached the threshold of {}; {}",
            t.failure_count,
            human(settings.failure_window),
            settings.failure_threshold,
            open_for()
        ),
        Cause::FailureKindTrip => format!(
            "a {} failure, configured to trip; {}",
            t.failure_kind.unwrap_or_default().key(),
            open_for()
        ),
        Cause::FailureRateReached => format!(
            "the failure rate within {} reached {}% (at least {} outcomes); {}",
            human(settings.failure_window),
            percent(settings.failure_rate_threshold),
            settings.minimum_calls,
            open_for()
        ),
        Cause::SlowCallRateReached => format!(
            "the rate of orders slower than {} within {} reached {}% (at least {} outcomes); {}",
            human(settings.slow_call.unwrap_or_default()),
            human(settings.failure_window),
            percent(settings.slow_call_rate_threshold),
            settings.minimum_calls,
            open_for()
        ),
        Cause::OpenTimeoutElapsed => format!(
            "open time elapsed; testing recovery with up to {} probe orders",
            settings.half_open_max_tries
        ),
        Cause::TripExpired => format!(
            "the operator's timed trip ended; testing recovery with up to {} probe orders",
            settings.half_open_max_tries
        ),
        Cause::ProbesSucceeded => format!(
            "{} probe orders succeeded; trading resumes",
            settings.half_open_max_tries
        ),
        Cause::ProbeFailed => format!("a probe order failed; {}", open_for()),
        Cause::ProbeExpired => format!(
            "a probe permit went unreported for {}; {}",
            human(settings.half_open_timeout),
            open_for()
        ),
        Cause::OperatorReset => by("reset"),
        Cause::OperatorTrip => match t.recovery_at {
            Some(at) => format!(
                "{}; held open for {}, then recovery is tested",
                by("tripped"),
                human(at.saturating_duration_since(t.at))
            ),
            None => format!("{}; held open until reset", by("tripped")),
        },
        Cause::Halted => by("halted"),
        Cause::Resumed => by("resumed"),
    }
}

/// Why a check was denied, in one line.
pub fn denial(denial: &Denial, failure_count: u32, settings: &Settings) -> String {
    match denial {
        Denial::Open { retry_after, rule } => format!(
            "breaker open ({}, {failure_count} failures); recovery is tested in {}",
            rule_name(*rule),
            human(*retry_after)
        ),
        Denial::Tripped { retry_after: None } => {
            "breaker tripped by an operator; held open until an operator resets it".to_owned()
        }
        Denial::Tripped {
            retry_after: Some(after),
        } => format!(
            "breaker tripped by an operator; held open for {} more, then recovery is tested",
            human(*after)
        ),
        Denial::ProbesInFlight { retry_after } => format!(
            "testing recovery: all {} probe permits are in flight; a permit frees up within {}",
            settings.half_open_max_tries,
            human(*retry_after)
        ),
        Denial::ReduceOnlyWhileRecovering => "testing recovery: reduce-only orders do not pass a breaker that is not CLOSED for this account (allow_reduce_only_when_open is false), and never take a probe permit".to_owned(),
    }
}

/// Why an order passed without a permit.
pub fn pass(pass: Pass) -> String {
    match pass {
        Pass::Cancel => "cancels are never blocked".to_owned(),
        Pass::ReduceOnly => {
            "reduce-only order passes the open breaker (allow_reduce_only_when_open)".to_owned()
        }
    }
}

/// A cause as a short key, for metrics labels and logs.
pub fn cause_key(cause: Cause) -> &'static str {
    match cause {
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

/// The rule a cause names, as configuration spells it.
pub fn rule_name(cause: Cause) -> &'static str {
    match cause {
        Cause::FailureThresholdReached => "failure threshold",
        Cause::FailureKindTrip => "failure kind set to trip",
        Cause::FailureRateReached => "failure rate",
        Cause::SlowCallRateReached => "slow-call rate",
        Cause::ProbeFailed => "probe failed",
        Cause::ProbeExpired => "probe expired",
        Cause::OperatorTrip => "operator trip",
        Cause::OpenTimeoutElapsed
        | Cause::TripExpired
        | Cause::ProbesSucceeded
        | Cause::OperatorReset
        | Cause::Halted
        | Cause::Resumed => "no rule",
    }
}

fn percent(fraction: Option<f64>) -> String {
    let value = fraction.unwrap_or(0.0) * 100.0;
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// A duration the way an operator reads it: `250ms`, `4.5s`, `5m`, `4m12s`, `2h3m`.
pub fn human(duration: Duration) -> String {
    let millis = duration.as_millis();
    let secs = duration.as_secs();
    if millis < 1_000 {
        format!("{millis}ms")
    } else if secs < 60 {
        let tenths = millis / 100;
        if tenths.is_multiple_of(10) {
            format!("{secs}s")
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else if secs < 3_600 {
        match secs % 60 {
            0 => format!("{}m", secs / 60),
            s => format!("{}m{s}s", secs / 60),
        }
    } else {
        match (secs % 3_600) / 60 {
            0 => format!("{}h", secs / 3_600),
            m => format!("{}h{m}m", secs / 3_600),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_millis(4_500)), "4.5s");
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_secs(300)), "5m");
        assert_eq!(human(Duration::from_secs(252)), "4m12s");
        assert_eq!(human(Duration::from_secs(7_380)), "2h3m");
    }
}
