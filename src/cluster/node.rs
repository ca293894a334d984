//! One node of a cluster: its lease and campaign, its mirror of the leader's writes, and the
//! bridge from its [`Leadership`] to what the registry may do (`StoreSignals`' authority).
//!
//! Tasks, all ending when the server stops:
//! - **lease**: grants this node's lease, renews it three times per TTL (noting when each
//!   renewal was *sent*), and campaigns for the leader key with it;
//! - **mirror**: watches everything under the prefix from the revision the node loaded at,
//!   applies the leader's changes to the registry (a standby's; a new leader's up to the
//!   revision it won at), and notices the leader key come and go;
//! - **deadlines**: re-reads the leadership when time alone changes it (the fence, the end of
//!   the wait after a win); safety does not depend on it, since every check compares the clock
//!   with the fence itself;
//! - **writer**: the store's group commit; **report**: this node's record for
//!   `riskgate cluster`, and the leader's pruning.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, TlsOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::Notify;

use super::etcd::{self, Etcd, EtcdOptions, EtcdStore, Shared, Snapshot};
use super::keys::{self, Counters, Key, Keys, LeaderRecord, NodeRecord};
use super::{
    ClusterStatus, Leadership, LeaseTiming, MemberStatus, Membership, Refusal, Role, Route,
};
use crate::config::Config;
use crate::core::Timestamp;
use crate::registry::{Registry, Replicated};
use crate::store::{Store, StoreSignals};

/// How often the mirror asks etcd to confirm it is current, and a node reports itself: rarely
/// enough to cost the leader nothing measurable, often enough for `MIRROR_STALE`.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// A mirror with no word from etcd for this long is not current.
const MIRROR_STALE: Duration = Duration::from_secs(3);
/// How often the leader prunes the audit trail in etcd.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// The leader a node last saw.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LeaderSeen {
    record: LeaderRecord,
    epoch: i64,
}

struct State {
    leadership: Leadership,
    leader: Option<LeaderSeen>,
    lease: Option<i64>,
    /// When the latest acknowledged renewal (or the grant) of the lease was sent.
    renewal_sent: Option<Timestamp>,
    /// etcd's latest revision, as last heard.
    etcd_revision: i64,
    /// When the mirror last heard from etcd.
    mirror_heard: Option<Instant>,
    /// The node lost its leadership and must reload what the cluster holds.
    resync: bool,
}

/// A cluster node: its connection to etcd, its store, and its leadership.
pub struct Node {
    node_id: String,
    advertise: String,
    keys: Keys,
    etcd: Arc<Etcd>,
    store: Arc<EtcdStore>,
    shared: Arc<Shared>,
    signals: Arc<StoreSignals>,
    lease_secs: i64,
    /// The revision the registry was loaded at.
    loaded_at: i64,
    state: Mutex<State>,
    /// Leadership changed: the deadlines task re-reads it.
    changed: Notify,
    /// The leader key may be free: the lease task campaigns.
    campaign: Notify,
    /// The node lost its leadership: the mirror reloads, the lease task starts a new lease.
    resync: Notify,
    release: Notify,
}

impl Node {
    /// Connects to etcd and reads what the cluster holds; the node's registry loads from it.
    pub async fn connect(config: &Config) -> Result<Arc<Node>, String> {
        let cluster = &config.cluster;
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1))
            .with_keep_alive_while_idle(true)
            // A member cut off from its quorum answers with an error rather than stale data.
            .with_require_leader(true);
        if !cluster.etcd_username.is_empty() {
            options = options.with_user(&cluster.etcd_username, &cluster.etcd_password);
        }
        if !cluster.etcd_ca.as_os_str().is_empty() || !cluster.etcd_cert.as_os_str().is_empty() {
            let mut tls = TlsOptions::new();
            if !cluster.etcd_ca.as_os_str().is_empty() {
                let ca = std::fs::read(&cluster.etcd_ca).map_err(|e| {
                    format!("cannot read cluster.etcd_ca {:?}: {e}", cluster.etcd_ca)
                })?;
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if !cluster.etcd_cert.as_os_str().is_empty() {
                let cert = std::fs::read(&cluster.etcd_cert).map_err(|e| {
                    format!("cannot read cluster.etcd_cert {:?}: {e}", cluster.etcd_cert)
                })?;
                let key = std::fs::read(&cluster.etcd_key).map_err(|e| {
                    format!("cannot read cluster.etcd_key {:?}: {e}", cluster.etcd_key)
                })?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls);
        }
        tracing::info!(endpoints = ?cluster.etcd_endpoints, node_id = %cluster.node_id, "connecting to etcd");
        let etcd = Arc::new(
            tokio::time::timeout(
                Duration::from_secs(10),
                Etcd::connect(&cluster.etcd_endpoints, options),
            )
            .await
            .map_err(|_| {
                format!(
                    "etcd at {:?} did not answer within 10s",
                    cluster.etcd_endpoints
                )
            })??,
        );
        let keys = Keys::new(&cluster.key_prefix);
        let snapshot = read_snapshot_patiently(&etcd, &keys, Duration::from_secs(10)).await?;
        let loaded_at = snapshot.revision;
        let leader = snapshot_leader(&etcd, &keys).await;
        let lease = Duration::from_secs(cluster.lease_secs);
        let store = Arc::new(EtcdStore::new(
            etcd.clone(),
            EtcdOptions {
                keys: keys.clone(),
                max_txn_ops: cluster.max_txn_ops,
                retained_events: config.events.retained,
                retained_age: config.retained_age(),
                audit: config.audit_retention(),
                audit_records: cluster.audit_records,
                request_timeout: lease.max(Duration::from_secs(1)),
            },
            snapshot,
        ));
        let shared = store.shared();
        let mut leadership = Leadership::new(LeaseTiming::for_ttl(lease));
        leadership.applied_through(loaded_at);
        tracing::info!(
            node_id = %cluster.node_id,
            revision = loaded_at,
            leader = ?leader.as_ref().map(|l| &l.record.node_id),
            "joined the cluster's etcd; following from this revision"
        );
        Ok(Arc::new(Node {
            node_id: cluster.node_id.clone(),
            advertise: cluster.advertise.clone(),
            keys,
            etcd,
            signals: shared.signals.clone(),
            store,
            shared,
            lease_secs: cluster.lease_secs as i64,
            loaded_at,
            state: Mutex::new(State {
                leadership,
                leader,
                lease: None,
                renewal_sent: None,
                etcd_revision: loaded_at,
                mirror_heard: Some(Instant::now()),
                resync: false,
            }),
            changed: Notify::new(),
            campaign: Notify::new(),
            resync: Notify::new(),
            release: Notify::new(),
        }))
    }

    /// The node's store, for the registry.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The leadership's time: the fence clock (it counts through a suspended machine).
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_nanos(crate::clock::fence_clock_nanos())
    }

    /// Brings what the registry may do in line with the leadership, now, and has the deadlines
    /// task look again.
    fn refresh(&self, state: &mut State) {
        self.update(state);
        self.changed.notify_one();
    }

    /// As `refresh`, for the deadlines task itself.
    fn update(&self, state: &mut State) {
        let now = self.now();
        state.leadership.tick(now);
        match state.leadership.refusal(now) {
            None => {
                let fence = state.leadership.fence().map(|at| at.as_unix_nanos());
                self.signals
                    .set_epoch(state.leadership.epoch().unwrap_or(0).max(0) as u64);
                self.signals.set_authority(fence, "");
            }
            Some(refusal) => {
                self.signals.set_epoch(0);
                let reason = self.reason(refusal, state);
                self.signals.set_authority(None, &reason);
            }
        }
        if matches!(state.leadership.role(), Role::Fenced { .. }) && !state.resync {
            state.resync = true;
            tracing::warn!(node_id = %self.node_id, "no longer sure to lead: orders are denied; reloading the cluster's state to follow as a standby");
            self.shared
                .end_epoch("this node lost its leadership before writing it");
            self.resync.notify_one();
            self.release.notify_one();
        }
    }

    fn reason(&self, refusal: Refusal, state: &State) -> String {
        match refusal {
            Refusal::NotLeader => match &state.leader {
                Some(leader) => format!(
                    "cluster: this node ({}) is a standby; the leader is {} at {}",
                    self.node_id, leader.record.node_id, leader.record.advertise
                ),
                None => format!(
                    "cluster: no leader is elected yet (this node: {})",
                    self.node_id
                ),
            },
            Refusal::CatchingUp {
                applied,
                won_at_revision,
            } => format!(
                "cluster: this node just became the leader and is applying the previous leader's changes (revision {applied} of {won_at_revision})"
            ),
            Refusal::WaitingOutOldLease { until } => {
                let left = until.saturating_duration_since(self.now());
                format!(
                    "cluster: this node just became the leader and waits {} for the previous leader's lease to run out",
                    crate::core::human_duration(left)
                )
            }
            Refusal::Fenced => format!(
                "cluster: this node ({}) can no longer be sure it is the leader (its lease was not renewed in time, or another node won); orders are denied until it has rejoined",
                self.node_id
            ),
        }
    }

    /// Runs the node's tasks until `stopped` resolves.
    async fn run_all(self: Arc<Self>, registry: Arc<Registry>, stopped: impl Future<Output = ()>) {
        {
            let mut state = self.state();
            self.refresh(&mut state);
        }
        let writer = tokio::spawn(self.shared.clone().run_writer());
        let _tasks = AbortOnDrop(vec![
            tokio::spawn(self.clone().run_lease()),
            tokio::spawn(self.clone().run_mirror(registry)),
            tokio::spawn(self.clone().run_deadlines()),
            tokio::spawn(self.clone().run_report()),
        ]);
        stopped.await;
        // The writer goes on until the store is closed: it writes what was submitted.
        drop(writer);
    }

    /// Gives up the lease (and with it the leader key) so that another node takes over now,
    /// rather than when the lease would have run out. Called once the store is closed.
    async fn give_up_lease(&self) {
        // Nothing more is decided here before the lease (and the leader key) goes.
        self.signals.set_authority(
            None,
            "cluster: this node is stopping; retry against the leader",
        );
        let lease = self.state().lease.take();
        self.shared.end_epoch("this node stopped");
        if let Some(lease) = lease {
            let mut client = self.etcd.client();
            match tokio::time::timeout(Duration::from_secs(2), client.lease_revoke(lease)).await {
                Ok(Ok(_)) => {
                    tracing::info!(node_id = %self.node_id, "left the cluster: lease revoked")
                }
                _ => {
                    tracing::warn!(node_id = %self.node_id, "could not revoke the lease; it runs out by itself")
                }
            }
        }
    }

    async fn run_lease(self: Arc<Self>) {
        let ttl = self.lease_secs;
        loop {
            let sent = self.now();
            let mut client = self.etcd.client();
            let granted =
                match tokio::time::timeout(Duration::from_secs(2), client.lease_grant(ttl, None))
                    .await
                {
                    Ok(Ok(granted)) => granted,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "cannot get a lease from etcd; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                    Err(_) => {
                        tracing::warn!("etcd did not grant a lease in time; retrying");
                        continue;
                    }
                };
            let lease = granted.id();
            let granted_ttl = Duration::from_secs(granted.ttl().max(1) as u64);
            let (mut keeper, mut renewals) = match client.lease_keep_alive(lease).await {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "cannot keep a lease alive; retrying");
                    self.etcd.failed(&client, &error.to_string());
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            {
                let mut state = self.state();
                state.lease = Some(lease);
                state.renewal_sent = Some(sent);
            }
            self.report().await;
            self.try_campaign(lease).await;
            let mut renew =
                tokio::time::interval((granted_ttl / 3).max(Duration::from_millis(100)));
            renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut retry =
                tokio::time::interval((granted_ttl / 2).max(Duration::from_millis(200)));
            let mut sent_at: VecDeque<Timestamp> = VecDeque::new();
            loop {
                tokio::select! {
                    _ = renew.tick() => {
                        // Renewals unanswered for a whole lease: the member is gone or cut
                        // off (the fence has passed already); try the next one.
                        if sent_at.front().is_some_and(|first| {
                            self.now().saturating_duration_since(*first) > granted_ttl
                        }) {
                            self.etcd.failed(&client, "lease renewals went unanswered");
                            break;
                        }
                        sent_at.push_back(self.now());
                        if keeper.keep_alive().await.is_err() {
                            self.etcd.failed(&client, "the lease's keep-alive stream closed");
                            break;
                        }
                    }
                    message = renewals.message() => match message {
                        Ok(Some(answer)) => {
                            let sent = sent_at.pop_front();
                            let mut state = self.state();
                            if answer.ttl() > 0 {
                                if let Some(sent) = sent {
                                    state.renewal_sent = Some(sent);
                                    state.leadership.renewed(sent);
                                    self.refresh(&mut state);
                                }
                            } else {
                                tracing::warn!(node_id = %self.node_id, "etcd says this node's lease ran out");
                                state.leadership.lost();
                                self.refresh(&mut state);
                                break;
                            }
                        }
                        _ => {
                            self.etcd.failed(&client, "the lease's keep-alive stream ended");
                            break;
                        }
                    },
                    _ = self.campaign.notified() => self.try_campaign(lease).await,
                    _ = retry.tick() => {
                        let idle = {
                            let state = self.state();
                            state.leader.is_none() && !matches!(state.leadership.role(), Role::Leader { .. })
                        };
                        if idle {
                            self.try_campaign(lease).await;
                        }
                    }
                    _ = self.release.notified() => break,
                }
            }
            // This lease is given up: a new one is granted (a fenced leader must not keep the
            // leader key alive, or nobody else could win).
            {
                let mut state = self.state();
                state.lease = None;
                if matches!(state.leadership.role(), Role::Leader { .. }) {
                    state.leadership.lost();
                }
                self.refresh(&mut state);
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await;
        }
    }

    /// Asks for the leader key with `lease`, unless a leader is known.
    async fn try_campaign(&self, lease: i64) {
        let sent = {
            let mut state = self.state();
            if state.leader.is_some()
                || state.resync
                || !matches!(state.leadership.role(), Role::Standby | Role::Candidate)
            {
                return;
            }
            state.leadership.campaigning();
            state.renewal_sent
        };
        let Some(sent) = sent else { return };
        let record = LeaderRecord {
            node_id: self.node_id.clone(),
            advertise: self.advertise.clone(),
        };
        let leader_key = self.keys.leader();
        let txn = Txn::new()
            .when([Compare::create_revision(
                leader_key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                leader_key.as_str(),
                record.encode(),
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(leader_key.as_str(), None)]);
        let mut client = self.etcd.client();
        let answer = match tokio::time::timeout(Duration::from_secs(2), client.txn(txn)).await {
            Ok(Ok(answer)) => answer,
            failed => {
                if let Ok(Err(error)) = failed {
                    self.etcd.failed(&client, &error.to_string());
                }
                let mut state = self.state();
                state.leadership.deposed();
                self.refresh(&mut state);
                return;
            }
        };
        if answer.succeeded() {
            let epoch = answer.header().map_or(0, |h| h.revision());
            let counters = match etcd::read_counters(&self.etcd, &self.keys).await {
                Ok(counters) => counters,
                Err(error) => {
                    // Without the counters it cannot number on: give the key up again.
                    tracing::warn!(%error, "won, but cannot read the counters; stepping down");
                    let _ = client.delete(leader_key.as_str(), None).await;
                    return;
                }
            };
            self.shared.begin_epoch(epoch, counters);
            let mut state = self.state();
            let now = self.now();
            state.leadership.won(epoch, epoch, sent, now);
            state.leader = Some(LeaderSeen { record, epoch });
            tracing::info!(node_id = %self.node_id, epoch, "won the cluster's leadership; serving once the previous leader's changes are applied and its lease has run out");
            self.refresh(&mut state);
        } else {
            let seen = answer.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().and_then(|kv| {
                    LeaderRecord::decode(kv.value())
                        .ok()
                        .map(|record| LeaderSeen {
                            record,
                            epoch: kv.create_revision(),
                        })
                }),
                _ => None,
            });
            let mut state = self.state();
            state.leader = seen;
            state.leadership.deposed();
            self.refresh(&mut state);
        }
    }

    async fn run_mirror(self: Arc<Self>, registry: Arc<Registry>) {
        let mut from = self.loaded_at + 1;
        let mut reload = false;
        loop {
            if reload || self.state().resync {
                let snapshot = loop {
                    match etcd::read_snapshot(&self.etcd, &self.keys).await {
                        Ok(snapshot) => break snapshot,
                        Err(error) => {
                            tracing::warn!(%error, "cannot reload the cluster's state; retrying");
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                    }
                };
                let leader = snapshot_leader(&self.etcd, &self.keys).await;
                let revision = snapshot.revision;
                registry.replace_all(snapshot.recovered);
                from = revision + 1;
                reload = false;
                let mut state = self.state();
                state.leadership.stood_down();
                state.leadership.applied_through(revision);
                state.leader = leader;
                state.resync = false;
                tracing::info!(node_id = %self.node_id, revision, "following the cluster as a standby");
                self.refresh(&mut state);
                self.campaign.notify_one();
            }
            let mut client = self.etcd.client();
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(from)
                .with_progress_notify();
            let mut stream = match client.watch(self.keys.prefix(), Some(options)).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch the cluster's keys; retrying");
                    self.etcd.failed(&client, &error.to_string());
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            let mut progress = tokio::time::interval(PROGRESS_EVERY);
            let mut heard = Instant::now();
            loop {
                tokio::select! {
                    _ = self.resync.notified() => break,
                    _ = progress.tick() => {
                        // A member that died without closing the connection leaves a silent
                        // watch: asked for progress and still silent, it is given up.
                        if heard.elapsed() > MIRROR_STALE {
                            self.etcd.failed(&client, "the watch went silent");
                            break;
                        }
                        let _ = stream.request_progress().await;
                    }
                    message = stream.message() => match message {
                        Ok(Some(answer)) => {
                            heard = Instant::now();
                            if answer.canceled() {
                                if answer.compact_revision() > 0 {
                                    tracing::warn!(from, compacted = answer.compact_revision(), "etcd compacted history this node had not followed; reloading");
                                    reload = true;
                                }
                                break;
                            }
                            let revision = answer.header().map_or(0, |h| h.revision());
                            let events = answer.events();
                            let mut at = 0;
                            let mut group = Vec::new();
                            for event in events {
                                let Some(kv) = event.kv() else { continue };
                                if kv.mod_revision() != at && !group.is_empty() {
                                    self.apply(&registry, at, std::mem::take(&mut group));
                                }
                                at = kv.mod_revision();
                                group.push(event.clone());
                            }
                            if !group.is_empty() {
                                self.apply(&registry, at, group);
                            }
                            let mut state = self.state();
                            state.etcd_revision = state.etcd_revision.max(revision);
                            state.mirror_heard = Some(Instant::now());
                            // A progress report (no events) says the watch is alive, and
                            // nothing more: etcd 3.4 can send one with a revision ahead of
                            // events it has not yet delivered (etcd issue 15220), so what is
                            // applied, and where a new watch starts, follow events alone.
                            if at > 0 {
                                from = from.max(at + 1);
                            }
                            self.refresh(&mut state);
                        }
                        Ok(None) | Err(_) => {
                            self.etcd.failed(&client, "the watch stream ended");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            break;
                        }
                    },
                }
            }
        }
    }

    /// Applies the changes etcd made at `revision`.
    fn apply(&self, registry: &Registry, revision: i64, events: Vec<etcd_client::Event>) {
        let mut changes = Vec::new();
        let mut state = self.state();
        for event in &events {
            let Some(kv) = event.kv() else { continue };
            let put = event.event_type() == EventType::Put;
            match self.keys.classify(kv.key()) {
                Some(Key::Leader) if put => {
                    let epoch = kv.create_revision();
                    let record = LeaderRecord::decode(kv.value()).unwrap_or_default();
                    if state.leadership.epoch() != Some(epoch) {
                        state.leader = Some(LeaderSeen { record, epoch });
                        if state.leadership.epoch().is_some() {
                            tracing::warn!(node_id = %self.node_id, epoch, "another node holds the leader key");
                        }
                        state.leadership.deposed();
                    }
                }
                Some(Key::Leader) => {
                    let mine = state.leadership.epoch().is_some();
                    state.leader = None;
                    if mine {
                        tracing::warn!(node_id = %self.node_id, "this node's leader key is gone (its lease ran out)");
                        state.leadership.lost();
                    }
                    self.campaign.notify_one();
                }
                Some(Key::Breaker(account_id)) if put => {
                    match keys::decode_breaker(&account_id, kv.value()) {
                        Ok(stored) => changes.push(Replicated::Breaker(Box::new(stored))),
                        Err(error) => tracing::error!(%error, "a breaker in etcd does not decode"),
                    }
                }
                Some(Key::Breaker(account_id)) => changes.push(Replicated::Evicted(account_id)),
                Some(Key::Event(_)) if put => match crate::store::rows::decode_event(kv.value()) {
                    Ok(event) => changes.push(Replicated::Event(Arc::new(event))),
                    Err(error) => tracing::error!(%error, "an event in etcd does not decode"),
                },
                Some(Key::Halt(scope)) => {
                    let halt = if put {
                        match crate::store::rows::decode_halt(kv.value()) {
                            Ok(halt) => Some(halt),
                            Err(error) => {
                                tracing::error!(%error, "a halt in etcd does not decode");
                                continue;
                            }
                        }
                    } else {
                        None
                    };
                    changes.push(Replicated::Halt(scope, halt));
                }
                Some(Key::Counters) if put => {
                    if let Ok(counters) = Counters::decode(kv.value()) {
                        changes.push(Replicated::LastSequence(counters.last_sequence));
                    }
                }
                _ => {}
            }
        }
        let follow = match state.leadership.role() {
            Role::Standby | Role::Candidate => true,
            Role::Leader { .. } => revision <= state.leadership.won_at_revision(),
            Role::Fenced { .. } => false,
        };
        if follow && !changes.is_empty() {
            registry.apply_replicated(changes);
        }
        state.leadership.applied_through(revision);
        self.refresh(&mut state);
    }

    async fn run_deadlines(self: Arc<Self>) {
        loop {
            let next = {
                let state = self.state();
                let now = self.now();
                state
                    .leadership
                    .next_deadline(now)
                    .map(|at| at.saturating_duration_since(now))
            };
            let sleep = async {
                match next {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = self.changed.notified() => {}
                _ = self.shared.deposed.notified() => {
                    let mut state = self.state();
                    state.leadership.lost();
                }
            }
            let mut state = self.state();
            self.update(&mut state);
        }
    }

    /// Writes this node's record every `PROGRESS_EVERY`, and prunes while leader.
    async fn run_report(self: Arc<Self>) {
        let mut every = tokio::time::interval(PROGRESS_EVERY);
        let mut last_prune = Instant::now();
        loop {
            every.tick().await;
            self.report().await;
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = Instant::now();
                let now = wall_now();
                match self.shared.prune(now).await {
                    Ok(0) => {}
                    Ok(pruned) => {
                        crate::metrics::audit_pruned(pruned as usize);
                        tracing::info!(pruned, "pruned the audit trail in etcd");
                    }
                    Err(error) => tracing::warn!(%error, "cannot prune the audit trail in etcd"),
                }
            }
        }
    }

    async fn report(&self) {
        let (lease, applied) = {
            let state = self.state();
            (state.lease, state.leadership.applied())
        };
        let Some(lease) = lease else { return };
        let record = NodeRecord {
            node_id: self.node_id.clone(),
            advertise: self.advertise.clone(),
            lease_id: lease,
            applied_revision: applied,
            updated_unix_ms: wall_now().as_unix_nanos() / 1_000_000,
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            etcd::put_leased(
                &self.etcd,
                self.keys.node(&self.node_id),
                record.encode(),
                lease,
            ),
        )
        .await;
    }
}

/// Reads the cluster's state, retrying for up to `patience` while etcd cannot answer.
async fn read_snapshot_patiently(
    etcd: &Etcd,
    keys: &Keys,
    patience: Duration,
) -> Result<Snapshot, String> {
    let until = Instant::now() + patience;
    loop {
        match etcd::read_snapshot(etcd, keys).await {
            Ok(snapshot) => return Ok(snapshot),
            Err(error) if Instant::now() >= until => return Err(error),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

async fn snapshot_leader(etcd: &Etcd, keys: &Keys) -> Option<LeaderSeen> {
    let mut client = etcd.client();
    let answer = client.get(keys.leader(), None).await.ok()?;
    let kv = answer.kvs().first()?;
    Some(LeaderSeen {
        record: LeaderRecord::decode(kv.value()).ok()?,
        epoch: kv.create_revision(),
    })
}

impl Membership for Node {
    fn run(
        self: Arc<Self>,
        registry: Arc<Registry>,
        stopped: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.run_all(registry, stopped))
    }

    fn resign(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.give_up_lease())
    }

    fn route(&self) -> Route {
        let state = self.state();
        match state.leadership.role() {
            Role::Leader { .. } => Route::Here,
            _ => match &state.leader {
                Some(leader) if leader.record.node_id != self.node_id => Route::Leader {
                    node_id: leader.record.node_id.clone(),
                    address: leader.record.advertise.clone(),
                },
                _ => Route::Unknown,
            },
        }
    }

    fn mirror_current(&self) -> bool {
        let state = self.state();
        !state.resync
            && state
                .mirror_heard
                .is_some_and(|at| at.elapsed() < MIRROR_STALE)
    }

    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn role(&self) -> Role {
        self.state().leadership.role()
    }

    fn status(&self) -> Pin<Box<dyn Future<Output = Result<ClusterStatus, String>> + Send + '_>> {
        Box::pin(async move {
            let mut client = self.etcd.client();
            let nodes = client
                .get(self.keys.nodes(), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(|e| format!("cannot read the cluster's members from etcd: {e}"))?;
            let revision = nodes.header().map_or(0, |h| h.revision());
            let leader = snapshot_leader(&self.etcd, &self.keys).await;
            let now_ms = wall_now().as_unix_nanos() / 1_000_000;
            let mut members = Vec::new();
            for kv in nodes.kvs() {
                let Ok(record) = NodeRecord::decode(kv.value()) else {
                    continue;
                };
                let lease_left = match client.lease_time_to_live(record.lease_id, None).await {
                    Ok(answer) if answer.ttl() >= 0 => {
                        Some(Duration::from_secs(answer.ttl() as u64))
                    }
                    _ => None,
                };
                members.push(MemberStatus {
                    leader: leader
                        .as_ref()
                        .is_some_and(|l| l.record.node_id == record.node_id),
                    lag_revisions: (revision - record.applied_revision).max(0),
                    reported_ago: Duration::from_millis(
                        now_ms.saturating_sub(record.updated_unix_ms),
                    ),
                    lease_left,
                    node_id: record.node_id,
                    address: record.advertise,
                    applied_revision: record.applied_revision,
                });
            }
            let state = self.state();
            Ok(ClusterStatus {
                node_id: self.node_id.clone(),
                role: state.leadership.role(),
                leader_id: leader
                    .as_ref()
                    .map(|l| l.record.node_id.clone())
                    .unwrap_or_default(),
                leader_address: leader
                    .as_ref()
                    .map(|l| l.record.advertise.clone())
                    .unwrap_or_default(),
                epoch: leader.as_ref().map_or(0, |l| l.epoch.max(0) as u64),
                etcd_revision: revision,
                members,
            })
        })
    }
}

/// The host's wall clock, for what is shown to people (never for the fence).
fn wall_now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_unix_nanos(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// Tasks that end when this is dropped (the server stopping drops the node's future).
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
