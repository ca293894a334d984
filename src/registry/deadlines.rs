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
