//! The transition table of SPEC section 2, row by row, on a fake clock.

use std::time::Duration;

use super::*;

/// Seconds after an arbitrary start, far from the epoch.
fn at(secs: f64) -> Timestamp {
    Timestamp::from_unix_nanos(1_700_000_000_000_000_000)
        .saturating_add(Duration::from_secs_f64(secs))
}

fn settings() -> Settings {
    Settings::default()
}

fn permit_of(decision: Decision) -> Permit {
    match decision {
        Decision::Allowed { permit, .. } => permit,
        other => panic!("expected a permit, got {other:?}"),
    }
}

fn allow(breaker: &mut Breaker, now: Timestamp) -> Permit {
    permit_of(breaker.check(&settings(), now).0)
}

fn fail(
    breaker: &mut Breaker,
    permit: Option<Permit>,
    now: Timestamp,
) -> (Disposition, Transitions) {
    breaker.record(&settings(), permit, Outcome::Failure, now)
}

fn succeed(
    breaker: &mut Breaker,
    permit: Option<Permit>,
    now: Timestamp,
) -> (Disposition, Transitions) {
    breaker.record(&settings(), permit, Outcome::Success, now)
}

/// A breaker opened by five failures at t=0..4.
fn opened() -> Breaker {
    let mut breaker = Breaker::new();
    for i in 0..5 {
        let permit = allow(&mut breaker, at(i as f64));
        fail(&mut breaker, Some(permit), at(i as f64));
    }
    assert_eq!(breaker.state(), State::Open);
    breaker
}

/// A breaker that opened at t=4 and started testing recovery at t=304.
fn half_open() -> Breaker {
    let mut breaker = opened();
    breaker.tick(&settings(), at(304.0));
    assert_eq!(breaker.state(), State::HalfOpen);
    breaker
}

fn only(transitions: Transitions) -> Transition {
    let all: Vec<_> = transitions.iter().collect();
    assert_eq!(all.len(), 1, "{all:?}");
    all[0]
}

#[test]
fn closed_check_is_allowed_with_a_permit_of_the_current_generation() {
    let mut breaker = Breaker::new();
    let (decision, transitions) = breaker.check(&settings(), at(0.0));
    assert!(transitions.is_empty());
    assert_eq!(
        decision,
        Decision::Allowed {
            permit: Permit {
                generation: 0,
                sequence: 0
            },
            probe: false
        }
    );
    assert_eq!(allow(&mut breaker, at(0.0)).sequence, 1);
}

#[test]
fn closed_failures_reaching_the_threshold_open_the_breaker() {
    let mut breaker = Breaker::new();
    for i in 0..4 {
        let (disposition, transitions) = fail(&mut breaker, None, at(i as f64));
        assert_eq!(disposition, Disposition::Recorded);
        assert!(transitions.is_empty());
    }
    assert_eq!(breaker.failure_count(&settings(), at(4.0)), 4);
    let (_, transitions) = fail(&mut breaker, None, at(4.0));
    let t = only(transitions);
    assert_eq!(
        (t.from, t.to, t.cause),
        (State::Closed, State::Open, Cause::FailureThresholdReached)
    );
    assert_eq!(t.failure_count, 5);
    assert_eq!(t.generation, 1);
    assert_eq!(t.recovery_at, Some(at(304.0)));
    assert_eq!(breaker.opened_at(), Some(at(4.0)));
}

#[test]
fn closed_failures_older_than_the_window_are_not_counted() {
    let mut breaker = Breaker::new();
    for i in 0..4 {
        fail(&mut breaker, None, at(i as f64));
    }
    // t=60 is exactly one window after the first failure: it has left the window.
    assert_eq!(breaker.failure_count(&settings(), at(60.0)), 3);
    let (_, transitions) = fail(&mut breaker, None, at(60.0));
    assert!(transitions.is_empty());
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.failure_count(&settings(), at(60.0)), 4);
    let times: Vec<_> = breaker.failure_times(&settings(), at(60.0)).collect();
    assert_eq!(times, vec![at(1.0), at(2.0), at(3.0), at(60.0)]);
}

#[test]
fn closed_success_changes_nothing_and_does_not_clear_the_window() {
    let mut breaker = Breaker::new();
    for i in 0..4 {
        fail(&mut breaker, None, at(i as f64));
    }
    let (disposition, transitions) = succeed(&mut breaker, None, at(5.0));
    assert_eq!(disposition, Disposition::Recorded);
    assert!(transitions.is_empty());
    assert_eq!(breaker.failure_count(&settings(), at(5.0)), 4);
    fail(&mut breaker, None, at(6.0));
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn open_check_is_denied_with_the_time_left_and_the_failure_count() {
    let mut breaker = opened();
    let (decision, transitions) = breaker.check(&settings(), at(104.0));
    assert!(transitions.is_empty());
    assert_eq!(
        decision,
        Decision::Denied(Denial::Open {
            retry_after: Duration::from_secs(200),
            rule: Cause::FailureThresholdReached,
        })
    );
    assert_eq!(breaker.failure_count(&settings(), at(104.0)), 5);
}

#[test]
fn open_becomes_half_open_when_the_open_timeout_elapses_without_traffic() {
    let mut breaker = opened();
    assert_eq!(breaker.next_deadline(), Some(at(304.0)));
    assert!(breaker.tick(&settings(), at(303.999)).is_empty());
    assert_eq!(breaker.state(), State::Open);
    let t = only(breaker.tick(&settings(), at(304.0)));
    assert_eq!(
        (t.from, t.to, t.cause),
        (State::Open, State::HalfOpen, Cause::OpenTimeoutElapsed)
    );
    assert_eq!(t.generation, 2);
    assert_eq!(breaker.next_deadline(), None);
}

#[test]
fn a_late_check_applies_the_due_recovery_first() {
    let mut breaker = opened();
    let (decision, transitions) = breaker.check(&settings(), at(400.0));
    assert_eq!(only(transitions).to, State::HalfOpen);
    assert!(matches!(decision, Decision::Allowed { probe: true, .. }));
}

#[test]
fn half_open_allows_probes_until_max_tries_are_outstanding() {
    let mut breaker = half_open();
    for _ in 0..3 {
        let (decision, _) = breaker.check(&settings(), at(305.0));
        assert!(matches!(decision, Decision::Allowed { probe: true, .. }));
    }
    let (decision, _) = breaker.check(&settings(), at(306.0));
    assert_eq!(
        decision,
        Decision::Denied(Denial::ProbesInFlight {
            retry_after: Duration::from_secs(29)
        })
    );
    assert_eq!(breaker.next_deadline(), Some(at(335.0)));
}

#[test]
fn half_open_closes_after_max_tries_probe_successes() {
    let mut breaker = half_open();
    let probes: Vec<_> = (0..3).map(|_| allow(&mut breaker, at(305.0))).collect();
    assert!(succeed(&mut breaker, Some(probes[0]), at(306.0))
        .1
        .is_empty());
    assert!(succeed(&mut breaker, Some(probes[1]), at(306.0))
        .1
        .is_empty());
    assert_eq!(breaker.probe_successes(), 2);
    let t = only(succeed(&mut breaker, Some(probes[2]), at(307.0)).1);
    assert_eq!(
        (t.from, t.to, t.cause),
        (State::HalfOpen, State::Closed, Cause::ProbesSucceeded)
    );
    assert_eq!(breaker.failure_count(&settings(), at(307.0)), 0);
    assert_eq!(breaker.opened_at(), None);
}

#[test]
fn a_freed_probe_permit_can_be_granted_again() {
    let mut breaker = half_open();
    let probes: Vec<_> = (0..3).map(|_| allow(&mut breaker, at(305.0))).collect();
    succeed(&mut breaker, Some(probes[0]), at(306.0));
    assert!(matches!(
        breaker.check(&settings(), at(306.0)).0,
        Decision::Allowed { probe: true, .. }
    ));
}

#[test]
fn half_open_probe_failure_reopens_and_restarts_the_timer() {
    let mut breaker = half_open();
    let probe = allow(&mut breaker, at(305.0));
    let t = only(fail(&mut breaker, Some(probe), at(310.0)).1);
    assert_eq!(
        (t.from, t.to, t.cause),
        (State::HalfOpen, State::Open, Cause::ProbeFailed)
    );
    assert_eq!(t.recovery_at, Some(at(610.0)));
    assert_eq!(breaker.failure_count(&settings(), at(310.0)), 6);
}

#[test]
fn half_open_probe_unreported_for_the_timeout_reopens() {
    let mut breaker = half_open();
    allow(&mut breaker, at(305.0));
    assert_eq!(breaker.next_deadline(), Some(at(335.0)));
    assert!(breaker.tick(&settings(), at(334.9)).is_empty());
    let t = only(breaker.tick(&settings(), at(335.0)));
    assert_eq!(
        (t.from, t.to, t.cause),
        (State::HalfOpen, State::Open, Cause::ProbeExpired)
    );
    assert_eq!(breaker.recovery_at(), Some(at(635.0)));
}

#[test]
fn reset_closes_from_every_state_and_clears_counters() {
    for mut breaker in [opened(), half_open(), Breaker::new()] {
        let from = breaker.state();
        let generation = breaker.generation();
        let t = breaker.reset(&settings(), at(400.0));
        assert_eq!(
            (t.from, t.to, t.cause),
            (from, State::Closed, Cause::OperatorReset)
        );
        assert_eq!(breaker.generation(), generation + 1);
        assert_eq!(breaker.failure_count(&settings(), at(400.0)), 0);
        assert!(breaker.probes().is_empty());
        assert_eq!(breaker.next_deadline(), None);
    }
}

#[test]
fn a_tripped_breaker_is_held_open_until_reset() {
    for mut breaker in [Breaker::new(), opened(), half_open()] {
        let t = breaker.trip(&settings(), at(400.0));
        assert_eq!(
            (t.to, t.cause, t.recovery_at),
            (State::Open, Cause::OperatorTrip, None)
        );
        assert!(breaker.is_tripped());
        assert_eq!(breaker.next_deadline(), None);
        assert!(breaker.tick(&settings(), at(1_000_000.0)).is_empty());
        assert_eq!(
            breaker.check(&settings(), at(1_000_000.0)).0,
            Decision::Denied(Denial::Tripped { retry_after: None })
        );
        breaker.reset(&settings(), at(1_000_001.0));
        assert!(!breaker.is_tripped());
        assert!(matches!(
            breaker.check(&settings(), at(1_000_001.0)).0,
            Decision::Allowed { probe: false, .. }
        ));
    }
}

#[test]
fn an_outcome_of_an_earlier_generation_is_stale_and_changes_nothing() {
    let mut breaker = Breaker::new();
    let old = allow(&mut breaker, at(0.0));
    breaker.reset(&settings(), at(1.0));
    let before = breaker.clone();
    assert_eq!(fail(&mut breaker, Some(old), at(2.0)).0, Disposition::Stale);
    assert_eq!(breaker, before);

    // A probe permit issued before a re-open cannot close the next HALF_OPEN period.
    let mut breaker = half_open();
    let probe = allow(&mut breaker, at(305.0));
    breaker.tick(&settings(), at(335.0)); // expired: OPEN again
    breaker.tick(&settings(), at(635.0)); // HALF_OPEN again
    let before = breaker.clone();
    assert_eq!(
        succeed(&mut breaker, Some(probe), at(636.0)).0,
        Disposition::Stale
    );
    assert_eq!(breaker, before);
}

#[test]
fn a_failure_reported_twice_counts_once() {
    let mut breaker = Breaker::new();
    let permit = allow(&mut breaker, at(0.0));
    assert_eq!(
        fail(&mut breaker, Some(permit), at(0.0)).0,
        Disposition::Recorded
    );
    for i in 1..10 {
        assert_eq!(
            fail(&mut breaker, Some(permit), at(i as f64)).0,
            Disposition::Duplicate
        );
    }
    assert_eq!(breaker.failure_count(&settings(), at(10.0)), 1);
    // Still recognised after the failure has left the window.
    assert_eq!(
        fail(&mut breaker, Some(permit), at(100.0)).0,
        Disposition::Duplicate
    );
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn a_probe_success_reported_twice_counts_once() {
    let mut breaker = half_open();
    let probe = allow(&mut breaker, at(305.0));
    assert_eq!(
        succeed(&mut breaker, Some(probe), at(306.0)).0,
        Disposition::Recorded
    );
    assert_eq!(
        succeed(&mut breaker, Some(probe), at(306.0)).0,
        Disposition::Duplicate
    );
    assert_eq!(
        fail(&mut breaker, Some(probe), at(306.0)).0,
        Disposition::Duplicate
    );
    assert_eq!(breaker.probe_successes(), 1);
    assert_eq!(breaker.state(), State::HalfOpen);
}

#[test]
fn outcomes_without_a_permit_apply_to_the_current_generation() {
    // HALF_OPEN: a success answers for the oldest outstanding probe...
    let mut breaker = half_open();
    allow(&mut breaker, at(305.0));
    assert_eq!(
        succeed(&mut breaker, None, at(306.0)).0,
        Disposition::Recorded
    );
    assert_eq!(breaker.probe_successes(), 1);
    assert!(breaker.probes().is_empty());
    // ...and is ignored when no probe is outstanding.
    assert_eq!(
        succeed(&mut breaker, None, at(306.0)).0,
        Disposition::Ignored
    );
    // A failure re-opens.
    let t = only(fail(&mut breaker, None, at(307.0)).1);
    assert_eq!((t.to, t.cause), (State::Open, Cause::ProbeFailed));
    // OPEN: nothing to act on.
    let before = breaker.clone();
    assert_eq!(fail(&mut breaker, None, at(308.0)).0, Disposition::Ignored);
    assert_eq!(breaker, before);
}

/// Settings under which failures never open a breaker.
fn never_opening() -> Settings {
    Settings {
        failure_threshold: u32::MAX,
        ..settings()
    }
}

#[test]
fn a_failing_account_keeps_bounded_memory() {
    let s = never_opening();
    let mut breaker = Breaker::new();
    let mut permits = Vec::new();
    for i in 0..10_000u64 {
        let now = at(i as f64 * 61.0);
        let permit = allow(&mut breaker, now);
        breaker.record(&s, Some(permit), Outcome::Failure, now);
        permits.push(permit);
    }
    // The failure in the window, and the permits of the newest that left it.
    let record = breaker.to_record();
    assert_eq!(record.failures.len(), 1);
    assert_eq!(record.remembered.len(), super::breaker::FAILURE_MEMORY);
    let newest = permits
        .iter()
        .rev()
        .skip(1)
        .take(super::breaker::FAILURE_MEMORY);
    let newest: Vec<u64> = newest.map(|p| p.sequence).collect();
    assert!(newest.iter().all(|s| record.remembered.contains(s)));
    // Those permits, and the one in the window, are recognised if reported again.
    let last = at(9_999.0 * 61.0);
    for (i, permit) in permits
        .iter()
        .enumerate()
        .rev()
        .take(super::breaker::FAILURE_MEMORY + 1)
    {
        let (disposition, _) = fail(&mut breaker, Some(*permit), last);
        assert_eq!(disposition, Disposition::Duplicate, "permit {i}");
    }
}

/// A breaker with one failure, reported at t=0 with the permit returned.
fn failed_with_a_permit_at_zero() -> (Breaker, Permit) {
    let mut breaker = Breaker::new();
    let permit = allow(&mut breaker, at(0.0));
    breaker.record(&never_opening(), Some(permit), Outcome::Failure, at(0.0));
    (breaker, permit)
}

#[test]
fn failures_without_a_permit_are_forgotten_once_they_leave_the_window() {
    let s = never_opening();
    let (mut breaker, early) = failed_with_a_permit_at_zero();
    for i in 0..100u64 {
        breaker.record(&s, None, Outcome::Failure, at(i as f64 * 61.0));
    }
    // The last one, in the window, and the permit of the one that left it with a permit.
    let record = breaker.to_record();
    assert_eq!(record.failures.len(), 1, "{:?}", record.failures);
    assert_eq!(record.remembered, vec![early.sequence]);
    assert_eq!(breaker.failure_count(&s, at(99.0 * 61.0)), 1);
    assert_eq!(
        fail(&mut breaker, Some(early), at(99.0 * 61.0)).0,
        Disposition::Duplicate
    );
}

#[test]
fn failures_kept_whole_by_earlier_records_are_still_recognised_and_then_remembered() {
    let s = never_opening();
    let (breaker, early) = failed_with_a_permit_at_zero();
    // Records written before the remembered permits kept failures that left the window whole:
    // this one has left it by t=100.
    let record = breaker.to_record();
    assert_eq!(record.failures.len(), 1);
    assert!(record.remembered.is_empty());
    let mut restored = Breaker::from_record(record);
    assert_eq!(
        fail(&mut restored, Some(early), at(100.0)).0,
        Disposition::Duplicate
    );
    let later = allow(&mut restored, at(101.0));
    restored.record(&s, Some(later), Outcome::Failure, at(101.0));
    let record = restored.to_record();
    assert_eq!(record.remembered, vec![early.sequence]);
    assert_eq!(record.failures.len(), 1);
    assert_eq!(
        fail(&mut restored, Some(early), at(102.0)).0,
        Disposition::Duplicate
    );
}

#[test]
fn a_breaker_survives_its_record() {
    let mut breaker = half_open();
    allow(&mut breaker, at(305.0));
    let permit = allow(&mut breaker, at(306.0));
    succeed(&mut breaker, Some(permit), at(307.0));
    let restored = Breaker::from_record(breaker.to_record());
    assert_eq!(restored, breaker);
}

#[test]
fn only_a_breaker_with_nothing_to_remember_is_idle() {
    let s = settings();
    let mut breaker = Breaker::new();
    assert!(breaker.is_idle(&s, at(0.0)));
    // Successes leave it idle.
    let permit = allow(&mut breaker, at(1.0));
    succeed(&mut breaker, Some(permit), at(1.0));
    assert!(breaker.is_idle(&s, at(1.0)));
    // A failure in the window is worth keeping; once out of it, neither it nor its permit is
    // (a breaker made anew starts at a generation of its own, where the permit is stale).
    let permit = allow(&mut breaker, at(2.0));
    fail(&mut breaker, Some(permit), at(2.0));
    assert!(!breaker.is_idle(&s, at(2.0)));
    assert!(breaker.is_idle(&s, at(100.0)));
    // A failure without a permit is forgotten once it leaves the window.
    let mut breaker = Breaker::new();
    fail(&mut breaker, None, at(0.0));
    assert!(!breaker.is_idle(&s, at(30.0)));
    let permit = allow(&mut breaker, at(61.0));
    succeed(&mut breaker, Some(permit), at(61.0));
    assert!(breaker.is_idle(&s, at(61.0)));
    // OPEN, HALF_OPEN, tripped: never idle.
    assert!(!opened().is_idle(&s, at(10.0)));
    assert!(!half_open().is_idle(&s, at(305.0)));
    let mut tripped = Breaker::new();
    tripped.trip(&s, at(0.0));
    assert!(!tripped.is_idle(&s, at(10_000.0)));
    // Reset after opening: with backoff on, the streak counts until backoff_reset has passed
    // CLOSED; without, it changes nothing.
    let mut reset = opened();
    reset.reset(&s, at(10.0));
    assert!(reset.is_idle(
        &Settings {
            open_backoff_multiplier: 1.0,
            ..s.clone()
        },
        at(11.0)
    ));
    let s = Settings {
        open_backoff_multiplier: 2.0,
        ..s
    };
    let mut reset = opened();
    reset.reset(&s, at(10.0));
    let idle_from = 10.0 + s.backoff_reset.as_secs_f64();
    assert_eq!(reset.open_streak() == 0, reset.is_idle(&s, at(11.0)));
    assert!(reset.is_idle(&s, at(idle_from + 1.0)));
}
