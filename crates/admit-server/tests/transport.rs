//! The transport of a node's two listeners (docs/security.md, "Transport"):
//! real listeners on loopback, certificates from `admit-certs`.
//!
//! * the API port refuses expired, self-signed and other-CA client
//!   certificates (client certificates are optional);
//! * the peer port refuses connections without a node certificate of the
//!   cluster CA, caller certificates, and nodes outside the membership;
//! * a rotated API certificate is served without a restart, the old one no
//!   longer;
//! * plain text off loopback without `insecure` is refused at start;
//! * an undecodable request is INVALID_ARGUMENT on both ports;
//! * the connection bound and the idle timeout close connections;
//! * a request whose body never completes is cut off after the request
//!   timeout;
//! * a node that joins serves on its peer port only the members its join
//!   named until the registry reaches it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use admit_certs::{DevCa, Pem, Validity};
use admit_proto::v1 as pb;
use admit_raft::pb::raft_transport_client::RaftTransportClient;
use admit_raft::pb::{RaftRequest, RaftRpcKind};
use admit_server::transport::{TlsFiles, Transport};
use admit_server::{Running, ServerConfig};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncReadExt;
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// Everything a test node needs: its CA, files and running server.
struct Node {
    ca: DevCa,
    dir: tempfile::TempDir,
    running: Running,
}

fn files(dir: &Path, stem: &str, ca: Option<&Path>) -> TlsFiles {
    TlsFiles {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
        ca: ca.map(Path::to_path_buf),
    }
}

fn base(dir: &Path) -> ServerConfig {
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.join("data"));
    cfg.shards = 2;
    cfg.fsync = false;
    cfg.tick_interval = Duration::from_secs(3_600);
    cfg
}

/// Node 1 with TLS on the API port (client CA: its CA) and mutual TLS on
/// the peer port.
async fn tls_node(tweak: impl FnOnce(&mut Transport)) -> Node {
    let ca = DevCa::new("test CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca.cert).unwrap();
    ca.node(1, &[])
        .unwrap()
        .write(dir.path(), "node-1")
        .unwrap();
    let ca_path = dir.path().join("ca.pem");
    let mut cfg = base(dir.path());
    cfg.transport.api_tls = Some(files(dir.path(), "node-1", Some(&ca_path)));
    cfg.transport.peer_tls = Some(files(dir.path(), "node-1", Some(&ca_path)));
    tweak(&mut cfg.transport);
    let running = admit_server::start(cfg).await.expect("node starts");
    Node { ca, dir, running }
}

fn client_config(roots: &str, ident: Option<&Pem>) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots.as_bytes()) {
        store.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store);
    let mut c = match ident {
        None => b.with_no_client_auth(),
        Some(p) => b
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(p.cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(p.key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    c.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(c)
}

/// A TLS connector for tonic: verifies the server as `name`.
#[derive(Clone)]
struct Connect {
    addr: SocketAddr,
    name: String,
    cfg: Arc<rustls::ClientConfig>,
}

type Io = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tower::Service<http::Uri> for Connect {
    type Response = Io;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Io>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let tcp = tokio::net::TcpStream::connect(me.addr).await?;
            let name = ServerName::try_from(me.name).unwrap();
            let s = tokio_rustls::TlsConnector::from(me.cfg)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(s))
        })
    }
}

async fn tls_channel(
    addr: SocketAddr,
    name: &str,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect_with_connector(Connect {
            addr,
            name: name.into(),
            cfg,
        })
        .await
}

/// An API call over TLS with `ident` as client certificate: its status code
/// (`Ok` on success; a refused handshake is whatever error the channel
/// reports).
async fn api_call(addr: SocketAddr, roots: &str, ident: Option<&Pem>) -> Result<(), String> {
    let ch = tls_channel(addr, "localhost", client_config(roots, ident))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    admit_proto::v1::cluster_client::ClusterClient::new(ch)
        .list_nodes(pb::ListNodesRequest {})
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// A Raft status call on node 1's peer port, presenting `ident`.
async fn peer_call(
    addr: SocketAddr,
    roots: &str,
    ident: Option<&Pem>,
) -> Result<(), tonic::Status> {
    peer_call_to(addr, 1, roots, ident).await
}

/// A Raft status call on node `node`'s peer port, presenting `ident`.
async fn peer_call_to(
    addr: SocketAddr,
    node: u64,
    roots: &str,
    ident: Option<&Pem>,
) -> Result<(), tonic::Status> {
    let name = admit_server::transport::node_dns_name(node);
    let ch = tls_channel(addr, &name, client_config(roots, ident))
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e:?}")))?;
    RaftTransportClient::new(ch)
        .call(RaftRequest {
            group: 0,
            kind: RaftRpcKind::Status as i32,
            payload: Vec::new(),
            cluster: 0,
        })
        .await
        .map(|_| ())
}

async fn bounded<F: Future>(secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("test finished in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_port_refuses_bad_client_certificates() {
    bounded(60, async {
        let n = tls_node(|_| {}).await;
        let addr = n.running.local_addr();
        let roots = n.ca.cert.clone();
        // no client certificate (optional) and a valid one: served
        api_call(addr, &roots, None).await.expect("anonymous TLS");
        let good = n.ca.caller("billing").unwrap();
        api_call(addr, &roots, Some(&good))
            .await
            .expect("caller certificate");
        // expired, self-signed, another CA: refused
        let expired =
            n.ca.leaf(
                "old",
                &["old.callers.admit.internal".into()],
                false,
                Validity::expired(),
            )
            .unwrap();
        let other = DevCa::new("other CA").unwrap();
        let self_signed = {
            let own = DevCa::new("self").unwrap();
            Pem {
                cert: own.cert.clone(),
                key: own.key.clone(),
            }
        };
        for (what, p) in [
            ("expired", expired),
            ("other CA", other.caller("billing").unwrap()),
            ("self-signed", self_signed),
        ] {
            let r = api_call(addr, &roots, Some(&p)).await;
            assert!(r.is_err(), "{what} client certificate was accepted");
        }
        // a client that does not trust the node's CA does not connect either
        assert!(api_call(addr, &other.cert, None).await.is_err());
        n.running.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_serves_only_member_nodes() {
    bounded(60, async {
        let n = tls_node(|_| {}).await;
        let peer = n.running.peer_addr();
        assert_ne!(peer, n.running.local_addr());
        let roots = n.ca.cert.clone();
        // a member node's certificate: served
        let me = n.ca.node(1, &[]).unwrap();
        peer_call(peer, &roots, Some(&me))
            .await
            .expect("member node");
        // a caller's certificate from the same CA: no node named
        let caller = n.ca.caller("billing").unwrap();
        let e = peer_call(peer, &roots, Some(&caller)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        // a node of the CA that is not in the membership
        let stranger = n.ca.node(9, &[]).unwrap();
        let e = peer_call(peer, &roots, Some(&stranger)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("node 9"), "{e:?}");
        // no certificate, expired, another CA, self-signed: no TLS session
        let expired = n.ca.node_with(1, &[], Validity::expired()).unwrap();
        let other = DevCa::new("other CA").unwrap();
        let own = DevCa::new("self").unwrap();
        let self_signed = Pem {
            cert: own.cert.clone(),
            key: own.key.clone(),
        };
        for (what, p) in [
            ("none", None),
            ("expired", Some(expired)),
            ("other CA", Some(other.node(1, &[]).unwrap())),
            ("self-signed", Some(self_signed)),
        ] {
            let e = peer_call(peer, &roots, p.as_ref()).await.unwrap_err();
            assert_ne!(e.code(), Code::Ok, "{what}");
            assert_ne!(
                e.code(),
                Code::PermissionDenied,
                "{what}: refused by the handshake, not later: {e:?}"
            );
        }
        n.running.shutdown().await.unwrap();
    })
    .await
}

/// A node that joins without static peers serves on its peer port only the
/// members its join's answer named until the registry reaches it: another
/// node certificate of the same CA is refused. Node 2 advertises a peer
/// address nobody listens on, so the registry never reaches it and the
/// join's answer is all it knows of the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_serves_only_the_members_its_join_named() {
    bounded(90, async {
        let first = tls_node(|_| {}).await;
        let certs = first.dir.path();
        let ca_path = certs.join("ca.pem");
        first
            .ca
            .node(2, &[])
            .unwrap()
            .write(certs, "node-2")
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut cfg = base(data.path());
        cfg.node_id = 2;
        cfg.transport.api_tls = Some(files(certs, "node-2", Some(&ca_path)));
        cfg.transport.peer_tls = Some(files(certs, "node-2", Some(&ca_path)));
        cfg.join = Some(first.running.local_addr().to_string());
        cfg.peer_advertise = Some("127.0.0.1:9".into());
        let second = admit_server::start(cfg).await.expect("node 2 joins");
        let peer = second.peer_addr();
        let roots = first.ca.cert.clone();
        // a member the join named: served
        let one = first.ca.node(1, &[]).unwrap();
        peer_call_to(peer, 2, &roots, Some(&one))
            .await
            .expect("node 1, a member");
        // a node of the same CA the join did not name: refused
        let stranger = first.ca.node(9, &[]).unwrap();
        let e = peer_call_to(peer, 2, &roots, Some(&stranger))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("node 9"), "{e:?}");
        second.shutdown().await.unwrap();
        first.running.shutdown().await.unwrap();
    })
    .await
}

/// The leaf certificate a fresh TLS handshake with `addr` presents.
async fn served_cert(addr: SocketAddr, roots: &str) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let s = tokio_rustls::TlsConnector::from(client_config(roots, None))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("handshake");
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &Pem) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.cert.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_a_restart() {
    bounded(60, async {
        let n = tls_node(|t| t.reload_interval = Duration::from_millis(50)).await;
        let addr = n.running.local_addr();
        let roots = n.ca.cert.clone();
        let old = std::fs::read_to_string(n.dir.path().join("node-1.pem")).unwrap();
        let old = der(&Pem {
            cert: old,
            key: String::new(),
        });
        assert_eq!(served_cert(addr, &roots).await, old);
        let new = n.ca.node(1, &[]).unwrap();
        // key first, then the certificate: a half-rotated pair does not load
        // and the old pair stays in use until the new one is complete
        std::fs::write(n.dir.path().join("node-1.key"), &new.key).unwrap();
        std::fs::write(n.dir.path().join("node-1.pem"), &new.cert).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while served_cert(addr, &roots).await != der(&new) {
            assert!(
                Instant::now() < deadline,
                "the new certificate was not picked up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..5 {
            assert_eq!(
                served_cert(addr, &roots).await,
                der(&new),
                "the old certificate is served again"
            );
        }
        // and it works for calls too
        api_call(addr, &roots, None)
            .await
            .expect("served with the new certificate");
        n.running.shutdown().await.unwrap();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_off_loopback_is_refused_at_start() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = base(dir.path());
        cfg.listen = "0.0.0.0:0".parse().unwrap();
        let e = admit_server::start(cfg.clone())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("api") && e.contains("--insecure"), "{e}");
        let mut peer_open = base(dir.path());
        peer_open.peer_listen = Some("0.0.0.0:0".parse().unwrap());
        let e = admit_server::start(peer_open)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("peer") && e.contains("--insecure"), "{e}");
        // with insecure it starts
        cfg.transport.insecure = true;
        let r = admit_server::start(cfg).await.expect("insecure starts");
        r.shutdown().await.unwrap();
    })
    .await
}

/// Sends an `AddNodeRequest` (field 1 a varint) to `path`, whose request
/// type wants field 1 length-delimited: it does not decode.
async fn undecodable(ch: Channel, path: &'static str) -> tonic::Status {
    let mut g = tonic::client::Grpc::new(ch);
    g.ready().await.unwrap();
    let r: Result<tonic::Response<pb::AddNodeResponse>, _> = g
        .unary(
            tonic::Request::new(pb::AddNodeRequest {
                node_id: 5,
                ..Default::default()
            }),
            http::uri::PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    r.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_request_is_invalid_argument() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let r = admit_server::start(base(dir.path())).await.unwrap();
        let api = Channel::from_shared(format!("http://{}", r.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let s = undecodable(api, "/admit.v1.AdmitSend/Admit").await;
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        let peer = Channel::from_shared(format!("http://{}", r.peer_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let s = undecodable(peer.clone(), "/admit.internal.node.NodeRpc/Call").await;
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        // the peer port serves nothing else
        let s = undecodable(peer, "/admit.v1.Cluster/AddNode").await;
        assert_eq!(s.code(), Code::Unimplemented, "{s:?}");
        r.shutdown().await.unwrap();
    })
    .await
}

/// Whether the server closes `s` within `within` (EOF or an error on
/// read), and how many bytes it sent before (its HTTP/2 preface, if it
/// served the connection at all).
async fn closed(s: &mut tokio::net::TcpStream, within: Duration) -> (bool, usize) {
    let mut buf = [0u8; 256];
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (false, got),
            Ok(Ok(0)) | Ok(Err(_)) => return (true, got),
            Ok(Ok(n)) => got += n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_bounded_and_idle_ones_closed() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = base(dir.path());
        cfg.transport.api_limits.max_connections = 2;
        cfg.transport.api_limits.idle_timeout = Duration::from_millis(500);
        let r = admit_server::start(cfg).await.unwrap();
        let addr = r.local_addr();
        let mut a = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut b = tokio::net::TcpStream::connect(addr).await.unwrap();
        // give the accept loop time to take both before the third
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        // the third is closed unserved (no HTTP/2 preface), not when idle
        assert_eq!(
            closed(&mut c, Duration::from_secs(10)).await,
            (true, 0),
            "a third connection was served"
        );
        // idle (no request): served, then closed after the idle timeout
        for s in [&mut a, &mut b] {
            let (gone, got) = closed(s, Duration::from_secs(10)).await;
            assert!(gone && got > 0, "an idle connection was kept ({got} bytes)");
        }
        // their slots are free again: a call works
        let ch = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        admit_proto::v1::cluster_client::ClusterClient::new(ch)
            .list_nodes(pb::ListNodesRequest {})
            .await
            .expect("served");
        r.shutdown().await.unwrap();
    })
    .await
}

/// A request whose body never completes (a gRPC call whose single message
/// never comes) is ended after the listener's request timeout instead of
/// holding its stream open; the connection goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_never_completes_is_cut_off() {
    bounded(60, async {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = base(dir.path());
        cfg.transport.api_limits.request_timeout = Duration::from_millis(500);
        let r = admit_server::start(cfg).await.unwrap();
        let ch = Channel::from_shared(format!("http://{}", r.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(ch.clone());
        grpc.ready().await.unwrap();
        let never = futures_util::stream::pending::<pb::ListNodesRequest>();
        let path = http::uri::PathAndQuery::from_static("/admit.v1.Cluster/ListNodes");
        let codec =
            tonic_prost::ProstCodec::<pb::ListNodesRequest, pb::ListNodesResponse>::default();
        let call = grpc.client_streaming(tonic::Request::new(never), path, codec);
        // far beyond the timeout: without it the call would never end
        let ended = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("the half-sent request was never cut off");
        let e = ended.unwrap_err();
        assert!(
            matches!(e.code(), Code::Cancelled | Code::DeadlineExceeded),
            "{e:?}"
        );
        admit_proto::v1::cluster_client::ClusterClient::new(ch)
            .list_nodes(pb::ListNodesRequest {})
            .await
            .expect("the connection still serves");
        r.shutdown().await.unwrap();
    })
    .await
}
