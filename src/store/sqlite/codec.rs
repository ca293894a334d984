//! How records are encoded in the store's BLOB columns: protobuf messages declared here (not in
//! the public API), so fields can be added later and old rows still decode.

use prost::Message;

use crate::core::{BreakerRecord, Cause, FailureRecord, ProbeRecord, State, Timestamp};
use crate::registry::{Event, OperatorAction};

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
}

#[derive(Clone, PartialEq, Message)]
struct FailureRow {
    #[prost(uint64, tag = "1")]
    at: u64,
    #[prost(uint64, optional, tag = "2")]
    permit_sequence: Option<u64>,
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
        _ => return None,
    })
}

fn at(nanos: u64) -> Timestamp {
    Timestamp::from_unix_nanos(nanos)
}

pub fn encode_breaker(record: &BreakerRecord) -> Vec<u8> {
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
    }
    .encode_to_vec()
}

pub fn decode_breaker(bytes: &[u8]) -> Result<BreakerRecord, String> {
    let row = BreakerRow::decode(bytes).map_err(|e| e.to_string())?;
    Ok(BreakerRecord {
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
    })
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
    })
}
