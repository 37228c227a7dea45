//! Real clusters on loopback: bootstrap from static config, failover,
//! restart from disk, adding and removing nodes, isolation, catch-up by
//! snapshot.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use admit_raft::{NodeConfig, NodeState, RaftNode};
use common::{config, eventually, Add, Counters, State};

type Node = RaftNode<Counters>;

use common::ports::free_addr;

struct Cluster {
    shards: u32,
    dirs: BTreeMap<u64, tempfile::TempDir>,
    addrs: BTreeMap<u64, SocketAddr>,
    peers: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, Node>,
    tweak: fn(&mut NodeConfig),
}

impl Cluster {
    fn new(n: u64, shards: u32, tweak: fn(&mut NodeConfig)) -> Self {
        let mut c = Cluster {
            shards,
            dirs: BTreeMap::new(),
            addrs: BTreeMap::new(),
            peers: BTreeMap::new(),
            nodes: BTreeMap::new(),
            tweak,
        };
        for id in 1..=n {
            c.reserve(id);
        }
        c.peers = c.addrs.iter().map(|(i, a)| (*i, a.to_string())).collect();
        c
    }

    fn reserve(&mut self, id: u64) {
        self.dirs.insert(id, tempfile::tempdir().unwrap());
        self.addrs.insert(id, free_addr());
    }

    fn cfg(&self, id: u64, bootstrap: bool) -> NodeConfig {
        let mut c = config(self.dirs[&id].path(), self.shards);
        c.node_id = id;
        c.advertise_addr = self.addrs[&id].to_string();
        c.listen_addr = Some(self.addrs[&id]);
        c.fsync = false;
        c.bootstrap = bootstrap;
        c.peers = self.peers.clone();
        c.reconcile_interval = Duration::from_millis(150);
        c.handoff_timeout = Duration::from_secs(2);
        c.write_timeout = Some(Duration::from_secs(3));
        (self.tweak)(&mut c);
        c
    }

    async fn start(&mut self, id: u64, bootstrap: bool) {
        let node = RaftNode::start(self.cfg(id, bootstrap), |_| Counters::default())
            .await
            .unwrap();
        self.nodes.insert(id, node);
    }

    async fn start_all(&mut self) {
        let ids: Vec<u64> = self.peers.keys().copied().collect();
        for id in ids {
            self.start(id, true).await;
        }
    }

    fn live(&self) -> Vec<Node> {
        self.nodes.values().cloned().collect()
    }

    async fn stop(&mut self, id: u64) {
        if let Some(n) = self.nodes.remove(&id) {
            n.shutdown().await.unwrap();
        }
    }

    async fn stop_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

fn leader_of(nodes: &[Node], shard: u32) -> Option<Node> {
    nodes
        .iter()
        .find(|n| n.leader(shard) == Some(n.node_id()) && n.is_leader_with_lease(shard))
        .cloned()
}

async fn all_have_leaders(nodes: &[Node], shards: u32) -> bool {
    (0..shards).all(|s| leader_of(nodes, s).is_some())
}

/// The node that leads `shard` with a valid lease, waited for: between two
/// reads of the cluster a shard may be between leaders (leader balancing
/// moves leaders on its own), so a test that needs "the leader" waits for
/// one rather than assuming the last check still holds.
async fn await_leader(nodes: &[Node], shard: u32) -> Node {
    let t0 = Instant::now();
    loop {
        if let Some(l) = leader_of(nodes, shard) {
            return l;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no leader of shard {shard} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Write `id` to `shard` through whichever node leads it, retrying until
/// acknowledged or `deadline`.
async fn write_retry(nodes: &[Node], shard: u32, key: &str, id: u64, deadline: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < deadline {
        if let Some(l) = leader_of(nodes, shard) {
            let cmd = Add {
                key: key.to_string(),
                id,
                by: 1,
            };
            if l.write(shard, cmd).await.is_ok() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn state(node: &Node, shard: u32) -> State {
    node.with_app(shard, |a: &Counters| a.state.lock().unwrap().clone())
        .await
        .unwrap()
}

fn ids_of(s: &State, key: &str) -> BTreeSet<u64> {
    s.counters
        .get(key)
        .map(|c| c.1.iter().copied().collect())
        .unwrap_or_default()
}

/// States of every shard on the leader, once every voter has applied the
/// leader's committed index and all replicas agree.
async fn converged_states(nodes: &[Node], shards: u32) -> Vec<State> {
    let mut out = Vec::new();
    for shard in 0..shards {
        let mut agreed = None;
        eventually("replicas converge", 60, async || {
            let Some(l) = leader_of(nodes, shard) else {
                return false;
            };
            let want = state(&l, shard).await;
            for n in nodes {
                if n.voters(shard).contains(&n.node_id()) && state(n, shard).await != want {
                    return false;
                }
            }
            agreed = Some(want);
            true
        })
        .await;
        out.push(agreed.unwrap());
    }
    out
}

/// Writes `Add { key: "w", id }` to shards round-robin through each shard's
/// current leader until stopped, recording every acknowledged write. Tests
/// swap the node list as nodes come and go, and check afterwards that every
/// acknowledged write is in the converged state.
struct Writer {
    acked: Arc<Mutex<Vec<(u32, u64, Instant)>>>,
    nodes: Arc<Mutex<Vec<Node>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(nodes: Vec<Node>, shards: u32, pause: Duration) -> Writer {
        let acked: Arc<Mutex<Vec<(u32, u64, Instant)>>> = Arc::default();
        let nodes = Arc::new(Mutex::new(nodes));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (acked, nodes, stop) = (acked.clone(), nodes.clone(), stop.clone());
            tokio::spawn(async move {
                let mut id = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    id += 1;
                    let shard = (id % shards as u64) as u32;
                    let now = nodes.lock().unwrap().clone();
                    if let Some(l) = leader_of(&now, shard) {
                        let cmd = Add {
                            key: "w".into(),
                            id,
                            by: 1,
                        };
                        if l.write(shard, cmd).await.is_ok() {
                            acked.lock().unwrap().push((shard, id, Instant::now()));
                        }
                    }
                    tokio::time::sleep(pause).await;
                }
            })
        };
        Writer {
            acked,
            nodes,
            stop,
            task,
        }
    }

    /// The nodes to write through from now on.
    fn set_nodes(&self, nodes: Vec<Node>) {
        *self.nodes.lock().unwrap() = nodes;
    }

    /// Stops writing; the acknowledged writes, in order.
    async fn finish(self) -> Vec<(u32, u64, Instant)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.nodes.lock().unwrap().clear();
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Every acknowledged write is present in `states`.
fn assert_all_present(states: &[State], acked: &[(u32, u64, Instant)]) {
    for (shard, id, _) in acked {
        assert!(
            ids_of(&states[*shard as usize], "w").contains(id),
            "acknowledged write {id} on shard {shard} lost"
        );
    }
    eprintln!("{} acknowledged writes all present", acked.len());
}

/// Writes were acknowledged on every shard (so `assert_all_present` has
/// something to check).
fn assert_acked_everywhere(acked: &[(u32, u64, Instant)], shards: u32) {
    let on: BTreeSet<u32> = acked.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(
        on.len(),
        shards as usize,
        "writes acknowledged only on shards {on:?} ({} in all)",
        acked.len()
    );
}

fn fast(_: &mut NodeConfig) {}

/// The cluster tests run one at a time: each runs 3-4 nodes with many
/// groups, and timings (failover, lease) mean little on 2 overloaded cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_failover_and_restart() {
    let _serial = SERIAL.lock().await;
    const S: u32 = 8;
    let mut c = Cluster::new(3, S, fast);
    let t0 = Instant::now();
    c.start_all().await;
    eventually("every shard has a leader", 60, async || {
        all_have_leaders(&c.live(), S).await
    })
    .await;
    eprintln!(
        "3-node bootstrap: all {S} shards led after {:?}",
        t0.elapsed()
    );
    eventually("3 voters everywhere", 60, async || {
        c.live()
            .iter()
            .all(|n| (0..S).all(|s| n.voters(s) == BTreeSet::from([1, 2, 3])))
    })
    .await;
    // Leader balance: every shard ends up led by its preferred leader. The
    // leaders are counted from the read that saw them all preferred (a
    // later read may catch a shard between leaders).
    let mut per_node: BTreeMap<u64, usize> = BTreeMap::new();
    eventually("preferred leaders", 60, async || {
        let nodes = c.live();
        per_node.clear();
        (0..S).all(|s| {
            let target = nodes[0].shard_infos()[s as usize].target.clone();
            let leader = leader_of(&nodes, s).map(|l| l.node_id());
            if let Some(l) = leader {
                *per_node.entry(l).or_default() += 1;
            }
            !target.is_empty() && leader == Some(target[0])
        })
    })
    .await;
    eprintln!("leaders per node: {per_node:?}");
    assert_eq!(per_node.len(), 3);
    assert!(per_node.values().all(|c| (2..=4).contains(c)));
    eventually("registry replicated to every node", 60, async || {
        c.live()
            .iter()
            .all(|n| n.nodes().len() == 3 && n.nodes().iter().all(|x| x.state == NodeState::Active))
    })
    .await;
    // the count the API asks on every call is the registry's
    assert!(c.live().iter().all(|n| n.node_count() == 3));

    // Continuous writes to shard 0 while its leader is killed.
    let writer = Writer::start(c.live(), S, Duration::from_millis(1));
    eventually("writes acknowledged before the crash", 60, async || {
        let acked = writer.acked.lock().unwrap();
        acked.len() > 20 && acked.iter().any(|(s, _, _)| *s == 0)
    })
    .await;
    let victim = await_leader(&c.live(), 0).await.node_id();
    let victim_node = c.nodes.remove(&victim).unwrap();
    writer.set_nodes(c.live());
    let killed_at = Instant::now();
    victim_node.crash().await; // no handoff: a crash
                               // Bound: many election timeouts (200-400 ms), for a loaded machine.
    eventually("shard 0 writable again", 60, async || {
        writer
            .acked
            .lock()
            .unwrap()
            .iter()
            .any(|(s, _, at)| *s == 0 && *at > killed_at)
    })
    .await;
    let failover = writer
        .acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, _, at)| *s == 0 && *at > killed_at)
        .map(|(_, _, at)| *at - killed_at)
        .min()
        .unwrap();
    // Measured, not asserted: the time depends on the machine's load.
    eprintln!(
        "failover: leader {victim} of shard 0 killed -> first acknowledged write {failover:?} \
         (election timeout 200-400 ms)"
    );

    // The killed node restarts from disk and catches up: it applies a write
    // acknowledged after its restart.
    drop(victim_node);
    c.start(victim, true).await;
    let restarted_at = Instant::now();
    writer.set_nodes(c.live());
    let restarted = c.nodes[&victim].clone();
    eventually("restarted node applies new writes", 60, async || {
        let after: Vec<(u32, u64)> = writer
            .acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, at)| *at > restarted_at)
            .map(|(s, id, _)| (*s, *id))
            .collect();
        for (s, id) in after {
            if ids_of(&state(&restarted, s).await, "w").contains(&id) {
                return true;
            }
        }
        false
    })
    .await;
    drop(restarted);
    // (every node handle is dropped by `finish`, so the journals can unlock
    // for the restart below)
    let acked = writer.finish().await;

    let before = converged_states(&c.live(), S).await;
    assert!(acked.len() > 20, "only {} writes acknowledged", acked.len());
    assert_all_present(&before, &acked);

    // Restart every node from disk: identical state, every shard led again.
    c.stop_all().await;
    let t0 = Instant::now();
    c.start_all().await;
    eventually("leaders after full restart", 60, async || {
        all_have_leaders(&c.live(), S).await
    })
    .await;
    eprintln!(
        "full restart from disk: all shards led after {:?}",
        t0.elapsed()
    );
    let after = converged_states(&c.live(), S).await;
    assert_eq!(before, after, "state after restarting every node");
    assert!(write_retry(&c.live(), 3, "after", 1, Duration::from_secs(30)).await);
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_then_remove_a_node() {
    let _serial = SERIAL.lock().await;
    const S: u32 = 8;
    let mut c = Cluster::new(3, S, fast);
    c.start_all().await;
    eventually("leaders", 60, async || all_have_leaders(&c.live(), S).await).await;
    eventually("registry", 30, async || {
        c.live().iter().all(|n| n.nodes().len() == 3)
    })
    .await;

    // Writers and a monitor (min voters per shard, shards without leader).
    let writer = Writer::start(c.live(), S, Duration::from_millis(2));
    let (nodes_now, stop) = (writer.nodes.clone(), writer.stop.clone());
    // shard -> fewest voters its leader ever had (absent: no leader seen)
    let min_voters: Arc<Mutex<BTreeMap<u32, usize>>> = Arc::default();
    let monitor = {
        let (nodes_now, stop, min_voters) = (nodes_now.clone(), stop.clone(), min_voters.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let nodes = nodes_now.lock().unwrap().clone();
                for s in 0..S {
                    if let Some(l) = leader_of(&nodes, s) {
                        let v = l.voters(s).len();
                        let mut m = min_voters.lock().unwrap();
                        let e = m.entry(s).or_insert(v);
                        *e = (*e).min(v);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Add node 4: it joins without bootstrapping; any member registers it.
    c.reserve(4);
    c.start(4, false).await;
    writer.set_nodes(c.live());
    let t0 = Instant::now();
    c.nodes[&2]
        .add_node(4, &c.addrs[&4].to_string())
        .await
        .unwrap();
    eventually("replicas moved onto node 4", 120, async || {
        let infos = c.nodes[&1].cluster_shard_infos().await;
        infos.iter().all(|i| {
            i.is_leader_view()
                && !i.changing
                && i.voters == i.target.iter().copied().collect::<BTreeSet<_>>()
                && i.target.len() == 3
        }) && infos.iter().filter(|i| i.voters.contains(&4)).count() >= 4
    })
    .await;
    let on4 = c.nodes[&1]
        .cluster_shard_infos()
        .await
        .iter()
        .filter(|i| i.voters.contains(&4))
        .count();
    eprintln!(
        "add node 4: {on4}/{S} shards have a replica on it after {:?}",
        t0.elapsed()
    );

    // Remove node 1: its replicas move away first, then it is Removed.
    let t0 = Instant::now();
    c.nodes[&4].remove_node(1).await.unwrap();
    eventually("node 1 removed", 120, async || {
        c.nodes[&2]
            .nodes()
            .iter()
            .any(|n| n.id == 1 && n.state == NodeState::Removed)
    })
    .await;
    eprintln!("remove node 1: Removed after {:?}", t0.elapsed());
    // a leader's view of every shard (a follower's may lag the last change)
    let mut infos = Vec::new();
    eventually("a leader's view of every shard", 60, async || {
        infos = c.nodes[&2].cluster_shard_infos().await;
        infos.iter().all(|i| i.is_leader_view())
    })
    .await;
    for i in &infos {
        assert!(!i.voters.contains(&1) && !i.learners.contains(&1), "{i:?}");
        assert_eq!(i.voters.len(), 3, "shard {} voters {:?}", i.shard, i.voters);
    }
    let err = c.nodes[&3].add_node(1, "127.0.0.1:1").await;
    assert!(err.is_err(), "a removed id must not be reused");

    let acked = writer.finish().await;
    monitor.await.unwrap();
    let min_voters = min_voters.lock().unwrap().clone();
    assert_eq!(
        min_voters.len(),
        S as usize,
        "the monitor saw a leader of only these shards: {min_voters:?}"
    );
    for (s, v) in &min_voters {
        assert!(*v >= 3, "shard {s} dropped to {v} voters");
    }
    c.stop(1).await;
    let live = c.live();
    eventually("leaders without node 1", 60, async || {
        all_have_leaders(&live, S).await
    })
    .await;
    let states = converged_states(&live, S).await;
    assert_acked_everywhere(&acked, S);
    assert_all_present(&states, &acked);
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_loses_lease_and_commits_nothing() {
    let _serial = SERIAL.lock().await;
    const S: u32 = 4;
    let mut c = Cluster::new(3, S, fast);
    c.start_all().await;
    eventually("leaders", 60, async || all_have_leaders(&c.live(), S).await).await;
    // shard 0's leader and the shards it leads, read together: its lease
    // may lapse for a moment between two reads on a loaded machine
    let (l, led) = loop {
        let l = await_leader(&c.live(), 0).await;
        let led: Vec<u32> = (0..S).filter(|s| l.is_leader_with_lease(*s)).collect();
        if led.contains(&0) {
            break (l, led);
        }
    };

    let others: Vec<Node> = c
        .live()
        .into_iter()
        .filter(|n| n.node_id() != l.node_id())
        .collect();
    let t0 = Instant::now();
    l.set_isolated(true);
    // Until the others lead every shard `l` led, poll both sides: `l` must
    // give up its lease before another node gains one (the others' view is
    // read first, so an overlap seen here is a real one).
    let mut lost = None;
    eventually("lease lost and new leaders elected", 60, async || {
        let mut all_new = true;
        for s in &led {
            let new = leader_of(&others, *s).is_some();
            let old = l.is_leader_with_lease(*s);
            assert!(!(new && old), "shard {s}: two leaders with a lease");
            all_new &= new;
        }
        if lost.is_none() && led.iter().all(|s| !l.is_leader_with_lease(*s)) {
            lost = Some(t0.elapsed());
        }
        all_new && lost.is_some()
    })
    .await;
    // Measured, not asserted: the time depends on the machine's load.
    eprintln!(
        "isolated leader: lease lost after {lost:?} (lease = election timeout max = 400 ms), \
         new leaders after {:?}",
        t0.elapsed()
    );
    // The others keep serving.
    assert!(write_retry(&others, 0, "majority", 2, Duration::from_secs(30)).await);
    // openraft's own lease (the full election timeout max) ended before the
    // new leader could be elected; now a linearizable read needs a quorum
    // the isolated node cannot reach.
    let r = tokio::time::timeout(Duration::from_secs(3), l.ensure_linearizable(0)).await;
    assert!(
        !matches!(r, Ok(Ok(()))),
        "isolated node served a linearizable read"
    );

    // A write on the isolated node is never acknowledged.
    let r = l
        .write(
            0,
            Add {
                key: "alone".into(),
                id: 1,
                by: 1,
            },
        )
        .await;
    assert!(r.is_err(), "isolated write acknowledged: {r:?}");

    // Heal: the isolated entry is discarded everywhere.
    l.set_isolated(false);
    let states = converged_states(&c.live(), S).await;
    assert!(
        ids_of(&states[0], "alone").is_empty(),
        "minority write committed"
    );
    assert!(ids_of(&states[0], "majority").contains(&2));
    assert!(ids_of(&state(&l, 0).await, "alone").is_empty());
    c.stop_all().await;
}

fn small_snapshots(c: &mut NodeConfig) {
    c.snapshot_every = 20;
    c.keep_logs_after_snapshot = 0;
    c.purge_batch_size = 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_follower_catches_up_by_snapshot() {
    let _serial = SERIAL.lock().await;
    const S: u32 = 2;
    let mut c = Cluster::new(3, S, small_snapshots);
    c.start_all().await;
    eventually("leaders", 60, async || all_have_leaders(&c.live(), S).await).await;
    for id in 0..20 {
        assert!(write_retry(&c.live(), (id % 2) as u32, "a", id, Duration::from_secs(30)).await);
    }
    // Stop a follower of shard 0 (graceful: it hands over what it leads).
    let leader = await_leader(&c.live(), 0).await.node_id();
    let follower = (1..=3u64).find(|id| *id != leader).unwrap();
    c.stop(follower).await;
    for id in 100..400 {
        assert!(write_retry(&c.live(), (id % 2) as u32, "b", id, Duration::from_secs(30)).await);
    }
    let l = await_leader(&c.live(), 0).await;
    eventually("leader purged its log", 60, async || {
        l.purged_index(0).is_some_and(|p| p > 100)
    })
    .await;
    c.start(follower, true).await;
    let states = converged_states(&c.live(), S).await;
    let f = c.nodes[&follower].clone();
    for s in 0..S {
        assert_eq!(
            state(&f, s).await,
            states[s as usize],
            "shard {s} on restarted follower"
        );
    }
    assert!(
        f.purged_index(0).is_some_and(|p| p > 100),
        "follower did not install a snapshot"
    );
    eprintln!(
        "follower {follower} caught up by snapshot (its log now starts after {:?})",
        f.purged_index(0)
    );
    c.stop_all().await;
}

fn durable(c: &mut NodeConfig) {
    c.fsync = true;
    c.simulate_power_loss = true;
}

/// Every node loses power at once while writes are in flight. With fsync
/// on, each acknowledged write was on a majority's disk before it was
/// acknowledged, so it survives; whatever had only reached the page cache
/// is lost (`crash_unsynced` undoes every journal write not yet fsynced).
///
/// After the restart the states are read on a leader that holds its lease
/// (`is_leader_with_lease`, the fast path's check): they must show every
/// acknowledged write. This is what caught the leader restore: a leader
/// restarted into its old term with a lagging committed hint passed that
/// check before it had committed again the writes it acknowledged before
/// the cut (in about one run in four).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_on_every_node_keeps_acknowledged_writes() {
    let _serial = SERIAL.lock().await;
    const S: u32 = 4;
    let mut c = Cluster::new(3, S, durable);
    c.start_all().await;
    eventually("leaders", 60, async || all_have_leaders(&c.live(), S).await).await;
    let writer = Writer::start(c.live(), S, Duration::from_millis(1));
    eventually("writes acknowledged on every shard", 60, async || {
        let acked = writer.acked.lock().unwrap();
        acked.len() >= 40
            && acked
                .iter()
                .map(|(s, _, _)| *s)
                .collect::<BTreeSet<_>>()
                .len()
                == S as usize
    })
    .await;

    // The power cut, on all three nodes together; the writer keeps going.
    let nodes: Vec<Node> = std::mem::take(&mut c.nodes).into_values().collect();
    let cuts = nodes.iter().map(|n| n.crash_unsynced());
    for r in futures_util::future::join_all(cuts).await {
        r.unwrap();
    }
    drop(nodes);
    let acked = writer.finish().await;
    assert_acked_everywhere(&acked, S);

    // Back from the data dirs: every acknowledged write is there.
    c.start_all().await;
    eventually("leaders after the power cut", 60, async || {
        all_have_leaders(&c.live(), S).await
    })
    .await;
    let states = converged_states(&c.live(), S).await;
    assert_all_present(&states, &acked);
    c.stop_all().await;
}

/// A node whose data dir is lost and that is restarted with the same flags
/// (`bootstrap`, the same `peers`, as a Kubernetes pod is) must not take
/// part as a fresh voter with an empty log: its vote could elect a replica
/// that lacks an entry committed with it. The peers know it by the
/// incarnation of its old dir, so `start` fails with the remedy, and
/// nothing acknowledged is lost. Also: a Raft message stamped with another
/// cluster's id is refused before it reaches a group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_node_is_refused_and_nothing_acknowledged_is_lost() {
    let _serial = SERIAL.lock().await;
    const S: u32 = 4;
    let mut c = Cluster::new(3, S, fast);
    c.start_all().await;
    eventually("every node registered", 60, async || {
        c.live()
            .iter()
            .all(|n| n.registration() == admit_raft::Registration::Done)
    })
    .await;
    eventually("leaders", 60, async || all_have_leaders(&c.live(), S).await).await;
    let mut acked = Vec::new();
    for id in 0..40u64 {
        let shard = (id % S as u64) as u32;
        assert!(write_retry(&c.live(), shard, "w", id, Duration::from_secs(30)).await);
        acked.push((shard, id, Instant::now()));
    }

    // Another cluster's message is refused; this cluster's id passes the
    // check (and then fails on its payload).
    let addr = format!("http://{}", c.addrs[&1]);
    let mut client = admit_raft::pb::raft_transport_client::RaftTransportClient::connect(addr)
        .await
        .unwrap();
    let frame = |cluster| admit_raft::pb::RaftRequest {
        group: 0,
        kind: admit_raft::pb::RaftRpcKind::Vote as i32,
        payload: vec![0xff; 3],
        cluster,
    };
    let foreign = client.call(frame(0x5eed)).await.unwrap_err();
    assert_eq!(
        foreign.code(),
        tonic::Code::FailedPrecondition,
        "{foreign:?}"
    );
    let unknown = client.call(frame(0)).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument, "{unknown:?}");

    // A node with other Raft timeouts is refused (the lease assumes the
    // same everywhere), naming the peer and both timings.
    c.reserve(4);
    let mut odd = c.cfg(4, false);
    odd.election_timeout = (Duration::from_millis(300), Duration::from_millis(600));
    let err = RaftNode::start(odd, |_| Counters::default())
        .await
        .expect_err("a node with other timeouts started");
    let msg = err.to_string();
    assert!(
        msg.contains("300-600 ms") && msg.contains("200-400 ms"),
        "{msg}"
    );

    // Node 2 crashes and comes back with an empty data dir, same flags.
    let victim = 2;
    c.nodes.remove(&victim).unwrap().crash().await;
    c.dirs.insert(victim, tempfile::tempdir().unwrap());
    let r = RaftNode::start(c.cfg(victim, true), |_| Counters::default()).await;
    let err = r.expect_err("a node with a wiped data dir started as a fresh voter");
    let msg = err.to_string();
    assert!(
        msg.contains("data dir lost") && msg.contains("remove-node 2") && msg.contains("--join"),
        "{msg}"
    );

    // The others still hold and serve everything acknowledged.
    let states = converged_states(&c.live(), S).await;
    assert_all_present(&states, &acked);
    assert!(write_retry(&c.live(), 0, "after", 1, Duration::from_secs(30)).await);
    c.stop_all().await;
}

fn default_write_timeout(c: &mut NodeConfig) {
    c.write_timeout = NodeConfig::new(0, "unused", 1).write_timeout;
}

/// A cluster grown from a single node (started without peers, then
/// `add_node`) bounds its writes like one bootstrapped with peers: a write
/// on a leader cut off from the others ends with an error instead of
/// waiting forever (with the default configuration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grown_cluster_bounds_the_writes_of_a_cut_off_leader() {
    let _serial = SERIAL.lock().await;
    const S: u32 = 2;
    let mut c = Cluster::new(2, S, default_write_timeout);
    c.peers.clear(); // node 1 starts alone, in single-node mode
    c.start(1, true).await;
    c.start(2, false).await;
    let n1 = c.nodes[&1].clone();
    let addr2 = c.addrs[&2].to_string();
    eventually("node 2 registered", 60, async || {
        n1.add_node(2, &addr2).await.is_ok() // refused until seeded
    })
    .await;
    eventually("both nodes vote in every shard", 120, async || {
        c.live()
            .iter()
            .all(|n| (0..S).all(|s| n.voters(s) == BTreeSet::from([1, 2])))
    })
    .await;
    eventually("leaders", 60, async || all_have_leaders(&c.live(), S).await).await;
    let l = await_leader(&c.live(), 0).await;
    l.set_isolated(true);
    let t0 = Instant::now();
    let cmd = Add {
        key: "cut".into(),
        id: 1,
        by: 1,
    };
    let bound = admit_raft::DEFAULT_WRITE_TIMEOUT * 6;
    let r = tokio::time::timeout(bound, l.write(0, cmd))
        .await
        .expect("the cut-off leader's write did not end");
    assert!(
        matches!(r, Err(admit_raft::WriteError::Unavailable(_))),
        "{r:?}"
    );
    eprintln!(
        "cut-off leader's write ended after {:?}: {r:?}",
        t0.elapsed()
    );
    l.set_isolated(false);
    c.stop_all().await;
}

fn no_balance(c: &mut NodeConfig) {
    c.balance_leaders = false;
}

/// While a node hands a shard's leadership over it gives no lease-based
/// answer: openraft lets the followers vote for the target inside the lease
/// they granted the old leader, so from the transfer until the new leader
/// holds its own lease, and one lease more, the old leader never says
/// `is_leader_with_lease`. After a transfer that comes to nothing (the
/// target is cut off; openraft's old leader stops its heartbeats), the
/// old leader gives no lease answer in its old term, and the shard gets a
/// leader with a lease again (a new term).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lease_answer_while_leadership_is_transferred() {
    let _serial = SERIAL.lock().await;
    const S: u32 = 2;
    let lease = Duration::from_millis(400); // election timeout max in tests
    let mut c = Cluster::new(3, S, no_balance);
    c.start_all().await;
    eventually("leaders", 60, async || all_have_leaders(&c.live(), S).await).await;
    eventually("3 voters", 60, async || {
        c.live()
            .iter()
            .all(|n| (0..S).all(|s| n.voters(s).len() == 3))
    })
    .await;

    // a target still catching up ignores the transfer (openraft's check of
    // its log), and the old leader, which stopped its heartbeats, is then
    // replaced by an election: wait until every follower has the log
    eventually("followers caught up", 60, async || {
        leader_of(&c.live(), 0).is_some_and(|l| {
            let i = &l.shard_infos()[0];
            i.replicas.len() == 3 && i.replicas.iter().all(|r| r.matched == i.last_log_index)
        })
    })
    .await;
    let old = await_leader(&c.live(), 0).await;
    let to = (1..=3u64).find(|id| *id != old.node_id()).unwrap();
    let target = c.nodes[&to].clone();
    old.transfer_leader(0, to).await.unwrap();
    let t0 = Instant::now();
    let mut checks = 0u64;
    while !target.is_leader_with_lease(0) {
        assert!(
            !old.is_leader_with_lease(0),
            "the old leader answered from its lease during the transfer"
        );
        checks += 1;
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the transfer never ended"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let known = Instant::now();
    while known.elapsed() < lease {
        assert!(
            !old.is_leader_with_lease(0),
            "old leader answered after the transfer"
        );
        checks += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!(
        "transfer: {checks} checks, new leader after {:?}",
        known - t0
    );

    // A transfer to a node that never hears of it: the fence lifts again.
    let l1 = await_leader(&c.live(), 1).await;
    let cut = (1..=3u64).find(|id| *id != l1.node_id()).unwrap();
    c.nodes[&cut].set_isolated(true);
    let term = l1.shard_infos()[1].term;
    l1.transfer_leader(1, cut).await.unwrap();
    assert!(
        !l1.is_leader_with_lease(1),
        "answered at once after a transfer"
    );
    eventually(
        "a leader with a lease after a failed transfer",
        30,
        async || {
            assert!(
                !(l1.is_leader_with_lease(1) && l1.shard_infos()[1].term == term),
                "the old leader answered in its old term after the transfer"
            );
            leader_of(&c.live(), 1).is_some()
        },
    )
    .await;
    c.nodes[&cut].set_isolated(false);
    c.stop_all().await;
}
