//! Serving: the registry, the three riskgate services, gRPC health and reflection on one
//! listener, the deadline timer beside them, and a graceful shutdown.
//!
//! `serve` takes a bound listener and a shutdown future, so tests bind `127.0.0.1:0`, pass
//! their own shutdown and talk to the real server over a real socket.
//!
//! Start-up: the listener answers at once, with health NOT_SERVING and calls refused with
//! `UNAVAILABLE` until the store is loaded.
//!
//! Shutdown order: health goes NOT_SERVING, the listener stops accepting, watch streams end
//! with `UNAVAILABLE` naming where to resume, in-flight calls finish; whatever is still open
//! after `server.shutdown_grace_secs` is closed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tonic::service::Routes;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;
use tower_layer::Layer;

use crate::api::{Admin, Gate, Monitor, WatchOptions};
use crate::auth::tls::Tls;
use crate::auth::{Auth, AuthLayer};
use crate::clock::Clock;
use crate::cluster::{LeaderRouting, Membership};
use crate::config::LimitsConfig;
use crate::config::{Config, StoreKind};
use crate::connections::{ConnectionLimits, Connections, Http2Settings};
use crate::error::Error;
use crate::proto::admin_service_server::AdminServiceServer;
use crate::proto::gate_service_server::GateServiceServer;
use crate::proto::monitor_service_server::MonitorServiceServer;
use crate::registry::Registry;
use crate::store::{MemoryStore, SqliteOptions, SqliteStore, Store, StoreError};

/// HTTP/2 flow-control window the server grants each stream and each connection.
const RECEIVE_WINDOW: u32 = 1 << 20;

/// The encoded descriptors of `riskgate.v1`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/riskgate_descriptor.bin"));

/// A health name that is SERVING from start-up until shutdown, whatever the store does: for
/// liveness probes, which must not restart a process that is loading or waiting for its disk.
pub const LIVENESS: &str = "liveness";

/// Names reported by the health service: the whole server ("") and each riskgate service.
const HEALTH_NAMES: [&str; 4] = [
    "",
    "riskgate.v1.GateService",
    "riskgate.v1.MonitorService",
    "riskgate.v1.AdminService",
];

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("could not open the registry: {0}")]
    Registry(#[from] Error),
    #[error("could not build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the listener failed: {0}")]
    Listener(#[from] std::io::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("cannot serve the console on {addr}: {source} (set [console] listen to a free address, or empty for no console)")]
    Console {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Binds and starts the web console where `[console] listen` says, serving until `stop`.
async fn start_console(
    config: &Config,
    console: Arc<crate::console::Console>,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, ServeError> {
    // Validated with the configuration: an address that does not parse means no console.
    let Ok(Some(addr)) = config.console.listen_addr() else {
        return Ok(None);
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(source) if config.console.best_effort => {
            tracing::warn!(%addr, error = %source, "no web console: its address cannot be used (set RISKGATE__CONSOLE__LISTEN or [console] listen)");
            return Ok(None);
        }
        Err(source) => return Err(ServeError::Console { addr, source }),
    };
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(url = %format!("http://{bound}/"), "web console");
    let console_config = config.console.clone();
    Ok(Some(tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|stopping| *stopping).await;
        };
        if let Err(error) = crate::console::serve(listener, console, console_config, stopped).await
        {
            tracing::error!(%error, "the web console stopped");
        }
    })))
}

/// Opens the store the configuration names. Stops start-up (with what to do) when the store
/// cannot be used.
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServeError> {
    Ok(match config.store.kind {
        StoreKind::Memory => Arc::new(MemoryStore::new(config.events.retained)),
        StoreKind::Sqlite => Arc::new(
            SqliteStore::open(SqliteOptions {
                path: config.store.path.clone(),
                retained_events: config.events.retained,
                retained_age: config.retained_age(),
                audit: config.audit_retention(),
            })
            .map_err(Error::from)?,
        ),
    })
}

/// Serves on `listener` with the given store and clock, until `shutdown` resolves.
///
/// The listener answers at once: health says NOT_SERVING and calls get `UNAVAILABLE` until the
/// store is loaded; from then on health follows the store (NOT_SERVING while it cannot write).
pub async fn serve(
    listener: TcpListener,
    config: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_node(listener, config, store, clock, None, shutdown).await
}

/// Serves as one node of a cluster (`membership`, whose store `store` is), or as a single node
/// (`None`): as [`serve`], and a node that does not lead sends Gate and Admin calls to the
/// leader; health reports GateService and AdminService SERVING only on a leader that may
/// decide, MonitorService on every node whose mirror is current.
pub async fn serve_node(
    listener: TcpListener,
    config: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    membership: Option<Arc<dyn Membership>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let registry = Arc::new(Registry::new(
        config.registry_options(),
        store.clone(),
        clock,
    ));
    let auth = Auth::new(config);
    let drift = Arc::new(crate::config::ConfigDrift::default());
    let tls = if config.tls.enabled() {
        Some(Tls::load(&config.tls).map_err(ServeError::Tls)?)
    } else {
        None
    };
    // Taken over from the default action (exit) before anything else can take time.
    let hangups = hangup_signals(config);
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    health
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    let (stopping, stop) = watch::channel(false);
    let failed = Arc::new(Notify::new());

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let watch_options = WatchOptions {
        heartbeat: config.heartbeat(),
        buffer: 256,
        shutdown: stop.clone(),
    };
    let addr = listener.local_addr()?;
    let signal = {
        let health = health.clone();
        let failed = failed.clone();
        async move {
            tokio::select! {
                _ = shutdown => tracing::info!("shutting down: draining calls and ending watch streams"),
                _ = failed.notified() => {}
            }
            let _ = stopping.send(true);
            set_health(&health, ServingStatus::NotServing).await;
            health
                .set_service_status(LIVENESS, ServingStatus::NotServing)
                .await;
        }
    };
    let limits = &config.limits;
    let monitor = Arc::new(Monitor::new(
        registry.clone(),
        watch_options,
        limits.max_watchers,
        membership.clone(),
    ));
    let admin = Arc::new(Admin::new(registry.clone(), drift.clone()));
    let console = start_console(
        config,
        crate::console::Console::new(
            monitor.clone(),
            admin.clone(),
            auth.clone(),
            registry.clone(),
            membership.clone(),
        ),
        stop.clone(),
    )
    .await?;
    let connections = Connections::new(connection_limits(limits));
    let max_message = limits.max_message_bytes;
    let services = Services {
        gate: GateServiceServer::new(Gate::new(registry.clone(), stop.clone()))
            .max_decoding_message_size(max_message),
        monitor: MonitorServiceServer::from_arc(monitor.clone())
            .max_decoding_message_size(max_message),
        admin: AdminServiceServer::from_arc(admin.clone()).max_decoding_message_size(max_message),
        others: Routes::new(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .prepare(),
    };
    let service =
        AuthLayer::new(auth.clone()).layer(LeaderRouting::new(membership.clone()).layer(services));
    let http2 = Http2Settings {
        max_concurrent_streams: Some(limits.max_concurrent_streams),
        // What a client may send before the server has read it: 1 MiB a stream and a
        // connection (hyper's defaults, stated here because docs/clients.md promises them).
        receive_window: RECEIVE_WINDOW,
        keepalive_interval: Some(Duration::from_secs_f64(limits.keepalive_interval_secs)),
        keepalive_timeout: Duration::from_secs_f64(limits.keepalive_timeout_secs),
    };
    let server: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = match &tls {
        Some(tls) => Box::pin(crate::connections::serve(
            tls.clone().incoming(listener, connections.clone()),
            &http2,
            service,
            signal,
        )),
        // Small unary answers must not wait for Nagle's algorithm (set on accept).
        None => Box::pin(crate::connections::serve(
            crate::connections::incoming(listener, connections.clone()),
            &http2,
            service,
            signal,
        )),
    };
    tokio::pin!(server);

    let runtime = tokio::runtime::Handle::current();
    let flavor = match runtime.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current-thread",
        _ => "multi-thread",
    };
    tracing::info!(
        %addr,
        runtime = flavor,
        runtime_threads = runtime.metrics().num_workers(),
        "riskgate listening; loading the store"
    );
    let loading = tokio::task::spawn_blocking({
        let registry = registry.clone();
        move || registry.load()
    });
    tokio::select! {
        loaded = loading => {
            let loaded = loaded.unwrap_or_else(|e| {
                Err(Error::Store(StoreError::Unavailable(format!("loading the store stopped: {e}"))))
            });
            if let Err(error) = loaded {
                failed.notify_one();
                let _ = server.await;
                return Err(ServeError::Registry(error));
            }
        }
        () = &mut server => return Ok(()),
    }
    tracing::info!(
        %addr,
        accounts = registry.account_count(),
        last_sequence = registry.last_sequence(),
        "riskgate serving"
    );
    let background = [
        spawn_until(stop.clone(), {
            let registry = registry.clone();
            move |stopped| async move { registry.run_deadlines(stopped).await }
        }),
        spawn_until(stop.clone(), {
            let registry = registry.clone();
            move |stopped| async move { registry.run_publisher(stopped).await }
        }),
        spawn_until(stop.clone(), {
            let registry = registry.clone();
            let membership = membership.clone();
            move |stopped| follow_store_health(registry, health, membership, stopped)
        }),
        spawn_until(stop.clone(), {
            let registry = registry.clone();
            let membership = membership.clone();
            move |stopped| async move {
                if let Some(membership) = membership {
                    membership.run(registry, stopped).await;
                }
            }
        }),
        spawn_until(stop.clone(), {
            let clock = registry.clock_handle();
            move |stopped| follow_wall_clock(clock, stopped)
        }),
        spawn_until(stop.clone(), {
            let registry = registry.clone();
            let config = config.clone();
            let auth = auth.clone();
            let tls = tls.clone();
            let drift = drift.clone();
            move |stopped| follow_config(registry, auth, tls, drift, config, hangups, stopped)
        }),
    ];

    let grace = config.shutdown_grace();
    let mut stop_for_grace = stop.clone();
    let grace_elapsed = async move {
        let _ = stop_for_grace.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        () = server => Ok(()),
        _ = grace_elapsed => {
            tracing::warn!(?grace, "shutdown grace period elapsed; closing the remaining connections");
            Ok(())
        }
    };
    // Wait for the background tasks to be gone: they hold the registry, and so the store.
    for task in background.into_iter().chain(console) {
        task.abort();
        let _ = task.await;
    }
    // What was acknowledged is durable already; this writes the rest and leaves the store as
    // a clean stop leaves it, whoever still holds the registry (a stream past its grace).
    let closed = tokio::task::spawn_blocking(move || store.close())
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Unavailable(format!(
                "closing the store failed: {e}"
            )))
        });
    if let Some(membership) = &membership {
        membership.resign().await;
    }
    let result = match closed {
        Ok(()) => {
            tracing::info!("riskgate stopped");
            result
        }
        Err(error) => {
            tracing::error!(%error, "riskgate stopped with changes that are not on disk");
            Err(ServeError::Registry(Error::Store(error)))
        }
    };
    // A million accounts take seconds to free one by one, which a process that exits next
    // gets back at once: the registry goes on a thread of its own, so that stopping does not
    // wait for it.
    let _ = std::thread::Builder::new()
        .name("riskgate-free".into())
        .spawn(move || drop(registry));
    result
}

/// The services on the listener, found by the service name in a call's path
/// (`/riskgate.v1.GateService/CheckTrade`): riskgate's three directly, health and reflection
/// (and the UNIMPLEMENTED answer to any other path) through tonic's routes, whose matching
/// and boxing a check does not need.
#[derive(Clone)]
struct Services {
    gate: GateServiceServer<Gate>,
    monitor: MonitorServiceServer<Monitor>,
    admin: AdminServiceServer<Admin>,
    others: Routes,
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Services {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    /// Always ready, as every service behind it is (tonic's generated servers and routes).
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        use tonic::server::NamedService;
        match crate::auth::service_name(request.uri().path()) {
            GateServiceServer::<Gate>::NAME => self.gate.call(request),
            MonitorServiceServer::<Monitor>::NAME => self.monitor.call(request),
            AdminServiceServer::<Admin>::NAME => self.admin.call(request),
            _ => Box::pin(self.others.call(request)),
        }
    }
}

/// Spawns `task`, handing it a future that resolves when the server starts stopping.
fn spawn_until<F, T>(mut stop: watch::Receiver<bool>, task: T) -> tokio::task::JoinHandle<()>
where
    T: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let stopped = Box::pin(async move {
        let _ = stop.wait_for(|stopping| *stopping).await;
    });
    tokio::spawn(task(stopped))
}

/// How often the configuration file is checked for changes.
const CONFIG_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// SIGHUP, for a configuration loaded from its sources (`Config::load`); `None` otherwise.
fn hangup_signals(config: &Config) -> Option<tokio::signal::unix::Signal> {
    config.source.as_ref()?;
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP; the configuration is still reloaded when its file changes");
            None
        }
    }
}

/// Reloads the configuration on SIGHUP and when its file changes. A configuration that does
/// not validate is refused (logged), and the one in force stays. Breakers keep their state.
async fn follow_config(
    registry: Arc<Registry>,
    auth: Arc<Auth>,
    tls: Option<Arc<Tls>>,
    drift: Arc<crate::config::ConfigDrift>,
    mut current: Config,
    mut hangups: Option<tokio::signal::unix::Signal>,
    stopped: impl Future<Output = ()>,
) {
    let Some(source) = current.source.clone() else {
        return;
    };
    tokio::pin!(stopped);
    let read_file = || source.file.as_ref().and_then(|f| std::fs::read(f).ok());
    let mut seen = read_file();
    let mut poll = tokio::time::interval(CONFIG_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            _ = &mut stopped => return,
            Some(()) = async { match hangups.as_mut() { Some(h) => h.recv().await, None => None } } => "SIGHUP",
            _ = poll.tick() => {
                let now = read_file();
                if now == seen {
                    continue;
                }
                seen = now;
                "the configuration file changed"
            }
        };
        let reloaded = current.reload();
        // Certificates are rotated under the same file names: re-read them on every trigger.
        if let Some(tls) = &tls {
            let paths = match &reloaded {
                Ok(new) if new.tls.enabled() => &new.tls,
                _ => &current.tls,
            };
            match tls.reload(paths) {
                Ok(()) => tracing::info!(trigger = why, "TLS certificates re-read"),
                Err(error) => {
                    tracing::error!(%error, "TLS reload refused; the certificates in force stay")
                }
            }
        }
        match reloaded {
            Err(error) => {
                tracing::error!(%error, trigger = why, version = %current.version(), "configuration reload refused; the configuration in force stays");
                drift.refused(error.to_string());
            }
            Ok(new) if new.version() == current.version() => {
                tracing::info!(trigger = why, version = %current.version(), "configuration unchanged");
                drift.applied(restart_needed(&new, &current));
            }
            Ok(mut new) => {
                drift.applied(restart_needed(&new, &current));
                let fixed = new.fixed_sections_changed(&current);
                if !fixed.is_empty() {
                    tracing::warn!(sections = ?fixed, "these sections take effect only after a restart; the running values stay");
                    // What is shown and versioned is what is in force.
                    new.server = current.server.clone();
                    new.store = current.store.clone();
                    new.events = current.events.clone();
                    new.log = current.log.clone();
                    new.limits = current.limits.clone();
                    new.metrics = current.metrics.clone();
                    new.cluster = current.cluster.clone();
                }
                if new.tls.enabled() != current.tls.enabled() {
                    tracing::warn!("turning TLS on or off takes effect only after a restart");
                    new.tls = current.tls.clone();
                }
                if new.version() == current.version() {
                    continue;
                }
                registry.reload(new.rulebook()).await;
                auth.reload(&new);
                tracing::info!(trigger = why, from = %current.version(), to = %new.version(), "configuration reloaded");
                current = new;
            }
        }
    }
}

/// The sections of `new` (as read from the file) that differ from `current` (in force) and
/// take effect only after a restart.
fn restart_needed(new: &Config, current: &Config) -> Vec<String> {
    let mut sections: Vec<String> = new
        .fixed_sections_changed(current)
        .into_iter()
        .map(str::to_owned)
        .collect();
    if new.tls.enabled() != current.tls.enabled() {
        sections.push("tls (turning it on or off)".to_owned());
    }
    sections
}

/// How often the service clock is compared with the host's wall clock.
const WALL_CLOCK_CHECK: Duration = Duration::from_secs(10);
/// An offset from the wall clock this large is worth an operator's attention.
const WALL_CLOCK_WARN_NANOS: i128 = 1_000_000_000;

/// Logs when the host's wall clock was stepped away from the service clock (which keeps
/// measuring durations on the monotonic clock, see `clock`), and when it came back.
async fn follow_wall_clock(clock: Arc<dyn Clock>, stopped: impl Future<Output = ()>) {
    tokio::pin!(stopped);
    let mut warned: Option<i128> = None;
    let mut every = tokio::time::interval(WALL_CLOCK_CHECK);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = every.tick() => {}
        }
        let Some(offset) = clock.wall_offset() else {
            return;
        };
        let far = offset.abs() >= WALL_CLOCK_WARN_NANOS;
        let moved = warned.is_none_or(|w| (offset - w).abs() >= WALL_CLOCK_WARN_NANOS);
        if far && moved {
            tracing::warn!(
                offset_secs = offset as f64 / 1e9,
                "the host's wall clock is away from riskgate's clock (a step?): running periods are unaffected; timestamps written until the next restart differ from the host's clock by this much, and a restart applies the difference to stored recovery times"
            );
            warned = Some(offset);
        } else if !far && warned.is_some() {
            tracing::info!("the host's wall clock agrees with riskgate's clock again");
            warned = None;
        }
    }
}

async fn follow_store_health(
    registry: Arc<Registry>,
    health: HealthReporter,
    membership: Option<Arc<dyn Membership>>,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut changed = registry.store_signals().subscribe();
    // A mirror goes stale by time alone: a cluster node looks again twice a second.
    let mut every = tokio::time::interval(Duration::from_millis(500));
    let mut serving = None;
    loop {
        let deciding = registry.is_serving();
        let reading = match &membership {
            None => deciding,
            Some(membership) => registry.is_ready() && membership.mirror_current(),
        };
        if serving != Some((deciding, reading)) {
            serving = Some((deciding, reading));
            let status = |on: bool| {
                if on {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                }
            };
            for name in HEALTH_NAMES {
                let on = if name == "riskgate.v1.MonitorService" {
                    reading
                } else {
                    deciding
                };
                health.set_service_status(name, status(on)).await;
            }
        }
        tokio::select! {
            _ = &mut stopped => return,
            _ = every.tick(), if membership.is_some() => {}
            result = changed.changed() => if result.is_err() { return },
        }
    }
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_NAMES {
        health.set_service_status(name, status).await;
    }
}

/// The connection limits of a validated configuration.
pub fn connection_limits(limits: &LimitsConfig) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: limits.max_connections,
        max_connections_per_peer: limits.max_connections_per_peer,
        handshake_timeout: Duration::from_secs_f64(limits.handshake_timeout_secs),
        idle_timeout: (limits.idle_timeout_secs > 0.0)
            .then(|| Duration::from_secs_f64(limits.idle_timeout_secs)),
        listen_backlog: limits.listen_backlog,
    }
}
