//! The human-readable texts of transitions and denials. Programs read the enums; people read
//! these, in events, CLI output and logs.

use std::time::Duration;

use crate::core::{Cause, Denial, Settings, Transition};

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
    match t.cause {
        Cause::FailureThresholdReached => format!(
            "{} failures within {} reached the threshold of {}; open for {}",
            t.failure_count,
            human(settings.failure_window),
            settings.failure_threshold,
            human(settings.open_timeout)
        ),
        Cause::OpenTimeoutElapsed => format!(
            "open timeout of {} elapsed; testing recovery with up to {} probe orders",
            human(settings.open_timeout),
            settings.half_open_max_tries
        ),
        Cause::ProbesSucceeded => format!(
            "{} probe orders succeeded; trading resumes",
            settings.half_open_max_tries
        ),
        Cause::ProbeFailed => format!(
            "a probe order failed; open again for {}",
            human(settings.open_timeout)
        ),
        Cause::ProbeExpired => format!(
            "a probe permit went unreported for {}; open again for {}",
            human(settings.half_open_timeout),
            human(settings.open_timeout)
        ),
        Cause::OperatorReset => by("reset"),
        Cause::OperatorTrip => format!("{}; held open until reset", by("tripped")),
    }
}

/// Why a check was denied, in one line.
pub fn denial(denial: &Denial, failure_count: u32, settings: &Settings) -> String {
    match denial {
        Denial::Open { retry_after } => format!(
            "breaker open after {failure_count} failures; recovery is tested in {}",
            human(*retry_after)
        ),
        Denial::Tripped => {
            "breaker tripped by an operator; held open until an operator resets it".to_owned()
        }
        Denial::ProbesInFlight { retry_after } => format!(
            "testing recovery: all {} probe permits are in flight; a permit frees up within {}",
            settings.half_open_max_tries,
            human(*retry_after)
        ),
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
