//! A replica's registry: a cluster standby follows the leader's writes into its own breakers,
//! events and halts, so that it answers reads from them and, promoted, decides from them at
//! once. A leader that lost its leadership replaces everything it holds with what the cluster
//! holds, dropping whatever it changed but could not write.

use super::load::Restored;
use super::*;

/// One change the leader wrote, as a replica applies it.
#[derive(Debug)]
pub enum Replicated {
    /// A breaker as written (created, changed, or its mode set).
    Breaker(Box<StoredBreaker>),
    /// An event, with the sequence the leader gave it.
    Event(Arc<Event>),
    /// A halt begun (`Some`) or ended (`None`).
    Halt(Scope, Option<Halt>),
    /// The latest sequence the leader assigned (its events may not be retained).
    LastSequence(u64),
    /// An idle breaker the leader forgot to make room.
    Evicted(String),
}

impl Registry {
    /// Applies changes the leader wrote (in the order it wrote them), and shows watchers the
    /// events among them: they are durable, since the leader wrote them. Called only while this
    /// node may not decide, so nothing else changes its breakers meanwhile.
    pub fn apply_replicated(&self, changes: Vec<Replicated>) {
        let policy = self.rulebook();
        let mut latest_event = None;
        let mut last_sequence = None;
        for change in changes {
            match change {
                Replicated::Breaker(stored) => {
                    let restored = self.restore(*stored, &policy);
                    self.put_restored(restored);
                }
                Replicated::Event(event) => {
                    latest_event = Some(event.sequence);
                    self.events.replicate(event);
                }
                Replicated::LastSequence(sequence) => last_sequence = Some(sequence),
                Replicated::Evicted(account_id) => {
                    let hash = accounts::hash(&self.hasher, &account_id);
                    let removed = lock(&self.shards[accounts::shard_index(hash, SHARDS)]).remove(
                        hash,
                        &account_id,
                        |_| true,
                    );
                    if removed {
                        self.accounts.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                Replicated::Halt(scope, halt) => {
                    let mut halts = write(&self.halts);
                    halts.set(&scope, halt);
                    self.halted.store(halts.any(), Ordering::Release);
                    crate::metrics::halts(halts.firm.is_some(), halts.groups.len());
                }
            }
        }
        if let Some(sequence) = latest_event.max(last_sequence) {
            self.signals.replicated(sequence);
            self.events.publish_through(self.signals.durable_sequence());
        }
        if let Some(sequence) = last_sequence {
            self.events.advance(sequence);
        }
    }

    /// Replaces every breaker, event and halt with `recovered` (what the cluster holds), for a
    /// leader that lost its leadership: what it changed but could not write is dropped, so that
    /// it follows the new leader from exactly what the new leader holds. Watchers are shown the
    /// events they have not seen; none they saw is taken back (they were all durable).
    pub fn replace_all(&self, recovered: Recovered) {
        let policy = self.rulebook();
        for shard in self.shards.iter() {
            *lock(shard) = Accounts::default();
        }
        let mut count = 0;
        for stored in recovered.breakers {
            let restored = self.restore(stored, &policy);
            self.put_restored(restored);
            count += 1;
        }
        self.accounts.store(count, Ordering::Relaxed);
        self.events.reset(recovered.events, recovered.last_sequence);
        self.signals.replicated(recovered.last_sequence);
        let mut halts = write(&self.halts);
        *halts = Halts::default();
        for (scope, halt) in recovered.halts {
            halts.set(&scope, Some(halt));
        }
        self.halted.store(halts.any(), Ordering::Release);
        crate::metrics::halts(halts.firm.is_some(), halts.groups.len());
    }

    /// Puts a breaker read from the cluster in place of the account's, and queues its deadline.
    fn put_restored(&self, restored: Restored) {
        let Restored {
            hash,
            account_id,
            mut slot,
        } = restored;
        self.schedule(&account_id, &mut slot);
        let mut shard = lock(&self.shards[accounts::shard_index(hash, SHARDS)]);
        let before = shard.len();
        shard.insert(hash, account_id, slot, &self.hasher);
        if shard.len() > before {
            self.accounts.fetch_add(1, Ordering::Relaxed);
        }
    }
}
