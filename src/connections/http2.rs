//! HTTP/2 on admitted connections: hyper's server, driving riskgate's services, with each
//! call answered in its connection's task when it can be.
//!
//! hyper hands every call's future to an executor. tokio's would spawn each one as a task,
//! so a check passes three times through the runtime's queue: the connection's task reads it,
//! the call's task decides it, the connection's task writes the answer, each time behind
//! whatever the runtime woke meanwhile (the answers of a durable commit, say).
//! [`AnswerInline`] polls the call's future once where hyper hands it over, inside the
//! connection's task, and spawns it only if it must wait (a durable report waiting for its
//! commit, a watch stream). A check is then read, decided and its answer queued in one turn
//! of its connection's task, and written as soon as that task next looks at the socket,
//! before the connection's other calls are decided: a client with many calls in flight on
//! one connection gets its first answers while the server works on the rest.
//! docs/benchmarks.md ("Answering in the connection's task") has the figures.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_stream::{Stream, StreamExt};
use tonic::body::Body;
use tonic::transport::server::Connected;

use std::sync::Arc;

use super::{Conn, ConnInfo};

/// A connection's executor: runs a call's future in the connection's task as far as it goes
/// without waiting, and spawns the rest, when answering at once is worth a write of its own.
///
/// Each call answered in the connection's task is written on its own (h2 flushes whenever
/// the task looks at the socket again); calls spawned as tasks are written together when the
/// connection's task next runs after them. Writes cost: on loopback a write carries the
/// receiver's side of TCP too, about as much as deciding a check. So a call is answered in
/// place
/// - when it is the only call in flight on its connection (a client at one call in flight,
///   the usual bot): there is no other answer to write with it, and spawned it would wait
///   twice more behind whatever the runtime has queued (a check beside a flood of reports);
/// - when no other task waits in a worker's own queue (where connections woken by their
///   sockets, and calls spawned by them, wait): a client's answers then leave one by one while
///   the server works on the rest, and the client, on another core, sends more meanwhile.
///
/// Otherwise, with other connections' work queued, calls are spawned and their answers leave
/// together.
#[derive(Clone)]
pub struct AnswerInline {
    conn: Arc<Conn>,
    runtime: tokio::runtime::RuntimeMetrics,
}

impl AnswerInline {
    fn new(conn: Arc<Conn>) -> Self {
        AnswerInline {
            conn,
            runtime: tokio::runtime::Handle::current().metrics(),
        }
    }

    /// Whether to answer the call being handed over in place. Its connection counts it in
    /// flight already (the call layer counts a call as it is made). Without `tokio_unstable`
    /// (set in .cargo/config.toml) the queues cannot be read, and every call is answered in
    /// place.
    fn in_place(&self) -> bool {
        if self
            .conn
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
            <= 1
        {
            return true;
        }
        #[cfg(tokio_unstable)]
        {
            (0..self.runtime.num_workers())
                .all(|worker| self.runtime.worker_local_queue_depth(worker) == 0)
        }
        #[cfg(not(tokio_unstable))]
        true
    }
}

impl<F> hyper::rt::Executor<F> for AnswerInline
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        if !self.in_place() {
            tokio::spawn(future);
            return;
        }
        let mut future = Box::pin(future);
        // A future that is not ready registers this waker, which wakes nothing; spawned, it
        // is polled again at once and registers its task's waker then, so no wake-up is lost.
        let mut cx = Context::from_waker(Waker::noop());
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
            Ok(Poll::Ready(_)) => {}
            Ok(Poll::Pending) => {
                tokio::spawn(future);
            }
            // As a spawned task's panic would: the call ends (its stream is reset when its
            // future is dropped), the connection and its other calls go on. The panic hook
            // has logged it.
            Err(_) => {}
        }
    }
}

impl std::fmt::Debug for AnswerInline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerInline")
            .field("remote", &self.conn.remote)
            .finish()
    }
}

/// How the server speaks HTTP/2.
#[derive(Clone, Debug)]
pub struct Http2Settings {
    pub max_concurrent_streams: Option<u32>,
    /// What a client may send before the server has read it, a stream and a connection.
    pub receive_window: u32,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
}

/// Serves `service` on each connection `incoming` yields until `shutdown` resolves; then
/// stops taking connections (`incoming` is dropped, which closes its listener), asks every
/// open connection to finish (a GOAWAY: calls in flight complete, no new ones start) and
/// returns when all are closed.
pub async fn serve<I, IO, S>(
    incoming: I,
    settings: &Http2Settings,
    service: S,
    shutdown: impl Future<Output = ()>,
) where
    I: Stream<Item = io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Connected<ConnectInfo = ConnInfo> + Unpin + Send + 'static,
    S: tower_service::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (closing, open) = watch::channel(false);
    let mut incoming = Box::pin(incoming);
    tokio::pin!(shutdown);
    loop {
        let io = tokio::select! {
            _ = &mut shutdown => break,
            io = incoming.next() => match io {
                Some(Ok(io)) => io,
                Some(Err(error)) => {
                    tracing::debug!(%error, "a connection was not taken");
                    continue;
                }
                None => break,
            },
        };
        let info = io.connect_info();
        let mut builder =
            hyper::server::conn::http2::Builder::new(AnswerInline::new(info.conn.clone()));
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(settings.max_concurrent_streams)
            .initial_stream_window_size(settings.receive_window)
            .initial_connection_window_size(settings.receive_window)
            .keep_alive_interval(settings.keepalive_interval)
            .keep_alive_timeout(settings.keepalive_timeout);
        let service = PerConnection {
            info,
            service: service.clone(),
        };
        let connection = builder.serve_connection(TokioIo::new(io), service);
        let mut closing = open.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = async { closing.wait_for(|closing| *closing).await.map(|_| ()) } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            // `closing` goes with the task: the server counts open connections by it.
            drop(closing);
        });
    }
    drop(incoming);
    let _ = closing.send(true);
    drop(open);
    closing.closed().await;
}

/// The service of one connection: every call learns its connection ([`ConnInfo`]).
#[derive(Clone)]
struct PerConnection<S> {
    info: ConnInfo,
    service: S,
}

/// The inner service's answer, or a refusal made at once.
type Answer<F> =
    futures_util::future::Either<F, std::future::Ready<Result<http::Response<Body>, Infallible>>>;

impl<S> hyper::service::Service<http::Request<Incoming>> for PerConnection<S>
where
    S: tower_service::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
        > + Clone,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer<S::Future>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(self.info.clone());
        let mut service = self.service.clone();
        // The services behind it (tonic's routes, the layers that pass readiness through)
        // are always ready; one that is not is refused rather than called unready.
        match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => futures_util::future::Either::Left(service.call(request)),
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => futures_util::future::Either::Right(std::future::ready(Ok(
                tonic::Status::unavailable("the server is not ready for calls").into_http(),
            ))),
        }
    }
}

impl<S> std::fmt::Debug for PerConnection<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerConnection")
            .field("remote", &self.info.conn.remote)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Executor;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// The executor of a connection with `calls` in flight.
    fn executor_with(calls: usize) -> AnswerInline {
        let connections =
            crate::connections::Connections::new(crate::connections::ConnectionLimits {
                max_connections: 10,
                max_connections_per_peer: 10,
                handshake_timeout: Duration::from_secs(5),
                idle_timeout: None,
                listen_backlog: 128,
            });
        let conn = connections.admit("127.0.0.1:1".parse().unwrap()).unwrap();
        for _ in 0..calls {
            conn.call_started();
        }
        AnswerInline::new(conn)
    }

    fn executor() -> AnswerInline {
        executor_with(1)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_call_that_need_not_wait_is_answered_before_execute_returns() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        executor().execute(async move { flag.store(true, Ordering::SeqCst) });
        assert!(done.load(Ordering::SeqCst), "run in place, not spawned");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_call_that_waits_is_spawned_and_its_wake_up_is_not_lost() {
        let (send, receive) = tokio::sync::oneshot::channel::<u32>();
        let (answered, answer) = tokio::sync::oneshot::channel::<u32>();
        executor().execute(async move {
            let value = receive.await.unwrap_or(0);
            let _ = answered.send(value + 1);
        });
        // Woken after the first poll, which registered a waker that wakes nothing.
        send.send(41).unwrap();
        assert_eq!(answer.await.unwrap(), 42);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_call_that_panics_ends_alone() {
        executor().execute(async { panic!("a handler's bug") });
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        executor().execute(async move { flag.store(true, Ordering::SeqCst) });
        assert!(done.load(Ordering::SeqCst), "the next call is answered");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn calls_among_others_are_spawned_while_other_tasks_wait_for_the_runtime() {
        // A task in the runtime's queue (spawned, not yet run).
        let _queued = tokio::spawn(async {});
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        executor_with(2).execute(async move { flag.store(true, Ordering::SeqCst) });
        #[cfg(tokio_unstable)]
        assert!(
            !done.load(Ordering::SeqCst),
            "spawned behind the queued task"
        );
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(done.load(Ordering::SeqCst));
        // The only call in flight on its connection is answered at once all the same.
        let _queued = tokio::spawn(async {});
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        executor_with(1).execute(async move { flag.store(true, Ordering::SeqCst) });
        assert!(done.load(Ordering::SeqCst), "answered in place");
    }
}
