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
use crate::registry::{CheckResult, Registry};
use crate::store::Commit;

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

/// A check's answer, ready at once unless the check granted a probe, whose answer is given only
/// once the probe is durable.
enum Checked {
    Ready(CheckTradeResponse),
    Durable(CheckResult, Commit, crate::metrics::Timer),
}

/// Decides a check without waiting: every check but one that grants a probe is answered here, so
/// the trade session answers them without building a future.
fn check_now(
    registry: &Registry,
    principal: Option<&Principal>,
    request: &CheckTradeRequest,
) -> Result<Checked, Status> {
    crate::auth::authorize(principal, &request.account_id)?;
    let timer = crate::metrics::Timer::start();
    let intent = convert::intent(request.intent)?;
    Ok(match registry.decide(&request.account_id, intent)? {
        (result, None) => {
            crate::metrics::checked(&result, &timer);
            Checked::Ready(convert::check_response(result))
        }
        (result, Some(commit)) => Checked::Durable(result, commit, timer),
    })
}

/// Answers a check that granted a probe, once the probe is durable.
async fn check_durable(
    registry: &Registry,
    result: CheckResult,
    commit: Commit,
    timer: crate::metrics::Timer,
) -> Result<CheckTradeResponse, Status> {
    registry.wait_durable(Some(commit)).await?;
    crate::metrics::checked(&result, &timer);
    Ok(convert::check_response(result))
}

async fn check(
    registry: &Registry,
    principal: Option<&Principal>,
    request: CheckTradeRequest,
) -> Result<CheckTradeResponse, Status> {
    match check_now(registry, principal, &request)? {
        Checked::Ready(answer) => Ok(answer),
        Checked::Durable(result, commit, timer) => {
            check_durable(registry, result, commit, timer).await
        }
    }
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

/// A session message that could not be answered at once: the message waiting for a write and,
/// in a batch, the answers before it and the messages after it.
struct Unfinished {
    correlation_id: u64,
    waiting: (u64, Later),
    batch: Option<(
        Vec<TradeSessionResponse>,
        std::vec::IntoIter<TradeSessionRequest>,
    )>,
}

/// Answers one message of a trade session (a check, a report or a batch of them) at once if
/// nothing in it waits for a write; otherwise returns what is left, for [`finish`].
fn session_message_now(
    registry: &Registry,
    principal: Option<&Principal>,
    message: TradeSessionRequest,
) -> Result<TradeSessionResponse, Box<Unfinished>> {
    let correlation_id = message.correlation_id;
    match message.kind {
        Some(In::Batch(batch)) if batch.messages.len() > MAX_BATCH => Ok(TradeSessionResponse {
            correlation_id,
            kind: Some(session_error(Status::invalid_argument(format!(
                "a batch holds at most {MAX_BATCH} messages, not {}",
                batch.messages.len()
            )))),
        }),
        Some(In::Batch(batch)) => {
            // In the order given: a report follows the check it answers.
            let mut answers = Vec::with_capacity(batch.messages.len());
            let mut rest = batch.messages.into_iter();
            while let Some(message) = rest.next() {
                let id = message.correlation_id;
                match answer_now(registry, principal, id, message.kind) {
                    Ok(answer) => answers.push(answer),
                    Err(later) => {
                        return Err(Box::new(Unfinished {
                            correlation_id,
                            waiting: (id, later),
                            batch: Some((answers, rest)),
                        }))
                    }
                }
            }
            Ok(TradeSessionResponse {
                correlation_id,
                kind: Some(Out::Batch(TradeSessionBatchResponse { messages: answers })),
            })
        }
        kind => answer_now(registry, principal, correlation_id, kind).map_err(|later| {
            Box::new(Unfinished {
                correlation_id,
                waiting: (correlation_id, later),
                batch: None,
            })
        }),
    }
}

/// Answers what [`session_message_now`] left: the message waiting, then the rest of its batch.
async fn finish(
    registry: Arc<Registry>,
    principal: Option<Arc<Principal>>,
    unfinished: Box<Unfinished>,
) -> TradeSessionResponse {
    let principal = principal.as_deref();
    let (id, later) = unfinished.waiting;
    let answer = answer_later(&registry, principal, id, later).await;
    let Some((mut answers, rest)) = unfinished.batch else {
        return answer;
    };
    answers.push(answer);
    for message in rest {
        let id = message.correlation_id;
        answers.push(match answer_now(&registry, principal, id, message.kind) {
            Ok(answer) => answer,
            Err(later) => answer_later(&registry, principal, id, later).await,
        });
    }
    TradeSessionResponse {
        correlation_id: unfinished.correlation_id,
        kind: Some(Out::Batch(TradeSessionBatchResponse { messages: answers })),
    }
}

/// What a session message needs to be answered once it cannot be answered at once.
enum Later {
    Check(CheckResult, Commit, crate::metrics::Timer),
    Report(Box<ReportOutcomeRequest>),
}

/// Answers a message at once if it can: everything but a report (which waits for its write)
/// and a check that granted a probe.
fn answer_now(
    registry: &Registry,
    principal: Option<&Principal>,
    correlation_id: u64,
    kind: Option<In>,
) -> Result<TradeSessionResponse, Later> {
    // Every message of a session is a gate call, under the principal's rate.
    let answer = match principal.map_or(Ok(()), Principal::admit_gate_call) {
        Err(status) => Err(status),
        Ok(()) => match kind {
            Some(In::Check(request)) => match check_now(registry, principal, &request) {
                Ok(Checked::Ready(answer)) => Ok(Out::Check(answer)),
                Ok(Checked::Durable(result, commit, timer)) => {
                    return Err(Later::Check(result, commit, timer))
                }
                Err(status) => Err(status),
            },
            Some(In::Report(request)) => return Err(Later::Report(Box::new(request))),
            Some(In::Batch(_)) => Err(Status::invalid_argument(
                "a batch cannot hold another batch",
            )),
            None => Err(Status::invalid_argument(
                "a trade session message holds a check, a report or a batch",
            )),
        },
    };
    Ok(TradeSessionResponse {
        correlation_id,
        kind: Some(answer.unwrap_or_else(session_error)),
    })
}

async fn answer_later(
    registry: &Registry,
    principal: Option<&Principal>,
    correlation_id: u64,
    later: Later,
) -> TradeSessionResponse {
    let answer = match later {
        Later::Check(result, commit, timer) => check_durable(registry, result, commit, timer)
            .await
            .map(Out::Check),
        Later::Report(request) => report(registry, principal, *request).await.map(Out::Report),
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
/// (a check that grants no probe, or a batch of them) is answered without building a future.
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
                        match session_message_now(&registry, principal.as_deref(), message) {
                            Ok(done) => {
                                if answers.send(Ok(done)).await.is_err() {
                                    return;
                                }
                            }
                            Err(unfinished) => {
                                in_progress += weight;
                                let answer =
                                    finish(registry.clone(), principal.clone(), unfinished);
                                pending.push(Box::pin(answer).map(move |done| (weight, done)));
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
