//! The rules beyond the failure count, on a fake clock: failure kinds, the rate rules,
//! backoff, order intent, timed trips, and what an opening remembers.

use std::time::Duration;

use super::*;

fn at(secs: f64) -> Timestamp {
    Timestamp::from_unix_nanos(1_700_000_000_000_000_000)
        .saturating_add(Duration::from_secs_f64(secs))
}

fn permit(breaker: &mut Breaker, s: &Settings, now: Timestamp) -> Permit {
    match breaker.check(s, now).0 {
        Decision::Allowed { permit, .. } => permit,
        other => panic!("expected a permit, got {other:?}"),
    }
}

fn failure(kind: FailureKind, order: &str) -> Report {
    Report {
        order_id: Some(order.into()),
        detail: Some(format!("{} on {order}", kind.key()).into()),
        ..Report::failure(kind)
    }
}

fn slow(latency_ms: u64) -> Report {
    Report {
        latency: Some(Duration::from_millis(latency_ms)),
        ..Report::success()
    }
}

fn only(transitions: Transitions) -> Transition {
    let all: Vec<_> = transitions.iter().collect();
    assert_eq!(all.len(), 1, "{all:?}");
    all[0]
}

fn kinds(pairs: &[(FailureKind, KindAction)]) -> Settings {
    let mut s = Settings::default();
    for (kind, action) in pairs {
        s.failure_kinds.set(*kind, *action);
    }
    s
}

#[test]
fn an_ignored_kind_changes_nothing() {
    let s = kinds(&[(FailureKind::DataFeedStale, KindAction::Ignore)]);
    let mut b = Breaker::new();
    for i in 0..10 {
        let p = permit(&mut b, &s, at(i as f64));
        let (disposition, transitions) = b.report(
            &s,
            Some(p),
            &failure(FailureKind::DataFeedStale, "o"),
            at(i as f64),
        );
        assert_eq!(disposition, Disposition::Ignored);
        assert!(transitions.is_empty());
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.failure_count(&s, at(10.0)), 0);
}

#[test]
fn a_kind_set_to_trip_opens_at_once_and_is_remembered() {
    let s = kinds(&[(FailureKind::MarginExhausted, KindAction::Trip)]);
    let mut b = Breaker::new();
    let p = permit(&mut b, &s, at(0.0));
    b.report(&s, Some(p), &failure(FailureKind::Timeout, "o-1"), at(1.0));
    let p = permit(&mut b, &s, at(2.0));
    let (_, transitions) = b.report(
        &s,
        Some(p),
        &failure(FailureKind::MarginExhausted, "o-2"),
        at(2.0),
    );
    let t = only(transitions);
    assert_eq!((t.to, t.cause), (State::Open, Cause::FailureKindTrip));
    assert_eq!(t.failure_kind, Some(FailureKind::MarginExhausted));
    assert_eq!(b.opened_by(), Some(Cause::FailureKindTrip));
    // Not an operator trip: it recovers by itself.
    assert!(!b.is_tripped());
    assert_eq!(b.next_deadline(), Some(at(302.0)));
    let why: Vec<_> = b.failures(&s, at(3.0)).collect();
    assert_eq!(why.len(), 2);
    assert_eq!(why[1].kind, FailureKind::MarginExhausted);
    assert_eq!(why[1].order_id.as_deref(), Some("o-2"));
    assert_eq!(why[1].detail.as_deref(), Some("margin_exhausted on o-2"));
    assert_eq!(
        b.check(&s, at(3.0)).0,
        Decision::Denied(Denial::Open {
            retry_after: Duration::from_secs(299),
            rule: Cause::FailureKindTrip
        })
    );
}

#[test]
fn the_failure_rate_rule_waits_for_minimum_calls_then_opens() {
    let s = Settings {
        failure_threshold: 1_000,
        failure_rate_threshold: Some(0.5),
        minimum_calls: 4,
        ..Settings::default()
    };
    let mut b = Breaker::new();
    let outcomes = [true, true, false];
    for (i, failed) in outcomes.into_iter().enumerate() {
        let report = if failed {
            Report::failure(FailureKind::OrderRejected)
        } else {
            Report::success()
        };
        let (_, transitions) = b.report(&s, None, &report, at(i as f64));
        assert!(
            transitions.is_empty(),
            "2 of 3 is over the rate, but under minimum_calls"
        );
    }
    let (_, transitions) = b.report(&s, None, &Report::success(), at(3.0));
    let t = only(transitions);
    assert_eq!((t.to, t.cause), (State::Open, Cause::FailureRateReached));
}

#[test]
fn the_failure_rate_rule_stays_closed_below_the_threshold() {
    let s = Settings {
        failure_threshold: 1_000,
        failure_rate_threshold: Some(0.5),
        minimum_calls: 4,
        ..Settings::default()
    };
    let mut b = Breaker::new();
    for i in 0..40 {
        let report = if i % 3 == 2 {
            Report::failure(FailureKind::Timeout)
        } else {
            Report::success()
        };
        b.report(&s, None, &report, at(i as f64));
    }
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn the_slow_call_rule_opens_on_slow_outcomes_and_names_the_trigger() {
    let s = Settings {
        slow_call: Some(Duration::from_secs(1)),
        slow_call_rate_threshold: Some(0.5),
        minimum_calls: 2,
        ..Settings::default()
    };
    let mut b = Breaker::new();
    let (_, transitions) = b.report(&s, None, &slow(200), at(0.0));
    assert!(transitions.is_empty());
    let (_, transitions) = b.report(&s, None, &slow(1_500), at(1.0));
    let t = only(transitions);
    assert_eq!((t.to, t.cause), (State::Open, Cause::SlowCallRateReached));
    let why: Vec<_> = b.failures(&s, at(2.0)).collect();
    assert_eq!(why.len(), 1);
    assert!(why[0]
        .detail
        .as_deref()
        .is_some_and(|d| d.starts_with("slow: 1.5s")));
}

#[test]
fn rate_counts_leave_with_the_window() {
    let s = Settings {
        failure_threshold: 1_000,
        failure_rate_threshold: Some(0.5),
        minimum_calls: 4,
        failure_window: Duration::from_secs(10),
        ..Settings::default()
    };
    let mut b = Breaker::new();
    for i in 0..3 {
        b.report(&s, None, &Report::failure(FailureKind::Other), at(i as f64));
    }
    // Long after, the three failures are gone: one more failure is 1 of 1, under minimum_calls.
    let (_, transitions) = b.report(&s, None, &Report::failure(FailureKind::Other), at(100.0));
    assert!(transitions.is_empty());
}

/// Opens a breaker on its first failure, at `now`.
fn open_at(b: &mut Breaker, s: &Settings, now: Timestamp) -> Transition {
    let p = permit(b, s, now);
    only(
        b.report(s, Some(p), &Report::failure(FailureKind::Other), now)
            .1,
    )
}

fn backoff(jitter: f64) -> Settings {
    Settings {
        failure_threshold: 1,
        half_open_max_tries: 1,
        open_timeout: Duration::from_secs(100),
        open_backoff_multiplier: 2.0,
        max_open_timeout: Duration::from_secs(500),
        open_backoff_jitter: jitter,
        backoff_reset: Duration::from_secs(1_000),
        ..Settings::default()
    }
}

#[test]
fn consecutive_openings_back_off_up_to_the_cap() {
    let s = backoff(0.0);
    let mut b = Breaker::new();
    let mut now = at(0.0);
    let mut open_times = Vec::new();
    let t = open_at(&mut b, &s, now);
    open_times.push(t.recovery_at.unwrap().saturating_duration_since(now));
    for _ in 0..4 {
        now = b.next_deadline().unwrap();
        b.tick(&s, now);
        assert_eq!(b.state(), State::HalfOpen);
        let p = permit(&mut b, &s, now);
        let t = only(
            b.report(&s, Some(p), &Report::failure(FailureKind::Other), now)
                .1,
        );
        assert_eq!(t.cause, Cause::ProbeFailed);
        open_times.push(t.recovery_at.unwrap().saturating_duration_since(now));
    }
    let secs: Vec<u64> = open_times.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [100, 200, 400, 500, 500]);
    assert_eq!(b.open_streak(), 5);
}

#[test]
fn backoff_falls_back_after_staying_closed_long_enough() {
    let s = backoff(0.0);
    let mut b = Breaker::new();
    open_at(&mut b, &s, at(0.0));
    b.tick(&s, at(100.0));
    let p = permit(&mut b, &s, at(100.0));
    b.report(&s, Some(p), &Report::success(), at(100.0));
    assert_eq!(b.state(), State::Closed);
    // Re-opening soon after recovering: backed off.
    let t = open_at(&mut b, &s, at(150.0));
    assert_eq!(t.recovery_at, Some(at(350.0)));
    b.tick(&s, at(350.0));
    let p = permit(&mut b, &s, at(350.0));
    b.report(&s, Some(p), &Report::success(), at(350.0));
    // CLOSED for backoff_reset: the base again.
    let t = open_at(&mut b, &s, at(1_350.0));
    assert_eq!(t.recovery_at, Some(at(1_450.0)));
}

#[test]
fn jitter_shortens_a_backed_off_opening_but_never_below_the_base() {
    let s = backoff(0.5);
    for start in 0..50 {
        let mut b = Breaker::new();
        let now = at(start as f64 * 7.3);
        open_at(&mut b, &s, now);
        let then = b.next_deadline().unwrap();
        b.tick(&s, then);
        let p = permit(&mut b, &s, then);
        let t = only(
            b.report(&s, Some(p), &Report::failure(FailureKind::Other), then)
                .1,
        );
        let open = t.recovery_at.unwrap().saturating_duration_since(then);
        assert!(
            open >= Duration::from_secs(100) && open <= Duration::from_secs(200),
            "{open:?}"
        );
    }
}

#[test]
fn cancels_always_pass_and_change_nothing() {
    let s = Settings::default();
    let mut b = Breaker::new();
    b.trip(&s, at(0.0));
    let before = b.clone();
    let (decision, transitions) = b.check_order(&s, at(1.0), Intent::Cancel);
    assert_eq!(decision, Decision::Passed(Pass::Cancel));
    assert!(transitions.is_empty());
    assert_eq!(b, before);
}

#[test]
fn reduce_only_passes_an_open_breaker_only_when_allowed_and_never_takes_a_probe() {
    let strict = Settings {
        failure_threshold: 1,
        ..Settings::default()
    };
    let lenient = Settings {
        allow_reduce_only_when_open: true,
        ..strict.clone()
    };
    let mut b = Breaker::new();
    open_at(&mut b, &strict, at(0.0));
    assert!(matches!(
        b.check_order(&strict, at(1.0), Intent::ReduceOnly).0,
        Decision::Denied(Denial::Open { .. })
    ));
    assert_eq!(
        b.check_order(&lenient, at(1.0), Intent::ReduceOnly).0,
        Decision::Passed(Pass::ReduceOnly)
    );
    b.tick(&strict, at(300.0));
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(
        b.check_order(&strict, at(300.0), Intent::ReduceOnly).0,
        Decision::Denied(Denial::ReduceOnlyWhileRecovering)
    );
    assert_eq!(
        b.check_order(&lenient, at(300.0), Intent::ReduceOnly).0,
        Decision::Passed(Pass::ReduceOnly)
    );
    assert!(b.probes().is_empty(), "no probe permit was used");
    // In CLOSED, a reduce-only order is an order like any other.
    let mut closed = Breaker::new();
    assert!(matches!(
        closed.check_order(&strict, at(0.0), Intent::ReduceOnly).0,
        Decision::Allowed { probe: false, .. }
    ));
}

#[test]
fn a_timed_trip_holds_until_its_end_then_tests_recovery() {
    let s = Settings::default();
    let mut b = Breaker::new();
    let t = b.trip_until(&s, at(0.0), Some(at(600.0)));
    assert_eq!(t.recovery_at, Some(at(600.0)));
    assert_eq!(b.next_deadline(), Some(at(600.0)));
    assert_eq!(
        b.check(&s, at(100.0)).0,
        Decision::Denied(Denial::Tripped {
            retry_after: Some(Duration::from_secs(500))
        })
    );
    assert!(b.tick(&s, at(599.9)).is_empty());
    let t = only(b.tick(&s, at(600.0)));
    assert_eq!((t.to, t.cause), (State::HalfOpen, Cause::TripExpired));
    assert!(!b.is_tripped());
}

#[test]
fn an_ignored_kind_frees_a_probe_without_counting_as_success() {
    let s = Settings {
        failure_threshold: 1,
        half_open_max_tries: 1,
        ..kinds(&[(FailureKind::ConnectionLost, KindAction::Ignore)])
    };
    let mut b = Breaker::new();
    open_at(&mut b, &s, at(0.0));
    b.tick(&s, at(300.0));
    let p = permit(&mut b, &s, at(300.0));
    assert!(matches!(
        b.check(&s, at(300.0)).0,
        Decision::Denied(Denial::ProbesInFlight { .. })
    ));
    let (disposition, transitions) = b.report(
        &s,
        Some(p),
        &Report::failure(FailureKind::ConnectionLost),
        at(301.0),
    );
    assert_eq!(disposition, Disposition::Ignored);
    assert!(transitions.is_empty());
    assert_eq!((b.state(), b.probe_successes()), (State::HalfOpen, 0));
    // The freed permit slot is available again.
    permit(&mut b, &s, at(302.0));
}

#[test]
fn the_record_keeps_every_new_field() {
    let s = Settings {
        failure_rate_threshold: Some(0.9),
        open_backoff_multiplier: 2.0,
        ..kinds(&[(FailureKind::MarginExhausted, KindAction::Trip)])
    };
    let mut b = Breaker::new();
    b.report(&s, None, &Report::success(), at(0.0));
    let p = permit(&mut b, &s, at(1.0));
    b.report(
        &s,
        Some(p),
        &failure(FailureKind::MarginExhausted, "o-9"),
        at(1.0),
    );
    let restored = Breaker::from_record(b.to_record());
    assert_eq!(restored, b);
    assert_eq!(restored.opened_by(), Some(Cause::FailureKindTrip));
}

mod hostile {
    //! Random operations with random policies: the core never panics and keeps its invariants.

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Check(Intent),
        Report {
            back: usize,
            failed: bool,
            kind: usize,
            latency_ms: Option<u64>,
        },
        Trip(Option<u64>),
        Reset,
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => prop_oneof![Just(Intent::New), Just(Intent::ReduceOnly), Just(Intent::Cancel)]
                .prop_map(Op::Check),
            4 => (0usize..4, any::<bool>(), 0usize..7, proptest::option::of(0u64..3_000))
                .prop_map(|(back, failed, kind, latency_ms)| Op::Report { back, failed, kind, latency_ms }),
            1 => proptest::option::of(1u64..100).prop_map(Op::Trip),
            1 => Just(Op::Reset),
            3 => (0u64..40_000).prop_map(Op::Wait),
        ]
    }

    fn settings() -> impl Strategy<Value = Settings> {
        (
            (1u32..6, 1u64..30, 1u64..20, 1u32..4, 1u64..10),
            (
                proptest::array::uniform7(0usize..3),
                proptest::option::of(0.1f64..1.0),
                proptest::option::of((1u64..2_000, 0.1f64..1.0)),
                1u32..6,
            ),
            (
                1.0f64..4.0,
                20u64..200,
                0.0f64..1.0,
                1u64..100,
                any::<bool>(),
            ),
        )
            .prop_map(
                |(
                    (threshold, window, open, tries, lease),
                    (kinds, rate, slow, minimum),
                    (multiplier, max_open, jitter, reset, reduce_only),
                )| {
                    let mut s = Settings {
                        failure_threshold: threshold,
                        failure_window: Duration::from_secs(window),
                        open_timeout: Duration::from_secs(open),
                        half_open_max_tries: tries,
                        half_open_timeout: Duration::from_secs(lease),
                        failure_rate_threshold: rate,
                        slow_call: slow.map(|(ms, _)| Duration::from_millis(ms)),
                        slow_call_rate_threshold: slow.map(|(_, r)| r),
                        minimum_calls: minimum,
                        open_backoff_multiplier: multiplier,
                        max_open_timeout: Duration::from_secs(max_open.max(open)),
                        open_backoff_jitter: jitter,
                        backoff_reset: Duration::from_secs(reset),
                        allow_reduce_only_when_open: reduce_only,
                        ..Settings::default()
                    };
                    let actions = [KindAction::Count, KindAction::Ignore, KindAction::Trip];
                    for (kind, action) in FailureKind::ALL.iter().zip(kinds) {
                        s.failure_kinds.set(*kind, actions[action]);
                    }
                    s
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn the_full_policy_never_panics_and_keeps_its_invariants(
            s in settings(),
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let mut b = Breaker::new();
            let mut now = at(0.0);
            let mut permits: Vec<Permit> = Vec::new();
            for op in ops {
                let before = b.clone();
                match op {
                    Op::Check(intent) => {
                        let (decision, _) = b.check_order(&s, now, intent);
                        match decision {
                            Decision::Allowed { permit, probe } => {
                                prop_assert!(intent != Intent::Cancel);
                                prop_assert!(!probe || intent == Intent::New);
                                permits.push(permit);
                            }
                            Decision::Passed(Pass::Cancel) => {
                                prop_assert_eq!(intent, Intent::Cancel);
                                prop_assert_eq!(&b.to_record(), &{
                                    let mut ticked = before.clone();
                                    ticked.tick(&s, now);
                                    ticked.to_record()
                                });
                            }
                            Decision::Passed(Pass::ReduceOnly) => {
                                prop_assert!(s.allow_reduce_only_when_open);
                                prop_assert!(b.state() != State::Closed);
                            }
                            Decision::Denied(_) => prop_assert!(intent != Intent::Cancel),
                        }
                    }
                    Op::Report { back, failed, kind, latency_ms } => {
                        let permit = permits.len().checked_sub(back + 1).map(|i| permits[i]);
                        let report = Report {
                            failed,
                            kind: FailureKind::ALL[kind],
                            latency: latency_ms.map(Duration::from_millis),
                            order_id: Some("o".into()),
                            detail: None,
                        };
                        b.report(&s, permit, &report, now);
                    }
                    Op::Trip(hold) => {
                        let until = hold.map(|h| now.saturating_add(Duration::from_secs(h)));
                        b.trip_until(&s, now, until);
                    }
                    Op::Reset => {
                        b.reset(&s, now);
                    }
                    Op::Wait(ms) => {
                        now = now.saturating_add(Duration::from_millis(ms));
                        if let Some(due) = b.next_deadline() {
                            if due <= now {
                                b.tick(&s, now);
                            }
                        }
                    }
                }
                // Invariants.
                prop_assert!(b.probes().len() <= s.half_open_max_tries as usize);
                prop_assert_eq!(b.opened_by().is_some(), b.state() != State::Closed);
                if b.state() == State::Open && !b.is_tripped() {
                    let open_for = b.recovery_at().expect("an OPEN breaker recovers")
                        .saturating_duration_since(b.opened_at().expect("opened"));
                    prop_assert!(open_for >= s.open_timeout);
                    prop_assert!(open_for <= s.max_open_timeout.max(s.open_timeout));
                }
                if b.is_tripped() {
                    prop_assert_eq!(b.state(), State::Open);
                }
                prop_assert!(b.failures(&s, now).count() <= 2 * crate::core::breaker::FAILURE_MEMORY.max(s.failure_threshold as usize) + 64);
                prop_assert_eq!(Breaker::from_record(b.to_record()), b.clone());
            }
        }
    }
}
