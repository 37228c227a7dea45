//! HTTPS on the receiver's port (loopback, port 0): the handshake and a
//! delivery answered over TLS, plain HTTP refused on that port, and a
//! certificate replaced on disk taken up without a restart. No admit node
//! is needed: nothing here reaches the sink.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use admit_certs::DevCa;
use admit_proto::v1 as pb;
use admit_server::transport::{HttpsTls, TlsFiles};
use admit_webhook::{serve, Sink, Tls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Status;

/// A sink the requests of this file never reach.
struct Unreached;

impl Sink for Unreached {
    async fn apply_event(
        &self,
        _: pb::ApplyEventRequest,
    ) -> Result<pb::ApplyEventResponse, Status> {
        panic!("no delivery is applied here")
    }
    async fn record_inbound(
        &self,
        _: pb::RecordInboundRequest,
    ) -> Result<pb::RecordInboundResponse, Status> {
        panic!("no delivery is applied here")
    }
    async fn report_outcome(
        &self,
        _: pb::ReportOutcomeRequest,
    ) -> Result<pb::ReportOutcomeResponse, Status> {
        panic!("no delivery is applied here")
    }
    async fn register_number(
        &self,
        _: pb::RegisterNumberRequest,
    ) -> Result<pb::RegisterNumberResponse, Status> {
        panic!("no delivery is applied here")
    }
}

/// Writes a server certificate for localhost/127.0.0.1 signed by `ca`.
fn write_cert(ca: &DevCa, dir: &Path) -> TlsFiles {
    let (cert, key) = ca.node(1, &[]).unwrap().write(dir, "webhook").unwrap();
    TlsFiles {
        cert,
        key,
        ca: None,
    }
}

/// One HTTPS request trusting only `ca`; `Err` when the handshake fails.
async fn https(addr: SocketAddr, ca: &DevCa, head: String, body: &[u8]) -> Result<Answer, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert.as_bytes()).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    tokio::time::timeout(Duration::from_secs(30), async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let name = ServerName::try_from("localhost").unwrap();
        let mut s = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(body).await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        answer(&out)
    })
    .await
    .expect("answered in time")
}

fn handshake_head() -> String {
    format!(
        "GET /webhook?hub.mode=subscribe&hub.verify_token={TOKEN}&hub.challenge=8675309 HTTP/1.1\r\nHost: admit.test\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn the_port_speaks_https_only_and_takes_up_a_new_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = DevCa::new("webhook test CA 1").unwrap();
    let files = write_cert(&first, dir.path());
    let mut cfg = hook_config(Vec::new());
    cfg.tls = Some(Tls {
        files: HttpsTls::load(files).unwrap(),
        reload_every: Duration::from_millis(50),
    });
    let hook = serve(cfg, Unreached).await.unwrap();
    let addr = hook.local_addr();

    // the subscription handshake and a refused delivery, over TLS
    let ok = https(addr, &first, handshake_head(), b"").await.unwrap();
    assert_eq!((ok.code, ok.body.as_str()), (200, "8675309"));
    let body = b"{\"object\":\"whatsapp_business_account\",\"entry\":[]}";
    let bad = https(addr, &first, post_head(body.len(), Some("sha256=00")), body)
        .await
        .unwrap();
    assert_eq!(bad.code, 401, "{bad:?}");

    // plain HTTP on the TLS port gets no HTTP answer
    let plain = tokio::time::timeout(Duration::from_secs(30), async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(handshake_head().as_bytes()).await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        out
    })
    .await
    .expect("the server closes a plain connection");
    assert!(
        !String::from_utf8_lossy(&plain).starts_with("HTTP/"),
        "plain HTTP answered: {:?}",
        String::from_utf8_lossy(&plain)
    );

    // a certificate of another CA replaces the files: new connections get it
    let second = DevCa::new("webhook test CA 2").unwrap();
    write_cert(&second, dir.path());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(a) = https(addr, &second, handshake_head(), b"").await {
            assert_eq!((a.code, a.body.as_str()), (200, "8675309"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not taken up within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old = https(addr, &first, handshake_head(), b"").await;
    assert!(old.is_err(), "the old certificate is still served: {old:?}");
    hook.shutdown().await;
}
