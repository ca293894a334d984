//! `riskgate.v1.AdminService`: operator actions, each naming who acts and why.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use crate::error::Error;
use crate::history::{OperatorAction, Scope};
use crate::proto::admin_service_server::AdminService;
use crate::proto::{
    GetConfigRequest, GetConfigResponse, HaltAllRequest, HaltAllResponse, HaltGroupRequest,
    HaltGroupResponse, ListAuditRecordsRequest, ListAuditRecordsResponse, ListHaltsRequest,
    ListHaltsResponse, ResetBreakerRequest, ResetBreakerResponse, ResumeAllRequest,
    ResumeAllResponse, ResumeGroupRequest, ResumeGroupResponse, SetAccountSettingsRequest,
    SetAccountSettingsResponse, SetModeRequest, SetModeResponse, TripBreakerRequest,
    TripBreakerResponse,
};
use crate::registry::{validate_account_id, Registry};
use crate::store::AuditQuery;

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1_000;

pub struct Admin {
    registry: Arc<Registry>,
    /// How the configuration file stands against what is in force.
    drift: Arc<crate::config::ConfigDrift>,
}

impl Admin {
    pub fn new(registry: Arc<Registry>, drift: Arc<crate::config::ConfigDrift>) -> Self {
        Admin { registry, drift }
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn reset_breaker(
        &self,
        request: Request<ResetBreakerRequest>,
    ) -> Result<Response<ResetBreakerResponse>, Status> {
        let peer = peer(&request);
        let principal = crate::auth::principal_name(&request);
        let request = request.into_inner();
        let action = operator_action(principal, &request.operator, &request.reason)?;
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
        let principal = crate::auth::principal_name(&request);
        let request = request.into_inner();
        let action = operator_action(principal, &request.operator, &request.reason)?;
        let until = convert::time_filter(request.until, "until")?;
        tracing::warn!(account_id = %request.account_id, operator = %action.operator, reason = %action.reason, until = ?until, %peer, "operator trip");
        let view = self
            .registry
            .trip(&request.account_id, action, &peer, until)
            .await?;
        Ok(Response::new(TripBreakerResponse {
            breaker: Some(convert::breaker(view)),
        }))
    }

    async fn set_mode(
        &self,
        request: Request<SetModeRequest>,
    ) -> Result<Response<SetModeResponse>, Status> {
        let peer = peer(&request);
        let principal = crate::auth::principal_name(&request);
        let request = request.into_inner();
        let action = operator_action(principal, &request.operator, &request.reason)?;
        let mode = convert::mode_request(request.mode)?;
        tracing::warn!(account_id = %request.account_id, mode = ?mode, operator = %action.operator, reason = %action.reason, %peer, "operator set mode");
        let view = self
            .registry
            .set_mode(&request.account_id, mode, action, &peer)
            .await?;
        Ok(Response::new(SetModeResponse {
            breaker: Some(convert::breaker(view)),
        }))
    }

    async fn set_account_settings(
        &self,
        request: Request<SetAccountSettingsRequest>,
    ) -> Result<Response<SetAccountSettingsResponse>, Status> {
        let peer = peer(&request);
        let principal = crate::auth::principal_name(&request);
        let request = request.into_inner();
        let action = operator_action(principal, &request.operator, &request.reason)?;
        let set = convert::overrides(request.settings.unwrap_or_default())?;
        tracing::warn!(account_id = %request.account_id, set = %set.describe(), clear = ?request.clear, operator = %action.operator, reason = %action.reason, %peer, "operator set account settings");
        let view = self
            .registry
            .set_settings(&request.account_id, &set, &request.clear, action, &peer)
            .await?;
        Ok(Response::new(SetAccountSettingsResponse {
            breaker: Some(convert::breaker(view)),
        }))
    }

    async fn halt_all(
        &self,
        request: Request<HaltAllRequest>,
    ) -> Result<Response<HaltAllResponse>, Status> {
        let (halts, changed) = self
            .halt_call(request, true, |r| (Scope::Firm, r.operator, r.reason))
            .await?;
        Ok(Response::new(HaltAllResponse {
            halts,
            began: changed,
        }))
    }

    async fn resume_all(
        &self,
        request: Request<ResumeAllRequest>,
    ) -> Result<Response<ResumeAllResponse>, Status> {
        let (halts, changed) = self
            .halt_call(request, false, |r| (Scope::Firm, r.operator, r.reason))
            .await?;
        Ok(Response::new(ResumeAllResponse {
            halts,
            ended: changed,
        }))
    }

    async fn halt_group(
        &self,
        request: Request<HaltGroupRequest>,
    ) -> Result<Response<HaltGroupResponse>, Status> {
        let (halts, changed) = self
            .halt_call(request, true, |r| {
                (Scope::Group(r.group), r.operator, r.reason)
            })
            .await?;
        Ok(Response::new(HaltGroupResponse {
            halts,
            began: changed,
        }))
    }

    async fn resume_group(
        &self,
        request: Request<ResumeGroupRequest>,
    ) -> Result<Response<ResumeGroupResponse>, Status> {
        let (halts, changed) = self
            .halt_call(request, false, |r| {
                (Scope::Group(r.group), r.operator, r.reason)
            })
            .await?;
        Ok(Response::new(ResumeGroupResponse {
            halts,
            ended: changed,
        }))
    }

    async fn list_halts(
        &self,
        _request: Request<ListHaltsRequest>,
    ) -> Result<Response<ListHaltsResponse>, Status> {
        Ok(Response::new(ListHaltsResponse {
            halts: self.halts().await?,
        }))
    }

    async fn get_config(
        &self,
        _request: Request<GetConfigRequest>,
    ) -> Result<Response<GetConfigResponse>, Status> {
        let rulebook = self.registry.rulebook();
        let drift = self.drift.get();
        Ok(Response::new(GetConfigResponse {
            version: rulebook.version.to_string(),
            toml: rulebook.text.to_string(),
            reload_refused: drift.reload_refused.unwrap_or_default(),
            restart_needed: drift.restart_needed,
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

impl Admin {
    async fn halts(&self) -> Result<Vec<crate::proto::Halt>, Error> {
        let rulebook = self.registry.rulebook();
        Ok(self
            .registry
            .halts()
            .await?
            .iter()
            .map(|(scope, halt)| {
                let defined = match scope {
                    Scope::Firm => true,
                    Scope::Group(name) => rulebook.has_group(name),
                };
                convert::halt(scope, halt, defined)
            })
            .collect())
    }

    /// A halt or resume call: who acts (the principal, with authentication on), over which scope,
    /// why; answered with the halts in force after it, and whether it changed them.
    async fn halt_call<T>(
        &self,
        request: Request<T>,
        halt: bool,
        parts: impl FnOnce(T) -> (Scope, String, String),
    ) -> Result<(Vec<crate::proto::Halt>, bool), Status> {
        let peer = peer(&request);
        let principal = crate::auth::principal_name(&request);
        let (scope, operator, reason) = parts(request.into_inner());
        let action = operator_action(principal, &operator, &reason)?;
        if let Scope::Group(name) = &scope {
            validate_account_id(name).map_err(|e| {
                Error::InvalidArgument(format!("group is not a valid group name: {e}"))
            })?;
        }
        let described = scope.describe();
        let changed = if halt {
            tracing::warn!(scope = %described, operator = %action.operator, reason = %action.reason, %peer, "halt");
            self.registry.halt(scope, action, &peer).await?
        } else {
            tracing::warn!(scope = %described, operator = %action.operator, reason = %action.reason, %peer, "resume");
            self.registry.resume(scope, action, &peer).await?
        };
        Ok((self.halts().await?, changed))
    }
}

/// Who acts and why. With authentication on, the actor is the authenticated principal, never a
/// name from the request (which may then be left empty).
fn operator_action(
    principal: Option<std::sync::Arc<str>>,
    given: &str,
    reason: &str,
) -> Result<OperatorAction, Error> {
    match principal {
        Some(name) => Ok(OperatorAction::new(&name, reason)?),
        None => Ok(OperatorAction::new(given, reason)?),
    }
}

/// The caller's address, for logs and the audit trail.
fn peer<T>(request: &Request<T>) -> String {
    let extensions = request.extensions();
    if let Some(info) = extensions.get::<crate::connections::ConnInfo>() {
        return info.conn.remote.to_string();
    }
    extensions
        .get::<super::Caller>()
        .map(|caller| caller.0.clone())
        .unwrap_or_default()
}
