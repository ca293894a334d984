//! `riskgate.v1.GateService`: validate, delegate to the registry, convert.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use crate::proto::gate_service_server::GateService;
use crate::proto::{
    CheckTradeRequest, CheckTradeResponse, ReportOutcomeRequest, ReportOutcomeResponse,
};
use crate::registry::Registry;

pub struct Gate {
    registry: Arc<Registry>,
}

impl Gate {
    pub fn new(registry: Arc<Registry>) -> Self {
        Gate { registry }
    }
}

#[tonic::async_trait]
impl GateService for Gate {
    async fn check_trade(
        &self,
        request: Request<CheckTradeRequest>,
    ) -> Result<Response<CheckTradeResponse>, Status> {
        crate::auth::authorize_account(&request, &request.get_ref().account_id)?;
        let request = request.into_inner();
        let started = std::time::Instant::now();
        let intent = convert::intent(request.intent)?;
        let result = self.registry.check(&request.account_id, intent).await?;
        crate::metrics::checked(&result, started.elapsed());
        Ok(Response::new(convert::check_response(result)))
    }

    async fn report_outcome(
        &self,
        request: Request<ReportOutcomeRequest>,
    ) -> Result<Response<ReportOutcomeResponse>, Status> {
        crate::auth::authorize_account(&request, &request.get_ref().account_id)?;
        let request = request.into_inner();
        let started = std::time::Instant::now();
        let report = convert::report(&request)?;
        let (failed, kind) = (report.failed, report.kind);
        let result = self
            .registry
            .report(&request.account_id, &request.permit_id, report)
            .await?;
        crate::metrics::reported(failed, kind, &result, started.elapsed());
        Ok(Response::new(convert::report_response(result)))
    }
}
