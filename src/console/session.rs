//! Signing in to the console, and who each request is.
//!
//! A session holds the operator's name, their token (in this process's memory only; the
//! cookie holds the session id) and a CSRF token. The token is checked against the policy in
//! force on every request, so a reload that removes the principal or its roles reaches an open
//! console at its next request.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use ring::rand::SecureRandom as _;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq as _;
use tower_sessions::Session;

use super::Console;
use crate::auth::{Principal, Service};
use crate::config::AuthMode;

const OPERATOR: &str = "operator";
const TOKEN: &str = "token";
const CSRF: &str = "csrf";
/// The header every action carries the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
const MAX_NAME_LEN: usize = 128;

/// An answer the page can show: a status and a message saying what was wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let http = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded | Code::Cancelled => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(http, status.message().to_owned())
    }
}

fn session_failed(error: tower_sessions::session::Error) -> ApiError {
    tracing::error!(%error, "console session store failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the console's session store failed; sign in again",
    )
}

/// Who is making a request, as the services will see them.
pub struct Viewer {
    pub principal: Arc<Principal>,
    /// The name actions are recorded under: the principal's, or with authentication off the
    /// name given at sign-in.
    pub operator: String,
    csrf: String,
}

impl Viewer {
    pub fn may_act(&self) -> bool {
        Service::Admin.allows(self.principal.roles)
    }

    fn info(&self, console: &Console) -> serde_json::Value {
        let roles = self.principal.roles;
        json!({
            "signed_in": true,
            "operator": self.operator,
            "monitor": roles.monitor || roles.operator,
            "may_act": self.may_act(),
            "auth": auth_name(console),
            "csrf": self.csrf,
        })
    }
}

fn auth_name(console: &Console) -> &'static str {
    match console.auth.policy().mode() {
        AuthMode::None => "none",
        AuthMode::Token => "token",
        AuthMode::Mtls => "mtls",
    }
}

/// The signed-in viewer of this session, or `UNAUTHORIZED` saying why not.
pub async fn viewer(console: &Console, session: &Session) -> Result<Viewer, ApiError> {
    let unauthorized = |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, why);
    let Some(operator) = session
        .get::<String>(OPERATOR)
        .await
        .map_err(session_failed)?
    else {
        return Err(unauthorized("not signed in"));
    };
    let csrf = session
        .get::<String>(CSRF)
        .await
        .map_err(session_failed)?
        .unwrap_or_default();
    let token = session
        .get::<String>(TOKEN)
        .await
        .map_err(session_failed)?
        .unwrap_or_default();
    let policy = console.auth.policy();
    let principal = match (policy.mode(), token.is_empty()) {
        (AuthMode::None, _) => policy.sign_in(""),
        (_, true) => Err("authentication was turned on since this session signed in"),
        (_, false) => policy.sign_in(&token),
    };
    let principal = match principal {
        Ok(p) if Service::Monitor.allows(p.roles) => p,
        Ok(_) => {
            return Err(unauthorized(
                "the principal no longer has the monitor or operator role",
            ))
        }
        Err(why) => {
            let _ = session.flush().await;
            return Err(unauthorized(&format!("signed out: {why}")));
        }
    };
    let operator = if principal.authenticated {
        principal.name.to_string()
    } else {
        operator
    };
    Ok(Viewer {
        principal,
        operator,
        csrf,
    })
}

/// As [`viewer`], for a request that changes something: the principal may act, the request
/// carries the session's CSRF token and, when the browser names its origin, comes from the
/// console's own.
pub async fn actor(
    console: &Console,
    session: &Session,
    headers: &HeaderMap,
) -> Result<Viewer, ApiError> {
    same_origin(headers)?;
    let viewer = viewer(console, session).await?;
    let given = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if viewer.csrf.is_empty() || !bool::from(given.as_bytes().ct_eq(viewer.csrf.as_bytes())) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the request does not carry this session's CSRF token: reload the console",
        ));
    }
    if !viewer.may_act() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} may read but not act: actions need the operator role",
                viewer.principal.name
            ),
        ));
    }
    Ok(viewer)
}

/// Refuses a request whose `Origin` is not the host it was sent to (a cross-site request).
/// Behind a proxy that rewrites `Host`, the host the browser used is in `X-Forwarded-Host`.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
        return Ok(());
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.split(',').next())
            .map(str::trim)
            .unwrap_or("")
    };
    let host = header("host");
    let forwarded = header("x-forwarded-host");
    let origin = origin.to_str().unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    let matches = |host: &str| !host.is_empty() && origin_host == host;
    if !matches(host) && !matches(forwarded) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("cross-origin request refused (origin {origin:?}, console at {host:?})"),
        ));
    }
    Ok(())
}

/// `GET /api/session`: who is signed in, or how to sign in.
pub async fn current(State(console): State<Arc<Console>>, session: Session) -> Response {
    match viewer(&console, &session).await {
        Ok(viewer) => Json(viewer.info(&console)).into_response(),
        Err(error) => (
            error.status,
            Json(json!({
                "signed_in": false,
                "auth": auth_name(&console),
                "error": error.message,
            })),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
pub struct SignIn {
    #[serde(default)]
    token: String,
    /// With authentication off: the name actions are recorded under.
    #[serde(default)]
    name: String,
}

/// `POST /api/session` (JSON only, so a cross-site form cannot sign a browser in).
pub async fn sign_in(
    State(console): State<Arc<Console>>,
    session: Session,
    headers: HeaderMap,
    Json(form): Json<SignIn>,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let policy = console.auth.policy();
    let (principal, name) = if policy.mode() == AuthMode::None {
        let name = form.name.trim();
        if name.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "authentication is off: give the name your actions are recorded under",
            ));
        }
        if name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the name must be at most {MAX_NAME_LEN} bytes of printable text"),
            ));
        }
        (
            policy
                .sign_in("")
                .map_err(|why| ApiError::new(StatusCode::UNAUTHORIZED, why))?,
            name.to_owned(),
        )
    } else {
        match policy.sign_in(&form.token) {
            Ok(principal) => {
                let name = principal.name.to_string();
                (principal, name)
            }
            Err(why) => {
                tracing::warn!(why, "console sign-in refused");
                crate::metrics::auth_refused("unauthenticated");
                if console.sign_in_failures.check().is_err() {
                    return Err(ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many failed sign-ins: wait a few seconds",
                    ));
                }
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    format!("sign-in refused: {why}"),
                ));
            }
        }
    };
    if !Service::Monitor.allows(principal.roles) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{name} has neither the monitor nor the operator role"),
        ));
    }
    // A new session id at sign-in: an id planted before cannot be ridden after.
    session.cycle_id().await.map_err(session_failed)?;
    session
        .insert(OPERATOR, &name)
        .await
        .map_err(session_failed)?;
    if policy.mode() != AuthMode::None {
        session
            .insert(TOKEN, form.token.trim())
            .await
            .map_err(session_failed)?;
    }
    let csrf = random_token()?;
    session.insert(CSRF, &csrf).await.map_err(session_failed)?;
    tracing::info!(operator = %name, "console sign-in");
    let viewer = Viewer {
        principal,
        operator: name,
        csrf,
    };
    Ok(Json(viewer.info(&console)).into_response())
}

/// `DELETE /api/session`.
pub async fn sign_out(
    State(console): State<Arc<Console>>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    if let Ok(viewer) = viewer(&console, &session).await {
        tracing::info!(operator = %viewer.operator, "console sign-out");
    }
    session.flush().await.map_err(session_failed)?;
    Ok(Json(json!({ "signed_in": false, "auth": auth_name(&console) })).into_response())
}

fn random_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the system's random number generator failed",
            )
        })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
