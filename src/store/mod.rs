//! Persistence behind one narrow trait.
//!
//! The registry is the live truth; a [`Store`] keeps what must survive a restart (breaker
//! records and the retained events) and tells the registry when a change is durable. A store
//! never interprets breaker semantics: it writes and reads back plain records.
//!
//! Contract: `submit` is called with the account's shard lock held, so it must not block; it
//! applies batches in submission order; the returned [`Commit`] resolves once the batch is as
//! durable as the store promises. `load` is called once, before the service answers.

mod memory;

use std::sync::Arc;

use thiserror::Error;
use tokio::sync::oneshot;

use crate::core::BreakerRecord;
use crate::registry::Event;

pub use memory::MemoryStore;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// One account's breaker as persisted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBreaker {
    pub account_id: String,
    pub record: BreakerRecord,
    /// The sequence of the breaker's last event.
    pub last_sequence: u64,
}

/// What one registry operation changed, written atomically.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub breaker: Option<StoredBreaker>,
    pub events: Vec<Arc<Event>>,
}

/// Everything a store holds, read back at start-up.
#[derive(Debug, Default)]
pub struct Recovered {
    pub breakers: Vec<StoredBreaker>,
    /// Retained events, oldest first.
    pub events: Vec<Arc<Event>>,
    /// The latest sequence ever assigned (events may have been pruned since).
    pub last_sequence: u64,
}

pub trait Store: Send + Sync + 'static {
    fn load(&self) -> Result<Recovered, StoreError>;
    fn submit(&self, batch: Batch) -> Commit;
}

/// Resolves when a submitted batch is durable.
#[derive(Debug)]
pub struct Commit(CommitState);

#[derive(Debug)]
enum CommitState {
    Done(Result<(), StoreError>),
    Pending(oneshot::Receiver<Result<(), StoreError>>),
}

impl Commit {
    /// A batch that is already as durable as it will be.
    pub fn done(result: Result<(), StoreError>) -> Self {
        Commit(CommitState::Done(result))
    }

    /// A batch whose writer answers on `receiver`.
    pub fn pending(receiver: oneshot::Receiver<Result<(), StoreError>>) -> Self {
        Commit(CommitState::Pending(receiver))
    }

    pub async fn durable(self) -> Result<(), StoreError> {
        match self.0 {
            CommitState::Done(result) => result,
            CommitState::Pending(receiver) => receiver.await.unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the store writer stopped before confirming the write".into(),
                ))
            }),
        }
    }
}
