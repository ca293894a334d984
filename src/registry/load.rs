//! Loading the store at start-up: read on a thread of its own, put in place as it arrives.

use super::eviction;
use super::*;

/// Breakers read from the store, prepared on the reading thread.
pub(super) enum Prepared {
    Expect(usize),
    Breakers(Vec<Restored>),
}

pub(super) struct Restored {
    pub(super) hash: u64,
    pub(super) account_id: Box<str>,
    pub(super) slot: Slot,
}

impl Registry {
    /// Loads everything the store holds, then starts answering. Blocking: breakers whose
    /// deadline passed while the service was down are due at once (time spent down counts).
    pub fn load(&self) -> Result<()> {
        let started = std::time::Instant::now();
        // Read once, not per breaker.
        let policy = self.rulebook();
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
            for (scope, halt) in recovered.halts {
                if let Scope::Group(name) = &scope {
                    if !policy.has_group(name) {
                        tracing::warn!(group = %name, "a halt is in force for a group the configuration does not define; it applies to no account until the group is defined again or resumed");
                    }
                }
                halts.set(&scope, Some(halt));
            }
            self.halted.store(halts.any(), Ordering::Release);
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
    pub(super) fn read_store(
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
    pub(super) fn restore(&self, mut stored: StoredBreaker, policy: &Rulebook) -> Restored {
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
                settings: restored_settings(policy, &account_id, stored.settings.as_deref()),
                last_sequence: stored.last_sequence,
                scheduled: None,
                mode: stored.mode,
                overrides: stored.settings,
                // Everything loaded is durable.
                ticket: 0,
                loosened: false,
                used: eviction::seconds(self.clock.recent()),
            },
            account_id,
        }
    }
}

/// The settings an account restored with `operator`'s settings runs on: those laid over the
/// configured ones or, when the configuration changed since so that the two no longer make
/// valid settings, the configured ones (said in the log; the operator's stay recorded, shown,
/// and in force again once they fit).
fn restored_settings(
    policy: &Rulebook,
    account_id: &str,
    operator: Option<&Overrides>,
) -> Arc<Settings> {
    policy.resolve(account_id, operator).unwrap_or_else(|e| {
        tracing::error!(
            account_id,
            error = %e,
            "the settings an operator set for this account do not fit the configuration; it runs on the configured settings until an operator changes or clears them"
        );
        policy.settings_for(account_id)
    })
}
