//! Quiescent groups on three real nodes (loopback): an idle group stops
//! heartbeating, wakes on a proposal without an election, fails over when
//! its leader's node dies, and a quiesced leader that is cut off never
//! holds a lease while a new leader commits.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use admit_raft::RaftNode;
use common::{config, count, Add, Counters};

type Node = RaftNode<Counters>;

const SHARDS: u32 = 2;

use common::ports::free_addr;

/// Three nodes bootstrapped from static peers; groups quiesce after 200 ms.
/// `slow`: heartbeat 100 ms, election timeout 1-2 s (only a stall of a
/// second elects, so a test that asserts "no election" holds on a loaded
/// machine); otherwise the tests' usual 50 ms and 200-400 ms.
async fn start_three(slow: bool) -> (Vec<tempfile::TempDir>, Vec<Node>) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
    let peers: BTreeMap<u64, String> = (0..3)
        .map(|i| (i as u64 + 1, addrs[i].to_string()))
        .collect();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut c = config(dirs[i].path(), SHARDS);
        c.node_id = i as u64 + 1;
        c.advertise_addr = addrs[i].to_string();
        c.listen_addr = Some(addrs[i]);
        c.fsync = false;
        c.peers = peers.clone();
        c.reconcile_interval = Duration::from_millis(150);
        // no transfers on their own: the tests follow one leader
        c.balance_leaders = false;
        c.write_timeout = Some(Duration::from_secs(3));
        c.quiesce_after = Some(Duration::from_millis(200));
        if slow {
            c.heartbeat = Duration::from_millis(100);
            c.election_timeout = (Duration::from_millis(1_000), Duration::from_millis(2_000));
        }
        nodes.push(RaftNode::start(c, |_| Counters::default()).await.unwrap());
    }
    (dirs, nodes)
}

async fn eventually(what: &str, secs: u64, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f().await {
            return t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {secs} s waiting for {what}");
}

fn add(key: &str, id: u64) -> Add {
    Add {
        key: key.into(),
        id,
        by: 1,
    }
}

/// The leader of `shard` with a lease, after a first write through it.
async fn leader_after_a_write(nodes: &[Node], shard: u32) -> Node {
    let mut found = None;
    eventually("a leader that takes a write", 30, async || {
        for n in nodes {
            if n.leader(shard) == Some(n.node_id())
                && n.is_leader_with_lease(shard)
                && n.write(shard, add("first", n.node_id())).await.is_ok()
            {
                found = Some(n.clone());
                return true;
            }
        }
        false
    })
    .await;
    found.unwrap()
}

/// Waits until `shard` is quiesced on every node in `nodes`. Reads only
/// the quiescence flags and leaders (a lease check would wake the group).
async fn all_quiesced(nodes: &[Node], shard: u32) {
    let t = eventually("the group to quiesce on every node", 20, async || {
        nodes.iter().all(|n| n.is_quiesced(shard))
    })
    .await;
    eprintln!("shard {shard} quiesced on all nodes after {t:?}");
}

fn term(n: &Node, shard: u32) -> u64 {
    n.shard_infos()[shard as usize].term
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiesced_group_wakes_on_a_proposal_without_an_election() {
    let (_dirs, nodes) = start_three(true).await;
    let l = leader_after_a_write(&nodes, 0).await;
    all_quiesced(&nodes, 0).await;
    // every group of an idle cluster quiesces, the registry group too
    eventually("every group quiesced on every node", 20, async || {
        nodes
            .iter()
            .all(|n| n.quiesced_groups() == SHARDS as usize + 1)
    })
    .await;
    let t0 = term(&l, 0);

    l.write(0, add("k", 1)).await.unwrap();
    assert!(
        !l.is_quiesced(0),
        "the proposal woke the group before it was answered"
    );
    for n in &nodes {
        eventually("the write on every replica", 10, async || {
            count(n, 0, "k").await == 1
        })
        .await;
    }
    eventually("the lease renewed", 10, async || l.is_leader_with_lease(0)).await;
    // and it quiesces again, under the same leader in the same term: the
    // wake-up cost no election
    all_quiesced(&nodes, 0).await;
    for n in &nodes {
        assert_eq!(n.leader(0), Some(l.node_id()), "node {}", n.node_id());
        assert_eq!(term(n, 0), t0, "node {}", n.node_id());
    }
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}

/// Idles group 0 quiesced under one leader for three leases (so its lease
/// ran out); returns that leader and its term. A few tries: on a loaded
/// machine the group may change leader while it settles.
async fn idle_past_the_lease(nodes: &[Node]) -> (Node, u64) {
    let mut l = leader_after_a_write(nodes, 0).await;
    for _ in 0..5 {
        all_quiesced(nodes, 0).await;
        let t0 = term(&l, 0);
        tokio::time::sleep(l.lease() * 3).await;
        let same = nodes
            .iter()
            .all(|n| n.is_quiesced(0) && n.leader(0) == Some(l.node_id()));
        if same && term(&l, 0) == t0 {
            return (l, t0);
        }
        l = leader_after_a_write(nodes, 0).await;
    }
    panic!("the group never stayed quiesced under one leader");
}

/// openraft takes a proposal only from a leader a quorum acknowledged
/// within the lease; a quiesced leader's lease runs out while it idles. Its
/// first proposal after an idle spell longer than the lease must still be
/// accepted (the node renews the lease first), not answered "no leader".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiesced_leader_takes_its_first_proposal_after_the_lease_ran_out() {
    let (_dirs, nodes) = start_three(false).await;
    let (l, t0) = idle_past_the_lease(&nodes).await;
    let r = l.write(0, add("after-idle", 1)).await;
    assert!(
        r.is_ok(),
        "the quiesced leader refused its first proposal after {:?} idle: {r:?}",
        l.lease() * 3
    );
    assert_eq!(term(&l, 0), t0, "the proposal took no election");
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}

/// A quiesced leader whose lease ran out renews it when asked to ensure it
/// (a heartbeat round; a directory sweep asks so before it answers), with
/// no election; a follower has no lease to ensure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiesced_leader_renews_its_lapsed_lease_when_asked() {
    let (_dirs, nodes) = start_three(false).await;
    let (l, t0) = idle_past_the_lease(&nodes).await;
    // generous: a heartbeat round on loopback, on a loaded machine
    assert!(
        l.ensure_lease(0, Duration::from_secs(10)).await,
        "the quiesced leader did not renew its lease after {:?} idle",
        l.lease() * 3
    );
    assert_eq!(term(&l, 0), t0, "the renewal took no election");
    let f = nodes.iter().find(|n| n.node_id() != l.node_id()).unwrap();
    assert!(!f.ensure_lease(0, Duration::from_millis(100)).await);
    assert!(
        !l.ensure_lease(99, Duration::from_millis(100)).await,
        "no such shard"
    );
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_quiesced_leader_has_no_lease_while_a_new_leader_commits() {
    let (_dirs, nodes) = start_three(false).await;
    let old = leader_after_a_write(&nodes, 0).await;
    all_quiesced(&nodes, 0).await;

    old.set_isolated(true);
    let others: Vec<Node> = nodes
        .iter()
        .filter(|n| n.node_id() != old.node_id())
        .cloned()
        .collect();
    // the followers stop hearing the old leader's node, wake, elect, and
    // the new leader commits what the old one's state does not have (an
    // opt-out, in the server's terms)
    let mut new = None;
    let took = eventually("a new leader that commits", 30, async || {
        for n in &others {
            if n.leader(0) == Some(n.node_id()) && n.write(0, add("opt-out", 1)).await.is_ok() {
                new = Some(n.clone());
                return true;
            }
        }
        false
    })
    .await;
    let new = new.unwrap();
    eprintln!(
        "quiesced leader {} cut off: node {} leads and committed after {took:?}",
        old.node_id(),
        new.node_id()
    );
    // The old leader still believes it leads (it heard of no one else),
    // yet it must not answer from its state: no lease.
    assert_eq!(old.leader(0), Some(old.node_id()));
    assert!(
        !old.is_leader_with_lease(0),
        "a cut-off quiesced leader claimed a lease after a new leader committed"
    );
    assert_eq!(count(&old, 0, "opt-out").await, 0);
    let r = tokio::time::timeout(Duration::from_secs(3), old.ensure_linearizable(0)).await;
    assert!(
        !matches!(r, Ok(Ok(()))),
        "the cut-off leader served a linearizable read"
    );
    assert!(!old.is_leader_with_lease(0));
    // nor may it renew its lease (no quorum hears it): the sweep's check
    assert!(
        !old.ensure_lease(0, old.lease()).await,
        "a cut-off leader renewed its lease"
    );

    // back in touch, it follows a newer leader (the new one, or one after
    // it on a loaded machine) and gets the write
    old.set_isolated(false);
    eventually("the old leader catches up", 30, async || {
        old.leader(0).is_some_and(|l| l != old.node_id()) && count(&old, 0, "opt-out").await == 1
    })
    .await;
    for n in &nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_of_a_quiesced_group_elect_when_the_leaders_node_dies() {
    let (_dirs, nodes) = start_three(false).await;
    let old = leader_after_a_write(&nodes, 0).await;
    all_quiesced(&nodes, 0).await;

    let t0 = Instant::now();
    old.crash().await;
    let others: Vec<Node> = nodes
        .iter()
        .filter(|n| n.node_id() != old.node_id())
        .cloned()
        .collect();
    let mut id = 0;
    eventually("a new leader that commits", 30, async || {
        id += 1;
        for n in &others {
            if n.leader(0) == Some(n.node_id()) && n.write(0, add("after", id)).await.is_ok() {
                return true;
            }
        }
        false
    })
    .await;
    // Measured, not asserted: it depends on the machine's load.
    eprintln!(
        "leader's node died: first commit on a new leader after {:?} \
         (election timeout 200-400 ms)",
        t0.elapsed()
    );
    for n in &others {
        n.shutdown().await.unwrap();
    }
}
