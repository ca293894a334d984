//! The trade session: checks and reports on one bidirectional stream. Each message takes
//! effect when it is read, in the order sent; answers are given as soon as each may be (a
//! check in CLOSED at once, a report once durable), so they may overtake one another.

use std::sync::Arc;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use super::handling::{
    check_durable, check_now, report_answered, report_durable, report_now, Checked, PendingCheck,
    PendingReport,
};
use crate::auth::{Principal, SessionCredentials};
use crate::error::Error;
use crate::proto::trade_session_request::Kind as In;
use crate::proto::trade_session_response::Kind as Out;
use crate::proto::{
    SessionError, TradeSessionBatchResponse, TradeSessionRequest, TradeSessionResponse,
};
use crate::registry::Registry;

/// Messages of one trade session in progress at once; past it the stream is not read.
pub const SESSION_WINDOW: usize = 1024;

/// Messages in one batch of a trade session, at most.
pub const MAX_BATCH: usize = 1024;

/// A session message that could not be answered at once. Every message in it has already
/// taken effect, in the order sent; only answers wait.
struct Unfinished {
    correlation_id: u64,
    /// One answer, or a batch's answers in order: ready, or waiting for the disk.
    answers: Vec<(u64, Answer)>,
    batch: bool,
}

/// One message's answer as its message took effect.
enum Answer {
    Ready(Out),
    Check(Box<PendingCheck>),
    Report(Box<PendingReport>),
}

/// Applies one message of a trade session (a check, a report or a batch of them) at once, in
/// the order sent, and answers it at once if no answer in it waits for the disk; otherwise
/// returns the answers to wait for, for [`finish`].
fn session_message_now(
    registry: &Registry,
    principal: Option<&Principal>,
    message: TradeSessionRequest,
) -> Result<TradeSessionResponse, Box<Unfinished>> {
    let correlation_id = message.correlation_id;
    match message.kind {
        Some(In::Batch(batch)) if batch.messages.len() > MAX_BATCH => Ok(TradeSessionResponse {
            correlation_id,
            kind: Some(session_error(
                Error::BatchTooLarge {
                    max: MAX_BATCH,
                    got: batch.messages.len(),
                }
                .into(),
            )),
        }),
        Some(In::Batch(batch)) => {
            // In the order given: a report follows the check it answers.
            let answers: Vec<(u64, Answer)> = batch
                .messages
                .into_iter()
                .map(|m| (m.correlation_id, apply(registry, principal, m.kind)))
                .collect();
            if answers.iter().all(|(_, a)| matches!(a, Answer::Ready(_))) {
                let messages = answers
                    .into_iter()
                    .map(|(id, answer)| TradeSessionResponse {
                        correlation_id: id,
                        kind: match answer {
                            Answer::Ready(out) => Some(out),
                            _ => None,
                        },
                    })
                    .collect();
                return Ok(TradeSessionResponse {
                    correlation_id,
                    kind: Some(Out::Batch(TradeSessionBatchResponse { messages })),
                });
            }
            Err(Box::new(Unfinished {
                correlation_id,
                answers,
                batch: true,
            }))
        }
        kind => match apply(registry, principal, kind) {
            Answer::Ready(out) => Ok(TradeSessionResponse {
                correlation_id,
                kind: Some(out),
            }),
            waiting => Err(Box::new(Unfinished {
                correlation_id,
                answers: vec![(correlation_id, waiting)],
                batch: false,
            })),
        },
    }
}

/// Gives the answers of what [`session_message_now`] applied, once each may be given.
async fn finish(registry: Arc<Registry>, unfinished: Box<Unfinished>) -> TradeSessionResponse {
    let Unfinished {
        correlation_id,
        answers,
        batch,
    } = *unfinished;
    let mut messages = Vec::with_capacity(answers.len());
    for (id, answer) in answers {
        let out = match answer {
            Answer::Ready(out) => out,
            Answer::Check(pending) => check_durable(&registry, *pending)
                .await
                .map_or_else(session_error, Out::Check),
            Answer::Report(pending) => report_durable(&registry, *pending)
                .await
                .map_or_else(session_error, Out::Report),
        };
        messages.push(TradeSessionResponse {
            correlation_id: id,
            kind: Some(out),
        });
    }
    match (batch, messages.pop()) {
        (false, Some(only)) => only,
        (_, last) => {
            messages.extend(last);
            TradeSessionResponse {
                correlation_id,
                kind: Some(Out::Batch(TradeSessionBatchResponse { messages })),
            }
        }
    }
}

/// Applies one check or report of a session: it takes effect now, whether or not its answer
/// must wait for the disk.
fn apply(registry: &Registry, principal: Option<&Principal>, kind: Option<In>) -> Answer {
    // Every message of a session is a gate call, under the principal's rate.
    if let Err(status) = principal.map_or(Ok(()), Principal::admit_gate_call) {
        return Answer::Ready(session_error(status.into()));
    }
    match kind {
        Some(In::Check(request)) => match check_now(registry, principal, request) {
            Ok(Checked::Ready(answer)) => Answer::Ready(Out::Check(answer)),
            Ok(Checked::Durable(pending)) => Answer::Check(pending),
            Err(status) => Answer::Ready(session_error(status)),
        },
        Some(In::Report(request)) => match report_now(registry, principal, &request) {
            Ok(pending) if pending.when.is_none() => {
                Answer::Ready(Out::Report(report_answered(pending)))
            }
            Ok(pending) => Answer::Report(Box::new(pending)),
            Err(status) => Answer::Ready(session_error(status)),
        },
        Some(In::Batch(_)) => Answer::Ready(session_error(Error::NestedBatch.into())),
        None => Answer::Ready(session_error(Error::EmptySessionMessage.into())),
    }
}

fn session_error(status: Status) -> Out {
    Out::Error(SessionError {
        code: status.code() as i32,
        message: status.message().to_owned(),
    })
}

/// Reads a session's messages and applies each as it arrives, in order; answers each at once
/// or, when its answer waits for the disk, as soon as it may be given (answers may overtake
/// one another; effects never do). Reads no more while `SESSION_WINDOW` are in progress (so
/// at most `SESSION_WINDOW + MAX_BATCH`). Before each message, a reloaded configuration is
/// applied to the caller: the session ends if it is no longer accepted.
pub(super) async fn run_session(
    registry: Arc<Registry>,
    mut principal: Option<Arc<Principal>>,
    credentials: Option<Arc<SessionCredentials>>,
    mut inbound: Streaming<TradeSessionRequest>,
    answers: mpsc::Sender<Result<TradeSessionResponse, Status>>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The policy the caller was last authenticated under, beside its credentials.
    let mut credentials = credentials.map(|c| {
        let seen = c.authenticated_under();
        (c, seen)
    });
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
                        if let (Some((credentials, seen)), Some(current)) =
                            (&mut credentials, &principal)
                        {
                            match credentials.refresh(seen, current) {
                                Ok(None) => {}
                                Ok(Some(renewed)) => principal = Some(renewed),
                                Err(status) => {
                                    // What was applied before stays applied; its answers
                                    // are not awaited.
                                    let _ = answers.send(Err(status.into())).await;
                                    return;
                                }
                            }
                        }
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
                                let answer = finish(registry.clone(), unfinished);
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
                let _ = answers.send(Err(Error::SessionShutdown.into())).await;
            }
            return;
        }
    }
}
