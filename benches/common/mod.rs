//! Shared by the benches that build a registry in process.

use std::sync::Arc;

use riskgate::clock::SystemClock;
use riskgate::registry::{Registry, RegistryOptions};
use riskgate::store::MemoryStore;

/// A loaded registry on the in-memory store and the system clock, with room for `accounts`.
pub fn in_memory_registry(accounts: usize) -> Registry {
    let options = RegistryOptions {
        max_accounts: accounts + 10,
        ..RegistryOptions::default()
    };
    let registry = Registry::new(
        options,
        Arc::new(MemoryStore::new(1000)),
        Arc::new(SystemClock::new()),
    );
    registry.load().expect("load");
    registry
}
