//! Starts the real server in-process on 127.0.0.1:0 and hands out generated clients.
#![allow(dead_code)]

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod http;
pub mod powercut;
pub mod process;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use riskgate::clock::SystemClock;
use riskgate::config::Config;
use riskgate::proto::admin_service_client::AdminServiceClient;
use riskgate::proto::gate_service_client::GateServiceClient;
use riskgate::proto::monitor_service_client::MonitorServiceClient;
use riskgate::proto::watch_events_response::Kind;
use riskgate::proto::*;
use riskgate::server::{self, ServeError};
use riskgate::store::{MemoryStore, Store};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Streaming;

/// Upper bound for anything a test waits on; reaching it fails the test, it is not a timing
/// assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A configuration from TOML text layered over the embedded default (no environment).
pub fn config(toml: &str) -> Config {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(toml.as_bytes()).expect("write config");
    Config::load_with_env(Some(file.path()), Some(HashMap::new())).expect("valid test config")
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl TestServer {
    /// Starts a single node on an in-memory store; with `RISKGATE_TEST_ETCD` set (etcd client
    /// URLs, comma-separated) and the `cluster` feature, a cluster node on that etcd instead,
    /// under a key prefix of its own, so that the same black-box tests run against a cluster.
    pub async fn start(toml: &str) -> Self {
        let config = config(toml);
        #[cfg(feature = "cluster")]
        if let Ok(endpoints) = std::env::var("RISKGATE_TEST_ETCD") {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let prefix = format!(
                "/riskgate-blackbox/{}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            );
            return Self::start_in_cluster(config, &endpoints, &prefix).await;
        }
        Self::start_with(
            config.clone(),
            Arc::new(MemoryStore::new(config.events.retained)),
        )
        .await
    }

    /// Starts on an existing store, as after a restart.
    pub async fn start_with(config: Config, store: Arc<dyn Store>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::serve_on(listener, config, store, None).await
    }

    /// Serves on `listener` (a cluster node when `membership` is given), and waits until the
    /// server answers SERVING.
    async fn serve_on(
        listener: TcpListener,
        config: Config,
        store: Arc<dyn Store>,
        membership: Option<Arc<dyn riskgate::cluster::Membership>>,
    ) -> Self {
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let shared = store.clone();
        let task = tokio::spawn(async move {
            server::serve_node(
                listener,
                &config,
                shared,
                Arc::new(SystemClock::new()),
                membership,
                async {
                    let _ = stopped.await;
                },
            )
            .await
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the test server");
        wait_until_serving(channel.clone()).await;
        TestServer {
            addr,
            store,
            channel,
            stop: Some(stop),
            task,
        }
    }

    /// With `RISKGATE_TEST_ETCD` set (and the `cluster` feature): a cluster node whose state
    /// lives under a key prefix named after `path`, so that starting again on the same `path`
    /// is a restart. `None` without `RISKGATE_TEST_ETCD`.
    pub async fn start_in_cluster_at(config: Config, path: &std::path::Path) -> Option<Self> {
        #[cfg(feature = "cluster")]
        if let Ok(endpoints) = std::env::var("RISKGATE_TEST_ETCD") {
            let prefix = format!("/riskgate-durable{}", path.display());
            return Some(Self::start_in_cluster(config, &endpoints, &prefix).await);
        }
        let _ = (config, path);
        None
    }

    /// A cluster node alone under `prefix` of `endpoints`: it leads at once.
    #[cfg(feature = "cluster")]
    async fn start_in_cluster(mut config: Config, endpoints: &str, prefix: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        config.cluster.etcd_endpoints = endpoints.split(',').map(str::to_owned).collect();
        config.cluster.node_id = "blackbox".into();
        config.cluster.advertise = addr.to_string();
        config.cluster.lease_secs = 2;
        config.cluster.key_prefix = prefix.to_owned();
        let node = riskgate::cluster::Node::connect(&config)
            .await
            .expect("connect to RISKGATE_TEST_ETCD");
        let store = node.store();
        Self::serve_on(listener, config, store, Some(node)).await
    }

    pub fn gate(&self) -> GateServiceClient<Channel> {
        GateServiceClient::new(self.channel.clone())
    }

    pub fn monitor(&self) -> MonitorServiceClient<Channel> {
        MonitorServiceClient::new(self.channel.clone())
    }

    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A client on a connection of its own with a small HTTP/2 stream window: a slow reader.
    /// Its own connection, because a stream the client does not read holds connection-level
    /// flow-control credit, which would stall other calls sharing the connection. A large
    /// connection window, because h2 clients close a connection that buffers too many small
    /// unread DATA frames (budget: half the connection window) before the server sees the lag.
    pub async fn slow_reader(&self) -> MonitorServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .initial_stream_window_size(Some(65_535))
            .initial_connection_window_size(Some(8 * 1024 * 1024))
            .connect()
            .await
            .expect("connect to the test server");
        MonitorServiceClient::new(channel)
    }

    /// Triggers a graceful shutdown and waits for the server to finish cleanly.
    pub async fn stop(self) {
        self.stop_result().await.expect("server ends cleanly");
    }

    /// Triggers a graceful shutdown and returns how the server ended.
    pub async fn stop_result(mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        drop(self.channel);
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("server stops within patience")
            .expect("server task")
            .map_err(|e| e.to_string())
    }

    pub async fn check(&self, account: &str) -> CheckTradeResponse {
        self.gate()
            .check_trade(CheckTradeRequest {
                account_id: account.into(),
                ..Default::default()
            })
            .await
            .expect("CheckTrade")
            .into_inner()
    }

    pub async fn report(
        &self,
        account: &str,
        permit: &str,
        outcome: Outcome,
    ) -> ReportOutcomeResponse {
        self.gate()
            .report_outcome(ReportOutcomeRequest {
                account_id: account.into(),
                permit_id: permit.into(),
                outcome: outcome as i32,
                ..Default::default()
            })
            .await
            .expect("ReportOutcome")
            .into_inner()
    }

    /// Checks and reports a failure with the permit, `n` times.
    pub async fn fail(&self, account: &str, n: usize) -> ReportOutcomeResponse {
        let mut last = None;
        for _ in 0..n {
            let check = self.check(account).await;
            assert!(check.allowed, "expected an allowed check, got {check:?}");
            last = Some(
                self.report(account, &check.permit_id, Outcome::Failure)
                    .await,
            );
        }
        last.expect("at least one failure")
    }

    /// How many breakers the server holds (`ListBreakers`' total).
    pub async fn total_breakers(&self) -> u64 {
        self.monitor()
            .list_breakers(ListBreakersRequest::default())
            .await
            .expect("ListBreakers")
            .into_inner()
            .total_breakers
    }

    pub async fn breaker(&self, account: &str) -> Breaker {
        self.monitor()
            .get_breaker(GetBreakerRequest {
                account_id: account.into(),
            })
            .await
            .expect("GetBreaker")
            .into_inner()
            .breaker
            .expect("breaker")
    }

    pub async fn trip(&self, account: &str, reason: &str) -> Breaker {
        self.admin()
            .trip_breaker(TripBreakerRequest {
                account_id: account.into(),
                reason: reason.into(),
                operator: "alice".into(),
                ..Default::default()
            })
            .await
            .expect("TripBreaker")
            .into_inner()
            .breaker
            .expect("breaker")
    }

    pub async fn reset(&self, account: &str, reason: &str) -> Breaker {
        self.admin()
            .reset_breaker(ResetBreakerRequest {
                account_id: account.into(),
                reason: reason.into(),
                operator: "alice".into(),
            })
            .await
            .expect("ResetBreaker")
            .into_inner()
            .breaker
            .expect("breaker")
    }

    pub async fn watch(
        &self,
        accounts: &[&str],
        after_sequence: Option<u64>,
    ) -> Streaming<WatchEventsResponse> {
        self.monitor()
            .watch_events(WatchEventsRequest {
                account_ids: accounts.iter().map(|a| a.to_string()).collect(),
                after_sequence,
            })
            .await
            .expect("WatchEvents")
            .into_inner()
    }
}

/// The hex SHA-256 of a token, as `auth.principals` holds it.
pub fn sha256_hex(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `message` as one gRPC message on the wire: not compressed, its length, its bytes.
pub fn grpc_frame(message: &impl prost::Message) -> bytes::Bytes {
    let encoded = message.encode_to_vec();
    let mut frame = Vec::with_capacity(5 + encoded.len());
    frame.push(0u8);
    frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    frame.extend_from_slice(&encoded);
    frame.into()
}

/// Waits (within patience) until the server's health says SERVING: the store is loaded.
pub async fn wait_until_serving(channel: Channel) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let mut statuses = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health watch")
        .into_inner();
    loop {
        let status = tokio::time::timeout(PATIENCE, statuses.message())
            .await
            .expect("SERVING within patience")
            .expect("health stream")
            .expect("a health status");
        if status.status == ServingStatus::Serving as i32 {
            return;
        }
    }
}

/// The next message of a watch stream, within patience.
pub async fn next_kind(stream: &mut Streaming<WatchEventsResponse>) -> Kind {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("a watch message within patience")
        .expect("stream still open")
        .expect("a message")
        .kind
        .expect("message kind")
}

/// Reads until the next event, skipping heartbeats.
pub async fn next_event(stream: &mut Streaming<WatchEventsResponse>) -> BreakerEvent {
    loop {
        match next_kind(stream).await {
            Kind::Event(event) => return event,
            Kind::Heartbeat(_) => continue,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// Reads a snapshot through its completion marker.
pub async fn read_snapshot(
    stream: &mut Streaming<WatchEventsResponse>,
) -> (Vec<Breaker>, SnapshotComplete) {
    let mut breakers = Vec::new();
    loop {
        match next_kind(stream).await {
            Kind::Snapshot(breaker) => breakers.push(breaker),
            Kind::SnapshotComplete(done) => return (breakers, done),
            Kind::Heartbeat(_) => continue,
            other => panic!("expected the snapshot, got {other:?}"),
        }
    }
}

pub fn state(value: i32) -> BreakerState {
    BreakerState::try_from(value).expect("known state")
}
