//! riskgate: one circuit breaker per trading account, as a gRPC service.
//!
//! Execution bots ask `GateService.CheckTrade` before each order and report the result with
//! `ReportOutcome`; when an account's orders keep failing its breaker opens and its orders are
//! refused until recovery has been tested. Monitoring follows state changes through
//! `MonitorService`; operators reset or trip breakers through `AdminService`.
//!
//! # Layout
//!
//! The layers, outermost first. A module imports only modules of the layers below its own,
//! never one above and never one beside it, so there is no import circle;
//! `tests/architecture.rs` reads the source and holds the code to this.
//!
//! 1. [`cli`] and `main.rs`: the `riskgate` binary. `serve` runs the service; `status`,
//!    `watch`, `reset`, `trip`, `halt`, `audit`, `config` talk to a running one.
//! 2. [`server`]: wires the services, health and reflection onto a listener; reloads the
//!    configuration; graceful shutdown.
//! 3. [`console`]: the operators' web console (axum, on its own listener): a client of the
//!    services of [`api`], called in process as the signed-in operator.
//! 4. [`api`]: the wire layer. Thin gRPC handlers (validate, delegate, convert), the trade
//!    session, the watch-stream task, and the one map from [`error::Error`] to `tonic::Status`.
//! 5. [`auth`]: who is calling and what they may do; the layer that authenticates, authorizes,
//!    rate-limits and sheds every call before a handler runs.
//!    [`connections`]: who may connect and for how long (limits in total and per address,
//!    handshake and idle deadlines, an accept loop that backs off), each connection's
//!    state, which rides along to its calls, and HTTP/2 on hyper with each connection's calls
//!    answered in its own task when that is quicker.
//! 6. [`cluster`]: a node's leadership of a replicated riskgate, as a pure state machine
//!    (its role, its self-fence, when a new leader may serve).
//!    [`logging`]: the tracing subscriber, human or JSON.
//! 7. [`config`]: the embedded default, file and environment layers, validated as a whole.
//! 8. [`registry`]: every account's breaker behind sharded locks, halts, sequenced events and
//!    their fan-out, the deadline timer, and the hand-off to the store, with what each answer
//!    must wait for before it is given.
//! 9. [`error`]: the service's one error type.
//! 10. [`store`]: persistence behind the narrow [`store::Store`] trait: in memory, or SQLite.
//! 11. [`history`]: what happened, as the registry records it and the store keeps it (events,
//!     operator actions, halts, audit records): the vocabulary both speak.
//! 12. Leaves: [`metrics`] (Prometheus, labelled by plain values), [`clock`] (the service
//!     clock), [`grpc_codec`] (the gRPC codec), [`runtime`] (the tuned tokio runtime),
//!     [`proto`] (generated from `proto/riskgate/v1/riskgate.proto`).
//! 13. [`core`]: the breaker as a pure state machine: `(state, input, now) -> (state,
//!     transitions)`.

pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod console;
pub mod core;
pub mod error;
pub mod grpc_codec;
pub mod history;
pub mod logging;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod server;
pub mod store;

/// The generated `riskgate.v1` messages, clients and servers.
pub mod proto {
    // A snapshot's Breaker is far larger than the other members of WatchEventsResponse; the
    // message is built once per breaker per snapshot, so the size costs nothing that matters.
    #![allow(clippy::large_enum_variant)]
    tonic::include_proto!("riskgate.v1");
}
