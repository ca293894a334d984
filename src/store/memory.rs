//! The in-memory store: state survives a restart of the service inside one process (tests hand
//! the same store to a new server) but not a restart of the process. For tests and benchmarks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use super::{
    AuditQuery, Batch, Commit, Loading, Recovered, Store, StoreError, StoreSignals, StoredBreaker,
};
use crate::history::{AuditRecord, Event, Halt, Scope};

#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    signals: Arc<StoreSignals>,
}

#[derive(Debug, Default)]
struct Inner {
    breakers: HashMap<String, StoredBreaker>,
    events: VecDeque<Arc<Event>>,
    audit: Vec<AuditRecord>,
    halts: Vec<(Scope, Halt)>,
    last_sequence: u64,
    /// The last batch's ticket.
    ticket: u64,
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
            signals: Arc::new(StoreSignals::new(0)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn load_streaming(&self, breakers: &(dyn Fn(Loading) + Sync)) -> Result<Recovered, StoreError> {
        let inner = self.lock();
        breakers(Loading::Expect(inner.breakers.len()));
        breakers(Loading::Breakers(
            inner.breakers.values().cloned().collect(),
        ));
        Ok(Recovered {
            breakers: Vec::new(),
            events: inner.events.iter().cloned().collect(),
            last_sequence: inner.last_sequence,
            halts: inner.halts.clone(),
        })
    }

    fn submit(&self, batch: Batch) -> Commit {
        let mut inner = self.lock();
        inner.ticket += 1;
        let ticket = inner.ticket;
        if let Some(breaker) = batch.breaker {
            inner.breakers.insert(breaker.account_id.clone(), breaker);
        }
        if let Some(account_id) = &batch.evicted {
            inner.breakers.remove(account_id);
        }
        let mut durable = None;
        for event in batch.events {
            inner.last_sequence = inner.last_sequence.max(event.sequence);
            durable = Some(inner.last_sequence);
            inner.events.push_back(event);
        }
        while inner.events.len() > inner.retained_events {
            inner.events.pop_front();
        }
        if let Some((layer, halt)) = batch.halt {
            inner.halts.retain(|(l, _)| *l != layer);
            if let Some(halt) = halt {
                inner.halts.push((layer, halt));
            }
        }
        if let Some(mut record) = batch.audit {
            record.id = inner.audit.len() as u64 + 1;
            inner.audit.push(record);
        }
        drop(inner);
        self.signals.wrote(durable, ticket);
        Commit::durable_now(ticket)
    }

    fn signals(&self) -> Arc<StoreSignals> {
        self.signals.clone()
    }

    fn audit_records(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .audit
            .iter()
            .rev()
            .filter(|r| query.before_id.is_none_or(|id| r.id < id))
            .filter(|r| query.account_id.as_ref().is_none_or(|a| &r.account_id == a))
            .filter(|r| query.since.is_none_or(|t| r.at >= t))
            .filter(|r| query.until.is_none_or(|t| r.at < t))
            .take(query.limit)
            .cloned()
            .collect())
    }
}
