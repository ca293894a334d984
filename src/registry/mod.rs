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
mod answers;
mod changes;
mod deadlines;
mod events;
mod eviction;
mod gate;
mod halts;
mod load;
mod operator;
mod reasons;
mod replica;
mod rulebook;
mod view;
mod views;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use hashbrown::DefaultHashBuilder;

use crate::clock::Clock;
use crate::core::{
    human_duration, permit, Breaker, Decision, Denial, Disposition, Failure, Intent, Mode,
    Overrides, Pass, Permit, Report, Settings, State, Timestamp, Transition, Transitions,
};
use crate::error::{Error, Result};
use crate::history::{AuditAction, AuditRecord, Event, Halt, Layer, OperatorAction, Scope};
use crate::store::{
    AuditQuery, Batch, Commit, Loading, Recovered, Store, StoreError, StoreSignals, StoredBreaker,
};

pub use account_id::validate_account_id;
pub use answers::{CheckResult, Denied, ReportResult};
pub use changes::WhenDurable;
pub use replica::Replicated;
pub use rulebook::{AccountPattern, Rulebook, SettingSource};
pub use view::{BreakerView, ProbeView};
pub use views::{Counts, Subscription, Survey};

use accounts::{Accounts, Locked};
use answers::{shadowed, Explanation, DISABLED};
use changes::{Applied, Reliance, Time, Wait};
use deadlines::DeadlineQueue;
use events::{EventLog, Feed};
use halts::Halts;

/// Shards of the account map. A power of two well above the core count, so that concurrent
/// checks of different accounts rarely meet on one lock.
const SHARDS: usize = 256;

/// Accounts a walk of the registry reads between two turns it gives back to the runtime (at
/// the end of a shard: a walk holds one shard's lock at a time, and never across a turn). A
/// walk of a large registry reads an account in about 100-200 ns, most of it fetching the id.
const SCAN_TURN: usize = 1_024;

/// How far permit numbering jumps at a restart: more permits than one account can be issued
/// between two writes of its breaker.
const PERMITS_BETWEEN_WRITES: u64 = 1 << 40;

/// What the registry is built with (from configuration).
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Settings and groups; replaced on reload.
    pub rulebook: Rulebook,
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
            rulebook: Rulebook::default(),
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
    /// The settings an operator set (`SetAccountSettings`), laid over the configured ones in
    /// `settings`.
    overrides: Option<Arc<Overrides>>,
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
    /// When the account was last used (Unix seconds, the service clock): at `max_accounts`, the
    /// idle breaker least recently used goes first.
    used: u32,
}

pub struct Registry {
    shards: Box<[Mutex<Accounts>]>,
    /// Hashes account ids for the shards and their tables; keyed anew in each process.
    hasher: DefaultHashBuilder,
    rulebook: RwLock<Arc<Rulebook>>,
    halts: RwLock<Halts>,
    /// Whether any halt is in force: the one thing a check reads about halts when none is.
    halted: AtomicBool,
    /// Whether any resume waits to become durable: the one thing publishing reads about them
    /// when none does.
    resuming: AtomicBool,
    max_accounts: usize,
    /// Accounts in all shards; changed when an account is created or evicted.
    accounts: AtomicUsize,
    /// Where the next search for an idle breaker to evict starts, so that successive searches
    /// look at different shards.
    eviction_cursor: AtomicUsize,
    /// Until when (Unix nanoseconds, the service clock) new accounts at the limit are refused
    /// without a search: the last search read every shard and found nothing idle.
    nothing_idle_until: AtomicU64,
    events: EventLog,
    deadlines: DeadlineQueue,
    store: Arc<dyn Store>,
    /// The store's health and durable sequence, read on every check (two atomic loads).
    signals: Arc<StoreSignals>,
    /// Serialises changes of operator settings with each other and with reloads.
    settings_changes: tokio::sync::Mutex<()>,
    /// False until the store's contents are loaded; nothing is answered before.
    ready: AtomicBool,
    clock: Arc<dyn Clock>,
}

impl Registry {
    /// An empty registry over `store`, not yet answering: call [`Registry::load`] next.
    pub fn new(options: RegistryOptions, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: DefaultHashBuilder::default(),
            rulebook: RwLock::new(Arc::new(options.rulebook)),
            halts: RwLock::new(Halts::default()),
            halted: AtomicBool::new(false),
            resuming: AtomicBool::new(false),
            max_accounts: options.max_accounts,
            accounts: AtomicUsize::new(0),
            eviction_cursor: AtomicUsize::new(0),
            nothing_idle_until: AtomicU64::new(0),
            events: EventLog::new(
                options.retained_events,
                options.retained_age,
                options.subscriber_buffer,
            ),
            deadlines: DeadlineQueue::default(),
            signals: store.signals(),
            store,
            settings_changes: tokio::sync::Mutex::new(()),
            ready: AtomicBool::new(false),
            clock,
        }
    }

    /// Whether the registry is loaded and its store accepts writes.
    pub fn is_serving(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.signals.is_writable()
    }

    /// Whether the registry is loaded (it answers reads).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn store_signals(&self) -> &Arc<StoreSignals> {
        &self.signals
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

    /// Where to resume a watch to replay every event still retained.
    pub fn before_oldest_retained(&self) -> u64 {
        self.events.before_oldest_retained()
    }

    pub fn account_count(&self) -> usize {
        self.accounts.load(Ordering::Relaxed)
    }

    fn settings_for(&self, account_id: &str) -> Arc<Settings> {
        self.rulebook().settings_for(account_id)
    }

    /// The configuration in force.
    pub fn rulebook(&self) -> Arc<Rulebook> {
        read(&self.rulebook).clone()
    }

    /// Puts a new configuration in force: every breaker keeps its state and decides with the new
    /// settings from its next operation on; nothing already recorded is rewritten. The accounts
    /// take their new settings a shard at a time, between turns of the checks (a million take
    /// a fifth of a second).
    pub async fn reload(&self, policy: Rulebook) {
        let _changing = self.settings_changes.lock().await;
        let policy = Arc::new(policy);
        *self
            .rulebook
            .write()
            .unwrap_or_else(PoisonError::into_inner) = policy.clone();
        self.each_shard(|shard| {
            for (account_id, slot) in shard.iter_mut() {
                match policy.resolve(account_id, slot.overrides.as_deref()) {
                    Ok(settings) => slot.settings = settings,
                    Err(e) => tracing::error!(
                        account_id,
                        error = %e,
                        "the new configuration and the settings an operator set for this account do not make valid settings together; the account keeps the settings it had until an operator changes or clears them"
                    ),
                }
            }
        })
        .await;
        let halts = read(&self.halts);
        for name in halts.groups.keys().filter(|name| !policy.has_group(name)) {
            tracing::warn!(group = %name, "a halted group is no longer defined; its halt applies to no account until it is defined again or resumed");
        }
    }

    /// Calls `visit` with every shard, locked, one at a time, giving the thread back to the
    /// runtime after every [`SCAN_TURN`] accounts: a walk of a million accounts must not hold the
    /// checks served on the same thread for all of it.
    async fn each_shard(&self, mut visit: impl FnMut(&mut Accounts)) {
        let mut since_turn = 0;
        for shard in self.shards.iter() {
            {
                let mut shard = lock(shard);
                since_turn += shard.len();
                visit(&mut shard);
            }
            if since_turn >= SCAN_TURN {
                since_turn = 0;
                tokio::task::yield_now().await;
            }
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

    /// Counts a new account in, unless the registry is full (see `eviction`).
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
}

impl Slot {
    fn view(&self, account_id: &str, now: Timestamp) -> BreakerView {
        let mut view = BreakerView::of(
            account_id,
            &self.breaker,
            &self.settings,
            self.mode,
            self.last_sequence,
            now,
        );
        view.operator_settings = self.overrides.clone();
        view
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
#[cfg(test)]
mod views_tests;

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
