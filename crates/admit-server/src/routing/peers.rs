//! Channels to the other nodes: one lazily connected tonic channel per peer
//! address, shared by all requests, and the one call that relays a
//! [`NodeReq`] as one more hop of the current request.
//!
//! A relayed request goes on the node-pair stream that carries this node's
//! Raft messages to the peer when one is open (issue 14, item 3): a frame
//! among that moment's appends and other relays, no HTTP/2 request of its
//! own, answered on the stream's reply batches
//! ([`admit_raft::RaftNode::app_call`]; the peer serves it as it serves the
//! call below, `service::node::StreamRelays`). Measured on three nodes
//! sharing two cores, callers spread over them: 14-20 % more open-window
//! sends, 17-25 % more new conversations and 39-47 % more of the mixed load
//! than the lane alone (docs/benchmarks.md). Without an open stream (none
//! yet, or it broke: a stream still opening may lead to a node that is down,
//! and then whether a frame left would be unknown, where the call learns
//! "connection refused"), or to a peer of an older build, it takes the lane.
//!
//! Relayed requests to one peer share a lane (issue 14): a task that sends
//! what callers queued while its calls were under way as one
//! [`NodeReq::Batch`] frame, so that under load many forwarded sends cost
//! the peer one HTTP/2 request instead of one each. An idle lane sends a
//! request alone at once, as a plain call: batching adds no wait. Each
//! request keeps its own deadline, hop count and answer; the clock messages
//! (the nodes' own upkeep) always go alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::transport::Channel;

use admit_raft::{AppCallError, RaftNode};

use super::request::ReqInfo;
use crate::app::ShardApp;
use crate::error::{ApiError, RETRY_PEER_MS};
use crate::transport::dial::PeerDialer;
use crate::wire::pb::node_rpc_client::NodeRpcClient;
use crate::wire::{self, pb, BatchItem, Envelope, NodeRef, NodeReq, NodeResp};

/// Calls a lane keeps under way to its peer; requests queued meanwhile
/// wait for the next one and go together.
const LANE_CALLS: usize = 8;
/// Requests per batch at most.
const LANE_BATCH: usize = 64;
/// Requests waiting in a lane at most; past it a request goes alone.
const LANE_QUEUE: usize = 4_096;

type Key = (u64, String);

/// One lazily connected channel per peer (node id and peer address),
/// shared by all requests.
#[derive(Debug)]
pub struct Peers {
    clients: Mutex<HashMap<Key, NodeRpcClient<Channel>>>,
    lanes: Mutex<HashMap<Key, mpsc::Sender<Job>>>,
    dialer: PeerDialer,
    /// The largest node-to-node frame (a forwarded batch and its answers).
    max_frame: usize,
    /// This node's Raft node, whose node-pair streams carry relays when
    /// open (`None`: calls only).
    stream: Option<RaftNode<ShardApp>>,
}

/// A request waiting in a lane.
#[derive(Debug)]
struct Job {
    body: Vec<u8>,
    hops: u32,
    deadline: Instant,
    tx: oneshot::Sender<Result<Envelope, ApiError>>,
}

impl Peers {
    pub(crate) fn new(
        dialer: PeerDialer,
        max_frame: usize,
        stream: Option<RaftNode<ShardApp>>,
    ) -> Peers {
        Peers {
            clients: Mutex::default(),
            lanes: Mutex::default(),
            dialer,
            max_frame,
            stream,
        }
    }

    fn client(&self, node: &NodeRef) -> Result<NodeRpcClient<Channel>, ApiError> {
        let mut m = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let key = (node.id, node.addr.clone());
        if let Some(c) = m.get(&key) {
            return Ok(c.clone());
        }
        let ch = self
            .dialer
            .open(node.id, &node.addr)
            .map_err(ApiError::Internal)?;
        let c = NodeRpcClient::new(ch)
            .max_decoding_message_size(self.max_frame)
            .max_encoding_message_size(self.max_frame);
        m.insert(key, c.clone());
        Ok(c)
    }

    /// The lane to `node`, started on first use.
    fn lane(&self, node: &NodeRef) -> Result<mpsc::Sender<Job>, ApiError> {
        let key = (node.id, node.addr.clone());
        if let Some(l) = self
            .lanes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(l.clone());
        }
        let client = self.client(node)?;
        let mut m = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
        let tx = m.entry(key).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(LANE_QUEUE);
            let lane = Lane {
                client,
                addr: node.addr.clone(),
                max_frame: self.max_frame,
                batches: Arc::new(AtomicBool::new(true)),
            };
            tokio::spawn(lane.run(rx));
            tx
        });
        Ok(tx.clone())
    }

    /// Sends `req` to the node at `addr` as one more hop of the current
    /// request: on the node-pair stream this node keeps to it when one is
    /// open, else through the peer's lane. Transport failures:
    /// a refused connection is [`ApiError::NotLeader`] (certainly not
    /// applied); anything else is an unknown outcome
    /// ([`ApiError::Unavailable`]).
    pub async fn call(
        &self,
        node: &NodeRef,
        req: &NodeReq,
        info: ReqInfo,
    ) -> Result<Envelope, ApiError> {
        let left = info.left();
        if left.is_zero() {
            return Err(ApiError::unavailable(
                "deadline exceeded while forwarding",
                0,
            ));
        }
        let body = wire::encode(req)?;
        let hops = info.hops + 1;
        if matches!(req, NodeReq::SetClock { .. } | NodeReq::ReadClock) {
            return direct(self.client(node)?, &node.addr, body, hops, left).await;
        }
        let started = Instant::now();
        let body = match &self.stream {
            Some(raft) => match on_the_stream(raft, node, body, hops, left).await {
                Ok(r) => {
                    crate::telemetry::relayed_by("stream");
                    crate::telemetry::forward_took(started.elapsed());
                    return r;
                }
                Err(body) => body,
            },
            None => body,
        };
        crate::telemetry::relayed_by("call");
        let r = self.relay(node, body, hops, left).await;
        crate::telemetry::forward_took(started.elapsed());
        r
    }

    /// A relayed request through the peer's lane (alone when the lane is full).
    async fn relay(
        &self,
        node: &NodeRef,
        body: Vec<u8>,
        hops: u32,
        left: Duration,
    ) -> Result<Envelope, ApiError> {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            body,
            hops,
            deadline: Instant::now() + left,
            tx,
        };
        if let Err(e) = self.lane(node)?.try_send(job) {
            // a full (or stopped) lane: this one goes alone
            let job = e.into_inner();
            return direct(self.client(node)?, &node.addr, job.body, hops, left).await;
        }
        match tokio::time::timeout(left, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ApiError::unavailable(
                format!("forwarding to {} was dropped; outcome unknown, retry with the same idempotency key", node.addr),
                RETRY_PEER_MS,
            )),
            Err(_) => Err(ApiError::unavailable(
                format!("forwarding to {} timed out after {left:?}; outcome unknown, retry with the same idempotency key", node.addr),
                RETRY_PEER_MS,
            )),
        }
    }
}

/// One relayed request on the node-pair stream to `node` (batched with the
/// Raft messages and the other relays of that moment, no HTTP/2 request of
/// its own); the request's body back when nothing was sent (no stream open
/// now, or an older peer), for the lane.
async fn on_the_stream(
    raft: &RaftNode<ShardApp>,
    node: &NodeRef,
    body: Vec<u8>,
    hops: u32,
    left: Duration,
) -> Result<Result<Envelope, ApiError>, Vec<u8>> {
    let frame = pb::NodeFrame {
        body,
        hops,
        deadline_ms: left.as_millis() as u64,
    };
    let payload = prost::Message::encode_to_vec(&frame);
    match raft.app_call(node.id, payload, left).await {
        Ok(answer) => Ok(wire::decode(&answer)),
        Err(AppCallError::NotSent) => Err(frame.body),
        Err(AppCallError::Failed(s)) => Ok(Err(failed_call(&node.addr, &s))),
    }
}

/// One relayed request as a call of its own.
async fn direct(
    mut client: NodeRpcClient<Channel>,
    addr: &str,
    body: Vec<u8>,
    hops: u32,
    left: Duration,
) -> Result<Envelope, ApiError> {
    if left.is_zero() {
        return Err(ApiError::unavailable(
            "deadline exceeded while forwarding",
            0,
        ));
    }
    let frame = pb::NodeFrame {
        body,
        hops,
        deadline_ms: left.as_millis() as u64,
    };
    let mut r = tonic::Request::new(frame);
    r.set_timeout(left);
    match client.call(r).await {
        Ok(resp) => wire::decode(&resp.get_ref().body),
        Err(s) => Err(failed_call(addr, &s)),
    }
}

/// The sending side of one peer's lane.
struct Lane {
    client: NodeRpcClient<Channel>,
    addr: String,
    max_frame: usize,
    /// Cleared when the peer does not know batches (an older build during
    /// a rolling upgrade): its requests go alone from then on.
    batches: Arc<AtomicBool>,
}

impl Lane {
    async fn run(self, mut rx: mpsc::Receiver<Job>) {
        let lane = Arc::new(self);
        let slots = Arc::new(Semaphore::new(LANE_CALLS));
        // the frame's own fields and the items' framing: room to spare
        let budget = lane.max_frame / 2;
        while let Some(first) = rx.recv().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut bytes = first.body.len();
            let mut jobs = vec![first];
            while jobs.len() < LANE_BATCH && bytes < budget {
                match rx.try_recv() {
                    Ok(j) if bytes + j.body.len() > budget => {
                        // too large to join: alone, beside the batch
                        let l = lane.clone();
                        tokio::spawn(async move { l.send(vec![j]).await });
                        break;
                    }
                    Ok(j) => {
                        bytes += j.body.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
            // callers that gave up while they waited: nothing to send for them
            jobs.retain(|j| !j.tx.is_closed());
            if jobs.is_empty() {
                continue;
            }
            let l = lane.clone();
            tokio::spawn(async move {
                l.send(jobs).await;
                drop(slot);
            });
        }
    }

    /// Sends `jobs` (one alone, several as a batch) and answers each.
    async fn send(&self, jobs: Vec<Job>) {
        let now = Instant::now();
        if jobs.len() == 1 || !self.batches.load(Ordering::Relaxed) {
            join_all(jobs.into_iter().map(|j| async move {
                let left = j.deadline.saturating_duration_since(now);
                let r = direct(self.client.clone(), &self.addr, j.body, j.hops, left).await;
                let _ = j.tx.send(r);
            }))
            .await;
            return;
        }
        let left = jobs
            .iter()
            .map(|j| j.deadline.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        let items = jobs
            .iter()
            .map(|j| BatchItem {
                body: j.body.clone(),
                deadline_ms: j.deadline.saturating_duration_since(now).as_millis() as u64,
                hops: j.hops,
            })
            .collect();
        let hops = jobs.iter().map(|j| j.hops).max().unwrap_or(1);
        let r = match wire::encode(&NodeReq::Batch { items }) {
            Ok(body) => direct(self.client.clone(), &self.addr, body, hops, left).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(Envelope {
                result: Ok(NodeResp::Batch(answers)),
                ..
            }) if answers.len() == jobs.len() => {
                for (j, a) in jobs.into_iter().zip(answers) {
                    let _ = j.tx.send(Ok(a));
                }
            }
            // an older peer: nothing was done; each goes alone, now and later
            Err(ApiError::UnknownKind(_)) => {
                self.batches.store(false, Ordering::Relaxed);
                tracing::info!(peer = %self.addr, "the peer does not take batched requests; sending them one by one");
                Box::pin(self.send(jobs)).await;
            }
            Ok(Envelope { result: Ok(r), .. }) => {
                let e = ApiError::Internal(format!(
                    "a batch of {} answered with {}",
                    jobs.len(),
                    match r {
                        NodeResp::Batch(a) => format!("{} answers", a.len()),
                        other => format!("{other:?}"),
                    }
                ));
                for j in jobs {
                    let _ = j.tx.send(Err(e.clone()));
                }
            }
            Ok(Envelope { result: Err(e), .. }) | Err(e) => {
                for j in jobs {
                    let _ = j.tx.send(Err(e.clone()));
                }
            }
        }
    }
}

/// What a failed relay means. Only a refused connection proves that nothing
/// was sent (so nothing applied): [`ApiError::NotLeader`]. Anything else,
/// whatever its text says, is an unknown outcome.
fn failed_call(addr: &str, s: &tonic::Status) -> ApiError {
    // the peer could not read the request's kind (an older build): nothing done
    if wire::unknown_kind_answer(s) {
        return ApiError::UnknownKind(format!("{addr} answered {}", s.message()));
    }
    if connection_refused(s) {
        return ApiError::NotLeader {
            leader_id: None,
            leader_addr: None,
        };
    }
    ApiError::unavailable(
        format!(
            "forwarding to {addr} failed ({}: {}); outcome unknown, retry with the same idempotency key",
            s.code(),
            s.message()
        ),
        RETRY_PEER_MS,
    )
}

/// A typed signal, not the error's text: an `io::Error` of kind
/// `ConnectionRefused` in the status' source chain (the transport could not
/// connect).
fn connection_refused(s: &tonic::Status) -> bool {
    let mut e: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(err) = e {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        e = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::NodeReq;

    /// A peer that does not know the request's kind (UNIMPLEMENTED, or the
    /// decode failure of builds before that answer) did nothing: not an
    /// unknown outcome; damaged bytes stay one.
    #[test]
    fn an_unknown_kind_is_told_apart_from_a_failed_relay() {
        let older = ApiError::Internal(format!("decode: {}", postcard::Error::SerdeDeCustom));
        for s in [
            tonic::Status::unimplemented("unknown request kind"),
            older.into_status(),
        ] {
            let e = failed_call("h:1", &s);
            assert!(matches!(e, ApiError::UnknownKind(_)), "{e:?}");
        }
        let damaged = ApiError::Internal("decode: Hit the end of buffer".into()).into_status();
        assert!(matches!(
            failed_call("h:1", &damaged),
            ApiError::Unavailable { .. }
        ));
    }

    #[test]
    fn an_answer_that_speaks_of_refusal_is_an_unknown_outcome() {
        for text in [
            "policy refused by the peer",
            "connect error: connection refused",
        ] {
            let s = tonic::Status::unavailable(text);
            assert!(
                matches!(failed_call("h:1", &s), ApiError::Unavailable { .. }),
                "{text}"
            );
        }
    }

    /// A peer that answers each relayed read with its shard (as a clock)
    /// after a pause, and counts the frames it got; `old`: a build that does
    /// not know batches.
    #[derive(Clone, Default)]
    struct Mock {
        frames: Arc<std::sync::atomic::AtomicUsize>,
        batches: Arc<std::sync::atomic::AtomicUsize>,
        old: bool,
    }

    fn answer(req: NodeReq) -> Envelope {
        match req {
            NodeReq::Read { shard, .. } => Envelope {
                result: Ok(NodeResp::Clock(admit_core::Ts(u64::from(shard)))),
                served_by: None,
            },
            other => Envelope::refused(ApiError::Internal(format!("{other:?}"))),
        }
    }

    #[tonic::async_trait]
    impl pb::node_rpc_server::NodeRpc for Mock {
        async fn call(
            &self,
            r: tonic::Request<pb::NodeFrame>,
        ) -> Result<tonic::Response<pb::NodeFrame>, tonic::Status> {
            self.frames.fetch_add(1, Ordering::Relaxed);
            let frame = r.into_inner();
            let req: NodeReq = wire::decode(&frame.body)?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let env = match req {
                NodeReq::Batch { .. } if self.old => {
                    return Err(ApiError::UnknownKind("an older build".into()).into())
                }
                NodeReq::Batch { items } => {
                    self.batches.fetch_add(1, Ordering::Relaxed);
                    let answers = items
                        .into_iter()
                        .map(|i| answer(wire::decode(&i.body).unwrap()))
                        .collect();
                    Envelope {
                        result: Ok(NodeResp::Batch(answers)),
                        served_by: None,
                    }
                }
                req => answer(req),
            };
            Ok(tonic::Response::new(pb::NodeFrame {
                body: wire::encode(&env)?,
                hops: frame.hops,
                deadline_ms: 0,
            }))
        }
    }

    /// Relays `n` reads at once to `mock`; each caller's answer (its shard).
    async fn relay_many(mock: Mock, n: u32) -> Vec<u64> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let limits = crate::transport::Limits::api();
        let (conns, accept) = crate::transport::listen::incoming(listener, "test", None, &limits);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::node_rpc_server::NodeRpcServer::new(mock))
                .serve_with_incoming(conns),
        );
        let peers = Arc::new(Peers::new(PeerDialer { tls: None }, 4 << 20, None));
        let node = NodeRef { id: 2, addr };
        let calls = (0..n).map(|shard| {
            let (peers, node) = (peers.clone(), node.clone());
            tokio::spawn(async move {
                let req = NodeReq::Read {
                    shard,
                    read: crate::wire::ReadReq::Policy { name: "p".into() },
                };
                let info = ReqInfo::current().within(Duration::from_secs(10));
                match peers.call(&node, &req, info).await.unwrap().result {
                    Ok(NodeResp::Clock(t)) => t.0,
                    other => panic!("shard {shard}: {other:?}"),
                }
            })
        });
        let got = join_all(calls)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        server.abort();
        accept.abort();
        got
    }

    /// Issue 14: requests relayed to one peer at once share frames, and
    /// each caller gets its own answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_relays_to_one_peer_share_frames() {
        let mock = Mock::default();
        let got = relay_many(mock.clone(), 200).await;
        assert_eq!(
            got,
            (0..200).collect::<Vec<u64>>(),
            "each caller its own answer"
        );
        let frames = mock.frames.load(Ordering::Relaxed);
        assert!(frames < 100, "{frames} frames for 200 relayed requests");
        assert!(mock.batches.load(Ordering::Relaxed) > 0);
    }

    /// A peer of an older build refuses the batch as unknown: nothing was
    /// done there, and every request is answered, each sent alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_without_batches_gets_each_request_alone() {
        let mock = Mock {
            old: true,
            ..Mock::default()
        };
        let got = relay_many(mock.clone(), 50).await;
        assert_eq!(got, (0..50).collect::<Vec<u64>>());
        assert_eq!(mock.batches.load(Ordering::Relaxed), 0);
        assert!(mock.frames.load(Ordering::Relaxed) >= 50);
    }

    #[tokio::test]
    async fn a_refused_connection_applied_nothing() {
        // a port nothing listens on any more
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let peers = Peers::new(PeerDialer { tls: None }, 4 << 20, None);
        let req = NodeReq::SetClock {
            now: admit_core::Ts(0),
        };
        let info = ReqInfo::current().within(std::time::Duration::from_secs(5));
        let node = NodeRef { id: 2, addr };
        let r = peers.call(&node, &req, info).await;
        assert!(
            matches!(r, Err(ApiError::NotLeader { .. })),
            "{:?}",
            r.err()
        );
    }
}
