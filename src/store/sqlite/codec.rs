//! How records are encoded in the store's BLOB columns: protobuf messages declared here (not in
//! the public API), so fields can be added later and old rows still decode.

use prost::Message;

use crate::core::{
    BreakerRecord, Bucket, Cause, FailureKind, FailureRecord, Mode, ProbeRecord, RateWindow, State,
    Timestamp, BUCKETS,
};
use crate::registry::{Event, Layer, OperatorAction};
use crate::store::Halt;

#[derive(Clone, PartialEq, Message)]
struct BreakerRow {
    #[prost(uint32, tag = "1")]
    state: u32,
    #[prost(bool, tag = "2")]
    tripped: bool,
    #[prost(uint64, tag = "3")]
    generation: u64,
    #[prost(uint64, tag = "4")]
    next_sequence: u64,
    #[prost(message, repeated, tag = "5")]
    failures: Vec<FailureRow>,
    #[prost(uint64, optional, tag = "6")]
    opened_at: Option<u64>,
    #[prost(uint64, optional, tag = "7")]
    recovery_at: Option<u64>,
    #[prost(message, repeated, tag = "8")]
    probes: Vec<ProbeRow>,
    #[prost(uint32, tag = "9")]
    probe_successes: u32,
    #[prost(uint32, optional, tag = "10")]
    opened_by: Option<u32>,
    #[prost(uint32, tag = "11")]
    open_streak: u32,
    #[prost(uint64, optional, tag = "12")]
    closed_at: Option<u64>,
    #[prost(message, optional, tag = "13")]
    window: Option<WindowRow>,
    /// The mode an operator set for the account, if any.
    #[prost(uint32, optional, tag = "14")]
    mode: Option<u32>,
}

#[derive(Clone, PartialEq, Message)]
struct WindowRow {
    #[prost(uint64, tag = "1")]
    width: u64,
    #[prost(uint64, tag = "2")]
    newest: u64,
    #[prost(message, repeated, tag = "3")]
    buckets: Vec<BucketRow>,
}

#[derive(Clone, PartialEq, Message)]
struct BucketRow {
    #[prost(uint32, tag = "1")]
    calls: u32,
    #[prost(uint32, tag = "2")]
    failures: u32,
    #[prost(uint32, tag = "3")]
    slow: u32,
}

#[derive(Clone, PartialEq, Message)]
struct HaltRow {
    #[prost(string, tag = "1")]
    operator: String,
    #[prost(string, tag = "2")]
    reason: String,
    #[prost(uint64, tag = "3")]
    at: u64,
}

#[derive(Clone, PartialEq, Message)]
struct FailureRow {
    #[prost(uint64, tag = "1")]
    at: u64,
    #[prost(uint64, optional, tag = "2")]
    permit_sequence: Option<u64>,
    #[prost(uint32, tag = "3")]
    kind: u32,
    #[prost(string, optional, tag = "4")]
    order_id: Option<String>,
    #[prost(string, optional, tag = "5")]
    detail: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ProbeRow {
    #[prost(uint64, tag = "1")]
    sequence: u64,
    #[prost(uint64, tag = "2")]
    expires_at: u64,
}

#[derive(Clone, PartialEq, Message)]
struct EventRow {
    #[prost(uint64, tag = "1")]
    sequence: u64,
    #[prost(string, tag = "2")]
    account_id: String,
    #[prost(uint32, tag = "3")]
    from: u32,
    #[prost(uint32, tag = "4")]
    to: u32,
    #[prost(uint32, tag = "5")]
    cause: u32,
    #[prost(string, tag = "6")]
    reason: String,
    #[prost(uint32, tag = "7")]
    failure_count: u32,
    #[prost(uint64, tag = "8")]
    at: u64,
    #[prost(uint64, tag = "9")]
    generation: u64,
    #[prost(uint64, optional, tag = "10")]
    recovery_at: Option<u64>,
    #[prost(string, optional, tag = "11")]
    operator: Option<String>,
    #[prost(string, optional, tag = "12")]
    operator_reason: Option<String>,
    /// 0 an account, 1 a group, 2 the firm.
    #[prost(uint32, tag = "13")]
    layer: u32,
    #[prost(string, tag = "14")]
    group: String,
    #[prost(uint32, optional, tag = "15")]
    failure_kind: Option<u32>,
    #[prost(string, tag = "16")]
    config_version: String,
}

pub fn state_code(state: State) -> u32 {
    match state {
        State::Closed => 1,
        State::Open => 2,
        State::HalfOpen => 3,
    }
}

pub fn state_from_code(code: u32) -> Option<State> {
    match code {
        1 => Some(State::Closed),
        2 => Some(State::Open),
        3 => Some(State::HalfOpen),
        _ => None,
    }
}

pub fn state_name(state: State) -> &'static str {
    match state {
        State::Closed => "CLOSED",
        State::Open => "OPEN",
        State::HalfOpen => "HALF_OPEN",
    }
}

pub fn state_from_name(name: &str) -> Option<State> {
    match name {
        "CLOSED" => Some(State::Closed),
        "OPEN" => Some(State::Open),
        "HALF_OPEN" => Some(State::HalfOpen),
        _ => None,
    }
}

fn cause_code(cause: Cause) -> u32 {
    match cause {
        Cause::FailureThresholdReached => 1,
        Cause::OpenTimeoutElapsed => 2,
        Cause::ProbesSucceeded => 3,
        Cause::ProbeFailed => 4,
        Cause::ProbeExpired => 5,
        Cause::OperatorReset => 6,
        Cause::OperatorTrip => 7,
        Cause::FailureKindTrip => 8,
        Cause::FailureRateReached => 9,
        Cause::SlowCallRateReached => 10,
        Cause::TripExpired => 11,
        Cause::Halted => 12,
        Cause::Resumed => 13,
    }
}

fn cause_from_code(code: u32) -> Option<Cause> {
    Some(match code {
        1 => Cause::FailureThresholdReached,
        2 => Cause::OpenTimeoutElapsed,
        3 => Cause::ProbesSucceeded,
        4 => Cause::ProbeFailed,
        5 => Cause::ProbeExpired,
        6 => Cause::OperatorReset,
        7 => Cause::OperatorTrip,
        8 => Cause::FailureKindTrip,
        9 => Cause::FailureRateReached,
        10 => Cause::SlowCallRateReached,
        11 => Cause::TripExpired,
        12 => Cause::Halted,
        13 => Cause::Resumed,
        _ => return None,
    })
}

fn kind_code(kind: FailureKind) -> u32 {
    FailureKind::ALL
        .iter()
        .position(|k| *k == kind)
        .map_or(0, |i| i as u32)
}

fn kind_from_code(code: u32) -> FailureKind {
    FailureKind::ALL
        .get(code as usize)
        .copied()
        .unwrap_or(FailureKind::Other)
}

fn mode_code(mode: Mode) -> u32 {
    match mode {
        Mode::Enforce => 1,
        Mode::Shadow => 2,
        Mode::Disabled => 3,
    }
}

fn mode_from_code(code: u32) -> Option<Mode> {
    match code {
        1 => Some(Mode::Enforce),
        2 => Some(Mode::Shadow),
        3 => Some(Mode::Disabled),
        _ => None,
    }
}

fn at(nanos: u64) -> Timestamp {
    Timestamp::from_unix_nanos(nanos)
}

pub fn encode_breaker(record: &BreakerRecord, mode: Option<Mode>) -> Vec<u8> {
    BreakerRow {
        state: state_code(record.state),
        tripped: record.tripped,
        generation: record.generation,
        next_sequence: record.next_sequence,
        failures: record
            .failures
            .iter()
            .map(|f| FailureRow {
                at: f.at.as_unix_nanos(),
                permit_sequence: f.permit_sequence,
                kind: kind_code(f.kind),
                order_id: f.order_id.as_deref().map(str::to_owned),
                detail: f.detail.as_deref().map(str::to_owned),
            })
            .collect(),
        opened_at: record.opened_at.map(Timestamp::as_unix_nanos),
        recovery_at: record.recovery_at.map(Timestamp::as_unix_nanos),
        probes: record
            .probes
            .iter()
            .map(|p| ProbeRow {
                sequence: p.sequence,
                expires_at: p.expires_at.as_unix_nanos(),
            })
            .collect(),
        probe_successes: record.probe_successes,
        opened_by: record.opened_by.map(cause_code),
        open_streak: record.open_streak,
        closed_at: record.closed_at.map(Timestamp::as_unix_nanos),
        window: record.window.as_ref().map(|w| WindowRow {
            width: w.width,
            newest: w.newest,
            buckets: w
                .buckets
                .iter()
                .map(|b| BucketRow {
                    calls: b.calls,
                    failures: b.failures,
                    slow: b.slow,
                })
                .collect(),
        }),
        mode: mode.map(mode_code),
    }
    .encode_to_vec()
}

/// A breaker record and the mode an operator set for the account.
pub fn decode_breaker(bytes: &[u8]) -> Result<(BreakerRecord, Option<Mode>), String> {
    let row = BreakerRow::decode(bytes).map_err(|e| e.to_string())?;
    let mode = match row.mode {
        Some(code) => Some(mode_from_code(code).ok_or_else(|| format!("unknown mode {code}"))?),
        None => None,
    };
    let window = row.window.map(|w| {
        let mut window = RateWindow {
            width: w.width,
            newest: w.newest,
            ..RateWindow::default()
        };
        for (slot, b) in window
            .buckets
            .iter_mut()
            .zip(w.buckets.iter().take(BUCKETS))
        {
            *slot = Bucket {
                calls: b.calls,
                failures: b.failures,
                slow: b.slow,
            };
        }
        window
    });
    let record = BreakerRecord {
        state: state_from_code(row.state).ok_or_else(|| format!("unknown state {}", row.state))?,
        tripped: row.tripped,
        generation: row.generation,
        next_sequence: row.next_sequence,
        failures: row
            .failures
            .into_iter()
            .map(|f| FailureRecord {
                at: at(f.at),
                permit_sequence: f.permit_sequence,
                kind: kind_from_code(f.kind),
                order_id: f.order_id.map(String::into_boxed_str),
                detail: f.detail.map(String::into_boxed_str),
            })
            .collect(),
        opened_at: row.opened_at.map(at),
        recovery_at: row.recovery_at.map(at),
        probes: row
            .probes
            .into_iter()
            .map(|p| ProbeRecord {
                sequence: p.sequence,
                expires_at: at(p.expires_at),
            })
            .collect(),
        probe_successes: row.probe_successes,
        opened_by: row.opened_by.and_then(cause_from_code),
        open_streak: row.open_streak,
        closed_at: row.closed_at.map(at),
        window,
    };
    Ok((record, mode))
}

pub fn encode_halt(halt: &Halt) -> Vec<u8> {
    HaltRow {
        operator: halt.operator.clone(),
        reason: halt.reason.clone(),
        at: halt.at.as_unix_nanos(),
    }
    .encode_to_vec()
}

pub fn decode_halt(bytes: &[u8]) -> Result<Halt, String> {
    let row = HaltRow::decode(bytes).map_err(|e| e.to_string())?;
    Ok(Halt {
        operator: row.operator,
        reason: row.reason,
        at: at(row.at),
    })
}

/// The key of a halt in the halts table.
pub fn halt_key(layer: &Layer) -> String {
    match layer {
        Layer::Firm => "firm".to_owned(),
        Layer::Group(name) => format!("group:{name}"),
        Layer::Account => "account".to_owned(),
    }
}

pub fn halt_layer(key: &str) -> Option<Layer> {
    match key {
        "firm" => Some(Layer::Firm),
        _ => key
            .strip_prefix("group:")
            .map(|name| Layer::Group(name.to_owned())),
    }
}

pub fn encode_event(event: &Event) -> Vec<u8> {
    EventRow {
        sequence: event.sequence,
        account_id: event.account_id.clone(),
        from: state_code(event.from),
        to: state_code(event.to),
        cause: cause_code(event.cause),
        reason: event.reason.clone(),
        failure_count: event.failure_count,
        at: event.at.as_unix_nanos(),
        generation: event.generation,
        recovery_at: event.recovery_at.map(Timestamp::as_unix_nanos),
        operator: event.operator.as_ref().map(|o| o.operator.clone()),
        operator_reason: event.operator.as_ref().map(|o| o.reason.clone()),
        layer: match event.layer {
            Layer::Account => 0,
            Layer::Group(_) => 1,
            Layer::Firm => 2,
        },
        group: match &event.layer {
            Layer::Group(name) => name.clone(),
            _ => String::new(),
        },
        failure_kind: event.failure_kind.map(kind_code),
        config_version: event.config_version.to_string(),
    }
    .encode_to_vec()
}

pub fn decode_event(bytes: &[u8]) -> Result<Event, String> {
    let row = EventRow::decode(bytes).map_err(|e| e.to_string())?;
    let state = |code| state_from_code(code).ok_or_else(|| format!("unknown state {code}"));
    Ok(Event {
        sequence: row.sequence,
        account_id: row.account_id,
        from: state(row.from)?,
        to: state(row.to)?,
        cause: cause_from_code(row.cause).ok_or_else(|| format!("unknown cause {}", row.cause))?,
        reason: row.reason,
        failure_count: row.failure_count,
        at: at(row.at),
        generation: row.generation,
        recovery_at: row.recovery_at.map(at),
        operator: match (row.operator, row.operator_reason) {
            (Some(operator), Some(reason)) => Some(OperatorAction { operator, reason }),
            _ => None,
        },
        layer: match row.layer {
            1 => Layer::Group(row.group),
            2 => Layer::Firm,
            _ => Layer::Account,
        },
        failure_kind: row.failure_kind.map(kind_from_code),
        config_version: row.config_version.into(),
    })
}
