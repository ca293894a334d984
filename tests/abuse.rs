//! One client cannot take the gate away from the others. A hostile or broken client, speaking
//! raw HTTP/2 (the `h2` crate) from 127.0.0.1, opens as many streams as the server lets it and
//! sends each stream's headers and a tenth of its body, never the rest, again and again; a
//! "canary" bot on 127.0.0.2 meanwhile makes ordinary CheckTrade calls, and every one must
//! succeed. The same attack against a server without a per-client share of calls in flight
//! starves the canary, which shows the test can fail. Then the connection hygiene: a
//! connection that never finishes its handshake is closed, a peer past its connections is
//! refused while another address is served, and a server out of file descriptors backs off
//! instead of spinning and serves again once descriptors are free.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::process::{free_port, lines, wait_for, Running};
use common::TestServer;
use riskgate::proto::gate_service_client::GateServiceClient;
use riskgate::proto::*;
use tonic::transport::{Channel, Endpoint};

const CANARY: &str = "127.0.0.2";

/// A client from `local` (an address of the loopback network).
async fn connect_from(
    addr: SocketAddr,
    local: &str,
) -> Result<GateServiceClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .local_address(Some(local.parse().expect("ip")))
        .timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(GateServiceClient::new(channel))
}

async fn client_from(addr: SocketAddr, local: &str) -> GateServiceClient<Channel> {
    connect_from(addr, local).await.expect("connect")
}

/// Whether a check for `account` from `local` is answered and allowed.
async fn allowed_from(addr: SocketAddr, local: &str, account: &str) -> bool {
    client_from(addr, local)
        .await
        .check_trade(CheckTradeRequest {
            account_id: account.into(),
            ..Default::default()
        })
        .await
        .expect("check answered")
        .into_inner()
        .allowed
}

/// The attacker's streams: how they ended.
#[derive(Default)]
struct Attack {
    opened: AtomicU64,
    /// Ended by the body deadline (DEADLINE_EXCEEDED).
    timed_out: AtomicU64,
    /// Refused at once (RESOURCE_EXHAUSTED: past its share; UNAVAILABLE: overloaded).
    refused: AtomicU64,
}

/// One stream that sends its headers and 10 of its request's bytes, never the rest, and waits
/// for whatever the server answers; then the next.
async fn stall_forever(
    send: h2::client::SendRequest<Bytes>,
    authority: String,
    attack: Arc<Attack>,
) {
    let message = CheckTradeRequest {
        account_id: "victim-of-a-slow-client".into(),
        ..Default::default()
    };
    let frame = common::grpc_frame(&message);
    let partial = frame.slice(..10.min(frame.len()));
    loop {
        let Ok(mut ready) = send.clone().ready().await else {
            return;
        };
        let request = http::Request::builder()
            .method("POST")
            .uri(format!(
                "http://{authority}/riskgate.v1.GateService/CheckTrade"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let Ok((response, mut stream)) = ready.send_request(request, false) else {
            return;
        };
        attack.opened.fetch_add(1, Ordering::Relaxed);
        let _ = stream.send_data(partial.clone(), false);
        let Ok(response) = response.await else {
            attack.refused.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let status = match response.headers().get("grpc-status") {
            Some(status) => status.to_str().unwrap_or("?").to_owned(),
            None => {
                let mut body = response.into_body();
                while let Some(Ok(_)) = body.data().await {}
                body.trailers()
                    .await
                    .ok()
                    .flatten()
                    .and_then(|t| {
                        t.get("grpc-status")
                            .and_then(|v| v.to_str().ok().map(str::to_owned))
                    })
                    .unwrap_or_default()
            }
        };
        drop(stream);
        match status.as_str() {
            "4" => {
                attack.timed_out.fetch_add(1, Ordering::Relaxed);
            }
            "8" | "14" => {
                // Refused at once: try again a little later, holding what it holds. (A client
                // that retries in a tight loop spends the server's CPU, not its slots: that is
                // for rate limits, limits.gate_calls_per_sec.)
                attack.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RETRY).await;
            }
            _ => tokio::time::sleep(RETRY).await,
        }
    }
}

/// The binary under test: this build's, or `RISKGATE_TEST_BINARY` (to measure a release build
/// with these tests).
fn binary() -> String {
    std::env::var("RISKGATE_TEST_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_riskgate").to_owned())
}

/// The real binary with `limits` set through the environment, on a free port.
fn serve(limits: &[(&str, &str)]) -> (Running, SocketAddr) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut server = Running(
        std::process::Command::new(binary())
            .arg("serve")
            .env("RISKGATE__SERVER__LISTEN", &listen)
            .env("RISKGATE__STORE__KIND", "memory")
            .envs(
                limits
                    .iter()
                    .map(|(k, v)| (format!("RISKGATE__LIMITS__{k}"), *v)),
            )
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start riskgate serve"),
    );
    let logs = lines(server.stderr.take().expect("stderr"));
    wait_for(&logs, "riskgate serving");
    // Keep reading, so the server never blocks on a full pipe.
    std::thread::spawn(move || while logs.recv().is_ok() {});
    (server, listen.parse().expect("addr"))
}

/// Runs the attack (11 connections, as many stalled streams as each may hold, on a runtime of
/// its own) for `secs` while the canary calls; returns the canary's failures, calls and
/// latencies, and the attack's tally.
fn attack_and_canary(addr: SocketAddr, secs: u64) -> (u64, u64, Arc<Attack>, Vec<Duration>) {
    let attack = Arc::new(Attack::default());
    let attacker = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("attacker runtime");
    // RISKGATE_ABUSE_CONNECTIONS=0 measures the canary alone, for comparison.
    let connections: usize = std::env::var("RISKGATE_ABUSE_CONNECTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(11);
    for _ in 0..connections {
        let attack = attack.clone();
        attacker.spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .expect("attacker connects");
            let (send, connection) = h2::client::Builder::new()
                .handshake::<_, Bytes>(stream)
                .await
                .expect("attacker handshake");
            tokio::spawn(async move {
                let _ = connection.await;
            });
            for _ in 0..1_024 {
                tokio::spawn(stall_forever(
                    send.clone(),
                    addr.to_string(),
                    attack.clone(),
                ));
            }
        });
    }
    // Let the attack fill what it can before the canary starts.
    std::thread::sleep(Duration::from_millis(500));
    let canary = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("canary runtime");
    let (failures, calls, mut latencies) = canary.block_on(async {
        let mut canary = client_from(addr, CANARY).await;
        let (mut calls, mut failures) = (0, 0);
        let mut latencies = Vec::new();
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            let started = Instant::now();
            let answer = canary
                .check_trade(CheckTradeRequest {
                    account_id: "canary".into(),
                    ..Default::default()
                })
                .await;
            latencies.push(started.elapsed());
            calls += 1;
            match answer {
                Ok(answer) if answer.get_ref().allowed => {}
                _ => failures += 1,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (failures, calls, latencies)
    });
    attacker.shutdown_background();
    latencies.sort();
    (failures, calls, attack, latencies)
}

/// A server that holds 300 calls in flight, the attacker up to 11 x 256 streams.
const LIMITS: [(&str, &str); 2] = [("MAX_IN_FLIGHT", "300"), ("REQUEST_BODY_TIMEOUT_SECS", "2")];
/// How long the attacker waits before opening a stream again after one was refused.
const RETRY: Duration = Duration::from_secs(1);

#[test]
fn a_client_that_never_finishes_its_requests_cannot_starve_another() {
    let (mut server, addr) = serve(&[LIMITS[0], LIMITS[1], ("MAX_IN_FLIGHT_PER_CLIENT", "100")]);
    let (failures, calls, attack, latencies) = attack_and_canary(addr, 4);
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "canary: {calls} calls, {failures} failed, p50 {:?}, p99 {:?}, max {:?}; attacker: {} streams opened, {} ended by the body deadline, {} refused",
        p(0.5),
        p(0.99),
        p(1.0),
        attack.opened.load(Ordering::Relaxed),
        attack.timed_out.load(Ordering::Relaxed),
        attack.refused.load(Ordering::Relaxed),
    );
    assert!(calls >= 3, "the canary called ({calls})");
    assert_eq!(failures, 0, "every canary call succeeded");
    assert!(
        attack.refused.load(Ordering::Relaxed) > 0,
        "the attacker was held to its share"
    );
    assert!(
        attack.timed_out.load(Ordering::Relaxed) > 0,
        "stalled bodies were ended"
    );
    common::process::signal(&server, "TERM");
    let _ = server.wait();
}

/// The same attack against a server whose per-client share is as large as the whole: the
/// canary is starved, so the test above would catch losing the share.
#[test]
fn without_a_per_client_share_the_same_attack_starves_the_canary() {
    let (mut server, addr) = serve(&[LIMITS[0], LIMITS[1], ("MAX_IN_FLIGHT_PER_CLIENT", "300")]);
    let (failures, calls, _, _) = attack_and_canary(addr, 3);
    println!("canary without a share: {failures} of {calls} calls failed");
    assert!(failures > 0, "the attack reached the canary");
    common::process::signal(&server, "TERM");
    let _ = server.wait();
}

/// A raw TCP connection from the test, and whether the server closed it within `patience`
/// (read returns end of file or an error) rather than leaving it open.
fn closed_by_server(mut stream: TcpStream, patience: Duration) -> bool {
    stream
        .set_read_timeout(Some(patience))
        .expect("read timeout");
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // The server's SETTINGS, or its GOAWAY: keep reading until it closes.
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_the_handshake_are_closed() {
    let server = TestServer::start("[limits]\nhandshake_timeout_secs = 0.3\n").await;
    let addr = server.addr;
    let (silent, half) = tokio::task::spawn_blocking(move || {
        let silent = TcpStream::connect(addr).expect("connect");
        let mut half = TcpStream::connect(addr).expect("connect");
        std::io::Write::write_all(&mut half, b"PRI * HTTP/2.0\r\n").expect("half a preface");
        // Generous: the deadline is 0.3 s; this only bounds a failing test.
        (
            closed_by_server(silent, Duration::from_secs(20)),
            closed_by_server(half, Duration::from_secs(20)),
        )
    })
    .await
    .expect("probe");
    assert!(silent, "a silent connection was closed");
    assert!(half, "half a preface was closed");
    // A real client still gets in.
    assert!(allowed_from(server.addr, "127.0.0.1", "after").await);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_past_its_connections_is_refused_and_another_is_served() {
    let server = TestServer::start("[limits]\nmax_connections_per_peer = 4\n").await;
    // The test server's own client holds one connection from 127.0.0.1; three more fill it.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(client_from(server.addr, "127.0.0.1").await);
    }
    for client in &mut held {
        client
            .check_trade(CheckTradeRequest {
                account_id: "held".into(),
                ..Default::default()
            })
            .await
            .expect("a held connection works");
    }
    let addr = server.addr;
    let refused = tokio::task::spawn_blocking(move || {
        let extra = TcpStream::connect(addr).expect("the kernel accepts");
        closed_by_server(extra, Duration::from_secs(20))
    })
    .await
    .expect("probe");
    assert!(refused, "the fifth connection from 127.0.0.1 was closed");
    assert!(
        allowed_from(server.addr, CANARY, "other-peer").await,
        "another address is served"
    );
    server.stop().await;
}

/// A counter's value from a Prometheus endpoint (0 when absent).
fn metric(addr: &str, name: &str) -> f64 {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return 0.0;
    };
    let _ = std::io::Write::write_all(
        &mut stream,
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// The real binary under `ulimit -n 64`: connections past its descriptors make accept fail
/// with EMFILE; it backs off (a handful of failed accepts a second, not a spin), warns a few
/// times, and serves new clients again once the held connections close.
#[test]
fn out_of_file_descriptors_the_accept_loop_backs_off_and_recovers() {
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let binary = env!("CARGO_BIN_EXE_riskgate");
    let mut server = Running(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n 64 && exec {binary} serve"))
            .env("RISKGATE__SERVER__LISTEN", &listen)
            .env("RISKGATE__STORE__KIND", "memory")
            .env("RISKGATE__METRICS__LISTEN", &metrics)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start riskgate serve"),
    );
    let logs = lines(server.stderr.take().expect("stderr"));
    wait_for(&logs, "riskgate serving");
    let addr: SocketAddr = listen.parse().expect("addr");
    // More connections than descriptors: the kernel queues them, the server cannot take them.
    let held: Vec<TcpStream> = (0..120)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    wait_for(&logs, "waiting");
    let before = metric(&metrics, "riskgate_accept_errors_total");
    std::thread::sleep(Duration::from_secs(2));
    let during = metric(&metrics, "riskgate_accept_errors_total") - before;
    println!(
        "{} connections held; {during} failed accepts in 2 s",
        held.len()
    );
    assert!(
        during < 100.0,
        "the accept loop backs off rather than spinning ({during} failed accepts in 2 s)"
    );
    drop(held);
    // Descriptors free again: a new client is served.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let allowed = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let attempt = async {
                let mut client = connect_from(addr, "127.0.0.1").await.ok()?;
                client
                    .check_trade(CheckTradeRequest {
                        account_id: "after-emfile".into(),
                        ..Default::default()
                    })
                    .await
                    .ok()
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Some(answer)) => return answer.into_inner().allowed,
                _ if Instant::now() > deadline => return false,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    assert!(allowed, "served again once descriptors were free");
    common::process::signal(&server, "TERM");
    let _ = server.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_no_calls_for_the_idle_timeout_is_closed() {
    let server = TestServer::start("[limits]\nidle_timeout_secs = 0.3\n").await;
    let stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (send, connection) = h2::client::Builder::new()
        .handshake::<_, Bytes>(stream)
        .await
        .expect("handshake");
    let connection = tokio::spawn(connection);
    // One call, answered; then nothing.
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{}/riskgate.v1.GateService/CheckTrade",
            server.addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let mut ready = send.clone().ready().await.expect("ready");
    let (response, mut body) = ready.send_request(request, false).expect("send");
    let message = CheckTradeRequest {
        account_id: "idle".into(),
        ..Default::default()
    };
    body.send_data(common::grpc_frame(&message), true)
        .expect("data");
    let response = response.await.expect("answered");
    assert_eq!(response.status(), 200);
    // Generous: the idle timeout is 0.3 s; this only bounds a failing test.
    let ended = tokio::time::timeout(Duration::from_secs(20), connection).await;
    let ended = ended.expect("the idle connection was closed by the server");
    assert!(
        ended.expect("the connection task").is_ok(),
        "the connection ended cleanly"
    );
    // With a GOAWAY: the client knows to take its next call elsewhere, rather than finding
    // the connection broken under it.
    let error = send
        .ready()
        .await
        .expect_err("no new call on a closed connection");
    assert!(
        error.is_go_away() && error.reason() == Some(h2::Reason::NO_ERROR),
        "closed with a GOAWAY (NO_ERROR), not dropped: {error:?}"
    );
    server.stop().await;
}

/// A client whose share of calls in flight is full still gets health answers (probes share an
/// address with the bots on it), while its next check is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_a_client_whose_share_is_full() {
    let (mut server, addr) = serve(&[
        ("MAX_IN_FLIGHT_PER_CLIENT", "4"),
        ("REQUEST_BODY_TIMEOUT_SECS", "60"),
    ]);
    // Four calls held in flight from 127.0.0.1: headers and part of a body, never the rest.
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, connection) = h2::client::Builder::new()
        .handshake::<_, Bytes>(stream)
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let attack = Arc::new(Attack::default());
    for _ in 0..4 {
        tokio::spawn(stall_forever(
            send.clone(),
            addr.to_string(),
            attack.clone(),
        ));
    }
    let deadline = Instant::now() + common::PATIENCE;
    let mut gate = client_from(addr, "127.0.0.1").await;
    loop {
        let refused = gate
            .check_trade(CheckTradeRequest {
                account_id: "busy".into(),
                ..Default::default()
            })
            .await;
        if refused
            .as_ref()
            .is_err_and(|s| s.code() == tonic::Code::ResourceExhausted)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the share never filled: {refused:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .local_address(Some("127.0.0.1".parse().expect("ip")))
        .connect()
        .await
        .expect("connect");
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers a client whose share is full")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // The held calls would keep a graceful stop waiting for its grace period.
    server.kill().expect("kill the server");
}
