//! `riskgate.v1.GateService`: validate, delegate to the registry, convert. The unary calls and
//! the trade session (`session`) share one handler per message kind, so both answer alike.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use super::session::SESSION_WINDOW;
use crate::auth::{Principal, SessionCredentials};
use crate::core::FailureKind;
use crate::proto::gate_service_server::GateService;
use crate::proto::{
    CheckTradeRequest, CheckTradeResponse, ReportOutcomeRequest, ReportOutcomeResponse,
    TradeSessionRequest, TradeSessionResponse,
};
use crate::registry::{CheckResult, Registry, ReportResult, WhenDurable};

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

/// A check's answer: ready at once, or once what it relies on is durable (a probe it granted;
/// a reset, a recovery or a mode it allows the order under, not yet on disk).
pub(super) enum Checked {
    Ready(CheckTradeResponse),
    Durable(Box<PendingCheck>),
}

pub(super) struct PendingCheck {
    pub(super) account_id: String,
    pub(super) result: CheckResult,
    pub(super) when: WhenDurable,
    pub(super) timer: crate::metrics::Timer,
}

/// Decides a check without waiting: most checks are answered here, so the trade session
/// answers them without building a future.
pub(super) fn check_now(
    registry: &Registry,
    principal: Option<&Principal>,
    request: CheckTradeRequest,
) -> Result<Checked, Status> {
    crate::auth::authorize(principal, &request.account_id)?;
    let timer = crate::metrics::Timer::start();
    let intent = convert::intent(request.intent)?;
    Ok(match registry.decide(&request.account_id, intent)? {
        (result, None) => {
            crate::metrics::checked(&timer, || result.metric());
            Checked::Ready(convert::check_response(result))
        }
        (result, Some(when)) => Checked::Durable(Box::new(PendingCheck {
            account_id: request.account_id,
            result,
            when,
            timer,
        })),
    })
}

/// Answers a check once what it relies on is durable.
pub(super) async fn check_durable(
    registry: &Registry,
    pending: PendingCheck,
) -> Result<CheckTradeResponse, Status> {
    let PendingCheck {
        account_id,
        result,
        when,
        timer,
    } = pending;
    let result = registry
        .settle_check(&account_id, result, Some(when))
        .await?;
    crate::metrics::checked(&timer, || result.metric());
    Ok(convert::check_response(result))
}

async fn check(
    registry: &Registry,
    principal: Option<&Principal>,
    request: CheckTradeRequest,
) -> Result<CheckTradeResponse, Status> {
    match check_now(registry, principal, request)? {
        Checked::Ready(answer) => Ok(answer),
        Checked::Durable(pending) => check_durable(registry, *pending).await,
    }
}

/// A report applied to its breaker, its answer waiting for the disk.
pub(super) struct PendingReport {
    pub(super) result: ReportResult,
    pub(super) when: Option<WhenDurable>,
    pub(super) failed: bool,
    pub(super) kind: FailureKind,
    pub(super) timer: crate::metrics::Timer,
}

/// Applies a report at once; its answer waits in [`report_durable`].
pub(super) fn report_now(
    registry: &Registry,
    principal: Option<&Principal>,
    request: &ReportOutcomeRequest,
) -> Result<PendingReport, Status> {
    crate::auth::authorize(principal, &request.account_id)?;
    let timer = crate::metrics::Timer::start();
    let report = convert::report(request)?;
    let (failed, kind) = (report.failed, report.kind);
    let (result, when) = registry.record_report(&request.account_id, &request.permit_id, report)?;
    Ok(PendingReport {
        result,
        when,
        failed,
        kind,
        timer,
    })
}

pub(super) async fn report_durable(
    registry: &Registry,
    mut pending: PendingReport,
) -> Result<ReportOutcomeResponse, Status> {
    registry.wait_durable(pending.when.take()).await?;
    Ok(report_answered(pending))
}

/// The answer of a report once it may be given.
pub(super) fn report_answered(pending: PendingReport) -> ReportOutcomeResponse {
    crate::metrics::reported(
        pending.failed,
        pending.kind,
        pending.result.disposition,
        &pending.timer,
    );
    convert::report_response(pending.result)
}

async fn report(
    registry: &Registry,
    principal: Option<&Principal>,
    request: ReportOutcomeRequest,
) -> Result<ReportOutcomeResponse, Status> {
    let pending = report_now(registry, principal, &request)?;
    report_durable(registry, pending).await
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
