//! ReportOutcome throughput and latency with the durable store against the in-memory one, at 1
//! and 64 concurrent callers, over real gRPC on loopback (server and callers in this process).
//!
//! Every call reports a failure, so every call changes durable state and waits for its write.
//! Run: `cargo bench --bench outcome_durability` (optionally `-- --seconds 2 --rounds 6`); the
//! stores are measured in alternating rounds and compared by their means.
//!
//! `-- --split` runs the server as a separate `riskgate serve` process pinned to the last core
//! and the callers pinned to the first, so the two do not compete for CPU; without it, server
//! and callers share one runtime in this process.
//!
//! `-- --permits` makes each caller take a permit with `CheckTrade` (CLOSED: nothing to wait
//! for) before each report, and report with it, as a bot does; a failing account then remembers
//! its last 32 failures beyond the window (to recognise a permit reported twice), so each
//! durable write carries them. Calls/s then counts reports.
//!
//! `-- --checks N` adds N callers of `CheckTrade` on accounts of their own (CLOSED, so no check
//! waits on the store) beside the reporting ones, each at one call in flight on a connection,
//! thread and runtime of its own at real-time priority (when allowed), and prints their latency
//! under that load; `--callers 0 --checks 1` gives the idle figure.
//!
//! `-- --split --riskgate PATH` serves with another build of `riskgate` (an A/B of two builds).

use std::sync::Arc;
use std::time::{Duration, Instant};

use riskgate::clock::SystemClock;
use riskgate::config::Config;
use riskgate::proto::gate_service_client::GateServiceClient;
use riskgate::proto::{CheckTradeRequest, Outcome, ReportOutcomeRequest};
use riskgate::server;
use riskgate::store::{MemoryStore, SqliteOptions, SqliteStore, Store};
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// The allocator the `riskgate` binary ships with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Connections the callers share (HTTP/2 multiplexes the rest).
const CONNECTIONS: usize = 4;

struct Run {
    store: &'static str,
    callers: usize,
    calls: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// Latencies of the `--checks` callers' `CheckTrade`s, sorted.
    checks: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

fn config() -> Config {
    let mut env = std::collections::HashMap::new();
    env.insert(
        "RISKGATE__SERVER__LISTEN".to_string(),
        "127.0.0.1:0".to_string(),
    );
    // Failures never open a breaker and leave the window at once: every call is a durable
    // write of the same small record.
    env.insert(
        "RISKGATE__BREAKER__FAILURE_THRESHOLD".to_string(),
        "1000000".to_string(),
    );
    env.insert(
        "RISKGATE__BREAKER__FAILURE_WINDOW_SECS".to_string(),
        "0.001".to_string(),
    );
    env.insert("RISKGATE__LOG__LEVEL".to_string(), "warn".to_string());
    Config::load_with_env(None, Some(env)).expect("bench config")
}

/// The server under test.
enum Server {
    InProcess {
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Result<(), server::ServeError>>,
    },
    Process(std::process::Child),
}

impl Server {
    /// Starts a server on `store` ("memory" or "sqlite"), in this process or pinned to the last
    /// core in a process of its own.
    async fn start(
        store: &str,
        data: &std::path::Path,
        split: bool,
    ) -> (Server, std::net::SocketAddr) {
        if split {
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .expect("bind")
                .local_addr()
                .expect("addr");
            let last_core = last_core();
            let child = std::process::Command::new("taskset")
                .args([
                    "-c",
                    &last_core.to_string(),
                    &arg("--riskgate").unwrap_or_else(|| env!("CARGO_BIN_EXE_riskgate").into()),
                    "serve",
                ])
                .env("RISKGATE__SERVER__LISTEN", addr.to_string())
                .env("RISKGATE__STORE__KIND", store)
                .env("RISKGATE__STORE__PATH", data)
                .env("RISKGATE__BREAKER__FAILURE_THRESHOLD", "1000000")
                .env("RISKGATE__BREAKER__FAILURE_WINDOW_SECS", "0.001")
                .env("RISKGATE__LOG__LEVEL", "warn")
                .env("RISKGATE__CONSOLE__LISTEN", "")
                .spawn()
                .expect("start riskgate serve");
            return (Server::Process(child), addr);
        }
        let store: Arc<dyn Store> = match store {
            "memory" => Arc::new(MemoryStore::new(10_000)),
            _ => Arc::new(
                SqliteStore::open(SqliteOptions {
                    path: data.to_path_buf(),
                    retained_events: 10_000,
                    retained_age: Duration::from_secs(3600),
                    audit: riskgate::store::AuditRetention::default(),
                })
                .expect("sqlite store"),
            ),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = config();
        let task = tokio::spawn(async move {
            server::serve(
                listener,
                &config,
                store,
                Arc::new(SystemClock::new()),
                async {
                    let _ = stopped.await;
                },
            )
            .await
        });
        (Server::InProcess { stop, task }, addr)
    }

    async fn stop(self) {
        match self {
            Server::InProcess { stop, task } => {
                let _ = stop.send(());
                let _ = task.await;
            }
            Server::Process(mut child) => {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let _ = child.wait();
            }
        }
    }
}

/// Puts the calling thread at real-time priority (SCHED_FIFO 10), if this process may.
fn realtime_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 10 };
        // SAFETY: sets the calling thread's policy with a valid parameter; no memory is shared.
        let set = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        if set != 0 {
            eprintln!("note: the checker runs at normal priority (SCHED_FIFO needs CAP_SYS_NICE)");
        }
    }
}

async fn connect(addr: std::net::SocketAddr) -> Channel {
    loop {
        match Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
        {
            Ok(channel) => return channel,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn run(
    store_name: &'static str,
    split: bool,
    callers: usize,
    permits: bool,
    checks: usize,
    warmup: Duration,
    measure: Duration,
) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, addr) = Server::start(store_name, &dir.path().join("data"), split).await;
    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(connect(addr).await);
    }
    // Wait for the store to be loaded.
    loop {
        let mut gate = GateServiceClient::new(channels[0].clone());
        let probe = ReportOutcomeRequest {
            account_id: "warmup".into(),
            permit_id: String::new(),
            outcome: Outcome::Failure as i32,
            ..Default::default()
        };
        if gate.report_outcome(probe).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let mut gate = GateServiceClient::new(channels[caller % CONNECTIONS].clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = 0usize;
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        return latencies;
                    }
                    let account_id = format!("acct-{caller}-{}", i % 16);
                    let permit_id = if permits {
                        let check = CheckTradeRequest {
                            account_id: account_id.clone(),
                            ..Default::default()
                        };
                        let answer = gate.check_trade(check).await.expect("CheckTrade");
                        let answer = answer.into_inner();
                        assert!(answer.allowed, "a CLOSED check is allowed");
                        answer.permit_id
                    } else {
                        String::new()
                    };
                    let request = ReportOutcomeRequest {
                        account_id,
                        permit_id,
                        outcome: Outcome::Failure as i32,
                        ..Default::default()
                    };
                    gate.report_outcome(request).await.expect("ReportOutcome");
                    if sent >= measure_from {
                        latencies.push(sent.elapsed());
                    }
                    i += 1;
                }
            })
        })
        .collect();
    // Each checker on a connection of its own, on a thread and runtime of its own at real-time
    // priority when allowed, so that neither the reporting callers' connections nor this
    // process's scheduling of them delays its calls: what it measures is the server.
    let checkers: Vec<_> = (0..checks)
        .map(|checker| {
            std::thread::spawn(move || {
                realtime_priority();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("checker runtime");
                runtime.block_on(async move {
                    let mut gate = GateServiceClient::new(connect(addr).await);
                    let mut latencies = Vec::new();
                    loop {
                        let sent = Instant::now();
                        if sent >= end {
                            return latencies;
                        }
                        let request = CheckTradeRequest {
                            account_id: format!("check-{checker}"),
                            ..Default::default()
                        };
                        let answer = gate.check_trade(request).await.expect("CheckTrade");
                        assert!(answer.into_inner().allowed, "a CLOSED check is allowed");
                        if sent >= measure_from {
                            latencies.push(sent.elapsed());
                        }
                    }
                })
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("caller"));
    }
    latencies.sort_unstable();
    let mut check_latencies = Vec::new();
    for thread in checkers {
        let thread = tokio::task::spawn_blocking(move || thread.join().expect("checker"));
        check_latencies.extend(thread.await.expect("checker"));
    }
    check_latencies.sort_unstable();
    server.stop().await;
    Run {
        store: store_name,
        callers,
        calls: latencies.len(),
        elapsed: measure,
        latencies,
        checks: check_latencies,
    }
}

/// The last core, as counted before this process pinned itself to the first.
static LAST_CORE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

fn last_core() -> usize {
    *LAST_CORE.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()) - 1)
}

/// The value after `--name` on the command line.
fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() {
    let seconds: f64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let only_store = arg("--store");
    let caller_counts: Vec<usize> = match arg("--callers").and_then(|s| s.parse().ok()) {
        Some(n) => vec![n],
        None => vec![1, 64],
    };
    let wanted = |store: &str| only_store.as_deref().is_none_or(|s| s == store);
    let checks: usize = arg("--checks").and_then(|s| s.parse().ok()).unwrap_or(0);
    let permits = std::env::args().any(|a| a == "--permits");
    let split = std::env::args().any(|a| a == "--split");
    // Worker threads of the runtime that calls (and, without `--split`, serves): one per core,
    // or one with `--split`, where the callers have one core and a second thread on it would
    // hold its tasks until the scheduler's next tick (p99 4.5 ms against 1.0 ms, measured).
    let workers: usize = arg("--workers")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            if split {
                1
            } else {
                std::thread::available_parallelism().map_or(2, |n| n.get())
            }
        });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    let warmup = Duration::from_secs(1);
    let measure = Duration::from_secs_f64(seconds);
    if split {
        // The callers (this process) on the first core; the server gets the last (counted
        // before pinning, which narrows what this process sees).
        let _ = last_core();
        let _ = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status();
    }
    // Rounds in the order memory, sqlite, sqlite, memory, ...: drift of the machine during the
    // run weighs on both alike. The ratio is of the means over the rounds.
    let rounds: usize = arg("--rounds").and_then(|s| s.parse().ok()).unwrap_or(6);
    println!(
        "{:<8} {:>7} {:>10} {:>12} {:>10} {:>10} {:>10}",
        "store", "callers", "calls", "calls/s", "p50", "p99", "p99.9"
    );
    let print = |r: &Run| {
        println!(
            "{:<8} {:>7} {:>10} {:>12.0} {:>10.3?} {:>10.3?} {:>10.3?}",
            r.store,
            r.callers,
            r.calls,
            r.rate(),
            r.percentile(0.50),
            r.percentile(0.99),
            r.percentile(0.999)
        );
    };
    let mut summary = Vec::new();
    for callers in caller_counts {
        let (mut memory, mut sqlite) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let mut order = ["memory", "sqlite"];
            if round % 2 == 1 {
                order.reverse();
            }
            for store in order.into_iter().filter(|s| wanted(s)) {
                let run =
                    runtime.block_on(run(store, split, callers, permits, checks, warmup, measure));
                print(&run);
                if checks > 0 {
                    println!(
                        "  {checks} checkers beside: {:.0} checks/s, p50 {:.3?}, p99 {:.3?}, \
                         p99.9 {:.3?}, max {:.3?}",
                        run.checks.len() as f64 / run.elapsed.as_secs_f64(),
                        percentile(&run.checks, 0.50),
                        percentile(&run.checks, 0.99),
                        percentile(&run.checks, 0.999),
                        run.checks.last().copied().unwrap_or_default(),
                    );
                }
                match store {
                    "memory" => memory.push(run),
                    _ => sqlite.push(run),
                }
            }
        }
        let mean = |runs: &[Run], f: &dyn Fn(&Run) -> f64| {
            runs.iter().map(f).sum::<f64>() / runs.len().max(1) as f64
        };
        if !memory.is_empty() && !sqlite.is_empty() {
            let p99 = |r: &Run| r.percentile(0.99).as_secs_f64() * 1e3;
            summary.push(format!(
                "{callers} callers: sqlite/memory throughput = {:.2} ({:.0} vs {:.0} calls/s), \
                 p99 {:.2} ms vs {:.2} ms, means of {rounds} rounds",
                mean(&sqlite, &Run::rate) / mean(&memory, &Run::rate),
                mean(&sqlite, &Run::rate),
                mean(&memory, &Run::rate),
                mean(&sqlite, &p99),
                mean(&memory, &p99),
            ));
        }
    }
    for line in summary {
        println!("{line}");
    }
}
