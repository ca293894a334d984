//! Persistence behind one narrow trait.
//!
//! The registry is the live truth; a [`Store`] keeps what must survive a restart (breaker
//! records, the retained events, the audit trail) and says when a change is durable. A store
//! never interprets breaker semantics: it writes and reads back plain records.
//!
//! Contract:
//! - `submit` is called with the account's shard lock held (and, for batches with events, the
//!   event log's lock), so it must not block; it applies batches in submission order.
//! - The returned [`Commit`] resolves once the batch is as durable as the store promises, or with
//!   `StoreError::Unavailable` if writing failed. A failed batch is not dropped: the store keeps
//!   retrying it, in order, so the outcome of a failed call is "not known yet", never "lost".
//! - Every batch gets a *ticket* as it is submitted: 1, 2, 3, ... in submission order. Batches
//!   become durable in that order, so one number, the durable ticket, says which are. The
//!   registry keeps each account's latest ticket, so that an answer that relies on an earlier
//!   change (a duplicate report, a view of the breaker) waits for that change, not only for
//!   its own.
//! - [`StoreSignals`] says whether the store is accepting writes and up to which event sequence
//!   and which ticket everything is durable; events are shown to watchers only up to that
//!   sequence.
//! - `load` is called once, before the service answers.

mod memory;
mod sqlite;

pub(crate) use sqlite::rows;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use thiserror::Error;
use tokio::sync::{oneshot, watch};

use crate::core::{BreakerRecord, Mode, Overrides, Timestamp};
use crate::history::{AuditRecord, Event, Halt, Scope};

pub use memory::MemoryStore;
pub use sqlite::{SqliteOptions, SqliteStore};

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum StoreError {
    /// Writing failed (disk full, I/O error, read-only); the store retries by itself.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store cannot be used at all; start-up stops.
    #[error("cannot use the store at {path}: {detail}. {advice}")]
    Unusable {
        path: String,
        detail: String,
        advice: &'static str,
    },
}

/// One account's breaker as persisted.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredBreaker {
    pub account_id: String,
    pub record: BreakerRecord,
    /// The sequence of the breaker's last event.
    pub last_sequence: u64,
    /// The mode an operator set for the account (it outlives configuration changes).
    pub mode: Option<Mode>,
    /// The settings an operator set for the account (`SetAccountSettings`), laid over the
    /// configured ones; they outlive configuration changes too.
    pub settings: Option<Arc<Overrides>>,
}

/// How long the audit trail is kept: records older than `max_age`, and all but the newest
/// `records`, are pruned in the background. `None`: no such bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuditRetention {
    pub max_age: Option<std::time::Duration>,
    pub records: Option<u64>,
}

impl Default for AuditRetention {
    /// A year, whatever the count.
    fn default() -> Self {
        AuditRetention {
            max_age: Some(std::time::Duration::from_secs(365 * 24 * 3600)),
            records: None,
        }
    }
}

/// Which audit records to read: newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub account_id: Option<String>,
    /// Records at or after this time.
    pub since: Option<Timestamp>,
    /// Records before this time.
    pub until: Option<Timestamp>,
    /// Records with an id below this (the previous page's last id).
    pub before_id: Option<u64>,
    pub limit: usize,
}

/// What one registry operation changed, written atomically.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub breaker: Option<StoredBreaker>,
    pub events: Vec<Arc<Event>>,
    pub audit: Option<AuditRecord>,
    /// A halt begun (`Some`) or ended (`None`).
    pub halt: Option<(Scope, Option<Halt>)>,
    /// An idle breaker forgotten to make room (`server.max_accounts`): its record is deleted.
    /// Applied after `breaker` when both name the same account.
    pub evicted: Option<String>,
}

/// Everything a store holds, read back at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Filled by [`Store::load`]; [`Store::load_streaming`] hands the breakers over as it reads
    /// them instead.
    pub breakers: Vec<StoredBreaker>,
    /// Retained events, oldest first.
    pub events: Vec<Arc<Event>>,
    /// The latest sequence ever assigned (events may have been pruned since).
    pub last_sequence: u64,
    /// Firm-wide and group halts in force.
    pub halts: Vec<(Scope, Halt)>,
}

/// Breakers as a store reads them at start-up.
#[derive(Debug)]
pub enum Loading {
    /// How many breakers follow (sent first).
    Expect(usize),
    /// The next breakers read.
    Breakers(Vec<StoredBreaker>),
}

/// How many breakers a store hands over at a time while loading: few enough that a chunk is
/// recycled by the allocator (kept in cache, no fresh pages) rather than mapped anew.
pub const LOAD_CHUNK: usize = 256;

pub trait Store: Send + Sync + 'static {
    /// Reads everything the store holds. The breakers go to `breakers` as they are read, in
    /// chunks, so that the caller can put them in place while the rest is still being read
    /// (`Expect` first; then chunks, possibly from several threads at once); everything else
    /// is returned. May block on I/O.
    fn load_streaming(&self, breakers: &(dyn Fn(Loading) + Sync)) -> Result<Recovered, StoreError>;

    /// Reads everything the store holds at once.
    fn load(&self) -> Result<Recovered, StoreError> {
        let all = Mutex::new(Vec::new());
        let mut recovered = self.load_streaming(&|loading| {
            let mut all = all.lock().unwrap_or_else(PoisonError::into_inner);
            match loading {
                Loading::Expect(count) => all.reserve(count),
                Loading::Breakers(chunk) => all.extend(chunk),
            }
        })?;
        recovered.breakers = all.into_inner().unwrap_or_else(PoisonError::into_inner);
        Ok(recovered)
    }

    fn submit(&self, batch: Batch) -> Commit;

    /// Writes what was submitted and stops: returns once it is durable and the store is left
    /// as a clean stop leaves it (the SQLite store: checkpointed, its directory free for the
    /// next server); later submits fail with `Unavailable`. Dropping a store closes it too;
    /// this lets a server close it while others still hold it. May block on I/O. A store
    /// with nothing on disk (the default; the in-memory store) has nothing to do and keeps
    /// accepting submits. Fails when changes submitted could not be written (they are lost):
    /// the server then says so and exits with an error.
    fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn signals(&self) -> Arc<StoreSignals>;
    /// Reads the audit trail. May block on I/O: call from a blocking context.
    fn audit_records(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;
}

/// Tells one waiter that its ticket is durable, or that writing failed.
type DurableReply = oneshot::Sender<Result<(), StoreError>>;

/// How the store is doing, shared with the registry and the health service.
#[derive(Debug)]
pub struct StoreSignals {
    writable: AtomicBool,
    durable_sequence: AtomicU64,
    /// Every batch up to this ticket is durable.
    durable_ticket: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Ticks on every change of writability or of the durable sequence (not of the ticket:
    /// most commits carry no event, and the publisher need not wake for them).
    changed: watch::Sender<()>,
    /// Answers waiting for a ticket to become durable, by ticket. Rare (a duplicate report, a
    /// check right after a reset, a view of a breaker that just changed), so a lock will do.
    waiters: Mutex<BTreeMap<u64, Vec<DurableReply>>>,
    /// Entries in `waiters`, so that a commit nobody waits for takes no lock.
    waiting: AtomicUsize,
    /// Until when this node may decide for accounts, on [`crate::clock::fence_clock_nanos`]:
    /// `u64::MAX` for a single node (always), `0` for a cluster node that may not (a standby; a
    /// leader catching up or fenced). Read on every check, one atomic load (and a clock read
    /// only in a cluster).
    authority: AtomicU64,
    /// Why a cluster node may not decide, shown in denials and refusals.
    authority_reason: Mutex<String>,
    /// A cluster leader's epoch (0 on a single node), told with every decision so that an
    /// order gateway can refuse decisions of an older leader.
    epoch: AtomicU64,
}

impl StoreSignals {
    pub fn new(durable_sequence: u64) -> Self {
        StoreSignals {
            writable: AtomicBool::new(true),
            durable_sequence: AtomicU64::new(durable_sequence),
            durable_ticket: AtomicU64::new(0),
            last_error: Mutex::new(None),
            changed: watch::channel(()).0,
            waiters: Mutex::new(BTreeMap::new()),
            waiting: AtomicUsize::new(0),
            authority: AtomicU64::new(u64::MAX),
            authority_reason: Mutex::new(String::new()),
            epoch: AtomicU64::new(0),
        }
    }

    /// The epoch of the cluster leader this node is (0: a single node, or not the leader).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Release);
    }

    /// Lets this node decide for accounts until `until` (on
    /// [`crate::clock::fence_clock_nanos`]; `None`: not at all, for `reason`). Set by a cluster
    /// node's leadership, never by a single node. Callers waiting on these signals are woken.
    pub fn set_authority(&self, until: Option<u64>, reason: &str) {
        let nanos = until.map_or(0, |at| at.clamp(1, u64::MAX - 1));
        *self
            .authority_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason.to_owned();
        let before = self.authority.swap(nanos, Ordering::AcqRel);
        if before != nanos {
            self.changed.send_replace(());
        }
    }

    /// Whether this node may decide for accounts now: always on a single node; in a cluster,
    /// only the leader, before its fence.
    pub fn has_authority(&self) -> bool {
        match self.authority.load(Ordering::Acquire) {
            u64::MAX => true,
            0 => false,
            until => crate::clock::fence_clock_nanos() < until,
        }
    }

    /// Records that a replica holds every event up to `sequence` (written by the leader, so
    /// durable): watchers are shown them.
    pub fn replicated(&self, sequence: u64) {
        if self.durable_sequence.fetch_max(sequence, Ordering::AcqRel) < sequence {
            self.changed.send_replace(());
        }
    }

    /// Whether the batch of `ticket` (and every batch before it) is durable. Ticket 0 is no
    /// batch at all, durable from the start.
    pub fn is_durable(&self, ticket: u64) -> bool {
        self.durable_ticket.load(Ordering::Acquire) >= ticket
    }

    /// Resolves once the batch of `ticket` is durable; with `Unavailable` at once while the
    /// store cannot write (the batch is still retried), or when writing fails meanwhile.
    pub async fn durable_through(&self, ticket: u64) -> Result<(), StoreError> {
        if self.is_durable(ticket) {
            return Ok(());
        }
        let receiver = {
            let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            // Counted before the durable ticket is read again (both SeqCst, as in `wrote`, which
            // stores the ticket before it reads the count): either this reads the new ticket,
            // or `wrote` sees a waiter and takes the lock, which it gets once this one is queued.
            self.waiting.fetch_add(1, Ordering::SeqCst);
            if self.durable_ticket.load(Ordering::SeqCst) >= ticket {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return Ok(());
            }
            // `failed` marks the store unwritable, then answers every waiter under the lock.
            if ticket == NEVER_DURABLE || !self.is_writable() {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return Err(self.not_durable());
            }
            let (sender, receiver) = oneshot::channel();
            waiters.entry(ticket).or_default().push(sender);
            receiver
        };
        receiver.await.unwrap_or_else(|_| Err(self.not_durable()))
    }

    fn not_durable(&self) -> StoreError {
        let detail = self
            .last_error()
            .unwrap_or_else(|| "the store is closed".into());
        StoreError::Unavailable(format!(
            "a change this answer depends on is not yet on disk ({detail})"
        ))
    }

    /// Whether changes may be made and orders allowed: the last write succeeded and (in a
    /// cluster) this node is the leader, before its fence.
    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Acquire) && self.has_authority()
    }

    /// Every event up to this sequence is durable.
    pub fn durable_sequence(&self) -> u64 {
        self.durable_sequence.load(Ordering::Acquire)
    }

    /// Why changes are refused: the last write's error, or why this cluster node may not
    /// decide.
    pub fn last_error(&self) -> Option<String> {
        if !self.has_authority() {
            let reason = self
                .authority_reason
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            return Some(reason);
        }
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Notified on every change of writability or of the durable sequence.
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// Records a successful write: every event up to `durable_sequence` (when the write held
    /// any) and every batch up to `ticket` is durable.
    pub fn wrote(&self, durable_sequence: Option<u64>, ticket: u64) {
        let mut changed = false;
        if let Some(sequence) = durable_sequence {
            changed |= self.durable_sequence.fetch_max(sequence, Ordering::AcqRel) < sequence;
        }
        let through = self
            .durable_ticket
            .fetch_max(ticket, Ordering::SeqCst)
            .max(ticket);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            let later = waiters.split_off(&through.saturating_add(1));
            let done = std::mem::replace(&mut *waiters, later);
            for sender in done.into_values().flatten() {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                let _ = sender.send(Ok(()));
            }
        }
        if !self.writable.swap(true, Ordering::AcqRel) {
            tracing::info!("the store accepts writes again");
            *self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
            changed = true;
        }
        // Only real changes wake the watchers of these signals: most commits carry no event.
        if changed {
            self.changed.send_replace(());
        }
    }

    /// Records a failed write: the store refuses changes until a write succeeds, and every
    /// answer waiting for a ticket is answered `Unavailable` (its batch is still retried).
    pub fn failed(&self, error: &str) {
        if self.writable.swap(false, Ordering::AcqRel) {
            tracing::error!(
                error,
                "the store cannot write; refusing changes and denying checks until it can"
            );
        }
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.to_owned());
        let waiting =
            std::mem::take(&mut *self.waiters.lock().unwrap_or_else(PoisonError::into_inner));
        for sender in waiting.into_values().flatten() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            let _ = sender.send(Err(self.not_durable()));
        }
        self.changed.send_replace(());
    }
}

/// The ticket of a batch that can never become durable (submitted to a closed store).
pub const NEVER_DURABLE: u64 = u64::MAX;

/// Resolves when a submitted batch is durable.
#[derive(Debug)]
pub struct Commit {
    /// The batch's place in submission order (see the module's contract).
    ticket: u64,
    state: CommitState,
}

/// Small (two words), since a commit travels with every answer that changed something: the
/// rare error is boxed.
#[derive(Debug)]
enum CommitState {
    Durable,
    Failed(Box<StoreError>),
    Pending(oneshot::Receiver<Result<(), StoreError>>),
}

impl Commit {
    /// The batch of `ticket`, already durable.
    pub fn durable_now(ticket: u64) -> Self {
        Commit {
            ticket,
            state: CommitState::Durable,
        }
    }

    /// A batch that was refused and will never be durable.
    pub fn refused(error: StoreError) -> Self {
        Commit {
            ticket: NEVER_DURABLE,
            state: CommitState::Failed(Box::new(error)),
        }
    }

    /// The batch of `ticket`, whose writer answers on `receiver`.
    pub fn pending(ticket: u64, receiver: oneshot::Receiver<Result<(), StoreError>>) -> Self {
        Commit {
            ticket,
            state: CommitState::Pending(receiver),
        }
    }

    /// The batch's ticket.
    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    pub async fn durable(self) -> Result<(), StoreError> {
        match self.state {
            CommitState::Durable => Ok(()),
            CommitState::Failed(error) => Err(*error),
            CommitState::Pending(receiver) => receiver.await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the store writer stopped before confirming the write".into(),
                ))
            }),
        }
    }
}
