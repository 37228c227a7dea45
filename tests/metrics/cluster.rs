//! In a cluster each scope's series come from its shard's leader only: a
//! scope appears on exactly one node's `/metrics` (the one that reports
//! itself the shard's leader there), so sums over nodes count each scope
//! once. The cluster is the shared harness's, with steady Raft timers and
//! no wait for leader balancing: this test needs only some leader per
//! shard.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::http::{scrape, value};
use crate::support::api::numbers_on_distinct_shards;
use crate::support::cluster::{one_at_a_time, ClusterOptions, TestCluster};
use crate::support::{keyed, shard_of, template, Clients, DAY1, SHARDS};
use admit_proto::v1 as pb;

async fn pages(nodes: &BTreeMap<u64, admit_server::Running>) -> Vec<(u64, String)> {
    let mut v = Vec::new();
    for (id, r) in nodes {
        v.push((*id, scrape(r.metrics_addr().expect("metrics served")).await));
    }
    v
}

/// Retries a call the cluster could not answer yet (an election), for up
/// to 60 s.
async fn until_answered<T, F: std::future::Future<Output = Result<T, tonic::Status>>>(
    mut call: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match call().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline && e.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

async fn register(c: &mut Clients, n: &str) {
    let req = pb::RegisterNumberRequest {
        number_id: n.into(),
        initial_tier: Some(pb::TierValue {
            tier: Some(pb::tier_value::Tier::TierName("TIER_250".into())),
        }),
        quality: Some(pb::NumberQuality::High as i32),
        ..Default::default()
    };
    let admin = c.admin.clone();
    until_answered(|| {
        let mut a = admin.clone();
        let r = req.clone();
        async move { a.register_number(r).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_is_exported_by_exactly_one_node_its_shard_leader() {
    one_at_a_time(240, async {
        // steady Raft timers: this test runs on a loaded machine and only
        // needs leaders to stay put
        let mut c =
            TestCluster::start_opts(ClusterOptions::new(3, 3, DAY1).steady().any_leader()).await;
        // every node knows a leader of every shard
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let p = pages(&c.nodes).await;
            let known = |page: &String| {
                (0..SHARDS).all(|s| {
                    let l = [("shard", s.to_string())];
                    let l = [("shard", l[0].1.as_str())];
                    value(page, "admit_shard_has_leader", &l) == Some(1.0)
                })
            };
            if p.iter().all(|(_, page)| known(page)) {
                break;
            }
            assert!(Instant::now() < deadline, "shards without a leader");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let mut cl = c.client(1).await;
        let numbers = numbers_on_distinct_shards("4916", 4);
        for (i, n) in numbers.iter().enumerate() {
            register(&mut cl, n).await;
            for k in 0..(3 + i as u64) {
                let customer = 100 * i as u64 + k;
                let send = keyed(
                    template(n, customer, "t-util", pb::TemplateCategory::Utility),
                    &format!("k-{n}-{customer}"),
                );
                let d = until_answered(|| {
                    let mut cl = cl.clone();
                    let send = send.clone();
                    async move { cl.admit(send).await }
                })
                .await;
                assert_eq!(d.reason(), pb::Reason::NewConversation);
            }
        }
        // leadership may move (leader balancing): wait for one round of
        // scrapes in which every scope is on exactly one node, the node that
        // reports itself the shard's leader in that same scrape
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let p = pages(&c.nodes).await;
            let mut ok = true;
            for (i, n) in numbers.iter().enumerate() {
                let l = [("scope", n.as_str()), ("kind", "number")];
                let on: Vec<(u64, f64)> = p
                    .iter()
                    .filter_map(|(id, page)| {
                        value(page, "admit_scope_unique_customers", &l).map(|v| (*id, v))
                    })
                    .collect();
                let shard = shard_of(n).to_string();
                let leaders: Vec<u64> = p
                    .iter()
                    .filter(|(_, page)| {
                        let l = [("shard", shard.as_str())];
                        value(page, "admit_shard_commit_lag_entries", &l).is_some()
                    })
                    .map(|(id, _)| *id)
                    .collect();
                ok &= on.len() == 1 && leaders == [on[0].0] && on[0].1 == (3 + i) as f64;
            }
            let total: f64 = p
                .iter()
                .map(|(_, page)| value(page, "admit_scopes_exported", &[]).unwrap_or(0.0))
                .sum();
            ok &= total == numbers.len() as f64;
            if ok {
                eprintln!(
                    "each of {} scopes exported by exactly one node",
                    numbers.len()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "scopes not exported once each by their shard's leader"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        // the node-pair streams' counters are on every page; every batch
        // carries at least one frame, and the leaders' appends went out
        let mut sent = 0.0;
        for (id, page) in pages(&c.nodes).await {
            let b = value(&page, "admit_raft_stream_batches_total", &[]).expect("batches");
            let f = value(&page, "admit_raft_stream_frames_total", &[]).expect("frames");
            assert!(f >= b, "node {id}: {b} batches but {f} frames");
            sent += b;
            for counter in [
                "admit_raft_appends_pipelined_total",
                "admit_raft_commit_notes_folded_total",
            ] {
                let v =
                    value(&page, counter, &[]).unwrap_or_else(|| panic!("node {id}: {counter}"));
                assert!(v >= 0.0, "node {id}: {counter} {v}");
            }
            // one build: no peer is sent one append at a time, nor
            // spoken to without the stream
            for gauge in [
                "admit_raft_peers_one_append_at_a_time",
                "admit_raft_peers_on_unary_calls",
                "admit_raft_peers_refusing_relays",
            ] {
                assert_eq!(value(&page, gauge, &[]), Some(0.0), "node {id}: {gauge}");
            }
        }
        assert!(sent > 0.0, "no node sent on its Raft streams");
        // where a write's time goes: the leaders' proposals and entries, the
        // appends' round trips and the followers' part of them (the nodes of
        // this test share one process's recorder, so every page has them all)
        let (_, page) = &pages(&c.nodes).await[0];
        for h in [
            "admit_raft_proposal_wait_seconds",
            "admit_raft_commands_per_entry",
            "admit_raft_entry_round_seconds",
            "admit_raft_append_round_trip_seconds",
            "admit_raft_append_service_seconds",
        ] {
            let n = value(page, &format!("{h}_count"), &[]).unwrap_or(0.0);
            assert!(n > 0.0, "{h}: {n} samples after the writes");
        }
        // the writes entered at node 1; those of shards led elsewhere were
        // relayed, and each relay was timed
        let relayed = value(page, "admit_forwarded_total", &[]).unwrap_or(0.0);
        let timed = value(page, "admit_forward_duration_seconds_count", &[]).unwrap_or(0.0);
        assert!(
            relayed == 0.0 || timed > 0.0,
            "{relayed} requests relayed, {timed} relays timed"
        );
        c.stop_all().await;
    })
    .await;
}

/// A request relayed to its shard's leader travels on the node-pair stream
/// that the two nodes already keep for their Raft messages (issue 14,
/// item 3), batched with them, not as a node-to-node call of its own:
/// sends entering a node that does not lead their shard are counted under
/// `admit_forward_relays_total{way="stream"}`, and none under `way="call"`
/// once the stream is open. Relays to a node of an older build, which
/// refuses them on the stream, are answered as calls, and the entry node
/// stops offering them on that stream (`admit_raft_peers_refusing_relays`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_sends_ride_the_node_pair_stream() {
    one_at_a_time(240, async {
        let mut c =
            TestCluster::start_opts(ClusterOptions::new(3, 3, DAY1).steady().any_leader()).await;
        c.wait_any_leaders(Duration::from_secs(90)).await;
        let n = numbers_on_distinct_shards("4917", 1).remove(0);
        let leader = c.await_leader(shard_of(&n)).await;
        let entry = (1..=3).find(|id| *id != leader).unwrap();
        let mut cl = c.client(entry).await;
        register(&mut cl, &n).await;
        // the nodes of this test share one process's recorder: one page
        // holds every node's relays
        let counts = async |c: &TestCluster| {
            let page = scrape(c.node(1).metrics_addr().expect("metrics served")).await;
            let way = |w: &str| value(&page, "admit_forward_relays_total", &[("way", w)]);
            (
                way("stream").unwrap_or(0.0),
                way("call").unwrap_or(0.0),
                value(&page, "admit_forwarded_total", &[]).unwrap_or(0.0),
            )
        };
        let send = |customer: u64| {
            let cl = cl.clone();
            let req = keyed(
                template(&n, customer, "t-util", pb::TemplateCategory::Utility),
                &format!("k-{n}-{customer}"),
            );
            async move {
                until_answered(|| {
                    let mut cl = cl.clone();
                    let req = req.clone();
                    async move { cl.admit(req).await }
                })
                .await
            }
        };
        // the entry node's stream to the leader opens with their first
        // Raft message; until then a relay goes as a call
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut customer = 0;
        loop {
            let (s0, ..) = counts(&c).await;
            send(customer).await;
            customer += 1;
            if counts(&c).await.0 > s0 {
                break;
            }
            assert!(Instant::now() < deadline, "no relay went on the stream");
        }
        let (s0, c0, f0) = counts(&c).await;
        for _ in 0..20 {
            send(customer).await;
            customer += 1;
        }
        let (s1, c1, f1) = counts(&c).await;
        eprintln!(
            "20 sends through node {entry} (shard led by {leader}): {} relayed, {} on the stream, {} as calls",
            f1 - f0,
            s1 - s0,
            c1 - c0
        );
        assert!(f1 - f0 >= 1.0, "nothing relayed: leadership moved to node {entry}?");
        assert_eq!(s1 - s0, f1 - f0, "every relay on the stream");
        assert_eq!(c1 - c0, 0.0, "no relay as a call of its own");

        // the other nodes now run a build that takes relays only as calls (a
        // rolling upgrade; both, as leadership may move between them):
        // every send is still answered, the first relay refused on a
        // stream goes as a call, and the entry node sends no more on that
        // stream (its gauge counts the peers)
        for id in (1..=3).filter(|id| *id != entry) {
            c.node(id).set_refuse_relays_on_stream(true);
        }
        for _ in 0..20 {
            send(customer).await;
            customer += 1;
        }
        let (s2, c2, f2) = counts(&c).await;
        assert_eq!(s2, s1, "a relay answered on the stream of a peer that refuses them");
        assert_eq!(c2 - c1, f2 - f1, "every relay to the older build as a call");
        assert!(f2 - f1 >= 1.0, "nothing relayed: leadership moved to node {entry}?");
        let page = scrape(c.node(entry).metrics_addr().expect("metrics served")).await;
        let refusing = value(&page, "admit_raft_peers_refusing_relays", &[]).unwrap_or(0.0);
        assert!(
            (1.0..=2.0).contains(&refusing),
            "node {entry} knows {refusing} peers that refuse relays on the stream"
        );
        c.stop_all().await;
    })
    .await;
}
