//! The store's single writer: group commit on its own thread.
//!
//! Every batch submitted while the previous transaction was being written is written in the next
//! one, with one fsync for all of them, so throughput grows with concurrency instead of
//! collapsing to one fsync per call. Callers are answered only after their transaction is
//! durable. A failed transaction is answered with `Unavailable` but kept, and retried (with
//! whatever arrives meanwhile, in order) until it succeeds: a failure never drops a change.
//!
//! A breaker change goes to the breaker journal, appended to the open slot of its ring, so a
//! commit rewrites one page instead of one per account it touches (see `folding`).

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::folding::{Journal, JournalWriter, FOLD_WHEN_IDLE};
use super::scheduling::Scheduling;
use crate::store::{AuditRetention, Batch, StoreError, StoreSignals};

/// Most batches in one transaction: bounds the latency of the first one in a burst.
const MAX_GROUP: usize = 4_096;
/// Pause between attempts while writes fail.
const RETRY_AFTER: Duration = Duration::from_millis(200);
/// How often retained events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// Attempts left for pending batches once the store is closing.
const ATTEMPTS_WHEN_CLOSING: u32 = 5;
/// SQLite's page cache for the writer's connection, in KiB: holds the journal's ring (1,024
/// slots of a page) with room for the pages of the other tables a commit touches, so that
/// writing a slot does not first read its page back from the file.
const CACHE_KIB: i64 = 16 * 1024;

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
    pub audit: AuditRetention,
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
    let mut log = JournalWriter::new(journal);
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
    prune_audit(conn, &retention.audit, now)
}

/// Drops the audit records older than the retention's age, and all but its newest count.
fn prune_audit(
    conn: &Connection,
    retention: &AuditRetention,
    now: Duration,
) -> rusqlite::Result<()> {
    let mut deleted = 0;
    if let Some(max_age) = retention.max_age {
        let cutoff = now.saturating_sub(max_age).as_nanos();
        deleted += conn.execute(
            "DELETE FROM audit WHERE at < ?1",
            [i64::try_from(cutoff).unwrap_or(i64::MAX)],
        )?;
    }
    if let Some(records) = retention.records {
        deleted += conn.execute(
            "DELETE FROM audit WHERE id <= (SELECT MAX(id) FROM audit) - ?1",
            [i64::try_from(records).unwrap_or(i64::MAX)],
        )?;
    }
    if deleted > 0 {
        tracing::info!(deleted, "pruned audit records past their retention");
        crate::metrics::audit_pruned(deleted);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audited(conn: &Connection, at_secs: u64) {
        conn.execute(
            "INSERT INTO audit (at, account_id, action, operator, reason, state_before, state_after, peer)
             VALUES (?1, 'ACC', 'trip', 'alice', 'r', 'closed', 'open', '')",
            [i64::try_from(at_secs * 1_000_000_000).expect("time")],
        )
        .expect("insert");
    }

    fn remaining(conn: &Connection) -> Vec<i64> {
        let mut statement = conn
            .prepare("SELECT at / 1000000000 FROM audit ORDER BY id")
            .expect("select");
        statement
            .query_map([], |row| row.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("read")
    }

    #[test]
    fn the_audit_trail_keeps_what_its_retention_says_by_age_and_by_count() {
        let mut conn = Connection::open_in_memory().expect("database");
        super::super::schema::migrate(&mut conn, 0).expect("schema");
        for at in [100, 200, 300, 400, 500] {
            audited(&conn, at);
        }
        let now = Duration::from_secs(600);
        let keep_forever = AuditRetention {
            max_age: None,
            records: None,
        };
        prune_audit(&conn, &keep_forever, now).expect("prune");
        assert_eq!(remaining(&conn), vec![100, 200, 300, 400, 500]);
        let by_age = AuditRetention {
            max_age: Some(Duration::from_secs(350)),
            records: None,
        };
        prune_audit(&conn, &by_age, now).expect("prune");
        assert_eq!(
            remaining(&conn),
            vec![300, 400, 500],
            "older than 250 s pruned"
        );
        let by_count = AuditRetention {
            max_age: None,
            records: Some(2),
        };
        prune_audit(&conn, &by_count, now).expect("prune");
        assert_eq!(remaining(&conn), vec![400, 500], "the newest two kept");
    }
}
