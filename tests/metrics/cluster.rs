//! In a cluster each scope's series come from its shard's leader only: a
//! scope appears on exactly one node's `/metrics`, so sums over nodes count
//! each scope once.

use std::time::{Duration, Instant};

use crate::http::{scrape, value};
use crate::support::api::numbers_on_distinct_shards;
use crate::support::cluster::{one_at_a_time, TestCluster};
use crate::support::{shard_of, DAY1};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_is_exported_by_exactly_one_node_its_shard_leader() {
    one_at_a_time(180, async {
        let mut cl = TestCluster::start(3, 3, DAY1).await;
        let mut c = cl.client(1).await;
        let numbers = numbers_on_distinct_shards("4916", 4);
        for (i, n) in numbers.iter().enumerate() {
            c.register(n, "TIER_250").await;
            c.open_batch(n, 100 * i as u64, 3 + i as u64).await;
        }
        // leadership may still move (leader balancing): wait for one view in
        // which every scope is on exactly one node, and that node leads its
        // shard before and after the scrapes
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let before: Vec<Option<u64>> = {
                let mut v = Vec::new();
                for n in &numbers {
                    v.push(cl.leader_of(shard_of(n)).await);
                }
                v
            };
            let mut pages = Vec::new();
            for id in 1..=3 {
                let m = cl.node(id).metrics_addr().expect("metrics served");
                pages.push((id, scrape(m).await));
            }
            let mut after = Vec::new();
            for n in &numbers {
                after.push(cl.leader_of(shard_of(n)).await);
            }
            let mut ok = before == after && before.iter().all(Option::is_some);
            for (i, n) in numbers.iter().enumerate() {
                let on: Vec<(u64, f64)> = pages
                    .iter()
                    .filter_map(|(id, p)| {
                        let l = [("scope", n.as_str()), ("kind", "number")];
                        value(p, "admit_scope_unique_customers", &l).map(|v| (*id, v))
                    })
                    .collect();
                ok &= on.len() == 1 && Some(on[0].0) == before[i] && on[0].1 == (3 + i) as f64;
            }
            let total: f64 = pages
                .iter()
                .map(|(_, p)| value(p, "admit_scopes_exported", &[]).unwrap_or(0.0))
                .sum();
            ok &= total == numbers.len() as f64;
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "scopes not exported once each by their leader: leaders {before:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        cl.stop_all().await;
    })
    .await;
}
