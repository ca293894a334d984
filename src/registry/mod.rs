//! The registry: every account's breaker, and everything around the pure core that a running
//! service needs.
//!
//! Owns: account lookup and creation (bounded by `max_accounts`), locking (a fixed set of
//! shards, each a mutex over a map, so a check locks one shard and nothing global), the clock,
//! turning transitions into sequenced events, scheduling breaker deadlines, and handing changes
//! to the store and waiting until they are durable. It must not decide breaker semantics (the
//! core does) nor speak gRPC (the api layer does).
//!
//! A `CheckTrade` in CLOSED locks one shard, reads the clock, issues a permit and returns: it
//! creates no event, submits nothing to the store and never waits.

mod account_id;
mod accounts;
mod deadlines;
mod events;
mod operations;
mod policy;
mod reasons;
mod view;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use hashbrown::DefaultHashBuilder;

use crate::clock::Clock;
use crate::core::{permit, Breaker, Mode, Settings, State, Timestamp, Transitions};
use crate::error::{Error, Result};
use crate::store::{
    AuditQuery, AuditRecord, Batch, Commit, Halt, Loading, Recovered, Store, StoreError,
    StoreSignals, StoredBreaker,
};

pub use account_id::validate as validate_account_id;
pub use events::{Event, Layer, OperatorAction};
pub use operations::{CheckResult, Denied, ReportResult};
pub use policy::{AccountPattern, Policy};
pub use reasons::{cause_key as cause_name, human as human_duration};
pub use view::{BreakerView, ProbeView};

use accounts::{Accounts, Locked};
use deadlines::DeadlineQueue;
use events::{EventLog, Feed};

/// Shards of the account map. A power of two well above the core count, so that concurrent
/// checks of different accounts rarely meet on one lock.
const SHARDS: usize = 256;

/// How far permit numbering jumps at a restart: more permits than one account can be issued
/// between two writes of its breaker.
const PERMITS_BETWEEN_WRITES: u64 = 1 << 40;

/// What the registry is built with (from configuration).
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Settings and groups; replaced on reload.
    pub policy: Policy,
    pub max_accounts: usize,
    /// Events kept for watchers that resume with `after_sequence`.
    pub retained_events: usize,
    /// Events older than this are no longer kept.
    pub retained_age: Duration,
    /// Events a live watcher may fall behind by before it is ended.
    pub subscriber_buffer: usize,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            policy: Policy::default(),
            max_accounts: 100_000,
            retained_events: 10_000,
            retained_age: Duration::from_secs(7 * 24 * 3600),
            subscriber_buffer: 1_024,
        }
    }
}

/// One account's entry.
struct Slot {
    breaker: Breaker,
    /// The account's permit tag ([`permit::account_tag`]), computed once.
    tag: u64,
    /// The settings in force for this account, shared with every account that has the same.
    settings: Arc<Settings>,
    /// The sequence of this breaker's last event, so watchers can tell what a snapshot reflects.
    last_sequence: u64,
    /// The deadline queued for this breaker, so a breaker is queued once, not on every change.
    scheduled: Option<Timestamp>,
    /// The mode an operator set, which takes precedence over the configured one.
    mode: Option<Mode>,
    /// The store ticket of this account's latest batch. An answer that describes the breaker
    /// (a report's disposition, a view) waits until it is durable: a crash must not take back
    /// what an answer relied on.
    ticket: u64,
    /// Whether a batch up to `ticket` began a generation (the breaker's creation included) or
    /// changed the mode, and `ticket` was not yet seen durable. An answer that allows an order
    /// then waits for `ticket`, so that no order is allowed by a reset, a recovery or a mode
    /// that a crash would undo, and no permit of a generation a crash would undo is handed out
    /// (it could be handed out again after the restart). One flag rather than a second ticket
    /// keeps the slot small; the price is waiting, rarely, for a later batch than needed.
    loosened: bool,
}

/// What an answer waits for before it is given: its own batch (which covers every earlier
/// one), or an earlier batch of its account that is not yet durable. Opaque to the wire layer,
/// which hands it back to [`Registry::wait_durable`].
#[derive(Debug)]
pub struct WhenDurable(Wait);

#[derive(Debug)]
enum Wait {
    Commit(Commit),
    Ticket(u64),
}

/// Breakers read from the store, prepared on the reading thread.
enum Prepared {
    Expect(usize),
    Breakers(Vec<Restored>),
}

struct Restored {
    hash: u64,
    account_id: Box<str>,
    slot: Slot,
}

/// Firm-wide and group halts in force.
#[derive(Clone, Debug, Default)]
pub(crate) struct Halts {
    firm: Option<Halt>,
    groups: BTreeMap<String, Halt>,
    /// The store ticket of the latest halt or resume: a view of the halts waits for it.
    ticket: u64,
    /// Resumes submitted but not yet durable, oldest first: each halt stays in force until its
    /// resume is durable (loosening never acts before it can be kept), then ends unless a newer
    /// halt of the same layer replaced it meanwhile.
    resuming: Vec<Resuming>,
}

#[derive(Clone, Debug)]
struct Resuming {
    ticket: u64,
    layer: Layer,
    /// The halt it ends.
    halt: Halt,
}

pub struct Registry {
    shards: Box<[Mutex<Accounts>]>,
    /// Hashes account ids for the shards and their tables; keyed anew in each process.
    hasher: DefaultHashBuilder,
    policy: RwLock<Arc<Policy>>,
    halts: RwLock<Halts>,
    /// Whether any halt is in force: the one thing a check reads about halts when none is.
    halted: AtomicBool,
    /// Whether any resume waits to become durable: the one thing publishing reads about them
    /// when none does.
    resuming: AtomicBool,
    max_accounts: usize,
    /// Accounts in all shards; changed only when an account is created.
    accounts: AtomicUsize,
    events: EventLog,
    deadlines: DeadlineQueue,
    store: Arc<dyn Store>,
    /// The store's health and durable sequence, read on every check (two atomic loads).
    signals: Arc<StoreSignals>,
    /// False until the store's contents are loaded; nothing is answered before.
    ready: AtomicBool,
    clock: Arc<dyn Clock>,
}

/// Where a watcher starts: an optional snapshot, then the feed of events.
pub struct Subscription {
    /// The current state of the watched breakers; `None` when resuming.
    pub snapshot: Option<Vec<BreakerView>>,
    /// Events to replay when resuming, oldest first.
    pub replay: Vec<Arc<Event>>,
    pub live: tokio::sync::broadcast::Receiver<Arc<Event>>,
    /// The snapshot (or resume point) reflects every event up to this sequence.
    pub as_of: u64,
}

impl Registry {
    /// An empty registry over `store`, not yet answering: call [`Registry::load`] next.
    pub fn new(options: RegistryOptions, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: DefaultHashBuilder::default(),
            policy: RwLock::new(Arc::new(options.policy)),
            halts: RwLock::new(Halts::default()),
            halted: AtomicBool::new(false),
            resuming: AtomicBool::new(false),
            max_accounts: options.max_accounts,
            accounts: AtomicUsize::new(0),
            events: EventLog::new(
                options.retained_events,
                options.retained_age,
                options.subscriber_buffer,
            ),
            deadlines: DeadlineQueue::default(),
            signals: store.signals(),
            store,
            ready: AtomicBool::new(false),
            clock,
        }
    }

    /// Loads everything the store holds, then starts answering. Blocking: breakers whose
    /// deadline passed while the service was down are due at once (time spent down counts).
    pub fn load(&self) -> Result<()> {
        let started = std::time::Instant::now();
        // Read once, not per breaker.
        let policy = self.policy();
        let mut by_state = [0usize; 3];
        let prepare = |loading: Loading| match loading {
            Loading::Expect(expected) => Prepared::Expect(expected),
            Loading::Breakers(chunk) => Prepared::Breakers(
                chunk
                    .into_iter()
                    .map(|stored| self.restore(stored, &policy))
                    .collect(),
            ),
        };
        let mut put = |prepared: Prepared| match prepared {
            Prepared::Expect(expected) => {
                // Each shard sized for its share up front, rather than grown by doubling.
                let per_shard = expected / SHARDS;
                for shard in self.shards.iter() {
                    lock(shard).reserve(per_shard + per_shard / 8, &self.hasher);
                }
            }
            Prepared::Breakers(restored) => {
                for Restored {
                    hash,
                    account_id,
                    mut slot,
                } in restored
                {
                    by_state[match slot.breaker.state() {
                        State::Closed => 0,
                        State::Open => 1,
                        State::HalfOpen => 2,
                    }] += 1;
                    self.schedule(&account_id, &mut slot);
                    lock(&self.shards[accounts::shard_index(hash, SHARDS)]).insert(
                        hash,
                        account_id,
                        slot,
                        &self.hasher,
                    );
                }
            }
        };
        let recovered = self.read_store(&prepare, &mut put)?;
        self.events
            .restore(recovered.events, recovered.last_sequence);
        {
            let mut halts = write(&self.halts);
            for (layer, halt) in recovered.halts {
                match layer {
                    Layer::Firm => halts.firm = Some(halt),
                    Layer::Group(name) => {
                        if !policy.has_group(&name) {
                            tracing::warn!(group = %name, "a halt is in force for a group the configuration does not define; it applies to no account until the group is defined again or resumed");
                        }
                        halts.groups.insert(name, halt);
                    }
                    Layer::Account => {}
                }
            }
            self.halted.store(
                halts.firm.is_some() || !halts.groups.is_empty(),
                Ordering::Release,
            );
            crate::metrics::halts(halts.firm.is_some(), halts.groups.len());
        }
        let accounts: usize = self.shards.iter().map(|shard| lock(shard).len()).sum();
        self.accounts.store(accounts, Ordering::Relaxed);
        crate::metrics::breakers_loaded(by_state[0], by_state[1], by_state[2]);
        tracing::info!(
            breakers = by_state.iter().sum::<usize>(),
            total_ms = started.elapsed().as_millis() as u64,
            "store loaded"
        );
        self.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Reads the store and prepares its breakers on a thread of its own, and hands them to
    /// `put` on this one as they arrive, so that reading and putting them in place overlap.
    /// Each thread frees what it allocated, so neither waits on the other's allocator.
    fn read_store(
        &self,
        prepare: &(dyn Fn(Loading) -> Prepared + Sync),
        put: &mut dyn FnMut(Prepared),
    ) -> Result<Recovered> {
        std::thread::scope(|scope| {
            let (sender, receiver) = std::sync::mpsc::sync_channel(8);
            let reader = std::thread::Builder::new()
                .name("riskgate-load".into())
                .spawn_scoped(scope, move || {
                    self.store.load_streaming(&|loading| {
                        // The receiver goes only when this scope ends, after this thread.
                        let _ = sender.send(prepare(loading));
                    })
                });
            let Ok(reader) = reader else {
                // No thread to spare: read on this one, then put everything in place.
                let (sender, receiver) = std::sync::mpsc::channel();
                let recovered = self.store.load_streaming(&|loading| {
                    let _ = sender.send(prepare(loading));
                });
                receiver.try_iter().for_each(&mut *put);
                return Ok(recovered?);
            };
            for prepared in receiver {
                put(prepared);
            }
            match reader.join() {
                Ok(recovered) => Ok(recovered?),
                Err(_) => Err(Error::Store(StoreError::Unavailable(
                    "reading the store stopped unexpectedly".into(),
                ))),
            }
        })
    }

    /// A breaker read from the store, ready to be put in place.
    fn restore(&self, mut stored: StoredBreaker, policy: &Policy) -> Restored {
        // Checks in CLOSED issue permits without writing anything, so permits may have been
        // issued past the stored counter before the restart. Numbering resumes well beyond
        // it, so a permit issued now never looks like one issued then.
        stored.record.next_sequence = stored
            .record
            .next_sequence
            .saturating_add(PERMITS_BETWEEN_WRITES);
        let account_id = stored.account_id.into_boxed_str();
        Restored {
            hash: accounts::hash(&self.hasher, &account_id),
            slot: Slot {
                breaker: Breaker::from_record(stored.record),
                tag: permit::account_tag(&account_id),
                settings: policy.settings_for(&account_id),
                last_sequence: stored.last_sequence,
                scheduled: None,
                mode: stored.mode,
                // Everything loaded is durable.
                ticket: 0,
                loosened: false,
            },
            account_id,
        }
    }

    /// Whether the registry is loaded and its store accepts writes.
    pub fn is_serving(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.signals.is_writable()
    }

    pub fn store_signals(&self) -> &Arc<StoreSignals> {
        &self.signals
    }

    /// Reads the audit trail, newest first.
    pub async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditRecord>> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.audit_records(&query))
            .await
            .map_err(|e| Error::Store(crate::store::StoreError::Unavailable(e.to_string())))?
            .map_err(Error::from)
    }

    /// Shows watchers every event that is durable. Runs until `shutdown` resolves; calls that
    /// wait for their own commit publish too, this catches the rest (timer transitions, callers
    /// that went away).
    pub async fn run_publisher(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut changed = self.signals.subscribe();
        loop {
            self.publish();
            tokio::select! {
                _ = &mut shutdown => return,
                result = changed.changed() => if result.is_err() { return },
            }
        }
    }

    pub fn clock_handle(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    pub fn last_sequence(&self) -> u64 {
        self.events.published_sequence()
    }

    pub fn account_count(&self) -> usize {
        self.accounts.load(Ordering::Relaxed)
    }

    /// The full view of one breaker, once everything it shows is durable.
    pub async fn get(&self, account_id: &str) -> Result<BreakerView> {
        validate_account_id(account_id)?;
        self.ensure_ready()?;
        let now = self.clock.now();
        let (mut view, ticket) = {
            let shard = self.shard(account_id);
            let slot = shard
                .get(account_id)
                .ok_or_else(|| Error::UnknownAccount(account_id.to_owned()))?;
            (slot.view(account_id, now), slot.ticket)
        };
        self.durable_through(ticket).await?;
        self.add_groups(std::slice::from_mut(&mut view));
        Ok(view)
    }

    /// Waits until the store's batch `ticket` is durable, then shows watchers what became
    /// durable with it.
    async fn durable_through(&self, ticket: u64) -> Result<()> {
        if !self.signals.is_durable(ticket) {
            self.wait_durable(Some(WhenDurable(Wait::Ticket(ticket))))
                .await?;
        }
        Ok(())
    }

    /// Fills in the groups each viewed account belongs to.
    fn add_groups(&self, views: &mut [BreakerView]) {
        let policy = self.policy();
        if policy.groups.is_empty() {
            return;
        }
        for view in views {
            view.groups = policy
                .groups_of(&view.account_id)
                .map(str::to_owned)
                .collect();
        }
    }

    /// Breakers ordered by account id, after `after` (exclusive), at most `limit`, optionally
    /// only those in `state`, once everything they show is durable. Returns the page and
    /// whether more follow.
    pub async fn list(
        &self,
        state: Option<State>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<BreakerView>, bool)> {
        self.ensure_ready()?;
        let (views, more, ticket) = self.list_now(state, after, limit);
        self.durable_through(ticket).await?;
        Ok((views, more))
    }

    /// [`Registry::list`] as memory holds it, with the ticket it must wait for.
    fn list_now(
        &self,
        state: Option<State>,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<BreakerView>, bool, u64) {
        let now = self.clock.now();
        let mut views = Vec::new();
        let mut ticket = 0;
        for shard in self.shards.iter() {
            let shard = lock(shard);
            views.extend(
                shard
                    .iter()
                    .filter(|(id, _)| after.is_none_or(|after| *id > after))
                    .filter(|(_, slot)| state.is_none_or(|s| slot.breaker.state() == s))
                    .map(|(id, slot)| {
                        ticket = ticket.max(slot.ticket);
                        slot.view(id, now)
                    }),
            );
        }
        views.sort_unstable_by(|a, b| a.account_id.cmp(&b.account_id));
        let more = views.len() > limit;
        views.truncate(limit);
        self.add_groups(&mut views);
        (views, more, ticket)
    }

    /// Starts following events: with `after` (resume), the retained events after it; without,
    /// a snapshot of the watched breakers (all when `accounts` is empty), given once everything
    /// it shows is durable.
    pub async fn subscribe(&self, accounts: &[String], after: Option<u64>) -> Result<Subscription> {
        for account_id in accounts {
            validate_account_id(account_id)?;
        }
        self.ensure_ready()?;
        // Subscribe first: every event after `as_of` reaches the feed, and the snapshot read
        // afterwards is at least as new as `as_of`.
        let Feed {
            replay,
            live,
            as_of,
        } = self.events.subscribe(after)?;
        let snapshot = match after {
            Some(_) => None,
            None => {
                let now = self.clock.now();
                let (views, ticket) = if accounts.is_empty() {
                    let (views, _, ticket) = self.list_now(None, None, usize::MAX);
                    (views, ticket)
                } else {
                    let mut ticket = 0;
                    let mut views: Vec<BreakerView> = accounts
                        .iter()
                        .filter_map(|id| {
                            self.shard(id).get(id.as_str()).map(|slot| {
                                ticket = ticket.max(slot.ticket);
                                slot.view(id, now)
                            })
                        })
                        .collect();
                    self.add_groups(&mut views);
                    (views, ticket)
                };
                self.durable_through(ticket).await?;
                Some(views)
            }
        };
        Ok(Subscription {
            snapshot,
            replay,
            live,
            as_of,
        })
    }

    fn settings_for(&self, account_id: &str) -> Arc<Settings> {
        self.policy().settings_for(account_id)
    }

    /// The configuration in force.
    pub fn policy(&self) -> Arc<Policy> {
        read(&self.policy).clone()
    }

    /// Puts a new configuration in force: every breaker keeps its state and decides with the new
    /// settings from its next operation on; nothing already recorded is rewritten.
    pub fn reload(&self, policy: Policy) {
        let policy = Arc::new(policy);
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = policy.clone();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            for (account_id, slot) in shard.iter_mut() {
                slot.settings = policy.settings_for(account_id);
            }
        }
        let halts = read(&self.halts);
        for name in halts.groups.keys().filter(|name| !policy.has_group(name)) {
            tracing::warn!(group = %name, "a halted group is no longer defined; its halt applies to no account until it is defined again or resumed");
        }
    }

    /// The shard that holds `account_id`, locked.
    fn shard(&self, account_id: &str) -> Locked<'_> {
        let hash = accounts::hash(&self.hasher, account_id);
        Locked {
            accounts: lock(&self.shards[accounts::shard_index(hash, SHARDS)]),
            hash,
            hasher: &self.hasher,
        }
    }

    /// Counts a new account in, unless the registry is full.
    fn reserve_account(&self) -> Result<()> {
        self.accounts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_accounts).then_some(n + 1)
            })
            .map(drop)
            .map_err(|_| Error::AccountLimit {
                max: self.max_accounts,
            })
    }

    /// Turns what an operation changed into events, a queued deadline and a store batch.
    /// Called with the account's shard lock held, which keeps sequence order and per-account
    /// order the same. Returns `None` when nothing needs storing.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn after_change(
        &self,
        account_id: &str,
        slot: &mut Slot,
        transitions: Transitions,
        persist: bool,
        mode_changed: bool,
        operator: Option<&OperatorAction>,
        audit: Option<AuditRecord>,
    ) -> Option<Commit> {
        // Most checks change nothing: they return here without moving the transitions.
        if transitions.is_empty() && !persist && audit.is_none() {
            return None;
        }
        let loosening = mode_changed || !transitions.is_empty();
        let commit = self.record_change(account_id, slot, transitions, operator, audit);
        slot.ticket = commit.ticket();
        slot.loosened |= loosening;
        Some(commit)
    }

    fn record_change(
        &self,
        account_id: &str,
        slot: &mut Slot,
        transitions: Transitions,
        operator: Option<&OperatorAction>,
        audit: Option<AuditRecord>,
    ) -> Commit {
        self.schedule(account_id, slot);
        for t in transitions.iter() {
            crate::metrics::transition(&t);
        }
        let events: Vec<Event> = transitions
            .iter()
            .map(|t| Event {
                sequence: 0,
                account_id: account_id.to_owned(),
                layer: Layer::Account,
                from: t.from,
                to: t.to,
                cause: t.cause,
                reason: reasons::transition(&t, &slot.settings, operator),
                failure_count: t.failure_count,
                at: t.at,
                generation: t.generation,
                recovery_at: t.recovery_at,
                operator: operator.cloned(),
                failure_kind: t.failure_kind,
                config_version: self.policy().version.clone(),
            })
            .collect();
        let submit = |slot: &mut Slot, events: Vec<Arc<Event>>| {
            if let Some(last) = events.last() {
                slot.last_sequence = last.sequence;
            }
            self.store.submit(Batch {
                breaker: Some(StoredBreaker {
                    account_id: account_id.to_owned(),
                    record: slot.breaker.to_record(),
                    last_sequence: slot.last_sequence,
                    mode: slot.mode,
                }),
                events,
                audit,
                halt: None,
            })
        };
        if events.is_empty() {
            submit(slot, Vec::new())
        } else {
            self.events.append(events, |events| submit(slot, events))
        }
    }

    /// Waits until what an answer depends on is durable, then shows watchers what became
    /// durable with it.
    pub async fn wait_durable(&self, when: Option<WhenDurable>) -> Result<()> {
        let Some(WhenDurable(wait)) = when else {
            return Ok(());
        };
        match wait {
            Wait::Commit(commit) => commit.durable().await?,
            Wait::Ticket(ticket) => self.signals.durable_through(ticket).await?,
        }
        self.publish();
        Ok(())
    }

    /// Shows watchers every event that is durable, and lets every resume that is durable take
    /// effect.
    fn publish(&self) {
        self.events.publish_through(self.signals.durable_sequence());
        self.settle_resumes();
    }

    fn ensure_ready(&self) -> Result<()> {
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Error::Loading)
        }
    }

    /// Refuses a change while the store cannot write: nothing is changed that could not be kept.
    fn ensure_writable(&self) -> Result<()> {
        self.ensure_ready()?;
        if self.signals.is_writable() {
            return Ok(());
        }
        let detail = self
            .signals
            .last_error()
            .unwrap_or_else(|| "the last write failed".into());
        Err(Error::Store(crate::store::StoreError::Unavailable(
            format!("{detail}; no change is accepted until writes succeed again"),
        )))
    }
}

impl Slot {
    fn view(&self, account_id: &str, now: Timestamp) -> BreakerView {
        BreakerView::of(
            account_id,
            &self.breaker,
            &self.settings,
            self.mode,
            self.last_sequence,
            now,
        )
    }
}

/// A poisoned shard still holds consistent breakers (the core never panics half-way through a
/// change it has not finished computing), so it is used rather than taking the service down.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod durability_tests;
#[cfg(test)]
mod tests;

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
