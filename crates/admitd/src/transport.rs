//! The peer port and transport security settings of `admitd`: flags (each
//! also an `ADMIT_*` variable) and the TOML `[transport]` table, applied to
//! the `ServerConfig` after the rest of the configuration. See the
//! "Transport" section of docs/security.md. Imports only admit-server's
//! configuration types.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use admit_server::transport::{Limits, TlsFiles};
use admit_server::ServerConfig;
use serde::Deserialize;

/// Transport flags.
#[derive(Debug, Default, clap::Args)]
pub struct TransportFlags {
    /// Peer port (Raft and node-to-node calls only) [default: in a cluster
    /// the API address with port + 1; a single node 127.0.0.1:0].
    #[arg(long, env = "ADMIT_PEER_LISTEN")]
    pub peer_listen: Option<String>,
    /// Peer address other nodes reach this one at [default: this node's
    /// peers entry, else the bound peer address].
    #[arg(long, env = "ADMIT_PEER_ADVERTISE")]
    pub peer_advertise: Option<String>,
    /// API port certificate (PEM, chain); with --tls-key turns TLS on.
    #[arg(long, env = "ADMIT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// API port private key (PEM).
    #[arg(long, env = "ADMIT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA of client certificates on the API port (optional client certs).
    #[arg(long, env = "ADMIT_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// This node's certificate on the peer port (names node-<id>.admit.internal).
    #[arg(long, env = "ADMIT_PEER_CERT")]
    pub peer_cert: Option<PathBuf>,
    /// This node's peer key (PEM).
    #[arg(long, env = "ADMIT_PEER_KEY")]
    pub peer_key: Option<PathBuf>,
    /// The cluster CA (verifies peers both ways).
    #[arg(long, env = "ADMIT_PEER_CA")]
    pub peer_ca: Option<PathBuf>,
    /// Allow plain text on non-loopback addresses (logged as a warning).
    #[arg(long, env = "ADMIT_INSECURE")]
    pub insecure: bool,
}

/// The TOML `[transport]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportFile {
    pub peer_listen: Option<String>,
    pub peer_advertise: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    pub peer_cert: Option<PathBuf>,
    pub peer_key: Option<PathBuf>,
    pub peer_ca: Option<PathBuf>,
    pub insecure: Option<bool>,
    /// How often certificate files are checked for changes (ms, default 5000).
    pub reload_interval_ms: Option<u64>,
    /// Largest Raft message, snapshots included (default 64 MiB).
    pub raft_max_message_bytes: Option<usize>,
    /// `[transport.api]` and `[transport.peer]`: connection limits.
    pub api: Option<LimitsFile>,
    pub peer: Option<LimitsFile>,
}

/// Connection limits of one port (defaults: docs/security.md).
#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_connections: Option<usize>,
    pub max_concurrent_streams: Option<u32>,
    pub idle_timeout_ms: Option<u64>,
    pub keepalive_interval_ms: Option<u64>,
    pub keepalive_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub handshake_timeout_ms: Option<u64>,
    pub max_message_bytes: Option<usize>,
}

fn bad(field: &str, problem: &str) -> String {
    format!("invalid {field}: {problem}")
}

fn limits(into: &mut Limits, f: Option<LimitsFile>, table: &str) -> Result<(), String> {
    let Some(f) = f else { return Ok(()) };
    let positive = |v: u64, name: &str| {
        if v == 0 {
            Err(bad(
                &format!("transport.{table}.{name}"),
                "must be above zero",
            ))
        } else {
            Ok(Duration::from_millis(v))
        }
    };
    if let Some(v) = f.max_connections {
        if v == 0 {
            return Err(bad(
                &format!("transport.{table}.max_connections"),
                "must be above zero",
            ));
        }
        into.max_connections = v;
    }
    if let Some(v) = f.max_concurrent_streams {
        if v == 0 {
            return Err(bad(
                &format!("transport.{table}.max_concurrent_streams"),
                "must be above zero",
            ));
        }
        into.max_concurrent_streams = v;
    }
    if let Some(v) = f.idle_timeout_ms {
        into.idle_timeout = positive(v, "idle_timeout_ms")?;
    }
    if let Some(v) = f.keepalive_interval_ms {
        into.keepalive_interval = positive(v, "keepalive_interval_ms")?;
    }
    if let Some(v) = f.keepalive_timeout_ms {
        into.keepalive_timeout = positive(v, "keepalive_timeout_ms")?;
    }
    if let Some(v) = f.request_timeout_ms {
        into.request_timeout = positive(v, "request_timeout_ms")?;
    }
    if let Some(v) = f.handshake_timeout_ms {
        into.handshake_timeout = positive(v, "handshake_timeout_ms")?;
    }
    if let Some(v) = f.max_message_bytes {
        if v < 1024 {
            return Err(bad(
                &format!("transport.{table}.max_message_bytes"),
                "must be at least 1024",
            ));
        }
        into.max_message_bytes = v;
    }
    Ok(())
}

/// Applies the transport flags over the `[transport]` table.
pub fn apply(
    c: &mut ServerConfig,
    flags: &TransportFlags,
    file: TransportFile,
) -> Result<(), String> {
    if let Some(p) = flags.peer_listen.clone().or(file.peer_listen) {
        let a: SocketAddr = p
            .parse()
            .map_err(|_| bad("peer_listen", "must be an address like 127.0.0.1:50052"))?;
        c.peer_listen = Some(a);
    }
    c.peer_advertise = flags.peer_advertise.clone().or(file.peer_advertise);
    if let Some(a) = &c.peer_advertise {
        if !a.contains(':') {
            return Err(bad("peer_advertise", "must be host:port"));
        }
    }
    let t = &mut c.transport;
    t.insecure = flags.insecure || file.insecure.unwrap_or(false);
    let api_cert = flags.tls_cert.clone().or(file.tls_cert);
    let api_key = flags.tls_key.clone().or(file.tls_key);
    let client_ca = flags.tls_client_ca.clone().or(file.tls_client_ca);
    t.api_tls = match (api_cert, api_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            ca: client_ca,
        }),
        (None, None) if client_ca.is_none() => None,
        (None, None) => return Err(bad("tls_client_ca", "needs tls_cert and tls_key")),
        (Some(_), None) => return Err(bad("tls_key", "is required with tls_cert")),
        (None, Some(_)) => return Err(bad("tls_cert", "is required with tls_key")),
    };
    let cert = flags.peer_cert.clone().or(file.peer_cert);
    let key = flags.peer_key.clone().or(file.peer_key);
    let ca = flags.peer_ca.clone().or(file.peer_ca);
    t.peer_tls = match (cert, key, ca) {
        (None, None, None) => None,
        (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
            cert,
            key,
            ca: Some(ca),
        }),
        (None, _, _) => return Err(bad("peer_cert", "is required with peer_key/peer_ca")),
        (_, None, _) => return Err(bad("peer_key", "is required with peer_cert/peer_ca")),
        (_, _, None) => return Err(bad("peer_ca", "is required with peer_cert/peer_key")),
    };
    if let Some(ms) = file.reload_interval_ms {
        if ms == 0 {
            return Err(bad("transport.reload_interval_ms", "must be above zero"));
        }
        t.reload_interval = Duration::from_millis(ms);
    }
    if let Some(b) = file.raft_max_message_bytes {
        if b < 1 << 20 {
            return Err(bad(
                "transport.raft_max_message_bytes",
                "must be at least 1 MiB",
            ));
        }
        t.raft_max_message_bytes = b;
    }
    limits(&mut t.api_limits, file.api, "api")?;
    limits(&mut t.peer_limits, file.peer, "peer")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ServerConfig {
        ServerConfig::new("127.0.0.1:1".parse().unwrap(), "d")
    }

    #[test]
    fn files_come_in_sets_and_bad_values_are_named() {
        let mut c = cfg();
        let f = TransportFlags {
            peer_cert: Some("c".into()),
            ..Default::default()
        };
        let e = apply(&mut c, &f, TransportFile::default()).unwrap_err();
        assert!(e.contains("peer_key"), "{e}");
        let f = TransportFlags {
            tls_key: Some("k".into()),
            ..Default::default()
        };
        assert!(apply(&mut c, &f, TransportFile::default())
            .unwrap_err()
            .contains("tls_cert"));
        let file: TransportFile = toml::from_str("[api]\nidle_timeout_ms = 0").unwrap();
        let e = apply(&mut c, &TransportFlags::default(), file).unwrap_err();
        assert!(e.contains("transport.api.idle_timeout_ms"), "{e}");
        let f = TransportFlags {
            peer_listen: Some("nope".into()),
            ..Default::default()
        };
        assert!(apply(&mut c, &f, TransportFile::default())
            .unwrap_err()
            .contains("peer_listen"));
    }

    #[test]
    fn limits_and_files_are_applied() {
        let mut c = cfg();
        let file: TransportFile = toml::from_str(
            "peer_listen = \"127.0.0.1:7\"\n[peer]\nmax_connections = 9\nmax_message_bytes = 2048",
        )
        .unwrap();
        let f = TransportFlags {
            tls_cert: Some("c".into()),
            tls_key: Some("k".into()),
            ..Default::default()
        };
        apply(&mut c, &f, file).unwrap();
        assert_eq!(c.peer_listen.unwrap().port(), 7);
        assert_eq!(c.transport.peer_limits.max_connections, 9);
        assert_eq!(c.transport.peer_limits.max_message_bytes, 2048);
        assert!(c.transport.api_tls.is_some() && c.transport.peer_tls.is_none());
    }
}
