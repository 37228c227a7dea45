//! Channels to other nodes' peer ports, for Raft (through
//! `admit_raft::Dialer`) and for node-to-node calls: plain HTTP/2, or
//! mutual TLS with this node's certificate, where the dialed node must
//! present the certificate of the id it is dialed as.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use super::tls::{node_dns_name, Reloading};

/// HTTP/2 flow-control windows (bytes) of node-to-node connections, in both
/// directions. The defaults (64 KiB per connection) make the replies of a
/// few concurrent forwarded batches wait for window updates.
pub const CONN_WINDOW: u32 = 8 << 20;
pub const STREAM_WINDOW: u32 = 1 << 20;

/// Opens channels to peer ports.
#[derive(Clone, Debug)]
pub(crate) struct PeerDialer {
    /// This node's peer TLS material; `None`: plain text.
    pub(crate) tls: Option<Arc<Reloading>>,
}

impl PeerDialer {
    pub(crate) fn open(&self, node: u64, addr: &str) -> Result<Channel, String> {
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let ep = Endpoint::from_shared(uri)
            .map_err(|e| format!("peer address {addr}: {e}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .initial_connection_window_size(CONN_WINDOW)
            .initial_stream_window_size(STREAM_WINDOW);
        Ok(match &self.tls {
            None => ep.connect_with_connector_lazy(PlainConnect {
                addr: addr.split_once("://").map_or(addr, |(_, a)| a).to_string(),
            }),
            Some(tls) => ep.connect_with_connector_lazy(TlsConnect {
                tls: tls.clone(),
                addr: addr.split_once("://").map_or(addr, |(_, a)| a).to_string(),
                name: node_dns_name(node),
            }),
        })
    }
}

impl admit_raft::Dialer for PeerDialer {
    fn channel(&self, node: u64, addr: &str) -> Result<Channel, String> {
        self.open(node, addr)
    }
}

/// Connects TCP, then TLS with the configuration current at that moment
/// (reloaded certificates apply to new connections), verifying that the
/// other side's certificate names `name` (a node: `node-<id>.admit.internal`).
#[derive(Clone, Debug)]
struct TlsConnect {
    tls: Arc<Reloading>,
    addr: String,
    name: String,
}

type Connected = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tower::Service<Uri> for TlsConnect {
    type Response = Connected;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Connected, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move { connect(&me.tls, &me.addr, me.name).await })
    }
}

/// Connects plain TCP to a peer port (see [`tcp`]).
#[derive(Clone, Debug)]
struct PlainConnect {
    addr: String,
}

impl tower::Service<Uri> for PlainConnect {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let addr = self.addr.clone();
        Box::pin(async move { tcp(&addr).await.map(TokioIo::new) })
    }
}

/// A TCP connection to a peer port, never to itself. A node dialing a peer
/// whose port is closed (it is restarting) on the same host can get a TCP
/// self-connection: the kernel picks the dialed port as the source port
/// (peer ports may lie in the ephemeral range) and the connection opens
/// onto itself. Left alone it talks HTTP/2 to itself, and its TIME_WAIT then
/// keeps the peer from binding its port for a minute. Such a connection is
/// refused here like a closed port, and the socket is made with
/// SO_REUSEADDR so that what it leaves behind does not block the bind.
async fn tcp(addr: &str) -> Result<tokio::net::TcpStream, std::io::Error> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let sock = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        sock.set_reuseaddr(true)?;
        match sock.connect(a).await {
            Ok(s) if is_self(&s) => {
                last = Some(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("{addr}: a connection onto itself (nothing listens there)"),
                ));
            }
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{addr}: no address to connect to"),
        )
    }))
}

/// Whether a connection's two ends are the same socket address.
fn is_self(s: &tokio::net::TcpStream) -> bool {
    matches!((s.local_addr(), s.peer_addr()), (Ok(l), Ok(p)) if l == p)
}

/// A channel to another node's API port (joining the cluster through it):
/// with peer TLS, TLS with this node's certificate against the cluster CA
/// and the host name of `via`; else plain text.
pub(crate) fn api_channel(via: &str, tls: Option<&Arc<Reloading>>) -> Result<Channel, String> {
    let addr = via.split_once("://").map_or(via, |(_, a)| a).to_string();
    let ep = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("join address {via}: {e}"))?
        .connect_timeout(Duration::from_secs(2));
    let Some(tls) = tls else {
        return Ok(ep.connect_lazy());
    };
    let host = addr
        .rsplit_once(':')
        .map_or(addr.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(ep.connect_with_connector_lazy(TlsConnect {
        tls: tls.clone(),
        addr,
        name: host,
    }))
}

async fn connect(tls: &Reloading, addr: &str, name: String) -> Result<Connected, std::io::Error> {
    let cfg = tls
        .current()
        .client
        .clone()
        .ok_or_else(|| std::io::Error::other("no peer client TLS configuration"))?;
    let name = ServerName::try_from(name).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tcp = tcp(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?;
    Ok(TokioIo::new(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> std::net::SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    /// A self-connection on `port`, made on purpose (a socket bound to the
    /// port it connects to opens onto itself: TCP's simultaneous open), as
    /// a dialer can get by chance from the kernel's choice of source port.
    async fn onto_itself(port: std::net::SocketAddr, reuse: bool) -> tokio::net::TcpStream {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_reuseaddr(reuse).unwrap();
        sock.bind(port).unwrap();
        sock.connect(port).await.expect("a self-connection")
    }

    /// Why the dialer refuses self-connections and sets SO_REUSEADDR: a
    /// closed self-connection keeps its port from a listener for a minute,
    /// unless it was made with SO_REUSEADDR.
    #[tokio::test]
    async fn a_connection_onto_itself_is_told_apart_and_blocks_no_listener() {
        let port = free_port();
        let own = onto_itself(port, false).await;
        assert!(is_self(&own));
        drop(own);
        let e = tokio::net::TcpListener::bind(port).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);

        let port = free_port();
        let own = onto_itself(port, true).await;
        assert!(is_self(&own));
        drop(own);
        let l = tokio::net::TcpListener::bind(port)
            .await
            .expect("the port is free");
        // and a dial reaches the listener, not itself
        let s = tcp(&port.to_string()).await.unwrap();
        assert!(!is_self(&s));
        let (_, from) = l.accept().await.unwrap();
        assert_eq!(from, s.local_addr().unwrap());
    }

    /// Nothing listening: the dial fails as refused (nothing was sent).
    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let port = free_port();
        let e = tcp(&port.to_string()).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}
