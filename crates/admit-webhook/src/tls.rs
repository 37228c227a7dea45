//! HTTPS on the receiver's port: Meta calls the callback URL over HTTPS, so
//! a receiver reachable without a proxy in front ends TLS itself. The
//! certificate and key are loaded and reloaded (when their files change) by
//! admit-server's `transport::HttpsTls`, the machinery of the API port; a
//! connection whose handshake fails or takes longer than
//! [`HANDSHAKE_TIMEOUT`] is dropped without reaching the handlers, and at
//! most [`MAX_HANDSHAKES`] run at once, off the accept loop. Imports
//! admit-server's transport, tokio and tokio-rustls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use admit_server::transport::HttpsTls;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A handshake that takes longer is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; further connections wait to start theirs.
pub const MAX_HANDSHAKES: usize = 256;

/// The receiver's TLS: the certificate files, and how often they are checked
/// for changes.
#[derive(Clone, Debug)]
pub struct Tls {
    pub files: HttpsTls,
    pub reload_every: Duration,
}

/// Accepted connections whose handshake succeeded, for `axum::serve`.
pub(crate) struct Listener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

/// Accepts on `tcp` and shakes hands off the accept loop until `stop`;
/// also watches the certificate files.
pub(crate) fn listen(
    tcp: TcpListener,
    tls: Tls,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<Listener> {
    let addr = tcp.local_addr()?;
    let (tx, ready) = mpsc::channel(64);
    let _watching = tls.files.watch(tls.reload_every, stop.clone());
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                c = tcp.accept() => Some(c),
                _ = stop.wait_for(|s| *s) => None,
                _ = tx.closed() => None,
            };
            let (stream, peer) = match accepted {
                None => return,
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "webhook listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = TlsAcceptor::from(tls.files.config());
            let tx = tx.clone();
            tokio::spawn(async move {
                let shake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                drop(slot);
                match shake {
                    Ok(Ok(s)) => {
                        let _ = tx.send((s, peer)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "webhook TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "webhook TLS handshake timed out"),
                }
            });
        }
    });
    Ok(Listener { ready, addr })
}

impl axum::serve::Listener for Listener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // the accept loop ended (stopping): nothing more comes
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
