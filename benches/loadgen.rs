//! The load generator: drives a gRPC server with N connections x M calls in flight of
//! `CheckTrade` (optionally each followed by `ReportOutcome`), or with trade sessions, after a
//! warm-up, and reports calls/s and p50/p99/p99.9 from an HDR histogram.
//!
//! Without `--addr`, it measures side by side, in one run: riskgate (`riskgate serve`, in-memory
//! store) and a trivial tonic server built into this binary that answers `CheckTrade` with one
//! map lookup, each as its own process pinned to the last core, with the load pinned to the
//! first; and prints every figure with riskgate's ratio to the trivial server. The two are
//! measured in alternating short rounds and compared by their means: this machine's speed drifts
//! by a third within seconds, and many short rounds average that out where two long ones do not.
//!
//!   cargo bench --bench loadgen                                # side by side, every mode
//!   cargo bench --bench loadgen -- --mode unary --in-flight 1  # latency at one call in flight
//!   cargo bench --bench loadgen -- --addr http://host:50051 --mode session
//!
//! Options: --mode unary|unary-report|session|batch|all, --connections N (1), --in-flight M
//! (64; for `batch`, batches), --batch B (32: checks per batch message of a trade session),
//! --seconds S (1), --warmup S (0.5), --rounds R (20), --accounts K (1000), --riskgate PATH (the
//! riskgate binary to measure: another build, for an A/B comparison; default the one built with
//! this bench).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use riskgate::proto::gate_service_client::GateServiceClient;
use riskgate::proto::gate_service_server::{GateService, GateServiceServer};
use riskgate::proto::trade_session_request::Kind as In;
use riskgate::proto::trade_session_response::Kind as Out;
use riskgate::proto::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// The allocator the `riskgate` binary ships with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn num<T: std::str::FromStr>(name: &str, default: T) -> T {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Unary,
    UnaryReport,
    Session,
    /// Trade session messages that each carry a batch of checks.
    SessionBatch,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Unary => "unary CheckTrade",
            Mode::UnaryReport => "unary Check+Report",
            Mode::Session => "TradeSession checks",
            Mode::SessionBatch => "TradeSession batched",
        }
    }
}

#[derive(Clone, Debug)]
struct Load {
    connections: usize,
    in_flight: usize,
    warmup: Duration,
    measure: Duration,
    accounts: usize,
    /// Checks per message in `Mode::SessionBatch`.
    batch: usize,
}

struct Result_ {
    calls: u64,
    elapsed: Duration,
    histogram: Histogram<u64>,
}

impl Result_ {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn micros(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }
}

/// A connection whose receive windows (1 MiB a stream, 16 MiB the connection) hold every
/// answer in flight: at HTTP/2's default 64 KiB, the answers to ~30 batches of 32 checks fill a
/// trade session's window and the server waits for window updates, so the load generator, not
/// the server, would set the pace.
async fn connect(addr: &str) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Channel::from_shared(addr.to_owned())
            .expect("address")
            .tcp_nodelay(true)
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(1 << 24)
            .connect()
            .await
        {
            Ok(channel) => return channel,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("cannot connect to {addr}: {e}"),
        }
    }
}

/// Runs `mode` against `addr`; latencies of calls started after the warm-up count.
async fn run(addr: &str, mode: Mode, load: &Load) -> Result_ {
    let mut channels = Vec::new();
    for _ in 0..load.connections {
        channels.push(connect(addr).await);
    }
    // Wait until the server answers (riskgate loads its store first).
    let mut probe = GateServiceClient::new(channels[0].clone());
    while probe
        .check_trade(CheckTradeRequest {
            account_id: "warmup".into(),
            ..Default::default()
        })
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let end = measure_from + load.measure;
    let mut tasks = Vec::new();
    for (c, channel) in channels.iter().enumerate() {
        match mode {
            Mode::Unary | Mode::UnaryReport => {
                // Raw HTTP/2 with pre-encoded requests: a client much lighter than the server,
                // so that the figures are the server's.
                let (send, connection) = raw_connection(addr).await;
                tokio::spawn(connection);
                let checks = Arc::new(
                    (0..load.accounts)
                        .map(|a| {
                            grpc_frame(&CheckTradeRequest {
                                account_id: format!("acct-{a}"),
                                ..Default::default()
                            })
                        })
                        .collect::<Vec<_>>(),
                );
                for w in 0..load.in_flight {
                    let send = send.clone();
                    let checks = checks.clone();
                    let authority = addr.trim_start_matches("http://").to_owned();
                    tasks.push(tokio::spawn(async move {
                        let mut h = Histogram::<u64>::new(3).expect("histogram");
                        let mut calls = 0u64;
                        let mut i = c * 7919 + w * 104_729;
                        loop {
                            let sent = Instant::now();
                            if sent >= end {
                                return (calls, h);
                            }
                            let account = i % checks.len();
                            i += 1;
                            let answer = raw_call(
                                &send,
                                &authority,
                                "/riskgate.v1.GateService/CheckTrade",
                                checks[account].clone(),
                            )
                            .await;
                            if mode == Mode::UnaryReport {
                                let check = <CheckTradeResponse as prost::Message>::decode(
                                    &answer[5.min(answer.len())..],
                                )
                                .expect("CheckTradeResponse");
                                let report = grpc_frame(&ReportOutcomeRequest {
                                    account_id: format!("acct-{account}"),
                                    permit_id: check.permit_id,
                                    outcome: Outcome::Success as i32,
                                    ..Default::default()
                                });
                                raw_call(
                                    &send,
                                    &authority,
                                    "/riskgate.v1.GateService/ReportOutcome",
                                    report,
                                )
                                .await;
                            }
                            if sent >= measure_from {
                                calls += 1;
                                let _ = h.record(sent.elapsed().as_nanos() as u64);
                            }
                        }
                    }));
                }
            }
            Mode::Session | Mode::SessionBatch => {
                let mut gate = GateServiceClient::new(channel.clone());
                let window = load.in_flight;
                let accounts = load.accounts;
                let batch = if mode == Mode::SessionBatch {
                    load.batch.max(1)
                } else {
                    1
                };
                tasks.push(tokio::spawn(async move {
                    let (send, receive) = mpsc::channel::<TradeSessionRequest>(window);
                    let mut answers = gate
                        .trade_session(ReceiverStream::new(receive))
                        .await
                        .expect("TradeSession")
                        .into_inner();
                    // Sent times by correlation id, in a ring as large as the window.
                    let sent_at: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
                        Arc::new(std::sync::Mutex::new(vec![None; window]));
                    let credits = Arc::new(tokio::sync::Semaphore::new(window));
                    let sender = {
                        let sent_at = sent_at.clone();
                        let credits = credits.clone();
                        tokio::spawn(async move {
                            let mut id = 0u64;
                            loop {
                                let Ok(permit) = credits.acquire().await else {
                                    return;
                                };
                                permit.forget();
                                let now = Instant::now();
                                if now >= end {
                                    return;
                                }
                                sent_at.lock().expect("lock")[(id % window as u64) as usize] =
                                    Some(now);
                                let check = |n: u64| TradeSessionRequest {
                                    correlation_id: n,
                                    kind: Some(In::Check(CheckTradeRequest {
                                        account_id: format!("acct-{}", (n as usize) % accounts),
                                        ..Default::default()
                                    })),
                                };
                                let message = if batch == 1 {
                                    check(id)
                                } else {
                                    TradeSessionRequest {
                                        correlation_id: id,
                                        kind: Some(In::Batch(TradeSessionBatch {
                                            messages: (0..batch as u64)
                                                .map(|n| check(id * batch as u64 + n))
                                                .collect(),
                                        })),
                                    }
                                };
                                id += 1;
                                if send.send(message).await.is_err() {
                                    return;
                                }
                            }
                        })
                    };
                    let mut h = Histogram::<u64>::new(3).expect("histogram");
                    let mut calls = 0u64;
                    while let Ok(Some(answer)) = answers.message().await {
                        let sent = sent_at.lock().expect("lock")
                            [(answer.correlation_id % window as u64) as usize];
                        credits.add_permits(1);
                        let checks = match &answer.kind {
                            Some(Out::Check(_)) => 1,
                            Some(Out::Batch(b)) => b
                                .messages
                                .iter()
                                .filter(|m| matches!(m.kind, Some(Out::Check(_))))
                                .count() as u64,
                            _ => 0,
                        };
                        if let Some(sent) = sent {
                            if checks > 0 && sent >= measure_from && sent < end {
                                calls += checks;
                                // Each check of a batch waited as long as the batch.
                                let _ = h.record_n(sent.elapsed().as_nanos() as u64, checks);
                            }
                        }
                        if Instant::now() >= end + Duration::from_millis(200) {
                            break;
                        }
                    }
                    sender.abort();
                    (calls, h)
                }));
            }
        }
    }
    let mut histogram = Histogram::<u64>::new(3).expect("histogram");
    let mut calls = 0;
    for task in tasks {
        let (n, h) = task.await.expect("load task");
        calls += n;
        histogram.add(h).expect("merge");
    }
    Result_ {
        calls,
        elapsed: load.measure,
        histogram,
    }
}

type RawSend = h2::client::SendRequest<bytes::Bytes>;

async fn raw_connection(
    addr: &str,
) -> (
    RawSend,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let stream = tokio::net::TcpStream::connect(addr.trim_start_matches("http://"))
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 24)
        .handshake(stream)
        .await
        .expect("HTTP/2 handshake");
    (send, async move {
        let _ = connection.await;
    })
}

/// A gRPC message frame: no compression, the length, the message.
fn grpc_frame(message: &impl prost::Message) -> bytes::Bytes {
    let body = message.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(0);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame.into()
}

/// One unary call over raw HTTP/2; returns the response's gRPC frame. Panics on any status but
/// OK: a benchmark that silently counts errors would measure nothing.
async fn raw_call(
    send: &RawSend,
    authority: &str,
    path: &str,
    frame: bytes::Bytes,
) -> bytes::Bytes {
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let mut send = send.clone().ready().await.expect("connection ready");
    let (response, mut stream) = send.send_request(request, false).expect("send");
    stream.send_data(frame, true).expect("send data");
    let response = response.await.expect("response");
    let mut body = response.into_body();
    let mut answer = bytes::BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
        answer.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.expect("trailers").unwrap_or_default();
    let status = trailers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    assert_eq!(
        status, "0",
        "{path} answered grpc-status {status}: {trailers:?}"
    );
    answer.freeze()
}

/// The trivial server: `CheckTrade` is one lookup in a map of accounts; nothing else.
struct Trivial {
    accounts: HashMap<String, u64>,
}

#[tonic::async_trait]
impl GateService for Trivial {
    async fn check_trade(
        &self,
        request: Request<CheckTradeRequest>,
    ) -> Result<Response<CheckTradeResponse>, Status> {
        let generation = self
            .accounts
            .get(&request.get_ref().account_id)
            .copied()
            .unwrap_or(0);
        Ok(Response::new(CheckTradeResponse {
            allowed: true,
            generation,
            ..Default::default()
        }))
    }

    async fn report_outcome(
        &self,
        _request: Request<ReportOutcomeRequest>,
    ) -> Result<Response<ReportOutcomeResponse>, Status> {
        Ok(Response::new(ReportOutcomeResponse::default()))
    }

    type TradeSessionStream = ReceiverStream<Result<TradeSessionResponse, Status>>;

    async fn trade_session(
        &self,
        request: Request<Streaming<TradeSessionRequest>>,
    ) -> Result<Response<Self::TradeSessionStream>, Status> {
        let mut inbound = request.into_inner();
        let (send, receive) = mpsc::channel(1024);
        let accounts = self.accounts.clone();
        tokio::spawn(async move {
            let answer = |message: &TradeSessionRequest| {
                let generation = match &message.kind {
                    Some(In::Check(c)) => accounts.get(&c.account_id).copied().unwrap_or(0),
                    _ => 0,
                };
                TradeSessionResponse {
                    correlation_id: message.correlation_id,
                    kind: Some(Out::Check(CheckTradeResponse {
                        allowed: true,
                        generation,
                        ..Default::default()
                    })),
                }
            };
            while let Ok(Some(message)) = inbound.message().await {
                let answer = match &message.kind {
                    Some(In::Batch(batch)) => TradeSessionResponse {
                        correlation_id: message.correlation_id,
                        kind: Some(Out::Batch(TradeSessionBatchResponse {
                            messages: batch.messages.iter().map(answer).collect(),
                        })),
                    },
                    _ => answer(&message),
                };
                if send.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receive)))
    }
}

fn serve_trivial(listen: SocketAddr, accounts: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let accounts = (0..accounts)
            .map(|i| (format!("acct-{i}"), i as u64))
            .collect();
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        tonic::transport::Server::builder()
            .add_service(GateServiceServer::new(Trivial { accounts }))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await
            .expect("trivial server");
    });
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

/// The last core, as counted before this process pinned itself to the first.
static LAST_CORE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn last_core() -> String {
    LAST_CORE
        .get_or_init(|| {
            (std::thread::available_parallelism().map_or(1, |n| n.get()) - 1).to_string()
        })
        .clone()
}

/// Starts a server process pinned to the last core.
fn spawn_pinned(program: &str, args: &[&str], env: &[(&str, String)]) -> std::process::Child {
    let mut command = std::process::Command::new("taskset");
    command.args(["-c", &last_core(), program]).args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start server")
}

fn main() {
    if let Some(listen) = arg("--serve-trivial") {
        serve_trivial(listen.parse().expect("address"), num("--accounts", 1000));
        return;
    }
    let load = Load {
        connections: num("--connections", 1),
        in_flight: num("--in-flight", 64),
        warmup: Duration::from_secs_f64(num("--warmup", 0.5)),
        measure: Duration::from_secs_f64(num("--seconds", 1.0)),
        accounts: num("--accounts", 1000),
        batch: num("--batch", 32),
    };
    let modes: Vec<Mode> = match arg("--mode").as_deref() {
        Some("unary") => vec![Mode::Unary],
        Some("unary-report") => vec![Mode::UnaryReport],
        Some("session") => vec![Mode::Session],
        Some("batch") => vec![Mode::SessionBatch],
        _ => vec![
            Mode::Unary,
            Mode::UnaryReport,
            Mode::Session,
            Mode::SessionBatch,
        ],
    };
    // The load on the first core; servers on the last (counted before pinning).
    let _ = last_core();
    let _ = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status();
    // One thread: the load has one core, and threads sharing it would only contend.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "load: {} connection(s) x {} in flight, {:?} warm-up, {:?} measured, {} accounts, batches of {} checks",
        load.connections, load.in_flight, load.warmup, load.measure, load.accounts, load.batch
    );
    println!(
        "{:<22} {:<9} {:>12} {:>10} {:>10} {:>10}",
        "mode", "server", "calls/s", "p50 µs", "p99 µs", "p99.9 µs"
    );
    let print = |mode: Mode, server: &str, r: &Result_| {
        println!(
            "{:<22} {:<9} {:>12.0} {:>10.1} {:>10.1} {:>10.1}",
            mode.name(),
            server,
            r.rate(),
            r.micros(0.5),
            r.micros(0.99),
            r.micros(0.999)
        );
    };
    if let Some(addr) = arg("--addr") {
        for mode in modes {
            let r = runtime.block_on(run(&addr, mode, &load));
            print(mode, "given", &r);
        }
        return;
    }
    // Rounds in the order trivial, riskgate, riskgate, trivial, ...: drift of the machine
    // during the run weighs on both alike.
    let rounds: usize = num("--rounds", 20);
    for mode in modes {
        let mut trivial = Vec::new();
        let mut riskgate = Vec::new();
        for round in 0..rounds {
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for is_trivial in order {
                let result = if is_trivial {
                    measure_trivial(&runtime, mode, &load)
                } else {
                    measure_riskgate(&runtime, mode, &load)
                };
                let server = if is_trivial { "trivial" } else { "riskgate" };
                print(mode, server, &result);
                if is_trivial {
                    trivial.push(result);
                } else {
                    riskgate.push(result);
                }
            }
        }
        let mean = |rs: &[Result_], f: &dyn Fn(&Result_) -> f64| {
            rs.iter().map(f).sum::<f64>() / rs.len() as f64
        };
        let ratio = |f: &dyn Fn(&Result_) -> f64| mean(&riskgate, f) / mean(&trivial, f);
        println!(
            "{:<22} {:<9} {:>12.2} {:>10.2} {:>10.2} {:>10.2}",
            mode.name(),
            "ratio",
            ratio(&|r| r.rate()),
            ratio(&|r| r.micros(0.5)),
            ratio(&|r| r.micros(0.99)),
            ratio(&|r| r.micros(0.999))
        );
    }
}

fn measure_trivial(runtime: &tokio::runtime::Runtime, mode: Mode, load: &Load) -> Result_ {
    let addr = free_addr();
    let exe = std::env::current_exe().expect("own path");
    let mut server = spawn_pinned(
        exe.to_str().expect("path"),
        &[
            "--serve-trivial",
            &addr.to_string(),
            "--accounts",
            &load.accounts.to_string(),
        ],
        &[],
    );
    let result = runtime.block_on(run(&format!("http://{addr}"), mode, load));
    let _ = server.kill();
    let _ = server.wait();
    result
}

fn measure_riskgate(runtime: &tokio::runtime::Runtime, mode: Mode, load: &Load) -> Result_ {
    let addr = free_addr();
    let bin = arg("--riskgate").unwrap_or_else(|| env!("CARGO_BIN_EXE_riskgate").to_owned());
    let mut server = spawn_pinned(
        &bin,
        &["serve"],
        &[
            ("RISKGATE__SERVER__LISTEN", addr.to_string()),
            ("RISKGATE__STORE__KIND", "memory".to_owned()),
            ("RISKGATE__LOG__LEVEL", "warn".to_owned()),
            ("RISKGATE__CONSOLE__LISTEN", String::new()),
        ],
    );
    let result = runtime.block_on(run(&format!("http://{addr}"), mode, load));
    let _ = server.kill();
    let _ = server.wait();
    result
}
