//! Issue 14: what an idle cluster does (3 in-process nodes on loopback, 16
//! shards, 3 replicas, the production Raft timings: heartbeat 100 ms,
//! election 500-1000 ms). Once every group is quiesced, each node's only
//! traffic is its liveness messages (one per peer per liveness tick), and
//! their answers carry the clock samples, so no node sends a clock call of
//! its own. The periodic loops above the groups (the leader scan of the
//! metrics, the clock loop) wait while every group is quiesced,
//! and the leader scan still sees a leader change at once. The counters of
//! a few seconds of idleness are printed (the numbers of
//! docs/benchmarks.md); the assertions are on counts, not time.

mod support;
// the metrics page over HTTP, as the metrics tests read it
#[allow(dead_code)]
#[path = "metrics/http.rs"]
mod http;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::cluster::{one_at_a_time, ClusterOptions, TestCluster};
use support::*;

const SHARDS: u32 = 16;
const HEARTBEAT: Duration = Duration::from_millis(100);
const ELECTION: (Duration, Duration) = (Duration::from_millis(500), Duration::from_millis(1_000));
/// How long the counters are watched once the cluster is idle.
const WINDOW: Duration = Duration::from_secs(3);

type Counters = BTreeMap<u64, BTreeMap<&'static str, u64>>;

fn counters(c: &TestCluster) -> Counters {
    c.nodes
        .iter()
        .map(|(id, r)| (*id, r.idle_counters().into_iter().collect()))
        .collect()
}

/// 3 nodes, every shard on each, with the production Raft timings.
async fn start() -> TestCluster {
    let mut o = ClusterOptions::new(3, 3, at(1, 9)).shards(SHARDS);
    o.heartbeat = HEARTBEAT;
    o.election_timeout = ELECTION;
    o.settle_within = Duration::from_secs(120);
    TestCluster::start_opts(o).await
}

/// Waits (generously) until every group of every node is quiesced.
async fn all_quiesced(c: &TestCluster) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let q: Vec<usize> = c.nodes.values().map(|r| r.quiesced_groups()).collect();
        // the shards and the metadata group
        if q.iter().all(|n| *n == SHARDS as usize + 1) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the idle cluster's groups never all quiesced: {q:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An idle cluster's nodes talk by liveness alone: the answers bring every
/// peer's clock (each node keeps a fresh sample of both others) and no node
/// sends a unary clock call; each sends at most one liveness message per
/// peer per liveness tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_cluster_talks_by_liveness_alone() {
    one_at_a_time(150, async {
        let mut c = start().await;
        all_quiesced(&c).await;
        // liveness answers bring clock samples in (on the frozen test clock
        // the skew bound keeps its first sample of each peer, so the
        // samples are counted here, not read from the bound)
        let deadline = Instant::now() + Duration::from_secs(30);
        while counters(&c)
            .values()
            .any(|n| n["liveness_clock_samples"] < 2)
        {
            assert!(Instant::now() < deadline, "a node has no sample of a peer's clock");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let before = counters(&c);
        let started = Instant::now();
        tokio::time::sleep(WINDOW).await;
        let after = counters(&c);
        let secs = started.elapsed().as_secs_f64();
        let still_quiet: Vec<usize> = c.nodes.values().map(|r| r.quiesced_groups()).collect();
        for (id, a) in &after {
            let rates: Vec<String> = a
                .iter()
                .map(|(k, v)| format!("{k} {:.1}/s", (v - before[id][k]) as f64 / secs))
                .collect();
            println!("node {id} idle over {secs:.1} s: {}", rates.join(", "));
        }
        println!("quiesced groups per node after the window: {still_quiet:?}");
        // the liveness tick: max(heartbeat, election min / 3)
        let tick = HEARTBEAT.max(ELECTION.0 / 3);
        let rounds_at_most = (secs / tick.as_secs_f64()).ceil() as u64 + 1;
        for (id, a) in &after {
            let d = |k: &str| a[k] - before[id][k];
            assert_eq!(
                d("unary_clock_calls"),
                0,
                "node {id} sent clock calls while every peer's liveness answers carry clocks"
            );
            assert!(
                d("liveness_clock_samples") > 0,
                "node {id}'s liveness answers brought no clock"
            );
            assert!(
                d("liveness_sent") <= 2 * rounds_at_most,
                "node {id} sent {} liveness messages to 2 peers in {secs:.1} s: more than one per peer per {tick:?}",
                d("liveness_sent")
            );
        }
        // the periodic loops while quiet: the leader scan waits for a
        // group to wake, the clock loop runs every 5 s (awake: 4/s and
        // 2/s; the bounds leave room for one group waking within the
        // window). Reconcile keeps its interval (`reconcile_passes` is
        // printed only: stretched while quiet, a cluster test's start
        // stalled; not understood yet)
        for (id, a) in &after {
            let d = |k: &str| a[k] - before[id][k];
            assert!(
                d("leader_scans") <= 4,
                "node {id} scanned its leaders {} times in {secs:.1} s while quiet",
                d("leader_scans")
            );
            assert!(
                d("clock_rounds") <= 3,
                "node {id} ran its clock loop {} times in {secs:.1} s while quiet",
                d("clock_rounds")
            );
        }
        // a leader change on a quiet cluster is still counted: the node
        // leading shard 0 stops (handing its groups over), and the other
        // nodes' leader scans, woken with the groups, count the new leaders
        let gone = c.leader_of(0).await.expect("shard 0 has a leader");
        let stays = *c.nodes.keys().find(|id| **id != gone).unwrap();
        let metrics = c.node(stays).metrics_addr().expect("metrics served");
        let changes_before = leader_changes(metrics).await;
        c.stop(gone).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while leader_changes(metrics).await <= changes_before {
            assert!(
                Instant::now() < deadline,
                "no leader change counted after node {gone} (leader of shard 0) stopped"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c.stop_all().await;
    })
    .await;
}

/// `admit_leader_changes_total` on the page at `addr` (0 before the first).
async fn leader_changes(addr: std::net::SocketAddr) -> f64 {
    let page = http::scrape(addr).await;
    http::samples(&page)
        .into_iter()
        .filter(|((name, _), _)| name == "admit_leader_changes_total")
        .map(|(_, v)| v)
        .sum()
}

/// Issue 11 (review): a number lookup on a quiet cluster, every group
/// quiesced for longer than the lease (so no leader holds one), still gets
/// every shard's answer from one sweep: each node renews the lapsed lease
/// of the shards it leads before it answers. Asked as a relayed call
/// (`admit-hops: 1`), which sweeps once and does not retry, an unregistered
/// number is NOT_FOUND (every shard's leader said so), not UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quiet_cluster_answers_a_lookup_from_every_shard_at_once() {
    one_at_a_time(150, async {
        let mut c = start().await;
        let mut tries = 0;
        loop {
            tries += 1;
            all_quiesced(&c).await;
            // two leases: every leader's last quorum acknowledgement is
            // older than the half lease a lease answer needs
            tokio::time::sleep(ELECTION.1 * 2).await;
            let q: Vec<usize> = c.nodes.values().map(|r| r.quiesced_groups()).collect();
            if q.iter().any(|n| *n != SHARDS as usize + 1) {
                // a group woke meanwhile (a loaded machine): idle again
                assert!(tries < 5, "the cluster never stayed quiet: {q:?}");
                continue;
            }
            break;
        }
        for (via, number) in [(1, "100200901"), (2, "100200902"), (3, "100200903")] {
            let mut r = tonic::Request::new(admit_proto::v1::GetStatusRequest {
                target: Some(api::number_target(number)),
            });
            r.metadata_mut().insert("admit-hops", "1".parse().unwrap());
            r.set_timeout(Duration::from_secs(10));
            let e = c
                .client(via)
                .await
                .admin
                .get_status(r)
                .await
                .expect_err("an unregistered number has no status");
            assert_eq!(
                e.code(),
                tonic::Code::NotFound,
                "lookup via node {via} on a quiet cluster: {e:?}"
            );
        }
        c.stop_all().await;
    })
    .await;
}
