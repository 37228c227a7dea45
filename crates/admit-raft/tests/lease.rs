//! The fast path's lease check (`RaftNode::is_leader_with_lease`) while an
//! entry is committed but not yet applied.
//!
//! Such an entry has been answered to no one, so a read may be ordered
//! before it: the check holds while the entry applies, and a read load with
//! writes flowing is not turned into log writes (it was: every read that
//! arrived between an entry's commit and its apply took the replicated
//! path). What must still hold: a leader answers reads only once it has
//! applied an entry of its own term, so every write answered in an earlier
//! term is in the state it reads.
//!
//! The applies are held at a gate the test opens (no timing): the App waits
//! at it when it applies a command with the key `hold`. A held apply blocks
//! a runtime thread, so the runtimes have more threads than can be held.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use admit_raft::{NodeConfig, RaftNode};
use common::gate::{Gate, Held, OpenOnDrop};
use common::ports::free_addr;
use common::{config, eventually, Add, Counters};

type Node = RaftNode<Held>;

fn add(key: &str, id: u64) -> Add {
    Add {
        key: key.into(),
        id,
        by: 1,
    }
}

/// Committed and applied index of `shard` as `node` reports them.
fn positions(node: &Node, shard: u32) -> (Option<u64>, Option<u64>) {
    let i = node
        .shard_infos()
        .into_iter()
        .find(|i| i.shard == shard)
        .expect("shard info");
    (i.committed, i.applied)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_committed_entry_being_applied_does_not_take_the_lease_away() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(gate.clone());
    let g = gate.clone();
    let node: Node = RaftNode::start(config(dir.path(), 1), move |_| Held {
        inner: Counters::default(),
        gate: g.clone(),
    })
    .await
    .unwrap();
    node.write(0, add("k", 1)).await.unwrap();
    eventually("the lease after a write", 10, async || {
        node.is_leader_with_lease(0)
    })
    .await;

    // an entry committed (a sole voter commits what it wrote) whose apply
    // is held
    let writer = {
        let node = node.clone();
        tokio::spawn(async move { node.write(0, add("hold", 2)).await })
    };
    eventually("the held apply started", 10, async || gate.reached() == 1).await;
    eventually("committed past applied in the metrics", 10, async || {
        let (committed, applied) = positions(&node, 0);
        committed > applied
    })
    .await;

    // answered to no one yet: reads may be ordered before it
    assert!(
        node.is_leader_with_lease(0),
        "no lease while an unanswered entry applies: {:?}",
        positions(&node, 0)
    );
    assert!(!writer.is_finished(), "the held write was answered");

    gate.open();
    writer.await.unwrap().unwrap();
    assert!(node.is_leader_with_lease(0));
    node.shutdown().await.unwrap();
}

/// Three nodes on loopback whose Apps all hold `hold` commands at `gate`.
async fn three(gate: &Arc<Gate>) -> (Vec<tempfile::TempDir>, Vec<Node>) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut c: NodeConfig = config(dirs[i].path(), 1);
        c.node_id = i as u64 + 1;
        c.advertise_addr = addrs[i].to_string();
        c.listen_addr = Some(addrs[i]);
        c.fsync = false;
        c.peers = (0..3)
            .map(|j| (j as u64 + 1, addrs[j].to_string()))
            .collect();
        c.write_timeout = Some(Duration::from_secs(5));
        // the test moves the leader itself
        c.balance_leaders = false;
        let g = gate.clone();
        let node = RaftNode::start(c, move |_| Held {
            inner: Counters::default(),
            gate: g.clone(),
        })
        .await
        .unwrap();
        nodes.push(node);
    }
    (dirs, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 5)]
async fn a_new_leader_reads_only_after_applying_the_earlier_terms_entries() {
    let gate = Arc::new(Gate::default());
    let _open = OpenOnDrop(gate.clone());
    let (_dirs, nodes) = three(&gate).await;
    let leader = |nodes: &[Node]| {
        nodes
            .iter()
            .find(|n| n.leader(0) == Some(n.node_id()) && n.is_leader_with_lease(0))
            .cloned()
    };
    eventually("a leader with a lease", 20, async || {
        leader(&nodes).is_some()
    })
    .await;
    let old = leader(&nodes).unwrap();
    old.write(0, add("k", 1)).await.unwrap();

    // committed on a quorum, its apply held on every node
    let writer = {
        let old = old.clone();
        tokio::spawn(async move { old.write(0, add("hold", 2)).await })
    };
    eventually("the held apply started on the leader", 10, async || {
        gate.reached() >= 1
    })
    .await;

    // leadership moves to a node whose state machine is held at the entry
    // of the old term: it leads, a quorum acknowledges it, but the write
    // the old leader may answer any moment is not in its state yet
    let target = nodes
        .iter()
        .find(|n| n.node_id() != old.node_id())
        .unwrap()
        .clone();
    eventually("leadership moved", 20, async || {
        if target.leader(0) != Some(target.node_id()) {
            let _ = old.transfer_leader(0, target.node_id()).await;
        }
        target.leader(0) == Some(target.node_id())
    })
    .await;
    // acknowledged by a quorum in its term (a heartbeat round), still no
    // entry of that term applied
    tokio::time::sleep(target.lease()).await;
    assert!(
        !target.is_leader_with_lease(0),
        "lease reads before the old term's entries are applied: {:?}",
        positions(&target, 0)
    );

    gate.open();
    writer.await.unwrap().ok();
    eventually("the new leader's lease once applied", 20, async || {
        target.is_leader_with_lease(0)
    })
    .await;
    for n in nodes {
        n.shutdown().await.unwrap();
    }
}
