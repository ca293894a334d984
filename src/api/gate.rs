//! `riskgate.v1.GateService`: validate, delegate to the registry, convert. The unary calls and
//! the trade session share one handler per message kind, so both answer alike.

use std::sync::Arc;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use crate::auth::Principal;
use crate::proto::gate_service_server::GateService;
use crate::proto::trade_session_request::Kind as In;
use crate::proto::trade_session_response::Kind as Out;
use crate::proto::{
    CheckTradeRequest, CheckTradeResponse, ReportOutcomeRequest, ReportOutcomeResponse,
    SessionError, TradeSessionBatchResponse, TradeSessionRequest, TradeSessionResponse,
};
use crate::registry::Registry;

/// Messages of one trade session in progress at once; past it the stream is not read.
pub const SESSION_WINDOW: usize = 1024;

/// Messages in one batch of a trade session, at most.
pub const MAX_BATCH: usize = 1024;

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

async fn check(
    registry: &Registry,
    principal: Option<&Principal>,
    request: CheckTradeRequest,
) -> Result<CheckTradeResponse, Status> {
    crate::auth::authorize(principal, &request.account_id)?;
    let timer = crate::metrics::Timer::start();
    let intent = convert::intent(request.intent)?;
    let result = registry.check(&request.account_id, intent).await?;
    crate::metrics::checked(&result, &timer);
    Ok(convert::check_response(result))
}

async fn report(
    registry: &Registry,
    principal: Option<&Principal>,
    request: ReportOutcomeRequest,
) -> Result<ReportOutcomeResponse, Status> {
    crate::auth::authorize(principal, &request.account_id)?;
    let timer = crate::metrics::Timer::start();
    let report = convert::report(&request)?;
    let (failed, kind) = (report.failed, report.kind);
    let result = registry
        .report(&request.account_id, &request.permit_id, report)
        .await?;
    crate::metrics::reported(failed, kind, &result, &timer);
    Ok(convert::report_response(result))
}

/// Answers one message of a trade session: a check, a report or a batch of them.
async fn session_message(
    registry: Arc<Registry>,
    principal: Option<Arc<Principal>>,
    message: TradeSessionRequest,
) -> TradeSessionResponse {
    let kind = match message.kind {
        Some(In::Batch(batch)) if batch.messages.len() > MAX_BATCH => {
            Err(Status::invalid_argument(format!(
                "a batch holds at most {MAX_BATCH} messages, not {}",
                batch.messages.len()
            )))
        }
        Some(In::Batch(batch)) => {
            // In the order given: a report follows the check it answers.
            let mut answers = Vec::with_capacity(batch.messages.len());
            for message in batch.messages {
                answers.push(
                    single_message(
                        &registry,
                        principal.as_deref(),
                        message.correlation_id,
                        message.kind,
                    )
                    .await,
                );
            }
            Ok(Out::Batch(TradeSessionBatchResponse { messages: answers }))
        }
        kind => {
            return single_message(
                &registry,
                principal.as_deref(),
                message.correlation_id,
                kind,
            )
            .await
        }
    };
    TradeSessionResponse {
        correlation_id: message.correlation_id,
        kind: Some(kind.unwrap_or_else(session_error)),
    }
}

/// Answers a check or a report of a trade session, as the unary call would.
async fn single_message(
    registry: &Registry,
    principal: Option<&Principal>,
    correlation_id: u64,
    kind: Option<In>,
) -> TradeSessionResponse {
    // Every message of a session is a gate call, under the principal's rate.
    let answer = match principal.map_or(Ok(()), Principal::admit_gate_call) {
        Err(status) => Err(status),
        Ok(()) => match kind {
            Some(In::Check(request)) => check(registry, principal, request).await.map(Out::Check),
            Some(In::Report(request)) => {
                report(registry, principal, request).await.map(Out::Report)
            }
            Some(In::Batch(_)) => Err(Status::invalid_argument(
                "a batch cannot hold another batch",
            )),
            None => Err(Status::invalid_argument(
                "a trade session message holds a check, a report or a batch",
            )),
        },
    };
    TradeSessionResponse {
        correlation_id,
        kind: Some(answer.unwrap_or_else(session_error)),
    }
}

fn session_error(status: Status) -> Out {
    Out::Error(SessionError {
        code: status.code() as i32,
        message: status.message().to_owned(),
    })
}

/// Reads a session's messages and answers each, reading no more while `SESSION_WINDOW` are in
/// progress (so at most `SESSION_WINDOW + MAX_BATCH`). A message whose answer is ready at once
/// (a check in CLOSED, or a batch of them) is answered without a task of its own.
async fn run_session(
    registry: Arc<Registry>,
    principal: Option<Arc<Principal>>,
    mut inbound: Streaming<TradeSessionRequest>,
    answers: mpsc::Sender<Result<TradeSessionResponse, Status>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pending = FuturesUnordered::new();
    // Messages in `pending`, a batch counting each of its own: reading stops at the window.
    let mut in_progress = 0usize;
    let mut stopping = *shutdown.borrow();
    let mut reading = !stopping;
    loop {
        tokio::select! {
            changed = shutdown.changed(), if !stopping => {
                let now_stopping = changed.is_err() || *shutdown.borrow();
                if now_stopping {
                    stopping = true;
                    reading = false;
                }
            }
            message = inbound.message(), if reading && in_progress < SESSION_WINDOW => {
                match message {
                    Ok(Some(message)) => {
                        let weight = match &message.kind {
                            Some(In::Batch(batch)) => batch.messages.len().max(1),
                            _ => 1,
                        };
                        let mut answer =
                            Box::pin(session_message(registry.clone(), principal.clone(), message));
                        match (&mut answer).now_or_never() {
                            Some(done) => {
                                if answers.send(Ok(done)).await.is_err() {
                                    return;
                                }
                            }
                            None => {
                                in_progress += weight;
                                pending.push(answer.map(move |done| (weight, done)));
                            }
                        }
                    }
                    // The client closed its side: answer what is in progress, then end.
                    Ok(None) => reading = false,
                    Err(status) => {
                        tracing::debug!(%status, "trade session ended by the client");
                        reading = false;
                    }
                }
            }
            Some((weight, done)) = pending.next(), if !pending.is_empty() => {
                in_progress -= weight;
                if answers.send(Ok(done)).await.is_err() {
                    // Nobody listens any more. What is in progress is already submitted to the
                    // store; only the answers are lost.
                    return;
                }
            }
            else => return,
        }
        if !reading && pending.is_empty() {
            if stopping {
                let _ = answers
                    .send(Err(Status::unavailable(
                        "riskgate is shutting down; every message sent before was answered",
                    )))
                    .await;
            }
            return;
        }
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
        let (answers, stream) = mpsc::channel(SESSION_WINDOW);
        tokio::spawn(run_session(
            self.registry.clone(),
            principal,
            request.into_inner(),
            answers,
            self.shutdown.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}
