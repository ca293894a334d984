//! The one place where every call is authenticated, authorized by service, rate limited (the
//! gate) and shed under overload, before any handler runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};

use subtle::ConstantTimeEq;
use tonic::body::Body;
use tonic::Status;

use super::{Auth, AuthPolicy, Principal, Service};
use crate::config::AuthMode;
use crate::connections::{Conn, ConnInfo};
use crate::error::Error;

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Auth>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Auth>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Auth>,
}

/// Counts a call in flight until dropped: in total, on its connection (and its address), and
/// for its principal.
pub struct InFlight {
    auth: Arc<Auth>,
    conn: Option<Arc<Conn>>,
    principal: Option<Arc<super::Principal>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.auth.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(conn) = &self.conn {
            conn.call_ended();
        }
        if let Some(principal) = &self.principal {
            principal.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer to a call: a refusal made at once, or the inner service's answer, with the
    /// call counted in flight until it is dropped.
    #[project = AnswerProjection]
    pub enum Answer<F> {
        Refused { response: Option<http::Response<Body>> },
        Served { #[pin] future: F, in_flight: InFlight },
    }
}

impl<F> Answer<F> {
    /// A refusal, as the one map from errors to statuses words it.
    fn refused(error: Error) -> Self {
        Answer::Refused {
            response: Some(Status::from(error).into_http()),
        }
    }
}

impl<F, E> Future for Answer<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = Result<http::Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProjection::Refused { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                    Status::from(Error::Internal("answer polled again")).into_http()
                })))
            }
            AnswerProjection::Served { future, .. } => future.poll(cx),
        }
    }
}

/// What a token proved on a connection, under which policy.
struct ProvenToken {
    policy: Arc<AuthPolicy>,
    authorization: http::HeaderValue,
    principal: Arc<Principal>,
}

/// The caller of a call. Under token authentication a connection remembers the principal its
/// last token proved: a call presenting the same token under the same policy is that principal
/// without hashing the token and comparing it with every principal's again. A reload puts a new
/// policy in force and so proves every connection's token anew; a different token is
/// authenticated as if nothing were remembered.
fn authenticate(
    policy: &Arc<AuthPolicy>,
    conn: Option<&Conn>,
    headers: &http::HeaderMap,
    client_cert: Option<&[u8]>,
) -> Result<Arc<Principal>, &'static str> {
    // Only under token authentication: the header is not even looked up otherwise.
    let remembering = match (policy.mode(), conn) {
        (AuthMode::Token, Some(conn)) => headers
            .get(http::header::AUTHORIZATION)
            .map(|authorization| (conn, authorization)),
        _ => None,
    };
    if let Some((conn, authorization)) = remembering {
        let proven = conn.proven.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = proven
            .as_deref()
            .and_then(|p| p.downcast_ref::<ProvenToken>())
        {
            if Arc::ptr_eq(&token.policy, policy)
                && bool::from(
                    token
                        .authorization
                        .as_bytes()
                        .ct_eq(authorization.as_bytes()),
                )
            {
                return Ok(token.principal.clone());
            }
        }
    }
    let principal = policy.authenticate(headers, client_cert)?;
    if let Some((conn, authorization)) = remembering {
        let token = ProvenToken {
            policy: policy.clone(),
            authorization: authorization.clone(),
            principal: principal.clone(),
        };
        *conn.proven.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(token));
    }
    Ok(principal)
}

/// The client's address, for the log line of a refusal.
fn peer<B>(request: &http::Request<B>) -> Option<std::net::SocketAddr> {
    request
        .extensions()
        .get::<ConnInfo>()
        .map(|info| info.conn.remote)
}

impl<S> AuthService<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>> + Clone,
{
    /// Hands the call to the inner service. The clone is the one polled ready by this
    /// service's caller: use it, keep the clone.
    fn serve(&mut self, request: http::Request<Body>, in_flight: InFlight) -> Answer<S::Future> {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Answer::Served {
            future: inner.call(request),
            in_flight,
        }
    }
}

impl<S> tower_service::Service<http::Request<Body>> for AuthService<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>> + Clone,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let auth = self.auth.clone();
        let service = Service::of_path(request.uri().path());
        let info = request.extensions().get::<ConnInfo>();
        let conn = info.map(|info| info.conn.clone());
        let certs = info.and_then(|info| info.certs.clone());
        if let Some(conn) = &conn {
            conn.call_started();
        }
        // Shed at once rather than queue without bound; health answers even then.
        let mut in_flight = InFlight {
            auth: auth.clone(),
            conn,
            principal: None,
        };
        let count = auth.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        if count > auth.max_in_flight && service != Service::Health {
            auth.count(&auth.counters.shed);
            crate::metrics::auth_refused("shed");
            return Answer::refused(Error::Overloaded {
                max: auth.max_in_flight,
            });
        }
        // Health answers whoever asks and whatever their share holds: orchestrator probes
        // carry no credentials, often come from the address of a client that is busy, and
        // health reveals nothing.
        if service == Service::Health {
            return self.serve(request, in_flight);
        }
        let client_cert = certs.as_deref().and_then(|c| c.first()).map(|c| c.as_ref());
        let policy = auth.policy();
        let principal = match authenticate(
            &policy,
            in_flight.conn.as_deref(),
            request.headers(),
            client_cert,
        ) {
            Ok(principal) => principal,
            Err(why) => {
                auth.count(&auth.counters.unauthenticated);
                crate::metrics::auth_refused("unauthenticated");
                tracing::warn!(peer = ?peer(&request), path = request.uri().path(), why, "unauthenticated call refused");
                return Answer::refused(Error::Unauthenticated(why));
            }
        };
        if !service.allows(principal.roles) {
            auth.count(&auth.counters.permission_denied);
            crate::metrics::auth_refused("permission_denied");
            tracing::warn!(principal = %principal.name, peer = ?peer(&request), path = request.uri().path(), "permission denied: role");
            let needs = match service {
                Service::Gate => "bot",
                Service::Monitor => "monitor or operator",
                _ => "operator",
            };
            return Answer::refused(Error::RoleRequired {
                principal: principal.name.to_string(),
                path: request.uri().path().to_owned(),
                needs,
            });
        }
        // One client's share: its principal's calls with authentication on, its address's
        // without (every caller is then the same principal).
        let client_calls = if principal.authenticated {
            let calls = principal.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            in_flight.principal = Some(principal.clone());
            calls
        } else {
            in_flight
                .conn
                .as_ref()
                .map_or(0, |conn| conn.peer.in_flight.load(Ordering::Relaxed))
        };
        if client_calls > auth.max_in_flight_per_client {
            crate::metrics::client_in_flight_refused();
            let client = if principal.authenticated {
                format!("principal {}", principal.name)
            } else {
                peer(&request).map_or("this client".to_owned(), |p| format!("address {}", p.ip()))
            };
            crate::logging::throttled_warn(
                "client calls in flight",
                peer(&request).map(|p| p.ip()),
                &format!(
                    "{client}: a call refused, more than {} in flight",
                    auth.max_in_flight_per_client
                ),
            );
            return Answer::refused(Error::ClientOverloaded {
                client,
                max: auth.max_in_flight_per_client,
            });
        }
        if service == Service::Gate {
            if let Err(error) = principal.admit_gate_call() {
                auth.count(&auth.counters.rate_limited);
                return Answer::refused(error);
            }
        }
        let session = service == Service::Gate && request.uri().path().ends_with("/TradeSession");
        if session {
            let credentials = super::SessionCredentials {
                auth: auth.clone(),
                authorization: request.headers().get(http::header::AUTHORIZATION).cloned(),
                client_cert: client_cert.map(<[u8]>::to_vec),
                authenticated_under: Arc::clone(&policy),
            };
            request.extensions_mut().insert(Arc::new(credentials));
        }
        if !session {
            // A request arrives whole soon after its headers, or its slot goes back.
            let deadline = tokio::time::Instant::now() + auth.body_timeout;
            request = request.map(|body| Body::new(DeadlineBody::new(body, deadline)));
        }
        request.extensions_mut().insert(principal);
        self.serve(request, in_flight)
    }
}

pin_project_lite::pin_project! {
    /// A request body that must end by `deadline`: past it, the call fails with
    /// DEADLINE_EXCEEDED (its handler answers, and the stream ends) rather than holding its
    /// place in flight for as long as the client likes.
    pub struct DeadlineBody {
        #[pin]
        inner: Body,
        deadline: tokio::time::Instant,
        // Made only if the body is not whole at once (the common case needs no timer).
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        ended: bool,
    }
}

impl DeadlineBody {
    fn new(inner: Body, deadline: tokio::time::Instant) -> Self {
        DeadlineBody {
            inner,
            deadline,
            timer: None,
            ended: false,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(None) => {
                *this.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(frame) => Poll::Ready(frame),
            Poll::Pending if *this.ended => Poll::Pending,
            Poll::Pending => {
                let deadline = *this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => {
                        *this.ended = true;
                        crate::metrics::request_body_timed_out();
                        Poll::Ready(Some(Err(Status::deadline_exceeded(
                            "the request did not arrive whole in time after its headers (limits.request_body_timeout_secs)",
                        ))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use tokio::sync::oneshot;
    use tonic::body::Body;
    use tower_layer::Layer;
    use tower_service::Service;

    use super::*;
    use crate::config::Config;

    /// A service whose calls finish only when the test says so.
    #[derive(Clone, Default)]
    struct Held {
        release: Arc<Mutex<Vec<oneshot::Sender<()>>>>,
    }

    impl Service<http::Request<Body>> for Held {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            let (send, wait) = oneshot::channel();
            self.release.lock().expect("lock").push(send);
            Box::pin(async move {
                let _ = wait.await;
                Ok(http::Response::new(Body::empty()))
            })
        }
    }

    fn request() -> http::Request<Body> {
        http::Request::builder()
            .uri("/riskgate.v1.GateService/CheckTrade")
            .body(Body::empty())
            .expect("request")
    }

    fn grpc_status(response: &http::Response<Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn calls_past_max_in_flight_are_shed_at_once_with_unavailable() {
        let mut env = HashMap::new();
        env.insert("RISKGATE__LIMITS__MAX_IN_FLIGHT".to_owned(), "2".to_owned());
        let config = Config::load_with_env(None, Some(env)).expect("config");
        let auth = Auth::new(&config);
        let held = Held::default();
        let mut service = AuthLayer::new(auth.clone()).layer(held.clone());
        let first = tokio::spawn(service.call(request()));
        let second = tokio::spawn(service.call(request()));
        while held.release.lock().expect("lock").len() < 2 {
            tokio::task::yield_now().await;
        }
        let shed = service.call(request()).await.expect("answered");
        assert_eq!(grpc_status(&shed), Some("14"), "UNAVAILABLE");
        assert_eq!(auth.counters.shed.load(Ordering::Relaxed), 1);
        for release in held.release.lock().expect("lock").drain(..) {
            let _ = release.send(());
        }
        for call in [first, second] {
            let response = call.await.expect("task").expect("answered");
            assert_eq!(grpc_status(&response), None, "served");
        }
        // Capacity is back once the held calls finished.
        let third = tokio::spawn(service.call(request()));
        while held.release.lock().expect("lock").is_empty() {
            tokio::task::yield_now().await;
        }
        for release in held.release.lock().expect("lock").drain(..) {
            let _ = release.send(());
        }
        let response = third.await.expect("task").expect("answered");
        assert_eq!(grpc_status(&response), None);
    }

    /// A service that answers every call at once.
    #[derive(Clone)]
    struct Answering;

    impl Service<http::Request<Body>> for Answering {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            std::future::ready(Ok(http::Response::new(Body::empty())))
        }
    }

    /// A configuration under token authentication with these principals: (name, role, token).
    fn token_config(dir: &std::path::Path, principals: &[(&str, &str, &str)]) -> Config {
        let mut text = String::from("[auth]\nmode = \"token\"\n");
        for (name, role, token) in principals {
            text.push_str(&format!(
                "[[auth.principals]]\nname = \"{name}\"\nroles = [\"{role}\"]\ntoken_sha256 = \"{}\"\n",
                crate::auth::token_sha256_hex(token)
            ));
        }
        let path = dir.join("riskgate.toml");
        std::fs::write(&path, text).expect("write the configuration");
        Config::load_with_env(Some(&path), Some(HashMap::new())).expect("config")
    }

    fn check_on(conn: &Arc<Conn>, token: &str) -> http::Request<Body> {
        let mut request = request();
        request.extensions_mut().insert(ConnInfo {
            conn: conn.clone(),
            certs: None,
        });
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        request
    }

    fn connection() -> Arc<Conn> {
        let connections =
            crate::connections::Connections::new(crate::connections::ConnectionLimits {
                max_connections: 8,
                max_connections_per_peer: 8,
                handshake_timeout: std::time::Duration::from_secs(5),
                idle_timeout: None,
                listen_backlog: 8,
            });
        connections
            .admit("127.0.0.1:40000".parse().expect("address"))
            .map_err(|_| "refused")
            .expect("admitted")
    }

    /// The `grpc-status` of a check presenting `token` on `conn` (`None`: served).
    async fn status_of(
        service: &mut AuthService<Answering>,
        conn: &Arc<Conn>,
        token: Option<&str>,
    ) -> Option<String> {
        let mut request = check_on(conn, token.unwrap_or_default());
        if token.is_none() {
            request.headers_mut().remove(http::header::AUTHORIZATION);
        }
        let response = service.call(request).await.expect("answered");
        grpc_status(&response).map(str::to_owned)
    }

    #[tokio::test]
    async fn a_connection_remembers_its_token_and_proves_any_other_token_anew() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = token_config(
            dir.path(),
            &[
                ("alpha", "bot", "alpha-token"),
                ("watcher", "monitor", "watcher-token"),
            ],
        );
        let auth = Auth::new(&config);
        let mut service = AuthLayer::new(auth.clone()).layer(Answering);
        let conn = connection();
        assert_eq!(
            status_of(&mut service, &conn, Some("alpha-token")).await,
            None
        );
        assert!(
            conn.proven.lock().expect("lock").is_some(),
            "the token is remembered"
        );
        // Then each token on the same connection is its own principal, not the remembered
        // one: a monitor may not trade, an unknown token or none is refused.
        let calls = [
            (Some("alpha-token"), None),
            (Some("watcher-token"), Some("7")),
            (Some("alpha-tokem"), Some("16")),
            (None, Some("16")),
            (Some("alpha-token"), None),
        ];
        for (token, expected) in calls {
            let status = status_of(&mut service, &conn, token).await;
            assert_eq!(status.as_deref(), expected, "presenting {token:?}");
        }
        assert_eq!(auth.counters.unauthenticated.load(Ordering::Relaxed), 2);
        assert_eq!(auth.counters.permission_denied.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_reload_proves_a_remembered_token_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth = Auth::new(&token_config(
            dir.path(),
            &[("alpha", "bot", "alpha-token")],
        ));
        let mut service = AuthLayer::new(auth.clone()).layer(Answering);
        let conn = connection();
        // (alpha's role and token in the configuration, the token presented, the status)
        let steps = [
            ("bot", "alpha-token", "alpha-token", None),
            // The token is rotated: the remembered one no longer proves alpha.
            ("bot", "alpha-token-2", "alpha-token", Some("16")),
            ("bot", "alpha-token-2", "alpha-token-2", None),
            // alpha loses the bot role: its remembered token does not keep it.
            ("monitor", "alpha-token-2", "alpha-token-2", Some("7")),
        ];
        let mut in_force = ("bot", "alpha-token");
        for (role, configured, presented, expected) in steps {
            if (role, configured) != in_force {
                auth.reload(&token_config(dir.path(), &[("alpha", role, configured)]));
                in_force = (role, configured);
            }
            let status = status_of(&mut service, &conn, Some(presented)).await;
            assert_eq!(
                status.as_deref(),
                expected,
                "alpha as {role} with {configured}, presenting {presented}"
            );
        }
    }
}
