//! The wire layer: the three gRPC services, thin handlers over the registry.
//!
//! Handlers validate what only the wire knows (enum values, page tokens), delegate to the
//! registry and convert the answer. Errors become statuses in exactly one place (`status`).

mod admin;
pub mod convert;
mod gate;
mod handling;
pub mod json;
mod monitor;
mod session;
mod status;
mod watch;

pub use admin::Admin;
pub use gate::Gate;
pub use monitor::Monitor;
pub use watch::WatchOptions;

/// Where a call came from when it did not arrive on the gRPC listener (the web console calls
/// the services in process): recorded as the peer in logs and the audit trail.
#[derive(Clone, Debug)]
pub struct Caller(pub String);
