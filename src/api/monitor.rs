//! `riskgate.v1.MonitorService`: read breakers and follow their changes.

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{convert, watch};
use crate::cluster::{Membership, Role};
use crate::error::Error;
use crate::proto::monitor_service_server::MonitorService;
use crate::proto::{
    ClusterMember, GetBreakerRequest, GetBreakerResponse, GetClusterRequest, GetClusterResponse,
    ListBreakersRequest, ListBreakersResponse, NodeRole, WatchEventsRequest, WatchEventsResponse,
};
use crate::registry::{validate_account_id, Registry};

const DEFAULT_PAGE_SIZE: usize = 1_000;
const MAX_PAGE_SIZE: usize = 10_000;
/// Breakers of a page converted between two turns given back to the runtime.
const CONVERT_TURN: usize = 1_000;

pub struct Monitor {
    registry: Arc<Registry>,
    watch: watch::WatchOptions,
    /// One permit per open watch stream.
    watchers: Arc<tokio::sync::Semaphore>,
    max_watchers: usize,
    /// The node's cluster; `None` on a single node.
    membership: Option<Arc<dyn Membership>>,
}

impl Monitor {
    pub fn new(
        registry: Arc<Registry>,
        watch: watch::WatchOptions,
        max_watchers: usize,
        membership: Option<Arc<dyn Membership>>,
    ) -> Self {
        Monitor {
            registry,
            watch,
            watchers: Arc::new(tokio::sync::Semaphore::new(max_watchers)),
            max_watchers,
            membership,
        }
    }
}

fn node_role(role: Role) -> NodeRole {
    match role {
        Role::Leader { .. } => NodeRole::Leader,
        Role::Standby => NodeRole::Standby,
        Role::Candidate => NodeRole::Candidate,
        Role::Fenced { .. } => NodeRole::Fenced,
    }
}

#[tonic::async_trait]
impl MonitorService for Monitor {
    async fn get_cluster(
        &self,
        _request: Request<GetClusterRequest>,
    ) -> Result<Response<GetClusterResponse>, Status> {
        let Some(membership) = &self.membership else {
            return Ok(Response::new(GetClusterResponse {
                clustered: false,
                role: NodeRole::Single.into(),
                ..GetClusterResponse::default()
            }));
        };
        let status = membership.status().await.map_err(Status::unavailable)?;
        Ok(Response::new(GetClusterResponse {
            clustered: true,
            node_id: status.node_id,
            role: node_role(status.role).into(),
            leader_id: status.leader_id,
            leader_address: status.leader_address,
            epoch: status.epoch,
            etcd_revision: status.etcd_revision,
            members: status
                .members
                .into_iter()
                .map(|member| ClusterMember {
                    node_id: member.node_id,
                    address: member.address,
                    leader: member.leader,
                    applied_revision: member.applied_revision,
                    lag_revisions: member.lag_revisions,
                    reported_ago: Some(convert::duration(member.reported_ago)),
                    lease_left: member.lease_left.map(convert::duration),
                })
                .collect(),
        }))
    }

    async fn get_breaker(
        &self,
        request: Request<GetBreakerRequest>,
    ) -> Result<Response<GetBreakerResponse>, Status> {
        let view = self.registry.get(&request.into_inner().account_id).await?;
        Ok(Response::new(GetBreakerResponse {
            breaker: Some(convert::breaker(view)),
        }))
    }

    async fn list_breakers(
        &self,
        request: Request<ListBreakersRequest>,
    ) -> Result<Response<ListBreakersResponse>, Status> {
        let request = request.into_inner();
        let state = convert::state_filter(request.state)?;
        // The token is the last account id of the previous page.
        let after = match request.page_token.as_str() {
            "" => None,
            token => {
                validate_account_id(token).map_err(|_| {
                    Error::InvalidArgument("page_token is not one this server issued".into())
                })?;
                Some(token)
            }
        };
        let limit = match request.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let (views, more) = self.registry.list(state, after, limit).await?;
        let next_page_token = match (more, views.last()) {
            (true, Some(last)) => last.account_id.clone(),
            _ => String::new(),
        };
        // A page of 10,000 takes milliseconds to convert: in slices, between the checks.
        let mut breakers = Vec::with_capacity(views.len());
        for (i, view) in views.into_iter().enumerate() {
            if i > 0 && i % CONVERT_TURN == 0 {
                tokio::task::yield_now().await;
            }
            breakers.push(convert::breaker(view));
        }
        Ok(Response::new(ListBreakersResponse {
            breakers,
            next_page_token,
            total_breakers: self.registry.account_count() as u64,
        }))
    }

    type WatchEventsStream = ReceiverStream<Result<WatchEventsResponse, Status>>;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let request = request.into_inner();
        let slot =
            self.watchers
                .clone()
                .try_acquire_owned()
                .map_err(|_| Error::TooManyWatchers {
                    max: self.max_watchers,
                })?;
        let subscription = self
            .registry
            .subscribe(&request.account_ids, request.after_sequence)
            .await?;
        let stream = watch::start(
            self.registry.clock_handle(),
            subscription,
            request.account_ids,
            self.watch.clone(),
            slot,
        );
        Ok(Response::new(stream))
    }
}
