//! Every answer tells the truth: nothing is acknowledged, allowed or shown before the changes it
//! depends on are durable; loosening (a resume) never acts before it can be kept; a failing
//! store denies in every mode; a trade session's messages take effect in the order sent; and a
//! reload reaches sessions that are already open.
//!
//! A slow disk is simulated by holding SQLite's write lock from another connection (the
//! store's writer waits up to five seconds for it, then fails the write); a crash by SIGKILL
//! of the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::process::{free_port, lines, riskgate, signal, wait_for, Running};
use common::{sha256_hex, PATIENCE};
use riskgate::proto::admin_service_client::AdminServiceClient;
use riskgate::proto::gate_service_client::GateServiceClient;
use riskgate::proto::monitor_service_client::MonitorServiceClient;
use riskgate::proto::trade_session_request::Kind as In;
use riskgate::proto::trade_session_response::Kind as Out;
use riskgate::proto::watch_events_response::Kind;
use riskgate::proto::*;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// A server process on a store directory of the test's.
struct Server {
    process: Running,
    channel: Channel,
    /// Keeps the log lines flowing (and readable by tests that wait for one).
    logs: std::sync::mpsc::Receiver<String>,
}

const SETTINGS: &str = "[breaker]\nfailure_threshold = 5\nfailure_window_secs = 3600.0\nopen_timeout_secs = 3600.0\n\n[accounts.SHADOW]\nmode = \"shadow\"\n\n[accounts.OFF]\nmode = \"disabled\"\n\n[groups.desk]\naccounts = [\"DESK-*\"]\n";

impl Server {
    async fn start(data: &Path, config_file: &Path) -> Server {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut process = Running(
            riskgate()
                .args(["serve", "--config"])
                .arg(config_file)
                .env("RISKGATE__SERVER__LISTEN", &listen)
                .env("RISKGATE__STORE__PATH", data)
                .env("RISKGATE__LOG__LEVEL", "warn,riskgate::server=info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start riskgate serve"),
        );
        let logs = lines(process.stderr.take().expect("stderr"));
        wait_for(&logs, "riskgate serving");
        let channel = Channel::from_shared(format!("http://{listen}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        Server {
            process,
            channel,
            logs,
        }
    }

    fn gate(&self) -> GateServiceClient<Channel> {
        GateServiceClient::new(self.channel.clone())
    }

    fn monitor(&self) -> MonitorServiceClient<Channel> {
        MonitorServiceClient::new(self.channel.clone())
    }

    fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
    }

    fn kill(mut self) {
        self.process.kill().expect("SIGKILL");
        self.process.wait().expect("reaped");
    }

    async fn check(&self, account: &str) -> CheckTradeResponse {
        self.gate()
            .check_trade(CheckTradeRequest {
                account_id: account.into(),
                ..Default::default()
            })
            .await
            .expect("CheckTrade")
            .into_inner()
    }

    /// A report that gives up after `wait`: `None` if it was not answered by then.
    async fn report_within(
        &self,
        account: &str,
        permit: &str,
        wait: Duration,
    ) -> Option<ReportOutcomeResponse> {
        let mut request = Request::new(ReportOutcomeRequest {
            account_id: account.into(),
            permit_id: permit.into(),
            outcome: Outcome::Failure as i32,
            ..Default::default()
        });
        request.set_timeout(wait);
        match self.gate().report_outcome(request).await {
            Ok(answer) => Some(answer.into_inner()),
            Err(status) if given_up(&status) => None,
            Err(status) => panic!("unexpected answer {status:?}"),
        }
    }

    async fn breaker(&self, account: &str) -> Option<Breaker> {
        match self
            .monitor()
            .get_breaker(GetBreakerRequest {
                account_id: account.into(),
            })
            .await
        {
            Ok(answer) => answer.into_inner().breaker,
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => panic!("GetBreaker: {status:?}"),
        }
    }

    async fn halt_firm(&self) {
        self.admin()
            .halt_all(HaltAllRequest {
                reason: "incident".into(),
                operator: "alice".into(),
            })
            .await
            .expect("HaltAll");
    }

    /// Halts the group `desk` (accounts DESK-*).
    async fn halt_desk(&self) {
        self.admin()
            .halt_group(HaltGroupRequest {
                group: "desk".into(),
                reason: "desk incident".into(),
                operator: "alice".into(),
            })
            .await
            .expect("HaltGroup");
    }

    async fn halts(&self) -> Vec<Halt> {
        self.admin()
            .list_halts(ListHaltsRequest {})
            .await
            .expect("ListHalts")
            .into_inner()
            .halts
    }
}

/// The client's own deadline passed (the server had not answered).
fn given_up(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled)
}

/// Holds SQLite's write lock on the store in `data` until dropped: the store's commits wait.
struct Held(rusqlite::Connection);

impl Held {
    fn hold(data: &Path) -> Held {
        let conn = rusqlite::Connection::open(data.join("riskgate.db")).expect("sqlite");
        conn.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        conn.execute_batch("BEGIN IMMEDIATE")
            .expect("the write lock");
        Held(conn)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.execute_batch("ROLLBACK");
    }
}

/// A directory for a test's store and configuration: the directory (removed when dropped), the
/// store's path and the configuration file's.
fn store_dir(settings: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let file = settings_file(dir.path(), settings);
    (dir, data, file)
}

fn settings_file(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("riskgate.toml");
    std::fs::write(&file, text).expect("write config");
    file
}

/// Defect 1: a retry of a report whose original is still on its way to disk must not be
/// answered (DUPLICATE) before the original is durable; after a crash, every answer given
/// must still hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_report_is_answered_only_once_the_original_is_durable() {
    let (_dir, data, file) = store_dir(SETTINGS);
    let server = Server::start(&data, &file).await;
    let permit = server.check("ACC-1").await.permit_id;

    let held = Held::hold(&data);
    let first = server
        .report_within("ACC-1", &permit, Duration::from_millis(300))
        .await;
    assert!(first.is_none(), "the commit is held: {first:?}");
    let retry = server
        .report_within("ACC-1", &permit, Duration::from_millis(800))
        .await;
    // The retry relies on the original: it may not be answered while the original is held.
    assert!(
        retry.is_none(),
        "a retry was answered while its original was not on disk: {retry:?}"
    );
    server.kill();
    drop(held);

    let server = Server::start(&data, &file).await;
    // Nothing was acknowledged, so nothing had to survive; what did is consistent.
    let permit = server.check("ACC-2").await.permit_id;
    let held = Held::hold(&data);
    let first = server
        .report_within("ACC-2", &permit, Duration::from_millis(300))
        .await;
    assert!(first.is_none(), "the commit is held: {first:?}");
    drop(held);
    // Released: the retry is answered once the original is durable, as a duplicate of it.
    let retry = server
        .report_within("ACC-2", &permit, PATIENCE)
        .await
        .expect("answered once durable");
    assert_eq!(retry.disposition, OutcomeDisposition::Duplicate as i32);
    assert_eq!(retry.failure_count, 1);
    server.kill();

    let server = Server::start(&data, &file).await;
    let kept = server
        .breaker("ACC-2")
        .await
        .expect("the acknowledged failure");
    assert_eq!(kept.failure_count, 1);
    server.kill();
}

/// Defect 6: a monitor is never shown, as fact, a change a crash can take back; a sequence
/// number once shown is never reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_and_snapshots_show_only_what_is_durable() {
    let (_dir, data, file) = store_dir(SETTINGS);
    let server = Server::start(&data, &file).await;
    server.check("ACC-1").await;

    let held = Held::hold(&data);
    let mut trip = Request::new(TripBreakerRequest {
        account_id: "ACC-1".into(),
        reason: "held".into(),
        operator: "alice".into(),
        ..Default::default()
    });
    trip.set_timeout(Duration::from_millis(300));
    let tripped = server.admin().trip_breaker(trip).await;
    assert!(
        tripped.as_ref().is_err_and(given_up),
        "the trip is held: {tripped:?}"
    );

    // GetBreaker and a watch snapshot, each given up on after a while.
    let mut get = Request::new(GetBreakerRequest {
        account_id: "ACC-1".into(),
    });
    get.set_timeout(Duration::from_millis(500));
    let shown = server.monitor().get_breaker(get).await;
    let mut snapshot_shown = Vec::new();
    let watch = tokio::time::timeout(
        Duration::from_millis(500),
        server.monitor().watch_events(WatchEventsRequest {
            account_ids: vec!["ACC-1".into()],
            after_sequence: None,
        }),
    )
    .await;
    match watch {
        // Not answered yet, or refused: nothing shown.
        Err(_) => {}
        Ok(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(Ok(watch)) => {
            let mut watch = watch.into_inner();
            while let Ok(Ok(Some(message))) =
                tokio::time::timeout(Duration::from_millis(500), watch.message()).await
            {
                if let Some(Kind::Snapshot(breaker)) = message.kind {
                    snapshot_shown.push(breaker);
                }
            }
        }
    }
    let mut list = Request::new(ListBreakersRequest::default());
    list.set_timeout(Duration::from_millis(500));
    let listed = server.monitor().list_breakers(list).await;
    server.kill();
    drop(held);

    // Whatever was shown must hold after the crash.
    let server = Server::start(&data, &file).await;
    let after = server.breaker("ACC-1").await;
    let after_state = after
        .as_ref()
        .map_or(BreakerState::Closed as i32, |b| b.state);
    if let Ok(shown) = &shown {
        let shown = shown.get_ref().breaker.as_ref().expect("breaker");
        assert_eq!(
            shown.state, after_state,
            "GetBreaker showed {shown:?}, the restart holds {after:?}"
        );
    }
    for shown in &snapshot_shown {
        assert_eq!(
            shown.state, after_state,
            "a snapshot showed {shown:?}, the restart holds {after:?}"
        );
    }
    if let Ok(listed) = &listed {
        for shown in &listed.get_ref().breakers {
            assert_eq!(shown.state, after_state, "ListBreakers showed {shown:?}");
        }
    }
    // The sequence: whatever a view named as its last event is never given to another event.
    let shown_sequence = snapshot_shown
        .iter()
        .map(|b| b.last_sequence)
        .chain(
            shown
                .iter()
                .filter_map(|s| s.get_ref().breaker.as_ref().map(|b| b.last_sequence)),
        )
        .max()
        .unwrap_or(0);
    let tripped = server
        .admin()
        .trip_breaker(TripBreakerRequest {
            account_id: "ACC-OTHER".into(),
            reason: "after".into(),
            operator: "alice".into(),
            ..Default::default()
        })
        .await
        .expect("trip")
        .into_inner()
        .breaker
        .expect("breaker");
    assert!(
        shown_sequence == 0 || tripped.last_sequence != shown_sequence,
        "sequence {shown_sequence} was shown for ACC-1 and reused for ACC-OTHER"
    );
    server.kill();
}

/// Defect 3, with a slow disk: a resume takes effect only once durable; until then the halt
/// stays in force and orders stay denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_takes_effect_only_once_it_is_durable() {
    let (_dir, data, file) = store_dir(SETTINGS);
    let server = Server::start(&data, &file).await;
    server.halt_firm().await;
    server.halt_desk().await;

    let held = Held::hold(&data);
    for resume_group in [false, true] {
        let answered = if resume_group {
            let mut request = Request::new(ResumeGroupRequest {
                group: "desk".into(),
                reason: "over".into(),
                operator: "alice".into(),
            });
            request.set_timeout(Duration::from_millis(300));
            server.admin().resume_group(request).await.map(drop)
        } else {
            let mut request = Request::new(ResumeAllRequest {
                reason: "over".into(),
                operator: "alice".into(),
            });
            request.set_timeout(Duration::from_millis(300));
            server.admin().resume_all(request).await.map(drop)
        };
        assert!(
            answered.as_ref().is_err_and(given_up),
            "the resume is held: {answered:?}"
        );
    }
    // Not durable: both halts still deny.
    let check = server.check("ACC-1").await;
    assert!(
        !check.allowed,
        "allowed while the resume is not on disk: {check:?}"
    );
    assert_eq!(check.denial, Denial::FirmHalted as i32, "{check:?}");
    server.kill();
    drop(held);

    // The crash took the resumes back, and nobody was told otherwise.
    let server = Server::start(&data, &file).await;
    assert_eq!(server.halts().await.len(), 2);
    let check = server.check("DESK-1").await;
    assert_eq!(check.denial, Denial::FirmHalted as i32, "{check:?}");

    // Held again, then released: the resumes take effect once durable, by themselves.
    let held = Held::hold(&data);
    let mut request = Request::new(ResumeAllRequest {
        reason: "over".into(),
        operator: "alice".into(),
    });
    request.set_timeout(Duration::from_millis(300));
    let answered = server.admin().resume_all(request).await;
    assert!(answered.is_err(), "held: {answered:?}");
    assert_eq!(
        server.check("ACC-1").await.denial,
        Denial::FirmHalted as i32
    );
    drop(held);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let check = server.check("ACC-1").await;
        if check.allowed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resume never took effect: {check:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The group halt is still in force; its accounts are still denied.
    assert_eq!(
        server.check("DESK-1").await.denial,
        Denial::GroupHalted as i32
    );
    server.kill();
    let server = Server::start(&data, &file).await;
    assert!(
        server.check("ACC-1").await.allowed,
        "the durable resume holds"
    );
    assert_eq!(server.halts().await.len(), 1);
    server.kill();
}

/// Defects 2 and 3, with a failing store: checks of shadow and disabled accounts are denied too
/// (modes apply to the breaker only), and a resume is refused rather than acted on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_denies_every_mode_and_refuses_resumes() {
    let (_dir, data, file) = store_dir(SETTINGS);
    let server = Server::start(&data, &file).await;
    server.halt_desk().await;
    for account in ["SHADOW", "OFF"] {
        assert!(server.check(account).await.allowed);
    }
    // Held past the writer's patience: the write fails, and the store is unwritable until a
    // write succeeds.
    let held = Held::hold(&data);
    let failed = server
        .gate()
        .report_outcome(ReportOutcomeRequest {
            account_id: "ACC-1".into(),
            outcome: Outcome::Failure as i32,
            ..Default::default()
        })
        .await;
    assert_eq!(failed.expect_err("unwritable").code(), Code::Unavailable);

    for account in ["SHADOW", "OFF", "ACC-1"] {
        let check = server.check(account).await;
        assert!(
            !check.allowed,
            "{account} allowed while the store fails: {check:?}"
        );
        assert_eq!(check.denial, Denial::StoreUnavailable as i32, "{check:?}");
    }
    let refused = server
        .admin()
        .resume_group(ResumeGroupRequest {
            group: "desk".into(),
            reason: "over".into(),
            operator: "alice".into(),
        })
        .await
        .expect_err("refused while the store fails");
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(server.halts().await.len(), 1, "the halt stays in force");
    server.kill();
    drop(held);

    let server = Server::start(&data, &file).await;
    assert_eq!(server.halts().await.len(), 1);
    assert_eq!(
        server.check("DESK-9").await.denial,
        Denial::GroupHalted as i32
    );
    server.kill();
}

/// Defect 4: in a trade session, a check sent after a report is decided after the report took
/// effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_after_a_report_on_one_stream_sees_the_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let file = settings_file(
        dir.path(),
        "[breaker]\nfailure_threshold = 1\nopen_timeout_secs = 3600.0\n",
    );
    let server = Server::start(&data, &file).await;
    const ACCOUNTS: u64 = 200;
    let mut messages = Vec::new();
    for i in 0..ACCOUNTS {
        let account = format!("ACC-{i}");
        messages.push(TradeSessionRequest {
            correlation_id: 2 * i,
            kind: Some(In::Report(ReportOutcomeRequest {
                account_id: account.clone(),
                outcome: Outcome::Failure as i32,
                ..Default::default()
            })),
        });
        messages.push(TradeSessionRequest {
            correlation_id: 2 * i + 1,
            kind: Some(In::Check(CheckTradeRequest {
                account_id: account,
                ..Default::default()
            })),
        });
    }
    let mut answers = server
        .gate()
        .trade_session(tokio_stream::iter(messages))
        .await
        .expect("TradeSession")
        .into_inner();
    let mut allowed_after_open = Vec::new();
    for _ in 0..2 * ACCOUNTS {
        let answer = tokio::time::timeout(PATIENCE, answers.message())
            .await
            .expect("within patience")
            .expect("stream")
            .expect("an answer");
        match answer.kind {
            Some(Out::Check(check)) if check.allowed => {
                allowed_after_open.push((answer.correlation_id, check));
            }
            Some(Out::Check(_) | Out::Report(_)) => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(
        allowed_after_open.is_empty(),
        "{} checks were allowed although the report before each opened the breaker: {:?}",
        allowed_after_open.len(),
        allowed_after_open.first()
    );
    server.kill();
}

fn principals(bot_a: bool, bot_b_accounts: &str) -> String {
    let mut text = format!(
        "[store]\nkind = \"memory\"\n[auth]\nmode = \"token\"\n\n[[auth.principals]]\nname = \"bot-b\"\nroles = [\"bot\"]\naccounts = [{bot_b_accounts}]\ntoken_sha256 = \"{}\"\n",
        sha256_hex("token-b")
    );
    if bot_a {
        text.push_str(&format!(
            "\n[[auth.principals]]\nname = \"bot-a\"\nroles = [\"bot\"]\ntoken_sha256 = \"{}\"\n",
            sha256_hex("token-a")
        ));
    }
    text
}

/// A trade session as the holder of `token`: the sender of its messages and its answers.
async fn session(
    channel: Channel,
    token: &str,
) -> (
    tokio::sync::mpsc::Sender<TradeSessionRequest>,
    tonic::Streaming<TradeSessionResponse>,
) {
    let (send, receive) = tokio::sync::mpsc::channel(16);
    let mut request = Request::new(tokio_stream::wrappers::ReceiverStream::new(receive));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let answers = GateServiceClient::new(channel)
        .trade_session(request)
        .await
        .expect("TradeSession")
        .into_inner();
    (send, answers)
}

async fn session_check(
    send: &tokio::sync::mpsc::Sender<TradeSessionRequest>,
    answers: &mut tonic::Streaming<TradeSessionResponse>,
    account: &str,
) -> Result<Option<Out>, tonic::Status> {
    send.send(TradeSessionRequest {
        correlation_id: 1,
        kind: Some(In::Check(CheckTradeRequest {
            account_id: account.into(),
            ..Default::default()
        })),
    })
    .await
    .expect("the session reads");
    tokio::time::timeout(PATIENCE, answers.message())
        .await
        .expect("within patience")
        .map(|answer| answer.and_then(|a| a.kind))
}

/// Defect 5: a reload that removes a bot, or narrows its accounts, reaches its open sessions at
/// their next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_open_trade_sessions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = settings_file(dir.path(), &principals(true, "\"*\""));
    let data = dir.path().join("data");
    let server = Server::start(&data, &file).await;
    let (send_a, mut answers_a) = session(server.channel.clone(), "token-a").await;
    let (send_b, mut answers_b) = session(server.channel.clone(), "token-b").await;
    for (send, answers) in [(&send_a, &mut answers_a), (&send_b, &mut answers_b)] {
        match session_check(send, answers, "A-1").await {
            Ok(Some(Out::Check(check))) => assert!(check.allowed),
            other => panic!("expected an allowed check, got {other:?}"),
        }
    }

    // bot-a removed, bot-b narrowed to B-*.
    std::fs::write(&file, principals(false, "\"B-*\"")).expect("rewrite config");
    signal(&server.process, "HUP");
    wait_for(&server.logs, "configuration reloaded");

    match session_check(&send_a, &mut answers_a, "A-1").await {
        Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{status:?}"),
        other => panic!("a removed bot's session went on: {other:?}"),
    }
    match session_check(&send_b, &mut answers_b, "A-1").await {
        Ok(Some(Out::Error(error))) => {
            assert_eq!(error.code, Code::PermissionDenied as i32, "{error:?}")
        }
        other => panic!("a narrowed bot still traded A-1: {other:?}"),
    }
    match session_check(&send_b, &mut answers_b, "B-1").await {
        Ok(Some(Out::Check(check))) => assert!(check.allowed),
        other => panic!("expected B-1 allowed, got {other:?}"),
    }
    server.kill();
}

/// After a reset that is not yet on disk, no order is allowed under it: a crash would undo the
/// reset after orders had been allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_order_is_allowed_under_a_reset_that_is_not_yet_durable() {
    let (_dir, data, file) = store_dir(SETTINGS);
    let server = Server::start(&data, &file).await;
    server
        .admin()
        .trip_breaker(TripBreakerRequest {
            account_id: "ACC-1".into(),
            reason: "incident".into(),
            operator: "alice".into(),
            ..Default::default()
        })
        .await
        .expect("TripBreaker");

    let held = Held::hold(&data);
    let mut reset = Request::new(ResetBreakerRequest {
        account_id: "ACC-1".into(),
        reason: "over".into(),
        operator: "alice".into(),
    });
    reset.set_timeout(Duration::from_millis(300));
    let answered = server.admin().reset_breaker(reset).await;
    assert!(answered.as_ref().is_err_and(given_up), "held: {answered:?}");
    let mut check = Request::new(CheckTradeRequest {
        account_id: "ACC-1".into(),
        ..Default::default()
    });
    check.set_timeout(Duration::from_millis(500));
    match server.gate().check_trade(check).await {
        Ok(answer) => assert!(
            !answer.get_ref().allowed,
            "allowed under a reset not on disk: {:?}",
            answer.get_ref()
        ),
        Err(status) => assert!(given_up(&status), "{status:?}"),
    }
    server.kill();
    drop(held);

    let server = Server::start(&data, &file).await;
    let check = server.check("ACC-1").await;
    assert_eq!(check.denial, Denial::OperatorTrip as i32, "{check:?}");
    server.kill();
}
