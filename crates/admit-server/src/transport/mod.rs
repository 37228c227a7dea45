//! The transport of a node's two listeners: TLS on the API port (optional
//! client certificates), mutual TLS on the peer port (Raft and node-to-node
//! calls, only from nodes of the membership), certificates reloaded from
//! their files without a restart, and connection hygiene on both (a bound
//! on connections, handshake, idle, keep-alive and request timeouts,
//! concurrent streams, message sizes).
//!
//! It may import tonic, tokio, rustls and the x509 parser, and
//! `admit_raft::Dialer` (the hook through which Raft dials peers); it knows
//! nothing of requests' meaning. `server` wires it.
//!
//! Node identity: a node's certificate carries the DNS name
//! `node-<id>.admit.internal` ([`node_dns_name`]); the peer port accepts a
//! connection whose verified certificate names a node of the membership,
//! and a dialing node verifies that the node it dials holds the
//! certificate of the id it expects.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) mod dial;
pub(crate) mod gather;
pub mod https;
pub(crate) mod listen;
pub mod tls;

pub use https::HttpsTls;
pub use listen::ConnInfo;
pub use tls::{node_dns_name, node_id_of};

/// Certificate files of one listener (PEM). `ca` verifies the other side:
/// on the API port the CA of client certificates (optional: without it no
/// client certificate is asked for), on the peer port the cluster CA
/// (required: both sides present node certificates).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

/// Connection limits of one listener.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open connections at most; one more is closed at once.
    pub max_connections: usize,
    /// HTTP/2 streams (requests) at once per connection.
    pub max_concurrent_streams: u32,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 keep-alive ping interval; a ping unanswered for
    /// `keepalive_timeout` closes the connection.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// A request (its body included) that takes longer is cancelled
    /// (DEADLINE_EXCEEDED / CANCELLED): a half-sent body does not hold a
    /// stream forever.
    pub request_timeout: Duration,
    /// TLS handshakes that take longer are dropped.
    pub handshake_timeout: Duration,
    /// Largest request or response message of the listener's services.
    pub max_message_bytes: usize,
}

impl Limits {
    /// API port defaults.
    pub fn api() -> Limits {
        Limits {
            max_connections: 10_000,
            max_concurrent_streams: 1_024,
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            max_message_bytes: 4 << 20,
        }
    }

    /// Peer port defaults: few connections (one or two per node), many
    /// streams each (every forwarded request and Raft call of a node shares
    /// its channel), NodeRpc frames up to 16 MiB (a forwarded batch).
    pub fn peer() -> Limits {
        Limits {
            max_connections: 256,
            max_concurrent_streams: 4_096,
            idle_timeout: Duration::from_secs(600),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(10),
            max_message_bytes: 16 << 20,
        }
    }
}

/// Transport security and limits of a node (see [`crate::ServerConfig`]).
#[derive(Clone, Debug)]
pub struct Transport {
    /// TLS on the API port; `None`: plain text (loopback or `insecure` only).
    pub api_tls: Option<TlsFiles>,
    /// Mutual TLS on the peer port (its `ca` is required); `None`: plain
    /// text (loopback or `insecure` only).
    pub peer_tls: Option<TlsFiles>,
    /// Allow plain text on a non-loopback address (logged as a warning).
    pub insecure: bool,
    /// How often certificate files are checked for changes.
    pub reload_interval: Duration,
    pub api_limits: Limits,
    pub peer_limits: Limits,
    /// Largest Raft message (a full snapshot travels in one).
    pub raft_max_message_bytes: usize,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            api_tls: None,
            peer_tls: None,
            insecure: false,
            reload_interval: Duration::from_secs(5),
            api_limits: Limits::api(),
            peer_limits: Limits::peer(),
            raft_max_message_bytes: 64 << 20,
        }
    }
}

/// Plain text is allowed on loopback addresses, elsewhere only with
/// `insecure`; the error names the listener's flag.
pub(crate) fn check_plaintext(
    what: &str,
    addr: SocketAddr,
    tls: bool,
    insecure: bool,
) -> Result<(), String> {
    if tls || addr.ip().is_loopback() {
        return Ok(());
    }
    if insecure {
        tracing::warn!(listener = what, %addr, "plain text on a non-loopback address (--insecure): anyone on the network can read and forge this traffic");
        return Ok(());
    }
    Err(format!(
        "{what} listens on {addr} without TLS: give its certificate and key ({}) or bind it to loopback; --insecure allows plain text on purpose",
        if what == "peer" {
            "--peer-cert/--peer-key/--peer-ca"
        } else {
            "--tls-cert/--tls-key"
        }
    ))
}

/// A static peers entry's addresses: `API` or `API/PEER` (`host:port`
/// each). Without `/PEER`, the peer port is the API port + 1 on the same
/// host. Returns `(api, peer)`.
pub fn split_peer_entry(entry: &str) -> Result<(String, String), String> {
    if let Some((api, peer)) = entry.split_once('/') {
        if api.is_empty() || peer.is_empty() {
            return Err(format!("{entry}: expected API/PEER addresses"));
        }
        return Ok((api.to_string(), peer.to_string()));
    }
    let (host, port) = entry
        .rsplit_once(':')
        .ok_or_else(|| format!("{entry}: expected host:port"))?;
    let port: u16 = port.parse().map_err(|_| format!("{entry}: bad port"))?;
    let peer = port
        .checked_add(1)
        .ok_or_else(|| format!("{entry}: no port after {port} for the peer port"))?;
    Ok((entry.to_string(), format!("{host}:{peer}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_entries() {
        assert_eq!(
            split_peer_entry("h:50051").unwrap(),
            ("h:50051".into(), "h:50052".into())
        );
        assert_eq!(
            split_peer_entry("h:1/p:2").unwrap(),
            ("h:1".into(), "p:2".into())
        );
        assert!(split_peer_entry("h:65535").is_err());
        assert!(split_peer_entry("h:1/").is_err());
        assert!(split_peer_entry("nohost").is_err());
    }

    #[test]
    fn plaintext_only_on_loopback_or_insecure() {
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(check_plaintext("api", lo, false, false).is_ok());
        assert!(check_plaintext("api", any, true, false).is_ok());
        assert!(check_plaintext("api", any, false, true).is_ok());
        let e = check_plaintext("peer", any, false, false).unwrap_err();
        assert!(e.contains("--peer-cert") && e.contains("--insecure"), "{e}");
    }
}
