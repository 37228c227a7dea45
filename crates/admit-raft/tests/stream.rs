//! The node-pair Raft stream (issue 14, item 2), on real loopback
//! listeners: a snapshot larger than the message limit reaches a follower
//! in pieces; the heartbeats of many groups leave in shared batches; the
//! sender of a stream is checked again for every batch.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use admit_raft::pb::raft_transport_client::RaftTransportClient;
use admit_raft::pb::{RaftBatch, RaftFrame, RaftReplyBatch, RaftRpcKind};
use admit_raft::{AppCallError, NodeConfig, PeerCheck, RaftNode};
use common::{config, eventually, Counters};
use tonic::Code;

type Node = RaftNode<Counters>;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use common::trio::Trio;

/// Messages at most 128 KiB; snapshots after every 20 entries, no log
/// kept behind them.
fn small_messages(c: &mut NodeConfig) {
    c.max_message_bytes = Some(128 * 1024);
    c.snapshot_every = 20;
    c.keep_logs_after_snapshot = 0;
    c.purge_batch_size = 1;
}

/// A follower that was stopped while the leader purged its log catches up
/// from a snapshot of about 600 KiB, more than four times the largest
/// message the nodes take: it can only have come in pieces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_larger_than_a_message_arrives_in_pieces() {
    let _serial = SERIAL.lock().await;
    let mut t = Trio::start(1, small_messages).await;
    eventually("a leader", 30, async || t.leader(0).is_some()).await;
    let leader = t.leader(0).unwrap().node_id();
    let follower = (0..3).find(|i| *i as u64 + 1 != leader).unwrap();
    t.nodes[follower].take().unwrap().shutdown().await.unwrap();
    // 300 counters with 2 KiB names: a snapshot of about 600 KiB
    let pad = "x".repeat(2048);
    for id in 0..300u64 {
        t.write(0, format!("{id}{pad}"), id).await;
    }
    let snapshot = t.leader(0).unwrap();
    let size = snapshot
        .with_app(0, |a: &Counters| {
            postcard::to_allocvec(&*a.state.lock().unwrap())
                .unwrap()
                .len()
        })
        .await
        .unwrap();
    assert!(size > 4 * 128 * 1024, "snapshot only {size} bytes");
    eventually("the leader purged its log", 20, async || {
        t.leader(0)
            .and_then(|l| l.purged_index(0))
            .is_some_and(|p| p > 100)
    })
    .await;
    t.up(follower).await;
    let f = t.nodes[follower].clone().unwrap();
    eventually("the follower holds all 300 counters", 60, async || {
        f.with_app(0, |a: &Counters| a.state.lock().unwrap().counters.len())
            .await
            .is_ok_and(|n| n == 300)
    })
    .await;
    assert!(
        f.purged_index(0).is_some_and(|p| p > 100),
        "the follower did not install a snapshot"
    );
    eprintln!("snapshot of {size} bytes installed through pieces of the 128 KiB limit");
    t.stop().await;
}

/// An idle cluster of 16 groups: each node's leaders heartbeat both
/// followers 20 times a second, and those heartbeats leave in batches of
/// several groups, not one message each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_of_many_groups_share_batches() {
    let _serial = SERIAL.lock().await;
    const S: u32 = 16;
    // quiescence off: idle groups would stop heartbeating (tests/quiesce.rs)
    let mut t = Trio::start(S, |c| c.quiesce_after = None).await;
    // elected leaders are enough (heartbeats flow; no lease needed)
    eventually("every shard has a leader", 120, async || {
        (0..S).all(|s| t.live().iter().any(|n| n.leader(s) == Some(n.node_id())))
    })
    .await;
    let counts = |t: &Trio| {
        t.live().iter().fold((0, 0), |(b, f), n| {
            let (nb, nf) = n.stream_counters();
            (b + nb, f + nf)
        })
    };
    let (b0, f0) = counts(&t);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (b1, f1) = counts(&t);
    let (batches, frames) = (b1 - b0, f1 - f0);
    eprintln!(
        "idle for 2 s: {frames} frames in {batches} batches ({:.1} per batch)",
        frames as f64 / batches.max(1) as f64
    );
    assert!(frames >= 100, "only {frames} frames: no heartbeats?");
    assert!(
        frames >= 2 * batches,
        "{frames} frames in {batches} batches: heartbeats were not gathered"
    );
    t.stop().await;
}

/// `writers` concurrent writers on group 0, ten writes each to a key of
/// their own, each acknowledged before the next.
async fn write_ten_each(t: &Arc<Trio>, writers: u64) {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let t = t.clone();
            tokio::spawn(async move {
                for i in 0..10u64 {
                    t.write(0, format!("k{w}"), w * 10 + i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Shard 0's leader, once there is one, and one of its followers.
async fn leader_and_follower(t: &Trio) -> (Node, Node) {
    eventually("a leader", 30, async || t.leader(0).is_some()).await;
    let leader = t.leader(0).unwrap();
    let follower = t
        .live()
        .into_iter()
        .find(|n| n.node_id() != leader.node_id())
        .unwrap();
    (leader, follower)
}

/// Every node comes to hold each writer's ten writes of
/// [`write_ten_each`], once each, in the order written.
async fn every_node_holds_all(t: &Trio, writers: u64) {
    for n in t.live() {
        eventually("every node holds all the writes", 30, async || {
            n.with_app(0, move |a: &Counters| {
                let st = a.state.lock().unwrap();
                !st.index_went_back
                    && (0..writers).all(|w| {
                        let ids: Vec<u64> = (w * 10..w * 10 + 10).collect();
                        st.counters.get(&format!("k{w}")) == Some(&(10, ids))
                    })
            })
            .await
            .unwrap_or(false)
        })
        .await;
    }
}

/// A busy group's replication is pipelined: with 64 writers on one group
/// (fsync on, so a follower's answer takes a disk flush), the leader sends
/// its next appends before the last is answered, and every write is on
/// every node afterwards, once, in each writer's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_groups_appends_are_pipelined() {
    let _serial = SERIAL.lock().await;
    let t = Trio::start(1, |c| c.fsync = true).await;
    eventually("a leader", 30, async || t.leader(0).is_some()).await;
    let t = Arc::new(t);
    write_ten_each(&t, 64).await;
    let (sent, peak) = t
        .live()
        .iter()
        .map(|n| n.pipelined_counters())
        .fold((0, 0), |(s, p), (ns, np)| (s + ns, p.max(np)));
    eprintln!("{sent} pipelined appends, at most {peak} unanswered at once");
    assert!(sent > 0, "no append was pipelined");
    assert!(
        peak >= 2,
        "never more than {peak} append unanswered: not pipelined"
    );
    every_node_holds_all(&t, 64).await;
    let mut t = Arc::try_unwrap(t).ok().expect("writers done");
    t.stop().await;
}

/// A rolling upgrade: a follower of a build without pipelined appends
/// refuses their frame kind; the leader then replicates to it one append at
/// a time (and to it alone: the other follower keeps its pipeline), and
/// every write reaches every node once, in each writer's order. Once that
/// follower restarts as a newer build, it is sent pipelined appends again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_peer_is_sent_one_append_at_a_time() {
    let _serial = SERIAL.lock().await;
    let t = Trio::start(1, |c| c.fsync = true).await;
    let (leader, older) = leader_and_follower(&t).await;
    older.set_refuse_pipelined(true);
    let t = Arc::new(t);
    write_ten_each(&t, 32).await;
    assert_eq!(
        leader.peers_without_pipelining(),
        vec![older.node_id()],
        "only the older peer falls back"
    );
    every_node_holds_all(&t, 32).await;
    // the older peer is upgraded: it restarts without the switch, on a new
    // stream, and is sent pipelined appends again
    let i = older.node_id() as usize - 1;
    drop(older);
    let mut t = Arc::try_unwrap(t).ok().expect("writers done");
    t.nodes[i].take().unwrap().shutdown().await.unwrap();
    t.up(i).await;
    let t = Arc::new(t);
    eventually("pipelining to the upgraded peer again", 30, async || {
        t.write(0, "after".into(), 1_000).await;
        leader.peers_without_pipelining().is_empty()
    })
    .await;
    drop(leader);
    let mut t = Arc::try_unwrap(t).ok().expect("no writer left");
    t.stop().await;
}

/// A follower that serves no node-pair stream (a build from before it) is
/// replicated to with one unary call a message, and every write reaches
/// it; the leader offers a stream again once the retry interval has passed,
/// so a peer still without one stays on unary calls and one that serves it
/// again (upgraded) is back on the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_stream_gets_unary_calls_and_the_stream_again() {
    let _serial = SERIAL.lock().await;
    let t = Trio::start(1, |c| c.fsync = true).await;
    let (leader, older) = leader_and_follower(&t).await;
    leader.set_stream_retry(Duration::from_millis(300));
    // its open streams end at their next batch; new ones are refused
    older.set_refuse_streams(true);
    let t = Arc::new(t);
    eventually("the older peer on unary calls", 30, async || {
        t.write(0, "probe".into(), 1_000).await;
        leader.peers_on_unary_calls() == vec![older.node_id()]
    })
    .await;
    write_ten_each(&t, 16).await;
    every_node_holds_all(&t, 16).await;
    // past the retry interval the stream is tried again, refused again,
    // and the peer stays on unary calls, still sent every write
    tokio::time::sleep(Duration::from_millis(600)).await;
    eventually("the retried peer still on unary calls", 30, async || {
        t.write(0, "again".into(), 1_001).await;
        leader.peers_on_unary_calls() == vec![older.node_id()]
    })
    .await;
    eventually(
        "the older peer sent the writes after the retry",
        30,
        async || {
            older
                .with_app(0, |a: &Counters| {
                    a.state.lock().unwrap().counters.contains_key("again")
                })
                .await
                .unwrap_or(false)
        },
    )
    .await;
    // upgraded: it serves the stream, and the leader comes back to it
    older.set_refuse_streams(false);
    eventually("the upgraded peer back on the stream", 30, async || {
        t.write(0, "after".into(), 1_003).await;
        leader.peers_on_unary_calls().is_empty()
    })
    .await;
    every_node_holds_all(&t, 16).await;
    drop((leader, older));
    let mut t = Arc::try_unwrap(t).ok().expect("no writer left");
    t.stop().await;
}

/// A follower's service in the tests below: answers "NODE:REQUEST" and
/// counts what it served.
struct Echo {
    node: u64,
    served: AtomicU64,
}

impl admit_raft::AppFrames for Echo {
    fn serve(
        &self,
        payload: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, tonic::Status>> + Send>>
    {
        self.served.fetch_add(1, Ordering::Relaxed);
        let mut answer = format!("{}:", self.node).into_bytes();
        answer.extend_from_slice(&payload);
        Box::pin(async move { Ok(answer) })
    }
}

/// Requests of the service above travel on the stream the leader already
/// keeps to a follower and come back with the follower service's answer;
/// where no stream is open, or the peer is a build without streams, the
/// call says that nothing was sent (the service then uses its own call)
/// and the peer served nothing; a peer whose service serves none yet
/// refuses, and the caller learns that the outcome is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_requests_ride_the_stream_or_are_not_sent() {
    let _serial = SERIAL.lock().await;
    let t = Trio::start(1, |_| {}).await;
    let (leader, follower) = leader_and_follower(&t).await;
    let other = t
        .live()
        .into_iter()
        .find(|n| n.node_id() != leader.node_id() && n.node_id() != follower.node_id())
        .unwrap();
    let echo = Arc::new(Echo {
        node: follower.node_id(),
        served: AtomicU64::new(0),
    });
    follower.serve_app_frames(echo.clone());
    let ttl = Duration::from_secs(5);
    // no node 99: nothing to send it on
    assert!(matches!(
        leader.app_call(99, b"x".to_vec(), ttl).await,
        Err(AppCallError::NotSent)
    ));
    // the leader's appends open its streams to the followers
    t.write(0, "k".into(), 1).await;
    let want = format!("{}:ping", follower.node_id()).into_bytes();
    eventually("the request answered on the stream", 30, async || {
        matches!(leader.app_call(follower.node_id(), b"ping".to_vec(), ttl).await, Ok(a) if a == want)
    })
    .await;
    assert!(echo.served.load(Ordering::Relaxed) >= 1);
    // (until the leader's stream to it is open, NotSent)
    eventually(
        "the peer without a service refuses",
        30,
        async || match leader
            .app_call(other.node_id(), b"ping".to_vec(), ttl)
            .await
        {
            Err(AppCallError::Failed(s)) => {
                assert_eq!(s.code(), Code::Unavailable, "{s:?}");
                true
            }
            Err(AppCallError::NotSent) => false,
            r => panic!("a peer without a service: {r:?}"),
        },
    )
    .await;
    // an older build: no stream, so the request is not sent at all
    leader.set_stream_retry(Duration::from_secs(600));
    follower.set_refuse_streams(true);
    eventually("the older peer on unary calls", 30, async || {
        t.write(0, "probe".into(), 2).await;
        leader.peers_on_unary_calls() == vec![follower.node_id()]
    })
    .await;
    let before = echo.served.load(Ordering::Relaxed);
    assert!(matches!(
        leader
            .app_call(follower.node_id(), b"ping".to_vec(), ttl)
            .await,
        Err(AppCallError::NotSent)
    ));
    assert_eq!(echo.served.load(Ordering::Relaxed), before);
    drop((leader, follower, other));
    let mut t = t;
    t.stop().await;
}

/// A peer of a build that has the node-pair stream but not the service's
/// requests on it (a rolling upgrade) refuses the first one, which comes
/// back "not sent"; the stream remembers, so later requests are not put on
/// it at all (here the peer would answer them again, and does not get
/// them), until a new stream to the peer opens, as a restarted, perhaps
/// upgraded, peer gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_refused_a_request_of_the_service_carries_no_more() {
    let _serial = SERIAL.lock().await;
    let t = Trio::start(1, |_| {}).await;
    let (leader, follower) = leader_and_follower(&t).await;
    let echo = Arc::new(Echo {
        node: follower.node_id(),
        served: AtomicU64::new(0),
    });
    follower.serve_app_frames(echo.clone());
    let ttl = Duration::from_secs(5);
    let want = format!("{}:ping", follower.node_id()).into_bytes();
    t.write(0, "k".into(), 1).await;
    eventually("the request answered on the stream", 30, async || {
        matches!(leader.app_call(follower.node_id(), b"ping".to_vec(), ttl).await, Ok(a) if a == want)
    })
    .await;
    assert!(leader.peers_refusing_app_frames().is_empty());

    // the older build: refused, nothing served, and remembered
    follower.set_refuse_app_frames(true);
    let served = echo.served.load(Ordering::Relaxed);
    let r = leader
        .app_call(follower.node_id(), b"ping".to_vec(), ttl)
        .await;
    assert!(matches!(r, Err(AppCallError::NotSent)), "{r:?}");
    assert_eq!(echo.served.load(Ordering::Relaxed), served);
    assert_eq!(leader.peers_refusing_app_frames(), vec![follower.node_id()]);
    // the peer would serve it now; the stream that refused does not ask
    follower.set_refuse_app_frames(false);
    for _ in 0..3 {
        let r = leader
            .app_call(follower.node_id(), b"ping".to_vec(), ttl)
            .await;
        assert!(matches!(r, Err(AppCallError::NotSent)), "{r:?}");
    }
    assert_eq!(echo.served.load(Ordering::Relaxed), served);

    // the peer "restarts": its stream ends, a new one opens without the mark
    leader.set_stream_retry(Duration::from_millis(100));
    follower.set_refuse_streams(true);
    eventually("the stream to the peer ended", 30, async || {
        t.write(0, "probe".into(), 2).await;
        leader.peers_on_unary_calls() == vec![follower.node_id()]
    })
    .await;
    follower.set_refuse_streams(false);
    eventually("the request answered on the new stream", 30, async || {
        t.write(0, "probe".into(), 3).await;
        matches!(leader.app_call(follower.node_id(), b"ping".to_vec(), ttl).await, Ok(a) if a == want)
    })
    .await;
    assert!(leader.peers_refusing_app_frames().is_empty());
    drop((leader, follower));
    let mut t = t;
    t.stop().await;
}

/// One node serving its Raft service behind a guard that lets a stream
/// open and then asks `allowed` again for every batch.
async fn guarded(allowed: Arc<AtomicBool>) -> (Node, tempfile::TempDir, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), 2);
    c.fsync = false;
    let node = RaftNode::start(c, |_| Counters::default()).await.unwrap();
    let addr = common::serve_behind(&node, move |mut req: tonic::Request<()>| {
        let allowed = allowed.clone();
        req.extensions_mut().insert(PeerCheck::new(move || {
            if allowed.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(tonic::Status::permission_denied("not a member any more"))
            }
        }));
        Ok(req)
    })
    .await;
    (node, dir, addr)
}

fn vote(id: u64, cluster: u64) -> RaftBatch {
    // an undecodable vote: it passes every check and fails in the group
    RaftBatch {
        frames: vec![RaftFrame {
            id,
            group: 0,
            kind: RaftRpcKind::Vote as i32,
            payload: vec![0xff; 3],
        }],
        cluster,
    }
}

async fn next(replies: &mut tonic::Streaming<RaftReplyBatch>) -> Option<(u64, Code)> {
    let b = tokio::time::timeout(Duration::from_secs(10), replies.message())
        .await
        .expect("no reply within 10 s");
    let b = b.ok().flatten()?;
    let r = &b.replies[0];
    Some((r.id, Code::from(r.refused_code)))
}

/// Frames reach the group (and fail there on their payload) while the
/// guard lets the sender in; once it says the sender is no longer a
/// member, the next batch on the same stream is refused and the stream
/// ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_is_checked_against_the_membership() {
    let _serial = SERIAL.lock().await;
    let allowed = Arc::new(AtomicBool::new(true));
    let (node, _dir, addr) = guarded(allowed.clone()).await;
    let mut client = RaftTransportClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let mut replies = client.stream(outbound).await.unwrap().into_inner();

    // this cluster (0: not known yet) passes, then the payload fails
    tx.send(vote(1, 0)).await.unwrap();
    assert_eq!(next(&mut replies).await, Some((1, Code::InvalidArgument)));
    tx.send(vote(2, 0)).await.unwrap();
    assert_eq!(next(&mut replies).await, Some((2, Code::InvalidArgument)));
    // the sender left the membership: refused, and the stream ends
    allowed.store(false, Ordering::SeqCst);
    tx.send(vote(3, 0)).await.unwrap();
    assert_eq!(next(&mut replies).await, Some((3, Code::PermissionDenied)));
    assert_eq!(next(&mut replies).await, None, "the stream stayed open");
    node.shutdown().await.unwrap();
}
