//! A snapshot being built does not stall the node (issue 11): while one
//! shard's snapshot is held up, in its encoding or in the write of its
//! bytes, writes to that shard and to the other shards are applied and
//! answered; once it is let go the snapshot completes, the log below it is
//! purged, and a restart recovers from it.
//!
//! The hold-ups are gates the test opens (no timing): the App's snapshot
//! job waits on one, and [`NodeConfig::snapshot_write_hook`] on the other.
//! A write must be answered within [`LIVE`] while the gate is shut: a
//! liveness bound (far above a write's normal latency), not a measurement.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use admit_raft::{App, NodeConfig, RaftNode, SnapshotHook, SnapshotJob};
use common::gate::{Gate, OpenOnDrop};
use common::{config, eventually, Add, Counters, State};

/// How long a write may take while a snapshot is held up.
const LIVE: Duration = Duration::from_secs(10);

/// [`Counters`] whose snapshot job waits at a gate before it hands over
/// the bytes it copied.
#[derive(Debug, Clone)]
struct Gated {
    inner: Counters,
    gate: Option<Arc<Gate>>,
}

impl App for Gated {
    type Command = Add;
    type Response = u64;

    fn apply(&mut self, index: u64, cmd: Add) -> u64 {
        self.inner.apply(index, cmd)
    }

    fn snapshot(&self) -> Vec<u8> {
        self.inner.snapshot()
    }

    fn snapshot_job(&self) -> SnapshotJob {
        let bytes = self.inner.snapshot();
        let gate = self.gate.clone();
        Box::new(move || {
            if let Some(g) = gate {
                g.pass();
            }
            bytes
        })
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.inner.restore(bytes)
    }

    fn check_snapshot(bytes: &[u8]) -> Result<(), String> {
        Counters::check_snapshot(bytes)
    }
}

type Node = RaftNode<Gated>;

fn cfg(dir: &Path) -> NodeConfig {
    let mut c = config(dir, 2);
    // snapshots only when the test asks; the log below one is purged at once
    c.snapshot_every = 1_000_000;
    c.keep_logs_after_snapshot = 0;
    c.purge_batch_size = 1;
    c
}

/// Starts a node whose shard 0 snapshot jobs wait at `gate` (if any).
async fn start(c: NodeConfig, gate: Option<Arc<Gate>>) -> Node {
    RaftNode::start(c, move |shard| Gated {
        inner: Counters::default(),
        gate: gate.clone().filter(|_| shard == 0),
    })
    .await
    .expect("node starts")
}

fn add(id: u64) -> Add {
    Add {
        key: "k".into(),
        id,
        by: 1,
    }
}

async fn write_live(node: &Node, shard: u32, id: u64) {
    tokio::time::timeout(LIVE, node.write(shard, add(id)))
        .await
        .unwrap_or_else(|_| {
            panic!("write {id} to shard {shard} not answered while a snapshot is held up")
        })
        .expect("write acknowledged");
}

async fn state(node: &Node, shard: u32) -> State {
    node.with_app(shard, |a: &Gated| a.inner.state.lock().unwrap().clone())
        .await
        .unwrap()
}

/// Lets the gate go, waits for the snapshot of shard 0 and its purge, then
/// restarts from the data dir and checks both shards recovered (shard 0's
/// log below the snapshot is gone: its state came from the snapshot).
async fn release_and_restart(node: Node, gate: &Gate, snap: JoinHandle<()>, c: NodeConfig) {
    gate.open();
    tokio::time::timeout(Duration::from_secs(60), snap)
        .await
        .expect("snapshot completes once released")
        .expect("snapshot task");
    eventually("shard 0's log purged below its snapshot", 30, async || {
        node.purged_index(0).is_some_and(|p| p >= 10)
    })
    .await;
    let before = [state(&node, 0).await, state(&node, 1).await];
    node.shutdown().await.unwrap();
    drop(node);
    let node = start(c, None).await;
    assert!(node.purged_index(0).is_some_and(|p| p >= 10));
    let after = [state(&node, 0).await, state(&node, 1).await];
    assert_eq!(
        after, before,
        "restart recovers from the snapshot and the log after it"
    );
    node.shutdown().await.unwrap();
}

/// Writes 10 commands to shard 0, starts its snapshot, waits until the
/// snapshot is held up at `gate`, then writes to both shards: each write
/// must be answered while the snapshot stays held up. Returns the snapshot.
async fn write_while_held(node: &Node, gate: &Gate, shards: [u32; 2]) -> JoinHandle<()> {
    for id in 1..=10 {
        node.write(0, add(id)).await.unwrap();
    }
    let snap = {
        let node = node.clone();
        tokio::spawn(async move { node.snapshot(0).await.expect("snapshot") })
    };
    eventually("the snapshot at its gate", 30, async || gate.reached() == 1).await;
    for id in 11..=20 {
        for shard in shards {
            write_live(node, shard, id).await;
        }
    }
    assert_eq!(gate.reached(), 1, "the snapshot is still held up");
    assert!(!snap.is_finished());
    snap
}

/// The state machine task only copies the state: while the encoding waits
/// at its gate, new writes to the same shard are applied and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_being_encoded_does_not_stop_its_shard() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(gate.clone());
    let c = cfg(dir.path());
    let node = start(c.clone(), Some(gate.clone())).await;
    let snap = write_while_held(&node, &gate, [0, 1]).await;
    release_and_restart(node, &gate, snap, c).await;
}

/// The snapshot's bytes are written beside the journal's writer: while that
/// write waits at its gate, the other shard's appends (and the same
/// shard's) are made durable and answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_being_written_does_not_stop_the_other_shards() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(gate.clone());
    let mut c = cfg(dir.path());
    c.fsync = true;
    let plain = c.clone();
    let g = gate.clone();
    c.snapshot_write_hook = Some(SnapshotHook(Arc::new(move |shard| {
        if shard == 0 {
            g.pass();
        }
    })));
    let node = start(c, None).await;
    let snap = write_while_held(&node, &gate, [1, 0]).await;
    release_and_restart(node, &gate, snap, plain).await;
}
