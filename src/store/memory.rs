//! The in-memory store: state survives a restart of the service inside one process (tests hand
//! the same store to a new server) but not a restart of the process. For tests and benchmarks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use super::{Batch, Commit, Recovered, Store, StoreError, StoredBreaker};
use crate::registry::Event;

#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    breakers: HashMap<String, StoredBreaker>,
    events: VecDeque<Arc<Event>>,
    last_sequence: u64,
    /// Events kept, like the registry's own retention.
    retained_events: usize,
}

impl MemoryStore {
    pub fn new(retained_events: usize) -> Self {
        MemoryStore {
            inner: Mutex::new(Inner {
                retained_events,
                ..Inner::default()
            }),
        }
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Recovered, StoreError> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(Recovered {
            breakers: inner.breakers.values().cloned().collect(),
            events: inner.events.iter().cloned().collect(),
            last_sequence: inner.last_sequence,
        })
    }

    fn submit(&self, batch: Batch) -> Commit {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(breaker) = batch.breaker {
            inner.breakers.insert(breaker.account_id.clone(), breaker);
        }
        for event in batch.events {
            inner.last_sequence = inner.last_sequence.max(event.sequence);
            inner.events.push_back(event);
        }
        while inner.events.len() > inner.retained_events {
            inner.events.pop_front();
        }
        Commit::done(Ok(()))
    }
}
