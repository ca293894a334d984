//! The one place where every call is authenticated, authorized by service, rate limited (the
//! gate) and shed under overload, before any handler runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::Status;

use super::{Auth, Service};
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

/// Counts a call in flight until dropped.
pub struct InFlight(Arc<Auth>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
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

type ConnectInfo = tonic::transport::server::TcpConnectInfo;
type TlsConnectInfo = tonic::transport::server::TlsConnectInfo<ConnectInfo>;

/// The certificates the client presented over mutual TLS, if any: its own first.
fn client_certs<B>(
    request: &http::Request<B>,
) -> Option<Arc<Vec<rustls::pki_types::CertificateDer<'static>>>> {
    request
        .extensions()
        .get::<TlsConnectInfo>()
        .and_then(|info| info.peer_certs())
}

/// The client's address, for the log line of a refusal.
fn peer<B>(request: &http::Request<B>) -> Option<std::net::SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TlsConnectInfo>()
        .and_then(|info| info.get_ref().remote_addr())
        .or_else(|| {
            extensions
                .get::<ConnectInfo>()
                .and_then(|info| info.remote_addr())
        })
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
        // Shed at once rather than queue without bound; health answers even then.
        let in_flight = InFlight(auth.clone());
        let count = auth.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        if count > auth.max_in_flight && service != Service::Health {
            auth.count(&auth.counters.shed);
            crate::metrics::auth_refused("shed");
            return Answer::refused(Error::Overloaded {
                max: auth.max_in_flight,
            });
        }
        let certs = client_certs(&request);
        let client_cert = certs.as_deref().and_then(|c| c.first()).map(|c| c.as_ref());
        let policy = auth.policy();
        let principal = match policy.authenticate(request.headers(), client_cert) {
            Ok(principal) => principal,
            // Orchestrator probes carry no credentials; health reveals nothing.
            Err(_) if service == Service::Health => return self.serve(request, in_flight),
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
        if service == Service::Gate {
            if let Err(error) = principal.admit_gate_call() {
                auth.count(&auth.counters.rate_limited);
                return Answer::refused(error);
            }
        }
        if service == Service::Gate && request.uri().path().ends_with("/TradeSession") {
            let credentials = super::SessionCredentials {
                auth: auth.clone(),
                authorization: request.headers().get(http::header::AUTHORIZATION).cloned(),
                client_cert: client_cert.map(<[u8]>::to_vec),
                authenticated_under: Arc::clone(&policy),
            };
            request.extensions_mut().insert(Arc::new(credentials));
        }
        request.extensions_mut().insert(principal);
        self.serve(request, in_flight)
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
}
