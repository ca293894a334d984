//! What a cluster keeps in etcd, and how: the key layout under the configured prefix and the
//! encoding of each value. Pure (no etcd client), so it is tested without etcd.
//!
//! ```text
//! {prefix}/leader               the leader's key, held with its lease; its create revision
//!                               is the leader's epoch
//! {prefix}/nodes/{node_id}      each node: its address and how current its mirror is
//! {prefix}/breakers/{account}   a breaker record (the same protobuf row as SQLite's)
//! {prefix}/events/{sequence}    retained events, the sequence zero-padded to 20 digits
//! {prefix}/halts/{scope}        halts in force ("firm", "group:{name}")
//! {prefix}/audit/{id}           the audit trail (bounded: etcd is not an archive)
//! {prefix}/counters             the last event sequence and audit id ever assigned
//! ```
//!
//! Accounts are keyed by id under one `breakers/` range, so that accounts can later be split
//! between leaders by range without moving keys.

use serde::{Deserialize, Serialize};

use crate::core::Timestamp;
use crate::history::{AuditAction, AuditRecord, Scope};
use crate::store::rows;
use crate::store::StoredBreaker;

/// The keys of one riskgate cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    /// The prefix, ending with `/`.
    prefix: String,
}

/// What a key under the prefix is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    Leader,
    Node(String),
    Breaker(String),
    Event(u64),
    Halt(Scope),
    Audit(u64),
    Counters,
}

impl Keys {
    /// The keys under `prefix` (a trailing `/` is added when missing).
    pub fn new(prefix: &str) -> Self {
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Keys { prefix }
    }

    /// Every key of the cluster starts with this.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn leader(&self) -> String {
        format!("{}leader", self.prefix)
    }

    pub fn nodes(&self) -> String {
        format!("{}nodes/", self.prefix)
    }

    pub fn node(&self, node_id: &str) -> String {
        format!("{}nodes/{node_id}", self.prefix)
    }

    pub fn breaker(&self, account_id: &str) -> String {
        format!("{}breakers/{account_id}", self.prefix)
    }

    pub fn events(&self) -> String {
        format!("{}events/", self.prefix)
    }

    pub fn event(&self, sequence: u64) -> String {
        format!("{}events/{sequence:020}", self.prefix)
    }

    pub fn halt(&self, scope: &Scope) -> String {
        format!("{}halts/{}", self.prefix, rows::halt_key(scope))
    }

    pub fn audits(&self) -> String {
        format!("{}audit/", self.prefix)
    }

    pub fn audit(&self, id: u64) -> String {
        format!("{}audit/{id:020}", self.prefix)
    }

    pub fn counters(&self) -> String {
        format!("{}counters", self.prefix)
    }

    /// What `key` is, or `None` for a key riskgate does not write (left alone).
    pub fn classify(&self, key: &[u8]) -> Option<Key> {
        let key = std::str::from_utf8(key).ok()?.strip_prefix(&self.prefix)?;
        if key == "leader" {
            return Some(Key::Leader);
        }
        if key == "counters" {
            return Some(Key::Counters);
        }
        let (kind, rest) = key.split_once('/')?;
        match kind {
            "nodes" => Some(Key::Node(rest.to_owned())),
            "breakers" => Some(Key::Breaker(rest.to_owned())),
            "events" => rest.parse().ok().map(Key::Event),
            "halts" => rows::halt_scope(rest).map(Key::Halt),
            "audit" => rest.parse().ok().map(Key::Audit),
            _ => None,
        }
    }
}

/// The end of the range of keys starting with `prefix` (etcd's "prefix end").
pub fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A breaker's value: its last event's sequence (8 bytes, little-endian), then the record.
pub fn encode_breaker(stored: &StoredBreaker) -> Vec<u8> {
    let mut value = Vec::with_capacity(72);
    value.extend(stored.last_sequence.to_le_bytes());
    rows::encode_breaker_into(
        &stored.record,
        stored.mode,
        stored.settings.as_deref(),
        &mut value,
    );
    value
}

pub fn decode_breaker(account_id: &str, value: &[u8]) -> Result<StoredBreaker, String> {
    let (sequence, record) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| format!("the breaker of {account_id} is shorter than its header"))?;
    let decoded = rows::decode_breaker(record)?;
    Ok(StoredBreaker {
        account_id: account_id.to_owned(),
        record: decoded.record,
        last_sequence: u64::from_le_bytes(*sequence),
        mode: decoded.mode,
        settings: decoded.settings.map(std::sync::Arc::new),
    })
}

/// The last event sequence and audit id ever assigned (events and records may be pruned
/// since), so that numbering goes on across failovers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub last_sequence: u64,
    pub last_audit_id: u64,
}

impl Counters {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(value: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(value).map_err(|e| format!("the counters do not decode: {e}"))
    }
}

/// An audit record as kept in etcd (JSON: read by operators with `etcdctl` too).
#[derive(Serialize, Deserialize)]
struct AuditValue {
    id: u64,
    at_unix_nanos: u64,
    account_id: String,
    group: String,
    action: String,
    operator: String,
    reason: String,
    state_before: String,
    state_after: String,
    peer: String,
    detail: String,
}

pub fn encode_audit(record: &AuditRecord) -> Vec<u8> {
    serde_json::to_vec(&AuditValue {
        id: record.id,
        at_unix_nanos: record.at.as_unix_nanos(),
        account_id: record.account_id.clone(),
        group: record.group.clone(),
        action: record.action.as_str().to_owned(),
        operator: record.operator.clone(),
        reason: record.reason.clone(),
        state_before: rows::state_name(record.state_before).to_owned(),
        state_after: rows::state_name(record.state_after).to_owned(),
        peer: record.peer.clone(),
        detail: record.detail.clone(),
    })
    .unwrap_or_default()
}

pub fn decode_audit(value: &[u8]) -> Result<AuditRecord, String> {
    let value: AuditValue = serde_json::from_slice(value)
        .map_err(|e| format!("an audit record does not decode: {e}"))?;
    let state = |name: &str| {
        rows::state_from_name(name).ok_or_else(|| format!("an audit record names no state: {name}"))
    };
    Ok(AuditRecord {
        id: value.id,
        at: Timestamp::from_unix_nanos(value.at_unix_nanos),
        account_id: value.account_id,
        group: value.group,
        action: AuditAction::parse(&value.action)
            .ok_or_else(|| format!("an audit record names no action: {}", value.action))?,
        operator: value.operator,
        reason: value.reason,
        state_before: state(&value.state_before)?,
        state_after: state(&value.state_after)?,
        peer: value.peer,
        detail: value.detail,
    })
}

/// What a node says of itself under `nodes/`, for `riskgate cluster`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: String,
    /// The address clients use.
    pub advertise: String,
    /// The etcd lease the record (and the leader key, while leader) is held with.
    pub lease_id: i64,
    /// The latest revision its mirror has applied.
    pub applied_revision: i64,
    /// When it wrote this (Unix milliseconds, its wall clock).
    pub updated_unix_ms: u64,
}

impl NodeRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(value: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(value).map_err(|e| format!("a node record does not decode: {e}"))
    }
}

/// The leader key's value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub node_id: String,
    pub advertise: String,
}

impl LeaderRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(value: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(value).map_err(|e| format!("the leader key does not decode: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{BreakerRecord, State};

    #[test]
    fn every_key_written_classifies_back_to_what_it_names() {
        let keys = Keys::new("/riskgate");
        assert_eq!(keys.prefix(), "/riskgate/");
        let cases = [
            (keys.leader(), Key::Leader),
            (keys.counters(), Key::Counters),
            (keys.node("a-1"), Key::Node("a-1".into())),
            (keys.breaker("ACC:1/x"), Key::Breaker("ACC:1/x".into())),
            (keys.event(42), Key::Event(42)),
            (keys.halt(&Scope::Firm), Key::Halt(Scope::Firm)),
            (
                keys.halt(&Scope::Group("desk".into())),
                Key::Halt(Scope::Group("desk".into())),
            ),
            (keys.audit(7), Key::Audit(7)),
        ];
        for (key, expected) in cases {
            assert_eq!(keys.classify(key.as_bytes()), Some(expected), "{key}");
        }
        assert_eq!(keys.classify(b"/other/leader"), None);
        assert_eq!(keys.classify(b"/riskgate/events/not-a-number"), None);
        assert_eq!(keys.classify(b"/riskgate/unknown/x"), None);
    }

    #[test]
    fn events_and_audit_keys_sort_in_number_order() {
        let keys = Keys::new("p/");
        assert!(keys.event(9) < keys.event(10));
        assert!(keys.audit(99) < keys.audit(100));
        assert_eq!(range_end("p/events/"), b"p/events0".to_vec());
    }

    #[test]
    fn a_breaker_survives_its_encoding() {
        let stored = StoredBreaker {
            account_id: "ACC-1".into(),
            record: BreakerRecord {
                state: State::Open,
                ..rows::tests::record(Vec::new())
            },
            last_sequence: 77,
            mode: None,
            settings: Some(std::sync::Arc::new(crate::core::Overrides {
                failure_threshold: Some(3),
                ..crate::core::Overrides::default()
            })),
        };
        let value = encode_breaker(&stored);
        assert_eq!(decode_breaker("ACC-1", &value), Ok(stored));
        assert!(decode_breaker("ACC-1", &value[..4]).is_err());
    }

    #[test]
    fn an_audit_record_survives_its_encoding() {
        let record = AuditRecord {
            id: 12,
            at: Timestamp::from_unix_nanos(1_700_000_000_123_456_789),
            account_id: "ACC-1".into(),
            group: String::new(),
            action: AuditAction::Trip,
            operator: "ops".into(),
            reason: "drill".into(),
            state_before: State::Closed,
            state_after: State::Open,
            peer: "127.0.0.1:1".into(),
            detail: String::new(),
        };
        assert_eq!(decode_audit(&encode_audit(&record)), Ok(record));
        assert!(decode_audit(b"{}").is_err());
    }
}
