//! The console's JSON and event-stream endpoints: each a call to riskgate's own services, in
//! process, as the signed-in operator.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, BoxStream, StreamExt as _};
use serde::Deserialize;
use serde_json::{json, Value};
use tower_sessions::Session;

use super::session::{actor, viewer, ApiError, Viewer};
use super::Console;
use crate::api::json;
use crate::api::Caller;
use crate::proto::admin_service_server::AdminService as _;
use crate::proto::monitor_service_server::MonitorService as _;
use crate::proto::{
    watch_events_response::Kind, GetBreakerRequest, GetClusterRequest, HaltAllRequest,
    HaltGroupRequest, ListAuditRecordsRequest, ListHaltsRequest, Mode, ResetBreakerRequest,
    ResumeAllRequest, ResumeGroupRequest, SetModeRequest, TripBreakerRequest, WatchEventsRequest,
};

/// CLOSED, enforcing, untripped breakers shown on the overview beyond those that need
/// attention (which are always all shown); a filter finds the rest.
const CLOSED_SHOWN: usize = 500;
/// Audit records shown on an account's page.
const ACCOUNT_AUDIT: u32 = 50;

/// A service call as the viewer, from the browser at `peer`.
fn call<T>(viewer: &Viewer, peer: SocketAddr, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(viewer.principal.clone());
    request
        .extensions_mut()
        .insert(Caller(format!("console {peer}")));
    request
}

/// Refuses a change on a node that does not lead, naming the leader, as the gRPC API does.
fn leader_only(console: &Console, path: &str) -> Result<(), ApiError> {
    if let Some(membership) = &console.membership {
        if let Some(status) = crate::cluster::routing::refusal(membership.as_ref(), path) {
            return Err(status.into());
        }
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct OverviewQuery {
    /// Accounts whose id contains this (case-insensitive); empty: every account.
    #[serde(default)]
    q: String,
}

/// `GET /api/overview`: halts, counts by state and mode, the breakers that need attention
/// (all of them) and CLOSED ones up to a bound, the configured groups and this node.
pub async fn overview(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    session: Session,
    Query(query): Query<OverviewQuery>,
) -> Result<Json<Value>, ApiError> {
    let viewer = viewer(&console, &session).await?;
    // Read before the breakers: tailing events after it misses nothing the list does not show.
    let sequence = console.registry.last_sequence();
    let halts = console
        .admin
        .list_halts(call(&viewer, peer, ListHaltsRequest {}))
        .await?
        .into_inner()
        .halts;
    // One walk of the registry for all of it: paging through a million breakers with
    // ListBreakers would read them all for every page.
    let survey = console
        .registry
        .survey(query.q.trim(), CLOSED_SHOWN)
        .await
        .map_err(|e| ApiError::from(tonic::Status::from(e)))?;
    let shown = |views: Vec<crate::registry::BreakerView>| {
        views
            .into_iter()
            .map(|view| json::breaker(&crate::api::convert::breaker(view)))
            .collect::<Vec<_>>()
    };
    let closed_hidden = survey.calm_matching - survey.calm.len();
    let counts = counts(survey.counts);
    let attention = shown(survey.attention);
    let closed = shown(survey.calm);
    let groups: Vec<String> = console.registry.rulebook().groups.keys().cloned().collect();
    Ok(Json(json!({
        "sequence": sequence,
        "halts": halts.iter().map(json::halt).collect::<Vec<_>>(),
        "counts": counts,
        "attention": attention,
        "closed": closed,
        "closed_hidden": closed_hidden,
        "groups": groups,
        "node": node(&console, &viewer, peer).await,
        "store_writable": console.registry.is_serving(),
    })))
}

/// This node, as every page's header shows it: single, or its role in the cluster.
async fn node(console: &Console, viewer: &Viewer, peer: SocketAddr) -> Value {
    let cluster = console
        .monitor
        .get_cluster(call(viewer, peer, GetClusterRequest {}))
        .await
        .ok()
        .map(|c| c.into_inner());
    match &cluster {
        Some(c) if c.clustered => json!({
            "clustered": true,
            "node_id": c.node_id,
            "role": json::role_name(c.role),
            "leader_id": c.leader_id,
            "leader_address": c.leader_address,
            "epoch": c.epoch,
        }),
        _ => json!({ "clustered": false, "role": "single node" }),
    }
}

/// The overview's counts, as the page reads them.
fn counts(c: crate::registry::Counts) -> Value {
    json!({
        "total": c.total,
        "closed": c.closed,
        "open": c.open,
        "half_open": c.half_open,
        "shadow": c.shadow,
        "disabled": c.disabled,
        "tripped": c.tripped,
    })
}

/// `GET /api/accounts/{id}`: the breaker in full (or that riskgate has never seen the
/// account) and its latest audit records.
pub async fn account(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    session: Session,
    Path(account_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let viewer = viewer(&console, &session).await?;
    let breaker = match console
        .monitor
        .get_breaker(call(
            &viewer,
            peer,
            GetBreakerRequest {
                account_id: account_id.clone(),
            },
        ))
        .await
    {
        Ok(found) => found.into_inner().breaker,
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => return Err(status.into()),
    };
    let audit = console
        .admin
        .list_audit_records(call(
            &viewer,
            peer,
            ListAuditRecordsRequest {
                account_id: account_id.clone(),
                page_size: ACCOUNT_AUDIT,
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .records;
    let halts = console
        .admin
        .list_halts(call(&viewer, peer, ListHaltsRequest {}))
        .await?
        .into_inner()
        .halts;
    Ok(Json(json!({
        "account_id": account_id,
        "halts": halts.iter().map(json::halt).collect::<Vec<_>>(),
        "node": node(&console, &viewer, peer).await,
        "store_writable": console.registry.is_serving(),
        "known": breaker.is_some(),
        "breaker": breaker.as_ref().map(json::breaker_in_full),
        "audit": audit.iter().map(json::audit).collect::<Vec<_>>(),
        "sequence": console.registry.last_sequence(),
    })))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    /// Resume after this sequence (the browser's `Last-Event-ID` wins when it reconnects).
    after: Option<u64>,
    /// With no resume point: start with up to this many of the latest events still retained.
    recent: Option<u64>,
    /// Only this account's events (and firm and group halts); empty: every account's.
    #[serde(default)]
    account: String,
}

type SseItem = Result<Event, Infallible>;

/// `GET /api/events`: the event feed as server-sent events, each with its sequence as the
/// event id, so a browser that reconnects resumes where it stopped: nothing missed, nothing
/// twice. Heartbeats carry the sequence too. When the history no longer holds the resume point
/// the stream says `resync` (re-read the overview) and ends.
pub async fn events(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    session: Session,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let viewer = viewer(&console, &session).await?;
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let after = last_event_id.or(query.after).unwrap_or_else(|| {
        let latest = console.registry.last_sequence();
        let recent = latest.saturating_sub(query.recent.unwrap_or(0));
        recent.max(console.registry.before_oldest_retained())
    });
    let account_ids = match query.account.trim() {
        "" => Vec::new(),
        id => vec![id.to_owned()],
    };
    let request = WatchEventsRequest {
        account_ids,
        after_sequence: Some(after),
    };
    let stream: BoxStream<'static, SseItem> = match console
        .monitor
        .watch_events(call(&viewer, peer, request))
        .await
    {
        Ok(watch) => watch
            .into_inner()
            .scan(false, |ended, item| {
                if *ended {
                    return std::future::ready(None);
                }
                std::future::ready(Some(match item {
                    Ok(message) => message.kind.and_then(sse_of),
                    Err(status) => {
                        *ended = true;
                        Some(end_of_stream(&status))
                    }
                }))
            })
            .filter_map(|event| std::future::ready(event.map(Ok)))
            .boxed(),
        Err(status) if status.code() == tonic::Code::OutOfRange => {
            stream::iter([Ok(end_of_stream(&status))]).boxed()
        }
        Err(status) => return Err(status.into()),
    };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn sse_of(kind: Kind) -> Option<Event> {
    match kind {
        Kind::Event(e) => Some(
            Event::default()
                .id(e.sequence.to_string())
                .event("breaker")
                .data(json::event(&e).to_string()),
        ),
        Kind::Heartbeat(h) => Some(
            Event::default()
                .id(h.sequence.to_string())
                .event("heartbeat")
                .data(json!({ "sequence": h.sequence }).to_string()),
        ),
        Kind::Snapshot(_) | Kind::SnapshotComplete(_) => None,
    }
}

/// The last message of a stream that the server ended: `resync` when the resume point is no
/// longer in the history, `end` otherwise (shutdown, a reader too slow): the browser resumes.
fn end_of_stream(status: &tonic::Status) -> Event {
    let name = if status.code() == tonic::Code::OutOfRange {
        "resync"
    } else {
        "end"
    };
    Event::default().event(name).data(
        json!({ "code": format!("{:?}", status.code()), "message": status.message() }).to_string(),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such page")
}

#[derive(Deserialize)]
pub struct AccountAction {
    account_id: String,
    reason: String,
    /// Acting on an account riskgate has never seen was confirmed as such.
    #[serde(default)]
    new: bool,
    /// Trip: when recovery is tested (RFC 3339); empty: held open until reset.
    #[serde(default)]
    until: String,
    /// Mode: enforce, shadow or disabled.
    #[serde(default)]
    mode: String,
}

/// Refuses an action on an account riskgate has never seen unless the operator confirmed it
/// as a new account: a typo must not trip a breaker nobody trades through.
async fn known_or_confirmed(
    console: &Console,
    viewer: &Viewer,
    peer: SocketAddr,
    form: &AccountAction,
) -> Result<bool, ApiError> {
    match console
        .monitor
        .get_breaker(call(
            viewer,
            peer,
            GetBreakerRequest {
                account_id: form.account_id.clone(),
            },
        ))
        .await
    {
        Ok(_) => Ok(true),
        Err(status) if status.code() == tonic::Code::NotFound => {
            if form.new {
                Ok(false)
            } else {
                Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "riskgate has never seen account {:?} (a typo?): confirm it as a new account to act on it before its first order",
                        form.account_id
                    ),
                ))
            }
        }
        Err(status) => Err(status.into()),
    }
}

fn acted(message: String, breaker: Option<crate::proto::Breaker>) -> Response {
    Json(json!({
        "message": message,
        "breaker": breaker.as_ref().map(json::breaker),
    }))
    .into_response()
}

fn new_note(known: bool) -> &'static str {
    if known {
        ""
    } else {
        " (a new account: riskgate had never seen it)"
    }
}

/// `POST /api/actions/{trip,reset,mode,halt,resume}`: an operator's action, with the
/// session's CSRF token.
pub async fn action(
    State(console): State<Arc<Console>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    session: Session,
    headers: HeaderMap,
    Path(action): Path<String>,
    Json(form): Json<Value>,
) -> Result<Response, ApiError> {
    let viewer = actor(&console, &session, &headers).await?;
    let change = match action.as_str() {
        "trip" => Change::Trip,
        "reset" => Change::Reset,
        "mode" => Change::Mode,
        "halt" | "resume" => {
            let form = parse_form::<HaltAction>(form)?;
            return halt_or_resume(&console, &viewer, peer, action == "halt", form).await;
        }
        _ => return Err(not_found().await),
    };
    let form = parse_form::<AccountAction>(form)?;
    act_on_account(&console, &viewer, peer, change, form).await
}

fn parse_form<T: serde::de::DeserializeOwned>(form: Value) -> Result<T, ApiError> {
    serde_json::from_value(form)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the action's form: {e}")))
}

/// What an operator does to one account from the console.
#[derive(Clone, Copy)]
enum Change {
    Trip,
    Reset,
    Mode,
}

/// Trips, resets or sets the mode of the account `form` names, and says what changed.
async fn act_on_account(
    console: &Console,
    viewer: &Viewer,
    peer: SocketAddr,
    change: Change,
    form: AccountAction,
) -> Result<Response, ApiError> {
    let path = match change {
        Change::Trip => "/riskgate.v1.AdminService/TripBreaker",
        Change::Reset => "/riskgate.v1.AdminService/ResetBreaker",
        Change::Mode => "/riskgate.v1.AdminService/SetMode",
    };
    leader_only(console, path)?;
    // What the form asks is checked before anything is looked up.
    let until = match (change, form.until.trim()) {
        (Change::Trip, text) if !text.is_empty() => {
            let at = humantime::parse_rfc3339_weak(text).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("until {text:?} is not an RFC 3339 time"),
                )
            })?;
            Some(prost_types::Timestamp::from(at))
        }
        _ => None,
    };
    let mode = match (change, form.mode.as_str()) {
        (Change::Mode, "enforce") => Mode::Enforce,
        (Change::Mode, "shadow") => Mode::Shadow,
        (Change::Mode, "disabled") => Mode::Disabled,
        (Change::Mode, other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("mode must be enforce, shadow or disabled, not {other:?}"),
            ))
        }
        _ => Mode::Unspecified,
    };
    let known = known_or_confirmed(console, viewer, peer, &form).await?;
    let new = new_note(known);
    let AccountAction {
        account_id, reason, ..
    } = form;
    let operator = viewer.operator.clone();
    let admin = &console.admin;
    let (breaker, message) = match change {
        Change::Trip => {
            let held = match &until {
                Some(at) => format!("until {}", json::time(at)),
                None => "until reset".to_owned(),
            };
            let message = format!("tripped {account_id}{new}: OPEN, every order refused {held}");
            let request = TripBreakerRequest {
                account_id,
                reason,
                operator,
                until,
            };
            let answer = admin.trip_breaker(call(viewer, peer, request)).await?;
            (answer.into_inner().breaker, message)
        }
        Change::Reset => {
            let message = format!("reset {account_id}{new}: CLOSED, failures cleared");
            let request = ResetBreakerRequest {
                account_id,
                reason,
                operator,
            };
            let answer = admin.reset_breaker(call(viewer, peer, request)).await?;
            (answer.into_inner().breaker, message)
        }
        Change::Mode => {
            let message = format!("{account_id} is now in mode {}{new}", form.mode);
            let request = SetModeRequest {
                account_id,
                mode: mode.into(),
                reason,
                operator,
            };
            let answer = admin.set_mode(call(viewer, peer, request)).await?;
            (answer.into_inner().breaker, message)
        }
    };
    Ok(acted(message, breaker))
}

#[derive(Deserialize)]
pub struct HaltAction {
    /// A configured group; empty: the whole firm.
    #[serde(default)]
    group: String,
    reason: String,
}

/// Halts (or resumes) the firm, or the group `form` names, and says what changed.
async fn halt_or_resume(
    console: &Console,
    viewer: &Viewer,
    peer: SocketAddr,
    halt: bool,
    form: HaltAction,
) -> Result<Response, ApiError> {
    let group = form.group.trim().to_owned();
    let (reason, operator) = (form.reason, viewer.operator.clone());
    let admin = &console.admin;
    let (halts, changed) = match (halt, group.is_empty()) {
        (true, true) => {
            leader_only(console, "/riskgate.v1.AdminService/HaltAll")?;
            let request = HaltAllRequest { reason, operator };
            let answer = admin.halt_all(call(viewer, peer, request)).await?;
            (answer.get_ref().halts.clone(), answer.get_ref().began)
        }
        (true, false) => {
            leader_only(console, "/riskgate.v1.AdminService/HaltGroup")?;
            let request = HaltGroupRequest {
                group: group.clone(),
                reason,
                operator,
            };
            let answer = admin.halt_group(call(viewer, peer, request)).await?;
            (answer.get_ref().halts.clone(), answer.get_ref().began)
        }
        (false, true) => {
            leader_only(console, "/riskgate.v1.AdminService/ResumeAll")?;
            let request = ResumeAllRequest { reason, operator };
            let answer = admin.resume_all(call(viewer, peer, request)).await?;
            (answer.get_ref().halts.clone(), answer.get_ref().ended)
        }
        (false, false) => {
            leader_only(console, "/riskgate.v1.AdminService/ResumeGroup")?;
            let request = ResumeGroupRequest {
                group: group.clone(),
                reason,
                operator,
            };
            let answer = admin.resume_group(call(viewer, peer, request)).await?;
            (answer.get_ref().halts.clone(), answer.get_ref().ended)
        }
    };
    let what = if group.is_empty() {
        "the whole firm".to_owned()
    } else {
        format!("group {group}")
    };
    let message = match (halt, changed) {
        (true, true) => format!("halted {what}: every order refused until resumed"),
        (true, false) => format!(
            "{what} was already halted: the first halt (its operator, reason and time) stands"
        ),
        (false, true) => format!("resumed {what}: its breakers decide orders again"),
        (false, false) => format!("{what} was not halted: nothing changed"),
    };
    Ok(Json(json!({
        "message": message,
        "changed": changed,
        "halts": halts.iter().map(json::halt).collect::<Vec<_>>(),
    }))
    .into_response())
}
