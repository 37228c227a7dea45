//! Issue 11 in a real cluster (3 in-process nodes on loopback, 8 shards, 3
//! replicas, lease 400 ms): the bound on the service clock and decisions
//! on the engine's time (item 2), relayed calls under the leader's
//! in-flight bound (item 6), status reads only from a leader that holds
//! its lease (item 9). The tests take turns and wait on conditions with
//! generous bounds; no elapsed time is asserted.

mod support;

use std::time::{Duration, Instant};

use admit_core::Ts;
use admit_proto::v1 as pb;
use support::api::{self, util};
use support::cluster::{one_at_a_time, Configure, TestCluster};
use support::*;
use tonic::Code;

/// A request that the node it is sent to must serve itself (no forwarding).
fn direct<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("admit-hops", "2".parse().unwrap());
    r.set_timeout(Duration::from_millis(1_500));
    r
}

fn send(s: pb::Send) -> pb::AdmitRequest {
    pb::AdmitRequest { send: Some(s) }
}

/// Waits until `node` has a fresh sample of every other node's clock.
async fn clocks_sampled(c: &TestCluster, node: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.node(node).clock_skew().1 < c.nodes.len() - 1 {
        assert!(
            Instant::now() < deadline,
            "node {node} sampled no clock of the others"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a node other than `old` leads `shard`; returns it.
async fn new_leader(c: &TestCluster, shard: u32, old: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(l) = c.leader_of(shard).await.filter(|l| *l != old) {
            return l;
        }
        assert!(Instant::now() < deadline, "shard {shard} got no new leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A shard leader whose clock jumps 25 h ahead of the others' must not
/// stamp with it: the conversations of the last 24 h stay counted, so no
/// send is allowed past the limit, whichever node it enters by. The leader
/// refuses writes (UNAVAILABLE, naming the skew) or has handed the shard
/// to a node whose clock is right (then LIMIT_REACHED).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_a_day_ahead_ages_no_conversation_out() {
    one_at_a_time(120, leader_a_day_ahead(true, "100200441")).await;
}

/// The same with quiescence off: no liveness messages carry clock samples,
/// so every sample comes from admit-server's own clock round (a `ReadClock`
/// call to each peer every 500 ms, `relay::watch_clocks`), and the bound
/// holds on those alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_liveness_the_clock_round_alone_bounds_a_leader_a_day_ahead() {
    one_at_a_time(120, leader_a_day_ahead(false, "100200443")).await;
}

/// A 3-node cluster (quiescence, and so liveness, on or off) whose leader
/// of `number`'s shard has its clock set 25 h ahead: nothing is admitted
/// past the limit through any node.
async fn leader_a_day_ahead(liveness: bool, number: &str) {
    let configure = (!liveness)
        .then(|| -> Configure { std::sync::Arc::new(|_, cfg| cfg.quiesce_after = None) });
    let mut c = TestCluster::start_with(3, 3, at(1, 9), configure).await;
    let shard = shard_of(number);
    let mut a = c.client(1).await;
    a.register(number, "TIER_250").await;
    a.open_batch(number, 1, 250).await;
    let leader = c.leader_of(shard).await.unwrap();
    let other = (1..=3).find(|i| *i != leader).unwrap();
    clocks_sampled(&c, leader).await;
    if !liveness {
        let counters = c.node(leader).idle_counters();
        let n = |k: &str| counters.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        assert_eq!(n("liveness_clock_samples"), Some(0), "{counters:?}");
        assert!(n("unary_clock_calls") >= Some(2), "{counters:?}");
    }
    c.node(leader)
        .set_own_clock(Ts(at(2, 10) as u64))
        .expect("the leader's clock moves ahead alone");
    let (skew, _) = c.node(leader).clock_skew();
    assert!(skew > 24 * HOUR, "measured skew {skew} ms");

    let mut l = c.client(leader).await;
    match l.admit.admit(direct(send(util(number, 1_000)))).await {
        Ok(r) => {
            let d = r.into_inner().decision.unwrap();
            assert!(
                !d.allowed,
                "the skewed leader admitted past the limit: {d:?}"
            );
        }
        Err(e) => {
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
            assert!(e.message().contains("ahead"), "{e:?}");
        }
    }
    // through every node, for a while: nothing is allowed
    let mut answered = 0;
    for i in 0..10u64 {
        for id in 1..=3u64 {
            let mut cl = c.client(id).await;
            let mut r = tonic::Request::new(send(util(number, 2_000 + i * 3 + id)));
            r.set_timeout(Duration::from_secs(3));
            if let Ok(r) = cl.admit.admit(r).await {
                let d = r.into_inner().decision.unwrap();
                assert!(!d.allowed, "node {id} admitted past the limit: {d:?}");
                assert_eq!(d.reason(), pb::Reason::LimitReached, "{d:?}");
                answered += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{answered} of 30 sends answered (LIMIT_REACHED), the rest refused");
    assert_eq!(c.client(other).await.used(number).await, 250);
    c.stop_all().await;
}

/// The fast path decides on the engine's time: the leader stamps a command
/// a little past a service window's end (its clock 400 ms ahead, within
/// the bound), then fails over to a node whose clock is still before that
/// end. The window is closed in engine time, so the new leader's fast path
/// must not treat it as open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_failover_to_a_clock_behind_a_closed_window_stays_closed() {
    one_at_a_time(120, async {
        let t0 = at(1, 9);
        let mut c = TestCluster::start(3, 3, t0).await;
        let number = "100200442";
        let shard = shard_of(number);
        let mut a = c.client(1).await;
        a.register(number, "TIER_250").await;
        a.inbound(number, &cust(7), None).await; // open until t0 + 24 h
        a.set_clock(t0 + DAY - 200).await;
        let leader = c.leader_of(shard).await.unwrap();
        clocks_sampled(&c, leader).await;
        c.node(leader)
            .set_own_clock(Ts((t0 + DAY + 200) as u64))
            .unwrap();
        let mut l = c.client(leader).await;
        // stamped at t0 + 24 h + 200 ms: the engine's time passes the end
        let d = l
            .admit
            .admit(direct(send(util(number, 8))))
            .await
            .expect("a stamp within the bound")
            .into_inner()
            .decision
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::NewConversation, "{d:?}");

        c.crash(leader).await;
        let now_leads = new_leader(&c, shard, leader).await;
        let mut n = c.client(now_leads).await;
        // a write through the new leader: its term's entry is committed
        let deadline = Instant::now() + Duration::from_secs(20);
        while n.admit.admit(direct(send(util(number, 9)))).await.is_err() {
            assert!(Instant::now() < deadline, "the new leader took no write");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // on its clock (t0 + 24 h - 200 ms) the window would still be open
        for _ in 0..5 {
            let d = n
                .admit
                .admit(direct(send(free_form(number, 7))))
                .await
                .expect("the new leader answers")
                .into_inner()
                .decision
                .unwrap();
            assert_eq!(
                d.reason(),
                pb::Reason::OutsideServiceWindow,
                "a window closed in engine time read as open: {d:?}"
            );
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        c.stop_all().await;
    })
    .await;
}

/// A call relayed to the shard's leader takes one of the leader's
/// in-flight permits, like an API call: with none left it is refused
/// (UNAVAILABLE, nothing applied), though the entry node had room.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relayed_calls_count_against_the_leaders_in_flight_bound() {
    one_at_a_time(90, async {
        let mut c = TestCluster::start(3, 3, at(1, 9)).await;
        let number = "100200443";
        let shard = shard_of(number);
        c.client(1).await.register(number, "TIER_250").await;
        let leader = c.leader_of(shard).await.unwrap();
        let entry = (1..=3).find(|i| *i != leader).unwrap();
        let mut e = c.client(entry).await;
        let held = c.node(leader).hold_in_flight().expect("permits held");
        let mut r = tonic::Request::new(send(util(number, 1)));
        r.set_timeout(Duration::from_secs(3));
        let err = e
            .admit
            .admit(r)
            .await
            .expect_err("the leader has no permit left for a relayed call");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("in flight"), "{err:?}");
        drop(held);
        let d = e.admit(util(number, 1)).await.unwrap();
        assert_eq!(d.reason(), pb::Reason::NewConversation);
        assert_eq!(e.used(number).await, 1, "the refused call applied nothing");
        c.stop_all().await;
    })
    .await;
}

/// A leader cut off from the others stops serving status from its stale
/// state (UNAVAILABLE, as for a write), while the majority moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_leader_serves_no_stale_status() {
    one_at_a_time(90, async {
        let mut c = TestCluster::start(3, 3, at(1, 9)).await;
        let number = "100200444";
        let shard = shard_of(number);
        c.client(1).await.register(number, "TIER_250").await;
        let leader = c.leader_of(shard).await.unwrap();
        let mut l = c.client(leader).await;
        let status = || {
            direct(pb::GetStatusRequest {
                target: Some(api::number_target(number)),
            })
        };
        l.admin
            .get_status(status())
            .await
            .expect("status while it leads");
        let cut = Instant::now();
        c.node(leader).set_isolated(true);
        let gave_up = cut + Duration::from_millis(ELECTION_MS.1) * 25;
        while l.admin.get_status(status()).await.is_ok() {
            assert!(
                Instant::now() < gave_up,
                "the cut-off leader still serves status {:?} after the cut",
                cut.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!(
            "cut-off leader stopped serving status {:?} after the cut",
            cut.elapsed()
        );
        let other = (1..=3).find(|i| *i != leader).unwrap();
        new_leader(&c, shard, leader).await;
        let mut m = c.client(other).await;
        let d = m.admit(util(number, 1)).await.unwrap();
        assert_eq!(d.reason(), pb::Reason::NewConversation);
        for _ in 0..5 {
            match l.admin.get_status(status()).await {
                Ok(s) => panic!("the cut-off node served stale status: {:?}", s.into_inner()),
                Err(e) => assert!(
                    matches!(
                        e.code(),
                        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                    ),
                    "{e:?}"
                ),
            }
        }
        c.node(leader).set_isolated(false);
        c.stop_all().await;
    })
    .await;
}
