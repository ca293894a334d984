//! The service-wide event log: every transition gets the next sequence number, the last N are
//! retained for resuming watchers, and live subscribers are fed through a bounded broadcast.
//!
//! Appends happen with the account's shard lock held, so per-account order and sequence order
//! agree. The broadcast never blocks the appender: a subscriber that falls behind by more than
//! the buffer loses its place (it learns so and can resume from what it last saw).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;

use crate::core::{Cause, State, Timestamp};
use crate::error::Error;

/// Who acted, and why, for operator transitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorAction {
    pub operator: String,
    pub reason: String,
}

/// One state change of one breaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub sequence: u64,
    pub account_id: String,
    pub from: State,
    pub to: State,
    pub cause: Cause,
    /// What happened, for people.
    pub reason: String,
    pub failure_count: u32,
    pub at: Timestamp,
    pub generation: u64,
    pub recovery_at: Option<Timestamp>,
    pub operator: Option<OperatorAction>,
}

pub(crate) struct EventLog {
    inner: Mutex<Retained>,
    live: broadcast::Sender<Arc<Event>>,
}

struct Retained {
    last_sequence: u64,
    events: VecDeque<Arc<Event>>,
    capacity: usize,
}

/// A subscriber's starting point: what to replay, then the live feed.
pub(crate) struct Feed {
    /// Events after the requested sequence, oldest first (empty for a fresh subscriber).
    pub replay: Vec<Arc<Event>>,
    /// Events after `as_of`.
    pub live: broadcast::Receiver<Arc<Event>>,
    /// The latest sequence at the moment of subscribing.
    pub as_of: u64,
}

impl EventLog {
    pub fn new(capacity: usize, subscriber_buffer: usize) -> Self {
        let (live, _) = broadcast::channel(subscriber_buffer.max(1));
        EventLog {
            inner: Mutex::new(Retained {
                last_sequence: 0,
                events: VecDeque::with_capacity(capacity.min(1 << 16)),
                capacity,
            }),
            live,
        }
    }

    /// Puts back what a store recovered, before any subscriber exists.
    pub fn restore(&self, events: Vec<Arc<Event>>, last_sequence: u64) {
        let mut inner = self.lock();
        inner.last_sequence = last_sequence.max(events.last().map_or(0, |e| e.sequence));
        inner.events = events.into();
        while inner.events.len() > inner.capacity {
            inner.events.pop_front();
        }
    }

    /// Appends the event that `build` makes with the next sequence number.
    pub fn append(&self, build: impl FnOnce(u64) -> Event) -> Arc<Event> {
        let mut inner = self.lock();
        inner.last_sequence += 1;
        let event = Arc::new(build(inner.last_sequence));
        if inner.capacity > 0 {
            if inner.events.len() == inner.capacity {
                inner.events.pop_front();
            }
            inner.events.push_back(event.clone());
        }
        // No receivers is not an error: nobody is watching.
        let _ = self.live.send(event.clone());
        event
    }

    pub fn last_sequence(&self) -> u64 {
        self.lock().last_sequence
    }

    /// Starts a feed after `after` (replaying what is retained), or after the latest sequence.
    pub fn subscribe(&self, after: Option<u64>) -> Result<Feed, Error> {
        let inner = self.lock();
        let live = self.live.subscribe();
        let latest = inner.last_sequence;
        let replay = match after {
            None => Vec::new(),
            Some(after) if after > latest => return Err(Error::HistoryAhead { after, latest }),
            Some(after) => {
                let oldest = inner.events.front().map_or(latest + 1, |e| e.sequence);
                if after + 1 < oldest {
                    return Err(Error::HistoryExpired { after, oldest });
                }
                inner
                    .events
                    .iter()
                    .filter(|e| e.sequence > after)
                    .cloned()
                    .collect()
            }
        };
        Ok(Feed {
            replay,
            live,
            as_of: latest,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Retained> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
