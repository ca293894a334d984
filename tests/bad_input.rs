//! Bad input is answered with INVALID_ARGUMENT and a message naming what is wrong, and changes
//! no breaker. A request that is not protobuf at all gets gRPC's INTERNAL, with the message
//! naming what could not be decoded, and changes nothing either.

mod common;

use common::*;
use riskgate::proto::*;
use tonic::Code;

fn assert_invalid(result: Result<impl std::fmt::Debug, tonic::Status>, expected: &str) {
    let status = result.expect_err("bad input must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(expected),
        "message {:?} should contain {expected:?}",
        status.message()
    );
}

#[tokio::test]
async fn bad_account_ids_are_refused_with_the_rule() {
    let server = TestServer::start("").await;
    let oversized = "a".repeat(129);
    let cases = [
        ("", "account_id is required"),
        (oversized.as_str(), "at most 128 bytes"),
        ("acc 1", "only the characters [A-Za-z0-9._:-]"),
        ("acc/1", "only the characters"),
        ("acc\n1", "only the characters"),
        ("ACC\u{0}", "only the characters"),
        ("accé", "only the characters"),
    ];
    for (account_id, expected) in cases {
        let check = server
            .gate()
            .check_trade(CheckTradeRequest {
                account_id: account_id.into(),
                ..Default::default()
            })
            .await;
        assert_invalid(check, expected);
        let report = server
            .gate()
            .report_outcome(ReportOutcomeRequest {
                account_id: account_id.into(),
                permit_id: String::new(),
                outcome: Outcome::Failure as i32,
                ..Default::default()
            })
            .await;
        assert_invalid(report, expected);
        let get = server
            .monitor()
            .get_breaker(GetBreakerRequest {
                account_id: account_id.into(),
            })
            .await;
        assert_invalid(get, expected);
        let trip = server
            .admin()
            .trip_breaker(TripBreakerRequest {
                account_id: account_id.into(),
                reason: "r".into(),
                operator: "o".into(),
                ..Default::default()
            })
            .await;
        assert_invalid(trip, expected);
    }
    assert_eq!(
        server.total_breakers().await,
        0,
        "no breaker was created by bad input"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_outcomes_and_permits_are_refused_and_change_nothing() {
    let server = TestServer::start("").await;
    server.fail("ACC-1", 2).await;
    let permit = server.check("ACC-1").await.permit_id;
    let foreign = server.check("ACC-2").await.permit_id;
    let before = server.breaker("ACC-1").await;

    let report = |permit_id: String, outcome: i32| {
        let mut gate = server.gate();
        async move {
            gate.report_outcome(ReportOutcomeRequest {
                account_id: "ACC-1".into(),
                permit_id,
                outcome,
                ..Default::default()
            })
            .await
        }
    };
    assert_invalid(
        report(permit.clone(), Outcome::Unspecified as i32).await,
        "outcome must be one of OUTCOME_SUCCESS, OUTCOME_FAILURE",
    );
    assert_invalid(report(permit.clone(), 99).await, "outcome must be one of");
    assert_invalid(
        report("not-a-permit".into(), Outcome::Failure as i32).await,
        "permit_id is not valid for account ACC-1",
    );
    assert_invalid(
        report(permit.to_uppercase(), Outcome::Failure as i32).await,
        "permit is not one that CheckTrade returned",
    );
    assert_invalid(
        report(foreign, Outcome::Failure as i32).await,
        "issued for a different account",
    );
    assert_eq!(server.breaker("ACC-1").await, before);
    // The good permit still counts.
    let ok = report(permit, Outcome::Failure as i32)
        .await
        .expect("good permit");
    assert_eq!(ok.into_inner().failure_count, 3);
    server.stop().await;
}

#[tokio::test]
async fn operator_actions_need_an_operator_and_a_reason() {
    let server = TestServer::start("").await;
    server.fail("ACC-1", 1).await;
    let before = server.breaker("ACC-1").await;
    let long = "x".repeat(1025);
    let cases = [
        ("", "alice", "reason is required"),
        ("   ", "alice", "reason is required"),
        ("why", "", "operator is required"),
        (long.as_str(), "alice", "reason must be at most 1024 bytes"),
        ("line\nbreak", "alice", "control characters"),
    ];
    for (reason, operator, expected) in cases {
        let reset = server
            .admin()
            .reset_breaker(ResetBreakerRequest {
                account_id: "ACC-1".into(),
                reason: reason.into(),
                operator: operator.into(),
            })
            .await;
        assert_invalid(reset, expected);
        let trip = server
            .admin()
            .trip_breaker(TripBreakerRequest {
                account_id: "ACC-1".into(),
                reason: reason.into(),
                operator: operator.into(),
                ..Default::default()
            })
            .await;
        assert_invalid(trip, expected);
    }
    assert_eq!(server.breaker("ACC-1").await, before);
    server.stop().await;
}

#[tokio::test]
async fn bad_list_and_watch_requests_are_refused() {
    let server = TestServer::start("").await;
    let list = server
        .monitor()
        .list_breakers(ListBreakersRequest {
            state: 42,
            page_size: 0,
            page_token: String::new(),
        })
        .await;
    assert_invalid(list, "state must be one of");
    let list = server
        .monitor()
        .list_breakers(ListBreakersRequest {
            state: 0,
            page_size: 0,
            page_token: "no such token!".into(),
        })
        .await;
    assert_invalid(list, "page_token is not one this server issued");
    let watch = server
        .monitor()
        .watch_events(WatchEventsRequest {
            account_ids: vec!["ok".into(), "not ok".into()],
            after_sequence: None,
        })
        .await;
    assert_invalid(watch, "only the characters");
    server.stop().await;
}

#[tokio::test]
async fn unknown_accounts_are_not_found_without_being_created() {
    let server = TestServer::start("").await;
    let status = server
        .monitor()
        .get_breaker(GetBreakerRequest {
            account_id: "NEVER-SEEN".into(),
        })
        .await
        .expect_err("unknown account");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("NEVER-SEEN has no breaker yet"),
        "{}",
        status.message()
    );
    assert_eq!(server.total_breakers().await, 0);
    server.stop().await;
}

/// A client codec that sends the given bytes as the request message, valid protobuf or not.
/// No answer is expected, so it decodes answers as the empty message.
#[derive(Clone, Copy)]
struct RawRequest;

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawRequest {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = <tonic_prost::ProstCodec<(), ()> as tonic::codec::Codec>::Decoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<(), ()>::default().decoder()
    }
}

async fn send_raw(server: &TestServer, path: &'static str, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(server.channel());
    grpc.ready().await.expect("channel ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(body), path, RawRequest)
        .await
        .expect_err("a message that is not valid protobuf must be refused")
}

#[tokio::test]
async fn messages_that_are_not_protobuf_are_refused_with_the_field_and_change_nothing() {
    let server = TestServer::start("").await;
    // Field 1 (account_id), length 2, bytes that are not UTF-8.
    let not_utf8 = vec![0x0a, 0x02, 0xff, 0xfe];
    // Field 1, length 5, but only one byte follows.
    let truncated = vec![0x0a, 0x05, b'A'];
    let cases = [
        (
            "/riskgate.v1.GateService/CheckTrade",
            &not_utf8,
            "account_id",
        ),
        (
            "/riskgate.v1.GateService/CheckTrade",
            &truncated,
            "buffer underflow",
        ),
        (
            "/riskgate.v1.GateService/ReportOutcome",
            &not_utf8,
            "account_id",
        ),
        (
            "/riskgate.v1.AdminService/TripBreaker",
            &not_utf8,
            "account_id",
        ),
    ];
    for (path, body, expected) in cases {
        let status = send_raw(&server, path, body.clone()).await;
        // gRPC's status code for a request that cannot be parsed is INTERNAL
        // (grpc/doc/statuscodes.md); the message says what could not be decoded.
        assert_eq!(status.code(), Code::Internal, "{path}: {status:?}");
        assert!(
            status.message().contains(expected),
            "{path}: message {:?} should contain {expected:?}",
            status.message()
        );
    }
    assert_eq!(server.total_breakers().await, 0, "no breaker was created");
    assert!(
        server.check("ACC-AFTER").await.allowed,
        "a valid check after the bad ones"
    );
    server.stop().await;
}
