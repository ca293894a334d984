//! The service-wide event log: every transition gets the next sequence number, the last N are
//! retained for resuming watchers, and live subscribers are fed through a bounded broadcast.
//!
//! Appends happen with the account's shard lock held, so per-account order and sequence order
//! agree, and hand their batch to the store before letting go of the log, so the store writes
//! events in sequence order. Watchers see an event only once it is durable: a crash can never
//! take back an event someone was shown, nor reuse its sequence. The broadcast never blocks: a
//! subscriber that falls behind by more than the buffer loses its place (it learns so and can
//! resume from what it last saw).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::error::Error;
use crate::history::Event;

pub(crate) struct EventLog {
    inner: Mutex<Sequenced>,
    live: broadcast::Sender<Arc<Event>>,
}

/// The events given sequence numbers: those not yet durable, and those kept for resuming.
struct Sequenced {
    /// The last sequence assigned.
    last_sequence: u64,
    /// The last sequence shown to watchers: every event up to it is durable.
    published: u64,
    /// Events assigned a sequence but not yet durable, oldest first.
    unpublished: VecDeque<Arc<Event>>,
    /// Published events kept for resuming watchers, oldest first.
    retained: VecDeque<Arc<Event>>,
    capacity: usize,
    max_age: Duration,
}

/// A subscriber's starting point: what to replay, then the live feed.
pub(crate) struct Feed {
    /// Events after the requested sequence, oldest first (empty for a fresh subscriber).
    pub replay: Vec<Arc<Event>>,
    /// Events after `as_of`.
    pub live: broadcast::Receiver<Arc<Event>>,
    /// The latest published sequence at the moment of subscribing.
    pub as_of: u64,
}

impl EventLog {
    pub fn new(capacity: usize, max_age: Duration, subscriber_buffer: usize) -> Self {
        let (live, _) = broadcast::channel(subscriber_buffer.max(1));
        EventLog {
            inner: Mutex::new(Sequenced {
                last_sequence: 0,
                published: 0,
                unpublished: VecDeque::new(),
                retained: VecDeque::with_capacity(capacity.min(1 << 16)),
                capacity,
                max_age,
            }),
            live,
        }
    }

    /// Puts back what a store recovered (all of it durable), before any subscriber exists.
    pub fn restore(&self, events: Vec<Arc<Event>>, last_sequence: u64) {
        let mut log = self.lock();
        log.last_sequence = last_sequence.max(events.last().map_or(0, |e| e.sequence));
        log.published = log.last_sequence;
        for event in events {
            log.retain(event);
        }
    }

    /// Takes in an event a cluster's leader wrote, with its sequence; shown to watchers by
    /// `publish_through`. An event already held is ignored.
    pub fn replicate(&self, event: Arc<Event>) {
        let mut log = self.lock();
        if event.sequence <= log.last_sequence {
            return;
        }
        log.last_sequence = event.sequence;
        log.unpublished.push_back(event);
    }

    /// Numbers on after `sequence` (a cluster's leader assigned it), once every event held is
    /// published.
    pub fn advance(&self, sequence: u64) {
        let mut log = self.lock();
        if log.unpublished.is_empty() && sequence > log.last_sequence {
            log.last_sequence = sequence;
            log.published = sequence;
        }
    }

    /// Replaces everything with what a store holds (all of it durable): events not yet durable
    /// are dropped (nobody was shown them), and live subscribers are sent the durable events
    /// they have not seen.
    pub fn reset(&self, events: Vec<Arc<Event>>, last_sequence: u64) {
        let mut log = self.lock();
        let seen = log.published;
        log.unpublished.clear();
        log.retained.clear();
        log.last_sequence = last_sequence.max(events.last().map_or(0, |e| e.sequence));
        log.published = log.last_sequence.max(seen);
        for event in events {
            if event.sequence > seen {
                let _ = self.live.send(event.clone());
            }
            log.retain(event);
        }
    }

    /// Gives `events` the next sequence numbers and hands them to `submit` while still holding
    /// the log, so that batches reach the store in sequence order. They are shown to watchers
    /// by `publish_through` once durable.
    pub fn append<R>(&self, events: Vec<Event>, submit: impl FnOnce(Vec<Arc<Event>>) -> R) -> R {
        let mut log = self.lock();
        let events: Vec<Arc<Event>> = events
            .into_iter()
            .map(|mut event| {
                log.last_sequence += 1;
                event.sequence = log.last_sequence;
                let event = Arc::new(event);
                log.unpublished.push_back(event.clone());
                event
            })
            .collect();
        submit(events)
    }

    /// Shows watchers every event up to `durable`, in sequence order.
    pub fn publish_through(&self, durable: u64) {
        let mut log = self.lock();
        while log
            .unpublished
            .front()
            .is_some_and(|e| e.sequence <= durable)
        {
            if let Some(event) = log.unpublished.pop_front() {
                log.published = event.sequence;
                // No receivers is not an error: nobody is watching.
                let _ = self.live.send(event.clone());
                log.retain(event);
            }
        }
    }

    /// The latest sequence shown to watchers.
    pub fn published_sequence(&self) -> u64 {
        self.lock().published
    }

    /// The sequence to resume after to replay every retained event (the latest when none is).
    pub fn before_oldest_retained(&self) -> u64 {
        let log = self.lock();
        log.retained
            .front()
            .map_or(log.published, |e| e.sequence.saturating_sub(1))
    }

    /// Starts a feed after `after` (replaying what is retained), or after the latest sequence.
    pub fn subscribe(&self, after: Option<u64>) -> Result<Feed, Error> {
        let log = self.lock();
        let live = self.live.subscribe();
        let latest = log.published;
        let replay = match after {
            None => Vec::new(),
            Some(after) if after > latest => return Err(Error::HistoryAhead { after, latest }),
            Some(after) => {
                let oldest = log.retained.front().map_or(latest + 1, |e| e.sequence);
                if after + 1 < oldest {
                    return Err(Error::HistoryExpired { after, oldest });
                }
                log.retained
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Sequenced> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Sequenced {
    /// Keeps a published event, dropping the oldest beyond the count or the age.
    fn retain(&mut self, event: Arc<Event>) {
        if self.capacity == 0 {
            return;
        }
        let cutoff = event.at.saturating_sub(self.max_age);
        self.retained.push_back(event);
        while self.retained.len() > self.capacity
            || self.retained.front().is_some_and(|e| e.at < cutoff)
        {
            self.retained.pop_front();
        }
    }
}
