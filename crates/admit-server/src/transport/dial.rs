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
            None => ep.connect_lazy(),
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
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?;
    Ok(TokioIo::new(tls))
}
