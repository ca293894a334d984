//! The breaker policy over real gRPC: failure kinds, intent, modes, firm and group halts,
//! timed trips and why a check was denied, each seen the way a client sees it.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use riskgate::proto::*;
use tonic::Code;

const POLICY: &str = r#"
[breaker]
failure_threshold = 3
[breaker.failure_kinds]
margin_exhausted = "trip"
data_feed_stale = "ignore"

[accounts."LENIENT"]
allow_reduce_only_when_open = true

[groups.desk-a]
accounts = ["desk-a:*"]
"#;

fn failure(account: &str, permit: &str, kind: FailureKind, order: &str) -> ReportOutcomeRequest {
    ReportOutcomeRequest {
        account_id: account.into(),
        permit_id: permit.into(),
        outcome: Outcome::Failure as i32,
        failure_kind: kind as i32,
        order_id: order.into(),
        detail: format!("{kind:?} on {order}"),
        ..Default::default()
    }
}

async fn check_with(server: &TestServer, account: &str, intent: Intent) -> CheckTradeResponse {
    server
        .gate()
        .check_trade(CheckTradeRequest {
            account_id: account.into(),
            intent: intent as i32,
        })
        .await
        .expect("CheckTrade")
        .into_inner()
}

#[tokio::test]
async fn a_kind_set_to_trip_opens_at_once_and_the_denial_says_why() {
    let server = TestServer::start(POLICY).await;
    let mut watch = server.watch(&["ACC"], None).await;
    read_snapshot(&mut watch).await;
    let mut gate = server.gate();
    // An ignored kind counts for nothing.
    let check = server.check("ACC").await;
    let ignored = gate
        .report_outcome(failure(
            "ACC",
            &check.permit_id,
            FailureKind::DataFeedStale,
            "o-1",
        ))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(ignored.disposition, OutcomeDisposition::Ignored as i32);
    let check = server.check("ACC").await;
    gate.report_outcome(failure(
        "ACC",
        &check.permit_id,
        FailureKind::MarginExhausted,
        "o-2",
    ))
    .await
    .expect("report");

    let event = next_event(&mut watch).await;
    assert_eq!(event.cause, TransitionCause::FailureKindTrip as i32);
    assert_eq!(event.failure_kind, FailureKind::MarginExhausted as i32);
    assert_eq!(event.layer, Layer::Account as i32);
    assert!(!event.config_version.is_empty());

    let denied = server.check("ACC").await;
    assert!(!denied.allowed);
    assert_eq!(denied.denial, Denial::BreakerOpen as i32);
    assert_eq!(denied.layer, Layer::Account as i32);
    assert_eq!(denied.opened_by, TransitionCause::FailureKindTrip as i32);
    assert_eq!(denied.tripped_by.len(), 1);
    let why = &denied.tripped_by[0];
    assert_eq!(why.kind, FailureKind::MarginExhausted as i32);
    assert_eq!(why.order_id, "o-2");
    assert_eq!(why.detail, "MarginExhausted on o-2");
    assert!(
        denied.reason.contains("failure kind set to trip"),
        "{}",
        denied.reason
    );

    let breaker = server.breaker("ACC").await;
    assert_eq!(breaker.opened_by, TransitionCause::FailureKindTrip as i32);
    assert_eq!(breaker.failures.len(), 1);
    assert_eq!(breaker.failures[0].order_id, "o-2");
    server.stop().await;
}

#[tokio::test]
async fn cancels_pass_everything_and_reduce_only_passes_where_allowed() {
    let server = TestServer::start(POLICY).await;
    for account in ["STRICT", "LENIENT"] {
        server.trip(account, "review").await;
    }
    let tripped_generation = server.breaker("LENIENT").await.generation;
    let mut admin = server.admin();
    admin
        .halt_all(HaltAllRequest {
            reason: "drill".into(),
            operator: "alice".into(),
        })
        .await
        .expect("HaltAll");
    for account in ["STRICT", "LENIENT", "NEW-ACCOUNT"] {
        let cancel = check_with(&server, account, Intent::Cancel).await;
        assert!(cancel.allowed, "{cancel:?}");
        assert_eq!(cancel.passed, Pass::Cancel as i32);
        assert!(cancel.permit_id.is_empty());
    }
    admin
        .resume_all(ResumeAllRequest {
            reason: "drill over".into(),
            operator: "alice".into(),
        })
        .await
        .expect("ResumeAll");
    let strict = check_with(&server, "STRICT", Intent::ReduceOnly).await;
    assert!(!strict.allowed);
    assert_eq!(strict.denial, Denial::OperatorTrip as i32);
    let lenient = check_with(&server, "LENIENT", Intent::ReduceOnly).await;
    assert!(lenient.allowed, "{lenient:?}");
    assert_eq!(lenient.passed, Pass::ReduceOnly as i32);
    assert_eq!(
        server.breaker("LENIENT").await.generation,
        tripped_generation,
        "nothing changed"
    );
    server.stop().await;
}

#[tokio::test]
async fn halts_deny_by_layer_and_are_evented_and_audited() {
    let server = TestServer::start(POLICY).await;
    let mut watch = server.watch(&[], None).await;
    read_snapshot(&mut watch).await;
    let mut admin = server.admin();
    let halts = admin
        .halt_group(HaltGroupRequest {
            group: "desk-a".into(),
            reason: "desk review".into(),
            operator: "bob".into(),
        })
        .await
        .expect("HaltGroup")
        .into_inner()
        .halts;
    assert_eq!(halts.len(), 1);
    assert_eq!(
        (halts[0].layer, halts[0].group.as_str()),
        (Layer::Group as i32, "desk-a")
    );
    let event = next_event(&mut watch).await;
    assert_eq!(event.cause, TransitionCause::Halted as i32);
    assert_eq!(
        (event.layer, event.group.as_str()),
        (Layer::Group as i32, "desk-a")
    );
    assert_eq!(event.operator, "bob");

    let denied = server.check("desk-a:1").await;
    assert!(!denied.allowed);
    assert_eq!(denied.denial, Denial::GroupHalted as i32);
    assert_eq!(
        (denied.layer, denied.group.as_str()),
        (Layer::Group as i32, "desk-a")
    );
    assert!(server.check("desk-b:1").await.allowed);

    admin
        .halt_all(HaltAllRequest {
            reason: "exchange incident".into(),
            operator: "carol".into(),
        })
        .await
        .expect("HaltAll");
    let denied = server.check("desk-b:1").await;
    assert_eq!(denied.denial, Denial::FirmHalted as i32);
    assert_eq!(denied.layer, Layer::Firm as i32);
    assert!(
        denied.reason.contains("exchange incident"),
        "{}",
        denied.reason
    );
    let event = next_event(&mut watch).await;
    assert_eq!(
        (event.cause, event.layer),
        (TransitionCause::Halted as i32, Layer::Firm as i32)
    );

    let listed = admin
        .list_halts(ListHaltsRequest {})
        .await
        .expect("ListHalts")
        .into_inner()
        .halts;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].layer, Layer::Firm as i32);

    let err = admin
        .halt_group(HaltGroupRequest {
            group: "no-such-desk".into(),
            reason: "x".into(),
            operator: "bob".into(),
        })
        .await
        .expect_err("unknown group");
    assert_eq!(err.code(), Code::NotFound);
    let err = admin
        .resume_group(ResumeGroupRequest {
            group: "desk-a".into(),
            reason: String::new(),
            operator: "bob".into(),
        })
        .await
        .expect_err("reason required");
    assert_eq!(err.code(), Code::InvalidArgument);

    admin
        .resume_group(ResumeGroupRequest {
            group: "desk-a".into(),
            reason: "review done".into(),
            operator: "bob".into(),
        })
        .await
        .expect("ResumeGroup");
    admin
        .resume_all(ResumeAllRequest {
            reason: "all clear".into(),
            operator: "carol".into(),
        })
        .await
        .expect("ResumeAll");
    assert!(server.check("desk-a:1").await.allowed);
    let again = admin
        .resume_all(ResumeAllRequest {
            reason: "again".into(),
            operator: "carol".into(),
        })
        .await
        .expect("resuming what is not halted changes nothing")
        .into_inner();
    assert!(!again.ended && again.halts.is_empty(), "{again:?}");

    let records = admin
        .list_audit_records(ListAuditRecordsRequest::default())
        .await
        .expect("audit")
        .into_inner()
        .records;
    let actions: Vec<i32> = records.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [
            AuditAction::ResumeAll as i32,
            AuditAction::ResumeAll as i32,
            AuditAction::ResumeGroup as i32,
            AuditAction::HaltAll as i32,
            AuditAction::HaltGroup as i32,
        ]
    );
    assert_eq!(
        records[0].detail, "nothing was halted",
        "the resume that changed nothing"
    );
    assert_eq!(records[4].group, "desk-a");
    server.stop().await;
}

#[tokio::test]
async fn shadow_mode_allows_and_says_it_would_deny() {
    let server = TestServer::start(POLICY).await;
    let breaker = server
        .admin()
        .set_mode(SetModeRequest {
            account_id: "ACC".into(),
            mode: Mode::Shadow as i32,
            reason: "trial".into(),
            operator: "alice".into(),
        })
        .await
        .expect("SetMode")
        .into_inner()
        .breaker
        .expect("breaker");
    assert_eq!(breaker.mode, Mode::Shadow as i32);
    assert!(breaker.mode_set_by_operator);
    server.fail("ACC", 3).await;
    assert_eq!(state(server.breaker("ACC").await.state), BreakerState::Open);
    let check = server.check("ACC").await;
    assert!(check.allowed && check.would_deny, "{check:?}");
    assert_eq!(check.denial, Denial::BreakerOpen as i32);
    assert_eq!(check.layer, Layer::Account as i32);
    assert_eq!(check.mode, Mode::Shadow as i32);
    let audit = server
        .admin()
        .list_audit_records(ListAuditRecordsRequest::default())
        .await
        .expect("audit")
        .into_inner()
        .records;
    assert_eq!(audit[0].action, AuditAction::SetMode as i32);
    assert_eq!(audit[0].detail, "shadow");
    server.stop().await;
}

#[tokio::test]
async fn a_timed_trip_holds_until_its_time() {
    let server = TestServer::start(POLICY).await;
    let until = SystemTime::now() + Duration::from_secs(3600);
    let breaker = server
        .admin()
        .trip_breaker(TripBreakerRequest {
            account_id: "ACC".into(),
            reason: "news".into(),
            operator: "alice".into(),
            until: Some(until.into()),
        })
        .await
        .expect("TripBreaker")
        .into_inner()
        .breaker
        .expect("breaker");
    assert!(breaker.tripped_by_operator);
    let recovery = breaker.recovery_at.expect("a timed trip has an end");
    let until = prost_types::Timestamp::from(until);
    assert_eq!(
        (recovery.seconds, recovery.nanos / 1000),
        (until.seconds, until.nanos / 1000)
    );
    let denied = server.check("ACC").await;
    assert_eq!(denied.denial, Denial::OperatorTrip as i32);
    let retry = denied.retry_after.expect("a timed trip says when it ends");
    assert!(retry.seconds > 3500 && retry.seconds <= 3600, "{retry:?}");

    let err = server
        .admin()
        .trip_breaker(TripBreakerRequest {
            account_id: "ACC".into(),
            reason: "news".into(),
            operator: "alice".into(),
            until: Some((SystemTime::now() - Duration::from_secs(1)).into()),
        })
        .await
        .expect_err("an end in the past");
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn bad_policy_input_is_refused_and_changes_nothing() {
    let server = TestServer::start(POLICY).await;
    server.check("ACC").await;
    let before = server.breaker("ACC").await;
    let mut gate = server.gate();
    let bad_reports = [
        ReportOutcomeRequest {
            failure_kind: 99,
            ..failure("ACC", "", FailureKind::Other, "o")
        },
        ReportOutcomeRequest {
            detail: "x".repeat(257),
            ..failure("ACC", "", FailureKind::Other, "o")
        },
        ReportOutcomeRequest {
            order_id: "o\u{7}".into(),
            ..failure("ACC", "", FailureKind::Other, "o")
        },
        ReportOutcomeRequest {
            latency: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
            ..failure("ACC", "", FailureKind::Other, "o")
        },
    ];
    for request in bad_reports {
        let err = gate.report_outcome(request).await.expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
    let err = gate
        .check_trade(CheckTradeRequest {
            account_id: "ACC".into(),
            intent: 42,
        })
        .await
        .expect_err("unknown intent");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("intent"), "{}", err.message());
    let err = server
        .admin()
        .set_mode(SetModeRequest {
            account_id: "ACC".into(),
            mode: 9,
            reason: "x".into(),
            operator: "alice".into(),
        })
        .await
        .expect_err("unknown mode");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(server.breaker("ACC").await, before);
    server.stop().await;
}

#[tokio::test]
async fn get_config_reports_the_configuration_in_force() {
    let server = TestServer::start(POLICY).await;
    let config = server
        .admin()
        .get_config(GetConfigRequest {})
        .await
        .expect("GetConfig")
        .into_inner();
    assert_eq!(config.version.len(), 16);
    assert!(
        config.toml.contains("margin_exhausted = \"trip\""),
        "{}",
        config.toml
    );
    assert!(config.toml.contains("desk-a"), "{}", config.toml);
    server.stop().await;
}

#[tokio::test]
async fn rate_rules_and_backoff_are_seen_through_the_api() {
    let server = TestServer::start(
        r#"
[breaker]
failure_threshold = 1000
failure_rate_threshold = 0.5
minimum_calls = 4
open_timeout_secs = 0.2
open_backoff_multiplier = 3.0
open_backoff_jitter = 0.0
half_open_max_tries = 1

[accounts."SLOW"]
failure_rate_threshold = 0.0
slow_call_secs = 0.5
slow_call_rate_threshold = 0.5
"#,
    )
    .await;
    let mut gate = server.gate();
    let mut watch = server.watch(&["RATE", "SLOW"], None).await;
    read_snapshot(&mut watch).await;
    for failed in [true, false, true, false] {
        let mut request = failure("RATE", "", FailureKind::OrderRejected, "o");
        if !failed {
            request.outcome = Outcome::Success as i32;
        }
        gate.report_outcome(request).await.expect("report");
    }
    let opened = next_event(&mut watch).await;
    assert_eq!(opened.cause, TransitionCause::FailureRateReached as i32);
    assert!(opened.reason.contains("failure rate"), "{}", opened.reason);
    let denied = server.check("RATE").await;
    assert_eq!(denied.opened_by, TransitionCause::FailureRateReached as i32);
    // Recovery is tested, the probe fails: the next opening is three times as long.
    let half_open = next_event(&mut watch).await;
    assert_eq!(half_open.to_state, BreakerState::HalfOpen as i32);
    let probe = server.check("RATE").await;
    assert!(probe.probe);
    gate.report_outcome(failure("RATE", &probe.permit_id, FailureKind::Timeout, "p"))
        .await
        .expect("report");
    let reopened = next_event(&mut watch).await;
    assert_eq!(reopened.cause, TransitionCause::ProbeFailed as i32);
    let open_for = |e: &BreakerEvent| {
        let (at, until) = (e.time.expect("time"), e.recovery_at.expect("recovery"));
        (until.seconds - at.seconds) as f64 + f64::from(until.nanos - at.nanos) / 1e9
    };
    assert!((open_for(&opened) - 0.2).abs() < 1e-6, "{opened:?}");
    assert!((open_for(&reopened) - 0.6).abs() < 1e-6, "{reopened:?}");
    assert_eq!(server.breaker("RATE").await.open_streak, 2);

    // Slow calls, by reported latency.
    for millis in [100u64, 900] {
        gate.report_outcome(ReportOutcomeRequest {
            account_id: "SLOW".into(),
            outcome: Outcome::Success as i32,
            latency: Some(prost_types::Duration {
                seconds: 0,
                nanos: (millis * 1_000_000) as i32,
            }),
            ..Default::default()
        })
        .await
        .expect("report");
    }
    gate.report_outcome(ReportOutcomeRequest {
        account_id: "SLOW".into(),
        outcome: Outcome::Success as i32,
        latency: Some(prost_types::Duration {
            seconds: 2,
            nanos: 0,
        }),
        ..Default::default()
    })
    .await
    .expect("report");
    gate.report_outcome(ReportOutcomeRequest {
        account_id: "SLOW".into(),
        outcome: Outcome::Success as i32,
        ..Default::default()
    })
    .await
    .expect("report");
    let slow = loop {
        let event = next_event(&mut watch).await;
        if event.account_id == "SLOW" {
            break event;
        }
    };
    assert_eq!(slow.cause, TransitionCause::SlowCallRateReached as i32);
    server.stop().await;
}

#[tokio::test]
async fn disabled_mode_from_configuration_allows_and_records_nothing() {
    let server = TestServer::start(
        "[breaker]\nfailure_threshold = 1\n[accounts.\"OFF\"]\nmode = \"disabled\"\n",
    )
    .await;
    for _ in 0..3 {
        let check = server.check("OFF").await;
        assert!(check.allowed && !check.would_deny, "{check:?}");
        assert_eq!(check.mode, Mode::Disabled as i32);
        let report = server.report("OFF", "", Outcome::Failure).await;
        assert_eq!(report.disposition, OutcomeDisposition::Ignored as i32);
    }
    let breaker = server.breaker("OFF").await;
    assert_eq!(breaker.failure_count, 0);
    assert_eq!(breaker.state, BreakerState::Closed as i32);
    assert!(breaker.last_sequence == 0, "no transition: {breaker:?}");
    assert!(!breaker.mode_set_by_operator);
    server.stop().await;
}
