//! Shared by the benches that build a registry in process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use riskgate::clock::SystemClock;
use riskgate::history::AuditRecord;
use riskgate::registry::{Registry, RegistryOptions};
use riskgate::store::{
    AuditQuery, Batch, Commit, Loading, Recovered, Store, StoreError, StoreSignals,
};

/// A store that keeps nothing and calls every batch durable at once: what the registry itself
/// costs, without a store's copy of each breaker.
pub struct Discarding {
    ticket: AtomicU64,
    signals: Arc<StoreSignals>,
}

impl Store for Discarding {
    fn load_streaming(&self, _: &(dyn Fn(Loading) + Sync)) -> Result<Recovered, StoreError> {
        Ok(Recovered::default())
    }

    fn submit(&self, batch: Batch) -> Commit {
        let ticket = self.ticket.fetch_add(1, Ordering::SeqCst) + 1;
        let sequence = batch.events.last().map(|e| e.sequence);
        self.signals.wrote(sequence, ticket);
        Commit::durable_now(ticket)
    }

    fn signals(&self) -> Arc<StoreSignals> {
        self.signals.clone()
    }

    fn audit_records(&self, _: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(Vec::new())
    }
}

/// A loaded registry on a store that keeps nothing and the system clock, with room for
/// `accounts`.
pub fn in_memory_registry(accounts: usize) -> Registry {
    let options = RegistryOptions {
        max_accounts: accounts + 10,
        ..RegistryOptions::default()
    };
    let registry = Registry::new(
        options,
        Arc::new(Discarding {
            ticket: AtomicU64::new(0),
            signals: Arc::new(StoreSignals::new(0)),
        }),
        Arc::new(SystemClock::new()),
    );
    registry.load().expect("load");
    registry
}
