//! How records are encoded in the store's BLOB columns: protobuf messages declared here (not in
//! the public API), so fields can be added later and old rows still decode.

use prost::Message;

use crate::core::{
    BreakerRecord, Bucket, Cause, FailureKind, FailureRecord, Mode, ProbeRecord, RateWindow, State,
    Timestamp, BUCKETS,
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

#[cfg(test)]
pub fn encode_breaker(record: &BreakerRecord, mode: Option<Mode>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_breaker_into(record, mode, &mut out);
    out
}

/// Appends a breaker to `out`, encoded as the `BreakerRow` message, field by field without
/// building one: a breaker is encoded at every change of its account, on the store's writer,
/// and a `BreakerRow` takes an allocation for each of its repeated fields and for the result.
pub fn encode_breaker_into(record: &BreakerRecord, mode: Option<Mode>, out: &mut Vec<u8>) {
    let failures = &record.failures;
    wire::uint(out, 1, u64::from(state_code(record.state)));
    wire::uint(out, 2, u64::from(record.tripped));
    wire::uint(out, 3, record.generation);
    wire::uint(out, 4, record.next_sequence);
    wire::optional(out, 6, record.opened_at.map(Timestamp::as_unix_nanos));
    wire::optional(out, 7, record.recovery_at.map(Timestamp::as_unix_nanos));
    for probe in &record.probes {
        let (sequence, expires_at) = (probe.sequence, probe.expires_at.as_unix_nanos());
        wire::message(
            out,
            8,
            wire::uint_len(1, sequence) + wire::uint_len(2, expires_at),
        );
        wire::uint(out, 1, sequence);
        wire::uint(out, 2, expires_at);
    }
    wire::uint(out, 9, u64::from(record.probe_successes));
    wire::optional(out, 10, record.opened_by.map(|c| u64::from(cause_code(c))));
    wire::uint(out, 11, u64::from(record.open_streak));
    wire::optional(out, 12, record.closed_at.map(Timestamp::as_unix_nanos));
    if let Some(window) = &record.window {
        let bucket_len = |b: &Bucket| {
            wire::uint_len(1, u64::from(b.calls))
                + wire::uint_len(2, u64::from(b.failures))
                + wire::uint_len(3, u64::from(b.slow))
        };
        let buckets: usize = window
            .buckets
            .iter()
            .map(|b| wire::message_len(3, bucket_len(b)))
            .sum();
        let len = wire::uint_len(1, window.width) + wire::uint_len(2, window.newest) + buckets;
        wire::message(out, 13, len);
        wire::uint(out, 1, window.width);
        wire::uint(out, 2, window.newest);
        for bucket in &window.buckets {
            wire::message(out, 3, bucket_len(bucket));
            wire::uint(out, 1, u64::from(bucket.calls));
            wire::uint(out, 2, u64::from(bucket.failures));
            wire::uint(out, 3, u64::from(bucket.slow));
        }
    }
    wire::optional(out, 14, mode.map(|m| u64::from(mode_code(m))));
    let times = || deltas_of(failures.iter().map(|f| f.at.as_unix_nanos()));
    wire::packed(out, 15, times);
    wire::packed(out, 16, || {
        failures.iter().map(|f| u64::from(kind_code(f.kind)))
    });
    if failures.iter().any(|f| f.permit_sequence.is_some()) {
        // The core's "no permit" is u64::MAX, which wraps to 0 here, as it should.
        let permits = || {
            failures
                .iter()
                .map(|f| f.permit_sequence.map_or(0, |s| s.wrapping_add(1)))
        };
        wire::packed(out, 17, permits);
    }
    for (index, failure) in failures.iter().enumerate() {
        if failure.order_id.is_none() && failure.detail.is_none() {
            continue;
        }
        let index = index as u64;
        let text_len =
            |text: &Option<Box<str>>| text.as_deref().map_or(0, |t| wire::message_len(2, t.len()));
        let len =
            wire::uint_len(1, index) + text_len(&failure.order_id) + text_len(&failure.detail);
        wire::message(out, 18, len);
        wire::uint(out, 1, index);
        if let Some(order_id) = failure.order_id.as_deref() {
            wire::bytes(out, 2, order_id.as_bytes());
        }
        if let Some(detail) = failure.detail.as_deref() {
            wire::bytes(out, 3, detail.as_bytes());
        }
    }
    wire::packed(out, 19, || deltas_of(record.remembered.iter().copied()));
}

/// Each value as the (wrapping) difference from the one before (the first from 0), zigzagged as
/// a protobuf `sint64`.
fn deltas_of(values: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    let mut previous = 0u64;
    values.map(move |value| {
        let delta = value.wrapping_sub(previous) as i64;
        previous = value;
        ((delta << 1) ^ (delta >> 63)) as u64
    })
}

/// The values `deltas_of` wrote, from their (decoded) differences.
fn sums_of(deltas: &[i64]) -> impl Iterator<Item = u64> + '_ {
    let mut value = 0u64;
    deltas.iter().map(move |delta| {
        value = value.wrapping_add(*delta as u64);
        value
    })
}

/// The protobuf wire format, as prost writes it for proto3 fields: scalars only when not zero
/// (optional ones whenever set), repeated scalars packed.
mod wire {
    const VARINT: u64 = 0;
    const LENGTH_DELIMITED: u64 = 2;

    pub fn varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    pub fn varint_len(value: u64) -> usize {
        // 1 byte per started 7 bits, and 1 for zero.
        (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
    }

    fn key(out: &mut Vec<u8>, tag: u32, wire_type: u64) {
        varint(out, (u64::from(tag) << 3) | wire_type);
    }

    fn key_len(tag: u32) -> usize {
        varint_len(u64::from(tag) << 3)
    }

    /// A scalar field, left out when zero.
    pub fn uint(out: &mut Vec<u8>, tag: u32, value: u64) {
        if value != 0 {
            key(out, tag, VARINT);
            varint(out, value);
        }
    }

    pub fn uint_len(tag: u32, value: u64) -> usize {
        if value == 0 {
            0
        } else {
            key_len(tag) + varint_len(value)
        }
    }

    /// An optional scalar field, written whenever it is set.
    pub fn optional(out: &mut Vec<u8>, tag: u32, value: Option<u64>) {
        if let Some(value) = value {
            key(out, tag, VARINT);
            varint(out, value);
        }
    }

    /// The key and length of an embedded message of `len` bytes, which the caller writes next.
    pub fn message(out: &mut Vec<u8>, tag: u32, len: usize) {
        key(out, tag, LENGTH_DELIMITED);
        varint(out, len as u64);
    }

    /// The bytes a field of `len` bytes of content takes.
    pub fn message_len(tag: u32, len: usize) -> usize {
        key_len(tag) + varint_len(len as u64) + len
    }

    pub fn bytes(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
        message(out, tag, value.len());
        out.extend_from_slice(value);
    }

    /// A packed repeated scalar field (left out when it has no values).
    pub fn packed<I: Iterator<Item = u64>>(out: &mut Vec<u8>, tag: u32, values: impl Fn() -> I) {
        let len: usize = values().map(varint_len).sum();
        if len > 0 {
            message(out, tag, len);
            for value in values() {
                varint(out, value);
            }
        }
    }
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

/// A breaker record and the mode an operator set for the account.
pub fn decode_breaker(bytes: &[u8]) -> Result<(BreakerRecord, Option<Mode>), String> {
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
pub(super) mod tests {
    use super::*;
    use crate::core::State;

    /// A breaker as a `BreakerRow`, the message `encode_breaker` writes without building it.
    fn breaker_row(record: &BreakerRecord, mode: Option<Mode>) -> BreakerRow {
        let failures = &record.failures;
        let mut previous = 0u64;
        let failure_at = failures
            .iter()
            .map(|f| {
                let nanos = f.at.as_unix_nanos();
                let delta = nanos.wrapping_sub(previous) as i64;
                previous = nanos;
                delta
            })
            .collect();
        let mut previous = 0u64;
        let remembered = record
            .remembered
            .iter()
            .map(|&sequence| {
                let delta = sequence.wrapping_sub(previous) as i64;
                previous = sequence;
                delta
            })
            .collect();
        let failure_permit = if failures.iter().any(|f| f.permit_sequence.is_some()) {
            failures
                .iter()
                // The core's "no permit" is u64::MAX, which wraps to 0 here, as it should.
                .map(|f| f.permit_sequence.map_or(0, |s| s.wrapping_add(1)))
                .collect()
        } else {
            Vec::new()
        };
        let failure_text = failures
            .iter()
            .enumerate()
            .filter(|(_, f)| f.order_id.is_some() || f.detail.is_some())
            .map(|(index, f)| FailureText {
                index: index as u32,
                order_id: f.order_id.as_deref().map(str::to_owned),
                detail: f.detail.as_deref().map(str::to_owned),
            })
            .collect();
        BreakerRow {
            state: state_code(record.state),
            tripped: record.tripped,
            generation: record.generation,
            next_sequence: record.next_sequence,
            failures: Vec::new(),
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
            failure_at,
            failure_kind: failures.iter().map(|f| kind_code(f.kind)).collect(),
            failure_permit,
            failure_text,
            remembered,
        }
    }

    fn failure(at_nanos: u64, permit: Option<u64>, kind: FailureKind) -> FailureRecord {
        FailureRecord {
            at: at(at_nanos),
            permit_sequence: permit,
            kind,
            order_id: None,
            detail: None,
        }
    }

    /// A CLOSED breaker's record with `failures` (the writer's tests use it too).
    pub(in crate::store::sqlite) fn record(failures: Vec<FailureRecord>) -> BreakerRecord {
        BreakerRecord {
            state: State::Closed,
            tripped: false,
            generation: 3,
            next_sequence: 41,
            failures,
            remembered: Vec::new(),
            opened_at: None,
            recovery_at: None,
            probes: Vec::new(),
            probe_successes: 0,
            opened_by: None,
            open_streak: 0,
            closed_at: None,
            window: None,
        }
    }

    /// Thirty-two failures reported without a permit, 30 µs apart, as a failing account has.
    fn failing() -> BreakerRecord {
        let start = 1_795_000_000_000_000_000u64;
        record(
            (0..32)
                .map(|i| failure(start + i * 30_000, None, FailureKind::ALL[i as usize % 3]))
                .collect(),
        )
    }

    #[test]
    fn breakers_are_written_byte_for_byte_as_the_breaker_row_message() {
        let mut full = failing();
        full.state = State::HalfOpen;
        full.tripped = true;
        full.generation = u64::MAX;
        full.next_sequence = 1 << 35;
        full.opened_at = Some(at(1_795_000_000_000_000_000));
        full.recovery_at = Some(at(0));
        full.probes = vec![
            ProbeRecord {
                sequence: 0,
                expires_at: at(0),
            },
            ProbeRecord {
                sequence: 300,
                expires_at: at(1_795_000_000_000_000_000),
            },
        ];
        full.probe_successes = 2;
        full.opened_by = Some(Cause::FailureRateReached);
        full.open_streak = 127;
        full.closed_at = Some(at(128));
        full.window = Some(RateWindow {
            width: 100_000_000,
            newest: 17_950_000_000,
            buckets: std::array::from_fn(|i| Bucket {
                calls: i as u32 * 1000,
                failures: i as u32 * 7,
                slow: (i % 2) as u32,
            }),
        });
        full.failures[0].permit_sequence = Some(0);
        full.failures[0].order_id = Some(String::new().into());
        full.failures[3].detail = Some("x".repeat(200).into());
        full.failures[31].order_id = Some("ord-31".into());
        full.failures[31].detail = Some("venue said no".into());
        full.failures[30].at = at(0);
        full.remembered = vec![7, 3, u64::MAX, 0, 1 << 40];
        let mut empty = record(Vec::new());
        empty.generation = 0;
        empty.next_sequence = 0;
        let records = [empty, record(Vec::new()), failing(), full];
        for record in &records {
            for mode in [None, Some(Mode::Enforce), Some(Mode::Disabled)] {
                let expected = breaker_row(record, mode).encode_to_vec();
                assert_eq!(
                    encode_breaker(record, mode),
                    expected,
                    "{record:?} {mode:?}"
                );
                let mut appended = vec![7];
                encode_breaker_into(record, mode, &mut appended);
                assert_eq!(appended[1..], expected[..]);
            }
        }
    }

    #[test]
    fn varint_lengths_match_the_bytes_written() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX >> 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            wire::varint(&mut out, value);
            assert_eq!(out.len(), wire::varint_len(value), "{value}");
            assert_eq!(
                prost::encoding::decode_varint(&mut out.as_slice()).expect("decodes"),
                value
            );
        }
    }

    #[test]
    fn failures_round_trip_with_their_permits_texts_and_out_of_order_times() {
        let mut failures = vec![
            failure(2_000, Some(7), FailureKind::ALL[1]),
            // A clock that went backwards between two failures.
            failure(1_000, None, FailureKind::ALL[0]),
            failure(u64::MAX, Some(0), FailureKind::ALL[2]),
            failure(0, None, FailureKind::ALL[0]),
        ];
        failures[1].order_id = Some("ord-1".into());
        failures[3].detail = Some("venue said no".into());
        let mut record = record(failures);
        record.remembered = vec![9, 4, u64::MAX, 12];
        let (decoded, mode) =
            decode_breaker(&encode_breaker(&record, Some(Mode::Shadow))).expect("decodes");
        assert_eq!(decoded, record);
        assert_eq!(mode, Some(Mode::Shadow));
    }

    #[test]
    fn a_failing_account_is_written_in_under_half_the_bytes_of_failure_rows() {
        let record = failing();
        let compact = encode_breaker(&record, None);
        let legacy = legacy_encoding(&record);
        assert!(
            compact.len() * 2 < legacy.len(),
            "{} bytes against {}",
            compact.len(),
            legacy.len()
        );
        assert_eq!(decode_breaker(&compact).expect("decodes").0, record);
    }

    /// How releases before schema 4 wrote a breaker.
    fn legacy_encoding(record: &BreakerRecord) -> Vec<u8> {
        let mut row = BreakerRow::decode(encode_breaker(record, None).as_slice()).expect("row");
        row.failure_at.clear();
        row.failure_kind.clear();
        row.failure_permit.clear();
        row.failure_text.clear();
        row.failures = record
            .failures
            .iter()
            .map(|f| FailureRow {
                at: f.at.as_unix_nanos(),
                permit_sequence: f.permit_sequence,
                kind: kind_code(f.kind),
                order_id: f.order_id.as_deref().map(str::to_owned),
                detail: f.detail.as_deref().map(str::to_owned),
            })
            .collect();
        row.encode_to_vec()
    }

    #[test]
    fn rows_written_by_earlier_releases_still_decode() {
        let mut record = failing();
        record.failures[5].permit_sequence = Some(12);
        record.failures[9].order_id = Some("ord-9".into());
        let (decoded, _) = decode_breaker(&legacy_encoding(&record)).expect("decodes");
        assert_eq!(decoded, record);
    }

    #[test]
    fn failure_columns_that_disagree_are_refused() {
        let bytes = encode_breaker(&failing(), None);
        let mut row = BreakerRow::decode(bytes.as_slice()).expect("row");
        row.failure_kind.pop();
        let error = decode_breaker(&row.encode_to_vec()).expect_err("refused");
        assert!(error.contains("32 times, 31 kinds"), "{error}");

        let mut row = BreakerRow::decode(bytes.as_slice()).expect("row");
        row.failure_text.push(FailureText {
            index: 32,
            order_id: Some("x".into()),
            detail: None,
        });
        let error = decode_breaker(&row.encode_to_vec()).expect_err("refused");
        assert!(error.contains("failure 32 has no failure"), "{error}");
    }
}
