//! The breaker journal as the writer keeps it: each commit appends its breaker changes to the
//! open slot of the ring (see `journal`), and the journal is folded into `breakers` (the latest
//! change of each account wins) once it holds [`FOLD_AT`] changes or half the ring is
//! unfolded, when the writer has been idle for [`FOLD_WHEN_IDLE`], when the store closes, and
//! when it opens (so start-up reads `breakers` alone). A commit never overwrites a slot that is
//! not folded: with the ring full it folds first, and fails if the fold does.
//!
//! The writer keeps, for each account in the journal, the latest record it wrote, so a fold
//! while running writes those records without reading the journal back: its cost follows the
//! accounts that changed, not the changes (docs/benchmarks.md, "Folding the journal").

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use super::journal::{self, Change};
use super::rows;
use crate::core::{BreakerRecord, Mode, Overrides};
use crate::store::Batch;

/// Breaker changes that trigger a fold: bounds the journal's unfolded part, and so the time one
/// fold (or a start-up after a crash) spends on it.
const FOLD_AT: usize = 16_384;

/// A writer idle this long folds whatever the journal holds unfolded.
pub(super) const FOLD_WHEN_IDLE: Duration = Duration::from_secs(1);

/// After a failed fold, the next waits this long: the journal keeps every change meanwhile, and a
/// fold that cannot succeed must not be retried (and logged) after every commit.
const FOLD_RETRY_AFTER: Duration = Duration::from_secs(10);

fn nanos(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// What one transaction wrote.
pub(super) struct Written {
    /// The highest event sequence written.
    pub(super) durable: Option<u64>,
    /// Breaker changes written to the journal.
    pub(super) logged: usize,
    /// The last journal slot written, with its number: the open slot from now on.
    pub(super) last_slot: Option<(u64, Vec<u8>)>,
}

/// Writes every pending batch in one transaction, its breaker changes into the journal's open
/// slot (`open`) and then its next ones (at most the free ones). The breaker records written go
/// to `staged`, in the order of their batches.
fn write<R>(
    conn: &mut Connection,
    pending: &[(Batch, R)],
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
                staged.push(&breaker.record, breaker.mode, breaker.settings.as_deref());
                logged += 1;
            }
            for event in &batch.events {
                insert_event.execute(params![
                    nanos(event.sequence),
                    nanos(event.at.as_unix_nanos()),
                    event.account_id,
                    rows::encode_event(event),
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
                    rows::state_name(audit.state_before),
                    rows::state_name(audit.state_after),
                    audit.peer,
                    audit.group,
                    audit.detail,
                ])?;
            }
            if let Some(account_id) = &batch.evicted {
                // The journal may still hold the account's last change: the writer forgets it
                // too (`committed`), so a fold does not bring it back. After a crash, a fold at
                // start-up may: an idle breaker, which holds nothing worth keeping.
                tx.prepare_cached("DELETE FROM breakers WHERE account_id = ?1")?
                    .execute([account_id])?;
            }
            match &batch.halt {
                Some((layer, Some(halt))) => {
                    tx.prepare_cached(
                        "INSERT INTO halts (scope, halt) VALUES (?1, ?2)
                         ON CONFLICT (scope) DO UPDATE SET halt = excluded.halt",
                    )?
                    .execute(params![rows::halt_key(layer), rows::encode_halt(halt)])?;
                }
                Some((layer, None)) => {
                    tx.prepare_cached("DELETE FROM halts WHERE scope = ?1")?
                        .execute([rows::halt_key(layer)])?;
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
pub(super) struct JournalWriter {
    journal: Journal,
    /// The open slot (numbered `journal.next - 1`), which the next commit appends to while its
    /// changes fit; none after a fold.
    open: Option<Vec<u8>>,
    /// Changes written since the last fold.
    pub(super) changes: usize,
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
    fn push(&mut self, record: &BreakerRecord, mode: Option<Mode>, settings: Option<&Overrides>) {
        rows::encode_breaker_into(record, mode, settings, &mut self.bytes);
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

impl JournalWriter {
    pub(super) fn new(journal: Journal) -> Self {
        JournalWriter {
            journal,
            open: None,
            changes: 0,
            retry_at: None,
            latest: HashMap::new(),
            staged: Staged::default(),
        }
    }

    pub(super) fn may_fold(&self) -> bool {
        self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// A fold is due: enough changes, or half the ring, are unfolded.
    pub(super) fn due(&self) -> bool {
        self.changes >= FOLD_AT || self.journal.unfolded() >= self.journal.slots / 2
    }

    /// Writes every pending batch in one transaction, and once it commits, counts the changes
    /// it wrote and keeps their records as the latest. With every slot of the ring unfolded, it
    /// folds first: a commit never overwrites changes that are not in `breakers`.
    /// `pending` pairs each batch with whatever its caller waits on, which this leaves alone.
    pub(super) fn write<R>(
        &mut self,
        conn: &mut Connection,
        pending: &[(Batch, R)],
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

    fn committed<R>(&mut self, pending: &[(Batch, R)]) {
        let mut records = self.staged.records();
        for (batch, _) in pending {
            let Some(breaker) = &batch.breaker else {
                if let Some(account_id) = &batch.evicted {
                    self.latest.remove(account_id.as_str());
                }
                continue;
            };
            let Some(record) = records.next() else { break };
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
            if let Some(account_id) = &batch.evicted {
                self.latest.remove(account_id.as_str());
            }
        }
        drop(records);
        self.staged.clear();
    }

    /// Folds the journal if it holds anything. A failure leaves it for a later attempt: nothing
    /// is lost, since the journal is durable and a fold at start-up reads whatever it still
    /// holds.
    pub(super) fn fold(&mut self, conn: &mut Connection) -> rusqlite::Result<()> {
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

#[cfg(test)]
#[path = "folding_tests.rs"]
mod tests;
