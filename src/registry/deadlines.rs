//! One queue of breaker deadlines for the whole registry, drained by one timer task.
//!
//! A breaker asks for attention through `next_deadline()` (recovery due, a probe lease ending);
//! the registry pushes that time here, and the timer task ticks the breaker when it arrives, so
//! OPEN -> HALF_OPEN happens on time with no traffic. Entries may be stale (the breaker moved
//! on); ticking a breaker early or twice is harmless, so stale entries are simply skipped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

use crate::core::Timestamp;

use super::{Registry, Slot};

/// A breaker's deadline: when, and whose.
type Deadline = (Timestamp, Box<str>);

#[derive(Default)]
pub(crate) struct DeadlineQueue {
    heap: Mutex<BinaryHeap<Reverse<Deadline>>>,
    /// Woken when a deadline earlier than every queued one arrives.
    earlier: Notify,
}

impl DeadlineQueue {
    pub fn push(&self, at: Timestamp, account_id: &str) {
        let mut heap = self.heap.lock().unwrap_or_else(PoisonError::into_inner);
        let earliest = heap.peek().map(|Reverse((t, _))| *t);
        heap.push(Reverse((at, account_id.into())));
        drop(heap);
        if earliest.is_none_or(|t| at < t) {
            self.earlier.notify_one();
        }
    }

    pub fn earliest(&self) -> Option<Timestamp> {
        let heap = self.heap.lock().unwrap_or_else(PoisonError::into_inner);
        heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Removes and returns every entry due at `now`.
    pub fn pop_due(&self, now: Timestamp) -> Vec<Deadline> {
        let mut heap = self.heap.lock().unwrap_or_else(PoisonError::into_inner);
        let mut due = Vec::new();
        while heap.peek().is_some_and(|Reverse((t, _))| *t <= now) {
            if let Some(Reverse(entry)) = heap.pop() {
                due.push(entry);
            }
        }
        due
    }

    /// Resolves when an earlier deadline may have arrived.
    pub async fn changed(&self) {
        self.earlier.notified().await
    }
}

impl Registry {
    /// Runs the deadline timer until `shutdown` resolves: ticks every breaker whose deadline
    /// has come, so time-driven transitions happen on time with no traffic.
    pub async fn run_deadlines(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut signals = self.signals.subscribe();
        loop {
            // A cluster node that may not decide (a standby) leaves time-driven transitions to
            // the leader: its breakers change only as the leader's do. Its deadlines wait, so
            // that they fire on time if it is promoted.
            while !self.signals.has_authority() {
                tokio::select! {
                    _ = &mut shutdown => return,
                    result = signals.changed() => if result.is_err() { return },
                }
            }
            let changed = self.deadlines.changed();
            tokio::pin!(changed);
            let wait = self
                .deadlines
                .earliest()
                .map(|at| at.saturating_duration_since(self.clock.now()));
            tokio::select! {
                _ = &mut shutdown => return,
                _ = &mut changed => {}
                _ = tokio::time::sleep(wait.unwrap_or(std::time::Duration::from_secs(3600))), if wait.is_some() => {}
            }
            if !self.signals.has_authority() {
                continue;
            }
            self.fire_due(self.clock.now()).await;
        }
    }

    /// Ticks every breaker with a deadline at or before `now`.
    pub async fn fire_due(&self, now: Timestamp) {
        for (due, account_id) in self.deadlines.pop_due(now) {
            let commit = {
                let mut shard = self.shard(&account_id);
                let Some(slot) = shard.get_mut(account_id.as_ref()) else {
                    continue;
                };
                if slot.scheduled == Some(due) {
                    slot.scheduled = None;
                }
                let now = self.clock.now();
                let transitions = slot.breaker.tick(&slot.settings, now);
                let commit =
                    self.after_change(&account_id, slot, transitions, false, false, None, None);
                self.schedule(&account_id, slot);
                commit.map(|commit| super::WhenDurable(super::Wait::Commit(commit)))
            };
            if let Err(error) = self.wait_durable(commit).await {
                tracing::error!(account_id = %account_id, %error, "a timed transition is not stored yet; the store keeps retrying");
            }
        }
    }

    /// Queues the breaker's next deadline unless an earlier one is already queued.
    pub(super) fn schedule(&self, account_id: &str, slot: &mut Slot) {
        if let Some(deadline) = slot.breaker.next_deadline() {
            if slot.scheduled.is_none_or(|queued| deadline < queued) {
                slot.scheduled = Some(deadline);
                self.deadlines.push(deadline, account_id);
            }
        }
    }
}
