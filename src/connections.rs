//! Connection hygiene: who may connect, for how long, and how much of the server one client
//! may hold.
//!
//! Every accepted connection is admitted against a limit in total and a limit per peer address
//! (refused by closing it, counted in metrics), then carried in a [`Tracked`] stream that
//! enforces the HTTP/2 handshake's deadline (TLS included, `handshake_timeout`) by closing the
//! connection; a connection with no call in flight and none started for `idle_timeout` is
//! closed by its HTTP/2 task with a GOAWAY, so that a client's call racing the close is either
//! taken or retried on a new connection, never failed. The connection's shared state
//! ([`Conn`]) rides along to every call as its connect info, so that the call layer counts
//! calls in flight per connection and per peer. The accept loop backs off when the process
//! runs out of file descriptors instead of spinning. [`serve`] speaks HTTP/2 on the admitted
//! connections (`http2`).

mod http2;

pub use http2::{serve, Http2Settings};

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Sleep;

/// The HTTP/2 client preface (24 bytes) and the header of the SETTINGS frame that must follow
/// it (9 bytes): a client that has sent this much has begun the handshake in earnest.
const HANDSHAKE_BYTES: usize = 24 + 9;

/// The limits, from `[limits]`.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Connections open at once; past it new ones are closed at once.
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub max_connections_per_peer: usize,
    /// From accept to the end of the HTTP/2 handshake (TLS included).
    pub handshake_timeout: Duration,
    /// A connection with no call in flight and none started for this long is closed.
    pub idle_timeout: Option<Duration>,
    /// The listen backlog: connections the kernel queues before they are accepted.
    pub listen_backlog: u32,
}

/// Binds `addr` with `backlog` queued connections (the kernel caps it at
/// `net.core.somaxconn`).
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// One peer address: its connections and its calls in flight across them.
#[derive(Debug)]
pub struct Peer {
    pub ip: IpAddr,
    connections: AtomicUsize,
    /// Calls in flight on all of this address's connections (counted by the call layer).
    pub in_flight: AtomicUsize,
}

/// Every open connection, counted in total and per peer address.
#[derive(Debug)]
pub struct Connections {
    limits: ConnectionLimits,
    open: AtomicUsize,
    peers: Mutex<HashMap<IpAddr, Arc<Peer>>>,
}

/// Why a connection was closed as soon as it was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` are open.
    Total,
    /// `max_connections_per_peer` are open from its address.
    PerPeer,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Total => "total",
            Refusal::PerPeer => "per_peer",
        }
    }
}

/// One connection's state, shared with every call on it; its counts are given back when the
/// last holder (the connection's stream, its calls) lets go.
#[derive(Debug)]
pub struct Conn {
    pub remote: SocketAddr,
    pub peer: Arc<Peer>,
    /// Calls in flight on this connection.
    pub in_flight: AtomicUsize,
    /// When a call last ended here (or the connection was admitted), in milliseconds of
    /// [`elapsed_ms`]: idle time counts only while no call is in flight.
    last_call: AtomicU64,
    connections: Arc<Connections>,
    /// What a layer above proved about this connection's caller, for its next calls (the
    /// authentication layer: the principal a token proved, so the same token on the same
    /// connection is not hashed and looked up again on every call).
    pub proven: Mutex<Option<Arc<dyn std::any::Any + Send + Sync>>>,
}

impl Conn {
    /// A call starts on this connection.
    pub fn call_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.peer.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A call that started here ended.
    pub fn call_ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.peer.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.last_call.store(elapsed_ms(), Ordering::Relaxed);
    }

    /// Resolves once the connection has had no call in flight, and none started, for
    /// `idle_timeout`; never when there is no idle timeout.
    async fn idle_expired(&self) {
        let Some(idle) = self.connections.limits.idle_timeout else {
            return std::future::pending().await;
        };
        loop {
            let idle_for = self.idle_for();
            if idle_for >= idle {
                return;
            }
            tokio::time::sleep(idle - idle_for).await;
        }
    }

    /// How long the connection has had no call in flight (zero while one is).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(elapsed_ms().saturating_sub(self.last_call.load(Ordering::Relaxed)))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.connections.open.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::connections_open(-1.0);
        let mut peers = self
            .connections
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.peer.connections.fetch_sub(1, Ordering::Relaxed) == 1 {
            peers.remove(&self.peer.ip);
        }
    }
}

/// Milliseconds since the process first asked: a cheap clock for idle times.
fn elapsed_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Connections {
    pub fn new(limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Connections {
            limits,
            open: AtomicUsize::new(0),
            peers: Mutex::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Counts a new connection from `remote` in, unless a limit says no.
    pub fn admit(self: &Arc<Self>, remote: SocketAddr) -> Result<Arc<Conn>, Refusal> {
        let ip = remote.ip();
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if self.open.load(Ordering::Relaxed) >= self.limits.max_connections {
            return Err(Refusal::Total);
        }
        let peer = peers
            .entry(ip)
            .or_insert_with(|| {
                Arc::new(Peer {
                    ip,
                    connections: AtomicUsize::new(0),
                    in_flight: AtomicUsize::new(0),
                })
            })
            .clone();
        if peer.connections.load(Ordering::Relaxed) >= self.limits.max_connections_per_peer {
            if peer.connections.load(Ordering::Relaxed) == 0 {
                peers.remove(&ip);
            }
            return Err(Refusal::PerPeer);
        }
        peer.connections.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        crate::metrics::connections_open(1.0);
        Ok(Arc::new(Conn {
            remote,
            peer,
            in_flight: AtomicUsize::new(0),
            last_call: AtomicU64::new(elapsed_ms()),
            connections: self.clone(),
            proven: Mutex::new(None),
        }))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// Accepts connections on `listener` and admits them, until `closed` resolves (the server
/// stopped taking them), handing each admitted one to `admitted`. When accepting fails for
/// want of file descriptors or memory, it waits (10 ms, doubling to a second) before trying
/// again, rather than spinning on the error.
pub async fn accept_loop(
    listener: TcpListener,
    connections: Arc<Connections>,
    closed: impl std::future::Future<Output = ()>,
    mut admitted: impl FnMut(TcpStream, Arc<Conn>),
) {
    tokio::pin!(closed);
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut closed => return,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            Err(error) => {
                crate::metrics::accept_error();
                if is_resource_exhaustion(&error) {
                    backoff =
                        (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    crate::logging::throttled_warn(
                        "accept",
                        None,
                        &format!(
                            "accepting a connection failed: {error}; waiting {} ms before accepting again (raise the open-file limit: docs/operations.md)",
                            backoff.as_millis()
                        ),
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = &mut closed => return,
                    }
                }
                continue;
            }
        };
        match connections.admit(remote) {
            Ok(conn) => {
                let _ = stream.set_nodelay(true);
                admitted(stream, conn);
            }
            Err(refusal) => {
                crate::metrics::connection_refused(refusal.as_str());
                crate::logging::throttled_warn(
                    "connection refused",
                    Some(remote.ip()),
                    &format!(
                        "connection from {remote} closed: {} (limits.max_connections{} = {})",
                        match refusal {
                            Refusal::Total => "too many connections open",
                            Refusal::PerPeer => "too many connections open from its address",
                        },
                        if refusal == Refusal::PerPeer {
                            "_per_peer"
                        } else {
                            ""
                        },
                        match refusal {
                            Refusal::Total => connections.limits.max_connections,
                            Refusal::PerPeer => connections.limits.max_connections_per_peer,
                        }
                    ),
                );
                drop(stream);
            }
        }
    }
}

/// Accepts and admits connections on `listener` and yields them, plaintext, until the
/// receiver is dropped.
pub fn incoming(
    listener: TcpListener,
    connections: Arc<Connections>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Tracked<TcpStream>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(ACCEPTED_BACKLOG);
    let closed = {
        let sender = sender.clone();
        async move { sender.closed().await }
    };
    let limits = connections.limits().clone();
    tokio::spawn(accept_loop(
        listener,
        connections,
        closed,
        move |stream, conn| {
            let tracked = Tracked::new(stream, conn, &limits, Instant::now());
            if let Err(tokio::sync::mpsc::error::TrySendError::Full(Ok(tracked))) =
                sender.try_send(Ok(tracked))
            {
                // The server is behind taking connections: wait for room, off the accept loop.
                let sender = sender.clone();
                tokio::spawn(async move {
                    let _ = sender.send(Ok(tracked)).await;
                });
            }
        },
    ));
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// Connections accepted but not yet taken by the server.
const ACCEPTED_BACKLOG: usize = 128;

/// Running out of descriptors or memory: waiting helps, retrying at once does not.
fn is_resource_exhaustion(error: &io::Error) -> bool {
    error
        .raw_os_error()
        .is_some_and(|code| EXHAUSTION.contains(&code))
}

#[cfg(target_os = "linux")]
const EXHAUSTION: [i32; 4] = [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM];
#[cfg(not(target_os = "linux"))]
const EXHAUSTION: [i32; 4] = [24, 23, 55, 12];

/// Where a connection is in its life.
#[derive(Debug)]
enum Phase {
    /// Bytes read so far, before the handshake is done.
    Handshake(usize),
    Open,
}

pin_project_lite::pin_project! {
    /// A connection's stream, with its deadlines and its [`Conn`].
    pub struct Tracked<IO> {
        #[pin]
        io: IO,
        conn: Arc<Conn>,
        timer: Option<Pin<Box<Sleep>>>,
        phase: Phase,
    }
}

impl<IO> Tracked<IO> {
    /// `io` for `conn`, its handshake due `handshake` after accept (now, or earlier).
    pub fn new(io: IO, conn: Arc<Conn>, limits: &ConnectionLimits, accepted: Instant) -> Self {
        Tracked {
            io,
            conn,
            timer: Some(Box::pin(tokio::time::sleep_until(
                (accepted + limits.handshake_timeout).into(),
            ))),
            phase: Phase::Handshake(0),
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl<IO: AsyncRead> AsyncRead for Tracked<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        crate::logging::reading_from(this.conn.peer.ip);
        match this.io.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Phase::Handshake(read) = this.phase {
                    *read += buf.filled().len() - before;
                    if *read >= HANDSHAKE_BYTES {
                        *this.phase = Phase::Open;
                        *this.timer = None;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                // The timer is the handshake's deadline; it is gone once the handshake is done.
                let Some(timer) = this.timer.as_mut() else {
                    return Poll::Pending;
                };
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                crate::metrics::connection_closed("handshake_timeout");
                crate::logging::throttled_warn(
                    "handshake timeout",
                    Some(this.conn.remote.ip()),
                    &format!(
                        "connection from {} closed: no HTTP/2 handshake in time (limits.handshake_timeout_secs)",
                        this.conn.remote
                    ),
                );
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 handshake in time",
                )))
            }
            ready => ready,
        }
    }
}

impl<IO: AsyncWrite> AsyncWrite for Tracked<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// What every call learns of its connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub conn: Arc<Conn>,
    /// The certificates the client presented over mutual TLS, its own first.
    pub certs: Option<Arc<Vec<rustls::pki_types::CertificateDer<'static>>>>,
}

impl tonic::transport::server::Connected for Tracked<TcpStream> {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            conn: self.conn.clone(),
            certs: None,
        }
    }
}

impl tonic::transport::server::Connected for Tracked<tokio_rustls::server::TlsStream<TcpStream>> {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        let certs = self.io.get_ref().1.peer_certificates().map(|certs| {
            Arc::new(
                certs
                    .iter()
                    .map(|c| c.clone().into_owned())
                    .collect::<Vec<_>>(),
            )
        });
        ConnInfo {
            conn: self.conn.clone(),
            certs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 3,
            max_connections_per_peer: 2,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: None,
            listen_backlog: 128,
        }
    }

    #[test]
    fn connections_are_limited_in_total_and_per_peer_and_given_back_when_closed() {
        let connections = Connections::new(limits());
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1000".parse().unwrap();
        let a1 = connections.admit(a).expect("first");
        let a2 = connections.admit(a).expect("second");
        assert_eq!(connections.admit(a).unwrap_err(), Refusal::PerPeer);
        let b1 = connections.admit(b).expect("another peer");
        assert_eq!(connections.admit(b).unwrap_err(), Refusal::Total);
        assert_eq!(connections.open(), 3);
        a1.call_started();
        assert_eq!(
            a2.peer.in_flight.load(Ordering::Relaxed),
            1,
            "shared by the peer"
        );
        a1.call_ended();
        drop(a1);
        assert_eq!(connections.open(), 2);
        let _a3 = connections.admit(a).expect("room again");
        drop((a2, b1));
        assert_eq!(connections.peers.lock().unwrap().len(), 1);
    }
}
