//! The human-readable texts of transitions and denials. Programs read the enums; people read
//! these, in events, CLI output and logs.

use crate::core::{human_duration, Cause, Denial, Pass, Settings, Transition};

use crate::history::OperatorAction;

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
        Some(at) => format!(
            "open for {}",
            human_duration(at.saturating_duration_since(t.at))
        ),
        None => "held open".to_owned(),
    };
    match t.cause {
        Cause::FailureThresholdReached => format!(
            "{} failures within {} reached the threshold of {}; {}",
            t.failure_count,
            human_duration(settings.failure_window),
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
            human_duration(settings.failure_window),
            percent(settings.failure_rate_threshold),
            settings.minimum_calls,
            open_for()
        ),
        Cause::SlowCallRateReached => format!(
            "the rate of orders slower than {} within {} reached {}% (at least {} outcomes); {}",
            human_duration(settings.slow_call.unwrap_or_default()),
            human_duration(settings.failure_window),
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
            human_duration(settings.half_open_timeout),
            open_for()
        ),
        Cause::OperatorReset => by("reset"),
        Cause::OperatorTrip => match t.recovery_at {
            Some(at) => format!(
                "{}; held open for {}, then recovery is tested",
                by("tripped"),
                human_duration(at.saturating_duration_since(t.at))
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
            human_duration(*retry_after)
        ),
        Denial::Tripped { retry_after: None } => {
            "breaker tripped by an operator; held open until an operator resets it".to_owned()
        }
        Denial::Tripped {
            retry_after: Some(after),
        } => format!(
            "breaker tripped by an operator; held open for {} more, then recovery is tested",
            human_duration(*after)
        ),
        Denial::ProbesInFlight { retry_after } => format!(
            "testing recovery: all {} probe permits are in flight; a permit frees up within {}",
            settings.half_open_max_tries,
            human_duration(*retry_after)
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
