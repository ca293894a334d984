//! Sends calls that change breakers to the leader: on a node that does not lead, GateService
//! and AdminService calls are answered `UNAVAILABLE` at once, with the leader's address in the
//! message and in the response metadata `riskgate-leader`, so that clients retry there.
//! MonitorService, health, reflection and AdminService's reads (ListHalts, ListAuditRecords,
//! GetConfig) are answered by every node, from its mirror and from etcd.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{ready, Either, Ready};
use tonic::body::Body;
use tonic::Status;

use super::{Membership, Route};

/// The response metadata naming the leader's address.
pub const LEADER_METADATA: &str = "riskgate-leader";

/// The services only the leader answers.
const LEADER_ONLY: [&str; 2] = ["/riskgate.v1.GateService/", "/riskgate.v1.AdminService/"];

/// AdminService's reads, answered by every node (and open to the monitor role).
pub const ADMIN_READS: [&str; 3] = [
    "/riskgate.v1.AdminService/ListHalts",
    "/riskgate.v1.AdminService/ListAuditRecords",
    "/riskgate.v1.AdminService/GetConfig",
];

#[derive(Clone)]
pub struct LeaderRouting {
    membership: Option<Arc<dyn Membership>>,
}

impl LeaderRouting {
    /// Routes by `membership`; `None` (a single node) lets every call through.
    pub fn new(membership: Option<Arc<dyn Membership>>) -> Self {
        LeaderRouting { membership }
    }
}

impl<S> tower_layer::Layer<S> for LeaderRouting {
    type Service = Routed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Routed {
            inner,
            membership: self.membership.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Routed<S> {
    inner: S,
    membership: Option<Arc<dyn Membership>>,
}

/// Why this node does not take the call, as a status, or `None` when it does.
pub fn refusal(membership: &dyn Membership, path: &str) -> Option<Status> {
    if !LEADER_ONLY.iter().any(|prefix| path.starts_with(prefix)) || ADMIN_READS.contains(&path) {
        return None;
    }
    match membership.route() {
        Route::Here => None,
        Route::Leader { node_id, address } => {
            let mut status = Status::unavailable(format!(
                "this riskgate node ({}) is a standby; the leader is {node_id} at {address}: retry there",
                membership.node_id()
            ));
            if let Ok(value) = address.parse() {
                status.metadata_mut().insert(LEADER_METADATA, value);
            }
            Some(status)
        }
        Route::Unknown => Some(Status::unavailable(format!(
            "this riskgate node ({}) is not the leader and no leader is elected yet: retry shortly",
            membership.node_id()
        ))),
    }
}

impl<S, E> tower_service::Service<http::Request<Body>> for Routed<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>, Error = E>,
{
    type Response = http::Response<Body>;
    type Error = E;
    type Future = Either<Ready<Result<http::Response<Body>, E>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if let Some(membership) = &self.membership {
            if let Some(status) = refusal(membership.as_ref(), request.uri().path()) {
                return Either::Left(ready(Ok(status.into_http())));
            }
        }
        Either::Right(self.inner.call(request))
    }
}
