//! `riskgate.v1.AdminService`: operator actions, each naming who acts and why.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use crate::error::Error;
use crate::proto::admin_service_server::AdminService;
use crate::proto::{
    ListAuditRecordsRequest, ListAuditRecordsResponse, ResetBreakerRequest, ResetBreakerResponse,
    TripBreakerRequest, TripBreakerResponse,
};
use crate::registry::{validate_account_id, OperatorAction, Registry};
use crate::store::AuditQuery;

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1_000;

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
        let peer = peer(&request);
        let request = request.into_inner();
        let action = OperatorAction::new(&request.operator, &request.reason)?;
        tracing::info!(account_id = %request.account_id, operator = %action.operator, reason = %action.reason, %peer, "operator reset");
        let view = self
            .registry
            .reset(&request.account_id, action, &peer)
            .await?;
        Ok(Response::new(ResetBreakerResponse {
            breaker: Some(convert::breaker(view)),
        }))
    }

    async fn trip_breaker(
        &self,
        request: Request<TripBreakerRequest>,
    ) -> Result<Response<TripBreakerResponse>, Status> {
        let peer = peer(&request);
        let request = request.into_inner();
        let action = OperatorAction::new(&request.operator, &request.reason)?;
        tracing::warn!(account_id = %request.account_id, operator = %action.operator, reason = %action.reason, %peer, "operator trip");
        let view = self
            .registry
            .trip(&request.account_id, action, &peer)
            .await?;
        Ok(Response::new(TripBreakerResponse {
            breaker: Some(convert::breaker(view)),
        }))
    }

    async fn list_audit_records(
        &self,
        request: Request<ListAuditRecordsRequest>,
    ) -> Result<Response<ListAuditRecordsResponse>, Status> {
        let request = request.into_inner();
        let account_id = match request.account_id.as_str() {
            "" => None,
            id => {
                validate_account_id(id)?;
                Some(request.account_id.clone())
            }
        };
        // The token is the id of the last record of the previous page.
        let before_id = match request.page_token.as_str() {
            "" => None,
            token => Some(token.parse::<u64>().map_err(|_| {
                Error::InvalidArgument("page_token is not one this server issued".into())
            })?),
        };
        let limit = match request.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let query = AuditQuery {
            account_id,
            since: convert::time_filter(request.since, "since")?,
            until: convert::time_filter(request.until, "until")?,
            before_id,
            // One more than the page, to know whether another page follows.
            limit: limit + 1,
        };
        let mut records = self.registry.audit(query).await?;
        let more = records.len() > limit;
        records.truncate(limit);
        let next_page_token = match (more, records.last()) {
            (true, Some(last)) => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(ListAuditRecordsResponse {
            records: records.into_iter().map(convert::audit_record).collect(),
            next_page_token,
        }))
    }
}

/// The caller's address, for logs and the audit trail.
fn peer<T>(request: &Request<T>) -> String {
    request
        .remote_addr()
        .map(|addr| addr.to_string())
        .unwrap_or_default()
}
