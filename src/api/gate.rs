//! `riskgate.v1.GateService`: validate, delegate to the registry, convert. The unary calls and
//! the trade session (`session`) share one handler per message kind, so both answer alike.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::handling::{check, report};
use super::session::SESSION_WINDOW;
use crate::auth::{Principal, SessionCredentials};
use crate::proto::gate_service_server::GateService;
use crate::proto::{
    CheckTradeRequest, CheckTradeResponse, ReportOutcomeRequest, ReportOutcomeResponse,
    TradeSessionRequest, TradeSessionResponse,
};
use crate::registry::Registry;

pub struct Gate {
    registry: Arc<Registry>,
    /// Becomes `true` when the server is shutting down: sessions stop reading, answer what is
    /// in progress and end.
    shutdown: watch::Receiver<bool>,
}

impl Gate {
    pub fn new(registry: Arc<Registry>, shutdown: watch::Receiver<bool>) -> Self {
        Gate { registry, shutdown }
    }
}

/// The authenticated caller the auth layer put in the request, if any.
fn principal_in(extensions: &tonic::Extensions) -> Option<&Principal> {
    extensions
        .get::<Arc<Principal>>()
        .map(|principal| &**principal)
}

#[tonic::async_trait]
impl GateService for Gate {
    async fn check_trade(
        &self,
        request: Request<CheckTradeRequest>,
    ) -> Result<Response<CheckTradeResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        check(&self.registry, principal_in(&extensions), request)
            .await
            .map(Response::new)
    }

    async fn report_outcome(
        &self,
        request: Request<ReportOutcomeRequest>,
    ) -> Result<Response<ReportOutcomeResponse>, Status> {
        let (_, extensions, request) = request.into_parts();
        report(&self.registry, principal_in(&extensions), request)
            .await
            .map(Response::new)
    }

    type TradeSessionStream = ReceiverStream<Result<TradeSessionResponse, Status>>;

    async fn trade_session(
        &self,
        request: Request<Streaming<TradeSessionRequest>>,
    ) -> Result<Response<Self::TradeSessionStream>, Status> {
        let principal = request.extensions().get::<Arc<Principal>>().cloned();
        let credentials = request
            .extensions()
            .get::<Arc<SessionCredentials>>()
            .cloned();
        let (answers, stream) = mpsc::channel(SESSION_WINDOW);
        tokio::spawn(super::session::run_session(
            self.registry.clone(),
            principal,
            credentials,
            request.into_inner(),
            answers,
            self.shutdown.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}
