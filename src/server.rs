//! Serving: the registry, the three riskgate services, gRPC health and reflection on one
//! listener, the deadline timer beside them, and a graceful shutdown.
//!
//! `run`/`serve` take a bound listener and a shutdown future, so tests bind `127.0.0.1:0`, pass
//! their own shutdown and talk to the real server over a real socket.
//!
//! Shutdown order: health goes NOT_SERVING, the listener stops accepting, watch streams end
//! with `UNAVAILABLE` naming where to resume, in-flight calls finish; whatever is still open
//! after `server.shutdown_grace_secs` is closed.

use std::future::Future;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::api::{Admin, Gate, Monitor, WatchOptions};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::error::Error;
use crate::proto::admin_service_server::AdminServiceServer;
use crate::proto::gate_service_server::GateServiceServer;
use crate::proto::monitor_service_server::MonitorServiceServer;
use crate::registry::Registry;
use crate::store::{MemoryStore, Store};

/// The encoded descriptors of `riskgate.v1`, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/riskgate_descriptor.bin"));

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
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves on `listener` with the store the configuration names, until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(config.events.retained));
    serve(
        listener,
        config,
        store,
        Arc::new(SystemClock::new()),
        shutdown,
    )
    .await
}

/// Serves on `listener` with the given store and clock, until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let registry = Arc::new(Registry::open(config.registry_options(), store, clock)?);
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;
    let (stopping, stop) = watch::channel(false);

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

    let timer = tokio::spawn({
        let registry = registry.clone();
        let mut stop = stop.clone();
        async move {
            registry
                .run_deadlines(async move {
                    let _ = stop.wait_for(|stopping| *stopping).await;
                })
                .await
        }
    });

    tracing::info!(
        addr = %listener.local_addr()?,
        accounts = registry.account_count(),
        last_sequence = registry.last_sequence(),
        "riskgate serving"
    );
    let signal = {
        let health = health.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: draining calls and ending watch streams");
            set_health(&health, ServingStatus::NotServing).await;
            let _ = stopping.send(true);
        }
    };
    let server = Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(GateServiceServer::new(Gate::new(registry.clone())))
        .add_service(MonitorServiceServer::new(Monitor::new(
            registry.clone(),
            watch_options,
        )))
        .add_service(AdminServiceServer::new(Admin::new(registry.clone())))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal);

    let grace = config.shutdown_grace();
    let mut stop_for_grace = stop.clone();
    let grace_elapsed = async move {
        let _ = stop_for_grace.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = server => result.map_err(ServeError::from),
        _ = grace_elapsed => {
            tracing::warn!(?grace, "shutdown grace period elapsed; closing the remaining connections");
            Ok(())
        }
    };
    timer.abort();
    tracing::info!("riskgate stopped");
    result
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for name in HEALTH_NAMES {
        health.set_service_status(name, status).await;
    }
}
