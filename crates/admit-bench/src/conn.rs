//! How the load generator connects: plain HTTP/2, or TLS (`--ca`, with an
//! optional client certificate `--cert`/`--key`), and an optional bearer
//! token (`--token`, sent as `authorization: Bearer ...` on every call).
//! One TLS session per connection, kept for the whole run.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{anyhow, Context as _, Result};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::codegen::http::Uri;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// A channel that adds the bearer token (if any) to every request.
pub type Chan = InterceptedService<Channel, Token>;

/// Adds `authorization: Bearer <token>`.
#[derive(Clone, Debug)]
pub struct Token(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Token {
    pub fn new(token: Option<&str>) -> Result<Token> {
        token
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| anyhow!("--token: not a valid header value"))
            })
            .transpose()
            .map(Token)
    }
}

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            r.metadata_mut().insert("authorization", t.clone());
        }
        Ok(r)
    }
}

/// TLS settings from the flags.
#[derive(Clone, Debug, Default)]
pub struct TlsFlags {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFlags {
    /// The client configuration, or `None` for plain text.
    pub fn config(&self) -> Result<Option<Arc<rustls::ClientConfig>>> {
        let Some(ca) = &self.ca else {
            if self.cert.is_some() || self.key.is_some() {
                return Err(anyhow!("--cert/--key need --ca"));
            }
            return Ok(None);
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in
            CertificateDer::pem_file_iter(ca).with_context(|| format!("--ca {}", ca.display()))?
        {
            roots.add(c.with_context(|| format!("--ca {}", ca.display()))?)?;
        }
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
        let mut c = match (&self.cert, &self.key) {
            (None, None) => b.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .with_context(|| format!("--cert {}", cert.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("--cert {}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("--key {}", key.display()))?;
                b.with_client_auth_cert(chain, key)?
            }
            _ => return Err(anyhow!("--cert and --key go together")),
        };
        c.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(Arc::new(c)))
    }
}

/// Opens one connection to `target` (`[http[s]://]host:port`).
pub async fn open(
    ep: Endpoint,
    target: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Channel> {
    let Some(cfg) = tls else {
        return Ok(ep.connect().await?);
    };
    let addr = target
        .split_once("://")
        .map_or(target, |(_, a)| a)
        .to_string();
    let host = addr
        .rsplit_once(':')
        .map_or(addr.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok(ep
        .connect_with_connector(Connect { addr, host, cfg })
        .await?)
}

#[derive(Clone)]
struct Connect {
    addr: String,
    host: String,
    cfg: Arc<rustls::ClientConfig>,
}

type Io = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tower::Service<Uri> for Connect {
    type Response = Io;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Io>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let name =
                ServerName::try_from(me.host).map_err(|e| std::io::Error::other(e.to_string()))?;
            let tcp = tokio::net::TcpStream::connect(&me.addr).await?;
            tcp.set_nodelay(true)?;
            let s = tokio_rustls::TlsConnector::from(me.cfg)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(s))
        })
    }
}
