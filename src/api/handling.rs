//! A check's and a report's handling, shared by the unary calls (`gate`) and the trade session
//! (`session`), so that both answer alike: authorize, convert, decide or apply at once, and
//! answer once what the answer relies on is durable.

use tonic::Status;

use super::convert;
use crate::auth::Principal;
use crate::core::FailureKind;
use crate::proto::{
    CheckTradeRequest, CheckTradeResponse, ReportOutcomeRequest, ReportOutcomeResponse,
};
use crate::registry::{CheckResult, Registry, ReportResult, WhenDurable};

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
            Checked::Ready(convert::check_response(
                result,
                registry.store_signals().epoch(),
            ))
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
    Ok(convert::check_response(
        result,
        registry.store_signals().epoch(),
    ))
}

pub(super) async fn check(
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

pub(super) async fn report(
    registry: &Registry,
    principal: Option<&Principal>,
    request: ReportOutcomeRequest,
) -> Result<ReportOutcomeResponse, Status> {
    let pending = report_now(registry, principal, &request)?;
    report_durable(registry, pending).await
}
