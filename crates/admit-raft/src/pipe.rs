//! The node-pair stream: every Raft message from this node to one peer, of
//! every group, travels on one long-lived bidirectional gRPC stream
//! (`RaftTransport.Stream`), batched, instead of one HTTP/2 call each.
//!
//! * **Sending** ([`Pipes`]): one [`Pipe`] per peer node; callers queue a
//!   frame with a fresh id and wait for the reply with that id. The pipe's
//!   writer takes everything queued whenever the stream can take the next
//!   batch, so batches grow while one is in flight. Heartbeats (openraft's
//!   heartbeat worker's appends with no entries) wait up to half the
//!   heartbeat interval for others, so the heartbeats of many groups to one
//!   peer leave together; any other frame sends them at once. The wait is
//!   safe for the lease: a leader counts its lease from when it sent the
//!   heartbeat, a follower its election timeout from when it received it.
//!   A broken stream fails the
//!   frames waiting on it; the next frame opens a new one.
//! * **Snapshots** leave in pieces ([`CHUNK`]) on the same stream, each
//!   acknowledged, then an install frame; the receiver assembles them per
//!   stream, so no message holds a whole snapshot.
//! * **Receiving** ([`serve`]): every batch is checked as a whole (the
//!   sender still a member: [`PeerCheck`]; the node not stopped or cut off:
//!   [`Frames::gate`]), every frame on its own (cluster id, group:
//!   [`Frames::handle`]); frames run concurrently and replies go back
//!   batched the same way, except pipelined appends, which must reach
//!   their group in the order sent: the receive loop hands them, in
//!   arrival order, to the stream's [`Ordered`] part.
//!
//! A peer that does not serve `Stream` (an older build) is spoken to with
//! one unary `Call` per message, as before ([`Pipes::legacy`]), and offered
//! a stream again once [`STREAM_RETRY`] has passed: in a rolling upgrade it
//! comes back a newer build.
//!
//! Imports: tonic, the generated `admit.internal.raft` types, `store`'s
//! postcard helpers. It knows nothing of openraft or of the groups: the
//! network module above gives it bytes and a [`Frames`] handler.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use crate::cluster::LOST_DIR;
use crate::pb::raft_transport_client::RaftTransportClient;
use crate::pb::{RaftBatch, RaftFrame, RaftFrameReply, RaftReplyBatch, RaftRpcKind};
use crate::store::decode;

/// How long a peer found without a node-pair stream (an older build) is
/// spoken to with unary calls before a stream is tried again.
pub(crate) const STREAM_RETRY: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Largest batch the writer forms (bytes of payload); a single larger
/// frame still goes alone, up to the message limit.
const BATCH_BYTES: usize = 4 << 20;
/// Size of one snapshot piece.
pub(crate) const CHUNK: usize = 1 << 20;
/// Largest snapshot a stream assembles.
const MAX_SNAPSHOT: u64 = 16 << 30;
/// Room for a frame's own fields around its payload.
const FRAME_OVERHEAD: usize = 64;

/// The node a peer port authenticated as the sender of a request (mutual
/// TLS: the node its certificate names). The server's peer-port guard puts
/// it into the request's extensions; with it, a Raft message may speak only
/// for its sender: a leader's vote on an append, snapshot or transfer, and
/// a candidate's on a vote request, must name that node
/// (`checks.rs`). Without it (plain text) the sender is unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerNode(pub u64);

/// Re-checks, for every batch on a long-lived peer stream, that the node
/// that opened it may still speak to this one (a node removed from the
/// membership loses its stream at its next batch, as it would lose its
/// next unary call). The server's peer-port guard puts one into the
/// request's extensions; without one (plain text) every batch passes.
#[derive(Clone)]
pub struct PeerCheck(Arc<dyn Fn() -> Result<(), Status> + Send + Sync>);

impl PeerCheck {
    /// A check run before each batch is served.
    pub fn new(f: impl Fn() -> Result<(), Status> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for PeerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerCheck")
    }
}

type Reply = Result<Vec<u8>, Status>;

/// The data dir incarnations this node's peers answered with (a node stamps
/// its own on every answer it gives). A peer is heard from one data dir
/// only: the first incarnation it answers with is kept for the life of this
/// process and answers stamped with another are refused. A peer whose dir
/// was wiped thus cannot show a leader an empty log under its old id
/// (openraft stops on such a log reversion, and the entries the peer had
/// acknowledged are gone), even when the registry never learned the peer's
/// first incarnation (it lost its dir before its registration committed).
#[derive(Debug, Default)]
pub(crate) struct Incarnations {
    seen: Mutex<HashMap<u64, u64>>,
}

impl Incarnations {
    /// The one `node` first answered with, if it answered.
    pub(crate) fn seen(&self, node: u64) -> Option<u64> {
        lock(&self.seen).get(&node).copied()
    }

    /// Checks an answer of `node` stamped with `theirs` (0: a build that
    /// does not stamp, not checked).
    pub(crate) fn check(&self, node: u64, theirs: u64) -> Result<(), Status> {
        if theirs == 0 {
            return Ok(());
        }
        let first = *lock(&self.seen).entry(node).or_insert(theirs);
        if first == theirs {
            return Ok(());
        }
        Err(Status::failed_precondition(format!(
            "{LOST_DIR}: node {node} answers from data dir {theirs:016x}; it answered from \
             {first:016x} before, so its log was lost"
        )))
    }
}

/// One Raft message to send: its group and kind, the encoded request, and
/// whether it is a heartbeat (which may wait for others).
pub(crate) struct Message {
    pub(crate) group: u32,
    pub(crate) kind: RaftRpcKind,
    pub(crate) payload: Vec<u8>,
    pub(crate) heartbeat: bool,
}

/// One frame waiting for the writer.
struct Out {
    frame: RaftFrame,
    heartbeat: bool,
}

/// The stream to one peer.
struct Pipe {
    tx: mpsc::UnboundedSender<Out>,
    /// Frames sent or queued, by id; `None` once the stream broke.
    waiting: Mutex<Option<HashMap<u64, oneshot::Sender<Reply>>>>,
    /// The peer accepted the stream (its answer's headers came): frames
    /// queued now are on their way to a node that was up a moment ago.
    established: std::sync::atomic::AtomicBool,
    /// The peer refused a request of the service above on this stream (a
    /// build without them): none is sent on it again. A new stream, as a
    /// restarted (perhaps upgraded) peer gets, starts without the mark.
    refuses_app: std::sync::atomic::AtomicBool,
}

impl Pipe {
    fn dead(&self) -> bool {
        lock(&self.waiting).is_none()
    }

    /// Fails every waiting frame and refuses new ones.
    fn kill(&self, why: &Status) {
        let waiting = lock(&self.waiting).take();
        for (_, tx) in waiting.into_iter().flatten() {
            let _ = tx.send(Err(Status::new(why.code(), why.message().to_owned())));
        }
    }

    fn answer(&self, r: RaftFrameReply) {
        let tx = lock(&self.waiting).as_mut().and_then(|w| w.remove(&r.id));
        if let Some(tx) = tx {
            let _ = tx.send(if r.refused_code != 0 {
                Err(Status::new(Code::from(r.refused_code), r.refused_message))
            } else {
                Ok(r.payload)
            });
        }
    }
}

/// What the pipes of a node sent: batches, and the frames in them.
#[derive(Debug, Default)]
pub(crate) struct PipeStats {
    pub(crate) batches: AtomicU64,
    pub(crate) frames: AtomicU64,
}

/// The sending side: one pipe per peer node, shared by all groups.
pub(crate) struct Pipes {
    pipes: Mutex<HashMap<u64, Arc<Pipe>>>,
    /// Peers that do not serve `Stream`, and when that was found: unary
    /// calls until `stream_retry` has passed.
    legacy: Arc<Mutex<HashMap<u64, Instant>>>,
    stream_retry: Mutex<Duration>,
    /// Peers that refused a pipelined append (an older build): replication
    /// to them sends one append at a time. Forgotten when a new stream to
    /// the peer opens: a peer restarts (perhaps upgraded) on a new one.
    one_at_a_time: Arc<Mutex<HashSet<u64>>>,
    next_id: AtomicU64,
    /// How long heartbeats wait for company.
    linger: Duration,
    max_message: usize,
    /// Set when the node stops: pipes close, incoming streams end.
    closed: watch::Sender<bool>,
    cluster: Arc<AtomicU64>,
    incarnations: Arc<Incarnations>,
    pub(crate) stats: Arc<PipeStats>,
}

impl std::fmt::Debug for Pipes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipes").finish_non_exhaustive()
    }
}

impl Pipes {
    pub(crate) fn new(
        heartbeat: Duration,
        max_message: usize,
        cluster: Arc<AtomicU64>,
        incarnations: Arc<Incarnations>,
    ) -> Self {
        Self {
            pipes: Mutex::default(),
            legacy: Arc::default(),
            stream_retry: Mutex::new(STREAM_RETRY),
            one_at_a_time: Arc::default(),
            next_id: AtomicU64::new(1),
            linger: heartbeat / 2,
            max_message,
            closed: watch::channel(false).0,
            cluster,
            incarnations,
            stats: Arc::default(),
        }
    }

    /// Whether `node` is spoken to with unary calls. Once the retry
    /// interval has passed the mark goes, so the next message opens a
    /// stream (a peer still without one is marked again).
    pub(crate) fn legacy(&self, node: u64) -> bool {
        let mut legacy = lock(&self.legacy);
        let Some(since) = legacy.get(&node) else {
            return false;
        };
        if since.elapsed() < *lock(&self.stream_retry) {
            return true;
        }
        legacy.remove(&node);
        false
    }

    /// The peers whose open stream refused a request of the service above,
    /// in id order.
    pub(crate) fn refusing_app(&self) -> Vec<u64> {
        let mut v: Vec<u64> = lock(&self.pipes)
            .iter()
            .filter(|(_, p)| !p.dead() && p.refuses_app.load(Ordering::Relaxed))
            .map(|(n, _)| *n)
            .collect();
        v.sort_unstable();
        v
    }

    /// The peers spoken to with unary calls, in id order.
    pub(crate) fn legacy_peers(&self) -> Vec<u64> {
        let mut v: Vec<u64> = lock(&self.legacy).keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// How long a peer without a stream is spoken to with unary calls
    /// before a stream is tried again.
    pub(crate) fn set_stream_retry(&self, after: Duration) {
        *lock(&self.stream_retry) = after;
    }

    /// Whether replication to `node` sends one append at a time.
    pub(crate) fn one_at_a_time(&self, node: u64) -> bool {
        lock(&self.one_at_a_time).contains(&node)
    }

    /// `node` refused a pipelined append: one at a time until a new stream
    /// to it opens.
    pub(crate) fn refused_pipelining(&self, node: u64) {
        lock(&self.one_at_a_time).insert(node);
    }

    /// The peers sent one append at a time, in id order.
    pub(crate) fn one_at_a_time_peers(&self) -> Vec<u64> {
        let mut v: Vec<u64> = lock(&self.one_at_a_time).iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// Forgets what is known of `node`'s stream (its address changed).
    pub(crate) fn reset(&self, node: u64) {
        lock(&self.legacy).remove(&node);
        lock(&self.one_at_a_time).remove(&node);
        if let Some(p) = lock(&self.pipes).remove(&node) {
            p.kill(&Status::unavailable("peer address changed"));
        }
    }

    /// Closes every pipe and ends every incoming stream; later frames fail.
    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
        for (_, p) in lock(&self.pipes).drain() {
            p.kill(&Status::unavailable("node stopping"));
        }
    }

    /// The signal incoming streams end on.
    pub(crate) fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// A fresh id for a snapshot sent in pieces.
    pub(crate) fn snapshot_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `msg` to `node` on its pipe (opened with `client` if needed)
    /// and waits at most `ttl` for the reply's payload.
    pub(crate) async fn send(
        &self,
        node: u64,
        client: impl FnOnce() -> Option<RaftTransportClient<Channel>>,
        msg: Message,
        ttl: Duration,
    ) -> Reply {
        self.post(node, client, msg, ttl).await
    }

    /// Queues `msg` for `node` at once, so frames posted one after another
    /// leave in that order, and returns the wait (at most `ttl`) for its
    /// reply: pipelined appends post their next frame before the last is
    /// answered.
    pub(crate) fn post(
        &self,
        node: u64,
        client: impl FnOnce() -> Option<RaftTransportClient<Channel>>,
        msg: Message,
        ttl: Duration,
    ) -> Pin<Box<dyn Future<Output = Reply> + Send + 'static>> {
        let queued = self
            .refuse(&msg)
            .and_then(|()| self.pipe(node, client))
            .and_then(|pipe| self.queue(pipe, node, msg));
        wait(node, ttl, queued, false)
    }

    /// Like [`Self::post`], but only on a stream to `node` that is open now
    /// (the peer accepted it and it has not broken since): `None`, with
    /// nothing sent, when there is none. For requests of the service above,
    /// which have a way of their own to a peer: a stream still opening may
    /// lead to a node that is down, and then whether a frame left would be
    /// unknown, where the service's own call learns "connection refused".
    pub(crate) fn post_established(
        &self,
        node: u64,
        msg: Message,
        ttl: Duration,
    ) -> Option<Pin<Box<dyn Future<Output = Reply> + Send + 'static>>> {
        self.refuse(&msg).ok()?;
        let pipe = lock(&self.pipes)
            .get(&node)
            .filter(|p| {
                !p.dead()
                    && p.established.load(Ordering::Acquire)
                    && !p.refuses_app.load(Ordering::Relaxed)
            })
            .cloned()?;
        Some(wait(node, ttl, self.queue(pipe, node, msg), true))
    }

    /// Why `msg` may not be sent at all (the node stops, or it is too large).
    fn refuse(&self, msg: &Message) -> Result<(), Status> {
        if *self.closed.borrow() {
            return Err(Status::unavailable("node stopping"));
        }
        if msg.payload.len() + FRAME_OVERHEAD > self.max_message {
            return Err(Status::resource_exhausted(format!(
                "raft message of {} bytes is above the {} byte limit",
                msg.payload.len(),
                self.max_message
            )));
        }
        Ok(())
    }

    /// Puts `msg` on `pipe` (the pipe to `node`): the pipe, the frame's id
    /// and where its reply will come.
    fn queue(
        &self,
        pipe: Arc<Pipe>,
        node: u64,
        msg: Message,
    ) -> Result<(Arc<Pipe>, u64, oneshot::Receiver<Reply>), Status> {
        let Message {
            group,
            kind,
            payload,
            heartbeat,
        } = msg;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match lock(&pipe.waiting).as_mut() {
            Some(w) => w.insert(id, tx),
            None => return Err(Status::unavailable(format!("stream to node {node} broke"))),
        };
        let frame = RaftFrame {
            id,
            group,
            kind: kind as i32,
            payload,
        };
        if pipe.tx.send(Out { frame, heartbeat }).is_err() {
            pipe.kill(&Status::unavailable(format!(
                "stream to node {node} closed"
            )));
        }
        Ok((pipe, id, rx))
    }

    /// The live pipe to `node`, opening one if there is none.
    fn pipe(
        &self,
        node: u64,
        client: impl FnOnce() -> Option<RaftTransportClient<Channel>>,
    ) -> Result<Arc<Pipe>, Status> {
        let mut pipes = lock(&self.pipes);
        if let Some(p) = pipes.get(&node).filter(|p| !p.dead()) {
            return Ok(p.clone());
        }
        let client =
            client().ok_or_else(|| Status::unavailable(format!("no address for node {node}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let pipe = Arc::new(Pipe {
            tx,
            waiting: Mutex::new(Some(HashMap::new())),
            established: std::sync::atomic::AtomicBool::new(false),
            refuses_app: std::sync::atomic::AtomicBool::new(false),
        });
        pipes.insert(node, pipe.clone());
        tokio::spawn(run(
            Writer {
                node,
                pipe: pipe.clone(),
                linger: self.linger,
                closed: self.closed.subscribe(),
                cluster: self.cluster.clone(),
                stats: self.stats.clone(),
            },
            client,
            rx,
            Marks {
                legacy: self.legacy.clone(),
                one_at_a_time: self.one_at_a_time.clone(),
            },
            self.incarnations.clone(),
        ));
        Ok(pipe)
    }
}

/// Whether a frame was refused because the peer's build does not know its
/// kind: such a build answers INVALID_ARGUMENT naming the rpc kind ("unknown
/// raft rpc kind", "this rpc kind is not sent on the raft stream"), where
/// bytes it cannot decode are INVALID_ARGUMENT too but with the decoder's
/// text, which must not turn a feature off.
pub(crate) fn lacks_kind(s: &Status) -> bool {
    s.code() == Code::InvalidArgument && s.message().contains("rpc kind")
}

/// The wait, at most `ttl`, for the reply to a frame `queued` for `node`.
/// `app`: a request of the service above, whose refusal as an unknown kind
/// marks the stream ([`Pipe::refuses_app`]).
fn wait(
    node: u64,
    ttl: Duration,
    queued: Result<(Arc<Pipe>, u64, oneshot::Receiver<Reply>), Status>,
    app: bool,
) -> Pin<Box<dyn Future<Output = Reply> + Send + 'static>> {
    Box::pin(async move {
        let (pipe, id, rx) = queued?;
        // a wait given up (timed out, or dropped: a pipelined session
        // that stopped at an earlier answer) forgets its frame
        let forget = Forget { pipe, id };
        let r = match tokio::time::timeout(ttl, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Status::unavailable(format!("stream to node {node} closed"))),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "raft message to node {node} not answered within {ttl:?}"
            ))),
        };
        if app && matches!(&r, Err(s) if lacks_kind(s)) {
            // this stream's peer is a build without the kind: the next
            // request goes the service's own way at once
            forget.pipe.refuses_app.store(true, Ordering::Relaxed);
        }
        r
    })
}

/// Removes a frame's reply slot when its wait ends, however it ends (an
/// answered frame's slot is already gone).
struct Forget {
    pipe: Arc<Pipe>,
    id: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        if let Some(w) = lock(&self.pipe.waiting).as_mut() {
            w.remove(&self.id);
        }
    }
}

/// What a pipe's writer task holds.
struct Writer {
    node: u64,
    pipe: Arc<Pipe>,
    linger: Duration,
    closed: watch::Receiver<bool>,
    cluster: Arc<AtomicU64>,
    stats: Arc<PipeStats>,
}

/// What a node knows of its peers' builds (see [`Pipes`]).
struct Marks {
    legacy: Arc<Mutex<HashMap<u64, Instant>>>,
    one_at_a_time: Arc<Mutex<HashSet<u64>>>,
}

/// A pipe's life: open the stream, then form and send batches until the
/// stream breaks or the node stops; replies are read by a task of their own.
async fn run(
    mut w: Writer,
    mut client: RaftTransportClient<Channel>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    marks: Marks,
    incarnations: Arc<Incarnations>,
) {
    // capacity 1: while a batch waits for the stream, the next one grows
    let (btx, brx) = mpsc::channel::<RaftBatch>(1);
    let outbound =
        futures_util::stream::unfold(
            brx,
            |mut brx| async move { brx.recv().await.map(|b| (b, brx)) },
        );
    let opened = tokio::select! {
        r = client.stream(outbound) => r,
        () = until_closed(&mut w.closed) => Err(Status::unavailable("node stopping")),
    };
    let inbound = match opened {
        Ok(r) => r.into_inner(),
        Err(s) => {
            if s.code() == Code::Unimplemented {
                tracing::info!(node = w.node, "peer has no raft stream; using unary calls");
                lock(&marks.legacy).insert(w.node, Instant::now());
            }
            w.pipe.kill(&s);
            return;
        }
    };
    w.pipe.established.store(true, Ordering::Release);
    // a new stream: the peer may have restarted as a newer build, so
    // pipelined appends are tried again (one refusal puts the mark back)
    lock(&marks.one_at_a_time).remove(&w.node);
    let reader = tokio::spawn(read(w.pipe.clone(), inbound, w.node, incarnations));
    let why = loop {
        let first = tokio::select! {
            m = rx.recv() => m,
            () = until_closed(&mut w.closed) => None,
        };
        let Some(first) = first else {
            break Status::unavailable("node stopping");
        };
        let mut bytes = first.frame.payload.len();
        let mut only_heartbeats = first.heartbeat;
        let mut frames = vec![first.frame];
        if only_heartbeats && !w.linger.is_zero() {
            let until = tokio::time::Instant::now() + w.linger;
            while only_heartbeats {
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => {
                            only_heartbeats = m.heartbeat;
                            bytes += m.frame.payload.len();
                            frames.push(m.frame);
                        }
                        None => break,
                    },
                    _ = tokio::time::sleep_until(until) => break,
                }
            }
        }
        while bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(m) => {
                    bytes += m.frame.payload.len();
                    frames.push(m.frame);
                }
                Err(_) => break,
            }
        }
        w.stats.batches.fetch_add(1, Ordering::Relaxed);
        w.stats
            .frames
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        let batch = RaftBatch {
            frames,
            cluster: w.cluster.load(Ordering::Acquire),
        };
        if btx.send(batch).await.is_err() || reader.is_finished() {
            break Status::unavailable(format!("stream to node {} broke", w.node));
        }
    };
    reader.abort();
    w.pipe.kill(&why);
}

/// Returns once the node stops (or never, if the signal is gone).
async fn until_closed(closed: &mut watch::Receiver<bool>) {
    let stopped = closed.wait_for(|c| *c).await.is_ok();
    if !stopped {
        std::future::pending::<()>().await;
    }
}

/// Hands each reply to the frame waiting for it; a batch from another data
/// dir than `node` answered from before breaks the stream instead.
async fn read(
    pipe: Arc<Pipe>,
    mut inbound: Streaming<RaftReplyBatch>,
    node: u64,
    incarnations: Arc<Incarnations>,
) {
    let why = loop {
        match inbound.message().await {
            Ok(Some(b)) => {
                if let Err(s) = incarnations.check(node, b.incarnation) {
                    break s;
                }
                b.replies.into_iter().for_each(|r| pipe.answer(r));
            }
            Ok(None) => break Status::unavailable("peer ended the raft stream"),
            Err(s) => break s,
        }
    };
    pipe.kill(&why);
}

/// What the receiving side asks of the node.
pub(crate) trait Frames: Send + Sync + 'static {
    /// Whether any frame may be served now (the node runs and is not cut
    /// off by the test switch).
    fn gate(&self) -> Result<(), Status>;
    /// Whether pipelined appends are served ([`Frames::ordered`]); if not,
    /// they go to [`Frames::handle`], which refuses their kind as a build
    /// without them does (a test switch).
    fn takes_pipelined(&self) -> bool {
        true
    }
    /// Serves one frame of a batch stamped with `cluster`; a snapshot
    /// install comes with the pieces assembled before it.
    fn handle(
        &self,
        cluster: u64,
        frame: RaftFrame,
        snapshot: Option<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = Reply> + Send>>;
    /// What serves the frames of one incoming stream that must reach their
    /// group in the order they came ([`RaftRpcKind::StreamAppend`]); their
    /// replies go to `replies`, each when it is ready.
    fn ordered(&self, replies: mpsc::UnboundedSender<RaftFrameReply>) -> Box<dyn Ordered>;
}

/// The in-order part of one incoming stream (see [`Frames::ordered`]).
pub(crate) trait Ordered: Send {
    /// Serves `frame` after every earlier frame of its group on this
    /// stream. Called in the order the frames arrived.
    fn push(&mut self, cluster: u64, frame: RaftFrame);
}

/// The reply stream of one incoming node-pair stream.
pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<RaftReplyBatch, Status>> + Send>>;

/// Serves one incoming stream until the peer ends it or the node stops;
/// every reply batch carries `incarnation` (this node's data dir).
pub(crate) fn serve(
    inbound: Streaming<RaftBatch>,
    check: Option<PeerCheck>,
    closed: watch::Receiver<bool>,
    frames: Arc<dyn Frames>,
    incarnation: u64,
) -> ReplyStream {
    let (tx, rx) = mpsc::unbounded_channel::<RaftFrameReply>();
    tokio::spawn(receive(inbound, check, closed.clone(), frames, tx));
    // each poll sends every reply ready by then, as one batch
    Box::pin(futures_util::stream::unfold(
        (rx, closed),
        move |(mut rx, mut closed)| async move {
            let first = tokio::select! {
                r = rx.recv() => r?,
                () = until_closed(&mut closed) => return None,
            };
            let mut replies = vec![first];
            while let Ok(r) = rx.try_recv() {
                replies.push(r);
            }
            let batch = RaftReplyBatch {
                replies,
                incarnation,
            };
            Some((Ok(batch), (rx, closed)))
        },
    ))
}

pub(crate) fn refused(id: u64, s: &Status) -> RaftFrameReply {
    RaftFrameReply {
        id,
        payload: Vec::new(),
        refused_code: s.code() as i32,
        refused_message: s.message().to_owned(),
    }
}

/// Snapshot pieces of one stream, by (group, snapshot id).
type Pieces = HashMap<(u32, u64), Vec<u8>>;

async fn receive(
    mut inbound: Streaming<RaftBatch>,
    check: Option<PeerCheck>,
    mut closed: watch::Receiver<bool>,
    frames: Arc<dyn Frames>,
    tx: mpsc::UnboundedSender<RaftFrameReply>,
) {
    let mut pieces = Pieces::new();
    let mut ordered = frames.ordered(tx.clone());
    loop {
        let batch = tokio::select! {
            b = inbound.message() => b,
            () = until_closed(&mut closed) => return,
        };
        let Ok(Some(batch)) = batch else { return };
        let gate = frames
            .gate()
            .and_then(|()| check.as_ref().map_or(Ok(()), |c| (c.0)()));
        if let Err(s) = gate {
            for f in &batch.frames {
                let _ = tx.send(refused(f.id, &s));
            }
            if matches!(s.code(), Code::PermissionDenied | Code::Unimplemented) {
                // no longer a member, or (a test switch) a build without
                // streams: end the stream
                return;
            }
            continue;
        }
        for f in batch.frames {
            let id = f.id;
            let kind = RaftRpcKind::try_from(f.kind).unwrap_or(RaftRpcKind::Unspecified);
            if kind == RaftRpcKind::StreamAppend && frames.takes_pipelined() {
                // here, in arrival order, not in a task of its own
                ordered.push(batch.cluster, f);
                continue;
            }
            let snapshot = match kind {
                // pieces are taken in order, here, not in their own tasks
                RaftRpcKind::SnapshotChunk => {
                    let r = piece(&mut pieces, f.group, &f.payload)
                        .and_then(|()| encode_reply(&Ok::<(), String>(())));
                    let _ = tx.send(reply(id, r));
                    continue;
                }
                RaftRpcKind::SnapshotInstall => match assembled(&mut pieces, f.group, &f.payload) {
                    Ok(data) => Some(data),
                    Err(s) => {
                        let _ = tx.send(refused(id, &s));
                        continue;
                    }
                },
                _ => None,
            };
            let fut = frames.handle(batch.cluster, f, snapshot);
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(reply(id, fut.await));
            });
        }
    }
}

pub(crate) fn reply(id: u64, r: Reply) -> RaftFrameReply {
    match r {
        Ok(payload) => RaftFrameReply {
            id,
            payload,
            refused_code: 0,
            refused_message: String::new(),
        },
        Err(s) => refused(id, &s),
    }
}

fn encode_reply<T: serde::Serialize>(r: &T) -> Reply {
    crate::store::encode(r).map_err(|e| Status::internal(e.to_string()))
}

/// Adds one piece `(snapshot id, offset, total, bytes)`; pieces must come
/// in order.
fn piece(pieces: &mut Pieces, group: u32, payload: &[u8]) -> Result<(), Status> {
    let (id, offset, total, bytes): (u64, u64, u64, Vec<u8>) =
        decode(payload).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if total > MAX_SNAPSHOT {
        return Err(Status::resource_exhausted(format!(
            "snapshot of {total} bytes is above {MAX_SNAPSHOT}"
        )));
    }
    if offset == 0 {
        // a new transfer of this group replaces any unfinished one
        pieces.retain(|(g, _), _| *g != group);
        pieces.insert((group, id), Vec::with_capacity(total as usize));
    }
    let buf = pieces.get_mut(&(group, id)).ok_or_else(|| {
        Status::failed_precondition(format!("snapshot piece at {offset} of an unknown transfer"))
    })?;
    if buf.len() as u64 != offset || offset + bytes.len() as u64 > total {
        pieces.remove(&(group, id));
        return Err(Status::failed_precondition(format!(
            "snapshot piece at {offset} out of order"
        )));
    }
    buf.extend_from_slice(&bytes);
    Ok(())
}

/// The snapshot assembled for an install frame `(vote, meta, id, total)`:
/// only the last two fields are read here.
fn assembled(pieces: &mut Pieces, group: u32, payload: &[u8]) -> Result<Vec<u8>, Status> {
    let (id, total) = install_ids(payload)?;
    let data = match pieces.remove(&(group, id)) {
        Some(d) => d,
        None if total == 0 => Vec::new(),
        None => {
            return Err(Status::failed_precondition(
                "snapshot install without its pieces",
            ))
        }
    };
    if data.len() as u64 != total {
        return Err(Status::failed_precondition(format!(
            "snapshot of {total} bytes arrived with {}",
            data.len()
        )));
    }
    Ok(data)
}

/// The install frame carries `(id, total)` first, the openraft parts after
/// (they are decoded by the handler, which knows their types).
fn install_ids(payload: &[u8]) -> Result<(u64, u64), Status> {
    let (ids, _rest): ((u64, u64), &[u8]) =
        postcard::take_from_bytes(payload).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_heard_from_the_first_data_dir_it_answered_from_only() {
        let dirs = Incarnations::default();
        assert_eq!(dirs.seen(3), None);
        // a build that does not stamp its answers is not checked
        assert!(dirs.check(3, 0).is_ok());
        assert_eq!(dirs.seen(3), None);
        assert!(dirs.check(3, 0xa).is_ok());
        assert!(dirs.check(3, 0xa).is_ok());
        assert_eq!(dirs.seen(3), Some(0xa));
        // node 3 comes back on a wiped dir: refused, and still known by
        // its first dir (so its probe hears that its log was lost)
        let refused = dirs.check(3, 0xb).expect_err("another data dir");
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert!(refused.message().starts_with(LOST_DIR), "{refused:?}");
        assert_eq!(dirs.seen(3), Some(0xa));
        // other peers are apart
        assert!(dirs.check(4, 0xb).is_ok());
    }
}
