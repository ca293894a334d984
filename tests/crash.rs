//! Crash safety of the real binary: several clients report failures, trip and reset breakers
//! while a watcher follows events; the server is SIGKILLed at a random point; after a restart
//! every acknowledged change must be there, OPEN breakers must still deny and keep their recovery
//! time, the event sequence must continue with no gap, and the audit trail must hold every
//! acknowledged operator action. Bounded: a fixed number of kill/restart rounds.
//!
//! The same again with the power cut instead (`acknowledged_changes_survive_power_cuts...`): the
//! store lives on a filesystem that drops every write not yet synced when the power goes
//! (`common::powercut`), so what the server acknowledged must have been on disk, not merely
//! written. A server that acknowledges before its writes are synced (planted in a debug build
//! with `RISKGATE_FAILPOINT_ACK_BEFORE_SYNC=1`) is caught.
//!
//! The random points come from a seed printed at the start; `RISKGATE_CRASH_SEED=N` replays one.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use riskgate::proto::admin_service_client::AdminServiceClient;
use riskgate::proto::gate_service_client::GateServiceClient;
use riskgate::proto::monitor_service_client::MonitorServiceClient;
use riskgate::proto::watch_events_response::Kind;
use riskgate::proto::*;
use tokio::sync::{Mutex, Notify};
use tonic::transport::Channel;

mod common;
use common::powercut::{self, Mounted, PowerCut};

const ROUNDS: usize = 8;
const CLIENTS: usize = 4;
const ACCOUNTS_PER_CLIENT: usize = 3;
const PATIENCE: Duration = Duration::from_secs(30);

/// xorshift64*: small, seedable, good enough to pick kill points and operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Fail,
    Trip,
    Reset,
}

/// What a breaker must look like, from the acknowledged operations alone (threshold 3, window
/// and open timeout of an hour, so nothing changes by time during the test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    Closed { failures: u32 },
    Open,
    Tripped,
}

impl Expected {
    fn after(self, op: Op) -> Expected {
        match (self, op) {
            (Expected::Closed { failures }, Op::Fail) if failures + 1 >= 3 => Expected::Open,
            (Expected::Closed { failures }, Op::Fail) => Expected::Closed {
                failures: failures + 1,
            },
            (other, Op::Fail) => other,
            (_, Op::Trip) => Expected::Tripped,
            (_, Op::Reset) => Expected::Closed { failures: 0 },
        }
    }

    fn of(breaker: &Breaker) -> Expected {
        match (
            BreakerState::try_from(breaker.state),
            breaker.tripped_by_operator,
        ) {
            (Ok(BreakerState::Open), true) => Expected::Tripped,
            (Ok(BreakerState::Open), false) => Expected::Open,
            (Ok(BreakerState::Closed), _) => Expected::Closed {
                failures: breaker.failure_count,
            },
            other => panic!("unexpected breaker state {other:?}: {breaker:?}"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Account {
    expected: Expected,
    /// An operation that was sent but not acknowledged when the server died.
    in_flight: Option<Op>,
}

struct Model {
    accounts: HashMap<String, Account>,
    /// Operator actions acknowledged, and those whose fate is unknown.
    audited: usize,
    audit_unknown: usize,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start(listen: &str, data: &std::path::Path, failpoints: &[(&str, &str)]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_riskgate"))
        .arg("serve")
        .envs(failpoints.iter().copied())
        .env("RISKGATE__SERVER__LISTEN", listen)
        .env("RISKGATE__STORE__PATH", data)
        .env("RISKGATE__BREAKER__FAILURE_THRESHOLD", "3")
        .env("RISKGATE__BREAKER__FAILURE_WINDOW_SECS", "3600")
        .env("RISKGATE__BREAKER__OPEN_TIMEOUT_SECS", "3600")
        // The replay in `verify` ends at the first heartbeat.
        .env("RISKGATE__EVENTS__HEARTBEAT_SECS", "0.05")
        .env("RISKGATE__LOG__LEVEL", "warn,riskgate::server=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start riskgate serve");
    let stderr = child.stderr.take().expect("stderr");
    let (ready, serving) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("riskgate serving") {
                let _ = ready.send(());
            }
        }
    });
    serving.recv_timeout(PATIENCE).expect("the server comes up");
    child
}

async fn connect(listen: &str) -> Channel {
    Channel::from_shared(format!("http://{listen}"))
        .expect("uri")
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect")
}

/// Checks everything against the model, then resolves the unknowns to what the server kept.
async fn verify(channel: &Channel, model: &mut Model, max_seen: u64, round: usize, seed: u64) {
    let mut monitor = MonitorServiceClient::new(channel.clone());
    let mut gate = GateServiceClient::new(channel.clone());
    let context = |what: &str| format!("round {round}, seed {seed}: {what}");
    for (account_id, account) in model.accounts.iter_mut() {
        let breaker = match monitor
            .get_breaker(GetBreakerRequest {
                account_id: account_id.clone(),
            })
            .await
        {
            Ok(response) => response.into_inner().breaker.expect("breaker"),
            Err(status) if status.code() == tonic::Code::NotFound => Breaker {
                state: BreakerState::Closed as i32,
                ..Default::default()
            },
            Err(status) => panic!(
                "{}",
                context(&format!("GetBreaker {account_id}: {status:?}"))
            ),
        };
        let found = Expected::of(&breaker);
        let allowed = [
            Some(account.expected),
            account.in_flight.map(|op| account.expected.after(op)),
        ];
        assert!(
            allowed.contains(&Some(found)),
            "{}",
            context(&format!(
                "{account_id} is {found:?}; acknowledged {:?}, in flight {:?}",
                account.expected, account.in_flight
            ))
        );
        if matches!(found, Expected::Open | Expected::Tripped) {
            let check = gate
                .check_trade(CheckTradeRequest {
                    account_id: account_id.clone(),
                    ..Default::default()
                })
                .await
                .expect("CheckTrade")
                .into_inner();
            assert!(
                !check.allowed,
                "{}",
                context(&format!("{account_id} is OPEN but allowed a trade"))
            );
        }
        if found == Expected::Open {
            let opened = breaker.opened_at.expect("opened_at");
            let recovery = breaker.recovery_at.expect("recovery_at");
            assert_eq!(
                recovery.seconds - opened.seconds,
                3600,
                "{}",
                context("the open period kept its length")
            );
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_secs() as i64;
            assert!(
                recovery.seconds > now,
                "{}",
                context("recovery is still ahead")
            );
        }
        account.expected = found;
        account.in_flight = None;
    }

    // The event history is contiguous from 1 and holds everything a watcher was ever shown.
    let mut replay = monitor
        .watch_events(WatchEventsRequest {
            account_ids: vec![],
            after_sequence: Some(0),
        })
        .await
        .expect("WatchEvents")
        .into_inner();
    let mut last = 0;
    loop {
        let message = tokio::time::timeout(PATIENCE, replay.message())
            .await
            .expect("replay")
            .expect("stream")
            .expect("message");
        match message.kind {
            Some(Kind::Event(event)) => {
                assert_eq!(
                    event.sequence,
                    last + 1,
                    "{}",
                    context("no gap in the sequence")
                );
                last = event.sequence;
            }
            Some(Kind::Heartbeat(beat)) => {
                assert_eq!(
                    beat.sequence,
                    last,
                    "{}",
                    context("the replay reached the latest sequence")
                );
                break;
            }
            other => panic!("{}", context(&format!("unexpected {other:?}"))),
        }
    }
    assert!(
        last >= max_seen,
        "{}",
        context(&format!(
            "a watcher saw sequence {max_seen}, the store has {last}"
        ))
    );

    let mut admin = AdminServiceClient::new(channel.clone());
    let mut audited = 0;
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_audit_records(ListAuditRecordsRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .expect("audit")
            .into_inner();
        audited += page.records.len();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert!(
        audited >= model.audited && audited <= model.audited + model.audit_unknown,
        "{}",
        context(&format!(
            "{audited} audit records; acknowledged {}, unknown {}",
            model.audited, model.audit_unknown
        ))
    );
    model.audited = audited;
    model.audit_unknown = 0;
}

/// One client: its own accounts, one operation at a time, until the server goes away.
async fn client(
    channel: Channel,
    accounts: Vec<String>,
    seed: u64,
    model: Arc<Mutex<Model>>,
    acknowledged: Arc<AtomicUsize>,
    progress: Arc<Notify>,
) {
    let mut rng = Rng(seed | 1);
    let mut gate = GateServiceClient::new(channel.clone());
    let mut admin = AdminServiceClient::new(channel);
    loop {
        let account_id = accounts[rng.below(accounts.len() as u64) as usize].clone();
        let op = match rng.below(10) {
            0 => Op::Trip,
            1 | 2 => Op::Reset,
            _ => Op::Fail,
        };
        let expected = model.lock().await.accounts[&account_id].expected;
        let result = match op {
            Op::Fail => match gate
                .check_trade(CheckTradeRequest {
                    account_id: account_id.clone(),
                    ..Default::default()
                })
                .await
            {
                // The disk failed under it (a power cut, before the process dies): it fails
                // closed, and this client stops as if the server had gone.
                Ok(check) if check.get_ref().denial == Denial::StoreUnavailable as i32 => return,
                Ok(check) if !check.get_ref().allowed => {
                    assert!(
                        !matches!(expected, Expected::Closed { .. }),
                        "{account_id} denied while CLOSED"
                    );
                    continue;
                }
                Ok(check) => {
                    let permit_id = check.into_inner().permit_id;
                    model
                        .lock()
                        .await
                        .accounts
                        .get_mut(&account_id)
                        .expect("account")
                        .in_flight = Some(op);
                    gate.report_outcome(ReportOutcomeRequest {
                        account_id: account_id.clone(),
                        permit_id,
                        outcome: Outcome::Failure as i32,
                        ..Default::default()
                    })
                    .await
                    .map(drop)
                }
                Err(status) => Err(status),
            },
            Op::Trip | Op::Reset => {
                {
                    let mut model = model.lock().await;
                    model
                        .accounts
                        .get_mut(&account_id)
                        .expect("account")
                        .in_flight = Some(op);
                    model.audit_unknown += 1;
                }
                let (account_id, reason, operator) = (
                    account_id.clone(),
                    "crash test".to_string(),
                    "crash".to_string(),
                );
                if op == Op::Trip {
                    admin
                        .trip_breaker(TripBreakerRequest {
                            account_id,
                            reason,
                            operator,
                            ..Default::default()
                        })
                        .await
                        .map(drop)
                } else {
                    admin
                        .reset_breaker(ResetBreakerRequest {
                            account_id,
                            reason,
                            operator,
                        })
                        .await
                        .map(drop)
                }
            }
        };
        let mut model = model.lock().await;
        match result {
            Ok(()) => {
                let account = model.accounts.get_mut(&account_id).expect("account");
                account.expected = account.expected.after(op);
                account.in_flight = None;
                if op != Op::Fail {
                    model.audited += 1;
                    model.audit_unknown -= 1;
                }
                acknowledged.fetch_add(1, Ordering::SeqCst);
                progress.notify_one();
            }
            // The server is gone: the operation in flight stays unknown.
            Err(_) => return,
        }
    }
}

/// How the server's machine fails at the random point, and comes back.
trait Failure: Send {
    /// Before each start: the disk is there.
    fn power_on(&mut self);
    /// The server stops at once, losing what this failure loses.
    fn fail(&mut self, server: &mut Child);
}

/// SIGKILL: the process dies; the kernel keeps every write it was handed.
struct Kill;

impl Failure for Kill {
    fn power_on(&mut self) {}

    fn fail(&mut self, server: &mut Child) {
        Command::new("kill")
            .args(["-KILL", &server.id().to_string()])
            .status()
            .expect("kill");
        server.wait().expect("server exit");
    }
}

/// A power cut: the disk drops every write not yet synced, then the process dies.
struct Power {
    fs: PowerCut,
    mountpoint: std::path::PathBuf,
    mounted: Option<Mounted>,
}

impl Failure for Power {
    fn power_on(&mut self) {
        if self.mounted.is_none() {
            self.mounted = Some(
                self.fs
                    .mount(&self.mountpoint)
                    .expect("mount the power-cut filesystem"),
            );
        }
    }

    fn fail(&mut self, server: &mut Child) {
        self.fs.cut();
        Kill.fail(server);
        self.mounted = None;
    }
}

fn seed() -> u64 {
    let seed = std::env::var("RISKGATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64
        });
    eprintln!("crash test seed: {seed} (RISKGATE_CRASH_SEED={seed} replays it)");
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_sigkill_at_random_points() {
    let data = tempfile::tempdir().expect("data directory");
    survive(seed(), ROUNDS, data.path(), &mut Kill, &[]).await;
}

/// Whether power-cut tests run here; without FUSE they are skipped, loudly, unless
/// `RISKGATE_REQUIRE_FUSE=1` (CI) makes that a failure.
fn fuse_or_skip(test: &str) -> bool {
    match powercut::available() {
        Ok(()) => true,
        Err(why) if std::env::var_os("RISKGATE_REQUIRE_FUSE").is_some() => {
            panic!("{test}: FUSE is required (RISKGATE_REQUIRE_FUSE) but {why}")
        }
        Err(why) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {why}; the power-cut tests need /dev/fuse and root or fusermount3"
            );
            false
        }
    }
}

fn power(dir: &std::path::Path) -> Power {
    let mountpoint = dir.join("disk");
    std::fs::create_dir(&mountpoint).expect("mount point");
    Power {
        fs: PowerCut::default(),
        mountpoint,
        mounted: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_power_cuts_at_random_points() {
    if !fuse_or_skip("acknowledged_changes_survive_power_cuts_at_random_points") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut power = power(dir.path());
    let data = power.mountpoint.join("data");
    survive(seed(), ROUNDS, &data, &mut power, &[]).await;
    assert!(
        power.fs.syncs() > 0,
        "the store synced through the filesystem"
    );
}

/// The power-cut test catches a server that acknowledges before its writes are synced: the
/// same scenario against a debug build with that bug planted fails.
#[cfg(debug_assertions)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_power_cut_test_catches_acknowledging_before_the_sync() {
    if !fuse_or_skip("the_power_cut_test_catches_acknowledging_before_the_sync") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let seed = seed();
    let outcome = tokio::spawn(async move {
        let mut power = power(dir.path());
        let data = power.mountpoint.join("data");
        survive(
            seed,
            2,
            &data,
            &mut power,
            &[("RISKGATE_FAILPOINT_ACK_BEFORE_SYNC", "1")],
        )
        .await;
    })
    .await;
    assert!(
        outcome.is_err_and(|e| e.is_panic()),
        "acknowledging before the sync went unnoticed (seed {seed})"
    );
}

/// Rounds of load, failure at a random point and restart, checking after each restart that
/// everything acknowledged is there.
async fn survive(
    seed: u64,
    rounds: usize,
    data: &std::path::Path,
    failure: &mut dyn Failure,
    failpoints: &[(&str, &str)],
) {
    let mut rng = Rng(seed | 1);
    let listen = format!("127.0.0.1:{}", free_port());

    let mut accounts = HashMap::new();
    for c in 0..CLIENTS {
        for a in 0..ACCOUNTS_PER_CLIENT {
            accounts.insert(
                format!("c{c}-a{a}"),
                Account {
                    expected: Expected::Closed { failures: 0 },
                    in_flight: None,
                },
            );
        }
    }
    let model = Arc::new(Mutex::new(Model {
        accounts,
        audited: 0,
        audit_unknown: 0,
    }));
    let max_seen = Arc::new(AtomicU64::new(0));

    for round in 0..=rounds {
        failure.power_on();
        // Killed if this round panics (a lost change found), so no server outlives the test.
        let mut server = common::process::Running(start(&listen, data, failpoints));
        let channel = connect(&listen).await;
        {
            let mut model = model.lock().await;
            verify(
                &channel,
                &mut model,
                max_seen.load(Ordering::SeqCst),
                round,
                seed,
            )
            .await;
        }
        if round == rounds {
            Command::new("kill")
                .args(["-TERM", &server.id().to_string()])
                .status()
                .expect("kill");
            assert!(
                server.wait().expect("exit").success(),
                "clean exit on SIGTERM"
            );
            break;
        }

        // A watcher records the highest sequence it is shown.
        let watcher = tokio::spawn({
            let max_seen = max_seen.clone();
            let mut monitor = MonitorServiceClient::new(channel.clone());
            async move {
                let Ok(response) = monitor.watch_events(WatchEventsRequest::default()).await else {
                    return;
                };
                let mut stream = response.into_inner();
                while let Ok(Some(message)) = stream.message().await {
                    if let Some(Kind::Event(event)) = message.kind {
                        max_seen.fetch_max(event.sequence, Ordering::SeqCst);
                    }
                }
            }
        });

        let acknowledged = Arc::new(AtomicUsize::new(0));
        let progress = Arc::new(Notify::new());
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let accounts = (0..ACCOUNTS_PER_CLIENT)
                    .map(|a| format!("c{c}-a{a}"))
                    .collect();
                tokio::spawn(client(
                    channel.clone(),
                    accounts,
                    rng.next(),
                    model.clone(),
                    acknowledged.clone(),
                    progress.clone(),
                ))
            })
            .collect();
        // Kill after a random number of acknowledged operations, while others are in flight.
        let kill_at = 20 + rng.below(200) as usize;
        tokio::time::timeout(PATIENCE, async {
            while acknowledged.load(Ordering::SeqCst) < kill_at {
                progress.notified().await;
            }
        })
        .await
        .expect("clients make progress");
        failure.fail(&mut server.0);
        for client in clients {
            tokio::time::timeout(PATIENCE, client)
                .await
                .expect("client ends")
                .expect("client task");
        }
        watcher.abort();
    }
}
