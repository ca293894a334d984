//! A soak: months of an unattended server's churn, accelerated. The real binary on its durable
//! store, with every time-based setting shrunk (a 2 s failure window, a 1 s open timeout,
//! events kept 10 s or 400, audit records 10 s or 100) and `max_accounts` small, is driven by clients that
//! keep bringing new accounts (older ones go idle and are evicted), report successes and
//! failures (breakers open, probe and close again), trip and reset, while watchers come and
//! go and an operator resets the breakers that accounts no longer trading left open. Every second it samples the server's resident memory, open files, store size on disk and
//! the rows of its tables; after a warm-up it asserts they stay flat:
//!
//! - resident memory grows by at most 25% + 16 MiB;
//! - open files by at most 16 (connections and watchers come and go);
//! - the store's bytes on disk by at most 50% + 4 MiB (SQLite reuses freed pages; the WAL is
//!   checkpointed);
//! - breakers stored never exceed `max_accounts`; events and audit records stay within what
//!   their retention keeps plus what arrives between two prunes (every 10 s).
//!
//! `cargo test --test soak` runs 30 s (the warm-up is the first quarter);
//! `RISKGATE_SOAK_SECS=1800 cargo test --release --test soak -- --nocapture` runs a long one and
//! prints every sample. docs/operations.md carries a long run's figures.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{free_port, lines, riskgate, wait_for, Running};
use riskgate::proto::admin_service_client::AdminServiceClient;
use riskgate::proto::gate_service_client::GateServiceClient;
use riskgate::proto::monitor_service_client::MonitorServiceClient;
use riskgate::proto::*;
use tonic::transport::Channel;

const MAX_ACCOUNTS: u64 = 1_000;
const EVENTS_RETAINED: u64 = 400;
const AUDIT_RETAINED: u64 = 100;
const WORKERS: u64 = 6;

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    secs: u64,
    /// Checks answered so far.
    checks: u64,
    rss_kib: u64,
    open_files: u64,
    store_bytes: u64,
    breakers: u64,
    events: u64,
    audit: u64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

fn store_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Rows in a table of the store, read beside the running server (WAL readers do not block it).
fn rows(db: &Path, table: &str) -> u64 {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n as u64)
    .unwrap_or(0)
}

fn sample(pid: u32, data: &Path, secs: u64, checks: u64) -> Sample {
    let db = data.join("riskgate.db");
    Sample {
        secs,
        checks,
        rss_kib: rss_kib(pid),
        open_files: open_files(pid),
        store_bytes: store_bytes(data),
        breakers: rows(&db, "breakers"),
        events: rows(&db, "events"),
        audit: rows(&db, "audit"),
    }
}

/// A counter's value from the server's Prometheus endpoint (0 when absent).
fn metric(addr: &str, name: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return 0.0;
    };
    let _ = write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Counts of what the clients did.
#[derive(Default)]
struct Done {
    checks: AtomicU64,
    reports: AtomicU64,
    operator: AtomicU64,
    watchers: AtomicU64,
    accounts: AtomicU64,
    /// New accounts refused at max_accounts (nothing idle to evict).
    refused: AtomicU64,
}

/// One client: a moving population of accounts (a new generation every 2 s, the old ones
/// left idle), checks and outcomes with a third failing, an operator action now and then.
async fn worker(channel: Channel, id: u64, stop: Arc<AtomicBool>, done: Arc<Done>, start: Instant) {
    let mut gate = GateServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel);
    let mut n: u64 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut last_generation = u64::MAX;
    // The accounts of this generation that have a breaker: counted on their first answer, so
    // that a generation begun just before the end is not counted as brought in untouched.
    let mut answered: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        n ^= n << 13;
        n ^= n >> 7;
        n ^= n << 17;
        let generation = start.elapsed().as_secs();
        if generation / 2 != last_generation {
            last_generation = generation / 2;
            answered = 0;
        }
        // A new generation of accounts every 2 s, 20 per client: a working set (failing, open,
        // backing off) well below max_accounts, which the whole population passes many times.
        let account_id = format!("soak-{}-{id}-{}", generation / 2, n % 20);
        let check = match gate
            .check_trade(CheckTradeRequest {
                account_id: account_id.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(check) => {
                let bit = 1 << (n % 20);
                if answered & bit == 0 {
                    answered |= bit;
                    done.accounts.fetch_add(1, Ordering::Relaxed);
                }
                check
            }
            Err(status) => {
                if status.code() == tonic::Code::ResourceExhausted {
                    done.refused.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
        };
        done.checks.fetch_add(1, Ordering::Relaxed);
        let check = check.into_inner();
        if check.allowed {
            let outcome = if n.is_multiple_of(3) {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            if gate
                .report_outcome(ReportOutcomeRequest {
                    account_id: account_id.clone(),
                    permit_id: check.permit_id,
                    outcome: outcome as i32,
                    ..Default::default()
                })
                .await
                .is_ok()
            {
                done.reports.fetch_add(1, Ordering::Relaxed);
            }
        }
        if n.is_multiple_of(97) {
            let (reason, operator) = ("soak".to_owned(), "soak".to_owned());
            let acted = if n.is_multiple_of(2) {
                admin
                    .trip_breaker(TripBreakerRequest {
                        account_id,
                        reason,
                        operator,
                        until: Some(prost_types::Timestamp::from(
                            std::time::SystemTime::now() + Duration::from_secs(1),
                        )),
                    })
                    .await
                    .is_ok()
            } else {
                admin
                    .reset_breaker(ResetBreakerRequest {
                        account_id,
                        reason,
                        operator,
                    })
                    .await
                    .is_ok()
            };
            if acted {
                done.operator.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The operator on duty: breakers left OPEN or HALF_OPEN by accounts no longer trading (an
/// earlier generation) are reset, as a desk would once it knows why. A breaker that is not
/// CLOSED is never evicted, so without this they would fill `max_accounts` in a long run.
async fn operator(channel: Channel, stop: Arc<AtomicBool>, done: Arc<Done>, start: Instant) {
    let mut monitor = MonitorServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel);
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let current = start.elapsed().as_secs() / 2;
        for state in [BreakerState::Open, BreakerState::HalfOpen] {
            let Ok(list) = monitor
                .list_breakers(ListBreakersRequest {
                    state: state as i32,
                    page_size: 10_000,
                    page_token: String::new(),
                })
                .await
            else {
                continue;
            };
            for breaker in list.into_inner().breakers {
                let generation = breaker
                    .account_id
                    .split('-')
                    .nth(1)
                    .and_then(|g| g.parse::<u64>().ok());
                if generation.is_some_and(|g| g < current) {
                    let reset = admin
                        .reset_breaker(ResetBreakerRequest {
                            account_id: breaker.account_id,
                            reason: "account no longer trading".into(),
                            operator: "soak".into(),
                        })
                        .await;
                    if reset.is_ok() {
                        done.operator.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Watchers come and go: one at a time, each reading for a while on its own connection.
async fn watchers(addr: String, stop: Arc<AtomicBool>, done: Arc<Done>) {
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let Ok(channel) = Channel::from_shared(addr.clone())
            .expect("uri")
            .connect()
            .await
        else {
            continue;
        };
        let mut monitor = MonitorServiceClient::new(channel);
        let request = WatchEventsRequest {
            account_ids: vec![],
            after_sequence: round.is_multiple_of(2).then_some(0),
        };
        if let Ok(stream) = monitor.watch_events(request).await {
            done.watchers.fetch_add(1, Ordering::Relaxed);
            let mut stream = stream.into_inner();
            let until = Instant::now() + Duration::from_millis(200 + (round % 5) * 150);
            while Instant::now() < until {
                match tokio::time::timeout(Duration::from_millis(100), stream.message()).await {
                    Ok(Ok(Some(_))) | Err(_) => {}
                    _ => break,
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_files_and_store_stay_flat_under_months_of_churn() {
    let secs: u64 = std::env::var("RISKGATE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut server = Running(
        riskgate()
            .arg("serve")
            .env("RISKGATE__SERVER__LISTEN", &listen)
            .env("RISKGATE__SERVER__MAX_ACCOUNTS", MAX_ACCOUNTS.to_string())
            .env("RISKGATE__STORE__PATH", &data)
            .env("RISKGATE__BREAKER__FAILURE_THRESHOLD", "3")
            .env("RISKGATE__BREAKER__FAILURE_WINDOW_SECS", "2")
            .env("RISKGATE__BREAKER__OPEN_TIMEOUT_SECS", "1")
            .env("RISKGATE__BREAKER__HALF_OPEN_MAX_TRIES", "1")
            .env("RISKGATE__BREAKER__HALF_OPEN_TIMEOUT_SECS", "1")
            .env("RISKGATE__BREAKER__OPEN_BACKOFF_MULTIPLIER", "2")
            .env("RISKGATE__BREAKER__MAX_OPEN_TIMEOUT_SECS", "4")
            .env("RISKGATE__BREAKER__BACKOFF_RESET_SECS", "5")
            .env("RISKGATE__EVENTS__RETAINED", EVENTS_RETAINED.to_string())
            .env("RISKGATE__EVENTS__RETAINED_SECS", "10")
            .env(
                "RISKGATE__AUDIT__RETAIN_DAYS",
                (10.0 / 86_400.0).to_string(),
            )
            .env("RISKGATE__METRICS__LISTEN", &metrics)
            .env(
                "RISKGATE__AUDIT__RETAIN_RECORDS",
                AUDIT_RETAINED.to_string(),
            )
            .env("RISKGATE__LOG__LEVEL", "warn,riskgate::server=info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start riskgate serve"),
    );
    let logs = lines(server.stderr.take().expect("stderr"));
    wait_for(&logs, "riskgate serving");
    let pid = server.id();
    let addr = format!("http://{listen}");

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Done::default());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..WORKERS {
        let channel = Channel::from_shared(addr.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        tasks.push(tokio::spawn(worker(
            channel,
            id,
            stop.clone(),
            done.clone(),
            start,
        )));
    }
    tasks.push(tokio::spawn(watchers(
        addr.clone(),
        stop.clone(),
        done.clone(),
    )));
    let channel = Channel::from_shared(addr)
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    tasks.push(tokio::spawn(operator(
        channel,
        stop.clone(),
        done.clone(),
        start,
    )));

    let warm_up = (secs / 4).max(5);
    let mut samples = Vec::new();
    println!("secs  checks  rss_kib  open_files  store_bytes  breakers  events  audit");
    for t in 1..=secs {
        tokio::time::sleep_until((start + Duration::from_secs(t)).into()).await;
        let s = sample(pid, &data, t, done.checks.load(Ordering::Relaxed));
        println!(
            "{:>4}  {:>6}  {:>7}  {:>10}  {:>11}  {:>8}  {:>6}  {:>5}",
            s.secs, s.checks, s.rss_kib, s.open_files, s.store_bytes, s.breakers, s.events, s.audit
        );
        samples.push(s);
        assert!(
            matches!(server.try_wait(), Ok(None)),
            "the server stopped during the soak"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    println!(
        "{} checks, {} new accounts refused, {} reports, {} operator actions, {} watchers, {} accounts brought in over {secs} s",
        done.checks.load(Ordering::Relaxed),
        done.refused.load(Ordering::Relaxed),
        done.reports.load(Ordering::Relaxed),
        done.operator.load(Ordering::Relaxed),
        done.watchers.load(Ordering::Relaxed),
        done.accounts.load(Ordering::Relaxed),
    );
    let evicted = metric(&metrics, "riskgate_breakers_evicted_total");
    println!("{evicted} breakers evicted");

    let warm = samples[warm_up as usize - 1];
    let end = samples[samples.len() - 1];
    let peak = |f: fn(&Sample) -> u64| samples[warm_up as usize..].iter().map(f).max().unwrap_or(0);
    println!("after warm-up ({warm_up} s): {warm:?}");
    println!("at the end:            {end:?}");
    // The churn never stalls: checks are answered in every stretch of five seconds.
    for window in samples[warm_up as usize..].windows(5) {
        assert!(
            window[4].checks > window[0].checks,
            "no check answered between {} s and {} s",
            window[0].secs,
            window[4].secs
        );
    }
    // The working set stays below max_accounts: a new account is refused only when two take
    // the room one eviction made at the same moment, not because an idle breaker was kept.
    assert!(
        done.refused.load(Ordering::Relaxed) * 1_000 <= done.checks.load(Ordering::Relaxed),
        "new accounts refused at max_accounts: {} of {} checks",
        done.refused.load(Ordering::Relaxed),
        done.checks.load(Ordering::Relaxed)
    );
    let brought_in = done.accounts.load(Ordering::Relaxed);
    assert!(
        brought_in > MAX_ACCOUNTS && evicted >= (brought_in - MAX_ACCOUNTS) as f64 * 0.9,
        "idle breakers were evicted to make room: {evicted} of {brought_in} accounts"
    );
    assert!(
        peak(|s| s.rss_kib) <= warm.rss_kib + warm.rss_kib / 4 + 16 * 1024,
        "resident memory grew: {} KiB after warm-up, peak {} KiB",
        warm.rss_kib,
        peak(|s| s.rss_kib)
    );
    assert!(
        peak(|s| s.open_files) <= warm.open_files + 16,
        "open files grew: {} after warm-up, peak {}",
        warm.open_files,
        peak(|s| s.open_files)
    );
    assert!(
        peak(|s| s.store_bytes) <= warm.store_bytes + warm.store_bytes / 2 + 4 * 1024 * 1024,
        "the store grew: {} bytes after warm-up, peak {}",
        warm.store_bytes,
        peak(|s| s.store_bytes)
    );
    assert!(
        samples.iter().all(|s| s.breakers <= MAX_ACCOUNTS),
        "more breakers stored than max_accounts"
    );
    // Pruning runs every 10 s: at most that long's arrivals above what retention keeps.
    let rate = |f: fn(&Sample) -> u64| {
        samples
            .windows(2)
            .map(|w| f(&w[1]).saturating_sub(f(&w[0])))
            .max()
            .unwrap_or(0)
    };
    let events_bound = EVENTS_RETAINED + 11 * rate(|s| s.events);
    let audit_bound = AUDIT_RETAINED + 11 * rate(|s| s.audit);
    assert!(
        samples.iter().all(|s| s.events <= events_bound),
        "events beyond retention: bound {events_bound}"
    );
    assert!(
        samples.iter().all(|s| s.audit <= audit_bound),
        "audit records beyond retention: bound {audit_bound}"
    );
    common::process::signal(&server, "TERM");
    assert!(server.wait().expect("exit").success(), "clean exit");
}
