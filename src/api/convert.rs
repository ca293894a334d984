//! Conversions between the wire types and the service's own. Pure functions; no decisions.

use std::time::Duration;

use crate::core::{Cause, Denial, Disposition, Outcome, Settings, State, Timestamp};
use crate::error::Error;
use crate::proto;
use crate::registry::{BreakerView, CheckResult, Denied, Event, ReportResult};
use crate::store::{AuditAction, AuditRecord};

pub fn state(state: State) -> proto::BreakerState {
    match state {
        State::Closed => proto::BreakerState::Closed,
        State::Open => proto::BreakerState::Open,
        State::HalfOpen => proto::BreakerState::HalfOpen,
    }
}

/// A state filter from the wire: `BREAKER_STATE_UNSPECIFIED` means any.
pub fn state_filter(value: i32) -> Result<Option<State>, Error> {
    match proto::BreakerState::try_from(value) {
        Ok(proto::BreakerState::Unspecified) => Ok(None),
        Ok(proto::BreakerState::Closed) => Ok(Some(State::Closed)),
        Ok(proto::BreakerState::Open) => Ok(Some(State::Open)),
        Ok(proto::BreakerState::HalfOpen) => Ok(Some(State::HalfOpen)),
        Err(_) => Err(Error::InvalidEnum {
            field: "state",
            allowed: "BREAKER_STATE_UNSPECIFIED (any), BREAKER_STATE_CLOSED, BREAKER_STATE_OPEN, BREAKER_STATE_HALF_OPEN",
        }),
    }
}

pub fn outcome(value: i32) -> Result<Outcome, Error> {
    match proto::Outcome::try_from(value) {
        Ok(proto::Outcome::Success) => Ok(Outcome::Success),
        Ok(proto::Outcome::Failure) => Ok(Outcome::Failure),
        Ok(proto::Outcome::Unspecified) | Err(_) => Err(Error::InvalidEnum {
            field: "outcome",
            allowed: "OUTCOME_SUCCESS, OUTCOME_FAILURE",
        }),
    }
}

fn cause(cause: Cause) -> proto::TransitionCause {
    match cause {
        Cause::FailureThresholdReached => proto::TransitionCause::FailureThresholdReached,
        Cause::OpenTimeoutElapsed => proto::TransitionCause::OpenTimeoutElapsed,
        Cause::ProbesSucceeded => proto::TransitionCause::ProbesSucceeded,
        Cause::ProbeFailed => proto::TransitionCause::ProbeFailed,
        Cause::ProbeExpired => proto::TransitionCause::ProbeExpired,
        Cause::OperatorReset => proto::TransitionCause::OperatorReset,
        Cause::OperatorTrip => proto::TransitionCause::OperatorTrip,
    }
}

fn disposition(disposition: Disposition) -> proto::OutcomeDisposition {
    match disposition {
        Disposition::Recorded => proto::OutcomeDisposition::Recorded,
        Disposition::Stale => proto::OutcomeDisposition::Stale,
        Disposition::Duplicate => proto::OutcomeDisposition::Duplicate,
        Disposition::Ignored => proto::OutcomeDisposition::Ignored,
    }
}

pub fn timestamp(at: Timestamp) -> prost_types::Timestamp {
    let nanos = at.as_unix_nanos();
    prost_types::Timestamp {
        seconds: i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX),
        // Below 1e9, so it fits.
        nanos: (nanos % 1_000_000_000) as i32,
    }
}

pub fn duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: duration.subsec_nanos() as i32,
    }
}

pub fn check_response(result: CheckResult) -> proto::CheckTradeResponse {
    let (denial, retry_after) = match result.denied {
        None => (proto::Denial::Unspecified, None),
        Some(Denied::Breaker(Denial::Open { retry_after })) => {
            (proto::Denial::BreakerOpen, Some(retry_after))
        }
        Some(Denied::Breaker(Denial::Tripped)) => (proto::Denial::OperatorTrip, None),
        Some(Denied::Breaker(Denial::ProbesInFlight { retry_after })) => {
            (proto::Denial::ProbesInFlight, Some(retry_after))
        }
        Some(Denied::StoreUnavailable) => (proto::Denial::StoreUnavailable, None),
    };
    proto::CheckTradeResponse {
        allowed: result.denied.is_none(),
        state: state(result.state).into(),
        reason: result.reason,
        permit_id: result.permit_id,
        retry_after: retry_after.map(duration),
        failure_count: result.failure_count,
        denial: denial.into(),
        probe: result.probe,
        generation: result.generation,
    }
}

pub fn report_response(result: ReportResult) -> proto::ReportOutcomeResponse {
    proto::ReportOutcomeResponse {
        state: state(result.state).into(),
        disposition: disposition(result.disposition).into(),
        failure_count: result.failure_count,
    }
}

pub fn settings(settings: &Settings) -> proto::BreakerSettings {
    proto::BreakerSettings {
        failure_threshold: settings.failure_threshold,
        failure_window: Some(duration(settings.failure_window)),
        open_timeout: Some(duration(settings.open_timeout)),
        half_open_max_tries: settings.half_open_max_tries,
        half_open_timeout: Some(duration(settings.half_open_timeout)),
    }
}

pub fn breaker(view: BreakerView) -> proto::Breaker {
    proto::Breaker {
        state: state(view.state).into(),
        generation: view.generation,
        failure_count: view.failure_count,
        failure_times: view.failure_times.into_iter().map(timestamp).collect(),
        opened_at: view.opened_at.map(timestamp),
        recovery_at: view.recovery_at.map(timestamp),
        probes: view
            .probes
            .into_iter()
            .map(|p| proto::Probe {
                permit_id: p.permit_id,
                expires_at: Some(timestamp(p.expires_at)),
            })
            .collect(),
        probe_successes: view.probe_successes,
        tripped_by_operator: view.tripped,
        last_sequence: view.last_sequence,
        settings: Some(settings(&view.settings)),
        account_id: view.account_id,
    }
}

pub fn event(event: &Event) -> proto::BreakerEvent {
    let (operator, operator_reason) = event
        .operator
        .as_ref()
        .map(|action| (action.operator.clone(), action.reason.clone()))
        .unwrap_or_default();
    proto::BreakerEvent {
        sequence: event.sequence,
        account_id: event.account_id.clone(),
        from_state: state(event.from).into(),
        to_state: state(event.to).into(),
        cause: cause(event.cause).into(),
        reason: event.reason.clone(),
        failure_count: event.failure_count,
        time: Some(timestamp(event.at)),
        generation: event.generation,
        recovery_at: event.recovery_at.map(timestamp),
        operator,
        operator_reason,
    }
}

pub fn audit_record(record: AuditRecord) -> proto::AuditRecord {
    proto::AuditRecord {
        id: record.id,
        time: Some(timestamp(record.at)),
        account_id: record.account_id,
        action: match record.action {
            AuditAction::Reset => proto::AuditAction::Reset,
            AuditAction::Trip => proto::AuditAction::Trip,
        }
        .into(),
        operator: record.operator,
        reason: record.reason,
        state_before: state(record.state_before).into(),
        state_after: state(record.state_after).into(),
        peer: record.peer,
    }
}

/// A wire timestamp as the service's time; `None` when unset. Times before the epoch are
/// refused.
pub fn time_filter(
    value: Option<prost_types::Timestamp>,
    field: &'static str,
) -> Result<Option<Timestamp>, Error> {
    let Some(value) = value else {
        return Ok(None);
    };
    match (u64::try_from(value.seconds), u64::try_from(value.nanos)) {
        (Ok(seconds), Ok(nanos)) if nanos < 1_000_000_000 => Ok(Some(Timestamp::from_unix_nanos(
            seconds.saturating_mul(1_000_000_000).saturating_add(nanos),
        ))),
        _ => Err(Error::InvalidArgument(format!(
            "{field} must be a timestamp after 1970-01-01T00:00:00Z"
        ))),
    }
}
