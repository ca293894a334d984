//! The embedded store on a real disk: what survives a restart, what start-up refuses, and how
//! the service fails closed and recovers when the disk cannot be written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use riskgate::proto::*;
use riskgate::store::{SqliteOptions, SqliteStore, Store, StoreError};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

const CONFIG: &str = "[breaker]\nopen_timeout_secs = 3600.0\n\n[accounts.SOON]\nopen_timeout_secs = 0.3\nfailure_threshold = 1\nhalf_open_timeout_secs = 3600.0\n";

fn open(path: &Path) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(SqliteOptions {
        path: path.to_path_buf(),
        retained_events: 10_000,
        retained_age: Duration::from_secs(3600),
        audit: riskgate::store::AuditRetention::default(),
    })
}

/// Starts on the state kept at `path`: the SQLite store there, or, with `RISKGATE_TEST_ETCD`
/// set, a cluster node whose state in etcd is named after `path` (so that the tests of what
/// survives a restart run against a cluster too).
async fn start(path: &Path) -> TestServer {
    start_with(config(CONFIG), path).await
}

async fn start_with(config: riskgate::config::Config, path: &Path) -> TestServer {
    if let Some(server) = TestServer::start_in_cluster_at(config.clone(), path).await {
        return server;
    }
    let store: Arc<dyn Store> = Arc::new(open(path).expect("open the store"));
    TestServer::start_with(config, store).await
}

/// Starts on the SQLite store at `path`, for the tests of the SQLite store itself.
async fn start_sqlite(path: &Path) -> TestServer {
    let store: Arc<dyn Store> = Arc::new(open(path).expect("open the store"));
    TestServer::start_with(config(CONFIG), store).await
}

fn refused(path: &Path) -> String {
    match open(path) {
        Ok(_) => panic!("the store at {} should be refused", path.display()),
        Err(error) => error.to_string(),
    }
}

#[tokio::test]
async fn everything_acknowledged_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path()).await;
    let mut events = server.watch(&[], None).await;
    read_snapshot(&mut events).await;
    server.trip("HALTED", "runaway algo").await;
    server.fail("FAILING", 5).await;
    server.fail("WOBBLY", 2).await;
    server.fail("SOON", 1).await;
    // SOON recovers after 0.3 s: wait for its HALF_OPEN, then take a probe permit.
    loop {
        let event = next_event(&mut events).await;
        if event.account_id == "SOON" && state(event.to_state) == BreakerState::HalfOpen {
            break;
        }
    }
    let probe = server.check("SOON").await;
    assert!(probe.probe);
    let before: Vec<Breaker> = [
        server.breaker("HALTED").await,
        server.breaker("FAILING").await,
        server.breaker("WOBBLY").await,
        server.breaker("SOON").await,
    ]
    .into();
    let last_sequence = before
        .iter()
        .map(|b| b.last_sequence)
        .max()
        .expect("breakers");
    server.stop().await;

    let server = start(dir.path()).await;
    for breaker in &before {
        assert_eq!(
            &server.breaker(&breaker.account_id).await,
            breaker,
            "{} after a restart",
            breaker.account_id
        );
    }
    assert!(
        !server.check("HALTED").await.allowed,
        "tripped stays tripped"
    );
    let failing = server.check("FAILING").await;
    assert!(!failing.allowed, "OPEN still denies");
    assert!(
        failing.retry_after.is_some_and(|d| d.seconds > 3500),
        "and keeps its remaining time"
    );
    // The probe lease survived: reporting it closes nothing yet but counts.
    let report = server
        .report("SOON", &probe.permit_id, Outcome::Success)
        .await;
    assert_eq!(report.disposition, OutcomeDisposition::Recorded as i32);

    // The sequence continues with no gap, and resuming reaches back across the restart.
    let mut replay = server.watch(&[], Some(0)).await;
    for expected in 1..=last_sequence {
        assert_eq!(next_event(&mut replay).await.sequence, expected);
    }
    server.reset("HALTED", "reviewed").await;
    assert_eq!(next_event(&mut replay).await.sequence, last_sequence + 1);

    let audit = server
        .admin()
        .list_audit_records(ListAuditRecordsRequest {
            account_id: "HALTED".into(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .records;
    let actions: Vec<_> = audit
        .iter()
        .map(|r| (r.action, r.reason.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            (AuditAction::Reset as i32, "reviewed"),
            (AuditAction::Trip as i32, "runaway algo")
        ],
        "newest first, across the restart"
    );
    let trip = &audit[1];
    assert_eq!(trip.operator, "alice");
    assert_eq!(
        (state(trip.state_before), state(trip.state_after)),
        (BreakerState::Closed, BreakerState::Open)
    );
    assert!(trip.peer.starts_with("127.0.0.1:"), "{}", trip.peer);
    server.stop().await;
}

#[tokio::test]
async fn permits_issued_before_a_restart_stay_distinct_from_those_issued_after() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path()).await;
    server.fail("ACC", 1).await;
    // A check in CLOSED writes nothing: this permit exists only in the caller's hands.
    let before = server.check("ACC").await;
    server.stop().await;

    let server = start(dir.path()).await;
    let after = server.check("ACC").await;
    assert_ne!(before.permit_id, after.permit_id);
    for permit in [&before.permit_id, &after.permit_id] {
        let report = server.report("ACC", permit, Outcome::Failure).await;
        assert_eq!(
            report.disposition,
            OutcomeDisposition::Recorded as i32,
            "{permit}"
        );
    }
    assert_eq!(server.breaker("ACC").await.failure_count, 3);
    server.stop().await;
}

#[tokio::test]
async fn the_audit_trail_filters_by_account_and_time_and_pages_newest_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path()).await;
    for i in 0..5 {
        server.trip(&format!("A{i}"), &format!("trip {i}")).await;
    }
    let middle = server
        .admin()
        .list_audit_records(ListAuditRecordsRequest {
            account_id: "A2".into(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner()
        .records
        .remove(0);
    server.reset("A0", "reset 0").await;

    let mut admin = server.admin();
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_audit_records(ListAuditRecordsRequest {
                page_size: 2,
                page_token,
                ..Default::default()
            })
            .await
            .expect("audit page")
            .into_inner();
        assert!(page.records.len() <= 2);
        seen.extend(page.records.into_iter().map(|r| r.reason));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(
        seen,
        ["reset 0", "trip 4", "trip 3", "trip 2", "trip 1", "trip 0"]
    );

    let since_middle = admin
        .list_audit_records(ListAuditRecordsRequest {
            since: middle.time,
            ..Default::default()
        })
        .await
        .expect("audit since")
        .into_inner();
    let reasons: Vec<_> = since_middle.records.into_iter().map(|r| r.reason).collect();
    assert_eq!(reasons, ["reset 0", "trip 4", "trip 3", "trip 2"]);
    let until_middle = admin
        .list_audit_records(ListAuditRecordsRequest {
            until: middle.time,
            ..Default::default()
        })
        .await
        .expect("audit until")
        .into_inner();
    let reasons: Vec<_> = until_middle.records.into_iter().map(|r| r.reason).collect();
    assert_eq!(reasons, ["trip 1", "trip 0"]);

    let bad = admin
        .list_audit_records(ListAuditRecordsRequest {
            page_token: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(bad.code(), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn an_open_breaker_recovers_only_after_its_remaining_time_even_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start(dir.path()).await;
    server.fail("SOON", 1).await;
    let opened = server.breaker("SOON").await;
    let recovery_at = opened.recovery_at.expect("recovery scheduled");
    server.stop().await;

    let server = start(dir.path()).await;
    let mut events = server.watch(&["SOON"], Some(opened.last_sequence)).await;
    let recovered = next_event(&mut events).await;
    assert_eq!(recovered.cause, TransitionCause::OpenTimeoutElapsed as i32);
    let at = recovered.time.expect("time");
    assert!(
        (at.seconds, at.nanos) >= (recovery_at.seconds, recovery_at.nanos),
        "recovered at {at:?}, before {recovery_at:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_store_that_is_not_riskgates_or_is_damaged_stops_start_up_untouched() {
    // Not a database at all.
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("riskgate.db");
    std::fs::write(&db, b"quarterly PnL, not a database").expect("write");
    let message = refused(dir.path());
    assert!(message.contains("not a riskgate store"), "{message}");
    assert!(message.contains("never overwrites"), "{message}");
    assert!(
        std::fs::read(&db).expect("read") == b"quarterly PnL, not a database",
        "the file was changed"
    );
    assert!(!dir.path().join("riskgate.db-wal").exists());

    // Another application's SQLite database.
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("riskgate.db");
    {
        let other = rusqlite::Connection::open(&db).expect("sqlite");
        other
            .execute_batch(
                "CREATE TABLE orders (id INTEGER PRIMARY KEY); INSERT INTO orders VALUES (7);",
            )
            .expect("create");
    }
    let before = std::fs::read(&db).expect("read");
    let message = refused(dir.path());
    assert!(message.contains("another application"), "{message}");
    assert!(
        std::fs::read(&db).expect("read") == before,
        "the foreign database was changed"
    );

    // A riskgate store with damaged pages.
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_sqlite(dir.path()).await;
    for i in 0..200 {
        server.trip(&format!("ACC-{i:03}"), "filling pages").await;
    }
    server.stop().await;
    let db = dir.path().join("riskgate.db");
    assert!(
        !dir.path().join("riskgate.db-wal").exists(),
        "a clean close checkpoints the WAL"
    );
    let mut bytes = std::fs::read(&db).expect("read");
    assert!(bytes.len() > 3 * 4096, "the store has several pages");
    for byte in &mut bytes[4096..3 * 4096] {
        *byte = 0xA5;
    }
    std::fs::write(&db, &bytes).expect("damage");
    let message = refused(dir.path());
    assert!(
        message.contains("integrity check")
            || message.contains("damaged")
            || message.contains("malformed"),
        "{message}"
    );
    assert!(message.contains("backup"), "{message}");
    assert!(
        std::fs::read(&db).expect("read") == bytes,
        "the damaged store was changed"
    );

    // A file where the directory should be.
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let message = refused(file.path());
    assert!(message.contains("is a file, not a directory"), "{message}");
}

#[tokio::test]
async fn one_store_serves_one_server_at_a_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = open(dir.path()).expect("first");
    let message = refused(dir.path());
    assert!(
        message.contains("another riskgate server is using it"),
        "{message}"
    );
    drop(first);
    open(dir.path()).expect("free again once the first is closed");
}

#[tokio::test]
async fn closing_a_store_writes_what_was_submitted_refuses_more_and_frees_the_directory() {
    use riskgate::core::{Breaker, Outcome, Settings, Timestamp};
    use riskgate::store::{Batch, StoredBreaker};
    let dir = tempfile::tempdir().expect("temp dir");
    let batch = |account: &str| {
        let mut breaker = Breaker::new();
        breaker.record(
            &Settings::default(),
            None,
            Outcome::Failure,
            Timestamp::from_unix_nanos(1_000_000_000),
        );
        Batch {
            breaker: Some(StoredBreaker {
                account_id: account.into(),
                record: breaker.to_record(),
                last_sequence: 0,
                mode: None,
                settings: None,
            }),
            ..Batch::default()
        }
    };
    let first = open(dir.path()).expect("open");
    // Submitted, not yet awaited: closing writes it before it returns.
    let pending = first.submit(batch("BEFORE"));
    first.close().expect("everything written");
    pending
        .durable()
        .await
        .expect("what was submitted before closing is written");
    let refused = first.submit(batch("AFTER")).durable().await;
    assert!(
        matches!(&refused, Err(StoreError::Unavailable(message)) if message.contains("closed")),
        "{refused:?}"
    );
    // The first is still held, yet the directory is free and holds what it wrote.
    let second = open(dir.path()).expect("a closed store leaves its directory to the next");
    let loaded: Vec<String> = second
        .load()
        .expect("load")
        .breakers
        .into_iter()
        .map(|b| b.account_id)
        .collect();
    assert_eq!(loaded, ["BEFORE"]);
    drop(first);
}

/// A small tmpfs of the test's own, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Checkpoints the store in `data` and truncates its WAL to nothing, giving its space back.
fn truncate_wal(data: &Path) {
    let conn = rusqlite::Connection::open(data.join("riskgate.db")).expect("sqlite");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
        .expect("checkpoint");
    assert_eq!(busy, 0, "the checkpoint ran to the end");
    let wal = std::fs::metadata(data.join("riskgate.db-wal")).expect("the WAL");
    assert_eq!(wal.len(), 0);
}

/// Writes zeros into `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if file.write_all(&chunk).is_err() || file.sync_all().is_err() {
            return;
        }
    }
}

async fn health(server: &TestServer) -> i32 {
    health_of(server, "").await
}

async fn health_of(server: &TestServer, service: &str) -> i32 {
    HealthClient::new(server.channel())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health")
        .into_inner()
        .status
}

/// A server on a 16 MiB tmpfs of its own, with one failure of ACC-1 written: the directory
/// holding the mount, the mount, the store's path and the server. `None` (the test skips,
/// saying so) where mounting is not allowed; CI runs as root, so there it always runs.
async fn on_a_small_disk() -> Option<(tempfile::TempDir, Tmpfs, PathBuf, TestServer)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let Some(tmpfs) = Tmpfs::mount(&dir.path().join("disk"), "16m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return None;
    };
    let data = tmpfs.0.join("data");
    let server = start_sqlite(&data).await;
    server.fail("ACC-1", 1).await;
    Some((dir, tmpfs, data, server))
}

#[tokio::test]
async fn a_full_disk_fails_closed_and_recovers_by_itself() {
    let Some((_dir, tmpfs, data, server)) = on_a_small_disk().await else {
        return;
    };
    assert_eq!(health(&server).await, ServingStatus::Serving as i32);

    // The WAL keeps the space it has grown to, and commits reuse it: hand it back before the
    // disk fills, so that the next commit needs space the disk no longer has.
    truncate_wal(&data);
    let filler = tmpfs.0.join("filler");
    fill(&filler);
    // The first write that needs space fails: the caller learns the store is unavailable.
    let mut gate = server.gate();
    let mut attempts = 0;
    let failed = loop {
        attempts += 1;
        assert!(attempts <= 1_000, "the full disk never failed a write");
        let result = gate
            .report_outcome(ReportOutcomeRequest {
                account_id: format!("NEW-{attempts}"),
                permit_id: String::new(),
                outcome: Outcome::Failure as i32,
                ..Default::default()
            })
            .await;
        if let Err(status) = result {
            break status;
        }
    };
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    assert!(
        failed.message().contains("store unavailable"),
        "{}",
        failed.message()
    );

    // Fail closed: checks are denied, changes refused, health says NOT_SERVING.
    let denied = server.check("ACC-1").await;
    assert!(!denied.allowed);
    assert_eq!(denied.denial, Denial::StoreUnavailable as i32);
    assert!(
        denied.reason.contains("store unavailable"),
        "{}",
        denied.reason
    );
    let before = server.breaker("ACC-1").await;
    let refused = server
        .gate()
        .report_outcome(ReportOutcomeRequest {
            account_id: "ACC-1".into(),
            permit_id: String::new(),
            outcome: Outcome::Failure as i32,
            ..Default::default()
        })
        .await
        .expect_err("changes are refused");
    assert_eq!(refused.code(), Code::Unavailable);
    let refused = server
        .admin()
        .trip_breaker(TripBreakerRequest {
            account_id: "ACC-1".into(),
            reason: "r".into(),
            operator: "o".into(),
            ..Default::default()
        })
        .await
        .expect_err("operator changes are refused");
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(
        server.breaker("ACC-1").await,
        before,
        "refused changes changed nothing"
    );
    assert_eq!(health(&server).await, ServingStatus::NotServing as i32);
    // Alive all the same: a restart would not give the disk space back.
    assert_eq!(
        health_of(&server, "liveness").await,
        ServingStatus::Serving as i32
    );

    // Space again: the store retries by itself and the service resumes.
    std::fs::remove_file(&filler).expect("free the disk");
    wait_until_serving(server.channel()).await;
    assert!(server.check("ACC-1").await.allowed);
    // The write that was answered UNAVAILABLE was kept and retried, not dropped.
    let kept = server.breaker(&format!("NEW-{attempts}")).await;
    assert_eq!(kept.failure_count, 1);
    server.stop().await;

    let server = start_sqlite(&data).await;
    assert_eq!(
        server
            .breaker(&format!("NEW-{attempts}"))
            .await
            .failure_count,
        1
    );
    assert_eq!(server.breaker("ACC-1").await.failure_count, 1);
    server.stop().await;
    drop(tmpfs);
}

#[tokio::test]
async fn policy_state_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = "[breaker]\nfailure_threshold = 2\n[breaker.failure_kinds]\nmargin_exhausted = \"trip\"\n[groups.desk]\naccounts = [\"desk:*\"]\n";
    let server = start_with(config(toml), dir.path()).await;
    let mut admin = server.admin();
    admin
        .halt_group(HaltGroupRequest {
            group: "desk".into(),
            reason: "review".into(),
            operator: "bob".into(),
        })
        .await
        .expect("HaltGroup");
    admin
        .set_mode(SetModeRequest {
            account_id: "SHADOWED".into(),
            mode: Mode::Shadow as i32,
            reason: "trial".into(),
            operator: "bob".into(),
        })
        .await
        .expect("SetMode");
    admin
        .trip_breaker(TripBreakerRequest {
            account_id: "TIMED".into(),
            reason: "news".into(),
            operator: "bob".into(),
            until: Some((std::time::SystemTime::now() + Duration::from_secs(3600)).into()),
        })
        .await
        .expect("TripBreaker");
    server
        .gate()
        .report_outcome(ReportOutcomeRequest {
            account_id: "MARGIN".into(),
            outcome: Outcome::Failure as i32,
            failure_kind: FailureKind::MarginExhausted as i32,
            order_id: "o-77".into(),
            detail: "initial margin".into(),
            ..Default::default()
        })
        .await
        .expect("report");
    let before: Vec<Breaker> = [
        server.breaker("SHADOWED").await,
        server.breaker("TIMED").await,
        server.breaker("MARGIN").await,
    ]
    .into();
    server.stop().await;

    let server = start_with(config(toml), dir.path()).await;
    for breaker in &before {
        assert_eq!(&server.breaker(&breaker.account_id).await, breaker);
    }
    let margin = &before[2];
    assert_eq!(margin.opened_by, TransitionCause::FailureKindTrip as i32);
    assert_eq!(margin.failures[0].order_id, "o-77");
    assert!(before[1].recovery_at.is_some() && before[1].tripped_by_operator);
    assert_eq!(before[0].mode, Mode::Shadow as i32);
    let halted = server.check("desk:1").await;
    assert_eq!(halted.denial, Denial::GroupHalted as i32);
    let records = server
        .admin()
        .list_audit_records(ListAuditRecordsRequest::default())
        .await
        .expect("audit")
        .into_inner()
        .records;
    assert_eq!(records.len(), 3);
    assert_eq!(records[2].action, AuditAction::HaltGroup as i32);
    assert_eq!(records[2].group, "desk");
    server.stop().await;
}

#[test]
fn a_store_of_the_first_schema_is_migrated_in_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let conn = rusqlite::Connection::open(dir.path().join("riskgate.db")).expect("sqlite");
        conn.execute_batch(
            "PRAGMA application_id = 1380406321;
             CREATE TABLE breakers (account_id TEXT PRIMARY KEY NOT NULL, record BLOB NOT NULL, last_sequence INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE events (sequence INTEGER PRIMARY KEY, at INTEGER NOT NULL, account_id TEXT NOT NULL, event BLOB NOT NULL);
             CREATE INDEX events_by_time ON events (at);
             CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, account_id TEXT NOT NULL, action TEXT NOT NULL, operator TEXT NOT NULL, reason TEXT NOT NULL, state_before TEXT NOT NULL, state_after TEXT NOT NULL, peer TEXT NOT NULL);
             CREATE INDEX audit_by_account ON audit (account_id, id);
             CREATE TABLE counters (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
             INSERT INTO audit (at, account_id, action, operator, reason, state_before, state_after, peer)
               VALUES (1, 'ACC', 'trip', 'alice', 'old', 'CLOSED', 'OPEN', '');
             PRAGMA user_version = 1;",
        )
        .expect("a version-1 store");
    }
    let store = open(dir.path()).expect("a version-1 store opens and migrates");
    store.load().expect("loads");
    let records = store
        .audit_records(&riskgate::store::AuditQuery {
            limit: 10,
            ..Default::default()
        })
        .expect("audit");
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].group.as_str(), records[0].detail.as_str()),
        ("", "")
    );
    let conn = rusqlite::Connection::open(dir.path().join("riskgate.db")).expect("sqlite");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .expect("version");
    assert_eq!(version, 5);
    let slots: i64 = conn
        .query_row("SELECT count(*) FROM breaker_journal", [], |row| row.get(0))
        .expect("the breaker journal of schema 5");
    assert_eq!(slots, 1024);
    let format: i64 = conn
        .query_row(
            "SELECT value FROM counters WHERE name = 'breaker_record_format'",
            [],
            |row| row.get(0),
        )
        .expect("schema 4 names the breaker record format");
    assert_eq!(format, 2);
}

fn has_table(dir: &Path, name: &str) -> bool {
    let conn = rusqlite::Connection::open(dir.join("riskgate.db")).expect("sqlite");
    conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE name = ?1",
        [name],
        |row| row.get::<_, i64>(0),
    )
    .expect("schema")
        == 1
}

#[tokio::test]
async fn changes_left_in_the_breaker_log_of_schema_4_are_folded_by_the_migration_latest_first() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = start_sqlite(dir.path()).await;
    server.fail("WOBBLY", 2).await;
    server.trip("HALTED", "runaway algo").await;
    let wobbly = server.breaker("WOBBLY").await;
    let halted = server.breaker("HALTED").await;
    server.stop().await;

    // What a crash of a release of schema 4 between folds leaves: changes in its log, newest
    // last. WOBBLY's latest change is HALTED's record; NEW was first WOBBLY-like, then
    // HALTED-like.
    {
        let conn = rusqlite::Connection::open(dir.path().join("riskgate.db")).expect("sqlite");
        conn.execute_batch(
            "DROP TABLE breaker_journal;
             DELETE FROM counters WHERE name = 'journal_folded';
             CREATE TABLE breaker_log (
                 seq           INTEGER PRIMARY KEY,
                 account_id    TEXT NOT NULL,
                 record        BLOB NOT NULL,
                 last_sequence INTEGER NOT NULL
             );
             INSERT INTO breaker_log (account_id, record, last_sequence)
               SELECT 'WOBBLY', record, last_sequence FROM breakers WHERE account_id = 'HALTED';
             INSERT INTO breaker_log (account_id, record, last_sequence)
               SELECT 'NEW', record, last_sequence FROM breakers WHERE account_id = 'WOBBLY';
             INSERT INTO breaker_log (account_id, record, last_sequence)
               SELECT 'NEW', record, last_sequence FROM breakers WHERE account_id = 'HALTED';
             PRAGMA user_version = 4;",
        )
        .expect("a store of schema 4 with changes in its log");
    }

    let server = start_sqlite(dir.path()).await;
    let as_halted = |account: &str| Breaker {
        account_id: account.into(),
        ..halted.clone()
    };
    assert_eq!(server.breaker("WOBBLY").await, as_halted("WOBBLY"));
    assert_eq!(server.breaker("NEW").await, as_halted("NEW"));
    assert_eq!(server.breaker("HALTED").await, halted);
    assert_ne!(wobbly.state, halted.state);
    assert!(!has_table(dir.path(), "breaker_log"));
    assert!(has_table(dir.path(), "breaker_journal"));

    // The migrated store keeps what is written to it across a restart.
    server.fail("NEW2", 1).await;
    let new2 = server.breaker("NEW2").await;
    server.stop().await;
    let server = start_sqlite(dir.path()).await;
    assert_eq!(server.breaker("NEW2").await, new2);
    assert_eq!(server.breaker("WOBBLY").await, as_halted("WOBBLY"));
    server.stop().await;
}

/// The scheduling policy (field 41 of `/proc/self/task/TID/stat`) of each of this process's
/// threads named `name`.
#[cfg(target_os = "linux")]
fn policies_of_threads_named(name: &str) -> Vec<u32> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("tasks") {
        let Ok(task) = task else { continue };
        // A thread that ends meanwhile is skipped.
        let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        if comm.trim_end() != name {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // Fields after the command, which is in parentheses and may hold spaces.
        let after = &stat[stat.rfind(')').expect("stat has a command") + 2..];
        let policy = after
            .split(' ')
            .nth(41 - 3)
            .and_then(|field| field.parse().ok())
            .expect("policy field");
        policies.push(policy);
    }
    policies
}

#[cfg(target_os = "linux")]
#[test]
fn the_writer_waits_for_work_as_batch_work_so_its_wake_ups_do_not_preempt_the_callers() {
    const SCHED_BATCH: u32 = 3;
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir.path().join("data")).expect("open");
    // Writers of other tests in this process work at the default policy while they commit: wait
    // for a moment when every writer waits.
    let mut policies = policies_of_threads_named("riskgate-store");
    for _ in 0..500 {
        if policies.iter().all(|&policy| policy == SCHED_BATCH) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        policies = policies_of_threads_named("riskgate-store");
    }
    assert!(!policies.is_empty(), "the writer thread is running");
    assert!(
        policies.iter().all(|&policy| policy == SCHED_BATCH),
        "{policies:?}"
    );
    store.close().expect("everything written");
}

/// A halt answered "in force but not yet on disk" that still cannot be written when the server
/// stops is not dropped silently: the stop fails, naming the halts that are not in the store.
#[tokio::test]
async fn a_halt_not_written_by_shutdown_makes_the_stop_fail_loudly() {
    let Some((_dir, tmpfs, data, server)) = on_a_small_disk().await else {
        return;
    };
    truncate_wal(&data);
    fill(&tmpfs.0.join("filler"));
    let halted = server
        .admin()
        .halt_all(HaltAllRequest {
            reason: "incident".into(),
            operator: "alice".into(),
        })
        .await
        .expect_err("the halt cannot be written");
    assert_eq!(halted.code(), Code::Unavailable);
    assert!(
        halted.message().contains("in force but not yet on disk"),
        "{}",
        halted.message()
    );
    let stopped = server.stop_result().await;
    let error = stopped.expect_err("the stop says what it could not write");
    assert!(
        error.contains("halts or resumes") && error.contains("ListHalts"),
        "{error}"
    );
    drop(tmpfs);
}

#[tokio::test]
async fn an_evicted_idle_breaker_is_gone_from_the_store_and_stays_gone_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = "[server]\nmax_accounts = 3\n";
    let server = start_with(config(toml), dir.path()).await;
    server.trip("KEPT", "held").await;
    for account in ["A", "B", "C"] {
        assert!(server.check(account).await.allowed);
    }
    // Full: an idle breaker (A or B: used within the same second) made room for C; KEPT is
    // never idle.
    assert_eq!(server.total_breakers().await, 3);
    let mut monitor = server.monitor();
    let mut gone = Vec::new();
    for account in ["A", "B"] {
        if let Err(status) = monitor
            .get_breaker(GetBreakerRequest {
                account_id: account.into(),
            })
            .await
        {
            assert_eq!(status.code(), tonic::Code::NotFound);
            gone.push(account);
        }
    }
    assert_eq!(gone.len(), 1, "one of A and B was evicted");
    let evicted = gone[0];
    let kept = if evicted == "A" { "B" } else { "A" };
    server.stop().await;

    let server = start_with(config(toml), dir.path()).await;
    assert_eq!(server.total_breakers().await, 3);
    let mut monitor = server.monitor();
    for account in ["KEPT", kept, "C"] {
        monitor
            .get_breaker(GetBreakerRequest {
                account_id: account.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{account} kept across the restart: {e}"));
    }
    assert!(monitor
        .get_breaker(GetBreakerRequest {
            account_id: evicted.into(),
        })
        .await
        .is_err());
    assert_eq!(
        server.breaker("KEPT").await.state,
        BreakerState::Open as i32
    );
    server.stop().await;
}
