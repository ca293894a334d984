//! HTTP/2 on admitted connections: hyper's server, driving riskgate's services, with each
//! call answered in its connection's task when it can be.
//!
//! hyper hands every call's future to an executor. tokio's would spawn each one as a task,
//! so a check passes three times through the runtime's queue: the connection's task reads it,
//! the call's task decides it, the connection's task writes the answer, each time behind
//! whatever the runtime woke meanwhile (the answers of a durable commit, say). Here the
//! executor ([`CollectCalls`]) keeps the calls for the connection's task, which, once it has
//! read what the socket held, answers them in place or spawns them ([`drive`] says when).
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

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::CatchUnwind;
use futures_util::stream::FuturesUnordered;
use futures_util::FutureExt;

use super::ConnInfo;

/// A call hyper handed over, not run yet.
type Call = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The calls a connection's task answered in place that had to wait (a durable report for its
/// commit, a watch for its next event). Each one that is woken wakes the connection's task,
/// which polls it and writes its answer in the same turn: one pass through the runtime's queue
/// instead of two (the call's own task, then the connection's to write). A call that panics
/// ends alone, as a spawned task's panic would.
type Waiting = FuturesUnordered<CatchUnwind<AssertUnwindSafe<Call>>>;

/// A connection's executor: keeps the calls hyper hands over for the connection's task,
/// which decides how to run them once it has read what the socket held ([`drive`]).
#[derive(Clone, Default)]
struct CollectCalls {
    calls: Arc<Mutex<VecDeque<Call>>>,
}

impl CollectCalls {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Call>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The oldest call not run yet, and whether it is the only one.
    fn next(&self) -> Option<(Call, bool)> {
        let mut queue = self.queue();
        let call = queue.pop_front()?;
        Some((call, queue.is_empty()))
    }

    /// Spawns every call not run yet, as a task of its own.
    fn spawn_all(&self) {
        for call in self.queue().drain(..) {
            tokio::spawn(call);
        }
    }

    /// Drops every call not run yet.
    fn clear(&self) {
        self.queue().clear();
    }
}

impl<F> hyper::rt::Executor<F> for CollectCalls
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        self.queue().push_back(Box::pin(future));
    }
}

impl std::fmt::Debug for CollectCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectCalls").finish_non_exhaustive()
    }
}

/// Drives one connection until hyper is done with it, running the calls each of its turns
/// reads.
///
/// A call answered in the connection's task is written on its own: the task looks at the
/// socket again right after it, and h2 flushes whatever is ready. Calls spawned as tasks are
/// written together, when the connection's task next runs after them. Writes cost (on
/// loopback a write carries the receiver's side of TCP too, about as much as deciding a
/// check), and so does waiting in the runtime's queue. So a call is answered in place
/// - when it is the only one the read brought (a client at one call in flight, the usual
///   bot): there is no other answer to write with it, and spawned it would wait twice more
///   behind whatever the runtime has queued (a check beside a flood of reports);
/// - when no other task waits in a worker's own queue (where connections woken by their
///   sockets, and calls spawned by them, wait): a client's answers then leave one by one while
///   the server works on the rest, and the client, on another core, sends more meanwhile.
///
/// Otherwise, with other connections' work queued, the read's calls are spawned and their
/// answers leave together. A call answered in place that must wait (a durable report waiting
/// for its commit, a watch stream) joins the connection's [`Waiting`] calls.
async fn drive<C: Future>(
    mut connection: Pin<&mut C>,
    calls: &CollectCalls,
    waiting: &mut Waiting,
    runtime: &tokio::runtime::RuntimeMetrics,
) -> C::Output {
    std::future::poll_fn(|cx| loop {
        if let Poll::Ready(done) = connection.as_mut().poll(cx) {
            // Calls handed over in hyper's last turn have no connection to answer on.
            calls.clear();
            // Those still waiting finish on their own, as spawned calls do.
            for call in std::mem::take(waiting) {
                tokio::spawn(call.map(|_| ()));
            }
            return Poll::Ready(done);
        }
        if answer_woken(waiting, cx) {
            // Their answers are written when the connection is polled again.
            continue;
        }
        let Some((first, alone)) = calls.next() else {
            return Poll::Pending;
        };
        if alone || runtime_idle(runtime) {
            answer_in_place(first, waiting);
            continue;
        }
        tokio::spawn(first);
        calls.spawn_all();
        return Poll::Pending;
    })
    .await
}

/// Whether no task waits in a worker's own queue. Without `tokio_unstable` (set in
/// .cargo/config.toml) the queues cannot be read and the runtime counts as busy.
fn runtime_idle(runtime: &tokio::runtime::RuntimeMetrics) -> bool {
    #[cfg(tokio_unstable)]
    {
        (0..runtime.num_workers()).all(|worker| runtime.worker_local_queue_depth(worker) == 0)
    }
    #[cfg(not(tokio_unstable))]
    {
        let _ = runtime;
        false
    }
}

/// Runs `call` as far as it goes without waiting; a call that must wait joins `waiting`.
fn answer_in_place(mut call: Call, waiting: &mut Waiting) {
    // A call that is not ready registers this waker, which wakes nothing; in `waiting` it is
    // polled again (by [`answer_woken`], before the connection's task waits) and registers a
    // waker of its own then, so no wake-up is lost.
    let mut cx = Context::from_waker(Waker::noop());
    match std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(&mut cx))) {
        Ok(Poll::Ready(())) => {}
        Ok(Poll::Pending) => waiting.push(AssertUnwindSafe(call).catch_unwind()),
        // As a spawned task's panic would: the call ends (its stream is reset when its future
        // is dropped), the connection and its other calls go on. The panic hook has logged it.
        Err(_) => {}
    }
}

/// Polls the waiting calls that were woken (and those just added); whether any finished.
fn answer_woken(waiting: &mut Waiting, cx: &mut Context<'_>) -> bool {
    // With none waiting there is nothing to be woken (the usual case: checks do not wait).
    if waiting.is_empty() {
        return false;
    }
    let mut finished = false;
    // A call that panicked has ended like one that finished: its stream is reset.
    while let Poll::Ready(Some(_)) = Pin::new(&mut *waiting).poll_next(cx) {
        finished = true;
    }
    finished
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
        let calls = CollectCalls::default();
        let mut builder = hyper::server::conn::http2::Builder::new(calls.clone());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(settings.max_concurrent_streams)
            .initial_stream_window_size(settings.receive_window)
            .initial_connection_window_size(settings.receive_window)
            .keep_alive_interval(settings.keepalive_interval)
            .keep_alive_timeout(settings.keepalive_timeout);
        let conn = info.conn.clone();
        let service = PerConnection {
            info,
            service: service.clone(),
        };
        let connection = builder.serve_connection(TokioIo::new(io), service);
        let mut closing = open.clone();
        let runtime = tokio::runtime::Handle::current().metrics();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let mut waiting = Waiting::new();
            let result = tokio::select! {
                result = drive(connection.as_mut(), &calls, &mut waiting, &runtime) => result,
                _ = async { closing.wait_for(|closing| *closing).await.map(|_| ()) } => {
                    connection.as_mut().graceful_shutdown();
                    drive(connection.as_mut(), &calls, &mut waiting, &runtime).await
                }
                () = conn.idle_expired() => {
                    crate::metrics::connection_closed("idle");
                    tracing::debug!(remote = %conn.remote, "idle connection closed");
                    // A GOAWAY: a call the client sends before it reads it is still taken.
                    connection.as_mut().graceful_shutdown();
                    drive(connection.as_mut(), &calls, &mut waiting, &runtime).await
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

pin_project_lite::pin_project! {
    /// A call's answer: the inner service's, by the client's deadline when it gave one, or a
    /// refusal made at once.
    #[project = AnswerProjection]
    enum Answer<F> {
        Served { #[pin] future: F },
        ByDeadline {
            #[pin]
            future: F,
            // Boxed: only calls with a deadline pay for the timer's size. Handed on to the
            // answer's body once the answer starts (`None` then).
            expiry: Option<Pin<Box<Expiry>>>,
        },
        Refused { response: Option<http::Response<Body>> },
    }
}

pin_project_lite::pin_project! {
    /// When a call's deadline passes, and the timeout it was given in.
    struct Expiry {
        #[pin]
        sleep: tokio::time::Sleep,
        timeout: Duration,
    }
}

impl Expiry {
    fn after(timeout: Duration) -> Pin<Box<Expiry>> {
        Box::pin(Expiry {
            sleep: tokio::time::sleep(timeout),
            timeout,
        })
    }

    /// Once the deadline has passed, the call's `DEADLINE_EXCEEDED`, `then` saying what of
    /// the call it cut short.
    fn poll_passed(self: Pin<&mut Self>, cx: &mut Context<'_>, then: &str) -> Poll<tonic::Status> {
        let this = self.project();
        let timeout = *this.timeout;
        this.sleep.poll(cx).map(|()| {
            tonic::Status::deadline_exceeded(format!(
                "the call's deadline (grpc-timeout, {timeout:?}) passed{then}"
            ))
        })
    }
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<http::Response<Body>, Infallible>>,
{
    type Output = Result<http::Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProjection::Served { future } => future.poll(cx),
            AnswerProjection::ByDeadline { future, expiry } => {
                let Some(timer) = expiry.as_mut() else {
                    return Poll::Ready(Ok(tonic::Status::internal("answered twice").into_http()));
                };
                if let Poll::Ready(answer) = future.poll(cx) {
                    // The deadline covers the whole call: a streaming answer (a trade session,
                    // a watch) still open at it is ended there.
                    let expiry = expiry.take();
                    return Poll::Ready(answer.map(|response| {
                        response.map(|body| {
                            Body::new(DeadlineBody {
                                inner: body,
                                expiry,
                            })
                        })
                    }));
                }
                // Past the deadline the client has given up: the call is dropped (a change it
                // made is not undone, and a durable one still becomes durable).
                timer
                    .as_mut()
                    .poll_passed(
                        cx,
                        " before it was answered; a change it made may still take effect",
                    )
                    .map(|status| Ok(status.into_http()))
            }
            AnswerProjection::Refused { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| tonic::Status::internal("answered twice").into_http()))),
        }
    }
}

pin_project_lite::pin_project! {
    /// The body of an answer to a call with a deadline: the answer's own until it ends, or,
    /// if the deadline passes first, trailers saying `DEADLINE_EXCEEDED` (the answer's body is
    /// then dropped, which ends the call's handler as a client's cancel does).
    struct DeadlineBody {
        #[pin]
        inner: Body,
        // `None` once the deadline has ended the answer.
        expiry: Option<Pin<Box<Expiry>>>,
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(expiry) = this.expiry.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let Poll::Ready(status) = expiry
            .as_mut()
            .poll_passed(cx, "; the stream is ended there")
        else {
            return Poll::Pending;
        };
        *this.expiry = None;
        let mut trailers = http::HeaderMap::new();
        Poll::Ready(Some(match status.add_header(&mut trailers) {
            Ok(()) => Ok(hyper::body::Frame::trailers(trailers)),
            Err(status) => Err(status),
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.expiry.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The deadline a client gave its call (`grpc-timeout`: up to eight digits and a unit, `H`,
/// `M`, `S`, `m`, `u` or `n`). `None` without one; a malformed one is ignored, as gRPC
/// servers do.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
    let value = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

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
        let timeout = grpc_timeout(request.headers());
        let mut service = self.service.clone();
        // The services behind it (tonic's routes, the layers that pass readiness through)
        // are always ready; one that is not is refused rather than called unready.
        match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => match timeout {
                None => Answer::Served {
                    future: service.call(request),
                },
                Some(timeout) => Answer::ByDeadline {
                    future: service.call(request),
                    expiry: Some(Expiry::after(timeout)),
                },
            },
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => Answer::Refused {
                response: Some(
                    tonic::Status::unavailable("the server is not ready for calls").into_http(),
                ),
            },
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
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A call that sets its flag when run.
    fn call(flag: &Arc<AtomicBool>) -> impl Future<Output = ()> + Send + 'static {
        let flag = flag.clone();
        async move { flag.store(true, Ordering::SeqCst) }
    }

    fn flags(n: usize) -> Vec<Arc<AtomicBool>> {
        (0..n).map(|_| Arc::new(AtomicBool::new(false))).collect()
    }

    /// A connection whose first turn reads `calls` (hands them to the executor) and which then
    /// waits for ever, counting its turns.
    struct Reading {
        calls: Vec<Arc<AtomicBool>>,
        executor: CollectCalls,
        turns: Arc<AtomicUsize>,
    }

    impl Future for Reading {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            let this = self.get_mut();
            this.turns.fetch_add(1, Ordering::SeqCst);
            for flag in this.calls.drain(..) {
                this.executor.execute(call(&flag));
            }
            Poll::Pending
        }
    }

    /// Drives a connection that reads `n` calls until it waits; the calls' flags as they
    /// stand then, and the connection's turns.
    async fn one_read(n: usize) -> (Vec<Arc<AtomicBool>>, Vec<bool>, usize) {
        let calls = flags(n);
        let executor = CollectCalls::default();
        let turns = Arc::new(AtomicUsize::new(0));
        let mut connection = Box::pin(Reading {
            calls: calls.clone(),
            executor: executor.clone(),
            turns: turns.clone(),
        });
        let runtime = tokio::runtime::Handle::current().metrics();
        let mut waiting = Waiting::new();
        let mut driving = Box::pin(drive(
            connection.as_mut(),
            &executor,
            &mut waiting,
            &runtime,
        ));
        let pending = std::future::poll_fn(|cx| Poll::Ready(driving.as_mut().poll(cx))).await;
        assert!(pending.is_pending());
        drop(driving);
        let now = calls.iter().map(|f| f.load(Ordering::SeqCst)).collect();
        (calls, now, turns.load(Ordering::SeqCst))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_only_call_a_read_brought_is_answered_in_place_whatever_the_runtime_has_queued() {
        let _queued = tokio::spawn(async {});
        let (_, now, turns) = one_read(1).await;
        assert_eq!(now, [true]);
        assert_eq!(
            turns, 2,
            "the connection looks at the socket again to write the answer"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_read_of_several_calls_is_spawned_while_other_tasks_wait_for_the_runtime() {
        let _queued = tokio::spawn(async {});
        let (calls, now, turns) = one_read(3).await;
        assert_eq!(now, [false, false, false], "spawned behind the queued task");
        assert_eq!(turns, 1, "their answers are written together later");
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        assert!(calls.iter().all(|f| f.load(Ordering::SeqCst)));
    }

    #[cfg(tokio_unstable)]
    #[tokio::test(flavor = "current_thread")]
    async fn with_the_runtime_idle_each_call_is_answered_in_place_and_written_on_its_own() {
        let (_, now, turns) = one_read(3).await;
        assert_eq!(now, [true, true, true]);
        assert_eq!(
            turns, 4,
            "the connection looks at the socket after each answer"
        );
    }

    /// A connection that hands over `calls` in its first turn and then waits until `end`.
    struct Handing {
        calls: Vec<Call>,
        executor: CollectCalls,
        end: tokio::sync::oneshot::Receiver<()>,
    }

    impl Future for Handing {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let this = self.get_mut();
            for call in this.calls.drain(..) {
                this.executor.execute(call);
            }
            Pin::new(&mut this.end).poll(cx).map(|_| ())
        }
    }

    /// Serves, as a task, a connection that hands over `calls` in its first turn and then
    /// waits until `end`.
    fn serve_handing(
        calls: Vec<Call>,
        end: tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<()> {
        let executor = CollectCalls::default();
        let connection = Handing {
            calls,
            executor: executor.clone(),
            end,
        };
        tokio::spawn(async move {
            tokio::pin!(connection);
            let mut waiting = Waiting::new();
            let runtime = tokio::runtime::Handle::current().metrics();
            drive(connection.as_mut(), &executor, &mut waiting, &runtime).await
        })
    }

    /// A call that waits for `receive` and answers its value plus one on `answered`.
    fn waiting_call(
        receive: tokio::sync::oneshot::Receiver<u32>,
        answered: tokio::sync::oneshot::Sender<u32>,
    ) -> Call {
        Box::pin(async move {
            let value = receive.await.unwrap_or(0);
            let _ = answered.send(value + 1);
        })
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_call_that_waits_is_answered_by_its_connection_when_woken_without_a_task_of_its_own()
    {
        let (send, receive) = tokio::sync::oneshot::channel::<u32>();
        let (answered, answer) = tokio::sync::oneshot::channel::<u32>();
        let (_end, end) = tokio::sync::oneshot::channel::<()>();
        let metrics = tokio::runtime::Handle::current().metrics();
        let serving = serve_handing(vec![waiting_call(receive, answered)], end);
        tokio::task::yield_now().await;
        assert_eq!(metrics.num_alive_tasks(), 1, "only the connection's task");
        // Woken after its first poll, which registered a waker that wakes nothing.
        send.send(41).unwrap();
        assert_eq!(answer.await.unwrap(), 42);
        assert_eq!(metrics.num_alive_tasks(), 1, "the connection goes on");
        serving.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn calls_still_waiting_when_the_connection_ends_are_answered_on_their_own() {
        let (send, receive) = tokio::sync::oneshot::channel::<u32>();
        let (answered, answer) = tokio::sync::oneshot::channel::<u32>();
        let (end_now, end) = tokio::sync::oneshot::channel::<()>();
        let serving = serve_handing(vec![waiting_call(receive, answered)], end);
        tokio::task::yield_now().await;
        end_now.send(()).unwrap();
        serving.await.unwrap();
        send.send(1).unwrap();
        assert_eq!(answer.await.unwrap(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiting_call_that_panics_ends_alone() {
        let (send, receive) = tokio::sync::oneshot::channel::<u32>();
        let (answered, answer) = tokio::sync::oneshot::channel::<u32>();
        let (panic_now, panic_when) = tokio::sync::oneshot::channel::<()>();
        let (_end, end) = tokio::sync::oneshot::channel::<()>();
        let serving = serve_handing(
            vec![
                Box::pin(async move {
                    let _ = panic_when.await;
                    panic!("a handler's bug after waiting");
                }),
                waiting_call(receive, answered),
            ],
            end,
        );
        tokio::task::yield_now().await;
        panic_now.send(()).unwrap();
        tokio::task::yield_now().await;
        send.send(1).unwrap();
        assert_eq!(answer.await.unwrap(), 2, "the other call is answered");
        assert!(!serving.is_finished(), "the connection goes on");
        serving.abort();
    }

    #[test]
    fn a_grpc_timeout_is_read_in_each_unit_and_a_malformed_one_is_ignored() {
        let read = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", value.parse().unwrap());
            grpc_timeout(&headers)
        };
        assert_eq!(read("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(read("3M"), Some(Duration::from_secs(180)));
        assert_eq!(read("99999999S"), Some(Duration::from_secs(99_999_999)));
        assert_eq!(read("250m"), Some(Duration::from_millis(250)));
        assert_eq!(read("7u"), Some(Duration::from_micros(7)));
        assert_eq!(read("0n"), Some(Duration::ZERO));
        for malformed in ["", "S", "100000000S", "1.5S", "-1S", "10", "10s", "1 S"] {
            assert_eq!(read(malformed), None, "{malformed:?}");
        }
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_call_past_its_deadline_is_answered_deadline_exceeded_and_one_within_it_as_served() {
        let status = |response: http::Response<Body>| {
            tonic::Status::from_header_map(response.headers()).map(|s| s.code())
        };
        let never = std::future::pending::<Result<http::Response<Body>, Infallible>>();
        let late = Answer::ByDeadline {
            future: never,
            expiry: Some(Expiry::after(Duration::from_millis(1))),
        };
        let answer = late.await.unwrap();
        assert_eq!(status(answer), Some(tonic::Code::DeadlineExceeded));
        let prompt = Answer::ByDeadline {
            future: std::future::ready(Ok(http::Response::new(Body::empty()))),
            expiry: Some(Expiry::after(Duration::ZERO)),
        };
        let answer = prompt.await.unwrap();
        assert_eq!(
            status(answer),
            None,
            "an answer ready in time is the service's"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_call_that_panics_ends_alone() {
        let mut waiting = Waiting::new();
        answer_in_place(Box::pin(async { panic!("a handler's bug") }), &mut waiting);
        let done = Arc::new(AtomicBool::new(false));
        answer_in_place(Box::pin(call(&done)), &mut waiting);
        assert!(done.load(Ordering::SeqCst), "the next call is answered");
        assert!(waiting.is_empty());
    }
}
