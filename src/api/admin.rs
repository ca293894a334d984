//! `riskgate.v1.AdminService`: operator actions, each naming who acts and why.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use crate::proto::admin_service_server::AdminService;
use crate::proto::{
    ResetBreakerRequest, ResetBreakerResponse, TripBreakerRequest, TripBreakerResponse,
};
use crate::registry::{OperatorAction, Registry};

pub struct Admin {
    registry: Arc<Registry>,
}

impl Admin {
    pub fn new(registry: Arc<Registry>) -> Self {
        Admin { registry }
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn reset_breaker(
        &self,
        request: Request<ResetBreakerRequest>,
    ) -> Result<Response<ResetBreakerResponse>, Status> {
        let peer = request.remote_addr();
        let request = request.into_inner();
        let action = OperatorAction::new(&request.operator, &request.reason)?;
        tracing::info!(account_id = %request.account_id, operator = %action.operator, reason = %action.reason, ?peer, "operator reset");
        let view = self.registry.reset(&request.account_id, action).await?;
        Ok(Response::new(ResetBreakerResponse {
            breaker: Some(convert::breaker(view)),
        }))
    }

    async fn trip_breaker(
        &self,
        request: Request<TripBreakerRequest>,
    ) -> Result<Response<TripBreakerResponse>, Status> {
        let peer = request.remote_addr();
        let request = request.into_inner();
        let action = OperatorAction::new(&request.operator, &request.reason)?;
        tracing::warn!(account_id = %request.account_id, operator = %action.operator, reason = %action.reason, ?peer, "operator trip");
        let view = self.registry.trip(&request.account_id, action).await?;
        Ok(Response::new(TripBreakerResponse {
            breaker: Some(convert::breaker(view)),
        }))
    }
}
