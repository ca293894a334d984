//! Scale: memory per idle account, restart with a million persisted accounts until SERVING,
//! and one state change delivered to 100 watchers.
//!
//!   cargo bench --bench scale                 # all three, 1,000,000 accounts
//!   cargo bench --bench scale -- --accounts 100000
//!   cargo bench --bench scale -- --only restart --restarts 5 --store /tmp/rg-1m
//!
//! `--restarts N` starts the server N times on the same store and reports each start and the
//! median; `--store DIR` writes the store there (or reuses what an earlier run left there) and
//! keeps it, for profiling a start-up, e.g. `riskgate serve` under `perf record`. A reused store
//! needs the `--accounts` it was written with: the server is started with room for twice that.
//! `--riskgate PATH` runs another build of `riskgate` for the restart and the fan-out.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use hdrhistogram::Histogram;
use riskgate::core::{Breaker, Intent, Outcome, Settings, Timestamp};
use riskgate::proto::admin_service_client::AdminServiceClient;
use riskgate::proto::monitor_service_client::MonitorServiceClient;
use riskgate::proto::watch_events_response::Kind;
use riskgate::proto::*;
use riskgate::store::{Batch, SqliteOptions, SqliteStore, Store, StoredBreaker};

/// The allocator the `riskgate` binary ships with, so that memory is measured as served.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn memory(accounts: usize) {
    let before = rss_bytes();
    let registry = common::in_memory_registry(accounts);
    for i in 0..accounts {
        registry
            .check(&format!("acct-{i:07}"), Intent::New)
            .now_or_never()
            .expect("the store is durable at once")
            .expect("check");
    }
    let at_once = rss_bytes();
    // The allocator returns the memory of the map's outgrown tables to the system a little
    // later, on a later allocation: measure once calls have gone on for a while.
    let settle = Instant::now() + Duration::from_secs(2);
    let mut i = 0;
    while Instant::now() < settle {
        registry
            .check(&format!("acct-{:07}", i % accounts), Intent::New)
            .now_or_never()
            .expect("the store is durable at once")
            .expect("check");
        i += 1;
    }
    let after = rss_bytes();
    println!(
        "memory: right after the last account was added: RSS +{:.1} MiB",
        (at_once - before) as f64 / (1 << 20) as f64
    );
    let per = (after - before) as f64 / accounts as f64;
    println!(
        "memory: {accounts} idle accounts (ids of 12 bytes): RSS +{:.1} MiB, {per:.0} bytes per account (map entry and id included)",
        (after - before) as f64 / (1 << 20) as f64
    );
    drop(registry);
}

fn restart(accounts: usize, restarts: usize, keep: Option<std::path::PathBuf>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = keep.unwrap_or_else(|| dir.path().join("data"));
    if path.join("riskgate.db").exists() {
        println!("restart: using the store in {}", path.display());
    } else {
        let store = SqliteStore::open(SqliteOptions {
            path: path.clone(),
            retained_events: 10_000,
            retained_age: Duration::from_secs(3600),
            audit: riskgate::store::AuditRetention::default(),
        })
        .expect("store");
        store.load().expect("load");
        // Each account with one failure in its window: a typical persisted breaker.
        let settings = Settings::default();
        let now = Timestamp::from_unix_nanos(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("time")
                .as_nanos() as u64,
        );
        let mut breaker = Breaker::new();
        breaker.record(&settings, None, Outcome::Failure, now);
        let record = breaker.to_record();
        let started = Instant::now();
        let mut last = None;
        for i in 0..accounts {
            last = Some(store.submit(Batch {
                breaker: Some(StoredBreaker {
                    account_id: format!("acct-{i:07}"),
                    record: record.clone(),
                    last_sequence: 0,
                    mode: None,
                    settings: None,
                }),
                ..Batch::default()
            }));
        }
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        if let Some(commit) = last {
            runtime.block_on(commit.durable()).expect("written");
        }
        println!(
            "restart: wrote {accounts} breakers in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let mut times: Vec<f64> = (0..restarts.max(1))
        .map(|_| {
            let took = serve_until_serving(&path, accounts).as_secs_f64();
            println!(
                "restart: {accounts} persisted accounts, process start until SERVING: {took:.2} s"
            );
            took
        })
        .collect();
    times.sort_by(f64::total_cmp);
    if times.len() > 1 {
        println!(
            "restart: {} starts, min {:.2} s, median {:.2} s, max {:.2} s",
            times.len(),
            times[0],
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
}

/// Starts `riskgate serve` on the store in `path` and waits until health says SERVING; stops it.
fn serve_until_serving(path: &std::path::Path, accounts: usize) -> Duration {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let started = Instant::now();
    let mut server = std::process::Command::new(riskgate_bin())
        .arg("serve")
        .env("RISKGATE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("RISKGATE__STORE__PATH", path)
        .env("RISKGATE__SERVER__MAX_ACCOUNTS", (accounts * 2).to_string())
        .env("RISKGATE__LOG__LEVEL", "info")
        .env("RISKGATE__CONSOLE__LISTEN", "")
        .env("RISKGATE__LOG__FORMAT", "json")
        .spawn()
        .expect("serve");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let serving = runtime.block_on(async {
        use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
        loop {
            if let Ok(channel) =
                tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
                    .expect("uri")
                    .connect()
                    .await
            {
                let mut health = HealthClient::new(channel);
                loop {
                    match health
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                    {
                        Ok(r) if r.get_ref().status == 1 => return started.elapsed(),
                        _ => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    // SIGTERM, as an operator would stop it, so the next start finds the store as a clean
    // stop leaves it.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    serving
}

fn fan_out(watchers: usize, changes: usize) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut server = std::process::Command::new(riskgate_bin())
        .arg("serve")
        .env("RISKGATE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("RISKGATE__STORE__KIND", "memory")
        .env(
            "RISKGATE__LIMITS__MAX_WATCHERS",
            (watchers + 10).to_string(),
        )
        .env("RISKGATE__LOG__LEVEL", "warn")
        .env("RISKGATE__CONSOLE__LISTEN", "")
        .spawn()
        .expect("serve");
    let addr = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let histogram = runtime.block_on(async move {
        let connect = || async {
            loop {
                if let Ok(c) = tonic::transport::Channel::from_shared(addr.clone())
                    .expect("uri")
                    .connect()
                    .await
                {
                    return c;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let mut admin = AdminServiceClient::new(connect().await);
        // Wait until serving.
        while admin.list_halts(ListHaltsRequest {}).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
        let mut ready = Vec::new();
        for w in 0..watchers {
            // Ten watchers per connection, each read promptly.
            let channel = if w % 10 == 0 {
                Some(connect().await)
            } else {
                None
            };
            ready.push(channel);
        }
        let mut channel = None;
        let mut tasks = Vec::new();
        let (started_tx, mut started_rx) = tokio::sync::mpsc::channel::<()>(watchers);
        for slot in ready {
            if let Some(c) = slot {
                channel = Some(c);
            }
            let mut monitor = MonitorServiceClient::new(channel.clone().expect("channel"));
            let tx = tx.clone();
            let started = started_tx.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = monitor
                    .watch_events(WatchEventsRequest::default())
                    .await
                    .expect("watch")
                    .into_inner();
                while let Ok(Some(message)) = stream.message().await {
                    match message.kind {
                        Some(Kind::SnapshotComplete(_)) => {
                            let _ = started.send(()).await;
                        }
                        Some(Kind::Event(e)) => {
                            let at = e.time.expect("time");
                            let sent =
                                UNIX_EPOCH + Duration::new(at.seconds as u64, at.nanos as u32);
                            let _ =
                                tx.send(SystemTime::now().duration_since(sent).unwrap_or_default());
                        }
                        _ => {}
                    }
                }
            }));
        }
        for _ in 0..watchers {
            started_rx.recv().await.expect("watcher started");
        }
        let mut histogram = Histogram::<u64>::new(3).expect("histogram");
        for i in 0..changes {
            let request_reason = format!("change {i}");
            if i % 2 == 0 {
                admin
                    .trip_breaker(TripBreakerRequest {
                        account_id: "ACC".into(),
                        reason: request_reason,
                        operator: "bench".into(),
                        until: None,
                    })
                    .await
                    .expect("trip");
            } else {
                admin
                    .reset_breaker(ResetBreakerRequest {
                        account_id: "ACC".into(),
                        reason: request_reason,
                        operator: "bench".into(),
                    })
                    .await
                    .expect("reset");
            }
            for _ in 0..watchers {
                let latency = rx.recv().await.expect("delivered");
                let _ = histogram.record(latency.as_micros() as u64);
            }
        }
        for task in tasks {
            task.abort();
        }
        histogram
    });
    println!(
        "fan-out: {changes} changes x {watchers} watchers: delivery p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// The `riskgate` binary to measure: `--riskgate PATH` (another build, for an A/B
/// comparison), or the one built with this bench.
fn riskgate_bin() -> String {
    arg("--riskgate").unwrap_or_else(|| env!("CARGO_BIN_EXE_riskgate").to_owned())
}

fn main() {
    let accounts: usize = arg("--accounts")
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let only = arg("--only");
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if wanted("memory") {
        memory(accounts);
    }
    if wanted("restart") {
        let restarts = arg("--restarts").and_then(|n| n.parse().ok()).unwrap_or(1);
        restart(accounts, restarts, arg("--store").map(Into::into));
    }
    if wanted("fan-out") {
        fan_out(100, 200);
    }
}
