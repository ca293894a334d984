//! A plain tonic 0.14 `GateService`, for comparing riskgate with the least a gRPC server can
//! do (`benches/h2load.sh`): `CheckTrade` is one lookup in a `Mutex<HashMap>`, `ReportOutcome`
//! does nothing, on tokio's default multi-threaded runtime. No riskgate code: only the
//! messages and service generated from `proto/riskgate/v1/riskgate.proto`.
//!
//!   cargo build --release --example plain_tonic_server
//!   target/release/examples/plain_tonic_server 127.0.0.1:50099

use std::collections::HashMap;
use std::sync::Mutex;

use tonic::{Request, Response, Status, Streaming};

mod proto {
    #![allow(clippy::large_enum_variant)]
    tonic::include_proto!("riskgate.v1");
}

/// The generated service names riskgate's codec (tuned for its streams); the plain server uses
/// tonic's standard protobuf codec in its place.
mod grpc_codec {
    pub type RiskgateCodec<T, U> = tonic_prost::ProstCodec<T, U>;
}

use proto::gate_service_server::{GateService, GateServiceServer};
use proto::*;

struct Plain {
    generations: Mutex<HashMap<String, u64>>,
}

#[tonic::async_trait]
impl GateService for Plain {
    async fn check_trade(
        &self,
        request: Request<CheckTradeRequest>,
    ) -> Result<Response<CheckTradeResponse>, Status> {
        let generation = self
            .generations
            .lock()
            .map_err(|_| Status::internal("poisoned"))?
            .get(&request.get_ref().account_id)
            .copied()
            .unwrap_or(0);
        Ok(Response::new(CheckTradeResponse {
            allowed: true,
            generation,
            ..Default::default()
        }))
    }

    async fn report_outcome(
        &self,
        _request: Request<ReportOutcomeRequest>,
    ) -> Result<Response<ReportOutcomeResponse>, Status> {
        Ok(Response::new(ReportOutcomeResponse::default()))
    }

    type TradeSessionStream = futures_util::stream::Empty<Result<TradeSessionResponse, Status>>;

    async fn trade_session(
        &self,
        _request: Request<Streaming<TradeSessionRequest>>,
    ) -> Result<Response<Self::TradeSessionStream>, Status> {
        Err(Status::unimplemented("not in the plain server"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50099".into())
        .parse()?;
    let generations = (0..1000).map(|i| (format!("ACC-{i}"), 1)).collect();
    tonic::transport::Server::builder()
        .add_service(GateServiceServer::new(Plain {
            generations: Mutex::new(generations),
        }))
        .serve(listen)
        .await?;
    Ok(())
}
