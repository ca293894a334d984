//! The cluster, measured on this machine against the single node and against etcd itself, in
//! one run: a private three-member etcd on loopback, a single riskgate node (SQLite, the
//! default) and a riskgate cluster of three nodes, all release builds, as processes.
//!
//!   cargo bench --features cluster --bench cluster
//!   cargo bench --features cluster --bench cluster -- --rounds 10 --seconds 1
//!
//! Reports, each as throughput and latency percentiles:
//! - CheckTrade (CLOSED) on the single node and on the cluster's leader, alternating short
//!   rounds, with this bench's load generator and with h2load (nghttp2's, when installed);
//! - durable ReportOutcome at 64 callers on the leader, on the single node (SQLite), and etcd's
//!   own single-key put at 64 callers (the same etcd, from this process);
//! - halt propagation: an acknowledged HaltAll until every standby holds it;
//! - standby mirror lag under the durable load: from a trip acknowledged by the leader to its
//!   event on a standby's watch stream.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use riskgate::proto::admin_service_client::AdminServiceClient;
use riskgate::proto::gate_service_client::GateServiceClient;
use riskgate::proto::monitor_service_client::MonitorServiceClient;
use riskgate::proto::watch_events_response::Kind;
use riskgate::proto::*;
use tonic::transport::{Channel, Endpoint};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn num<T: std::str::FromStr>(name: &str, default: T) -> T {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_etcd(dir: &Path) -> (Vec<String>, Vec<Killed>) {
    let etcd = which("etcd").expect("etcd is installed");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut members = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let child = Command::new(&etcd)
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(dir.join(format!("m{i}")))
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        members.push(Killed(child));
    }
    let endpoints = ports
        .iter()
        .map(|(client, _)| format!("http://127.0.0.1:{client}"))
        .collect();
    (endpoints, members)
}

/// Starts riskgate with the configuration `toml` makes for its address.
fn start_riskgate(dir: &Path, name: &str, toml: impl Fn(&str) -> String) -> (String, Killed) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join(format!("{name}.toml"));
    let mut file = std::fs::File::create(&config).expect("config");
    // Failures never open a breaker and leave the window at once: every failure reported is a
    // durable write of the same small record (as in the outcome_durability bench).
    write!(
        file,
        "[server]\nlisten = \"{addr}\"\n[breaker]\nfailure_threshold = 1000000\nfailure_window_secs = 0.001\n{}",
        toml(&addr)
    )
    .expect("write config");
    let child = Command::new(env!("CARGO_BIN_EXE_riskgate"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start riskgate");
    (addr, Killed(child))
}

fn channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_lazy()
}

async fn wait_serving(addr: &str, service: &str) {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = HealthClient::new(channel(addr))
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await;
        if matches!(answer, Ok(r) if r.get_ref().status == 1) {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} never served {service:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One round of `callers` concurrent loops of `call` for `seconds`: calls/s and a histogram of
/// latencies in microseconds.
async fn round<F, Fut>(callers: usize, seconds: f64, call: F) -> (f64, Histogram<u64>)
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let call = call.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3).expect("histogram");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                if call(caller, n).await {
                    let _ = histogram.record(at.elapsed().as_micros() as u64);
                }
                n += 1;
            }
            histogram
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new(3).expect("histogram");
    for task in tasks {
        let _ = all.add(task.await.expect("caller"));
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    (rate, all)
}

fn summary(rate: f64, h: &Histogram<u64>) -> String {
    format!(
        "{:>9.0}/s  p50 {:>6} us  p99 {:>6} us  p99.9 {:>6} us",
        rate,
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999)
    )
}

/// CheckTrade load: `callers` callers over one connection each of a few.
async fn checks(addr: &str, callers: usize, seconds: f64) -> (f64, Histogram<u64>) {
    let clients: Vec<GateServiceClient<Channel>> = (0..4)
        .map(|_| GateServiceClient::new(channel(addr)))
        .collect();
    round(callers, seconds, move |caller, n| {
        let mut client = clients[caller % clients.len()].clone();
        async move {
            client
                .check_trade(CheckTradeRequest {
                    account_id: format!("B-{}", (caller as u64 * 7919 + n) % 1000),
                    intent: 0,
                })
                .await
                .is_ok_and(|r| r.get_ref().allowed)
        }
    })
    .await
}

/// Durable ReportOutcome (a failure: each one a durable change) at `callers`, each on its own
/// account.
async fn reports(addr: &str, callers: usize, seconds: f64) -> (f64, Histogram<u64>) {
    let clients: Vec<GateServiceClient<Channel>> = (0..4)
        .map(|_| GateServiceClient::new(channel(addr)))
        .collect();
    round(callers, seconds, move |caller, _| {
        let mut client = clients[caller % clients.len()].clone();
        async move {
            client
                .report_outcome(ReportOutcomeRequest {
                    account_id: format!("R-{caller}"),
                    outcome: Outcome::Failure.into(),
                    ..Default::default()
                })
                .await
                .is_ok()
        }
    })
    .await
}

/// h2load's figures for CheckTrade against `addr`, or `None` without h2load.
fn h2load(addr: &str, dir: &Path, seconds: u64) -> Option<String> {
    let h2load = which("h2load")?;
    // A gRPC message: uncompressed, length, then CheckTradeRequest{account_id: "H-1"}.
    let message = [0x0a, 0x03, b'H', b'-', b'1'];
    let mut body = vec![0u8];
    body.extend((message.len() as u32).to_be_bytes());
    body.extend(message);
    let path = dir.join("check.bin");
    std::fs::write(&path, body).ok()?;
    let output = Command::new(h2load)
        .args(["-c", "4", "-m", "16", "-D", &seconds.to_string()])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("-d")
        .arg(&path)
        .arg(format!("http://{addr}/riskgate.v1.GateService/CheckTrade"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let rate = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .unwrap_or("?")
        .to_owned();
    let latency = text
        .lines()
        .find(|l| l.starts_with("time for request:"))
        .map(|l| {
            l.split_whitespace()
                .skip(3)
                .take(4)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    Some(format!(
        "{rate}; time for request (min max mean sd): {latency}"
    ))
}

#[tokio::main]
async fn main() {
    if which("etcd").is_none() {
        eprintln!("SKIPPED: the cluster bench needs etcd (Debian: apt-get install etcd-server)");
        return;
    }
    let rounds: usize = num("--rounds", 6);
    let seconds: f64 = num("--seconds", 1.0);
    let callers: usize = num("--callers", 64);
    let dir = tempfile::tempdir().expect("dir");
    let (endpoints, _etcd) = start_etcd(dir.path());
    let endpoint_list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let single_data = dir.path().join("single-data");
    let (single, _single) = start_riskgate(dir.path(), "single", |_| {
        format!("[store]\npath = \"{}\"\n", single_data.display())
    });
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..3 {
        let node_id = format!("node-{i}");
        let (addr, child) = start_riskgate(dir.path(), &node_id, |addr| {
            format!(
                "[cluster]\netcd_endpoints = [{}]\nnode_id = \"{node_id}\"\nadvertise = \"{addr}\"\nlease_secs = 3\n",
                endpoint_list.join(", ")
            )
        });
        nodes.push(child);
        if i == 0 {
            // The first node leads.
            wait_serving(&addr, "riskgate.v1.GateService").await;
        }
        addrs.push(addr);
    }
    wait_serving(&single, "").await;
    for addr in &addrs {
        wait_serving(addr, "riskgate.v1.MonitorService").await;
    }
    let leader = addrs[0].clone();
    println!("riskgate cluster bench: 3 etcd members and 3 riskgate nodes (lease 3 s) on loopback, one single node on SQLite; {rounds} alternating rounds of {seconds} s");

    // CheckTrade, alternating.
    for (name, callers) in [("1 caller", 1usize), ("64 callers", 64)] {
        let (mut single_rates, mut leader_rates) = (Vec::new(), Vec::new());
        let mut single_h = Histogram::<u64>::new(3).expect("h");
        let mut leader_h = Histogram::<u64>::new(3).expect("h");
        let _ = checks(&single, callers, 0.3).await;
        let _ = checks(&leader, callers, 0.3).await;
        for _ in 0..rounds {
            let (rate, h) = checks(&single, callers, seconds).await;
            single_rates.push(rate);
            let _ = single_h.add(h);
            let (rate, h) = checks(&leader, callers, seconds).await;
            leader_rates.push(rate);
            let _ = leader_h.add(h);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (s, l) = (mean(&single_rates), mean(&leader_rates));
        println!("CheckTrade, {name}:");
        println!("  single node    {}", summary(s, &single_h));
        println!("  cluster leader {}", summary(l, &leader_h));
        println!("  leader / single: {:.2}x throughput", l / s);
    }
    for (name, addr) in [("single node", &single), ("cluster leader", &leader)] {
        if let Some(figures) = h2load(addr, dir.path(), seconds.ceil() as u64 * 3) {
            println!("h2load CheckTrade, 4 connections x 16 streams, {name}: {figures}");
        } else {
            println!("h2load not installed: skipped (Debian: nghttp2-client)");
            break;
        }
    }

    // Durable ReportOutcome at 64 callers, and etcd's own put at 64.
    let (mut single_rates, mut leader_rates, mut put_rates) = (Vec::new(), Vec::new(), Vec::new());
    let mut single_h = Histogram::<u64>::new(3).expect("h");
    let mut leader_h = Histogram::<u64>::new(3).expect("h");
    let mut put_h = Histogram::<u64>::new(3).expect("h");
    let etcd = etcd_client::Client::connect(&endpoints, None)
        .await
        .expect("etcd client");
    for _ in 0..rounds {
        let (rate, h) = reports(&single, callers, seconds).await;
        single_rates.push(rate);
        let _ = single_h.add(h);
        let (rate, h) = reports(&leader, callers, seconds).await;
        leader_rates.push(rate);
        let _ = leader_h.add(h);
        let client = etcd.clone();
        let (rate, h) = round(callers, seconds, move |caller, n| {
            let mut client = client.clone();
            async move {
                client
                    .put(
                        format!("/bench/put/{caller}"),
                        n.to_le_bytes().to_vec(),
                        None,
                    )
                    .await
                    .is_ok()
            }
        })
        .await;
        put_rates.push(rate);
        let _ = put_h.add(h);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (s, l, p) = (mean(&single_rates), mean(&leader_rates), mean(&put_rates));
    println!("Durable ReportOutcome, {callers} callers:");
    println!("  single node (SQLite) {}", summary(s, &single_h));
    println!("  cluster leader       {}", summary(l, &leader_h));
    println!("  etcd put (one key per caller) {}", summary(p, &put_h));
    println!(
        "  leader / etcd put: {:.2}x; leader / single node: {:.2}x",
        l / p,
        l / s
    );

    // Halt propagation: acknowledged HaltAll until both standbys hold it.
    let mut admin = AdminServiceClient::new(channel(&leader));
    let standbys: Vec<AdminServiceClient<Channel>> = addrs[1..]
        .iter()
        .map(|a| AdminServiceClient::new(channel(a)))
        .collect();
    let mut propagation = Histogram::<u64>::new(3).expect("h");
    let mut acknowledged = Histogram::<u64>::new(3).expect("h");
    for i in 0..50 {
        let asked = Instant::now();
        admin
            .halt_all(HaltAllRequest {
                reason: format!("bench {i}"),
                operator: "bench".into(),
            })
            .await
            .expect("halt");
        let acked = Instant::now();
        let _ = acknowledged.record(acked.duration_since(asked).as_micros() as u64);
        for standby in &standbys {
            let mut standby = standby.clone();
            loop {
                let halts = standby
                    .list_halts(ListHaltsRequest {})
                    .await
                    .expect("halts")
                    .into_inner()
                    .halts;
                if !halts.is_empty() {
                    break;
                }
            }
        }
        let _ = propagation.record(acked.elapsed().as_micros() as u64);
        admin
            .resume_all(ResumeAllRequest {
                reason: format!("bench {i}"),
                operator: "bench".into(),
            })
            .await
            .expect("resume");
        for standby in &standbys {
            let mut standby = standby.clone();
            while !standby
                .list_halts(ListHaltsRequest {})
                .await
                .expect("halts")
                .into_inner()
                .halts
                .is_empty()
            {}
        }
    }
    println!(
        "HaltAll: acknowledged in p50 {} us, p99 {} us; from acknowledgement to both standbys holding it: p50 {} us, p99 {} us, max {} us (50 halts)",
        acknowledged.value_at_quantile(0.5),
        acknowledged.value_at_quantile(0.99),
        propagation.value_at_quantile(0.5),
        propagation.value_at_quantile(0.99),
        propagation.max()
    );

    // Mirror lag under the durable load: trips on the leader, their events on a standby.
    let acked_at: Arc<std::sync::Mutex<std::collections::HashMap<String, (Instant, Instant)>>> =
        Arc::default();
    let lag = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3).expect("h")));
    let from_ask = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3).expect("h")));
    let seen = Arc::new(AtomicU64::new(0));
    let watcher = {
        let acked_at = acked_at.clone();
        let lag = lag.clone();
        let from_ask = from_ask.clone();
        let seen = seen.clone();
        let mut monitor = MonitorServiceClient::new(channel(&addrs[1]));
        tokio::spawn(async move {
            let mut stream = monitor
                .watch_events(WatchEventsRequest {
                    account_ids: Vec::new(),
                    after_sequence: None,
                })
                .await
                .expect("watch")
                .into_inner();
            while let Ok(Some(message)) = stream.message().await {
                if let Some(Kind::Event(event)) = message.kind {
                    if event.to_state == BreakerState::Open as i32 {
                        let at = Instant::now();
                        // The trip's call is recorded when it returns; the event may come first.
                        let deadline = Instant::now() + Duration::from_secs(5);
                        let times = loop {
                            let times = acked_at
                                .lock()
                                .expect("acked")
                                .get(&event.account_id)
                                .copied();
                            if times.is_some() || Instant::now() > deadline {
                                break times;
                            }
                            tokio::time::sleep(Duration::from_micros(200)).await;
                        };
                        if let Some((asked, acked)) = times {
                            // Seen before the leader's answer reached this process: no lag.
                            let _ = lag
                                .lock()
                                .expect("lag")
                                .record(at.saturating_duration_since(acked).as_micros() as u64);
                            let _ = from_ask
                                .lock()
                                .expect("lag")
                                .record(at.saturating_duration_since(asked).as_micros() as u64);
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        })
    };
    let load = {
        let leader = leader.clone();
        tokio::spawn(async move { reports(&leader, callers, 4.0).await })
    };
    for i in 0..100 {
        let account = format!("LAG-{i}");
        let asked = Instant::now();
        admin
            .trip_breaker(TripBreakerRequest {
                account_id: account.clone(),
                reason: "lag".into(),
                operator: "bench".into(),
                until: None,
            })
            .await
            .expect("trip");
        acked_at
            .lock()
            .expect("acked")
            .insert(account, (asked, Instant::now()));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let (rate, _) = load.await.expect("load");
    tokio::time::sleep(Duration::from_millis(500)).await;
    watcher.abort();
    let lag = lag.lock().expect("lag");
    let from_ask = from_ask.lock().expect("lag");
    println!(
        "Standby mirror lag under {rate:.0} durable reports/s on the leader, over {} trips: from the trip acknowledged by the leader to its event on a standby's watch (0 when the standby shows it before the answer arrives): p50 {} us, p99 {} us, max {} us; from the trip asked to the event on the standby: p50 {} us, p99 {} us",
        seen.load(Ordering::Relaxed),
        lag.value_at_quantile(0.5),
        lag.value_at_quantile(0.99),
        lag.max(),
        from_ask.value_at_quantile(0.5),
        from_ask.value_at_quantile(0.99),
    );
}
