//! The service as a whole: health, reflection, listing, and a restart on the same store.

mod common;

use std::sync::Arc;

use common::*;
use riskgate::proto::*;
use riskgate::store::MemoryStore;
use tokio_stream::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

#[tokio::test]
async fn health_reports_serving_for_the_server_and_each_service() {
    let server = TestServer::start("").await;
    let mut health = HealthClient::new(server.channel());
    for service in [
        "",
        "riskgate.v1.GateService",
        "riskgate.v1.MonitorService",
        "riskgate.v1.AdminService",
        "liveness",
    ] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            response.status,
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_riskgate_services() {
    let server = TestServer::start("").await;
    let mut reflection = ServerReflectionClient::new(server.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.next().await.expect("a response").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "riskgate.v1.GateService",
        "riskgate.v1.MonitorService",
        "riskgate.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn list_breakers_pages_in_account_order_and_filters_by_state() {
    let server = TestServer::start("").await;
    for i in (0..25).rev() {
        server.check(&format!("ACC-{i:02}")).await;
    }
    server.trip("ACC-07", "x").await;
    server.trip("ACC-19", "x").await;

    let mut monitor = server.monitor();
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = monitor
            .list_breakers(ListBreakersRequest {
                state: 0,
                page_size: 10,
                page_token,
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(page.total_breakers, 25);
        assert!(page.breakers.len() <= 10);
        seen.extend(page.breakers.into_iter().map(|b| b.account_id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let expected: Vec<_> = (0..25).map(|i| format!("ACC-{i:02}")).collect();
    assert_eq!(seen, expected);

    let open = monitor
        .list_breakers(ListBreakersRequest {
            state: BreakerState::Open as i32,
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("list open")
        .into_inner();
    let open: Vec<_> = open.breakers.into_iter().map(|b| b.account_id).collect();
    assert_eq!(open, vec!["ACC-07", "ACC-19"]);
    server.stop().await;
}

#[tokio::test]
async fn a_restart_on_the_same_store_keeps_breakers_and_continues_the_sequence() {
    let toml = "[breaker]\nopen_timeout_secs = 600.0\n";
    let store = Arc::new(MemoryStore::new(10_000));
    let server = TestServer::start_with(config(toml), store.clone()).await;
    server.trip("HALTED", "runaway").await; // 1
    server.fail("FAILING", 5).await; // 2: OPEN
    server.fail("WOBBLY", 2).await;
    server.stop().await;

    let server = TestServer::start_with(config(toml), store).await;
    let halted = server.breaker("HALTED").await;
    assert_eq!(state(halted.state), BreakerState::Open);
    assert!(halted.tripped_by_operator);
    let failing = server.breaker("FAILING").await;
    assert_eq!(state(failing.state), BreakerState::Open);
    assert_eq!(failing.failure_count, 5);
    assert!(!server.check("FAILING").await.allowed);
    assert_eq!(server.breaker("WOBBLY").await.failure_count, 2);

    // The sequence continues, and resuming reaches back across the restart.
    let mut stream = server.watch(&[], Some(0)).await;
    assert_eq!(next_event(&mut stream).await.sequence, 1);
    assert_eq!(next_event(&mut stream).await.sequence, 2);
    server.reset("HALTED", "ok").await;
    assert_eq!(next_event(&mut stream).await.sequence, 3);
    server.stop().await;
}
