//! TLS for an HTTP/1.1 port that is not one of the gRPC listeners (the
//! webhook receiver in admit-webhook): the same certificate loading and
//! reloading as the API port ([`super::tls`]), without client certificates,
//! offering `http/1.1` by ALPN. The certificate's expiry is published as
//! `admit_tls_certificate_expiry_timestamp_seconds{listener="webhook"}`.
//! Imports `tls` and rustls/tokio only.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::tls::{Reloading, Role};
use super::TlsFiles;

/// A listener's TLS material, reloaded from its files while it serves.
#[derive(Clone, Debug)]
pub struct HttpsTls {
    files: Arc<Reloading>,
}

impl HttpsTls {
    /// Loads `files` now (their `ca` must be `None`: no client certificates
    /// are asked for); the error names the file that does not load.
    pub fn load(files: TlsFiles) -> Result<HttpsTls, String> {
        if files.ca.is_some() {
            return Err("webhook TLS takes no client CA".into());
        }
        Ok(HttpsTls {
            files: Reloading::new(files, Role::Https)?,
        })
    }

    /// The configuration a new connection's handshake uses.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.files.current().server.clone()
    }

    /// Checks the files every `every` until `stop`, and switches to changed
    /// ones that load (connections already open keep theirs).
    pub fn watch(
        &self,
        every: Duration,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        self.files.watch(every, stop)
    }
}
