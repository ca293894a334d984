//! riskgate's messages as people and scripts read them: names for the wire's enums, times as
//! RFC 3339, and each message as one JSON object with every field named as in the API. The
//! CLI's `--json` output and the web console both speak this form.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::proto::{
    AuditAction, AuditRecord, Breaker, BreakerEvent, BreakerState, FailureKind, GetClusterResponse,
    Halt, Layer, Mode, NodeRole, SettingSource, TransitionCause,
};

pub fn state_name(state: i32) -> &'static str {
    match BreakerState::try_from(state) {
        Ok(BreakerState::Closed) => "CLOSED",
        Ok(BreakerState::Open) => "OPEN",
        Ok(BreakerState::HalfOpen) => "HALF_OPEN",
        Ok(BreakerState::Unspecified) | Err(_) => "UNKNOWN",
    }
}

pub fn cause_name(cause: i32) -> &'static str {
    match TransitionCause::try_from(cause) {
        Ok(TransitionCause::FailureThresholdReached) => "failure threshold reached",
        Ok(TransitionCause::OpenTimeoutElapsed) => "open timeout elapsed",
        Ok(TransitionCause::ProbesSucceeded) => "probes succeeded",
        Ok(TransitionCause::ProbeFailed) => "probe failed",
        Ok(TransitionCause::ProbeExpired) => "probe expired",
        Ok(TransitionCause::OperatorReset) => "operator reset",
        Ok(TransitionCause::OperatorTrip) => "operator trip",
        Ok(TransitionCause::FailureKindTrip) => "failure kind set to trip",
        Ok(TransitionCause::FailureRateReached) => "failure rate reached",
        Ok(TransitionCause::SlowCallRateReached) => "slow-call rate reached",
        Ok(TransitionCause::TripExpired) => "timed trip ended",
        Ok(TransitionCause::Halted) => "halted",
        Ok(TransitionCause::Resumed) => "resumed",
        Ok(TransitionCause::Unspecified) | Err(_) => "unknown cause",
    }
}

pub fn mode_name(mode: i32) -> &'static str {
    match Mode::try_from(mode) {
        Ok(Mode::Enforce) => "enforce",
        Ok(Mode::Shadow) => "shadow",
        Ok(Mode::Disabled) => "disabled",
        Ok(Mode::Unspecified) | Err(_) => "unknown",
    }
}

pub fn kind_name(kind: i32) -> &'static str {
    match FailureKind::try_from(kind) {
        Ok(FailureKind::OrderRejected) => "order_rejected",
        Ok(FailureKind::Timeout) => "timeout",
        Ok(FailureKind::ConnectionLost) => "connection_lost",
        Ok(FailureKind::MarginExhausted) => "margin_exhausted",
        Ok(FailureKind::DataFeedStale) => "data_feed_stale",
        Ok(FailureKind::Other) => "other",
        Ok(FailureKind::Unspecified) | Err(_) => "unspecified",
    }
}

pub fn action_name(action: i32) -> String {
    AuditAction::try_from(action)
        .map(|a| {
            a.as_str_name()
                .trim_start_matches("AUDIT_ACTION_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unspecified".to_owned())
}

pub fn role_name(role: i32) -> &'static str {
    match NodeRole::try_from(role).unwrap_or(NodeRole::Unspecified) {
        NodeRole::Single => "single node",
        NodeRole::Leader => "leader",
        NodeRole::Standby => "standby",
        NodeRole::Candidate => "candidate",
        NodeRole::Fenced => "fenced",
        NodeRole::Unspecified => "unknown role",
    }
}

pub fn system_time(at: &prost_types::Timestamp) -> SystemTime {
    let secs = u64::try_from(at.seconds).unwrap_or(0);
    let nanos = u32::try_from(at.nanos).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

/// RFC 3339 in UTC, to the millisecond.
pub fn time(at: &prost_types::Timestamp) -> String {
    humantime::format_rfc3339_millis(system_time(at)).to_string()
}

/// A wire duration as a `Duration`, a negative one as zero.
pub fn std_duration(d: &prost_types::Duration) -> Duration {
    Duration::new(
        u64::try_from(d.seconds).unwrap_or(0),
        u32::try_from(d.nanos).unwrap_or(0),
    )
}

pub fn duration_secs(d: Option<&prost_types::Duration>) -> Option<f64> {
    d.map(|d| std_duration(d).as_secs_f64())
}

/// One setting in force: its configuration key, its value as the file would write it, and
/// where it comes from (`default`, `file`, `operator`; empty when not known).
pub struct SettingInForce {
    pub key: String,
    pub value: String,
    pub source: &'static str,
}

/// An account's settings in force, in the order of the configuration file's `[breaker]`.
pub fn settings(b: &Breaker) -> Vec<SettingInForce> {
    let Some(s) = &b.settings else {
        return Vec::new();
    };
    let secs = |d: &Option<prost_types::Duration>| {
        d.as_ref().map_or("0".to_owned(), |d| {
            std_duration(d).as_secs_f64().to_string()
        })
    };
    let mut lines: Vec<(String, String)> = vec![
        ("failure_threshold".into(), s.failure_threshold.to_string()),
        ("failure_window_secs".into(), secs(&s.failure_window)),
        ("open_timeout_secs".into(), secs(&s.open_timeout)),
        (
            "half_open_max_tries".into(),
            s.half_open_max_tries.to_string(),
        ),
        ("half_open_timeout_secs".into(), secs(&s.half_open_timeout)),
        (
            "failure_rate_threshold".into(),
            s.failure_rate_threshold.to_string(),
        ),
        ("slow_call_secs".into(), secs(&s.slow_call)),
        (
            "slow_call_rate_threshold".into(),
            s.slow_call_rate_threshold.to_string(),
        ),
        ("minimum_calls".into(), s.minimum_calls.to_string()),
        (
            "open_backoff_multiplier".into(),
            s.open_backoff_multiplier.to_string(),
        ),
        ("max_open_timeout_secs".into(), secs(&s.max_open_timeout)),
        (
            "open_backoff_jitter".into(),
            s.open_backoff_jitter.to_string(),
        ),
        ("backoff_reset_secs".into(), secs(&s.backoff_reset)),
        (
            "allow_reduce_only_when_open".into(),
            s.allow_reduce_only_when_open.to_string(),
        ),
    ];
    let mut kinds: Vec<_> = s.failure_kinds.iter().collect();
    kinds.sort();
    lines.extend(
        kinds
            .into_iter()
            .map(|(kind, action)| (format!("failure_kinds.{kind}"), format!("{action:?}"))),
    );
    lines
        .into_iter()
        .map(|(key, value)| {
            let source = b
                .setting_sources
                .get(&key)
                .and_then(|s| SettingSource::try_from(*s).ok())
                .map_or("", |s| match s {
                    SettingSource::Operator => "operator",
                    SettingSource::File => "file",
                    SettingSource::Default => "default",
                    SettingSource::Unspecified => "",
                });
            SettingInForce { key, value, source }
        })
        .collect()
}

fn cause_key(cause: i32) -> Option<String> {
    TransitionCause::try_from(cause)
        .ok()
        .filter(|c| *c != TransitionCause::Unspecified)
        .map(|c| {
            c.as_str_name()
                .trim_start_matches("TRANSITION_CAUSE_")
                .to_ascii_lowercase()
        })
}

/// A breaker (`riskgate status --json`).
pub fn breaker(b: &Breaker) -> Value {
    let failures: Vec<Value> = b
        .failures
        .iter()
        .map(|f| {
            json!({
                "time": f.time.as_ref().map(time),
                "kind": kind_name(f.kind),
                "order_id": f.order_id,
                "detail": f.detail,
            })
        })
        .collect();
    let probe_expiries: Vec<Option<String>> = b
        .probes
        .iter()
        .map(|p| p.expires_at.as_ref().map(time))
        .collect();
    json!({
        "account_id": b.account_id,
        "state": state_name(b.state),
        "mode": mode_name(b.mode),
        "mode_set_by_operator": b.mode_set_by_operator,
        "generation": b.generation,
        "failure_count": b.failure_count,
        "failures": failures,
        "opened_at": b.opened_at.as_ref().map(time),
        "opened_by": cause_key(b.opened_by),
        "opened_by_text": (b.opened_by != TransitionCause::Unspecified as i32).then(|| cause_name(b.opened_by)),
        "recovery_at": b.recovery_at.as_ref().map(time),
        "tripped_by_operator": b.tripped_by_operator,
        "probes_in_flight": b.probes.len(),
        "probe_expiries": probe_expiries,
        "probe_successes": b.probe_successes,
        "half_open_max_tries": b.settings.as_ref().map(|s| s.half_open_max_tries),
        "open_streak": b.open_streak,
        "groups": b.groups,
        "last_sequence": b.last_sequence,
    })
}

/// A breaker with its settings in force and where each comes from (the console's account
/// page).
pub fn breaker_in_full(b: &Breaker) -> Value {
    let mut value = breaker(b);
    let settings: Vec<Value> = settings(b)
        .into_iter()
        .map(|s| json!({ "key": s.key, "value": s.value, "source": s.source }))
        .collect();
    if let Value::Object(map) = &mut value {
        map.insert("settings".into(), Value::Array(settings));
    }
    value
}

/// A halt (`riskgate halts --json`).
pub fn halt(h: &Halt) -> Value {
    let scope = if h.layer == Layer::Firm as i32 {
        "firm"
    } else {
        "group"
    };
    json!({
        "scope": scope,
        "group": h.group,
        "group_undefined": h.group_undefined,
        "operator": h.operator,
        "reason": h.reason,
        "since": h.since.as_ref().map(time),
    })
}

/// An audit record (`riskgate audit --json`).
pub fn audit(r: &AuditRecord) -> Value {
    json!({
        "id": r.id,
        "time": r.time.as_ref().map(time),
        "account_id": r.account_id,
        "group": r.group,
        "action": action_name(r.action),
        "operator": r.operator,
        "reason": r.reason,
        "state_before": state_name(r.state_before),
        "state_after": state_name(r.state_after),
        "peer": r.peer,
        "detail": r.detail,
    })
}

/// A breaker event: a change of one account's state, or a firm or group halt or resume.
pub fn event(e: &BreakerEvent) -> Value {
    let layer = match Layer::try_from(e.layer) {
        Ok(Layer::Firm) => "firm",
        Ok(Layer::Group) => "group",
        _ => "account",
    };
    json!({
        "sequence": e.sequence,
        "time": e.time.as_ref().map(time),
        "layer": layer,
        "account_id": e.account_id,
        "group": e.group,
        "from_state": state_name(e.from_state),
        "to_state": state_name(e.to_state),
        "cause": cause_key(e.cause),
        "cause_text": cause_name(e.cause),
        "reason": e.reason,
        "failure_count": e.failure_count,
        "failure_kind": (e.failure_kind != FailureKind::Unspecified as i32).then(|| kind_name(e.failure_kind)),
        "recovery_at": e.recovery_at.as_ref().map(time),
        "operator": e.operator,
        "operator_reason": e.operator_reason,
        "generation": e.generation,
    })
}

/// The cluster, one object per member (`riskgate cluster --json`); a single node is one
/// object saying so.
pub fn cluster(c: &GetClusterResponse) -> Vec<Value> {
    if !c.clustered {
        return vec![json!({ "clustered": false })];
    }
    c.members
        .iter()
        .map(|m| {
            json!({
                "clustered": true,
                "node_id": m.node_id,
                "address": m.address,
                "leader": m.leader,
                "applied_revision": m.applied_revision,
                "lag_revisions": m.lag_revisions,
                "reported_ago_secs": duration_secs(m.reported_ago.as_ref()),
                "lease_left_secs": duration_secs(m.lease_left.as_ref()),
                "leader_id": c.leader_id,
                "leader_address": c.leader_address,
                "epoch": c.epoch,
                "etcd_revision": c.etcd_revision,
                "answered_by": c.node_id,
                "answered_by_role": role_name(c.role),
            })
        })
        .collect()
}
