pub mod clock;
pub mod core;
pub mod error;
pub mod registry;
pub mod store;

pub mod proto {
    tonic::include_proto!("riskgate.v1");
}
