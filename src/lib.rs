//! riskgate: one circuit breaker per trading account, as a gRPC service.
//!
//! Execution bots ask `GateService.CheckTrade` before each order and report the result with
//! `ReportOutcome`; when an account's orders keep failing its breaker opens and its orders are
//! refused until recovery has been tested. Monitoring follows state changes through
//! `MonitorService`; operators reset or trip breakers through `AdminService`.
//!
//! # Layout
//!
//! The layers, outermost first; each only calls the one below it.
//!
//! - [`cli`] and `main.rs`: the `riskgate` binary. `serve` runs the service; `status`, `watch`,
//!   `reset`, `trip` talk to a running one.
//! - [`server`]: wires the services, health and reflection onto a listener; graceful shutdown.
//! - [`api`]: the wire layer. Thin gRPC handlers (validate, delegate, convert), the one mapping
//!   from [`error::Error`] to `tonic::Status`, and the watch-stream task.
//! - [`registry`]: every account's breaker behind sharded locks, the clock, sequenced events
//!   and their fan-out, the deadline timer, and the hand-off to the store.
//! - [`core`]: the breaker as a pure state machine: `(state, input, now) -> (state, transitions)`.
//! - [`store`]: persistence behind the narrow [`store::Store`] trait.
//! - [`config`]: the embedded default, file and environment layers, validated as a whole.
//! - [`proto`]: code generated from `proto/riskgate/v1/riskgate.proto`.

pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod config;
pub mod core;
pub mod error;
pub mod history;
pub mod logging;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod store;

/// The generated `riskgate.v1` messages, clients and servers.
pub mod proto {
    // A snapshot's Breaker is far larger than the other members of WatchEventsResponse; the
    // message is built once per breaker per snapshot, so the size costs nothing that matters.
    #![allow(clippy::large_enum_variant)]
    tonic::include_proto!("riskgate.v1");
}
