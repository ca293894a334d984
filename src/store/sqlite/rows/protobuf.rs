//! The protobuf wire format, written by hand for the breaker row: a breaker is encoded at every
//! change of its account, on the store's writer, and prost's message would take an allocation
//! for each repeated field and for the result. The bytes are prost's (a test compares them).

use super::codes::{cause_code, kind_code, mode_code, state_code};
use crate::core::{BreakerRecord, Bucket, Mode, Overrides, Timestamp};

/// Appends a breaker to `out`, encoded as the `BreakerRow` message, field by field without
/// building one: a breaker is encoded at every change of its account, on the store's writer,
/// and a `BreakerRow` takes an allocation for each of its repeated fields and for the result.
pub fn encode_breaker_into(
    record: &BreakerRecord,
    mode: Option<Mode>,
    settings: Option<&Overrides>,
    out: &mut Vec<u8>,
) {
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
    if let Some(settings) = settings {
        // Plain numbers, strings and booleans: serialising cannot fail.
        let json = serde_json::to_vec(settings).unwrap_or_default();
        wire::bytes(out, 20, &json);
    }
}

/// Each value as the (wrapping) difference from the one before (the first from 0), zigzagged as
/// a protobuf `sint64`.
pub(super) fn deltas_of(values: impl Iterator<Item = u64>) -> impl Iterator<Item = u64> {
    let mut previous = 0u64;
    values.map(move |value| {
        let delta = value.wrapping_sub(previous) as i64;
        previous = value;
        ((delta << 1) ^ (delta >> 63)) as u64
    })
}

/// The values `deltas_of` wrote, from their (decoded) differences.
pub(super) fn sums_of(deltas: &[i64]) -> impl Iterator<Item = u64> + '_ {
    let mut value = 0u64;
    deltas.iter().map(move |delta| {
        value = value.wrapping_add(*delta as u64);
        value
    })
}

/// The protobuf wire format, as prost writes it for proto3 fields: scalars only when not zero
/// (optional ones whenever set), repeated scalars packed.
pub(super) mod wire {
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
