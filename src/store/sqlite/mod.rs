//! The embedded durable store: SQLite (bundled, nothing to install), in WAL mode with
//! `synchronous = FULL`, so a transaction is on disk (fsync'd) when its commit returns.
//!
//! Layout of the data directory: `riskgate.db` (plus SQLite's `-wal` and `-shm` files) and
//! `riskgate.lock`, held exclusively while a server uses the store, so two servers never write
//! one store. The store is opened only if it is riskgate's and passes SQLite's integrity check;
//! anything else stops start-up and is left untouched.

mod folding;
mod journal;
pub(crate) mod rows;
mod scheduling;
mod schema;
mod writer;

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::oneshot;

use super::{
    AuditQuery, AuditRetention, Batch, Commit, Loading, Recovered, Store, StoreError, StoreSignals,
    StoredBreaker, LOAD_CHUNK,
};
use crate::core::Timestamp;
use crate::history::{AuditAction, AuditRecord};
use writer::{Reply, Retention};

const DATABASE: &str = "riskgate.db";
const LOCK: &str = "riskgate.lock";
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

const ADVICE_FOREIGN: &str = "Point [store] path at a riskgate data directory (or a new one); riskgate never overwrites a file it did not create";
const ADVICE_DAMAGED: &str = "Restore the data directory from a backup (see docs in the README), or move it away to start empty; riskgate will not start on a damaged store";
const ADVICE_IO: &str =
    "Check that the directory exists, is writable by riskgate and that the disk has space";
/// Read-only connections. Each is used by one thread at a time (a `Connection` is not `Sync`),
/// so SQLite's own per-call mutex is left out: it costs a lock and an unlock on every step and
/// column read of a start-up.
const READ_ONLY: OpenFlags =
    OpenFlags::SQLITE_OPEN_READ_ONLY.union(OpenFlags::SQLITE_OPEN_NO_MUTEX);

/// How the store is opened (from configuration).
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    pub path: PathBuf,
    /// Events kept for watchers resuming after a restart.
    pub retained_events: usize,
    /// Events older than this are pruned.
    pub retained_age: Duration,
    /// How long operator actions are kept in the audit trail.
    pub audit: AuditRetention,
}

/// One half of the breakers' key range, split at a middle key.
#[derive(Clone, Copy)]
enum Half {
    Below,
    From,
}

/// A batch for the writer, the caller to answer, and the batch's ticket.
type Job = (Batch, Reply, u64);

pub struct SqliteStore {
    path: PathBuf,
    /// `None` once closing, which lets the writer finish and stop.
    /// The writer's queue (`None` once closed), and the last ticket given out: both under one
    /// lock, so that tickets reach the writer in their order.
    jobs: Mutex<(Option<Sender<Job>>, u64)>,
    writer: Mutex<Option<JoinHandle<writer::Unwritten>>>,
    /// Reads (start-up load, audit queries) run beside the writer: WAL readers do not block it.
    /// `None` once closing.
    reader: Mutex<Option<Connection>>,
    signals: Arc<StoreSignals>,
    retained_events: usize,
    /// Held until the store closes: the exclusive lock on `riskgate.lock`.
    lock_file: Mutex<Option<File>>,
}

impl SqliteStore {
    /// Opens (creating on first start) the store in `options.path`.
    ///
    /// Opened inside a tokio runtime, the store answers its callers from a task on that runtime
    /// (see `writer::answer`), which must therefore run as long as the store is used; opened
    /// outside one, its writer thread answers them itself.
    pub fn open(options: SqliteOptions) -> Result<Self, StoreError> {
        let started = std::time::Instant::now();
        let dir = options.path.clone();
        let shown = dir.display().to_string();
        let unusable = |detail: String, advice: &'static str| StoreError::Unusable {
            path: shown.clone(),
            detail,
            advice,
        };
        if dir.exists() && !dir.is_dir() {
            return Err(unusable(
                "it is a file, not a directory".into(),
                ADVICE_FOREIGN,
            ));
        }
        fs::create_dir_all(&dir)
            .map_err(|e| unusable(format!("cannot create it: {e}"), ADVICE_IO))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
            .map_err(|e| unusable(format!("cannot open {LOCK}: {e}"), ADVICE_IO))?;
        lock.try_lock().map_err(|_| {
            unusable(
                "another riskgate server is using it".into(),
                "Stop the other server, or give this one its own [store] path",
            )
        })?;

        let db = dir.join(DATABASE);
        check_header(&db).map_err(|detail| unusable(detail, ADVICE_FOREIGN))?;
        let mut conn = Connection::open(&db)
            .map_err(|e| unusable(format!("cannot open {DATABASE}: {e}"), ADVICE_IO))?;
        // Only reads until the file is known to be a healthy riskgate store: even switching the
        // journal mode would write into someone else's database.
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|e| unusable(format!("{DATABASE}: {e}"), ADVICE_IO))?;
        integrity_check(&conn).map_err(|detail| unusable(detail, ADVICE_DAMAGED))?;
        let found = schema::inspect(&conn).map_err(|e| unusable(e.to_string(), ADVICE_DAMAGED))?;
        if !matches!(found, schema::Found::Foreign) {
            configure(&conn).map_err(|e| unusable(format!("{DATABASE}: {e}"), ADVICE_IO))?;
        }
        match found {
            schema::Found::Foreign => {
                return Err(unusable(
                    format!("{DATABASE} is a SQLite database of another application"),
                    ADVICE_FOREIGN,
                ))
            }
            schema::Found::Riskgate(version) if version > schema::CURRENT_VERSION => {
                return Err(unusable(
                    format!("it was written by a newer riskgate (schema {version}, this one reads up to {})", schema::CURRENT_VERSION),
                    "Run the newer riskgate, or restore a backup taken before the upgrade",
                ))
            }
            schema::Found::Riskgate(version) => {
                schema::migrate(&mut conn, version).map_err(|e| unusable(format!("migrating the schema failed: {e}"), ADVICE_IO))?
            }
            schema::Found::Empty => {
                schema::migrate(&mut conn, 0).map_err(|e| unusable(format!("creating the schema failed: {e}"), ADVICE_IO))?
            }
        }
        sync_directories(&dir)
            .map_err(|e| unusable(format!("cannot sync the store's directory: {e}"), ADVICE_IO))?;
        // Changes logged before the last stop (a crash leaves them there) join `breakers`, which
        // is then all start-up has to read.
        let (folded, journal) = folding::fold(&mut conn).map_err(|e| {
            let advice = match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DatabaseCorrupt) => ADVICE_DAMAGED,
                _ => ADVICE_IO,
            };
            unusable(format!("folding the breaker journal failed: {e}"), advice)
        })?;
        let reader = Connection::open_with_flags(&db, READ_ONLY).map_err(|e| {
            unusable(
                format!("cannot open {DATABASE} for reading: {e}"),
                ADVICE_IO,
            )
        })?;
        let last_sequence =
            read_last_sequence(&reader).map_err(|e| unusable(e.to_string(), ADVICE_DAMAGED))?;
        let signals = Arc::new(StoreSignals::new(last_sequence));

        let (jobs, receiver) = mpsc::channel();
        let retention = Retention {
            events: options.retained_events,
            max_age: options.retained_age,
            audit: options.audit,
        };
        let (started_tx, started_rx) = mpsc::sync_channel(1);
        // The runtime the store is opened from, if any, is the one its callers wait on.
        let runtime = tokio::runtime::Handle::try_current().ok();
        let writer = std::thread::Builder::new()
            .name("riskgate-store".into())
            .spawn({
                let signals = signals.clone();
                let shown = shown.clone();
                move || {
                    writer::run(
                        conn, journal, receiver, signals, retention, shown, runtime, started_tx,
                    )
                }
            })
            .map_err(|e| unusable(format!("cannot start the writer thread: {e}"), ADVICE_IO))?;
        // The store is open once its writer runs, named and scheduled as it will stay.
        started_rx
            .recv()
            .map_err(|_| unusable("the writer thread stopped as it started".into(), ADVICE_IO))?;
        tracing::info!(
            path = %shown,
            last_sequence,
            folded,
            took_ms = started.elapsed().as_millis() as u64,
            "store opened and checked"
        );
        Ok(SqliteStore {
            path: dir,
            jobs: Mutex::new((Some(jobs), 0)),
            writer: Mutex::new(Some(writer)),
            reader: Mutex::new(Some(reader)),
            signals,
            retained_events: options.retained_events,
            lock_file: Mutex::new(Some(lock)),
        })
    }

    /// Reads the breakers (those of one half of the key range, if given) and hands them to
    /// `sink` in chunks.
    fn read_breakers(
        &self,
        conn: &Connection,
        half: Option<(Half, &str)>,
        sink: &(dyn Fn(Loading) + Sync),
    ) -> Result<(), StoreError> {
        let fail = |e: rusqlite::Error| self.unusable(format!("reading it failed: {e}"));
        let mut rows = conn
            .prepare(match half {
                None => "SELECT account_id, record, last_sequence FROM breakers",
                Some((Half::Below, _)) => {
                    "SELECT account_id, record, last_sequence FROM breakers WHERE account_id < ?1"
                }
                Some((Half::From, _)) => {
                    "SELECT account_id, record, last_sequence FROM breakers WHERE account_id >= ?1"
                }
            })
            .map_err(fail)?;
        let mut cursor = match half {
            None => rows.query([]),
            Some((_, middle)) => rows.query([middle]),
        }
        .map_err(fail)?;
        let mut breakers = Vec::with_capacity(LOAD_CHUNK);
        while let Some(row) = cursor.next().map_err(fail)? {
            // Owned at its exact length: it becomes the account's key as it is.
            let account_id = row
                .get_ref(0)
                .map_err(fail)?
                .as_str()
                .map_err(|e| self.unusable(format!("an account id is not text: {e}")))?
                .to_owned();
            let bytes = row.get_ref(1).map_err(fail)?.as_blob().map_err(|e| {
                self.unusable(format!("the breaker of {account_id} is not a blob: {e}"))
            })?;
            let last_sequence: i64 = row.get(2).map_err(fail)?;
            let decoded = rows::decode_breaker(bytes).map_err(|e| {
                self.unusable(format!("the breaker of {account_id} does not decode: {e}"))
            })?;
            breakers.push(StoredBreaker {
                account_id,
                record: decoded.record,
                last_sequence: u64::try_from(last_sequence).unwrap_or(0),
                mode: decoded.mode,
                settings: decoded.settings.map(Arc::new),
            });
            if breakers.len() == LOAD_CHUNK {
                sink(Loading::Breakers(std::mem::replace(
                    &mut breakers,
                    Vec::with_capacity(LOAD_CHUNK),
                )));
            }
        }
        if !breakers.is_empty() {
            sink(Loading::Breakers(breakers));
        }
        Ok(())
    }

    fn unusable(&self, detail: String) -> StoreError {
        StoreError::Unusable {
            path: self.path.display().to_string(),
            detail,
            advice: ADVICE_DAMAGED,
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // A store closed before (the server's stop) returns at once; otherwise the writer has
        // logged what it could not write.
        let _ = self.close();
    }
}

impl Store for SqliteStore {
    fn load_streaming(&self, sink: &(dyn Fn(Loading) + Sync)) -> Result<Recovered, StoreError> {
        let guard = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        let reader = guard
            .as_ref()
            .ok_or_else(|| self.unusable("the store is closed".into()))?;
        let fail = |e: rusqlite::Error| self.unusable(format!("reading it failed: {e}"));
        let count: i64 = reader
            .query_row("SELECT count(*) FROM breakers", [], |row| row.get(0))
            .map_err(fail)?;
        sink(Loading::Expect(usize::try_from(count).unwrap_or(0)));
        // A large store is read in two halves of its key range at once, each on a connection
        // of its own (WAL readers run side by side).
        let middle: Option<String> = if count >= 2 * LOAD_CHUNK as i64 {
            reader
                .query_row(
                    "SELECT account_id FROM breakers ORDER BY account_id LIMIT 1 OFFSET ?1",
                    [count / 2],
                    |row| row.get(0),
                )
                .optional()
                .map_err(fail)?
        } else {
            None
        };
        match middle {
            None => self.read_breakers(reader, None, sink)?,
            Some(middle) => {
                let second = Connection::open_with_flags(self.path.join(DATABASE), READ_ONLY)
                    .map_err(fail)?;
                let middle = middle.as_str();
                std::thread::scope(|scope| {
                    let upper = std::thread::Builder::new()
                        .name("riskgate-load".into())
                        .spawn_scoped(scope, move || {
                            self.read_breakers(&second, Some((Half::From, middle)), sink)
                        });
                    self.read_breakers(reader, Some((Half::Below, middle)), sink)?;
                    match upper {
                        Ok(upper) => upper.join().unwrap_or_else(|_| {
                            Err(self.unusable("reading it stopped unexpectedly".into()))
                        }),
                        // No thread to spare: this one reads both halves.
                        Err(_) => self.read_breakers(reader, Some((Half::From, middle)), sink),
                    }
                })?;
            }
        }
        let mut halts = Vec::new();
        let mut rows = reader
            .prepare("SELECT scope, halt FROM halts")
            .map_err(fail)?;
        let mut cursor = rows.query([]).map_err(fail)?;
        while let Some(row) = cursor.next().map_err(fail)? {
            let scope: String = row.get(0).map_err(fail)?;
            let bytes: Vec<u8> = row.get(1).map_err(fail)?;
            let layer = rows::halt_scope(&scope)
                .ok_or_else(|| self.unusable(format!("the halt scope {scope:?} is unknown")))?;
            let halt = rows::decode_halt(&bytes)
                .map_err(|e| self.unusable(format!("the halt of {scope} does not decode: {e}")))?;
            halts.push((layer, halt));
        }
        let mut events = Vec::new();
        let mut rows = reader
            .prepare("SELECT sequence, event FROM events ORDER BY sequence DESC LIMIT ?1")
            .map_err(fail)?;
        let mut cursor = rows
            .query([i64::try_from(self.retained_events).unwrap_or(i64::MAX)])
            .map_err(fail)?;
        while let Some(row) = cursor.next().map_err(fail)? {
            let sequence: i64 = row.get(0).map_err(fail)?;
            let bytes: Vec<u8> = row.get(1).map_err(fail)?;
            let event = rows::decode_event(&bytes)
                .map_err(|e| self.unusable(format!("event {sequence} does not decode: {e}")))?;
            events.push(Arc::new(event));
        }
        events.reverse();
        let last_sequence = read_last_sequence(reader).map_err(fail)?;
        Ok(Recovered {
            breakers: Vec::new(),
            events,
            last_sequence,
            halts,
        })
    }

    fn submit(&self, batch: Batch) -> Commit {
        let (reply, receiver) = oneshot::channel();
        // Held only while the batch is queued; the write itself happens on the writer.
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let ticket = jobs.1 + 1;
        match &jobs.0 {
            Some(queue) if queue.send((batch, reply, ticket)).is_ok() => {
                jobs.1 = ticket;
                Commit::pending(ticket, receiver)
            }
            _ => Commit::refused(StoreError::Unavailable("the store is closed".into())),
        }
    }

    fn close(&self) -> Result<(), StoreError> {
        // The reader closes first, so that the writer's connection is the last one: closing it
        // checkpoints the WAL into the database file and removes it.
        self.reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Closing the queue lets the writer finish what is pending and stop.
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .take();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let unwritten = match writer.map(JoinHandle::join) {
            Some(Ok(unwritten)) => unwritten,
            Some(Err(_)) => writer::Unwritten {
                changes: 1,
                halts: 0,
                error: "the writer thread stopped unexpectedly".into(),
            },
            None => writer::Unwritten::default(),
        };
        // Another server may use the directory from now on.
        self.lock_file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if unwritten.changes == 0 {
            return Ok(());
        }
        Err(StoreError::Unavailable(format!(
            "{} changes, {} of them halts or resumes, could not be written before the store closed ({}); \
             they were answered UNAVAILABLE (\"not yet on disk\") and are not in the store: \
             check ListHalts after the restart and halt again where needed",
            unwritten.changes, unwritten.halts, unwritten.error
        )))
    }

    fn signals(&self) -> Arc<StoreSignals> {
        self.signals.clone()
    }

    fn audit_records(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let guard = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        let reader = guard
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("the store is closed".into()))?;
        let fail = |e: rusqlite::Error| {
            StoreError::Unavailable(format!("reading the audit trail failed: {e}"))
        };
        let nanos =
            |t: Option<Timestamp>| t.map(|t| i64::try_from(t.as_unix_nanos()).unwrap_or(i64::MAX));
        let mut statement = reader
            .prepare_cached(
                "SELECT id, at, account_id, action, operator, reason, state_before, state_after, peer,
                        group_name, detail
                 FROM audit
                 WHERE (?1 IS NULL OR account_id = ?1) AND (?2 IS NULL OR at >= ?2)
                   AND (?3 IS NULL OR at < ?3) AND (?4 IS NULL OR id < ?4)
                 ORDER BY id DESC LIMIT ?5",
            )
            .map_err(fail)?;
        let rows = statement
            .query_map(
                params![
                    query.account_id,
                    nanos(query.since),
                    nanos(query.until),
                    query
                        .before_id
                        .map(|id| i64::try_from(id).unwrap_or(i64::MAX)),
                    i64::try_from(query.limit).unwrap_or(i64::MAX),
                ],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, String>(5)?,
                        row.get::<_, String>(6)?,
                        row.get::<_, String>(7)?,
                        row.get::<_, String>(8)?,
                        row.get::<_, String>(9)?,
                        row.get::<_, String>(10)?,
                    ))
                },
            )
            .map_err(fail)?;
        let mut records = Vec::new();
        for row in rows {
            let (id, at, account_id, action, operator, reason, before, after, peer, group, detail) =
                row.map_err(fail)?;
            let damaged = || StoreError::Unavailable(format!("audit record {id} is damaged"));
            records.push(AuditRecord {
                id: u64::try_from(id).map_err(|_| damaged())?,
                at: Timestamp::from_unix_nanos(u64::try_from(at).unwrap_or(0)),
                account_id,
                group,
                action: AuditAction::parse(&action).ok_or_else(damaged)?,
                operator,
                reason,
                state_before: rows::state_from_name(&before).ok_or_else(damaged)?,
                state_after: rows::state_from_name(&after).ok_or_else(damaged)?,
                peer,
                detail,
            });
        }
        Ok(records)
    }
}

/// A file that exists with content must be a SQLite database before SQLite is let near it.
fn check_header(db: &Path) -> Result<(), String> {
    let mut file = match File::open(db) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {DATABASE}: {e}")),
    };
    let mut header = [0u8; 16];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(format!("cannot read {DATABASE}: {e}")),
        }
    }
    if read == 0 || &header == SQLITE_HEADER {
        Ok(())
    } else {
        Err(format!(
            "{DATABASE} is not a riskgate store (not a SQLite database)"
        ))
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode is {mode}, WAL is required"
        )));
    }
    conn.pragma_update(None, "synchronous", synchronous())?;
    Ok(())
}

/// `FULL`: a commit returns once its transaction is synced. Debug builds can be made to
/// acknowledge before the sync (`RISKGATE_FAILPOINT_ACK_BEFORE_SYNC=1`), a bug planted for the
/// power-cut test to catch; release builds ignore it.
fn synchronous() -> &'static str {
    if cfg!(debug_assertions)
        && std::env::var_os("RISKGATE_FAILPOINT_ACK_BEFORE_SYNC").is_some_and(|v| v == "1")
    {
        tracing::error!("RISKGATE_FAILPOINT_ACK_BEFORE_SYNC: commits are acknowledged before they are synced; a power cut loses them");
        return "OFF";
    }
    "FULL"
}

/// Syncs the directory `dir` and the one holding it, so that the store's directory and files
/// created in it are still there after a power cut (a file's own sync does not make its name
/// durable).
fn sync_directories(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => File::open(parent)?.sync_all(),
        _ => Ok(()),
    }
}

fn integrity_check(conn: &Connection) -> Result<(), String> {
    let mut statement = conn
        .prepare("PRAGMA quick_check")
        .map_err(|e| format!("{DATABASE} failed its integrity check: {e}"))?;
    let problems: Vec<String> = statement
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| format!("{DATABASE} failed its integrity check: {e}"))?;
    if problems.len() == 1 && problems[0] == "ok" {
        Ok(())
    } else {
        Err(format!(
            "{DATABASE} failed its integrity check: {}",
            problems.join("; ")
        ))
    }
}

fn read_last_sequence(conn: &Connection) -> rusqlite::Result<u64> {
    let value: Option<i64> = conn
        .query_row(
            "SELECT value FROM counters WHERE name = 'last_sequence'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(value.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
}
