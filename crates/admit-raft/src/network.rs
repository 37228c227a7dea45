//! Raft transport over gRPC (tonic): one HTTP/2 channel per destination node,
//! shared by every Raft group; each message names its group. Raft messages are
//! postcard-encoded openraft structures inside `proto/admit/internal/raft.proto`
//! frames. They travel on the node-pair stream of `pipe` (batched, snapshots
//! in pieces); a peer without that stream gets one unary `Call` each, and
//! the node-level requests (metadata writes, status, identity) are unary.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::impls::BasicNode;
use openraft::network::RaftNetworkV2;
use openraft::network::{stream_append_sequential, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::OptionalSend;
use openraft_multi::{GroupNetworkAdapter, GroupRouter};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use crate::checks::{self, Who};
use crate::cluster::{meta_write_local, Identity, MetaCmd, MetaFwd, Registry, ShardInfo};
use crate::journal::io_err;
use crate::pb::raft_transport_client::RaftTransportClient;
use crate::pb::raft_transport_server::RaftTransport;
use crate::pb::{RaftBatch, RaftFrame, RaftFrameReply, RaftReply, RaftRequest, RaftRpcKind};
use crate::pipe::{
    self, lacks_kind, Frames, Incarnations, Message, PeerCheck, PeerNode, Pipes, CHUNK,
};
use crate::sm::GroupRaft;
use crate::store::{decode, encode};
use crate::types::{SnapshotMetaT, SnapshotT, VoteT, C};
use crate::App;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a node opens a channel to another node's peer port (node id and its
/// peer address). The server supplies one that speaks mutual TLS; without
/// one, channels are plain HTTP/2.
pub trait Dialer: std::fmt::Debug + Send + Sync + 'static {
    /// A lazily connecting channel to `node` at `addr` (`host:port`).
    fn channel(&self, node: u64, addr: &str) -> Result<Channel, String>;
}

/// Plain HTTP/2, connected on first use.
fn plain_channel(addr: &str) -> Result<Channel, String> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .connect_lazy())
}

struct RouterInner {
    /// node id -> (address, lazily connected channel)
    peers: Mutex<HashMap<u64, (String, RaftTransportClient<Channel>)>>,
    /// Test switch: drop every outgoing and incoming RPC of this node.
    isolated: Arc<AtomicBool>,
    /// Test switch: refuse incoming pipelined appends as a build without
    /// them does (a rolling upgrade's older peer).
    no_pipelined: Arc<AtomicBool>,
    /// Test switch: serve no node-pair stream, as a build without one does.
    no_stream: Arc<AtomicBool>,
    /// Test switch: refuse the service's requests on the stream, as a build
    /// without them does.
    no_app: Arc<AtomicBool>,
    /// Opens channels to peers (mutual TLS); `None`: plain.
    dialer: Option<Arc<dyn Dialer>>,
    /// Largest message sent or received.
    max_message: usize,
    /// This node's cluster id (0: not known yet), stamped on every request.
    cluster: Arc<AtomicU64>,
    /// The pause before a replication retries after a failed append: starts
    /// at the first, doubles, never above the second (see `backoff`).
    retry: (Duration, Duration),
    /// The data dir incarnations the peers answered with (see `pipe`).
    incarnations: Arc<Incarnations>,
    /// The node-pair streams.
    pipes: Pipes,
    /// Pipelined appends sent, and the most one session had unanswered at
    /// once.
    pipelined: AtomicU64,
    pipelined_peak: AtomicU64,
    /// Commit notes not sent: folded into the next append.
    notes_folded: Arc<AtomicU64>,
}

/// Connection pool shared by all groups of a node.
pub(crate) struct GrpcRouter<A> {
    inner: Arc<RouterInner>,
    /// The clients openraft's heartbeat worker uses: their appends without
    /// entries are heartbeats, which may wait for other groups'.
    heartbeats: bool,
    _app: PhantomData<fn() -> A>,
}

impl<A> Clone for GrpcRouter<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            heartbeats: self.heartbeats,
            _app: PhantomData,
        }
    }
}

impl<A> std::fmt::Debug for GrpcRouter<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcRouter").finish_non_exhaustive()
    }
}

impl<A: App> GrpcRouter<A> {
    /// `heartbeat`: the groups' heartbeat interval (heartbeats to one peer
    /// are gathered for half of it); `election_min`: the shortest election
    /// timeout (bounds the replication retry pause).
    pub(crate) fn new(
        dialer: Option<Arc<dyn Dialer>>,
        max_message: usize,
        heartbeat: Duration,
        election_min: Duration,
    ) -> Self {
        let cluster = Arc::new(AtomicU64::new(0));
        let incarnations = Arc::<Incarnations>::default();
        Self {
            inner: Arc::new(RouterInner {
                peers: Mutex::default(),
                isolated: Arc::default(),
                no_pipelined: Arc::default(),
                no_stream: Arc::default(),
                no_app: Arc::default(),
                dialer,
                max_message,
                pipes: Pipes::new(
                    heartbeat,
                    max_message,
                    cluster.clone(),
                    incarnations.clone(),
                ),
                cluster,
                retry: retry_pauses(heartbeat, election_min),
                incarnations,
                pipelined: AtomicU64::new(0),
                notes_folded: Arc::default(),
                pipelined_peak: AtomicU64::new(0),
            }),
            heartbeats: false,
            _app: PhantomData,
        }
    }

    /// A request of the service above (`RaftRpcKind::App`) to `target` on
    /// the node-pair stream, and its answer (see [`AppCallError`]).
    pub(crate) async fn app_call(
        &self,
        target: u64,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<Vec<u8>, AppCallError> {
        if self.inner.isolated.load(Ordering::Relaxed) || self.inner.pipes.legacy(target) {
            return Err(AppCallError::NotSent);
        }
        let msg = Message {
            group: 0,
            kind: RaftRpcKind::App,
            payload,
            heartbeat: false,
        };
        let Some(wait) = self.inner.pipes.post_established(target, msg, ttl) else {
            return Err(AppCallError::NotSent);
        };
        match wait.await {
            Ok(r) => Ok(r),
            // an older peer refused the kind before doing anything (its
            // stream remembers: `Pipes::post_established`)
            Err(s) if lacks_kind(&s) => Err(AppCallError::NotSent),
            Err(s) => Err(AppCallError::Failed(s)),
        }
    }

    /// Closes the node-pair streams both ways (the node stops); Raft
    /// messages sent after this fail.
    pub(crate) fn close(&self) {
        self.inner.pipes.close();
    }

    /// Pipelined appends sent so far, and the most one replication session
    /// had unanswered at once.
    pub(crate) fn pipelined_counts(&self) -> (u64, u64) {
        (
            self.inner.pipelined.load(Ordering::Relaxed),
            self.inner.pipelined_peak.load(Ordering::Relaxed),
        )
    }

    /// Commit notes folded into a later append so far.
    pub(crate) fn notes_folded(&self) -> u64 {
        self.inner.notes_folded.load(Ordering::Relaxed)
    }

    /// Batches and frames sent on the node-pair streams so far.
    pub(crate) fn stream_counts(&self) -> (u64, u64) {
        let s = &self.inner.pipes.stats;
        (
            s.batches.load(Ordering::Relaxed),
            s.frames.load(Ordering::Relaxed),
        )
    }

    /// The signal incoming node-pair streams end on.
    pub(crate) fn closed(&self) -> watch::Receiver<bool> {
        self.inner.pipes.closed()
    }

    /// The same connection pool, typed for another App (the metadata group).
    pub(crate) fn retype<B>(&self) -> GrpcRouter<B> {
        GrpcRouter {
            inner: self.inner.clone(),
            heartbeats: false,
            _app: PhantomData,
        }
    }

    /// The isolation switch shared with the gRPC service.
    pub(crate) fn isolated(&self) -> Arc<AtomicBool> {
        self.inner.isolated.clone()
    }

    /// The switch that makes this node refuse pipelined appends.
    pub(crate) fn no_pipelined(&self) -> Arc<AtomicBool> {
        self.inner.no_pipelined.clone()
    }

    /// The switch that makes this node serve no node-pair stream.
    pub(crate) fn no_stream(&self) -> Arc<AtomicBool> {
        self.inner.no_stream.clone()
    }

    pub(crate) fn no_app(&self) -> Arc<AtomicBool> {
        self.inner.no_app.clone()
    }

    /// The peers whose open stream refused a request of the service above
    /// (an older build), in id order.
    pub(crate) fn refusing_app(&self) -> Vec<u64> {
        self.inner.pipes.refusing_app()
    }

    /// Peers spoken to with unary calls (they serve no node-pair stream).
    pub(crate) fn on_unary_calls(&self) -> Vec<u64> {
        self.inner.pipes.legacy_peers()
    }

    /// How long a peer without a stream gets unary calls before a stream
    /// is tried again.
    pub(crate) fn set_stream_retry(&self, after: Duration) {
        self.inner.pipes.set_stream_retry(after);
    }

    /// Peers that are sent one append at a time, having refused a
    /// pipelined one.
    pub(crate) fn one_at_a_time(&self) -> Vec<u64> {
        self.inner.pipes.one_at_a_time_peers()
    }

    /// The data dir incarnations the peers answered with.
    pub(crate) fn incarnations(&self) -> Arc<Incarnations> {
        self.inner.incarnations.clone()
    }

    /// The cluster id cell stamped on outgoing requests.
    pub(crate) fn cluster(&self) -> Arc<AtomicU64> {
        self.inner.cluster.clone()
    }

    /// Known address of `node`.
    pub(crate) fn addr(&self, node: u64) -> Option<String> {
        lock(&self.inner.peers).get(&node).map(|(a, _)| a.clone())
    }

    /// Register (or update) the address of `node`. A changed address replaces the channel.
    pub(crate) fn set_addr(&self, node: u64, addr: &str) -> Result<(), String> {
        let mut peers = lock(&self.inner.peers);
        if peers.get(&node).is_some_and(|(a, _)| a == addr) {
            return Ok(());
        }
        let channel = match &self.inner.dialer {
            Some(d) => d.channel(node, addr)?,
            None => plain_channel(addr)?,
        };
        let client = RaftTransportClient::new(channel)
            .max_decoding_message_size(self.inner.max_message)
            .max_encoding_message_size(self.inner.max_message);
        peers.insert(node, (addr.to_string(), client));
        drop(peers);
        self.inner.pipes.reset(node);
        Ok(())
    }

    fn client(&self, node: u64) -> Result<RaftTransportClient<Channel>, RPCError<C<A>>> {
        lock(&self.inner.peers)
            .get(&node)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| {
                RPCError::Unreachable(Unreachable::new(&io_err(format!(
                    "no address for node {node}"
                ))))
            })
    }

    pub(crate) async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: u64,
        group: u32,
        kind: RaftRpcKind,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<C<A>>> {
        if self.inner.isolated.load(Ordering::Relaxed) {
            return Err(RPCError::Unreachable(Unreachable::new(&io_err(
                "node isolated (test switch)",
            ))));
        }
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self.client(target)?;
        let request = RaftRequest {
            group,
            kind: kind as i32,
            payload,
            cluster: self.inner.cluster.load(Ordering::Acquire),
        };
        let reply = match tokio::time::timeout(ttl, client.call(request)).await {
            Err(_) => {
                return Err(RPCError::Unreachable(Unreachable::new(&io_err(format!(
                    "rpc to node {target} timed out after {ttl:?}"
                )))))
            }
            Ok(Err(status)) => return Err(RPCError::Unreachable(Unreachable::new(&status))),
            Ok(Ok(r)) => r.into_inner(),
        };
        self.inner
            .incarnations
            .check(target, reply.incarnation)
            .map_err(|s| RPCError::Unreachable(Unreachable::new(&s)))?;
        let res: Result<Resp, String> =
            decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::Network(NetworkError::new(&io_err(e))))
    }

    /// One Raft message on the node-pair stream to `target` (a unary call
    /// to a peer without one). `heartbeat`: an append with no entries,
    /// which may wait briefly for the heartbeats of other groups.
    pub(crate) async fn frame<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: u64,
        group: u32,
        kind: RaftRpcKind,
        req: &Req,
        heartbeat: bool,
        ttl: Duration,
    ) -> Result<Resp, RPCError<C<A>>> {
        if self.inner.pipes.legacy(target) {
            return self.call(target, group, kind, req, ttl).await;
        }
        if self.inner.isolated.load(Ordering::Relaxed) {
            return Err(RPCError::Unreachable(Unreachable::new(&io_err(
                "node isolated (test switch)",
            ))));
        }
        let msg = Message {
            group,
            kind,
            payload: encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?,
            heartbeat,
        };
        let client = || self.client(target).ok();
        let reply = match self.inner.pipes.send(target, client, msg, ttl).await {
            Ok(r) => r,
            // trying the stream again found the peer still without one: this
            // message goes as a unary call, as the next ones will (pieces of
            // a snapshot cannot: the snapshot is sent again, whole)
            Err(s)
                if s.code() == tonic::Code::Unimplemented
                    && self.inner.pipes.legacy(target)
                    && !matches!(
                        kind,
                        RaftRpcKind::SnapshotChunk | RaftRpcKind::SnapshotInstall
                    ) =>
            {
                return self.call(target, group, kind, req, ttl).await;
            }
            Err(s) => return Err(RPCError::Unreachable(Unreachable::new(&s))),
        };
        let res: Result<Resp, String> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::Network(NetworkError::new(&io_err(e))))
    }

    /// A snapshot in pieces on the node-pair stream, then its install.
    async fn snapshot_in_pieces(
        &self,
        target: u64,
        group: u32,
        vote: VoteT<A>,
        snapshot: SnapshotT<A>,
        ttl: Duration,
    ) -> Result<SnapshotResponse<C<A>>, RPCError<C<A>>> {
        let id = self.inner.pipes.snapshot_id();
        let data = snapshot.snapshot;
        let total = data.len() as u64;
        let size = CHUNK.min(self.inner.max_message / 2).max(1);
        let mut offset = 0u64;
        for piece in data.chunks(size) {
            let req = (id, offset, total, piece);
            self.frame::<_, ()>(target, group, RaftRpcKind::SnapshotChunk, &req, false, ttl)
                .await?;
            offset += piece.len() as u64;
        }
        let req = ((id, total), vote, snapshot.meta);
        self.frame(
            target,
            group,
            RaftRpcKind::SnapshotInstall,
            &req,
            false,
            ttl,
        )
        .await
    }
}

/// The first and the longest pause of a replication retrying after a
/// failed append: a heartbeat, doubling up to half the shortest election
/// timeout.
fn retry_pauses(heartbeat: Duration, election_min: Duration) -> (Duration, Duration) {
    let first = heartbeat.max(Duration::from_millis(1));
    (first, (election_min / 2).max(first))
}

impl<A: App> GroupRouter<C<A>, u32> for GrpcRouter<A> {
    type SnapshotData = Vec<u8>;

    /// Bounded, unlike openraft's default series (200 ms doubling without
    /// end): with pauses past about twice the election timeout, a leader's
    /// appends to a follower whose answers had timed out never resumed in
    /// some groups while heartbeats went on (simulation seed 1043 with
    /// moves: the follower never learned it was leaving). A retry is one
    /// frame on the node-pair stream, so retrying every few hundred ms
    /// costs little.
    fn backoff(&self) -> Option<openraft::network::Backoff> {
        let (first, cap) = self.inner.retry;
        let pauses = std::iter::successors(Some(first), move |d| Some((*d * 2).min(cap)));
        Some(openraft::network::Backoff::new(pauses))
    }

    async fn append_entries(
        &self,
        target: u64,
        group_id: u32,
        rpc: AppendEntriesRequest<C<A>>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C<A>>, RPCError<C<A>>> {
        let heartbeat = self.heartbeats && rpc.entries.is_empty();
        self.frame(
            target,
            group_id,
            RaftRpcKind::AppendEntries,
            &rpc,
            heartbeat,
            option.hard_ttl(),
        )
        .await
    }

    async fn vote(
        &self,
        target: u64,
        group_id: u32,
        rpc: VoteRequest<C<A>>,
        option: RPCOption,
    ) -> Result<VoteResponse<C<A>>, RPCError<C<A>>> {
        let ttl = option.hard_ttl();
        self.frame(target, group_id, RaftRpcKind::Vote, &rpc, false, ttl)
            .await
    }

    async fn pre_vote(
        &self,
        target: u64,
        group_id: u32,
        rpc: VoteRequest<C<A>>,
        option: RPCOption,
    ) -> Result<VoteResponse<C<A>>, RPCError<C<A>>> {
        let ttl = option.hard_ttl();
        self.frame(target, group_id, RaftRpcKind::PreVote, &rpc, false, ttl)
            .await
    }

    async fn full_snapshot(
        &self,
        target: u64,
        group_id: u32,
        vote: VoteT<A>,
        snapshot: SnapshotT<A>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C<A>>, StreamingError<C<A>>> {
        // Snapshots may be large: allow a generous multiple of the soft TTL
        // (per piece on the stream, for the whole of a unary call).
        let ttl = option.hard_ttl().max(Duration::from_secs(30));
        if self.inner.pipes.legacy(target) {
            let req = (vote, snapshot.meta, snapshot.snapshot);
            return tokio::select! {
                closed = cancel => Err(StreamingError::Closed(closed)),
                r = self.call(target, group_id, RaftRpcKind::FullSnapshot, &req, ttl) => r.map_err(StreamingError::from),
            };
        }
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = self.snapshot_in_pieces(target, group_id, vote, snapshot, ttl) => r.map_err(StreamingError::from),
        }
    }

    async fn transfer_leader(
        &self,
        target: u64,
        group_id: u32,
        req: TransferLeaderRequest<C<A>>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C<A>>, RPCError<C<A>>> {
        let ttl = option.hard_ttl();
        self.frame(
            target,
            group_id,
            RaftRpcKind::TransferLeader,
            &req,
            false,
            ttl,
        )
        .await
    }
}

/// A pipelined append's answer, as openraft's replication takes it.
type Answer<A> = Result<StreamAppendResult<C<A>>, RPCError<C<A>>>;

/// Replication messages in flight at once to one follower of one group.
const PIPELINE: usize = 16;

/// How long an append without entries (a new commit index, nothing else) is
/// held back for the group's next append, which would carry the same index.
const COMMIT_NOTE_HOLD: Duration = Duration::from_millis(2);

/// openraft follows every commit that finds no new entry to send with an
/// append that carries only the commit index. In a busy group the next
/// entries come a moment later and carry that index too, so such a note
/// doubled the messages (measured: 45 % of a busy cluster's appends),
/// each a round through the follower's Raft core and an answer.
///
/// This stream holds a note back for up to `hold`: if a later request comes
/// first, the note is dropped (the later one carries a commit index at
/// least as new, and its answer acknowledges the note too: openraft matches
/// answers to requests by log id, and a note's is the later request's
/// `prev_log_id` or before it); otherwise it goes as it was. A session's
/// first request is never held: it may be a probe that the session waits
/// for. Holding a note only delays what a follower knows is committed (it
/// applies later); the leader's own commit and answers do not wait, and
/// since openraft times an acknowledgement from when it produced the
/// request, the lease an answer grants is never longer for the hold.
/// `folded` counts the notes dropped.
fn fold_commit_notes<A: App, S>(
    input: S,
    hold: Duration,
    folded: Arc<AtomicU64>,
) -> impl futures_util::Stream<Item = AppendEntriesRequest<C<A>>>
where
    S: futures_util::Stream<Item = AppendEntriesRequest<C<A>>> + Unpin,
{
    use futures_util::StreamExt;
    futures_util::stream::unfold((input.fuse(), true), move |(mut input, first)| {
        let folded = folded.clone();
        async move {
            let mut held: Option<AppendEntriesRequest<C<A>>> = None;
            loop {
                let next = match &held {
                    None => input.next().await,
                    Some(_) => match tokio::time::timeout(hold, input.next()).await {
                        Ok(next) => next,
                        // nothing followed in time: the note goes
                        Err(_) => return held.map(|note| (note, (input, false))),
                    },
                };
                let fold = |held: &Option<_>| {
                    if held.is_some() {
                        folded.fetch_add(1, Ordering::Relaxed);
                    }
                };
                match next {
                    // a later note replaces the held one
                    Some(rpc) if rpc.entries.is_empty() && !first => {
                        fold(&held);
                        held = Some(rpc);
                    }
                    // the held note, if any, is dropped: `rpc` carries its news
                    Some(rpc) => {
                        fold(&held);
                        return Some((rpc, (input, false)));
                    }
                    None => return held.map(|note| (note, (input, false))),
                }
            }
        }
    })
}

/// What openraft uses to reach one peer for one group: openraft-multi's
/// adapter for every message, except that replication is pipelined on the
/// node-pair stream. openraft's default sends one append and waits for its
/// answer (the follower's fsync included) before the next, and every commit
/// is followed by an append that only carries the commit index, so a busy
/// group's entries waited in line behind round trips.
pub(crate) struct GroupNet<A: App> {
    inner: GroupNetworkAdapter<C<A>, u32, GrpcRouter<A>>,
    router: GrpcRouter<A>,
    target: u64,
    group: u32,
}

impl<A: App> RaftNetworkV2<C<A>> for GroupNet<A> {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C<A>>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C<A>>, RPCError<C<A>>> {
        self.inner.append_entries(rpc, option).await
    }

    /// Each request is queued on the stream as soon as openraft gives it
    /// (so frames leave in its order), up to [`PIPELINE`] unanswered; the
    /// receiver hands them to the group in that order (`AppendSessions`)
    /// and the answers come back in it. The stream ends after the first
    /// answer that is not a full success, as openraft's sequential version
    /// does. A peer without a stream, or one that refuses the frame kind,
    /// gets that sequential version.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<C<A>>, RPCError<C<A>>>>, RPCError<C<A>>>,
    >
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<C<A>>> + OptionalSend + Unpin + 'static,
    {
        let target = self.target;
        if self.router.heartbeats
            || self.router.inner.pipes.legacy(target)
            || self.router.inner.pipes.one_at_a_time(target)
        {
            return stream_append_sequential(self, input, option);
        }
        let (router, group, ttl) = (self.router.clone(), self.group, option.hard_ttl());
        Box::pin(async move {
            use futures_util::StreamExt;
            let unanswered = Arc::new(AtomicU64::new(0));
            let folded = router.inner.notes_folded.clone();
            let answers = Box::pin(fold_commit_notes::<A, S>(input, COMMIT_NOTE_HOLD, folded))
                .map(move |rpc| {
                    // the last log id the append covers (openraft's
                    // `log_id_range().last`, which is crate-private)
                    let last = rpc
                        .entries
                        .last()
                        .map(openraft::entry::RaftEntry::log_id)
                        .or(rpc.prev_log_id);
                    let answer = router.post_append(target, group, &rpc, ttl);
                    let now = unanswered.fetch_add(1, Ordering::Relaxed) + 1;
                    let stats = &router.inner;
                    stats.pipelined.fetch_add(1, Ordering::Relaxed);
                    stats.pipelined_peak.fetch_max(now, Ordering::Relaxed);
                    let unanswered = unanswered.clone();
                    // docs/metrics.md: an append's way to the follower and back
                    let timed = (!rpc.entries.is_empty()).then(std::time::Instant::now);
                    async move {
                        let answer = answer.await;
                        if let Some(t) = timed {
                            metrics::histogram!("admit_raft_append_round_trip_seconds")
                                .record(t.elapsed().as_secs_f64());
                        }
                        unanswered.fetch_sub(1, Ordering::Relaxed);
                        (last, answer)
                    }
                })
                .buffered(PIPELINE)
                .scan(true, |going, (last, answer)| {
                    if !*going {
                        return std::future::ready(None);
                    }
                    let out = match answer {
                        Ok(r) => {
                            // a partial success also ends the session
                            *going = matches!(&r, Ok(got) if *got == last);
                            Ok(r)
                        }
                        Err(e) => {
                            *going = false;
                            Err(e)
                        }
                    };
                    std::future::ready(Some(out))
                });
            let answers: BoxStream<'s, _> = Box::pin(answers);
            Ok(answers)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C<A>>,
        option: RPCOption,
    ) -> Result<VoteResponse<C<A>>, RPCError<C<A>>> {
        self.inner.vote(rpc, option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C<A>>,
        option: RPCOption,
    ) -> Result<VoteResponse<C<A>>, RPCError<C<A>>> {
        self.inner.pre_vote(rpc, option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteT<A>,
        snapshot: SnapshotT<A>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C<A>>, StreamingError<C<A>>> {
        self.inner
            .full_snapshot(vote, snapshot, cancel, option)
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C<A>>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C<A>>, RPCError<C<A>>> {
        self.inner.transfer_leader(req, option).await
    }

    fn backoff(&self) -> Option<openraft::network::Backoff> {
        RaftNetworkV2::backoff(&self.inner)
    }
}

impl<A: App> GrpcRouter<A> {
    /// Queues one pipelined append for `target` now and returns the wait
    /// for its answer.
    fn post_append(
        &self,
        target: u64,
        group: u32,
        rpc: &AppendEntriesRequest<C<A>>,
        ttl: Duration,
    ) -> BoxFuture<'static, Answer<A>> {
        // checked before anything is queued: an isolated node sends nothing
        let isolated = self.inner.isolated.load(Ordering::Relaxed);
        let queued = encode(rpc).map(|payload| {
            if isolated {
                return None;
            }
            let msg = Message {
                group,
                kind: RaftRpcKind::StreamAppend,
                payload,
                heartbeat: false,
            };
            let client = || self.client(target).ok();
            Some(self.inner.pipes.post(target, client, msg, ttl))
        });
        let inner = self.inner.clone();
        Box::pin(async move {
            let wait = queued.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            let Some(wait) = wait else {
                return Err(RPCError::Unreachable(Unreachable::new(&io_err(
                    "node isolated (test switch)",
                ))));
            };
            let reply = wait.await.map_err(|s| {
                if lacks_kind(&s) {
                    inner.pipes.refused_pipelining(target);
                }
                RPCError::Unreachable(Unreachable::new(&s))
            })?;
            let res: Result<StreamAppendResult<C<A>>, String> =
                decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
            res.map_err(|e| RPCError::Network(NetworkError::new(&io_err(e))))
        })
    }
}

/// What a build without the node-pair stream answers when one is opened.
fn no_stream() -> tonic::Status {
    tonic::Status::unimplemented("no raft stream (test switch)")
}

/// Per-group network factory handed to openraft.
pub(crate) struct NetFactory<A> {
    pub(crate) router: GrpcRouter<A>,
    pub(crate) group: u32,
}

impl<A: App> RaftNetworkFactory<C<A>> for NetFactory<A> {
    type Network = GroupNet<A>;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        if let Err(e) = self.router.set_addr(target, &node.addr) {
            tracing::warn!(target, addr = %node.addr, error = %e, "bad raft peer address");
        }
        GroupNet {
            inner: GroupNetworkAdapter::new(self.router.clone(), target, self.group),
            router: self.router.clone(),
            target,
            group: self.group,
        }
    }

    /// Heartbeats and lease probes: the same stream, marked so that the
    /// heartbeats of many groups to one peer leave together.
    async fn new_heartbeat_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        let mut router = self.router.clone();
        router.heartbeats = true;
        let _ = self.new_client(target, node).await;
        GroupNet {
            inner: GroupNetworkAdapter::new(router.clone(), target, self.group),
            router,
            target,
            group: self.group,
        }
    }
}

/// Why a request of the service above did not come back answered on the
/// node-pair stream ([`RaftNode::app_call`](crate::RaftNode::app_call)).
#[derive(Debug)]
pub enum AppCallError {
    /// Nothing reached the peer's service: no stream to it is open now, it
    /// is an older build without the kind, or this node is cut off (a test
    /// switch). The caller may send the request its own way.
    NotSent,
    /// The frame may have reached the peer and been served: the stream broke,
    /// the wait ran out, or the peer refused the frame (the status says
    /// which). Whether the request took effect is unknown.
    Failed(tonic::Status),
}

/// Serves the requests of the service above that peers send on the
/// node-pair stream ([`RaftNode::serve_app_frames`](crate::RaftNode::serve_app_frames)).
pub trait AppFrames: Send + Sync + 'static {
    /// Serves one request (the peer's `payload`); the answer's bytes, or a
    /// status the sender sees as [`AppCallError::Failed`].
    fn serve(
        &self,
        payload: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<u8>, tonic::Status>> + Send>>;
}

/// What the transport asks of the node it serves, beyond its groups. The
/// node implements it, so this module does not import the node's.
pub(crate) trait LocalNode: Send + Sync + 'static {
    /// This node's id.
    fn id(&self) -> u64;
    /// This node's views of its groups, the metadata group last.
    fn infos(&self) -> Vec<ShardInfo>;
    /// Whether a Raft message for `group`, stamped with the sender's
    /// `cluster` id, may reach the group (another cluster's messages, and
    /// messages to groups this node may not serve yet, are refused).
    fn admit_message(&self, group: u32, cluster: u64) -> Result<(), tonic::Status>;
    /// What this node knows of the cluster and of node `asker`.
    fn identity(&self, asker: u64) -> Identity;
    /// A node liveness message (`LIVENESS`; see `node/quiesce.rs`); the
    /// answer carries this node's service clock, if it has one.
    fn liveness(&self, payload: &[u8]) -> Result<Option<u64>, String>;
    /// A message for `group` was handled (or a metadata write arrived): a
    /// quiesced group wakes.
    fn stirred(&self, group: u32);
    /// The gates of the groups' inbound appends during snapshot installs,
    /// and the test switch that holds installs ([`checks::Installs`]).
    fn installs(&self) -> &checks::Installs;
    /// The service's server of [`RaftRpcKind::App`] frames, once it set one.
    fn app_frames(&self) -> Option<Arc<dyn AppFrames>>;
}

/// gRPC service that receives Raft RPCs for every group of this node.
///
/// Mount it on a tonic server with [`RaftNode::grpc_service`](crate::RaftNode::grpc_service),
/// or let the node serve it on [`NodeConfig::listen_addr`](crate::NodeConfig::listen_addr).
pub struct RaftGrpcService<A: App> {
    pub(crate) groups: Arc<Vec<GroupRaft<A>>>,
    pub(crate) meta: GroupRaft<Registry>,
    pub(crate) node: Weak<dyn LocalNode>,
    pub(crate) isolated: Arc<AtomicBool>,
    /// Test switch: pipelined appends are refused as an older build does.
    pub(crate) no_pipelined: Arc<AtomicBool>,
    /// Test switch: no node-pair stream is served, as an older build.
    pub(crate) no_stream: Arc<AtomicBool>,
    /// Test switch: requests of the service above are refused as a build
    /// without them refuses them.
    pub(crate) no_app: Arc<AtomicBool>,
    /// Set when the node stops: incoming node-pair streams end.
    pub(crate) closed: watch::Receiver<bool>,
    /// This node's data dir incarnation, stamped on every answer.
    pub(crate) incarnation: u64,
}

impl<A: App> std::fmt::Debug for RaftGrpcService<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftGrpcService")
            .field("groups", &self.groups.len())
            .finish()
    }
}

fn reply<T: Serialize>(r: Result<T, String>) -> Result<tonic::Response<RaftReply>, tonic::Status> {
    let payload = encode(&r).map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok(tonic::Response::new(RaftReply {
        payload,
        incarnation: 0,
    }))
}

fn req<T: DeserializeOwned>(b: &[u8]) -> Result<T, tonic::Status> {
    decode(b).map_err(|e| tonic::Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl<A: App> RaftTransport for RaftGrpcService<A> {
    type StreamStream = pipe::ReplyStream;

    async fn stream(
        &self,
        request: tonic::Request<tonic::Streaming<RaftBatch>>,
    ) -> Result<tonic::Response<Self::StreamStream>, tonic::Status> {
        if self.isolated.load(Ordering::Relaxed) {
            return Err(tonic::Status::unavailable("node isolated (test switch)"));
        }
        if self.no_stream.load(Ordering::Relaxed) {
            return Err(no_stream());
        }
        // the peer port's guard checked the sender when the stream opened;
        // its check runs again for every batch
        let check = request.extensions().get::<PeerCheck>().cloned();
        let sender = request.extensions().get::<PeerNode>().map(|p| p.0);
        let frames = Arc::new(StreamFrames {
            sender,
            groups: self.groups.clone(),
            meta: self.meta.clone(),
            node: self.node.clone(),
            isolated: self.isolated.clone(),
            no_pipelined: self.no_pipelined.clone(),
            no_stream: self.no_stream.clone(),
            no_app: self.no_app.clone(),
        });
        Ok(tonic::Response::new(pipe::serve(
            request.into_inner(),
            check,
            self.closed.clone(),
            frames,
            self.incarnation,
        )))
    }

    async fn call(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let mut r = self.unary(request).await?;
        r.get_mut().incarnation = self.incarnation;
        Ok(r)
    }
}

impl<A: App> RaftGrpcService<A> {
    async fn unary(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        if self.isolated.load(Ordering::Relaxed) {
            return Err(tonic::Status::unavailable("node isolated (test switch)"));
        }
        let sender = request.extensions().get::<PeerNode>().map(|p| p.0);
        let r = request.into_inner();
        let kind = RaftRpcKind::try_from(r.kind)
            .map_err(|_| tonic::Status::invalid_argument("unknown raft rpc kind"))?;
        match kind {
            RaftRpcKind::MetaWrite => {
                let cmd: MetaCmd = req(&r.payload)?;
                let Some(node) = self.node.upgrade() else {
                    return Err(tonic::Status::unavailable("node stopped"));
                };
                node.stirred(self.groups.len() as u32);
                return reply::<MetaFwd>(Ok(meta_write_local(&self.meta, cmd).await));
            }
            RaftRpcKind::Status => {
                let node = self
                    .node
                    .upgrade()
                    .ok_or_else(|| tonic::Status::unavailable("node stopped"))?;
                return reply::<Vec<ShardInfo>>(Ok(node.infos()));
            }
            RaftRpcKind::Identity => {
                let asker: u64 = req(&r.payload)?;
                let node = self
                    .node
                    .upgrade()
                    .ok_or_else(|| tonic::Status::unavailable("node stopped"))?;
                return reply::<Identity>(Ok(node.identity(asker)));
            }
            RaftRpcKind::Liveness => {
                let node = self
                    .node
                    .upgrade()
                    .ok_or_else(|| tonic::Status::unavailable("node stopped"))?;
                node.admit_message(0, r.cluster)?;
                return reply::<Option<u64>>(node.liveness(&r.payload));
            }
            _ => {}
        }
        let node = self
            .node
            .upgrade()
            .ok_or_else(|| tonic::Status::unavailable("node stopped"))?;
        node.admit_message(r.group, r.cluster)?;
        let who = Who {
            me: node.id(),
            sender,
        };
        let out = if r.group as usize == self.groups.len() {
            dispatch(&self.meta, who, kind, &r.payload, node.installs(), r.group).await
        } else {
            let raft = self
                .groups
                .get(r.group as usize)
                .ok_or_else(|| tonic::Status::not_found(format!("no raft group {}", r.group)))?;
            dispatch(raft, who, kind, &r.payload, node.installs(), r.group).await
        };
        // after the message is handled: a quiesced follower's election
        // timer then starts from this contact with its leader
        node.stirred(r.group);
        out
    }
}

/// The gate of `group`'s appends ([`checks::GroupGate`]).
fn gate_of(installs: &checks::Installs, group: u32) -> Result<&checks::GroupGate, tonic::Status> {
    installs
        .gate(group)
        .ok_or_else(|| tonic::Status::not_found(format!("no raft group {group}")))
}

/// One Raft message for `raft` (group `group`) from and to `who`: checked
/// ([`checks`]), then handed to openraft.
async fn dispatch<X: App>(
    raft: &GroupRaft<X>,
    who: Who,
    kind: RaftRpcKind,
    payload: &[u8],
    installs: &checks::Installs,
    group: u32,
) -> Result<tonic::Response<RaftReply>, tonic::Status> {
    {
        match kind {
            RaftRpcKind::AppendEntries => {
                let rpc: AppendEntriesRequest<C<X>> = req(payload)?;
                checks::append::<X>(&rpc, who)?;
                let _pass = gate_of(installs, group)?.pass().await;
                reply(raft.append_entries(rpc).await.map_err(|e| e.to_string()))
            }
            RaftRpcKind::Vote => {
                let rpc: VoteRequest<C<X>> = req(payload)?;
                checks::vote::<X>(&rpc, who)?;
                reply(raft.vote(rpc).await.map_err(|e| e.to_string()))
            }
            RaftRpcKind::PreVote => {
                let rpc: VoteRequest<C<X>> = req(payload)?;
                checks::vote::<X>(&rpc, who)?;
                reply(raft.pre_vote(rpc).await.map_err(|e| e.to_string()))
            }
            RaftRpcKind::FullSnapshot => {
                let (vote, meta, data): (VoteT<X>, SnapshotMetaT<X>, Vec<u8>) = req(payload)?;
                let gate = gate_of(installs, group)?;
                let (data, held) =
                    checks::snapshot_install(raft, &vote, &meta, data, who, installs, gate).await?;
                let snapshot = openraft::storage::Snapshot {
                    meta,
                    snapshot: data,
                };
                let r = raft.install_full_snapshot(vote, snapshot).await;
                drop(held);
                reply(r.map_err(|e| e.to_string()))
            }
            RaftRpcKind::TransferLeader => {
                let rpc: TransferLeaderRequest<C<X>> = req(payload)?;
                checks::transfer::<X>(&rpc, who)?;
                reply(
                    raft.handle_transfer_leader(rpc)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            RaftRpcKind::Unspecified
            | RaftRpcKind::MetaWrite
            | RaftRpcKind::Status
            | RaftRpcKind::Identity
            | RaftRpcKind::SnapshotChunk
            | RaftRpcKind::SnapshotInstall
            | RaftRpcKind::Liveness
            | RaftRpcKind::StreamAppend
            | RaftRpcKind::App => Err(tonic::Status::invalid_argument("unexpected rpc kind")),
        }
    }
}

/// The receiving side of node-pair streams: the groups, and the same
/// checks a unary call passes.
struct StreamFrames<A: App> {
    /// The node the peer port authenticated as the stream's sender.
    sender: Option<u64>,
    groups: Arc<Vec<GroupRaft<A>>>,
    meta: GroupRaft<Registry>,
    node: Weak<dyn LocalNode>,
    isolated: Arc<AtomicBool>,
    no_pipelined: Arc<AtomicBool>,
    no_stream: Arc<AtomicBool>,
    no_app: Arc<AtomicBool>,
}

/// The pipelined appends of one incoming stream: each group's frames go,
/// in the order they came, into one openraft `stream_append` session of
/// that group, which hands them to the group's core in that order and
/// answers them in it. A session ends at its first answer that is not a
/// success (as the sender's does) or with the stream; a later frame of the
/// group opens a new one.
struct AppendSessions<A: App> {
    sender: Option<u64>,
    groups: Arc<Vec<GroupRaft<A>>>,
    meta: GroupRaft<Registry>,
    node: Weak<dyn LocalNode>,
    replies: tokio::sync::mpsc::UnboundedSender<RaftFrameReply>,
    open: HashMap<u32, tokio::sync::mpsc::UnboundedSender<Arrived>>,
}

impl<A: App> pipe::Ordered for AppendSessions<A> {
    fn push(&mut self, cluster: u64, frame: RaftFrame) {
        let (id, group) = (frame.id, frame.group);
        let refuse = |s: tonic::Status| {
            let _ = self.replies.send(pipe::refused(id, &s));
        };
        let Some(node) = self.node.upgrade() else {
            return refuse(tonic::Status::unavailable("node stopped"));
        };
        if let Err(s) = node.admit_message(group, cluster) {
            return refuse(s);
        }
        let who = Who {
            me: node.id(),
            sender: self.sender,
        };
        let mut item = (id, frame.payload, std::time::Instant::now());
        if let Some(session) = self.open.get(&group) {
            match session.send(item) {
                Ok(()) => return,
                Err(back) => item = back.0,
            }
        }
        let Some(gate) = node.installs().gate(group).cloned() else {
            return refuse(tonic::Status::not_found(format!("no raft group {group}")));
        };
        let (replies, node) = (self.replies.clone(), self.node.clone());
        let session = if group as usize == self.groups.len() {
            append_session(self.meta.clone(), group, gate, replies, node, who)
        } else if let Some(raft) = self.groups.get(group as usize) {
            append_session(raft.clone(), group, gate, replies, node, who)
        } else {
            return refuse(tonic::Status::not_found(format!("no raft group {group}")));
        };
        let _ = session.send(item);
        self.open.insert(group, session);
    }
}

/// A pipelined append's frame as the stream's receive loop got it: its id,
/// its bytes and when it arrived.
type Arrived = (u64, Vec<u8>, std::time::Instant);

/// One group's pipelined appends from one stream (see [`AppendSessions`]):
/// frames in, answers out, both in order. Each frame passes the group's
/// gate ([`checks::GroupGate`]) before openraft takes it and keeps its pass
/// until answered; frames behind a snapshot install wait here, in order,
/// while the answers of those openraft has go on.
fn append_session<X: App>(
    raft: GroupRaft<X>,
    group: u32,
    gate: checks::GroupGate,
    replies: tokio::sync::mpsc::UnboundedSender<RaftFrameReply>,
    node: Weak<dyn LocalNode>,
    who: Who,
) -> tokio::sync::mpsc::UnboundedSender<Arrived> {
    use futures_util::StreamExt;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Arrived>();
    tokio::spawn(async move {
        let (to_raft, input) = tokio::sync::mpsc::unbounded_channel::<AppendEntriesRequest<C<X>>>();
        let input = futures_util::stream::unfold(input, |mut rx| async move {
            rx.recv().await.map(|r| (r, rx))
        });
        let answers = raft.stream_append(input);
        futures_util::pin_mut!(answers);
        // the frames given to openraft and not answered yet, in order,
        // each with its pass of the gate
        let mut given = std::collections::VecDeque::new();
        // checked frames waiting for the gate, in order
        let mut waiting = std::collections::VecDeque::new();
        loop {
            // biased: a simulation replays a seed exactly, so no random pick
            tokio::select! {
                biased;
                frame = rx.recv() => {
                    let Some((id, payload, at)) = frame else { break };
                    match req::<AppendEntriesRequest<C<X>>>(&payload)
                        .and_then(|rpc| checks::append::<X>(&rpc, who).map(|()| rpc))
                    {
                        Ok(rpc) => {
                            let at = (!rpc.entries.is_empty()).then_some(at);
                            match waiting.is_empty().then(|| gate.try_pass()).flatten() {
                                Some(pass) => {
                                    given.push_back((id, at, pass));
                                    let _ = to_raft.send(rpc);
                                }
                                None => waiting.push_back((id, at, rpc)),
                            }
                        }
                        Err(s) => {
                            let _ = replies.send(pipe::refused(id, &s));
                        }
                    }
                }
                pass = gate.pass(), if !waiting.is_empty() => {
                    if let Some((id, at, rpc)) = waiting.pop_front() {
                        given.push_back((id, at, pass));
                        let _ = to_raft.send(rpc);
                    }
                }
                answer = answers.next() => {
                    let Some(answer) = answer else { break };
                    let Some((id, at, _pass)) = given.pop_front() else { break };
                    // docs/metrics.md: the follower's own part of an append's round trip
                    if let Some(at) = at {
                        metrics::histogram!("admit_raft_append_service_seconds")
                            .record(at.elapsed().as_secs_f64());
                    }
                    let success = matches!(answer, Ok(Ok(_)));
                    let answer = answer.map_err(|fatal| fatal.to_string());
                    let _ = replies.send(pipe::reply(id, encode(&answer).map_err(|e| tonic::Status::internal(e.to_string()))));
                    // as after a unary append: a quiesced follower's
                    // election timer starts from this contact
                    if let Some(n) = node.upgrade() {
                        n.stirred(group);
                    }
                    if !success {
                        break;
                    }
                }
            }
        }
        // over: frames still here or given and unanswered are refused, so
        // their sender retries at once; the next frame opens a new session
        rx.close();
        let why = tonic::Status::unavailable("append session ended; retry");
        for (id, _, _) in given.drain(..) {
            let _ = replies.send(pipe::refused(id, &why));
        }
        for (id, _, _) in waiting.drain(..) {
            let _ = replies.send(pipe::refused(id, &why));
        }
        while let Ok((id, _, _)) = rx.try_recv() {
            let _ = replies.send(pipe::refused(id, &why));
        }
    });
    tx
}

impl<A: App> Frames for StreamFrames<A> {
    fn takes_pipelined(&self) -> bool {
        !self.no_pipelined.load(Ordering::Relaxed)
    }

    fn ordered(
        &self,
        replies: tokio::sync::mpsc::UnboundedSender<RaftFrameReply>,
    ) -> Box<dyn pipe::Ordered> {
        Box::new(AppendSessions {
            sender: self.sender,
            groups: self.groups.clone(),
            meta: self.meta.clone(),
            node: self.node.clone(),
            replies,
            open: HashMap::new(),
        })
    }

    fn gate(&self) -> Result<(), tonic::Status> {
        if self.isolated.load(Ordering::Relaxed) {
            return Err(tonic::Status::unavailable("node isolated (test switch)"));
        }
        if self.no_stream.load(Ordering::Relaxed) {
            // streams opened before the switch end at their next batch
            return Err(no_stream());
        }
        if self.node.strong_count() == 0 {
            return Err(tonic::Status::unavailable("node stopped"));
        }
        Ok(())
    }

    fn handle(
        &self,
        cluster: u64,
        frame: RaftFrame,
        snapshot: Option<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<u8>, tonic::Status>> + Send>> {
        let (groups, meta, node) = (self.groups.clone(), self.meta.clone(), self.node.clone());
        let sender = self.sender;
        let no_app = self.no_app.load(Ordering::Relaxed);
        Box::pin(async move {
            let kind = RaftRpcKind::try_from(frame.kind)
                .ok()
                // a pipelined append comes here only from a node that does
                // not take them (test switch): refused as a build without
                // them refuses it, first
                .filter(|k| *k != RaftRpcKind::StreamAppend)
                .ok_or_else(|| tonic::Status::invalid_argument("unknown raft rpc kind"))?;
            let node = node
                .upgrade()
                .ok_or_else(|| tonic::Status::unavailable("node stopped"))?;
            if kind == RaftRpcKind::Liveness {
                // a node's message, not a group's: it wakes nothing
                node.admit_message(0, cluster)?;
                return encode(&node.liveness(&frame.payload))
                    .map_err(|e| tonic::Status::internal(e.to_string()));
            }
            if kind == RaftRpcKind::App {
                if no_app {
                    return Err(tonic::Status::invalid_argument("unknown raft rpc kind"));
                }
                // the service's request, as its own peer call would bring
                // it (the stream passed the same peer check)
                node.admit_message(0, cluster)?;
                let serve = node
                    .app_frames()
                    .ok_or_else(|| tonic::Status::unavailable("the service is not serving yet"))?;
                drop(node);
                return serve.serve(frame.payload).await;
            }
            node.admit_message(frame.group, cluster)?;
            let who = Who {
                me: node.id(),
                sender,
            };
            let (installs, group) = (node.installs(), frame.group);
            let out = if group as usize == groups.len() {
                serve_frame(&meta, who, kind, &frame.payload, snapshot, installs, group).await
            } else {
                let raft = groups
                    .get(group as usize)
                    .ok_or_else(|| tonic::Status::not_found(format!("no raft group {group}")))?;
                serve_frame(raft, who, kind, &frame.payload, snapshot, installs, group).await
            };
            // as on the unary path: a quiesced follower's election timer
            // starts from this contact with its leader (node/quiesce.rs)
            node.stirred(frame.group);
            out
        })
    }
}

/// One Raft message of a node-pair stream; the reply's payload.
async fn serve_frame<X: App>(
    raft: &GroupRaft<X>,
    who: Who,
    kind: RaftRpcKind,
    payload: &[u8],
    snapshot: Option<Vec<u8>>,
    installs: &checks::Installs,
    group: u32,
) -> Result<Vec<u8>, tonic::Status> {
    match kind {
        RaftRpcKind::SnapshotInstall => {
            let (_ids, vote, meta): ((u64, u64), VoteT<X>, SnapshotMetaT<X>) = req(payload)?;
            let data = snapshot.unwrap_or_default();
            let gate = gate_of(installs, group)?;
            let (snapshot, held) =
                checks::snapshot_install(raft, &vote, &meta, data, who, installs, gate).await?;
            let snapshot = openraft::storage::Snapshot { meta, snapshot };
            let r = raft
                .install_full_snapshot(vote, snapshot)
                .await
                .map_err(|e| e.to_string());
            drop(held);
            encode(&r).map_err(|e| tonic::Status::internal(e.to_string()))
        }
        RaftRpcKind::AppendEntries
        | RaftRpcKind::Vote
        | RaftRpcKind::PreVote
        | RaftRpcKind::TransferLeader => dispatch(raft, who, kind, payload, installs, group)
            .await
            .map(|r| r.into_inner().payload),
        _ => Err(tonic::Status::invalid_argument(
            "this rpc kind is not sent on the raft stream",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::lacks_kind;
    use tonic::Status;

    /// What turns pipelining off for a peer: an older build's refusal of the
    /// frame kind (both texts it may answer with), not damaged bytes.
    #[test]
    fn only_an_unknown_kind_turns_pipelining_off() {
        assert!(lacks_kind(&Status::invalid_argument(
            "unknown raft rpc kind"
        )));
        assert!(lacks_kind(&Status::invalid_argument(
            "this rpc kind is not sent on the raft stream"
        )));
        let damaged = crate::store::decode::<(u64, u64)>(&[0xff])
            .map(|_: (u64, u64)| ())
            .unwrap_err();
        assert!(!lacks_kind(&Status::invalid_argument(damaged.to_string())));
        assert!(!lacks_kind(&Status::unavailable("unknown raft rpc kind")));
    }
}

#[cfg(test)]
mod fold_tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::StreamExt;
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::raft::AppendEntriesRequest;
    use openraft::{Entry, EntryPayload, LogId};

    use super::fold_commit_notes;
    use crate::cluster::Registry;
    use crate::types::C;

    type Req = AppendEntriesRequest<C<Registry>>;

    fn lid(index: u64) -> LogId<LeaderId<u64, u64>> {
        LogId::new(
            LeaderId {
                term: 1,
                node_id: 1,
            },
            index,
        )
    }

    /// An append after `prev` with `n` entries, carrying commit index `commit`.
    fn append(prev: u64, n: u64, commit: u64) -> Req {
        AppendEntriesRequest {
            vote: openraft::impls::Vote::new_committed(1, 1),
            prev_log_id: Some(lid(prev)),
            leader_commit: Some(lid(commit)),
            entries: (prev + 1..=prev + n)
                .map(|i| Entry {
                    log_id: lid(i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
        }
    }

    /// (prev index, entries, commit index) of each request that went out.
    fn shape(out: &[Req]) -> Vec<(u64, usize, u64)> {
        out.iter()
            .map(|r| {
                let idx = |l: &Option<LogId<LeaderId<u64, u64>>>| l.as_ref().map_or(0, |l| l.index);
                (idx(&r.prev_log_id), r.entries.len(), idx(&r.leader_commit))
            })
            .collect()
    }

    /// A note followed by a later append is not sent (the later one carries
    /// a newer commit index); the session's first request goes even when it
    /// is empty; a note at the end of the input goes.
    #[tokio::test(start_paused = true)]
    async fn a_commit_note_followed_by_an_append_is_dropped() {
        let input = futures_util::stream::iter(vec![
            append(5, 0, 5), // first: may be a probe, never held
            append(5, 2, 5),
            append(7, 0, 6), // note, then a later append
            append(7, 0, 7), // a later note replaces it
            append(7, 1, 7),
            append(8, 0, 8), // the last note: nothing follows
        ]);
        let folded = Arc::new(AtomicU64::new(0));
        let out: Vec<Req> = Box::pin(fold_commit_notes::<Registry, _>(
            input,
            Duration::from_millis(2),
            folded.clone(),
        ))
        .collect()
        .await;
        assert_eq!(
            shape(&out),
            vec![(5, 0, 5), (5, 2, 5), (7, 1, 7), (8, 0, 8)]
        );
        assert_eq!(folded.load(Ordering::Relaxed), 2, "two notes not sent");
    }

    /// A note that nothing follows within the hold goes when the hold ends,
    /// not later: the follower learns the commit index at most that late.
    #[tokio::test(start_paused = true)]
    async fn a_commit_note_goes_when_nothing_follows_in_time() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut out = Box::pin(fold_commit_notes::<Registry, _>(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
            Duration::from_millis(2),
            Arc::default(),
        ));
        tx.send(append(3, 1, 3)).unwrap();
        assert_eq!(shape(&[out.next().await.unwrap()]), vec![(3, 1, 3)]);
        tx.send(append(4, 0, 4)).unwrap();
        let t0 = tokio::time::Instant::now();
        let note = out.next().await.unwrap();
        assert_eq!(shape(&[note]), vec![(4, 0, 4)]);
        assert_eq!(
            t0.elapsed(),
            Duration::from_millis(2),
            "held for the hold, no longer"
        );
        // the input still open: a later append goes at once
        tx.send(append(4, 1, 4)).unwrap();
        assert_eq!(shape(&[out.next().await.unwrap()]), vec![(4, 1, 4)]);
        drop(tx);
        assert!(out.next().await.is_none());
    }
}
