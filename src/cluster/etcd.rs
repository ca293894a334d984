//! The store of a cluster node: every change the leader makes goes to etcd in one transaction
//! conditioned on the leader's epoch, many changes to a transaction (group commit), in the
//! order they were submitted. A deposed leader's transactions fail in etcd whatever it
//! believes, and its callers are answered `UNAVAILABLE`, never success.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp,
};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, Notify};

use super::keys::{self, Counters, Key, Keys};
use crate::core::Timestamp;
use crate::history::AuditRecord;
use crate::store::{
    AuditQuery, AuditRetention, Batch, Commit, Loading, Recovered, Store, StoreError, StoreSignals,
    StoredBreaker, LOAD_CHUNK,
};

/// etcd, reached one member at a time: a client per configured endpoint, and the one in use.
/// After a failure on the member in use the next call goes to the next member (see
/// [`Etcd::failed`]); calls and streams already on a healthy member are left alone.
///
/// (One client balancing over every endpoint was tried first: after a member died, calls kept
/// failing for tens of seconds, and a member that came back was not used again.)
pub struct Etcd {
    clients: Vec<Client>,
    endpoints: Vec<String>,
    current: AtomicUsize,
}

/// A client of one etcd member, as [`Etcd::client`] hands it out: a failure on it moves the
/// calls to the next member only if it is still the one in use.
pub(super) struct Member {
    index: usize,
    client: Client,
}

impl std::ops::Deref for Member {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Member {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Etcd {
    /// A client for each of `endpoints` (connections are made as calls need them).
    pub(super) async fn connect(
        endpoints: &[String],
        options: etcd_client::ConnectOptions,
    ) -> Result<Etcd, String> {
        let mut clients = Vec::new();
        for endpoint in endpoints {
            let client = Client::connect([endpoint], Some(options.clone()))
                .await
                .map_err(|e| format!("cannot use etcd endpoint {endpoint}: {e}"))?;
            clients.push(client);
        }
        if clients.is_empty() {
            return Err("no etcd endpoint configured".into());
        }
        Ok(Etcd {
            clients,
            endpoints: endpoints.to_vec(),
            current: AtomicUsize::new(0),
        })
    }

    /// The client of the member in use.
    pub(super) fn client(&self) -> Member {
        let index = self.current.load(Ordering::Acquire) % self.clients.len();
        Member {
            index,
            client: self.clients[index].clone(),
        }
    }

    /// A call (or stream) on `member` failed for `why`: the next calls go to the next member,
    /// unless they already left `member`. A failure of a call or stream made on a member
    /// already left behind says nothing of the one in use; moving on it too would have the
    /// node's lease, watch and writes (each failing on the dead member in its own time) push
    /// one another round the members, away from the ones that answer.
    pub(super) fn failed(&self, member: &Member, why: &str) {
        let members = self.clients.len();
        if members < 2 {
            return;
        }
        let next = (member.index + 1) % members;
        if self
            .current
            .compare_exchange(member.index, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::warn!(
                error = why,
                failed = %self.endpoints[member.index],
                now_using = %self.endpoints[next],
                "an etcd call failed; using the next etcd member"
            );
        }
    }
}

/// What the store is built with.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    pub keys: Keys,
    /// Operations per transaction at most (etcd's `--max-txn-ops`).
    pub max_txn_ops: usize,
    pub retained_events: usize,
    pub retained_age: Duration,
    pub audit: AuditRetention,
    /// Audit records kept in etcd at most.
    pub audit_records: usize,
    /// How long one transaction may take before it is retried.
    pub request_timeout: Duration,
}

/// A cluster node's store: etcd, written only by the leader, fenced by its epoch.
pub struct EtcdStore {
    shared: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) options: EtcdOptions,
    pub(super) etcd: Arc<Etcd>,
    pub(super) signals: Arc<StoreSignals>,
    queue: Mutex<Queue>,
    wake: Notify,
    /// The epoch writes are fenced with; 0 while this node is not the leader (writes refused).
    epoch: AtomicI64,
    /// Batches taken from the queue and not yet answered.
    in_flight: AtomicUsize,
    /// Told when etcd refused a write because the epoch no longer holds.
    pub(super) deposed: Notify,
    /// What the cluster held when the node started, handed to the registry's load.
    initial: Mutex<Option<Recovered>>,
    runtime: Handle,
}

struct Queue {
    next_ticket: u64,
    pending: VecDeque<Pending>,
    counters: Counters,
    closed: bool,
}

struct Pending {
    ticket: u64,
    /// The epoch the batch was made under: it is written under that epoch or not at all (a
    /// node that lost its leadership and won again reloaded its registry in between, so a batch
    /// of the earlier epoch no longer describes it).
    epoch: i64,
    batch: Batch,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// One write to etcd.
enum Write {
    Put(Vec<u8>),
    Delete,
}

/// What the cluster holds, read at one revision.
pub(super) struct Snapshot {
    pub(super) recovered: Recovered,
    pub(super) counters: Counters,
    pub(super) revision: i64,
}

fn unavailable(what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(what.to_string())
}

impl EtcdStore {
    pub(super) fn new(etcd: Arc<Etcd>, options: EtcdOptions, snapshot: Snapshot) -> Self {
        let signals = Arc::new(StoreSignals::new(snapshot.recovered.last_sequence));
        // A cluster node decides nothing until its leadership says it may.
        signals.set_authority(None, "cluster: this node has not yet joined the cluster");
        EtcdStore {
            shared: Arc::new(Shared {
                options,
                etcd,
                signals,
                queue: Mutex::new(Queue {
                    next_ticket: 0,
                    pending: VecDeque::new(),
                    counters: snapshot.counters,
                    closed: false,
                }),
                wake: Notify::new(),
                epoch: AtomicI64::new(0),
                in_flight: AtomicUsize::new(0),
                deposed: Notify::new(),
                initial: Mutex::new(Some(snapshot.recovered)),
                runtime: Handle::current(),
            }),
        }
    }

    pub(super) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This node won at `epoch`: its writes are fenced with it from now on, numbered on from
    /// `counters` (read after the win, so nothing older than what the cluster holds).
    pub(super) fn begin_epoch(&self, epoch: i64, counters: Counters) {
        let mut queue = self.queue();
        queue.counters = counters;
        self.epoch.store(epoch, Ordering::Release);
        // A write that failed under an earlier epoch was answered and dropped with it: nothing
        // is left to retry, and this epoch starts able to write.
        self.signals.wrote(None, 0);
    }

    /// This node is no longer the leader: nothing more is written, and everything waiting to
    /// be written is answered `UNAVAILABLE` (it will never be written by this node).
    pub(super) fn end_epoch(&self, why: &str) {
        self.epoch.store(0, Ordering::Release);
        let dropped: Vec<Pending> = self.queue().pending.drain(..).collect();
        for pending in dropped {
            let _ = pending.reply.send(Err(unavailable(format!(
                "cluster: not written, {why}; retry against the leader"
            ))));
        }
        self.wake.notify_one();
    }

    pub(super) fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Writes what is submitted, in order, until the store closes. Spawned once per node.
    pub(super) async fn run_writer(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(20);
        loop {
            let taken = self.take();
            if taken.is_empty() {
                if self.queue().closed {
                    return;
                }
                self.wake.notified().await;
                continue;
            }
            let (writes, counters, latest_sequence) = self.compose(&taken);
            let epoch = taken.first().map_or(0, |p| p.epoch);
            loop {
                if epoch == 0 || self.epoch() != epoch {
                    self.answer(taken, Err(unavailable("cluster: this node lost its leadership while writing the change, which may or may not be in etcd; read it back from the leader, or retry there")));
                    break;
                }
                match self.commit(epoch, &writes, counters).await {
                    Ok(true) => {
                        backoff = Duration::from_millis(20);
                        let last_ticket = taken.last().map_or(0, |p| p.ticket);
                        self.queue().counters = counters;
                        self.signals.wrote(latest_sequence, last_ticket);
                        self.answer(taken, Ok(()));
                        break;
                    }
                    Ok(false) => {
                        tracing::error!(
                            epoch,
                            "etcd refused a write: this node's leadership no longer holds"
                        );
                        // Unless the node has won again meanwhile (a newer epoch).
                        let _ = self.epoch.compare_exchange(
                            epoch,
                            0,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        );
                        self.deposed.notify_one();
                        self.answer(taken, Err(unavailable("cluster: this node is no longer the leader (etcd refused its write); retry against the leader")));
                        break;
                    }
                    Err(error) => {
                        if self.epoch() != epoch {
                            // The change's epoch ended while it was being written (it is
                            // answered at the loop's top): its failure says nothing of the
                            // epoch in force, which a win started able to write.
                            continue;
                        }
                        self.signals
                            .failed(&format!("cluster: etcd did not take a write: {error}"));
                        if self.epoch() != epoch {
                            // A win came between the two looks and its fresh start was
                            // recorded before this failure. This task writes every epoch, so
                            // the new one has neither written nor failed yet: it stays able
                            // to write, or no change would ever reach the writer to clear it.
                            self.signals.wrote(None, 0);
                            continue;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(500));
                    }
                }
            }
        }
    }

    /// The batches to write next: as many as fit one transaction, in submission order.
    fn take(&self) -> Vec<Pending> {
        let mut queue = self.queue();
        // Two operations per transaction are the counters and the events' retention.
        let budget = self.options.max_txn_ops.saturating_sub(2).max(1);
        let mut used = 0;
        let mut taken = Vec::new();
        while let Some(next) = queue.pending.front() {
            let ops = operations(&next.batch);
            let other_epoch = taken
                .first()
                .is_some_and(|p: &Pending| p.epoch != next.epoch);
            if !taken.is_empty() && (used + ops > budget || other_epoch) {
                break;
            }
            used += ops;
            if let Some(pending) = queue.pending.pop_front() {
                taken.push(pending);
            }
        }
        self.in_flight.fetch_add(taken.len(), Ordering::AcqRel);
        taken
    }

    fn answer(&self, taken: Vec<Pending>, result: Result<(), StoreError>) {
        let count = taken.len();
        for pending in taken {
            let _ = pending.reply.send(result.clone());
        }
        self.in_flight.fetch_sub(count, Ordering::AcqRel);
    }

    /// The writes of `taken`, one per key (a later batch's value replaces an earlier one's:
    /// etcd takes a key once per transaction), the counters after them, and the latest
    /// sequence among their events.
    fn compose(&self, taken: &[Pending]) -> (BTreeMap<String, Write>, Counters, Option<u64>) {
        let keys = &self.options.keys;
        let mut counters = self.queue().counters;
        let mut writes = BTreeMap::new();
        let mut latest = None;
        for Pending { batch, .. } in taken {
            if let Some(stored) = &batch.breaker {
                writes.insert(
                    keys.breaker(&stored.account_id),
                    Write::Put(keys::encode_breaker(stored)),
                );
            }
            for event in &batch.events {
                latest = Some(event.sequence);
                counters.last_sequence = counters.last_sequence.max(event.sequence);
                if self.options.retained_events > 0 {
                    writes.insert(
                        keys.event(event.sequence),
                        Write::Put(crate::store::rows::encode_event(event)),
                    );
                }
            }
            if let Some(audit) = &batch.audit {
                counters.last_audit_id += 1;
                let record = AuditRecord {
                    id: counters.last_audit_id,
                    ..audit.clone()
                };
                writes.insert(
                    keys.audit(record.id),
                    Write::Put(keys::encode_audit(&record)),
                );
            }
            if let Some(account_id) = &batch.evicted {
                writes.insert(keys.breaker(account_id), Write::Delete);
            }
            if let Some((scope, halt)) = &batch.halt {
                let write = match halt {
                    Some(halt) => Write::Put(crate::store::rows::encode_halt(halt)),
                    None => Write::Delete,
                };
                writes.insert(keys.halt(scope), write);
            }
        }
        (writes, counters, latest)
    }

    /// One transaction: every write, if this node's epoch still holds. `Ok(false)`: it does not.
    async fn commit(
        &self,
        epoch: i64,
        writes: &BTreeMap<String, Write>,
        counters: Counters,
    ) -> Result<bool, String> {
        let keys = &self.options.keys;
        let mut ops: Vec<TxnOp> = writes
            .iter()
            .map(|(key, write)| match write {
                Write::Put(value) => TxnOp::put(key.as_str(), value.clone(), None),
                Write::Delete => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        ops.push(TxnOp::put(keys.counters(), counters.encode(), None));
        let retained = self.options.retained_events as u64;
        if retained > 0 && counters.last_sequence > retained {
            // Events beyond the retained count go in the same transaction; no key written
            // above is in this range.
            let below = counters.last_sequence - retained + 1;
            ops.push(TxnOp::delete(
                keys.event(0),
                Some(DeleteOptions::new().with_range(keys.event(below))),
            ));
        }
        let txn = fenced(keys, epoch, ops);
        let mut client = self.etcd.client();
        let result = match tokio::time::timeout(self.options.request_timeout, client.txn(txn)).await
        {
            Ok(Ok(response)) => Ok(response.succeeded()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!(
                "no answer within {:?}",
                self.options.request_timeout
            )),
        };
        if let Err(error) = &result {
            self.etcd.failed(&client, error);
        }
        result
    }

    /// Prunes the audit trail and old events in etcd (leader only), fenced like every write;
    /// says how many keys went.
    pub(super) async fn prune(&self, now: Timestamp) -> Result<u64, String> {
        let epoch = self.epoch();
        if epoch == 0 {
            return Ok(0);
        }
        let keys = &self.options.keys;
        let counters = self.queue().counters;
        let mut pruned = 0;
        // By count: etcd's bound, and [audit] retain_records when set.
        let mut keep = self.options.audit_records as u64;
        if let Some(records) = self.options.audit.records {
            keep = keep.min(records);
        }
        let mut below_id = counters.last_audit_id.saturating_sub(keep) + 1;
        // By age: the oldest records, a page of them.
        if let Some(max_age) = self.options.audit.max_age {
            let cutoff = now.saturating_sub(max_age);
            for value in self.oldest(&keys.audits()).await? {
                match keys::decode_audit(&value) {
                    Ok(record) if record.at < cutoff => below_id = below_id.max(record.id + 1),
                    _ => break,
                }
            }
        }
        // Events past their age, the oldest first.
        let mut below_sequence = 0;
        if self.options.retained_events > 0 {
            let cutoff = now.saturating_sub(self.options.retained_age);
            for value in self.oldest(&keys.events()).await? {
                match crate::store::rows::decode_event(&value) {
                    Ok(event) if event.at < cutoff => below_sequence = event.sequence + 1,
                    _ => break,
                }
            }
        }
        let mut ops = Vec::new();
        if below_sequence > 0 {
            ops.push(TxnOp::delete(
                keys.event(0),
                Some(DeleteOptions::new().with_range(keys.event(below_sequence))),
            ));
        }
        if below_id > 1 {
            ops.push(TxnOp::delete(
                keys.audit(0),
                Some(DeleteOptions::new().with_range(keys.audit(below_id))),
            ));
        }
        if ops.is_empty() {
            return Ok(0);
        }
        let txn = fenced(keys, epoch, ops);
        let mut client = self.etcd.client();
        let response = client.txn(txn).await.map_err(|e| {
            self.etcd.failed(&client, &e.to_string());
            e.to_string()
        })?;
        for op in response.op_responses() {
            if let etcd_client::TxnOpResponse::Delete(deleted) = op {
                pruned += deleted.deleted().max(0) as u64;
            }
        }
        Ok(pruned)
    }
}

impl Shared {
    /// The values of the first keys under `prefix` (the oldest, for zero-padded numbers), a
    /// page of them.
    async fn oldest(&self, prefix: &str) -> Result<Vec<Vec<u8>>, String> {
        let mut client = self.etcd.client();
        let mut page = client
            .get(
                prefix,
                Some(
                    GetOptions::new()
                        .with_range(keys::range_end(prefix))
                        .with_limit(512),
                ),
            )
            .await
            .map_err(|e| {
                self.etcd.failed(&client, &e.to_string());
                e.to_string()
            })?;
        Ok(page
            .take_kvs()
            .into_iter()
            .map(|kv| kv.into_key_value().1)
            .collect())
    }
}

/// `ops` in one transaction that takes effect only while the leader key is the one created at
/// `epoch`: every write a leader makes.
fn fenced(keys: &Keys, epoch: i64, ops: Vec<TxnOp>) -> Txn {
    Txn::new()
        .when([Compare::create_revision(
            keys.leader(),
            CompareOp::Equal,
            epoch,
        )])
        .and_then(ops)
}

/// etcd operations a batch takes.
fn operations(batch: &Batch) -> usize {
    usize::from(batch.breaker.is_some())
        + batch.events.len()
        + usize::from(batch.audit.is_some())
        + usize::from(batch.halt.is_some())
        + usize::from(batch.evicted.is_some())
}

/// Reads everything under the cluster's prefix at one revision, a page at a time.
pub(super) async fn read_snapshot(etcd: &Etcd, keys: &Keys) -> Result<Snapshot, String> {
    let mut client = etcd.client();
    let end = keys::range_end(keys.prefix());
    let mut from = keys.prefix().as_bytes().to_vec();
    let mut revision = 0;
    let mut snapshot = Snapshot {
        recovered: Recovered::default(),
        counters: Counters::default(),
        revision: 0,
    };
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(1024);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut page = client.get(from.clone(), Some(options)).await.map_err(|e| {
            etcd.failed(&client, &e.to_string());
            format!("cannot read the cluster's state from etcd: {e}")
        })?;
        if revision == 0 {
            revision = page.header().map_or(0, |h| h.revision());
        }
        let more = page.more();
        let kvs = page.take_kvs();
        let Some(last) = kvs.last() else { break };
        from = last.key().to_vec();
        from.push(0);
        for kv in &kvs {
            let damaged = |e: String| format!("{} in etcd: {e}", String::from_utf8_lossy(kv.key()));
            match keys.classify(kv.key()) {
                Some(Key::Breaker(account_id)) => snapshot
                    .recovered
                    .breakers
                    .push(keys::decode_breaker(&account_id, kv.value()).map_err(damaged)?),
                Some(Key::Event(_)) => snapshot.recovered.events.push(Arc::new(
                    crate::store::rows::decode_event(kv.value()).map_err(damaged)?,
                )),
                Some(Key::Halt(scope)) => snapshot.recovered.halts.push((
                    scope,
                    crate::store::rows::decode_halt(kv.value()).map_err(damaged)?,
                )),
                Some(Key::Counters) => {
                    snapshot.counters = Counters::decode(kv.value()).map_err(damaged)?
                }
                _ => {}
            }
        }
        if !more {
            break;
        }
    }
    snapshot.recovered.events.sort_by_key(|e| e.sequence);
    snapshot.recovered.last_sequence = snapshot
        .counters
        .last_sequence
        .max(snapshot.recovered.events.last().map_or(0, |e| e.sequence));
    snapshot.revision = revision;
    Ok(snapshot)
}

impl Store for EtcdStore {
    fn load_streaming(&self, breakers: &(dyn Fn(Loading) + Sync)) -> Result<Recovered, StoreError> {
        let mut recovered = self
            .shared
            .initial
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| unavailable("the cluster's state was already loaded"))?;
        let all: Vec<StoredBreaker> = std::mem::take(&mut recovered.breakers);
        breakers(Loading::Expect(all.len()));
        let mut all = all.into_iter().peekable();
        while all.peek().is_some() {
            breakers(Loading::Breakers(all.by_ref().take(LOAD_CHUNK).collect()));
        }
        Ok(recovered)
    }

    fn submit(&self, batch: Batch) -> Commit {
        let shared = &self.shared;
        let mut queue = shared.queue();
        if queue.closed {
            return Commit::refused(unavailable("the store is closed"));
        }
        if shared.epoch() == 0 {
            return Commit::refused(unavailable(
                "cluster: this node is not the leader; retry against the leader",
            ));
        }
        queue.next_ticket += 1;
        let ticket = queue.next_ticket;
        let (reply, receiver) = oneshot::channel();
        queue.pending.push_back(Pending {
            ticket,
            epoch: shared.epoch(),
            batch,
            reply,
        });
        drop(queue);
        shared.wake.notify_one();
        Commit::pending(ticket, receiver)
    }

    fn close(&self) -> Result<(), StoreError> {
        let shared = &self.shared;
        shared.queue().closed = true;
        shared.wake.notify_one();
        // What was submitted is written (or refused) within one request's timeout or two.
        let deadline = std::time::Instant::now() + shared.options.request_timeout * 2;
        loop {
            let left = shared.queue().pending.len() + shared.in_flight.load(Ordering::Acquire);
            if left == 0 {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(unavailable(format!(
                    "{left} changes were not written to etcd before the stop"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signals(&self) -> Arc<StoreSignals> {
        self.shared.signals.clone()
    }

    fn audit_records(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let shared = &self.shared;
        let keys = &shared.options.keys;
        let mut client = shared.etcd.client();
        let mut end = match query.before_id {
            Some(id) => keys.audit(id).into_bytes(),
            None => keys::range_end(&keys.audits()),
        };
        let start = keys.audit(0);
        let mut found = Vec::new();
        shared.runtime.block_on(async {
            loop {
                let page = client
                    .get(
                        start.as_str(),
                        Some(
                            GetOptions::new()
                                .with_range(end.clone())
                                .with_sort(SortTarget::Key, SortOrder::Descend)
                                .with_limit(256),
                        ),
                    )
                    .await
                    .map_err(|e| unavailable(format!("cannot read the audit trail: {e}")))?;
                let kvs = page.kvs();
                let Some(last) = kvs.last() else {
                    return Ok(());
                };
                end = last.key().to_vec();
                for kv in kvs {
                    let record = keys::decode_audit(kv.value()).map_err(unavailable)?;
                    if query.since.is_some_and(|since| record.at < since) {
                        return Ok(());
                    }
                    if query.until.is_some_and(|until| record.at >= until) {
                        continue;
                    }
                    if query
                        .account_id
                        .as_ref()
                        .is_some_and(|account| *account != record.account_id)
                    {
                        continue;
                    }
                    found.push(record);
                    if query.limit > 0 && found.len() >= query.limit {
                        return Ok(());
                    }
                }
                if !page.more() {
                    return Ok(());
                }
            }
        })?;
        Ok(found)
    }
}

/// Reads the counters (after a win, before the first write).
pub(super) async fn read_counters(etcd: &Etcd, keys: &Keys) -> Result<Counters, String> {
    let mut client = etcd.client();
    let response = client.get(keys.counters(), None).await.map_err(|e| {
        etcd.failed(&client, &e.to_string());
        e.to_string()
    })?;
    match response.kvs().first() {
        Some(kv) => Counters::decode(kv.value()),
        None => Ok(Counters::default()),
    }
}

/// Puts `value` at `key` held by `lease`.
pub(super) async fn put_leased(
    etcd: &Etcd,
    key: String,
    value: Vec<u8>,
    lease: i64,
) -> Result<(), String> {
    let mut client = etcd.client();
    client
        .put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An etcd endpoint that takes connections and never answers.
    async fn silent_endpoint() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut connections = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                connections.push(connection);
            }
        });
        (format!("http://{address}"), held)
    }

    #[tokio::test]
    async fn a_write_of_an_ended_epoch_that_fails_leaves_the_new_epoch_able_to_write() {
        let (endpoint, _held) = silent_endpoint().await;
        let etcd = Arc::new(
            Etcd::connect(&[endpoint], etcd_client::ConnectOptions::new())
                .await
                .unwrap(),
        );
        let store = EtcdStore::new(
            etcd,
            EtcdOptions {
                keys: Keys::new("/test"),
                max_txn_ops: 128,
                retained_events: 0,
                retained_age: Duration::from_secs(60),
                audit: AuditRetention::default(),
                audit_records: 1_000,
                request_timeout: Duration::from_millis(300),
            },
            Snapshot {
                recovered: Recovered::default(),
                counters: Counters::default(),
                revision: 0,
            },
        );
        let shared = store.shared();
        // The node's leadership is not what this test is about: it may decide throughout.
        store.signals().set_authority(Some(u64::MAX - 1), "");
        tokio::spawn(shared.clone().run_writer());
        shared.begin_epoch(3, Counters::default());
        let commit = store.submit(Batch::default());
        // The write is on its way to an etcd that does not answer; the node loses and wins
        // again before it times out.
        while shared.in_flight.load(Ordering::Acquire) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        shared.end_epoch("lost");
        shared.begin_epoch(13, Counters::default());
        let answer = commit.durable().await;
        assert!(
            answer.is_err(),
            "the old epoch's change is not acknowledged"
        );
        // The old write's timeout has passed by now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            store.signals().last_error(),
            None,
            "the new epoch is not failed by the old one's write"
        );
    }
}
