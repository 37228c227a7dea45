//! TLS material of one listener: certificates and keys read from PEM files,
//! the rustls configurations built from them, reloaded when the files
//! change (the new configuration is swapped in atomically; connections
//! made before keep theirs), node identities and expiry read from
//! certificates.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::sync::watch;
use x509_parser::extensions::GeneralName;

use super::TlsFiles;

/// The DNS name a node's certificate carries: `node-<id>.admit.internal`.
pub fn node_dns_name(id: u64) -> String {
    format!("node-{id}.admit.internal")
}

/// The node id a certificate names (its `node-<id>.admit.internal` DNS
/// name), if any.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Option<u64> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = x.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::DNSName(d) => d
            .strip_prefix("node-")
            .and_then(|r| r.strip_suffix(".admit.internal"))
            .and_then(|id| id.parse().ok()),
        _ => None,
    })
}

/// The end of a certificate's validity (Unix seconds).
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(x.validity().not_after.timestamp())
}

/// The one crypto provider (ring), named explicitly so no process default
/// has to be installed.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which listener a configuration serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Optional client certificates, verified against `ca` when given.
    Api,
    /// Mutual TLS with the cluster CA, both ways.
    Peer,
    /// An HTTP/1.1 port outside the gRPC server (the webhook receiver): no
    /// client certificates.
    Https,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Peer => "peer",
            Role::Https => "webhook",
        }
    }
}

/// The configurations built from one set of files.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) server: Arc<ServerConfig>,
    /// For dialing other nodes (peer role only): the node certificate as
    /// client certificate, the cluster CA as roots.
    pub(crate) client: Option<Arc<ClientConfig>>,
    /// The certificate's end of validity (Unix seconds).
    pub(crate) expiry: i64,
}

fn read_certs(path: &std::path::Path, field: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{field} {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{field} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{field} {}: no certificate in it", path.display()));
    }
    Ok(certs)
}

fn load(files: &TlsFiles, role: Role) -> Result<Loaded, String> {
    let certs = read_certs(&files.cert, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("key {}: {e}", files.key.display()))?;
    let roots = match &files.ca {
        None => None,
        Some(ca) => {
            let mut r = RootCertStore::empty();
            for c in read_certs(ca, "CA")? {
                r.add(c).map_err(|e| format!("CA {}: {e}", ca.display()))?;
            }
            Some(Arc::new(r))
        }
    };
    let bad = |e: rustls::Error| format!("{} TLS: {e}", role.name());
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(bad)?;
    let builder = match (role, &roots) {
        (Role::Peer, None) => return Err("peer TLS needs the cluster CA (--peer-ca)".into()),
        (Role::Peer, Some(r)) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(r.clone(), provider())
                .build()
                .map_err(|e| format!("peer CA: {e}"))?,
        ),
        (Role::Api, Some(r)) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(r.clone(), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("client CA: {e}"))?,
        ),
        (Role::Api, None) | (Role::Https, _) => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(bad)?;
    server.alpn_protocols = if role == Role::Https {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec()]
    };
    let client = match (role, roots) {
        (Role::Peer, Some(r)) => {
            let mut c = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(bad)?
                .with_root_certificates(r)
                .with_client_auth_cert(certs.clone(), key)
                .map_err(bad)?;
            c.alpn_protocols = vec![b"h2".to_vec()];
            Some(Arc::new(c))
        }
        _ => None,
    };
    let expiry = not_after(&certs[0]).unwrap_or(0);
    Ok(Loaded {
        server: Arc::new(server),
        client,
        expiry,
    })
}

/// One listener's TLS material, reloaded when its files change.
#[derive(Debug)]
pub(crate) struct Reloading {
    files: TlsFiles,
    role: Role,
    current: RwLock<Arc<Loaded>>,
    /// The files' contents when last loaded (a change of any reloads).
    seen: Mutex<Vec<Vec<u8>>>,
}

fn contents(files: &TlsFiles) -> Vec<Vec<u8>> {
    [Some(&files.cert), Some(&files.key), files.ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| std::fs::read(p).unwrap_or_default())
        .collect()
}

impl Reloading {
    /// Loads the files now; an error names the file.
    pub(crate) fn new(files: TlsFiles, role: Role) -> Result<Arc<Reloading>, String> {
        let seen = contents(&files);
        let loaded = load(&files, role)?;
        publish_expiry(role, loaded.expiry);
        Ok(Arc::new(Reloading {
            files,
            role,
            current: RwLock::new(Arc::new(loaded)),
            seen: Mutex::new(seen),
        }))
    }

    /// The configuration new connections use.
    pub(crate) fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads if a file changed; a file that does not load (half written,
    /// or wrong) keeps the old configuration and is tried again next time.
    pub(crate) fn check(&self) {
        let now = contents(&self.files);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == now {
            return;
        }
        match load(&self.files, self.role) {
            Ok(l) => {
                publish_expiry(self.role, l.expiry);
                tracing::info!(
                    listener = self.role.name(),
                    expiry = l.expiry,
                    "certificates reloaded"
                );
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(l);
                *seen = now;
            }
            Err(e) => {
                tracing::warn!(listener = self.role.name(), error = %e, "certificates changed but do not load; the old ones stay in use");
            }
        }
    }

    /// Checks the files every `every` until `stop`.
    pub(crate) fn watch(
        self: &Arc<Self>,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => me.check(),
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        })
    }
}

fn publish_expiry(role: Role, expiry: i64) {
    metrics::gauge!("admit_tls_certificate_expiry_timestamp_seconds", "listener" => role.name())
        .set(expiry as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use admit_certs::{DevCa, Pem, Validity};
    use metrics_exporter_prometheus::PrometheusBuilder;

    /// The expiry gauge's value for `listener` in a scrape.
    fn gauge(scrape: &str, listener: &str) -> Option<f64> {
        let series =
            format!("admit_tls_certificate_expiry_timestamp_seconds{{listener=\"{listener}\"}} ");
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map(|v| v.trim().parse().unwrap())
    }

    fn not_after_of(p: &Pem) -> i64 {
        not_after(&CertificateDer::from_pem_slice(p.cert.as_bytes()).unwrap()).unwrap()
    }

    /// The gauge shows the served certificate's end (a recorder local to
    /// this thread, so other tests' nodes do not write into it), follows a
    /// rotation, and keeps its value when the new files do not load.
    #[test]
    fn the_expiry_gauge_follows_the_served_certificate() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let scrape = recorder.handle();
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test CA").unwrap();
        let files = TlsFiles {
            cert: dir.path().join("node-1.pem"),
            key: dir.path().join("node-1.key"),
            ca: Some(dir.path().join("ca.pem")),
        };
        std::fs::write(files.ca.as_ref().unwrap(), &ca.cert).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let day = 86_400;
        let month = ca.node_with(1, &[], Validity::days(30)).unwrap();
        month.write(dir.path(), "node-1").unwrap();
        let tls = metrics::with_local_recorder(&recorder, || {
            Reloading::new(files.clone(), Role::Peer).unwrap()
        });
        let shown = gauge(&scrape.render(), "peer").expect("the gauge is set at start");
        assert_eq!(shown, not_after_of(&month) as f64);
        assert!((now + 29 * day..=now + 31 * day).contains(&(shown as i64)));
        // rotated to a year: the gauge follows
        let year = ca.node_with(1, &[], Validity::days(365)).unwrap();
        year.write(dir.path(), "node-1").unwrap();
        metrics::with_local_recorder(&recorder, || tls.check());
        assert_eq!(
            gauge(&scrape.render(), "peer"),
            Some(not_after_of(&year) as f64)
        );
        // a certificate that does not load keeps the served one's value
        std::fs::write(&files.cert, "not a certificate").unwrap();
        metrics::with_local_recorder(&recorder, || tls.check());
        assert_eq!(
            gauge(&scrape.render(), "peer"),
            Some(not_after_of(&year) as f64)
        );
        assert_eq!(gauge(&scrape.render(), "api"), None);
    }
}
