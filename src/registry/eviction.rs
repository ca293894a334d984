//! Room for new accounts at `max_accounts`: an idle breaker (one with nothing to remember, see
//! [`crate::core::Breaker::is_idle`], no operator mode, nothing waiting to be durable) is
//! forgotten, the least recently used of those seen first. A breaker that is OPEN, HALF_OPEN,
//! tripped, in a mode an operator set, or holding failures is never evicted; when nothing is
//! idle, a new account is refused (`RESOURCE_EXHAUSTED`, naming the limit).
//!
//! The search goes through the shards one lock at a time (never the new account's shard held
//! meanwhile), from a cursor that moves on with every search, until it has seen
//! [`SAMPLE`] idle breakers, and takes the least recently used of them: exact LRU while
//! the registry holds few idle breakers, and an approximation of it that costs a few hundred
//! slot reads per eviction when it holds many. Only when little is idle does it read every
//! shard; when that finds nothing idle, new accounts are refused for [`NOTHING_IDLE_RESPITE`]
//! without another search, so that a flood of new accounts at the limit (an incident, when
//! most breakers hold failures) does not walk the whole registry on every one of their checks
//! (a million accounts: tens of milliseconds each, on the thread that serves other checks).

use super::*;

/// Idle breakers seen before settling for the least recently used of them.
const SAMPLE: usize = 64;

/// After a search of every shard found no idle breaker, how long new accounts are refused
/// without searching again. A breaker that becomes idle meanwhile makes room after it.
const NOTHING_IDLE_RESPITE: Duration = Duration::from_secs(1);

/// A slot's `used` stamp for `now`: Unix seconds (the service clock), which fit a `u32` until
/// 2106.
pub(super) fn seconds(now: Timestamp) -> u32 {
    u32::try_from(now.as_unix_nanos() / 1_000_000_000).unwrap_or(u32::MAX)
}

impl Slot {
    /// Whether forgetting this breaker changes no decision and loses nothing acknowledged.
    fn evictable(&self, now: Timestamp, signals: &StoreSignals) -> bool {
        // A durable ticket covers `loosened` too: every batch of the account is on disk.
        self.mode.is_none()
            && self.overrides.is_none()
            && self.scheduled.is_none()
            && signals.is_durable(self.ticket)
            && self.breaker.is_idle(&self.settings, now)
    }
}

impl Registry {
    /// Whether no account can be added without evicting one.
    pub(super) fn is_full(&self) -> bool {
        self.accounts.load(Ordering::Relaxed) >= self.max_accounts
    }

    /// Evicts the least recently used idle breaker found; whether one went.
    pub(super) fn evict_idle(&self) -> bool {
        let now = self.clock.recent();
        if now.as_unix_nanos() < self.nothing_idle_until.load(Ordering::Relaxed) {
            return false;
        }
        let start = self.eviction_cursor.fetch_add(1, Ordering::Relaxed);
        let mut oldest: Option<(u32, usize, Box<str>)> = None;
        let mut seen = 0;
        for searched in 0..SHARDS {
            let index = (start + searched) % SHARDS;
            {
                let shard = lock(&self.shards[index]);
                for (account_id, slot) in shard.iter() {
                    if !slot.evictable(now, &self.signals) {
                        continue;
                    }
                    seen += 1;
                    if oldest.as_ref().is_none_or(|(used, ..)| slot.used < *used) {
                        oldest = Some((slot.used, index, account_id.into()));
                    }
                }
            }
            if seen >= SAMPLE {
                break;
            }
        }
        let Some((_, index, account_id)) = oldest else {
            // Every shard read, nothing idle.
            let until = now.saturating_add(NOTHING_IDLE_RESPITE);
            self.nothing_idle_until
                .store(until.as_unix_nanos(), Ordering::Relaxed);
            return false;
        };
        let hash = accounts::hash(&self.hasher, &account_id);
        let mut shard = lock(&self.shards[index]);
        // Looked at again under the lock: it may have been used since.
        if !shard.remove(hash, &account_id, |slot| slot.evictable(now, &self.signals)) {
            return false;
        }
        self.accounts.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::breaker_evicted();
        // Submitted with the account's shard held, as every batch of it is: a new breaker of
        // the same account is stored after this.
        drop(self.store.submit(Batch {
            evicted: Some(account_id.into()),
            ..Batch::default()
        }));
        true
    }
}
