//! How records are encoded in the store's BLOB columns: protobuf messages declared here (not in
//! the public API), so fields can be added later and old rows still decode. The code tables
//! are in `codes`, the hand-written encoder of the breaker row in `protobuf`.

mod codes;
mod protobuf;

use codes::*;
pub use codes::{state_from_name, state_name};
pub use protobuf::encode_breaker_into;
use protobuf::sums_of;

use prost::Message;

use crate::core::{
    BreakerRecord, Bucket, FailureRecord, Mode, Overrides, ProbeRecord, RateWindow, Timestamp,
    BUCKETS,
};
use crate::history::{Event, Halt, Layer, OperatorAction, Scope};

/// A breaker. Its failures (up to 32 per account, and written again with every change of a
/// failing account) are stored as packed columns: each time as the difference from the one
/// before, so a failure costs about four bytes instead of the fourteen of a `FailureRow`.
/// `failures` is how releases before schema 4 stored them; it is still read.
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
    /// The failures' times in Unix nanoseconds: the first as it is, each next one as the
    /// (wrapping) difference from the one before.
    #[prost(sint64, repeated, tag = "15")]
    failure_at: Vec<i64>,
    /// The failures' kinds, one per time.
    #[prost(uint32, repeated, tag = "16")]
    failure_kind: Vec<u32>,
    /// The failures' permit sequences plus one (0: reported without a permit), one per time;
    /// empty when no failure had a permit.
    #[prost(uint64, repeated, tag = "17")]
    failure_permit: Vec<u64>,
    /// The order ids and details of the failures that have them.
    #[prost(message, repeated, tag = "18")]
    failure_text: Vec<FailureText>,
    /// The permits of the remembered failures (those that left the window): the first as it
    /// is, each next one as the (wrapping) difference from the one before. Rows written before
    /// this field kept those failures whole in the failure columns.
    #[prost(sint64, repeated, tag = "19")]
    remembered: Vec<i64>,
    /// The settings an operator set for the account (`SetAccountSettings`), as JSON keyed
    /// like the configuration file.
    #[prost(bytes = "vec", optional, tag = "20")]
    settings: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct FailureText {
    /// The failure's position in `failure_at`.
    #[prost(uint32, tag = "1")]
    index: u32,
    #[prost(string, optional, tag = "2")]
    order_id: Option<String>,
    #[prost(string, optional, tag = "3")]
    detail: Option<String>,
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

#[cfg(test)]
pub fn encode_breaker(
    record: &BreakerRecord,
    mode: Option<Mode>,
    settings: Option<&Overrides>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_breaker_into(record, mode, settings, &mut out);
    out
}

/// The failures of a row, whichever way it stores them.
fn decode_failures(row: &mut BreakerRow) -> Result<Vec<FailureRecord>, String> {
    if !row.failures.is_empty() {
        return Ok(std::mem::take(&mut row.failures)
            .into_iter()
            .map(|f| FailureRecord {
                at: at(f.at),
                permit_sequence: f.permit_sequence,
                kind: kind_from_code(f.kind),
                order_id: f.order_id.map(String::into_boxed_str),
                detail: f.detail.map(String::into_boxed_str),
            })
            .collect());
    }
    let count = row.failure_at.len();
    if row.failure_kind.len() != count
        || !(row.failure_permit.is_empty() || row.failure_permit.len() == count)
    {
        return Err(format!(
            "its failure columns disagree: {count} times, {} kinds, {} permits",
            row.failure_kind.len(),
            row.failure_permit.len()
        ));
    }
    let mut failures: Vec<FailureRecord> = sums_of(&row.failure_at)
        .zip(&row.failure_kind)
        .enumerate()
        .map(|(index, (nanos, kind))| FailureRecord {
            at: at(nanos),
            permit_sequence: row.failure_permit.get(index).and_then(|s| s.checked_sub(1)),
            kind: kind_from_code(*kind),
            order_id: None,
            detail: None,
        })
        .collect();
    for text in std::mem::take(&mut row.failure_text) {
        let failure = failures
            .get_mut(text.index as usize)
            .ok_or_else(|| format!("the text of failure {} has no failure", text.index))?;
        failure.order_id = text.order_id.map(String::into_boxed_str);
        failure.detail = text.detail.map(String::into_boxed_str);
    }
    Ok(failures)
}

/// A breaker as stored: its record, and what an operator set for the account.
#[derive(Debug)]
pub struct DecodedBreaker {
    pub record: BreakerRecord,
    pub mode: Option<Mode>,
    pub settings: Option<Overrides>,
}

/// A breaker record and the mode and settings an operator set for the account.
pub fn decode_breaker(bytes: &[u8]) -> Result<DecodedBreaker, String> {
    let mut row = BreakerRow::decode(bytes).map_err(|e| e.to_string())?;
    let failures = decode_failures(&mut row)?;
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
        failures,
        remembered: sums_of(&row.remembered).collect(),
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
    let settings = match row.settings {
        Some(json) => Some(
            serde_json::from_slice(&json)
                .map_err(|e| format!("its operator settings do not decode: {e}"))?,
        ),
        None => None,
    };
    Ok(DecodedBreaker {
        record,
        mode,
        settings,
    })
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
pub fn halt_key(scope: &Scope) -> String {
    match scope {
        Scope::Firm => "firm".to_owned(),
        Scope::Group(name) => format!("group:{name}"),
    }
}

/// The scope a key of the halts table names.
pub fn halt_scope(key: &str) -> Option<Scope> {
    match key {
        "firm" => Some(Scope::Firm),
        _ => key
            .strip_prefix("group:")
            .map(|name| Scope::Group(name.to_owned())),
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

#[cfg(test)]
#[path = "tests.rs"]
pub(crate) mod tests;
