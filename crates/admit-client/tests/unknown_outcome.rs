//! An unknown outcome: a relay in front of a real node passes the first
//! Admit on, lets the node decide it, and then loses the answer (UNAVAILABLE
//! without `admit-not-applied`, as a node that dies mid-call would). The
//! client retries it under its idempotency key and gets the first decision
//! replayed: one conversation counted, not two. Without a key it does not
//! retry and says the outcome is unknown.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use admit_client::{Category, Error, Reason, SendSpec};
use admit_proto::v1 as pb;
use admit_proto::v1::admit_send_client::AdmitSendClient;
use admit_proto::v1::admit_send_server::{AdmitSend, AdmitSendServer};
use common::*;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

const NUMBER: &str = "100200300";

/// Forwards AdmitSend calls to the node; the first `lose` Admit answers are
/// dropped after the node produced them.
struct LossyRelay {
    node: AdmitSendClient<Channel>,
    lose: AtomicU32,
    admits: Arc<AtomicU32>,
    /// The `authorization` metadata of the last Admit.
    auth: Arc<Mutex<Option<String>>>,
}

#[tonic::async_trait]
impl AdmitSend for LossyRelay {
    async fn admit(
        &self,
        r: Request<pb::AdmitRequest>,
    ) -> Result<Response<pb::AdmitResponse>, Status> {
        self.admits.fetch_add(1, Ordering::SeqCst);
        *self.auth.lock().unwrap() = r
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = self.node.clone().admit(r.into_inner()).await?;
        let lost = self
            .lose
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if lost {
            return Err(Status::unavailable("relay: connection to the node lost"));
        }
        Ok(answer)
    }
    async fn admit_batch(
        &self,
        r: Request<pb::AdmitBatchRequest>,
    ) -> Result<Response<pb::AdmitBatchResponse>, Status> {
        self.node.clone().admit_batch(r.into_inner()).await
    }
    async fn release(
        &self,
        r: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        self.node.clone().release(r.into_inner()).await
    }
    async fn record_inbound(
        &self,
        r: Request<pb::RecordInboundRequest>,
    ) -> Result<Response<pb::RecordInboundResponse>, Status> {
        self.node.clone().record_inbound(r.into_inner()).await
    }
    async fn report_outcome(
        &self,
        r: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        self.node.clone().report_outcome(r.into_inner()).await
    }
}

/// Starts the relay on a loopback port; its address and Admit counter.
async fn relay(
    node: SocketAddr,
    lose: u32,
) -> (SocketAddr, Arc<AtomicU32>, tokio::task::JoinHandle<()>) {
    let (addr, admits, _, task) = relay_seeing(node, lose).await;
    (addr, admits, task)
}

/// [`relay`], also returning what it saw of `authorization`.
async fn relay_seeing(
    node: SocketAddr,
    lose: u32,
) -> (
    SocketAddr,
    Arc<AtomicU32>,
    Arc<Mutex<Option<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let ch = Channel::from_shared(format!("http://{node}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let admits = Arc::new(AtomicU32::new(0));
    let auth = Arc::new(Mutex::new(None));
    let svc = LossyRelay {
        node: AdmitSendClient::new(ch),
        lose: AtomicU32::new(lose),
        admits: admits.clone(),
        auth: auth.clone(),
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(AdmitSendServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
            .await
            .unwrap();
    });
    (addr, admits, auth, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_retry_of_an_unknown_outcome_counts_once() {
    bounded(60, async {
        let (srv, mut direct) = InProcess::start(at(1, 9)).await;
        direct.register(NUMBER, "TIER_250").await;
        let (addr, admits, task) = relay(srv.addr, 1).await;
        let c = client(options(&[addr]));
        let send = SendSpec::template(NUMBER, &cust(1), "t-util", Category::Utility);
        let d = c.admit(&send).await.expect("admitted after a retry");
        assert_eq!(admits.load(Ordering::SeqCst), 2, "the call was sent twice");
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.reason, Reason::NewConversation, "the first decision");
        assert!(d.replayed, "the retry got the first decision back: {d:?}");
        assert!(d.idempotency_key.starts_with("ac-"), "a generated key");
        assert_eq!(direct.used(NUMBER).await, 1, "counted once");
        task.abort();
        srv.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unkeyed_unknown_outcome_is_not_retried() {
    bounded(60, async {
        let (srv, mut direct) = InProcess::start(at(1, 9)).await;
        direct.register(NUMBER, "TIER_250").await;
        let (addr, admits, task) = relay(srv.addr, 1).await;
        let mut o = options(&[addr]);
        o.generate_keys = false;
        let c = client(o);
        let send = SendSpec::template(NUMBER, &cust(1), "t-util", Category::Utility);
        let e = c.admit(&send).await.expect_err("outcome unknown");
        assert!(matches!(e, Error::UnknownOutcome(_)), "{e:?}");
        assert_eq!(admits.load(Ordering::SeqCst), 1, "not retried");
        assert_eq!(direct.used(NUMBER).await, 1, "the lost call was applied");
        task.abort();
        srv.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_goes_as_a_bearer_authorization() {
    bounded(60, async {
        let (srv, mut direct) = InProcess::start(at(1, 9)).await;
        direct.register(NUMBER, "TIER_250").await;
        let (addr, _, auth, task) = relay_seeing(srv.addr, 0).await;
        let mut o = options(&[addr]);
        o.token = Some("s3cret-token".into());
        let c = client(o);
        let send = SendSpec::template(NUMBER, &cust(1), "t-util", Category::Utility);
        c.admit(&send).await.expect("admitted");
        assert_eq!(auth.lock().unwrap().as_deref(), Some("Bearer s3cret-token"));
        task.abort();
        srv.stop().await;
    })
    .await
}
