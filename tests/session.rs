//! The trade session: checks and outcomes on one bidirectional stream, answered exactly as the
//! unary calls answer them, matched by correlation id.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use riskgate::proto::trade_session_request::Kind as In;
use riskgate::proto::trade_session_response::Kind as Out;
use riskgate::proto::*;
use riskgate::store::Store;
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
        Session::open_by(server, None).await
    }

    /// A session whose call carries `deadline` (`grpc-timeout`) when given.
    async fn open_by(server: &TestServer, deadline: Option<Duration>) -> Session {
        let (send, receive) = mpsc::channel(4096);
        let mut request = tonic::Request::new(ReceiverStream::new(receive));
        if let Some(deadline) = deadline {
            request.set_timeout(deadline);
        }
        let answers = server
            .gate()
            .trade_session(request)
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

/// A store that makes nothing durable until told to: reports wait for their commit as long
/// as the test likes.
struct HeldStore {
    durable: Arc<riskgate::store::MemoryStore>,
    /// The last ticket given, and the batches held with their tickets and callers.
    held: std::sync::Mutex<(u64, Vec<HeldBatch>)>,
    signals: Arc<riskgate::store::StoreSignals>,
}

type HeldBatch = (
    u64,
    riskgate::store::Batch,
    tokio::sync::oneshot::Sender<Result<(), riskgate::store::StoreError>>,
);

impl HeldStore {
    fn new() -> Self {
        HeldStore {
            durable: Arc::new(riskgate::store::MemoryStore::new(10_000)),
            held: Default::default(),
            signals: Arc::new(riskgate::store::StoreSignals::new(0)),
        }
    }

    /// Makes every held batch durable and answers its callers.
    fn release(&self) {
        let mut held = self.held.lock().unwrap();
        let mut through = None;
        let mut sequence = None;
        for (ticket, batch, reply) in held.1.drain(..) {
            sequence = batch.events.last().map(|e| e.sequence).or(sequence);
            self.durable.submit(batch);
            through = Some(ticket);
            let _ = reply.send(Ok(()));
        }
        if let Some(ticket) = through {
            self.signals.wrote(sequence, ticket);
        }
    }

    fn held(&self) -> usize {
        self.held.lock().unwrap().1.len()
    }
}

impl Store for HeldStore {
    fn load_streaming(
        &self,
        breakers: &(dyn Fn(riskgate::store::Loading) + Sync),
    ) -> Result<riskgate::store::Recovered, riskgate::store::StoreError> {
        self.durable.load_streaming(breakers)
    }

    fn submit(&self, batch: riskgate::store::Batch) -> riskgate::store::Commit {
        let mut held = self.held.lock().unwrap();
        held.0 += 1;
        let ticket = held.0;
        let (reply, receiver) = tokio::sync::oneshot::channel();
        held.1.push((ticket, batch, reply));
        riskgate::store::Commit::pending(ticket, receiver)
    }

    fn signals(&self) -> Arc<riskgate::store::StoreSignals> {
        self.signals.clone()
    }

    fn audit_records(
        &self,
        query: &riskgate::store::AuditQuery,
    ) -> Result<Vec<riskgate::history::AuditRecord>, riskgate::store::StoreError> {
        self.durable.audit_records(query)
    }
}

#[tokio::test]
async fn a_check_is_not_answered_after_reports_that_wait_for_the_disk() {
    let store = Arc::new(HeldStore::new());
    let server = TestServer::start_with(config(""), store.clone()).await;
    let mut session = Session::open(&server).await;
    // Both accounts known and durable (the first check of an account waits for its
    // creation to be durable), and permits for two reports.
    let mut permits = Vec::new();
    for (id, account) in [(0, "REPORTING"), (1, "REPORTING"), (2, "CHECKING")] {
        session.send(check(id, account)).await;
        let answer = loop {
            store.release();
            if let Ok(answer) =
                tokio::time::timeout(Duration::from_millis(20), session.answer()).await
            {
                break answer;
            }
        };
        assert_eq!(answer.correlation_id, id);
        match answer.kind {
            Some(Out::Check(check)) => permits.push(check.permit_id),
            other => panic!("a check's answer, got {other:?}"),
        }
    }
    assert_eq!(store.held(), 0);
    // Two failures, whose answers wait for their commit; then a check on another account.
    session.send(failure(10, "REPORTING", &permits[0])).await;
    session.send(failure(11, "REPORTING", &permits[1])).await;
    session.send(check(12, "CHECKING")).await;
    let first = session.answer().await;
    assert_eq!(
        first.correlation_id, 12,
        "the check overtakes the reports waiting for the disk: {first:?}"
    );
    assert!(matches!(first.kind, Some(Out::Check(c)) if c.allowed));
    assert!(store.held() >= 1, "the reports are still waiting");
    store.release();
    let mut reports = vec![session.answer().await, session.answer().await];
    reports.sort_by_key(|answer| answer.correlation_id);
    assert_eq!(
        reports.iter().map(|a| a.correlation_id).collect::<Vec<_>>(),
        [10, 11]
    );
    for report in reports {
        assert!(
            matches!(report.kind, Some(Out::Report(_))),
            "a report's answer once durable: {report:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_report_still_waiting_for_the_disk_at_its_deadline_is_answered_deadline_exceeded() {
    let store = Arc::new(HeldStore::new());
    let server = TestServer::start_with(config(""), store.clone()).await;
    let gate = server.gate();
    // The account's creation is durable once released; the check gives a permit.
    let permit = check_releasing(gate.clone(), &store, "LATE")
        .await
        .unwrap()
        .into_inner()
        .permit_id;
    // A failure whose commit is held past the deadline the client gives it, sent over a
    // bare HTTP/2 connection: tonic's client would enforce the deadline itself.
    let failure = ReportOutcomeRequest {
        account_id: "LATE".into(),
        permit_id: permit,
        outcome: Outcome::Failure as i32,
        ..Default::default()
    };
    let (status, message) = tokio::time::timeout(
        Duration::from_secs(10),
        unary_with_deadline(
            server.addr,
            "/riskgate.v1.GateService/ReportOutcome",
            &failure,
            "200m",
        ),
    )
    .await
    .expect("answered by the deadline, not when the disk lets it");
    assert_eq!(
        status,
        (tonic::Code::DeadlineExceeded as i32).to_string(),
        "{message}"
    );
    assert!(message.contains("deadline"), "{message}");
    assert_eq!(
        store.held(),
        1,
        "the change is still on its way to the disk"
    );
    // The server goes on: a check is answered once what it waits for is durable.
    assert!(check_releasing(gate, &store, "LATE").await.is_ok());
    server.stop().await;
}

/// A check on `account`, answered once the store has released what it waits for.
async fn check_releasing(
    mut gate: riskgate::proto::gate_service_client::GateServiceClient<tonic::transport::Channel>,
    store: &HeldStore,
    account: &str,
) -> Result<tonic::Response<CheckTradeResponse>, tonic::Status> {
    let request = CheckTradeRequest {
        account_id: account.into(),
        ..Default::default()
    };
    let checking = tokio::spawn(async move { gate.check_trade(request).await });
    while !checking.is_finished() {
        store.release();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    checking.await.unwrap()
}

/// One unary call over a bare HTTP/2 connection with `grpc-timeout: timeout`; the
/// `grpc-status` and `grpc-message` it ends with.
async fn unary_with_deadline(
    addr: std::net::SocketAddr,
    path: &str,
    message: &impl prost::Message,
    timeout: &str,
) -> (String, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let request = ::http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .unwrap();
    let (response, mut body) = send.send_request(request, false).unwrap();
    body.send_data(grpc_frame(message), true).unwrap();
    let response = response.await.unwrap();
    let read = |headers: &::http::HeaderMap| {
        let get = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        (get("grpc-status"), get("grpc-message"))
    };
    if response.headers().contains_key("grpc-status") {
        return read(response.headers());
    }
    let mut answer = response.into_body();
    while let Some(data) = answer.data().await {
        data.unwrap();
    }
    let trailers = answer.trailers().await.unwrap().unwrap_or_default();
    read(&trailers)
}

#[tokio::test]
async fn a_session_still_open_at_its_deadline_is_ended_with_deadline_exceeded() {
    let server = TestServer::start("").await;
    let mut session = Session::open_by(&server, Some(Duration::from_millis(500))).await;
    // The session works until its deadline.
    session.send(check(1, "ACC-DEADLINE")).await;
    assert_eq!(session.answer().await.correlation_id, 1);
    // Then nothing is sent, and the client keeps its end open: the server ends the call at
    // its deadline (the client's own deadline covers only the answer's start).
    let ended = tokio::time::timeout(PATIENCE, session.answers.message())
        .await
        .expect("the session ended within patience");
    let status = ended.expect_err("ended with a status");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    // A session without a deadline is not ended by the server.
    let mut session = Session::open(&server).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    session.send(check(3, "ACC-DEADLINE")).await;
    assert_eq!(session.answer().await.correlation_id, 3);
    server.stop().await;
}
