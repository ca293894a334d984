//! The machinery every operation shares: run the core under the account's shard lock, turn
//! what changed into events and a store batch, and say what the answer must wait for before
//! it is given ([`WhenDurable`]).

use super::*;

/// Which clock reading an operation needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Time {
    Exact,
    /// A check records nothing with the time when the breaker is CLOSED (it issues a permit
    /// and counts the failures in the window for the answer), so a recent reading will do.
    RecentWhenClosed,
}

/// What one core operation produced, for `Registry::update`.
pub(super) struct Applied<R> {
    pub(super) result: R,
    pub(super) transitions: Transitions,
    /// Durable state changed even without a transition (a failure counted, a probe granted).
    pub(super) persist: bool,
    /// Which of the account's earlier changes the answer relies on.
    pub(super) relies_on: Reliance,
}

/// Which of an account's changes not yet durable an answer must wait for, besides its own.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Reliance {
    /// None: a denial (tightening acts at once), a cancel.
    Nothing,
    /// The generation and mode the answer allows an order under.
    Allowing,
    /// Everything the breaker holds: a report's disposition and state, an operator's view.
    Everything,
}

/// What an answer waits for before it is given: its own batch (which covers every earlier
/// one), or an earlier batch of its account that is not yet durable. Opaque to the wire layer,
/// which hands it back to [`Registry::wait_durable`].
#[derive(Debug)]
pub struct WhenDurable(pub(super) Wait);

#[derive(Debug)]
pub(super) enum Wait {
    Commit(Commit),
    Ticket(u64),
}

impl Registry {
    /// Runs `operation` on the account's slot (created on first use) under its shard lock,
    /// then records what changed. `tag` is the account's permit tag.
    pub(super) fn update<R>(
        &self,
        account_id: &str,
        time: Time,
        operator: Option<&OperatorAction>,
        audit: Option<&dyn Fn(State, State, Timestamp) -> AuditRecord>,
        operation: impl FnOnce(&mut Slot, Timestamp) -> Applied<R>,
    ) -> Result<(R, Option<WhenDurable>)> {
        let mut shard = self.shard(account_id);
        // The limit first: one atomic load, where a lookup would be a second hash probe on
        // every call.
        // Room for a new account: an idle breaker goes, searched without this shard held (the
        // search locks one shard at a time). Another new account may take the room first:
        // then the next idle breaker goes, a few times at most.
        let mut evictions = 0;
        while evictions < 4 && self.is_full() && shard.get(account_id).is_none() {
            drop(shard);
            let evicted = self.evict_idle();
            shard = self.shard(account_id);
            if !evicted {
                break;
            }
            evictions += 1;
        }
        let mut created = false;
        let slot = shard.get_or_try_insert(account_id, || {
            self.reserve_account()?;
            created = true;
            crate::metrics::breaker_created();
            Ok::<_, Error>(Slot {
                breaker: crate::core::Breaker::starting_at(first_generation(self.clock.now())),
                tag: permit::account_tag(account_id),
                settings: self.settings_for(account_id),
                last_sequence: 0,
                scheduled: None,
                mode: None,
                overrides: None,
                ticket: 0,
                loosened: false,
                used: 0,
            })
        })?;
        // Read under the lock, so that one breaker never sees time go backwards. A recent
        // reading lags a little and is never ahead: safe where nothing is recorded with it.
        let now = match time {
            Time::RecentWhenClosed if slot.breaker.state() == State::Closed => self.clock.recent(),
            _ => self.clock.now(),
        };
        slot.used = super::eviction::seconds(now);
        let before = slot.breaker.state();
        let mode_before = slot.mode;
        let overrides_before = slot.overrides.as_ref().map(Arc::as_ptr);
        let Applied {
            result,
            transitions,
            persist,
            relies_on,
        } = operation(slot, now);
        let audit = audit.map(|record| record(before, slot.breaker.state(), now));
        // A new breaker is stored at once, as its generation 0 begins: permits numbered from
        // 0 are handed out only once it is durable, so that after a crash its numbering
        // resumes past them (see `restore`) instead of handing the same permits out again.
        let mode_changed = slot.mode != mode_before
            || slot.overrides.as_ref().map(Arc::as_ptr) != overrides_before
            || created;
        let commit = self.after_change(
            account_id,
            slot,
            transitions,
            persist || created,
            mode_changed,
            operator,
            audit,
        );
        // The answer's own batch comes after every earlier one of the account: waiting for it
        // covers them. Without one, it waits for the earlier change it relies on, if that is
        // not yet durable.
        let relied_on = match relies_on {
            Reliance::Nothing => 0,
            Reliance::Allowing if slot.loosened => {
                if self.signals.is_durable(slot.ticket) {
                    slot.loosened = false;
                }
                slot.ticket
            }
            Reliance::Allowing => 0,
            Reliance::Everything => slot.ticket,
        };
        let when = match commit {
            Some(commit) => Some(WhenDurable(Wait::Commit(commit))),
            None if !self.signals.is_durable(relied_on) => {
                Some(WhenDurable(Wait::Ticket(relied_on)))
            }
            None => None,
        };
        Ok((result, when))
    }

    /// Turns what an operation changed into events, a queued deadline and a store batch.
    /// Called with the account's shard lock held, which keeps sequence order and per-account
    /// order the same. Returns `None` when nothing needs storing.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn after_change(
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

    pub(super) fn record_change(
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
        let version = self.rulebook().version.clone();
        let events: Vec<Event> = transitions
            .iter()
            .map(|t| {
                let reason = reasons::transition(&t, &slot.settings, operator);
                Event::of_transition(account_id, &t, reason, operator, version.clone())
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
                    settings: slot.overrides.clone(),
                }),
                events,
                audit,
                halt: None,
                evicted: None,
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
    pub(super) fn publish(&self) {
        self.events.publish_through(self.signals.durable_sequence());
        self.settle_resumes();
    }

    /// Waits until the store's batch `ticket` is durable, then shows watchers what became
    /// durable with it.
    pub(super) async fn durable_through(&self, ticket: u64) -> Result<()> {
        if !self.signals.is_durable(ticket) {
            self.wait_durable(Some(WhenDurable(Wait::Ticket(ticket))))
                .await?;
        }
        Ok(())
    }

    pub(super) fn ensure_ready(&self) -> Result<()> {
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Error::Loading)
        }
    }

    /// Refuses a change while the store cannot write: nothing is changed that could not be kept.
    pub(super) fn ensure_writable(&self) -> Result<()> {
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

/// The first generation of a breaker created at `now`: its creation time in microseconds,
/// above every generation an earlier breaker of the same account could have reached (each
/// generation is a durable write, and none takes under a microsecond).
fn first_generation(now: Timestamp) -> u64 {
    now.as_unix_nanos() / 1_000
}
