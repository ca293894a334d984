//! The SPEC section 2 table, row by row, through the real gRPC API.

mod common;

use common::*;
use riskgate::proto::*;

const FAST_RECOVERY: &str = "[breaker]\nfailure_threshold = 3\nopen_timeout_secs = 0.3\nhalf_open_max_tries = 2\nhalf_open_timeout_secs = 60.0\n";

#[tokio::test]
async fn closed_allows_every_check_with_a_permit() {
    let server = TestServer::start("").await;
    let first = server.check("ACC-1").await;
    let second = server.check("ACC-1").await;
    assert!(first.allowed && second.allowed);
    assert_eq!(state(first.state), BreakerState::Closed);
    assert!(!first.permit_id.is_empty());
    assert_ne!(first.permit_id, second.permit_id);
    assert!(!first.probe);
    assert!(first.reason.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn failures_reaching_the_threshold_open_the_breaker_and_checks_are_denied() {
    let server = TestServer::start("").await;
    let report = server.fail("ACC-1", 4).await;
    assert_eq!(state(report.state), BreakerState::Closed);
    assert_eq!(report.failure_count, 4);
    let report = server.fail("ACC-1", 1).await;
    assert_eq!(state(report.state), BreakerState::Open);
    assert_eq!(report.disposition, OutcomeDisposition::Recorded as i32);

    let denied = server.check("ACC-1").await;
    assert!(!denied.allowed);
    assert_eq!(state(denied.state), BreakerState::Open);
    assert_eq!(denied.denial, Denial::BreakerOpen as i32);
    assert_eq!(denied.failure_count, 5);
    assert!(denied.permit_id.is_empty());
    assert!(denied.reason.contains("5 failures"), "{}", denied.reason);
    let retry_after = denied.retry_after.expect("retry_after");
    assert!(
        retry_after.seconds > 0 && retry_after.seconds <= 300,
        "{retry_after:?}"
    );

    let breaker = server.breaker("ACC-1").await;
    assert_eq!(breaker.failure_times.len(), 5);
    assert!(breaker.opened_at.is_some() && breaker.recovery_at.is_some());
    assert!(!breaker.tripped_by_operator);
    // Another account is untouched.
    assert!(server.check("ACC-2").await.allowed);
    server.stop().await;
}

#[tokio::test]
async fn a_success_does_not_clear_the_window() {
    let server = TestServer::start("").await;
    server.fail("ACC-1", 4).await;
    let check = server.check("ACC-1").await;
    let report = server
        .report("ACC-1", &check.permit_id, Outcome::Success)
        .await;
    assert_eq!(state(report.state), BreakerState::Closed);
    assert_eq!(report.failure_count, 4);
    assert_eq!(
        state(server.fail("ACC-1", 1).await.state),
        BreakerState::Open
    );
    server.stop().await;
}

#[tokio::test]
async fn open_becomes_half_open_on_time_with_no_traffic_then_probes_close_it() {
    let server = TestServer::start(FAST_RECOVERY).await;
    let mut events = server.watch(&["ACC-1"], None).await;
    read_snapshot(&mut events).await;
    server.fail("ACC-1", 3).await;
    let opened = next_event(&mut events).await;
    assert_eq!(
        (state(opened.from_state), state(opened.to_state)),
        (BreakerState::Closed, BreakerState::Open)
    );
    assert_eq!(
        opened.cause,
        TransitionCause::FailureThresholdReached as i32
    );

    // No traffic at all: the timer alone moves it.
    let half_open = next_event(&mut events).await;
    assert_eq!(state(half_open.to_state), BreakerState::HalfOpen);
    assert_eq!(half_open.cause, TransitionCause::OpenTimeoutElapsed as i32);
    assert_eq!(half_open.sequence, opened.sequence + 1);

    let first = server.check("ACC-1").await;
    let second = server.check("ACC-1").await;
    assert!(first.allowed && first.probe && second.allowed && second.probe);
    let third = server.check("ACC-1").await;
    assert!(!third.allowed);
    assert_eq!(third.denial, Denial::ProbesInFlight as i32);
    assert_eq!(server.breaker("ACC-1").await.probes.len(), 2);

    let report = server
        .report("ACC-1", &first.permit_id, Outcome::Success)
        .await;
    assert_eq!(state(report.state), BreakerState::HalfOpen);
    let report = server
        .report("ACC-1", &second.permit_id, Outcome::Success)
        .await;
    assert_eq!(state(report.state), BreakerState::Closed);
    let closed = next_event(&mut events).await;
    assert_eq!(closed.cause, TransitionCause::ProbesSucceeded as i32);
    assert_eq!(server.breaker("ACC-1").await.failure_count, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_failed_probe_reopens_and_restarts_the_timer() {
    let server = TestServer::start(FAST_RECOVERY).await;
    let mut events = server.watch(&["ACC-1"], None).await;
    read_snapshot(&mut events).await;
    server.fail("ACC-1", 3).await;
    next_event(&mut events).await; // OPEN
    next_event(&mut events).await; // HALF_OPEN
    let probe = server.check("ACC-1").await;
    let report = server
        .report("ACC-1", &probe.permit_id, Outcome::Failure)
        .await;
    assert_eq!(state(report.state), BreakerState::Open);
    let reopened = next_event(&mut events).await;
    assert_eq!(reopened.cause, TransitionCause::ProbeFailed as i32);
    assert!(reopened.recovery_at.is_some());
    // The restarted timer fires again.
    assert_eq!(
        state(next_event(&mut events).await.to_state),
        BreakerState::HalfOpen
    );
    server.stop().await;
}

#[tokio::test]
async fn an_unreported_probe_expires_and_reopens() {
    let server = TestServer::start(
        "[breaker]\nfailure_threshold = 1\nopen_timeout_secs = 0.2\nhalf_open_timeout_secs = 0.2\n",
    )
    .await;
    let mut events = server.watch(&["ACC-1"], None).await;
    read_snapshot(&mut events).await;
    server.fail("ACC-1", 1).await;
    next_event(&mut events).await; // OPEN
    next_event(&mut events).await; // HALF_OPEN
    let probe = server.check("ACC-1").await;
    assert!(probe.probe);
    let expired = next_event(&mut events).await;
    assert_eq!(expired.cause, TransitionCause::ProbeExpired as i32);
    assert_eq!(state(expired.to_state), BreakerState::Open);
    // Reporting the expired probe now is stale.
    let late = server
        .report("ACC-1", &probe.permit_id, Outcome::Success)
        .await;
    assert_eq!(late.disposition, OutcomeDisposition::Stale as i32);
    server.stop().await;
}

#[tokio::test]
async fn stale_and_duplicate_outcomes_change_nothing() {
    let server = TestServer::start("").await;
    let old = server.check("ACC-1").await;
    server.reset("ACC-1", "new session").await;
    let before = server.breaker("ACC-1").await;
    let stale = server
        .report("ACC-1", &old.permit_id, Outcome::Failure)
        .await;
    assert_eq!(stale.disposition, OutcomeDisposition::Stale as i32);
    assert_eq!(server.breaker("ACC-1").await, before);

    let check = server.check("ACC-1").await;
    let first = server
        .report("ACC-1", &check.permit_id, Outcome::Failure)
        .await;
    assert_eq!(first.disposition, OutcomeDisposition::Recorded as i32);
    for _ in 0..10 {
        let again = server
            .report("ACC-1", &check.permit_id, Outcome::Failure)
            .await;
        assert_eq!(again.disposition, OutcomeDisposition::Duplicate as i32);
    }
    let breaker = server.breaker("ACC-1").await;
    assert_eq!(breaker.failure_count, 1);
    assert_eq!(state(breaker.state), BreakerState::Closed);
    server.stop().await;
}

#[tokio::test]
async fn an_outcome_without_a_permit_applies_to_the_current_generation() {
    let server = TestServer::start("").await;
    for _ in 0..5 {
        server.report("ACC-1", "", Outcome::Failure).await;
    }
    assert_eq!(
        state(server.breaker("ACC-1").await.state),
        BreakerState::Open
    );
    server.stop().await;
}

#[tokio::test]
async fn operator_trip_holds_the_breaker_open_and_reset_closes_it() {
    let server = TestServer::start(FAST_RECOVERY).await;
    let mut events = server.watch(&["ACC-1"], None).await;
    read_snapshot(&mut events).await;
    let breaker = server.trip("ACC-1", "runaway algo").await;
    assert!(breaker.tripped_by_operator);
    assert!(breaker.recovery_at.is_none());
    let tripped = next_event(&mut events).await;
    assert_eq!(tripped.cause, TransitionCause::OperatorTrip as i32);
    assert_eq!(
        (tripped.operator.as_str(), tripped.operator_reason.as_str()),
        ("alice", "runaway algo")
    );

    let denied = server.check("ACC-1").await;
    assert!(!denied.allowed);
    assert_eq!(denied.denial, Denial::OperatorTrip as i32);
    assert!(denied.retry_after.is_none());

    let breaker = server.reset("ACC-1", "all clear").await;
    assert_eq!(state(breaker.state), BreakerState::Closed);
    assert!(!breaker.tripped_by_operator);
    // The next event is the reset: no automatic recovery happened in between.
    let reset = next_event(&mut events).await;
    assert_eq!(reset.cause, TransitionCause::OperatorReset as i32);
    assert_eq!(reset.sequence, tripped.sequence + 1);
    assert!(server.check("ACC-1").await.allowed);
    server.stop().await;
}

#[tokio::test]
async fn concurrent_checks_on_a_half_open_account_never_exceed_max_tries() {
    let server = TestServer::start(
        "[breaker]\nfailure_threshold = 1\nopen_timeout_secs = 0.2\nhalf_open_max_tries = 3\n",
    )
    .await;
    let mut events = server.watch(&["HOT"], None).await;
    read_snapshot(&mut events).await;
    server.fail("HOT", 1).await;
    next_event(&mut events).await; // OPEN
    assert_eq!(
        state(next_event(&mut events).await.to_state),
        BreakerState::HalfOpen
    );

    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let mut gate = server.gate();
            tokio::spawn(async move {
                let mut allowed = 0;
                for _ in 0..20 {
                    let response = gate
                        .check_trade(CheckTradeRequest {
                            account_id: "HOT".into(),
                            ..Default::default()
                        })
                        .await
                        .expect("CheckTrade")
                        .into_inner();
                    allowed += usize::from(response.allowed);
                }
                allowed
            })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += task.await.expect("task");
    }
    assert_eq!(
        allowed, 3,
        "exactly max_tries probe permits across 1280 concurrent checks"
    );
    server.stop().await;
}

#[tokio::test]
async fn at_max_accounts_a_new_account_evicts_an_idle_one_or_is_refused_when_none_is_idle() {
    let server = TestServer::start("[server]\nmax_accounts = 3\n").await;
    for account in ["A", "B", "C"] {
        assert!(server.check(account).await.allowed);
    }
    // Idle breakers make room: D gets one, and there are still three.
    assert!(server.check("D").await.allowed);
    assert_eq!(server.total_breakers().await, 3);
    // Hold every breaker open: nothing is idle, so a new account is refused.
    let breakers = server
        .monitor()
        .list_breakers(ListBreakersRequest::default())
        .await
        .expect("list")
        .into_inner()
        .breakers;
    for breaker in &breakers {
        server.trip(&breaker.account_id, "incident").await;
    }
    let status = server
        .gate()
        .check_trade(CheckTradeRequest {
            account_id: "E".into(),
            ..Default::default()
        })
        .await
        .expect_err("no idle breaker to evict");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("maximum of 3 accounts"),
        "{}",
        status.message()
    );
    // The held breakers are all still there, and still answer.
    assert_eq!(server.total_breakers().await, 3);
    let answer = server.check(&breakers[0].account_id).await;
    assert!(!answer.allowed);
    server.stop().await;
}
