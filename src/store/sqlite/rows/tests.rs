//! Round trips of every row, and the hand-written encoder against prost's bytes.

use super::protobuf::wire;
use super::*;
use crate::core::State;
use crate::core::{Cause, FailureKind};

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
        settings: None,
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
pub(crate) fn record(failures: Vec<FailureRecord>) -> BreakerRecord {
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
                encode_breaker(record, mode, None),
                expected,
                "{record:?} {mode:?}"
            );
            let mut appended = vec![7];
            encode_breaker_into(record, mode, None, &mut appended);
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
    let settings = Overrides {
        failure_threshold: Some(2),
        open_timeout_secs: Some(12.5),
        failure_kinds: [("order_rejected".to_owned(), "ignore".to_owned())].into(),
        ..Overrides::default()
    };
    let decoded = decode_breaker(&encode_breaker(
        &record,
        Some(Mode::Shadow),
        Some(&settings),
    ))
    .expect("decodes");
    assert_eq!(decoded.record, record);
    assert_eq!(decoded.mode, Some(Mode::Shadow));
    assert_eq!(decoded.settings, Some(settings));
    let plain = decode_breaker(&encode_breaker(&record, None, None)).expect("decodes");
    assert_eq!((plain.mode, plain.settings), (None, None));
}

#[test]
fn a_failing_account_is_written_in_under_half_the_bytes_of_failure_rows() {
    let record = failing();
    let compact = encode_breaker(&record, None, None);
    let legacy = legacy_encoding(&record);
    assert!(
        compact.len() * 2 < legacy.len(),
        "{} bytes against {}",
        compact.len(),
        legacy.len()
    );
    assert_eq!(decode_breaker(&compact).expect("decodes").record, record);
}

/// How releases before schema 4 wrote a breaker.
fn legacy_encoding(record: &BreakerRecord) -> Vec<u8> {
    let mut row = BreakerRow::decode(encode_breaker(record, None, None).as_slice()).expect("row");
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
    let decoded = decode_breaker(&legacy_encoding(&record))
        .expect("decodes")
        .record;
    assert_eq!(decoded, record);
}

#[test]
fn failure_columns_that_disagree_are_refused() {
    let bytes = encode_breaker(&failing(), None, None);
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
