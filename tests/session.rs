//! The trade session: checks and outcomes on one bidirectional stream, answered exactly as the
//! unary calls answer them, matched by correlation id.

mod common;

use std::collections::HashMap;

use common::*;
use riskgate::proto::trade_session_request::Kind as In;
use riskgate::proto::trade_session_response::Kind as Out;
use riskgate::proto::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn check(id: u64, account: &str) -> TradeSessionRequest {
    TradeSessionRequest {
        correlation_id: id,
        kind: Some(In::Check(CheckTradeRequest {
            account_id: account.into(),
            ..Default::default()
        })),
    }
}

fn failure(id: u64, account: &str, permit: &str) -> TradeSessionRequest {
    TradeSessionRequest {
        correlation_id: id,
        kind: Some(In::Report(ReportOutcomeRequest {
            account_id: account.into(),
            permit_id: permit.into(),
            outcome: Outcome::Failure as i32,
            ..Default::default()
        })),
    }
}

struct Session {
    send: mpsc::Sender<TradeSessionRequest>,
    answers: tonic::Streaming<TradeSessionResponse>,
}

impl Session {
    async fn open(server: &TestServer) -> Session {
        let (send, receive) = mpsc::channel(4096);
        let answers = server
            .gate()
            .trade_session(ReceiverStream::new(receive))
            .await
            .expect("TradeSession")
            .into_inner();
        Session { send, answers }
    }

    async fn send(&self, message: TradeSessionRequest) {
        self.send.send(message).await.expect("send");
    }

    async fn answer(&mut self) -> TradeSessionResponse {
        tokio::time::timeout(PATIENCE, self.answers.message())
            .await
            .expect("an answer within patience")
            .expect("stream open")
            .expect("an answer")
    }
}

#[tokio::test]
async fn many_checks_are_answered_with_their_correlation_ids() {
    let server = TestServer::start("").await;
    let mut session = Session::open(&server).await;
    for id in 0..2_000u64 {
        session.send(check(id, &format!("ACC-{}", id % 50))).await;
    }
    let mut permits = HashMap::new();
    for _ in 0..2_000 {
        let answer = session.answer().await;
        match answer.kind {
            Some(Out::Check(check)) => {
                assert!(check.allowed);
                assert!(permits
                    .insert(check.permit_id, answer.correlation_id)
                    .is_none());
            }
            other => panic!("expected a check answer, got {other:?}"),
        }
    }
    let mut ids: Vec<u64> = permits.values().copied().collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..2_000).collect::<Vec<_>>(), "each id answered once");
    server.stop().await;
}

#[tokio::test]
async fn messages_get_the_unary_semantics_and_errors_do_not_end_the_stream() {
    let server = TestServer::start("[breaker]\nfailure_threshold = 2\n").await;
    let mut session = Session::open(&server).await;
    let mut permits = Vec::new();
    for id in 0..2 {
        session.send(check(id, "ACC")).await;
        match session.answer().await.kind {
            Some(Out::Check(c)) => permits.push(c.permit_id),
            other => panic!("{other:?}"),
        }
    }
    for (id, permit) in permits.iter().enumerate() {
        session.send(failure(10 + id as u64, "ACC", permit)).await;
        let answer = session.answer().await;
        assert_eq!(answer.correlation_id, 10 + id as u64);
        assert!(
            matches!(answer.kind, Some(Out::Report(r)) if r.disposition == OutcomeDisposition::Recorded as i32)
        );
    }
    // The breaker opened: a check is denied as the unary call would be.
    session.send(check(20, "ACC")).await;
    match session.answer().await.kind {
        Some(Out::Check(c)) => {
            assert!(!c.allowed);
            assert_eq!(c.denial, Denial::BreakerOpen as i32);
        }
        other => panic!("{other:?}"),
    }
    let unary = server.check("ACC").await;
    assert_eq!(unary.denial, Denial::BreakerOpen as i32);
    // Bad messages are answered with the unary status, and the stream goes on.
    session.send(check(30, "bad id!")).await;
    session
        .send(TradeSessionRequest {
            correlation_id: 31,
            kind: None,
        })
        .await;
    session.send(failure(32, "ACC", &permits[0])).await;
    let mut answers: Vec<TradeSessionResponse> = Vec::new();
    for _ in 0..3 {
        answers.push(session.answer().await);
    }
    answers.sort_by_key(|a| a.correlation_id);
    match &answers[0].kind {
        Some(Out::Error(e)) => {
            assert_eq!(e.code, tonic::Code::InvalidArgument as i32);
            assert!(e.message.contains("account_id"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&answers[1].kind, Some(Out::Error(e)) if e.code == tonic::Code::InvalidArgument as i32)
    );
    // A permit of the previous generation: stale, exactly as unary.
    assert!(
        matches!(&answers[2].kind, Some(Out::Report(r)) if r.disposition == OutcomeDisposition::Stale as i32)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_broken_stream_loses_no_acknowledged_outcome() {
    let server = TestServer::start("[breaker]\nfailure_threshold = 1000\n").await;
    let mut session = Session::open(&server).await;
    for id in 0..20 {
        session.send(failure(id, "ACC", "")).await;
    }
    for _ in 0..20 {
        assert!(matches!(session.answer().await.kind, Some(Out::Report(_))));
    }
    // The client goes away mid-stream, with more in flight.
    for id in 20..40 {
        session.send(failure(id, "ACC", "")).await;
    }
    drop(session);
    let count = server.breaker("ACC").await.failure_count;
    assert!(
        count >= 20,
        "the 20 acknowledged outcomes are kept: {count}"
    );
    server.stop().await;
}
