//! Leader following in a real 3-node cluster: the client, given only a
//! follower, learns the number's shard leader (from the `admit-leader-*`
//! trailers and `leader_hint`), sends later calls there, and follows the
//! leadership when that leader stops.

mod common;

use std::time::Duration;

use admit_client::{Category, SendSpec, Target};
use common::support::cluster::{one_at_a_time, TestCluster};
use common::*;

const NUMBER: &str = "100200300";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_follow_the_shard_leader_across_nodes() {
    one_at_a_time(120, async {
        let mut c = TestCluster::start(3, 3, at(1, 9)).await;
        let shard = shard_of(NUMBER);
        let leader = c.leader_of(shard).await.expect("a leader");
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        let addrs = c.addrs.clone();
        let uri = move |id: u64| format!("http://{}", addrs[&id]);

        // only a follower is known; it forwards, and its answer names the leader
        let fwd = client(options(&[c.addrs[&follower]]));
        c.client(follower).await.register(NUMBER, "TIER_250").await;
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
        let mut o = options(&[c.addrs[&follower]]);
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
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let new_leader = loop {
            if let Some(l) = c.leader_of(shard).await {
                break l;
            }
            assert!(std::time::Instant::now() < deadline, "no new leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let s = cl
            .status(&Target::Number(NUMBER.into()))
            .await
            .expect("status after the leader stopped");
        assert_eq!(s.usage.unwrap().used, 1);
        assert_eq!(cl.leader_of(NUMBER), Some(uri(new_leader)));
        c.stop_all().await;
    })
    .await
}
