//! The accept loop of one listener: a bound on open connections (one more
//! is closed at once), the TLS handshake under a timeout, and connections
//! that are closed once idle (no request in flight for the idle timeout),
//! and answers that finish together sent in one socket write
//! ([`Gather`]).
//! What a handler learns of its connection is [`ConnInfo`], in the
//! request's extensions.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::Stream;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tonic::codegen::http;
use tonic::transport::server::Connected;

use super::gather::Gather;
use super::tls::Reloading;
use super::Limits;

/// What a handler knows of the connection its request came on:
/// `request.extensions().get::<ConnInfo>()`.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The other end's address.
    pub remote: Option<SocketAddr>,
    /// The verified certificate chain the other end presented (leaf first);
    /// `None` without TLS or without a client certificate.
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    activity: Arc<Activity>,
}

impl ConnInfo {
    /// The leaf certificate the other end presented, if any.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.peer_certs.as_ref().and_then(|c| c.first())
    }
}

/// Requests in flight on a connection and when the last one ended.
#[derive(Debug)]
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// ms since `start` when the last request began or ended.
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Idle for how long (zero while a request is in flight).
    fn idle(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Counts a request in flight until dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// One accepted connection: the stream, its slot under the connection
/// bound, and its idle timer.
pub(crate) struct Conn {
    io: Io,
    info: ConnInfo,
    idle_timeout: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    /// Writes held back to gather answers ([`Gather`]).
    gather: Gather,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    /// Whether the idle timeout has passed with no request; arms the timer
    /// for the next check otherwise.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return false;
            }
            let idle = self.info.activity.idle();
            if idle >= self.idle_timeout {
                return true;
            }
            let next = tokio::time::Instant::now() + (self.idle_timeout - idle);
            self.idle.as_mut().reset(next);
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if r.is_pending() && this.idle_expired(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle",
            )));
        }
        r
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.gather.poll_hold(cx, buf.len()));
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        std::task::ready!(self.gather.poll_hold(cx, len));
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        };
        if r.is_ready() {
            self.gather.flushed();
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of a listener as tonic's `serve_with_incoming` takes
/// them, and the accept task (abort it to close the port).
pub(crate) fn incoming(
    listener: TcpListener,
    name: &'static str,
    tls: Option<Arc<Reloading>>,
    limits: &Limits,
) -> (
    impl Stream<Item = Result<Conn, io::Error>> + Send + 'static,
    JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel::<Conn>(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let handshake = limits.handshake_timeout;
    let idle_timeout = limits.idle_timeout;
    let task = tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // e.g. out of file descriptors: back off, keep serving
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!(listener = name, %remote, "connection refused: the connection limit is reached");
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let tls = tls.as_ref().map(|t| t.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                let (io, peer_certs) = match tls {
                    None => (Io::Plain(tcp), None),
                    Some(t) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(t.server.clone());
                        match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => {
                                let certs = s
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .map(|c| Arc::new(c.to_vec()));
                                (Io::Tls(Box::new(s)), certs)
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(listener = name, %remote, error = %e, "TLS handshake refused");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(listener = name, %remote, "TLS handshake timed out");
                                return;
                            }
                        }
                    }
                };
                let activity = Arc::new(Activity {
                    start: Instant::now(),
                    in_flight: AtomicUsize::new(0),
                    last_ms: AtomicU64::new(0),
                });
                let conn = Conn {
                    io,
                    info: ConnInfo {
                        remote: Some(remote),
                        peer_certs,
                        activity,
                    },
                    idle_timeout,
                    idle: Box::pin(tokio::time::sleep(idle_timeout)),
                    gather: Gather::default(),
                    _permit: permit,
                };
                let _ = tx.send(conn).await;
            });
        }
    });
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) },
        );
    (stream, task)
}

/// Tower layer that counts each request in flight on its connection (so
/// a connection with a long request is not idle).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TrackLayer;

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track(inner)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Track<S>(S);

impl<S, B> tower::Service<http::Request<B>> for Track<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let guard = req.extensions().get::<ConnInfo>().map(|c| {
            c.activity.in_flight.fetch_add(1, Ordering::Relaxed);
            c.activity.touch();
            InFlight(c.activity.clone())
        });
        let fut = self.0.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(guard);
            r
        })
    }
}
