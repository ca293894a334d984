//! The operators' web console: one page with what is halted, what is open and why, what just
//! happened, and the kill switch, served by riskgate itself on its own HTTP listener.
//!
//! It is a client of riskgate's own services, in process: every read is a `MonitorService` or
//! `AdminService` call and every action an `AdminService` call, made with the signed-in
//! operator as the principal, so the console answers exactly what the gRPC API answers, is
//! refused what the API refuses (roles, a standby that does not lead, a store that cannot
//! write), and every action lands in the audit trail under the operator's name.
//!
//! Security: the principals and roles of `[auth]` (monitor reads, operator acts). With
//! authentication on, operators sign in with their token; the session lives in this process
//! (the cookie holds only its id: HttpOnly, SameSite=Strict, Secure when configured) and the
//! token is checked again on every request, so a reload that removes a principal ends its
//! sessions. Every action carries the session's CSRF token. Pages load nothing from outside
//! the binary and the Content-Security-Policy says so. Config validation keeps a console
//! without authentication on loopback unless told otherwise.

mod api;
mod assets;
mod session;
mod sessions;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderValue, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::api::{Admin, Monitor};
use crate::auth::Auth;
use crate::cluster::Membership;
use crate::config::ConsoleConfig;
use crate::registry::Registry;

/// What the console's handlers share.
pub struct Console {
    monitor: Arc<Monitor>,
    admin: Arc<Admin>,
    auth: Arc<Auth>,
    registry: Arc<Registry>,
    membership: Option<Arc<dyn Membership>>,
    /// Failed sign-ins, limited for the whole console: a token cannot be guessed by trying.
    sign_in_failures: governor::DefaultDirectRateLimiter,
}

impl Console {
    pub fn new(
        monitor: Arc<Monitor>,
        admin: Arc<Admin>,
        auth: Arc<Auth>,
        registry: Arc<Registry>,
        membership: Option<Arc<dyn Membership>>,
    ) -> Arc<Self> {
        let quota = governor::Quota::per_second(std::num::NonZeroU32::MIN)
            .allow_burst(std::num::NonZeroU32::new(5).unwrap_or(std::num::NonZeroU32::MIN));
        Arc::new(Console {
            monitor,
            admin,
            auth,
            registry,
            membership,
            sign_in_failures: governor::RateLimiter::direct(quota),
        })
    }
}

/// The console's routes, with sessions and the security headers every answer carries.
pub fn router(console: Arc<Console>, config: &ConsoleConfig) -> Router {
    let idle = i64::try_from(config.session_idle().as_secs()).unwrap_or(i64::MAX);
    let sessions = SessionManagerLayer::new(sessions::BoundedStore::new(sessions::MAX_SESSIONS))
        .with_name("riskgate_console")
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_secure(config.secure_cookie)
        // Every request extends the session: idle means no console open, not no change.
        .with_always_save(true)
        .with_expiry(Expiry::OnInactivity(
            tower_sessions::cookie::time::Duration::seconds(idle),
        ));
    Router::new()
        .route("/", get(assets::index))
        .route("/account/{id}", get(assets::index))
        .route("/assets/{name}", get(assets::asset))
        .route(
            "/api/session",
            get(session::current)
                .post(session::sign_in)
                .delete(session::sign_out),
        )
        .route("/api/overview", get(api::overview))
        .route("/api/accounts/{id}", get(api::account))
        .route("/api/events", get(api::events))
        .route("/api/actions/{action}", post(api::action))
        .fallback(api::not_found)
        .layer(sessions)
        .layer(middleware::from_fn(security_headers))
        .with_state(console)
}

/// Serves the console on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    console: Arc<Console>,
    config: ConsoleConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(console, &config);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// The page may run only its own script and style, talk only to this origin, and never be
/// framed; answers are never cached (they are live state, or carry a session).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn security_headers(request: Request<axum::body::Body>, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
