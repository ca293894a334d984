//! Where console sessions live: in this process's memory, bounded. Sessions end on restart
//! (operators sign in again); a process that runs for months keeps at most
//! [`MAX_SESSIONS`], dropping expired ones first and then those closest to expiring.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tower_sessions::cookie::time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

/// Most sessions kept at once: far more than a desk has operators.
pub const MAX_SESSIONS: usize = 1_000;

/// Clones share the sessions (the session layer is cloned with the router).
#[derive(Clone, Debug)]
pub struct BoundedStore {
    records: Arc<Mutex<HashMap<Id, Record>>>,
    max: usize,
}

impl BoundedStore {
    pub fn new(max: usize) -> Self {
        BoundedStore {
            records: Arc::new(Mutex::new(HashMap::new())),
            max: max.max(1),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Id, Record>) -> T) -> T {
        f(&mut self.records.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Makes room for one more session.
    fn make_room(records: &mut HashMap<Id, Record>, max: usize) {
        if records.len() < max {
            return;
        }
        let now = OffsetDateTime::now_utc();
        records.retain(|_, r| r.expiry_date > now);
        while records.len() >= max {
            let Some(first) = records.values().min_by_key(|r| r.expiry_date).map(|r| r.id) else {
                break;
            };
            records.remove(&first);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.with(|records| records.len())
    }
}

#[tonic::async_trait]
impl SessionStore for BoundedStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.with(|records| {
            while records.contains_key(&record.id) {
                record.id = Id::default();
            }
            Self::make_room(records, self.max);
            records.insert(record.id, record.clone());
        });
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.with(|records| {
            if !records.contains_key(&record.id) {
                Self::make_room(records, self.max);
            }
            records.insert(record.id, record.clone());
        });
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let now = OffsetDateTime::now_utc();
        Ok(self.with(|records| match records.get(id) {
            Some(record) if record.expiry_date > now => Some(record.clone()),
            Some(_) => {
                records.remove(id);
                None
            }
            None => None,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.with(|records| records.remove(id));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(expires_in_secs: i64) -> Record {
        Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date: OffsetDateTime::now_utc()
                + tower_sessions::cookie::time::Duration::seconds(expires_in_secs),
        }
    }

    #[tokio::test]
    async fn the_store_stays_bounded_dropping_expired_then_soonest_to_expire() {
        let store = BoundedStore::new(3);
        let mut expired = record(-1);
        let mut soon = record(10);
        let mut later = record(100);
        store.create(&mut expired).await.unwrap();
        store.create(&mut soon).await.unwrap();
        store.create(&mut later).await.unwrap();
        assert_eq!(store.len(), 3);
        let mut fourth = record(50);
        store.create(&mut fourth).await.unwrap();
        assert_eq!(store.len(), 3, "the expired session made room");
        assert!(store.load(&expired.id).await.unwrap().is_none());
        let mut fifth = record(60);
        store.create(&mut fifth).await.unwrap();
        assert_eq!(store.len(), 3);
        assert!(
            store.load(&soon.id).await.unwrap().is_none(),
            "the session closest to expiring gave way"
        );
        for kept in [&later, &fourth, &fifth] {
            assert!(store.load(&kept.id).await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn an_expired_session_does_not_load() {
        let store = BoundedStore::new(10);
        let mut gone = record(-5);
        store.create(&mut gone).await.unwrap();
        assert!(store.load(&gone.id).await.unwrap().is_none());
        assert_eq!(store.len(), 0);
    }
}
