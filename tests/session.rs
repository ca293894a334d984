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

fn batch(id: u64, messages: Vec<TradeSessionRequest>) -> TradeSessionRequest {
    TradeSessionRequest {
        correlation_id: id,
        kind: Some(In::Batch(TradeSessionBatch { messages })),
    }
}

#[tokio::test]
async fn a_batch_is_handled_in_order_and_answered_message_by_message() {
    let server = TestServer::start("[breaker]\nfailure_threshold = 2\n").await;
    let mut session = Session::open(&server).await;
    // Two checks, then failures reported with the permits the empty ids stand for (the
    // current generation), then a check that meets the opened breaker; and among them a bad
    // id, an empty message and a nested batch, each refused alone.
    session
        .send(batch(
            1,
            vec![
                check(10, "ACC"),
                check(11, "ACC"),
                check(12, "bad id!"),
                failure(13, "ACC", ""),
                TradeSessionRequest {
                    correlation_id: 14,
                    kind: None,
                },
                batch(15, vec![check(150, "ACC")]),
                failure(16, "ACC", ""),
                check(17, "ACC"),
            ],
        ))
        .await;
    let answer = session.answer().await;
    assert_eq!(answer.correlation_id, 1);
    let Some(Out::Batch(answers)) = answer.kind else {
        panic!("{answer:?}")
    };
    let ids: Vec<u64> = answers.messages.iter().map(|a| a.correlation_id).collect();
    assert_eq!(ids, [10, 11, 12, 13, 14, 15, 16, 17]);
    let kinds: Vec<_> = answers.messages.into_iter().map(|a| a.kind).collect();
    assert!(matches!(&kinds[0], Some(Out::Check(c)) if c.allowed && !c.permit_id.is_empty()));
    assert!(matches!(&kinds[1], Some(Out::Check(c)) if c.allowed));
    assert!(
        matches!(&kinds[2], Some(Out::Error(e)) if e.code == tonic::Code::InvalidArgument as i32 && e.message.contains("account_id"))
    );
    assert!(
        matches!(&kinds[3], Some(Out::Report(r)) if r.disposition == OutcomeDisposition::Recorded as i32 && r.state == BreakerState::Closed as i32)
    );
    assert!(
        matches!(&kinds[4], Some(Out::Error(e)) if e.code == tonic::Code::InvalidArgument as i32)
    );
    assert!(
        matches!(&kinds[5], Some(Out::Error(e)) if e.code == tonic::Code::InvalidArgument as i32 && e.message.contains("batch"))
    );
    assert!(matches!(&kinds[6], Some(Out::Report(r)) if r.state == BreakerState::Open as i32));
    assert!(
        matches!(&kinds[7], Some(Out::Check(c)) if !c.allowed && c.denial == Denial::BreakerOpen as i32)
    );
    // What the batch did is what unary calls see.
    assert_eq!(server.check("ACC").await.denial, Denial::BreakerOpen as i32);

    // Too large a batch is refused whole, and the stream goes on.
    let oversized: Vec<_> = (0..1025).map(|i| check(i, "OTHER")).collect();
    session.send(batch(2, oversized)).await;
    let answer = session.answer().await;
    assert_eq!(answer.correlation_id, 2);
    assert!(
        matches!(&answer.kind, Some(Out::Error(e)) if e.code == tonic::Code::InvalidArgument as i32 && e.message.contains("1024")),
        "{answer:?}"
    );
    assert_eq!(
        server
            .monitor()
            .get_breaker(GetBreakerRequest {
                account_id: "OTHER".into(),
            })
            .await
            .map(drop)
            .map_err(|s| s.code()),
        Err(tonic::Code::NotFound),
        "nothing of a refused batch was done"
    );
    session.send(check(3, "OTHER")).await;
    assert!(matches!(session.answer().await.kind, Some(Out::Check(c)) if c.allowed));
    server.stop().await;
}
