//! Conversions between the wire types and the service's own. Pure functions; no decisions.

use std::time::Duration;

use tonic::Status;

use crate::core::{
    Cause, Denial, Disposition, Failure, FailureKind, Intent, Mode, Outcome, Overrides, Pass,
    Report, Settings, State, Timestamp,
};
use crate::error::Error;
use crate::history::{AuditAction, AuditRecord, Event, Halt, Layer, Scope};
use crate::proto;
use crate::registry::{BreakerView, CheckResult, Denied, ReportResult, SettingSource};

/// Longest order id accepted with an outcome.
pub const MAX_ORDER_ID_LEN: usize = 128;
/// Longest failure detail accepted with an outcome.
pub const MAX_DETAIL_LEN: usize = 256;

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

pub fn intent(value: i32) -> Result<Intent, Error> {
    match proto::Intent::try_from(value) {
        Ok(proto::Intent::Unspecified | proto::Intent::New) => Ok(Intent::New),
        Ok(proto::Intent::ReduceOnly) => Ok(Intent::ReduceOnly),
        Ok(proto::Intent::Cancel) => Ok(Intent::Cancel),
        Err(_) => Err(Error::InvalidEnum {
            field: "intent",
            allowed: "INTENT_UNSPECIFIED (new), INTENT_NEW, INTENT_REDUCE_ONLY, INTENT_CANCEL",
        }),
    }
}

pub fn failure_kind(value: i32) -> Result<FailureKind, Error> {
    Ok(match proto::FailureKind::try_from(value) {
        Ok(proto::FailureKind::Unspecified) => FailureKind::Unspecified,
        Ok(proto::FailureKind::OrderRejected) => FailureKind::OrderRejected,
        Ok(proto::FailureKind::Timeout) => FailureKind::Timeout,
        Ok(proto::FailureKind::ConnectionLost) => FailureKind::ConnectionLost,
        Ok(proto::FailureKind::MarginExhausted) => FailureKind::MarginExhausted,
        Ok(proto::FailureKind::DataFeedStale) => FailureKind::DataFeedStale,
        Ok(proto::FailureKind::Other) => FailureKind::Other,
        Err(_) => return Err(Error::InvalidEnum {
            field: "failure_kind",
            allowed: "FAILURE_KIND_UNSPECIFIED, FAILURE_KIND_ORDER_REJECTED, FAILURE_KIND_TIMEOUT, FAILURE_KIND_CONNECTION_LOST, FAILURE_KIND_MARGIN_EXHAUSTED, FAILURE_KIND_DATA_FEED_STALE, FAILURE_KIND_OTHER",
        }),
    })
}

fn kind(kind: FailureKind) -> proto::FailureKind {
    match kind {
        FailureKind::Unspecified => proto::FailureKind::Unspecified,
        FailureKind::OrderRejected => proto::FailureKind::OrderRejected,
        FailureKind::Timeout => proto::FailureKind::Timeout,
        FailureKind::ConnectionLost => proto::FailureKind::ConnectionLost,
        FailureKind::MarginExhausted => proto::FailureKind::MarginExhausted,
        FailureKind::DataFeedStale => proto::FailureKind::DataFeedStale,
        FailureKind::Other => proto::FailureKind::Other,
    }
}

/// A mode from the wire: `MODE_UNSPECIFIED` means the configured one.
pub fn mode_request(value: i32) -> Result<Option<Mode>, Error> {
    match proto::Mode::try_from(value) {
        Ok(proto::Mode::Unspecified) => Ok(None),
        Ok(proto::Mode::Enforce) => Ok(Some(Mode::Enforce)),
        Ok(proto::Mode::Shadow) => Ok(Some(Mode::Shadow)),
        Ok(proto::Mode::Disabled) => Ok(Some(Mode::Disabled)),
        Err(_) => Err(Error::InvalidEnum {
            field: "mode",
            allowed:
                "MODE_UNSPECIFIED (the configured mode), MODE_ENFORCE, MODE_SHADOW, MODE_DISABLED",
        }),
    }
}

fn mode(mode: Mode) -> proto::Mode {
    match mode {
        Mode::Enforce => proto::Mode::Enforce,
        Mode::Shadow => proto::Mode::Shadow,
        Mode::Disabled => proto::Mode::Disabled,
    }
}

fn layer(layer: &Layer) -> (proto::Layer, String) {
    match layer {
        Layer::Firm => (proto::Layer::Firm, String::new()),
        Layer::Group(name) => (proto::Layer::Group, name.clone()),
        Layer::Account => (proto::Layer::Account, String::new()),
    }
}

/// The report of a `ReportOutcomeRequest`, checked.
pub fn report(request: &proto::ReportOutcomeRequest) -> Result<Report, Error> {
    let failed = outcome(request.outcome)? == Outcome::Failure;
    let text = |value: &str, field: &'static str, max: usize| -> Result<Option<Box<str>>, Error> {
        if value.len() > max {
            return Err(Error::FieldTooLong { field, max });
        }
        if value.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "{field} must not contain control characters"
            )));
        }
        Ok((!value.is_empty()).then(|| value.into()))
    };
    let latency = match request.latency {
        None => None,
        Some(d) if d.seconds >= 0 && (0..1_000_000_000).contains(&d.nanos) => Some(
            Duration::from_secs(d.seconds.unsigned_abs())
                + Duration::from_nanos(d.nanos.unsigned_abs().into()),
        ),
        Some(_) => {
            return Err(Error::InvalidArgument(
                "latency must be a non-negative duration".into(),
            ))
        }
    };
    Ok(Report {
        failed,
        kind: failure_kind(request.failure_kind)?,
        latency,
        order_id: text(&request.order_id, "order_id", MAX_ORDER_ID_LEN)?,
        detail: text(&request.detail, "detail", MAX_DETAIL_LEN)?,
    })
}

pub fn failure(failure: &Failure) -> proto::FailureRecord {
    proto::FailureRecord {
        time: Some(timestamp(failure.at)),
        kind: kind(failure.kind).into(),
        order_id: failure.order_id.as_deref().unwrap_or_default().to_owned(),
        detail: failure.detail.as_deref().unwrap_or_default().to_owned(),
    }
}

/// A halt in force; `defined`: whether its group (if any) is in the configuration.
pub fn halt(scope: &Scope, halt: &Halt, defined: bool) -> proto::Halt {
    let (layer, group) = layer(&Layer::from(scope));
    proto::Halt {
        layer: layer.into(),
        group,
        operator: halt.operator.clone(),
        reason: halt.reason.clone(),
        since: Some(timestamp(halt.at)),
        group_undefined: !defined,
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
        Cause::FailureKindTrip => proto::TransitionCause::FailureKindTrip,
        Cause::FailureRateReached => proto::TransitionCause::FailureRateReached,
        Cause::SlowCallRateReached => proto::TransitionCause::SlowCallRateReached,
        Cause::TripExpired => proto::TransitionCause::TripExpired,
        Cause::Halted => proto::TransitionCause::Halted,
        Cause::Resumed => proto::TransitionCause::Resumed,
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

/// A check's answer; `epoch`: the cluster leader's that decided it (0 on a single node).
pub fn check_response(result: CheckResult, epoch: u64) -> proto::CheckTradeResponse {
    let (denial, retry_after, opened_by) = match result.denied() {
        None => (proto::Denial::Unspecified, None, None),
        Some(Denied::Breaker(Denial::Open { retry_after, rule })) => {
            (proto::Denial::BreakerOpen, Some(*retry_after), Some(*rule))
        }
        Some(Denied::Breaker(Denial::Tripped { retry_after })) => (
            proto::Denial::OperatorTrip,
            *retry_after,
            Some(Cause::OperatorTrip),
        ),
        Some(Denied::Breaker(Denial::ProbesInFlight { retry_after })) => {
            (proto::Denial::ProbesInFlight, Some(*retry_after), None)
        }
        Some(Denied::Breaker(Denial::ReduceOnlyWhileRecovering)) => {
            (proto::Denial::ReduceOnlyWhileRecovering, None, None)
        }
        Some(Denied::StoreUnavailable) => (proto::Denial::StoreUnavailable, None, None),
        Some(Denied::Halted {
            scope: Scope::Group(_),
            ..
        }) => (proto::Denial::GroupHalted, None, None),
        Some(Denied::Halted {
            scope: Scope::Firm, ..
        }) => (proto::Denial::FirmHalted, None, None),
    };
    let (layer, group) = result
        .denied()
        .map(|d| layer(&d.layer()))
        .unwrap_or((proto::Layer::Unspecified, String::new()));
    let permit_id = result.permit_id();
    let would_deny = result.allowed && result.denied().is_some();
    let tripped_by = result.tripped_by().iter().map(failure).collect();
    let passed = match result.passed() {
        None => proto::Pass::Unspecified,
        Some(Pass::Cancel) => proto::Pass::Cancel,
        Some(Pass::ReduceOnly) => proto::Pass::ReduceOnly,
    };
    proto::CheckTradeResponse {
        allowed: result.allowed,
        state: state(result.state).into(),
        permit_id,
        retry_after: retry_after.map(duration),
        failure_count: result.failure_count,
        denial: denial.into(),
        probe: result.probe,
        generation: result.generation(),
        would_deny,
        layer: layer.into(),
        group,
        opened_by: opened_by
            .map_or(proto::TransitionCause::Unspecified, cause)
            .into(),
        tripped_by,
        mode: mode(result.mode).into(),
        passed: passed.into(),
        reason: result.into_reason(),
        epoch,
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
        failure_rate_threshold: settings.failure_rate_threshold.unwrap_or(0.0),
        slow_call: settings.slow_call.map(duration),
        slow_call_rate_threshold: settings.slow_call_rate_threshold.unwrap_or(0.0),
        minimum_calls: settings.minimum_calls,
        open_backoff_multiplier: settings.open_backoff_multiplier,
        max_open_timeout: Some(duration(settings.max_open_timeout)),
        open_backoff_jitter: settings.open_backoff_jitter,
        backoff_reset: Some(duration(settings.backoff_reset)),
        allow_reduce_only_when_open: settings.allow_reduce_only_when_open,
        configured_mode: mode(settings.mode).into(),
        failure_kinds: FailureKind::ALL
            .iter()
            .map(|k| {
                (
                    k.key().to_owned(),
                    settings.failure_kinds.get(*k).key().to_owned(),
                )
            })
            .collect(),
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
        failures: view.failures.iter().map(failure).collect(),
        opened_by: view
            .opened_by
            .map_or(proto::TransitionCause::Unspecified, cause)
            .into(),
        open_streak: view.open_streak,
        mode: mode(view.mode).into(),
        mode_set_by_operator: view.mode_set_by_operator,
        groups: view.groups,
        setting_sources: view
            .setting_sources
            .iter()
            .map(|(key, source)| (key.clone(), setting_source(*source).into()))
            .collect(),
        operator_settings: view.operator_settings.as_deref().map(account_settings),
        account_id: view.account_id,
    }
}

fn setting_source(source: SettingSource) -> proto::SettingSource {
    match source {
        SettingSource::Default => proto::SettingSource::Default,
        SettingSource::File => proto::SettingSource::File,
        SettingSource::Operator => proto::SettingSource::Operator,
    }
}

/// An operator's settings as the API shows them.
pub fn account_settings(o: &Overrides) -> proto::AccountSettings {
    let secs = |v: Option<f64>| v.map(|v| duration(Duration::from_secs_f64(v.max(0.0))));
    proto::AccountSettings {
        failure_threshold: o.failure_threshold,
        failure_window: secs(o.failure_window_secs),
        open_timeout: secs(o.open_timeout_secs),
        half_open_max_tries: o.half_open_max_tries,
        half_open_timeout: secs(o.half_open_timeout_secs),
        failure_rate_threshold: o.failure_rate_threshold,
        slow_call: secs(o.slow_call_secs),
        slow_call_rate_threshold: o.slow_call_rate_threshold,
        minimum_calls: o.minimum_calls,
        open_backoff_multiplier: o.open_backoff_multiplier,
        max_open_timeout: secs(o.max_open_timeout_secs),
        open_backoff_jitter: o.open_backoff_jitter,
        backoff_reset: secs(o.backoff_reset_secs),
        allow_reduce_only_when_open: o.allow_reduce_only_when_open,
        failure_kinds: o
            .failure_kinds
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Settings a caller gives, as the core lays them over the configured ones; each value is
/// checked there, a duration only for its sign and range here.
pub fn overrides(settings: proto::AccountSettings) -> Result<Overrides, Status> {
    let secs = |value: Option<prost_types::Duration>, name: &str| -> Result<Option<f64>, Status> {
        let Some(d) = value else { return Ok(None) };
        if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
            return Err(Status::invalid_argument(format!(
                "settings.{name} must be a duration >= 0 (seconds {}, nanos {})",
                d.seconds, d.nanos
            )));
        }
        Ok(Some(d.seconds as f64 + f64::from(d.nanos) / 1e9))
    };
    Ok(Overrides {
        failure_threshold: settings.failure_threshold,
        failure_window_secs: secs(settings.failure_window, "failure_window")?,
        open_timeout_secs: secs(settings.open_timeout, "open_timeout")?,
        half_open_max_tries: settings.half_open_max_tries,
        half_open_timeout_secs: secs(settings.half_open_timeout, "half_open_timeout")?,
        failure_rate_threshold: settings.failure_rate_threshold,
        slow_call_secs: secs(settings.slow_call, "slow_call")?,
        slow_call_rate_threshold: settings.slow_call_rate_threshold,
        minimum_calls: settings.minimum_calls,
        open_backoff_multiplier: settings.open_backoff_multiplier,
        max_open_timeout_secs: secs(settings.max_open_timeout, "max_open_timeout")?,
        open_backoff_jitter: settings.open_backoff_jitter,
        backoff_reset_secs: secs(settings.backoff_reset, "backoff_reset")?,
        allow_reduce_only_when_open: settings.allow_reduce_only_when_open,
        failure_kinds: settings.failure_kinds.into_iter().collect(),
    })
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
        layer: layer(&event.layer).0.into(),
        group: layer(&event.layer).1,
        failure_kind: event
            .failure_kind
            .map_or(proto::FailureKind::Unspecified, kind)
            .into(),
        config_version: event.config_version.to_string(),
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
            AuditAction::SetMode => proto::AuditAction::SetMode,
            AuditAction::SetSettings => proto::AuditAction::SetSettings,
            AuditAction::HaltAll => proto::AuditAction::HaltAll,
            AuditAction::ResumeAll => proto::AuditAction::ResumeAll,
            AuditAction::HaltGroup => proto::AuditAction::HaltGroup,
            AuditAction::ResumeGroup => proto::AuditAction::ResumeGroup,
        }
        .into(),
        group: record.group,
        detail: record.detail,
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

#[cfg(test)]
mod tests {
    //! The wire's hostile side: whatever a client sends, validation answers without panicking,
    //! and what it accepts keeps the documented bounds.

    use proptest::prelude::*;

    use super::*;
    use crate::history::OperatorAction;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn a_report_is_validated_whatever_it_holds(
            outcome in any::<i32>(),
            failure_kind in any::<i32>(),
            detail in ".{0,300}",
            order_id in ".{0,160}",
            latency in proptest::option::of((any::<i64>(), any::<i32>())),
        ) {
            let request = proto::ReportOutcomeRequest {
                account_id: "ACC".into(),
                permit_id: String::new(),
                outcome,
                failure_kind,
                detail: detail.clone(),
                order_id: order_id.clone(),
                latency: latency.map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
            };
            if let Ok(report) = report(&request) {
                prop_assert!(outcome == 1 || outcome == 2);
                prop_assert!((0..7).contains(&failure_kind));
                prop_assert!(report.detail.as_deref().unwrap_or("").len() <= MAX_DETAIL_LEN);
                prop_assert!(report.order_id.as_deref().unwrap_or("").len() <= MAX_ORDER_ID_LEN);
                prop_assert!(!report.detail.as_deref().unwrap_or("").chars().any(char::is_control));
                prop_assert_eq!(report.failed, outcome == 2);
            }
        }

        #[test]
        fn enums_from_the_wire_never_panic(value in any::<i32>()) {
            let _ = intent(value);
            let _ = mode_request(value);
            let _ = failure_kind(value);
            let _ = state_filter(value);
            prop_assert_eq!(outcome(value).is_ok(), value == 1 || value == 2);
        }

        #[test]
        fn an_operator_action_is_bounded(operator in "\\PC{0,200}|.{0,10}", reason in ".{0,1100}") {
            if let Ok(action) = OperatorAction::new(&operator, &reason) {
                prop_assert!(!action.operator.is_empty() && action.operator.len() <= 128);
                prop_assert!(!action.reason.is_empty() && action.reason.len() <= 1024);
                prop_assert!(!action.operator.chars().chain(action.reason.chars()).any(char::is_control));
            }
        }

        #[test]
        fn a_timestamp_filter_refuses_what_is_not_a_time(seconds in any::<i64>(), nanos in any::<i32>()) {
            let parsed = time_filter(Some(prost_types::Timestamp { seconds, nanos }), "since");
            prop_assert_eq!(parsed.is_ok(), seconds >= 0 && (0..1_000_000_000).contains(&nanos));
        }
    }
}
