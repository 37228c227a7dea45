//! Leader following in a real 3-node cluster: the client, given only a
//! follower, learns the number's shard leader (from the `admit-leader-*`
//! trailers and `leader_hint`), sends later calls there, and follows the
//! leadership when that leader stops.

mod common;

use std::time::{Duration, Instant};

use admit_client::{Category, SendSpec, Target};
use common::support::cluster::{one_at_a_time, ClusterOptions, TestCluster};
use common::*;

const NUMBER: &str = "100200300";

/// Three nodes, three replicas per shard, every shard led by its preferred
/// leader (so leader balancing moves no leader during the test). Steady
/// Raft timers: a loaded machine misses 50 ms heartbeats and the shards
/// keep electing.
async fn start_cluster() -> TestCluster {
    TestCluster::start_opts(ClusterOptions::new(3, 3, at(1, 9)).steady()).await
}

/// The shard's leader once it has stayed the same for a second (leader
/// balancing may still move it after the start).
async fn settled_leader(c: &TestCluster, shard: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    let mut since = Instant::now();
    loop {
        let now = c.leader_of(shard).await;
        if now != last {
            last = now;
            since = Instant::now();
        } else if let Some(l) = now.filter(|_| since.elapsed() >= Duration::from_secs(1)) {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "shard {shard} has no steady leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_follow_the_shard_leader_across_nodes() {
    one_at_a_time(240, async {
        let mut c = start_cluster().await;
        let shard = shard_of(NUMBER);
        let leader = settled_leader(&c, shard).await;
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        let addrs = c.addrs.clone();
        let uri = move |id: u64| format!("http://{}", addrs[&id]);

        // only a follower is known; it forwards, and its answer names the leader
        let slow = |mut o: admit_client::Options| {
            // a loaded machine: Raft commits may take seconds
            o.call_deadline = Duration::from_secs(60);
            o.retry.max_attempts = 40;
            o
        };
        let fwd = client(slow(options(&[c.addrs[&follower]])));
        fwd.register_number(admit_client::proto::RegisterNumberRequest {
            number_id: NUMBER.into(),
            ..Default::default()
        })
        .await
        .expect("register");
        let d = fwd
            .admit(&SendSpec::template(
                NUMBER,
                &cust(1),
                "t-util",
                Category::Utility,
            ))
            .await
            .expect("admit");
        assert!(d.counted);
        assert_eq!(
            fwd.leader_of(NUMBER),
            Some(uri(leader)),
            "learned from leader_hint"
        );

        // a client that forbids forwarding is redirected by the follower's
        // trailers, then goes straight to the leader
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        let mut o = slow(options(&[c.addrs[&follower]]));
        o.route_self = true;
        let cl = client(o);
        let s = cl
            .status(&Target::Number(NUMBER.into()))
            .await
            .expect("status via the leader");
        assert_eq!(s.usage.unwrap().used, 1);
        assert_eq!(cl.stats().redirects, 1, "redirected once: {:?}", cl.stats());
        assert_eq!(
            cl.leader_of(NUMBER),
            Some(uri(leader)),
            "learned from the trailers"
        );
        let before = cl.stats();
        cl.status(&Target::Number(NUMBER.into()))
            .await
            .expect("status");
        let after = cl.stats();
        assert_eq!(
            after.attempts,
            before.attempts + 1,
            "went straight to the leader"
        );
        assert_eq!(after.redirects, before.redirects);

        // the leader stops (hands leadership over); the next call finds the new one
        c.stop(leader).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.leader_of(shard).await.is_none() {
            assert!(Instant::now() < deadline, "no new leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let s = cl
            .status(&Target::Number(NUMBER.into()))
            .await
            .expect("status after the leader stopped");
        assert_eq!(s.usage.unwrap().used, 1);
        let new_leader = settled_leader(&c, shard).await;
        assert_ne!(new_leader, leader);
        assert_eq!(
            cl.leader_of(NUMBER),
            Some(uri(new_leader)),
            "followed the new leader"
        );
        c.stop_all().await;
    })
    .await
}
