//! The store's single writer: group commit on its own thread.
//!
//! Every batch submitted while the previous transaction was being written is written in the next
//! one, with one fsync for all of them, so throughput grows with concurrency instead of
//! collapsing to one fsync per call. Callers are answered only after their transaction is
//! durable. A failed transaction is answered with `Unavailable` but kept, and retried (with
//! whatever arrives meanwhile, in order) until it succeeds: a failure never drops a change.
//!
//! A breaker change goes to the breaker journal (see `journal`): a commit appends its changes to
//! the open slot of a ring (a row of at most a page), going on over slots whose changes are
//! already in `breakers`, so it rewrites one page instead of one per account it touches (each
//! page is a 4 KiB WAL frame to write and sync). The journal is folded into `breakers` (the
//! latest change of each account wins) once it holds [`FOLD_AT`] changes or half the ring is
//! unfolded, when the writer has been idle for [`FOLD_WHEN_IDLE`], when the store closes, and
//! when it opens (so start-up reads `breakers` alone). A commit never overwrites a slot that is
//! not folded: with the ring full it folds first, and fails if the fold does.
//!
//! The writer keeps, for each account in the journal, the latest record it wrote, so a fold
//! while running writes those records without reading the journal back. Its cost follows the
//! accounts that changed, not the changes: a log of 16k changes to 1,024 accounts took 16-23 ms
//! to fold by querying it (9-12 ms from memory), a stall every queued commit waits on.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::codec;
use super::journal::{self, Change};
use crate::core::{BreakerRecord, Mode};
use crate::store::{Batch, StoreError, StoreSignals};

/// Most batches in one transaction: bounds the latency of the first one in a burst.
const MAX_GROUP: usize = 4_096;
/// Pause between attempts while writes fail.
const RETRY_AFTER: Duration = Duration::from_millis(200);
/// How often retained events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// Attempts left for pending batches once the store is closing.
const ATTEMPTS_WHEN_CLOSING: u32 = 5;
/// Breaker changes that trigger a fold: bounds the journal's unfolded part, and so the time one
/// fold (or a start-up after a crash) spends on it.
const FOLD_AT: usize = 16_384;
/// SQLite's page cache for the writer's connection, in KiB: holds the journal's ring (1,024
/// slots of a page) with room for the pages of the other tables a commit touches, so that
/// writing a slot does not first read its page back from the file.
const CACHE_KIB: i64 = 16 * 1024;
/// A writer idle this long folds whatever the journal holds unfolded.
const FOLD_WHEN_IDLE: Duration = Duration::from_secs(1);
/// After a failed fold, the next waits this long: the journal keeps every change meanwhile, and a
/// fold that cannot succeed must not be retried (and logged) after every commit.
const FOLD_RETRY_AFTER: Duration = Duration::from_secs(10);

pub(super) type Reply = oneshot::Sender<Result<(), StoreError>>;

/// What the writer could not write before it stopped: nothing after a clean stop.
#[derive(Debug, Default)]
pub(super) struct Unwritten {
    pub changes: usize,
    /// Halts and resumes among them (answered "in force but not yet on disk").
    pub halts: usize,
    pub error: String,
}

pub(super) struct Retention {
    pub events: usize,
    pub max_age: Duration,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    mut conn: Connection,
    journal: Journal,
    jobs: Receiver<(Batch, Reply, u64)>,
    signals: Arc<StoreSignals>,
    retention: Retention,
    path: String,
    runtime: Option<Handle>,
    started: SyncSender<()>,
) -> Unwritten {
    // The writer starts out waiting for work.
    let mut policy = Scheduling::default();
    policy.wait_as_batch_work();
    let _ = started.send(());
    let mut pending: Vec<(Batch, Option<Reply>)> = Vec::new();
    // The ticket of the last batch in `pending`: every batch up to it is durable once
    // `pending` is written, since batches arrive in ticket order.
    let mut last_ticket = 0;
    let mut last_prune = Instant::now();
    let mut closing = false;
    let mut attempts_left = ATTEMPTS_WHEN_CLOSING;
    if let Err(error) = conn.pragma_update(None, "cache_size", -CACHE_KIB) {
        tracing::debug!(%error, "the store's writer keeps SQLite's default page cache");
    }
    let mut log = Log::new(journal);
    loop {
        if pending.is_empty() {
            if closing {
                let _ = log.fold(&mut conn);
                return Unwritten::default();
            }
            let wait = if log.changes > 0 {
                FOLD_WHEN_IDLE
            } else {
                PRUNE_EVERY
            };
            let received = match jobs.try_recv() {
                Ok(job) => Ok(job),
                Err(TryRecvError::Empty) => {
                    policy.wait_as_batch_work();
                    let received = jobs.recv_timeout(wait);
                    policy.work_as_normal();
                    received
                }
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            };
            match received {
                Ok((batch, reply, ticket)) => {
                    last_ticket = ticket;
                    pending.push((batch, Some(reply)));
                }
                Err(RecvTimeoutError::Timeout) => {
                    if log.may_fold() {
                        let _ = log.fold(&mut conn);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = log.fold(&mut conn);
                    return Unwritten::default();
                }
            }
        }
        while pending.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok((batch, reply, ticket)) => {
                    last_ticket = ticket;
                    pending.push((batch, Some(reply)));
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    closing = true;
                    break;
                }
            }
        }
        if !pending.is_empty() {
            let started = Instant::now();
            match log.write(&mut conn, &pending) {
                Ok(written) => {
                    crate::metrics::store_commit(started.elapsed());
                    let (batches, replies): (Vec<Batch>, Vec<Option<Reply>>) =
                        pending.drain(..).unzip();
                    let replies = replies.into_iter().flatten().collect();
                    // Durable before anyone is answered: an answer may look at the ticket.
                    signals.wrote(written.durable, last_ticket);
                    answer(runtime.as_ref(), replies, Ok(()), batches);
                    if log.due() && log.may_fold() {
                        let _ = log.fold(&mut conn);
                    }
                }
                Err(error) => {
                    crate::metrics::store_error();
                    let message = format!("writing to {path} failed: {error}");
                    signals.failed(&message);
                    let replies = pending.iter_mut().filter_map(|(_, reply)| reply.take());
                    let failed = Err(StoreError::Unavailable(message.clone()));
                    answer(runtime.as_ref(), replies.collect(), failed, Vec::new());
                    if closing {
                        attempts_left = attempts_left.saturating_sub(1);
                        if attempts_left == 0 {
                            let unwritten = Unwritten {
                                changes: pending.len(),
                                halts: pending.iter().filter(|(b, _)| b.halt.is_some()).count(),
                                error: message,
                            };
                            tracing::error!(changes = unwritten.changes, halts = unwritten.halts, error = %unwritten.error, "closing with changes that could not be written");
                            return unwritten;
                        }
                    }
                    std::thread::sleep(RETRY_AFTER);
                    continue;
                }
            }
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            if let Err(error) = prune(&conn, &retention) {
                tracing::warn!(%error, "pruning old events failed; retrying later");
            }
        }
    }
}

/// Answers the callers of one transaction. Where the store runs beside a tokio runtime, a task
/// on that runtime answers them all: their tasks wake onto one worker's queue together, behind
/// which each connection's task writes the answers that became ready in one go. Answered from
/// this thread, each caller's wake-up would be a remote one (the runtime's global queue and,
/// often, a write to its driver's eventfd), run as it comes, its answer written alone.
///
/// The written batches go along and are dropped there too, after the answers: they were
/// allocated on the runtime's threads, where freeing them is a thread-local operation of the
/// allocator rather than a hand-over to the allocating thread.
fn answer(
    runtime: Option<&Handle>,
    replies: Vec<Reply>,
    result: Result<(), StoreError>,
    written: Vec<Batch>,
) {
    let send = move || {
        for reply in replies {
            let _ = reply.send(result.clone());
        }
        drop(written);
    };
    match runtime {
        // A runtime that is shutting down drops the task, and with it the replies: the callers,
        // on that runtime, are being dropped too.
        Some(runtime) => drop(runtime.spawn(async move { send() })),
        None => send(),
    }
}

/// The writer's scheduling policy on Linux: `SCHED_BATCH` while it waits for work, the default
/// policy while it works.
///
/// Waiting as batch work, the writer's wake-up when a change is submitted does not preempt a
/// runtime thread that is handling calls: the writer starts when that thread waits or its time
/// slice ends, and the changes submitted meanwhile join the same commit. Measured with the
/// server on one core at 64 callers: 12.8k durable outcomes/s against 11.3k.
///
/// Working as batch work too, the writer would also wait for the runtime at each of the sleeps
/// inside a commit (SQLite's sync waits for the data write and then for the disk's cache flush):
/// `outcome_durability --split` measured `fdatasync` at 312 µs on average against 65-90 µs on an
/// idle core, and a batch thread beside a busy loop on its core waits 12 ms for one `fdatasync`
/// that takes 65 µs at the default policy. Committing at the default policy took commits from
/// 350 µs to 180 µs and durable outcomes from 61-63k/s to 66-68k/s.
///
/// Where the policy cannot be changed, the writer keeps the default throughout.
#[derive(Default)]
struct Scheduling {
    /// The writer is batch work now.
    batch: bool,
    /// Setting the policy failed once: it is not tried again.
    fixed: bool,
}

impl Scheduling {
    fn wait_as_batch_work(&mut self) {
        if !self.batch {
            self.batch = self.set(true);
        }
    }

    fn work_as_normal(&mut self) {
        if self.batch {
            self.batch = !self.set(false);
        }
    }

    /// Sets the calling thread's policy; true if it was set.
    fn set(&mut self, batch: bool) -> bool {
        if self.fixed {
            return false;
        }
        #[cfg(target_os = "linux")]
        {
            let policy = if batch {
                libc::SCHED_BATCH
            } else {
                libc::SCHED_OTHER
            };
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: `sched_setscheduler` reads `param`, which outlives the call, and changes
            // only the calling thread's policy (pid 0).
            if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
                return true;
            }
            tracing::debug!(error = %std::io::Error::last_os_error(), "the store's writer keeps its scheduling policy");
        }
        let _ = batch;
        self.fixed = true;
        false
    }
}

fn nanos(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// What one transaction wrote.
struct Written {
    /// The highest event sequence written.
    durable: Option<u64>,
    /// Breaker changes written to the journal.
    logged: usize,
    /// The last journal slot written, with its number: the open slot from now on.
    last_slot: Option<(u64, Vec<u8>)>,
}

/// Writes every pending batch in one transaction, its breaker changes into the journal's open
/// slot (`open`) and then its next ones (at most the free ones). The breaker records written go
/// to `staged`, in the order of their batches.
fn write(
    conn: &mut Connection,
    pending: &[(Batch, Option<Reply>)],
    journal: &Journal,
    open: Option<&[u8]>,
    staged: &mut Staged,
) -> rusqlite::Result<Written> {
    let tx = conn.transaction()?;
    let mut durable = None;
    let mut logged = 0;
    let last_slot = {
        let mut insert_event = tx.prepare_cached(
            "INSERT OR REPLACE INTO events (sequence, at, account_id, event) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut insert_audit = tx.prepare_cached(
            "INSERT INTO audit (at, account_id, action, operator, reason, state_before, state_after, peer,
                                group_name, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for (batch, _) in pending {
            if let Some(breaker) = &batch.breaker {
                staged.push(&breaker.record, breaker.mode);
                logged += 1;
            }
            for event in &batch.events {
                insert_event.execute(params![
                    nanos(event.sequence),
                    nanos(event.at.as_unix_nanos()),
                    event.account_id,
                    codec::encode_event(event),
                ])?;
                durable = durable.max(Some(event.sequence));
            }
            if let Some(audit) = &batch.audit {
                insert_audit.execute(params![
                    nanos(audit.at.as_unix_nanos()),
                    audit.account_id,
                    audit.action.as_str(),
                    audit.operator,
                    audit.reason,
                    codec::state_name(audit.state_before),
                    codec::state_name(audit.state_after),
                    audit.peer,
                    audit.group,
                    audit.detail,
                ])?;
            }
            match &batch.halt {
                Some((layer, Some(halt))) => {
                    tx.prepare_cached(
                        "INSERT INTO halts (scope, halt) VALUES (?1, ?2)
                         ON CONFLICT (scope) DO UPDATE SET halt = excluded.halt",
                    )?
                    .execute(params![codec::halt_key(layer), codec::encode_halt(halt)])?;
                }
                Some((layer, None)) => {
                    tx.prepare_cached("DELETE FROM halts WHERE scope = ?1")?
                        .execute([codec::halt_key(layer)])?;
                }
                None => {}
            }
        }
        if let Some(sequence) = durable {
            tx.execute(
                "INSERT INTO counters (name, value) VALUES ('last_sequence', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                [nanos(sequence)],
            )?;
        }
        let changes: Vec<Change> = pending
            .iter()
            .filter_map(|(batch, _)| batch.breaker.as_ref())
            .zip(staged.records())
            .map(|(breaker, record)| Change {
                account_id: &breaker.account_id,
                record,
                last_sequence: breaker.last_sequence,
            })
            .collect();
        let mut slots = journal::append(open, &changes, journal.next, journal.free())
            .map_err(|e| damaged(format!("the breaker journal's open slot: {e}")))?;
        let mut write_slot =
            tx.prepare_cached("UPDATE breaker_journal SET data = ?2 WHERE slot = ?1")?;
        for (number, slot) in &slots {
            let index = nanos(number % journal.slots.max(1));
            if write_slot.execute(params![index, slot])? != 1 {
                return Err(damaged(format!("the breaker journal has no slot {index}")));
            }
        }
        slots.pop()
    };
    tx.commit()?;
    Ok(Written {
        durable,
        logged,
        last_slot,
    })
}

/// An error for a store whose content is not what riskgate wrote.
fn damaged(message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(message),
    )
}

/// Where the breaker journal's ring stands.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Journal {
    /// Slots in the ring.
    pub slots: u64,
    /// The number of the next slot opened (the first is 1).
    pub next: u64,
    /// The last slot whose changes `breakers` holds.
    pub folded: u64,
}

impl Journal {
    /// Slots written since the last fold.
    fn unfolded(&self) -> u64 {
        self.next.saturating_sub(1).saturating_sub(self.folded)
    }

    /// Slots a commit may overwrite.
    fn free(&self) -> u64 {
        self.slots.saturating_sub(self.unfolded())
    }
}

/// The writer's view of the breaker journal (which the store folded when it opened).
struct Log {
    journal: Journal,
    /// The open slot (numbered `journal.next - 1`), which the next commit appends to while its
    /// changes fit; none after a fold.
    open: Option<Vec<u8>>,
    /// Changes written since the last fold.
    changes: usize,
    /// When a failed fold may be tried again.
    retry_at: Option<Instant>,
    /// The latest record written for each account since the last fold: what a fold writes to
    /// `breakers`.
    latest: HashMap<String, Logged>,
    /// The records of the transaction being written, one for each of its batches with a breaker,
    /// in order; they move to `latest` once it commits.
    staged: Staged,
}

/// The breaker records of the transaction being written, encoded one after another in one
/// buffer (kept from one transaction to the next, so encoding allocates nothing once it is big
/// enough).
#[derive(Default)]
struct Staged {
    bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    ends: Vec<usize>,
}

impl Staged {
    fn push(&mut self, record: &BreakerRecord, mode: Option<Mode>) {
        codec::encode_breaker_into(record, mode, &mut self.bytes);
        self.ends.push(self.bytes.len());
    }

    /// The records, in the order they were pushed.
    fn records(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.bytes[start..end])
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// A breaker record as the journal holds it.
struct Logged {
    record: Vec<u8>,
    last_sequence: i64,
}

impl Log {
    fn new(journal: Journal) -> Self {
        Log {
            journal,
            open: None,
            changes: 0,
            retry_at: None,
            latest: HashMap::new(),
            staged: Staged::default(),
        }
    }

    fn may_fold(&self) -> bool {
        self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// A fold is due: enough changes, or half the ring, are unfolded.
    fn due(&self) -> bool {
        self.changes >= FOLD_AT || self.journal.unfolded() >= self.journal.slots / 2
    }

    /// Writes every pending batch in one transaction, and once it commits, counts the changes
    /// it wrote and keeps their records as the latest. With every slot of the ring unfolded, it
    /// folds first: a commit never overwrites changes that are not in `breakers`.
    fn write(
        &mut self,
        conn: &mut Connection,
        pending: &[(Batch, Option<Reply>)],
    ) -> rusqlite::Result<Written> {
        if self.journal.free() == 0 {
            self.fold(conn)?;
        }
        match write(
            conn,
            pending,
            &self.journal,
            self.open.as_deref(),
            &mut self.staged,
        ) {
            Ok(mut written) => {
                self.changes += written.logged;
                if let Some((number, slot)) = written.last_slot.take() {
                    self.journal.next = number + 1;
                    self.open = Some(slot);
                }
                self.committed(pending);
                Ok(written)
            }
            Err(error) => {
                self.staged.clear();
                Err(error)
            }
        }
    }

    fn committed(&mut self, pending: &[(Batch, Option<Reply>)]) {
        let breakers = pending
            .iter()
            .filter_map(|(batch, _)| batch.breaker.as_ref());
        for (breaker, record) in breakers.zip(self.staged.records()) {
            let last_sequence = nanos(breaker.last_sequence);
            match self.latest.get_mut(breaker.account_id.as_str()) {
                Some(entry) => {
                    entry.record.clear();
                    entry.record.extend_from_slice(record);
                    entry.last_sequence = last_sequence;
                }
                None => {
                    let logged = Logged {
                        record: record.to_vec(),
                        last_sequence,
                    };
                    self.latest.insert(breaker.account_id.clone(), logged);
                }
            }
        }
        self.staged.clear();
    }

    /// Folds the journal if it holds anything. A failure leaves it for a later attempt: nothing
    /// is lost, since the journal is durable and a fold at start-up reads whatever it still
    /// holds.
    fn fold(&mut self, conn: &mut Connection) -> rusqlite::Result<()> {
        if self.journal.unfolded() == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let through = self.journal.next - 1;
        match fold_latest(conn, &self.latest, through) {
            Ok(()) => {
                tracing::debug!(
                    changes = self.changes,
                    accounts = self.latest.len(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "folded the breaker journal"
                );
                self.journal.folded = through;
                self.open = None;
                self.changes = 0;
                self.retry_at = None;
                self.latest.clear();
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, changes = self.changes, "folding the breaker journal failed; retrying later");
                self.retry_at = Some(started + FOLD_RETRY_AFTER);
                Err(error)
            }
        }
    }
}

/// Writes the latest record of each account written since the last fold into `breakers`, and
/// records that `breakers` holds the journal's changes through slot `through`, in one
/// transaction. Every change in the journal after the last fold was written by this writer, so
/// `latest` has the last of each account's.
fn fold_latest(
    conn: &mut Connection,
    latest: &HashMap<String, Logged>,
    through: u64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(UPSERT_BREAKER)?;
        for (account_id, logged) in latest {
            upsert.execute(params![account_id, logged.record, logged.last_sequence])?;
        }
    }
    set_folded(&tx, through)?;
    tx.commit()
}

const UPSERT_BREAKER: &str =
    "INSERT INTO breakers (account_id, record, last_sequence) VALUES (?1, ?2, ?3)
     ON CONFLICT (account_id) DO UPDATE
     SET record = excluded.record, last_sequence = excluded.last_sequence";

fn set_folded(tx: &rusqlite::Transaction, through: u64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO counters (name, value) VALUES ('journal_folded', ?1)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [nanos(through)],
    )?;
    Ok(())
}

/// Moves the latest change of each account that the journal holds after the last fold into
/// `breakers`, in one transaction, reading the journal; returns how many changes it held and
/// where the ring stands. The store opens with this.
pub(super) fn fold(conn: &mut Connection) -> rusqlite::Result<(usize, Journal)> {
    let tx = conn.transaction()?;
    let folded: i64 = tx.query_row(
        "SELECT value FROM counters WHERE name = 'journal_folded'",
        [],
        |row| row.get(0),
    )?;
    let folded = u64::try_from(folded)
        .map_err(|_| damaged(format!("the journal's fold mark is {folded}")))?;
    let slots: Vec<(u64, Vec<u8>)> = tx
        .prepare("SELECT data FROM breaker_journal")?
        .query_map([], |row| row.get::<_, Vec<u8>>(0))?
        .map(|slot| {
            let slot = slot?;
            let number = journal::write_number(&slot)
                .map_err(|e| damaged(format!("a breaker journal slot: {e}")))?;
            Ok((number, slot))
        })
        .collect::<rusqlite::Result<_>>()?;
    if slots.is_empty() {
        return Err(damaged("the breaker journal has no slots".into()));
    }
    let last = slots.iter().map(|(number, _)| *number).max().unwrap_or(0);
    let (latest, changes) = journal::latest(&slots, folded)
        .map_err(|e| damaged(format!("the breaker journal: {e}")))?;
    {
        let mut upsert = tx.prepare_cached(UPSERT_BREAKER)?;
        for change in latest.values() {
            upsert.execute(params![
                change.account_id,
                change.record,
                nanos(change.last_sequence)
            ])?;
        }
    }
    let through = last.max(folded);
    set_folded(&tx, through)?;
    tx.commit()?;
    Ok((
        changes,
        Journal {
            slots: slots.len() as u64,
            next: through + 1,
            folded: through,
        },
    ))
}

/// Drops events beyond the retained count or older than the retained age.
fn prune(conn: &Connection, retention: &Retention) -> rusqlite::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let cutoff = now.saturating_sub(retention.max_age).as_nanos();
    let deleted = conn.execute(
        "DELETE FROM events
         WHERE sequence <= (SELECT MAX(sequence) FROM events) - ?1 OR at < ?2",
        params![
            i64::try_from(retention.events).unwrap_or(i64::MAX),
            i64::try_from(cutoff).unwrap_or(i64::MAX)
        ],
    )?;
    if deleted > 0 {
        tracing::debug!(deleted, "pruned old events");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Scope;
    use crate::store::StoredBreaker;

    fn folded_mark(conn: &Connection) -> i64 {
        conn.query_row(
            "SELECT value FROM counters WHERE name = 'journal_folded'",
            [],
            |row| row.get(0),
        )
        .expect("the fold mark")
    }

    /// A store's writer-side journal, as the store opens it.
    fn opened(conn: &mut Connection) -> Log {
        let (_, journal) = fold(conn).expect("open fold");
        Log::new(journal)
    }

    fn breaker(account_id: &str, last_sequence: u64, generation: u64) -> Batch {
        let mut record = codec::tests::record(Vec::new());
        record.generation = generation;
        record.next_sequence = last_sequence + 1;
        Batch {
            breaker: Some(StoredBreaker {
                account_id: account_id.to_string(),
                record,
                last_sequence,
                mode: None,
            }),
            ..Batch::default()
        }
    }

    fn pending(batches: Vec<Batch>) -> Vec<(Batch, Option<Reply>)> {
        batches.into_iter().map(|batch| (batch, None)).collect()
    }

    fn store() -> Connection {
        let mut conn = Connection::open_in_memory().expect("database");
        super::super::schema::migrate(&mut conn, 0).expect("schema");
        conn
    }

    fn breakers(conn: &Connection) -> Vec<(String, Vec<u8>, i64)> {
        conn.prepare("SELECT account_id, record, last_sequence FROM breakers ORDER BY account_id")
            .expect("query")
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("read")
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_writer_waits_as_batch_work_and_works_at_the_default_policy() {
        let policy_now = || unsafe { libc::sched_getscheduler(0) };
        std::thread::spawn(move || {
            let mut policy = Scheduling::default();
            assert_eq!(policy_now(), libc::SCHED_OTHER);
            policy.wait_as_batch_work();
            assert_eq!(policy_now(), libc::SCHED_BATCH);
            policy.wait_as_batch_work();
            assert_eq!(policy_now(), libc::SCHED_BATCH);
            policy.work_as_normal();
            assert_eq!(policy_now(), libc::SCHED_OTHER);
            assert!(!policy.fixed);
        })
        .join()
        .expect("the policy changes");
    }

    #[test]
    fn a_fold_from_memory_leaves_what_a_fold_of_the_journal_leaves() {
        let transactions = [
            vec![breaker("A", 1, 1), breaker("B", 2, 1), breaker("A", 3, 2)],
            vec![breaker("C", 4, 1)],
            vec![breaker("B", 5, 2), breaker("C", 6, 2), breaker("B", 7, 3)],
        ];
        let mut from_memory = store();
        let mut from_journal = store();
        let mut log = opened(&mut from_memory);
        let mut unfolded = opened(&mut from_journal);
        assert_eq!(
            log.journal,
            Journal {
                slots: 1024,
                next: 1,
                folded: 0
            }
        );
        for (round, batches) in transactions.iter().enumerate() {
            log.write(&mut from_memory, &pending(batches.clone()))
                .expect("write");
            unfolded
                .write(&mut from_journal, &pending(batches.clone()))
                .expect("write");
            if round == 1 {
                // A transaction that fails after writing a record is not the latest of
                // anything: its ended halt cannot be written.
                from_memory
                    .execute_batch("ALTER TABLE halts RENAME TO halts_away")
                    .expect("rename");
                let ended_halt = Batch {
                    halt: Some((Scope::Firm, None)),
                    ..Batch::default()
                };
                assert!(log
                    .write(
                        &mut from_memory,
                        &pending(vec![breaker("A", 99, 9), ended_halt])
                    )
                    .is_err());
                from_memory
                    .execute_batch("ALTER TABLE halts_away RENAME TO halts")
                    .expect("rename back");
            }
        }
        assert_eq!(log.changes, 7);
        assert_eq!(log.latest.len(), 3);
        assert!(log.staged.is_empty());
        assert_eq!(
            log.journal.next, 2,
            "the commits share the slot they opened"
        );

        log.fold(&mut from_memory).expect("fold from memory");
        let (changes, journal) = fold(&mut from_journal).expect("fold the journal");
        assert_eq!(changes, 7);
        assert_eq!((log.changes, log.latest.len()), (0, 0));
        assert_eq!(log.journal, journal);
        assert_eq!(folded_mark(&from_memory), 1);
        assert_eq!(folded_mark(&from_journal), 1);
        let folded = breakers(&from_memory);
        assert_eq!(folded, breakers(&from_journal));
        let sequences: Vec<(&str, i64)> = folded
            .iter()
            .map(|(account, _, sequence)| (account.as_str(), *sequence))
            .collect();
        assert_eq!(sequences, [("A", 3), ("B", 7), ("C", 6)]);
        assert_eq!(
            fold(&mut from_journal).expect("fold again").0,
            0,
            "a folded journal holds nothing more"
        );
    }

    /// A commit of `n` changes, to accounts `{prefix}0`, `{prefix}1`, ...
    fn many(prefix: &str, n: u64, last_sequence: u64) -> Vec<(Batch, Option<Reply>)> {
        pending(
            (0..n)
                .map(|i| breaker(&format!("{prefix}{i}"), last_sequence, 1))
                .collect(),
        )
    }

    /// Commits `many(prefix, 100, ..)` with sequences after `sequence` until every slot of the
    /// ring is unfolded; returns the last sequence committed.
    fn fill_ring(log: &mut Log, conn: &mut Connection, prefix: &str, mut sequence: u64) -> u64 {
        let most = sequence + 2 * log.journal.slots;
        while log.journal.free() > 0 {
            sequence += 1;
            assert!(sequence <= most, "{:?}", log.journal);
            log.write(conn, &many(prefix, 100, sequence))
                .expect("write");
            assert!(log
                .open
                .as_ref()
                .is_some_and(|slot| slot.len() <= journal::SLOT_BYTES));
        }
        sequence
    }

    #[test]
    fn the_ring_turns_over_folded_slots_and_never_over_unfolded_ones() {
        let mut conn = store();
        conn.execute_batch("DELETE FROM breaker_journal WHERE slot >= 4")
            .expect("a ring of 4");
        let mut log = opened(&mut conn);
        assert_eq!(log.journal.slots, 4);
        let commits = fill_ring(&mut log, &mut conn, "A", 0);
        assert!(log.due(), "the ring is unfolded");
        assert_eq!(log.journal.next, 5);
        // The ring is full: the next commit folds first, then goes on over the oldest slots.
        log.write(&mut conn, &many("B", 100, 100))
            .expect("fold, then write");
        assert_eq!(log.journal.folded, 4);
        assert_eq!(folded_mark(&conn), 4);
        assert_eq!(log.journal.next, 6, "one slot opened after the fold");

        // Fill the ring again with folds failing: a commit that would overwrite an unfolded
        // slot fails instead, and every change written stays for the fold at start-up.
        conn.execute_batch("ALTER TABLE breakers RENAME TO breakers_away")
            .expect("rename");
        let sequence = fill_ring(&mut log, &mut conn, "C", 100);
        let written = 100 + (sequence - 100) as usize * 100;
        let full = log.journal;
        assert!(log.write(&mut conn, &many("D", 1, 999)).is_err());
        assert_eq!(log.journal, full, "nothing was written over");
        conn.execute_batch("ALTER TABLE breakers_away RENAME TO breakers")
            .expect("rename back");
        let (changes, journal) = fold(&mut conn).expect("the fold at start-up");
        assert_eq!(changes, written);
        assert_eq!(
            journal,
            Journal {
                slots: 4,
                next: full.next,
                folded: full.next - 1
            }
        );
        let folded = breakers(&conn);
        assert_eq!(folded.len(), 300);
        let sequence_of = |account: &str| {
            folded
                .iter()
                .find(|(a, _, _)| a == account)
                .map(|(_, _, s)| *s)
        };
        assert_eq!(sequence_of("A7"), Some(commits as i64));
        assert_eq!(sequence_of("B7"), Some(100));
        assert_eq!(sequence_of("C7"), Some(sequence as i64));
        assert_eq!(sequence_of("D0"), None);
    }

    #[test]
    fn the_migration_folds_the_old_log_and_makes_a_ring_of_page_sized_slots() {
        let mut conn = Connection::open_in_memory().expect("database");
        {
            let tx = conn.transaction().expect("tx");
            for migration in &super::super::schema::MIGRATIONS[..4] {
                tx.execute_batch(migration).expect("schema 4");
            }
            tx.execute_batch(
                "INSERT INTO breakers VALUES ('A', x'00', 1), ('B', x'01', 2);
                 INSERT INTO breaker_log (account_id, record, last_sequence)
                   VALUES ('A', x'10', 3), ('C', x'20', 4), ('A', x'11', 5);
                 PRAGMA user_version = 4;",
            )
            .expect("a store of schema 4 with changes in its log");
            tx.commit().expect("commit");
        }
        super::super::schema::migrate(&mut conn, 4).expect("migrate");
        assert_eq!(
            breakers(&conn),
            [
                ("A".into(), vec![0x11], 5),
                ("B".into(), vec![0x01], 2),
                ("C".into(), vec![0x20], 4)
            ]
        );
        let log: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'breaker_log'",
                [],
                |row| row.get(0),
            )
            .expect("schema");
        assert_eq!(log, 0, "the old log is gone");
        let (slots, sizes): (i64, i64) = conn
            .query_row(
                "SELECT count(*), count(DISTINCT length(data)) FROM breaker_journal
                 WHERE length(data) = ?1",
                [journal::SLOT_BYTES as i64],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("ring");
        assert_eq!((slots, sizes), (1024, 1));
        let (changes, journal) = fold(&mut conn).expect("open fold");
        assert_eq!(changes, 0);
        assert_eq!(
            journal,
            Journal {
                slots: 1024,
                next: 1,
                folded: 0
            }
        );
    }

    #[test]
    fn a_damaged_journal_is_refused_as_corrupt() {
        let mut conn = store();
        conn.execute_batch("UPDATE breaker_journal SET data = x'0100000000000000' WHERE slot = 3")
            .expect("damage");
        let error = fold(&mut conn).expect_err("refused");
        assert_eq!(
            error.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt)
        );
        assert!(error.to_string().contains("breaker journal"), "{error}");
    }

    #[test]
    fn a_failed_fold_keeps_the_journal_and_waits_before_the_next_attempt() {
        let mut conn = store();
        let mut log = opened(&mut conn);
        log.write(&mut conn, &pending(vec![breaker("A", 7, 1)]))
            .expect("write");
        // Commits still succeed but a fold cannot: its target is gone.
        conn.execute_batch("ALTER TABLE breakers RENAME TO breakers_away")
            .expect("rename");
        assert!(log.may_fold());
        let before = Instant::now();
        assert!(log.fold(&mut conn).is_err());
        assert_eq!(log.changes, 1, "a failed fold forgets no change");
        assert_eq!(log.latest.len(), 1);
        assert_eq!(log.journal.unfolded(), 1);
        assert_eq!(folded_mark(&conn), 0, "the journal still holds the change");
        assert!(!log.may_fold(), "the next attempt waits");
        assert!(
            log.retry_at
                .is_some_and(|at| at >= before + FOLD_RETRY_AFTER),
            "{:?}",
            log.retry_at
        );

        // The disk recovers and the wait is over: the next fold moves the change and clears
        // the wait.
        conn.execute_batch("ALTER TABLE breakers_away RENAME TO breakers")
            .expect("rename back");
        log.retry_at = Some(Instant::now());
        assert!(log.may_fold());
        log.fold(&mut conn).expect("fold");
        assert_eq!(log.changes, 0);
        assert_eq!(log.retry_at, None);
        assert_eq!(folded_mark(&conn), 1);
        let folded: i64 = conn
            .query_row(
                "SELECT last_sequence FROM breakers WHERE account_id = 'A'",
                [],
                |row| row.get(0),
            )
            .expect("the change is in breakers");
        assert_eq!(folded, 7);
    }
}
