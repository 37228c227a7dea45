//! Meta repeats a delivery, and the repeat may reach another node: three
//! admit nodes on loopback (one Raft group per shard, three replicas), each
//! with its receiver; a delivery applied through one node is a repeat at the
//! others, as the keys live in the shards' replicated state. The same holds
//! for the display numbers registered with `RegisterNumber`.

/// The workspace's test servers (`tests/support` at the workspace root):
/// the shared cluster harness.
#[path = "../../../tests/support/mod.rs"]
mod harness;
mod support;

use std::time::{Duration, Instant};

use admit_proto::v1 as pb;
use harness::cluster::{one_at_a_time, ClusterOptions, TestCluster};
use support::*;

/// Retries `f` (a call that may meet a shard without a leader yet) until it
/// succeeds, for at most 60 s.
async fn settled<T, F: std::future::Future<Output = Option<T>>>(mut f: impl FnMut() -> F) -> T {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < until, "the cluster did not settle in 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeat_at_another_node_is_applied_once() {
    one_at_a_time(180, async {
        // any leader per shard will do: every call below retries until the
        // cluster answers
        let opts = ClusterOptions::new(3, 3, START_MS as i64)
            .shards(4)
            .any_leader();
        let mut c = TestCluster::start_opts(opts).await;
        let nodes: Vec<&admit_server::Running> = c.nodes.values().collect();
        let mut hooks = Vec::new();
        for n in &nodes {
            hooks.push(
                admit_webhook::serve(hook_config(Vec::new()), n.in_process())
                    .await
                    .expect("receiver starts"),
            );
        }
        let api = nodes[0].in_process();
        settled(|| async {
            api.register_number(pb::RegisterNumberRequest {
                number_id: NUMBER.into(),
                portfolio_id: WABA.into(),
                ..Default::default()
            })
            .await
            .ok()
        })
        .await;

        let body = fixture("messages_inbound.json");
        let first = settled(|| async {
            let a = deliver(hooks[0].local_addr(), &body).await;
            (a.code != 503).then_some(a)
        })
        .await;
        assert_eq!(
            (first.count("applied"), first.count("duplicate")),
            (3, 0),
            "{first:?}"
        );
        for hook in &hooks[1..] {
            let again = settled(|| async {
                let a = deliver(hook.local_addr(), &body).await;
                (a.code != 503).then_some(a)
            })
            .await;
            assert_eq!(
                (again.count("applied"), again.count("duplicate")),
                (0, 3),
                "{again:?}"
            );
        }
        // the STOP of the delivery counted once, read through the last node
        let status = nodes[2]
            .in_process()
            .get_status(pb::GetStatusRequest {
                target: Some(pb::Target {
                    target: Some(pb::target::Target::NumberId(NUMBER.into())),
                }),
            })
            .await
            .expect("status");
        assert_eq!(status.status.unwrap().opt_out_count, 1);

        for h in hooks {
            h.shutdown().await;
        }
        c.stop_all().await;
    })
    .await;
}

/// The headroom of a number, read through `api` (any node).
async fn headroom(api: &admit_server::InProcess, number: &str) -> u32 {
    let s = api
        .get_status(pb::GetStatusRequest {
            target: Some(pb::Target {
                target: Some(pb::target::Target::NumberId(number.into())),
            }),
        })
        .await
        .expect("status");
    s.status.unwrap().usage.unwrap().headroom
}

/// A number registered with its display number through node 1 is found by
/// it at nodes 2 and 3, whose receivers know no display number of their own
/// (the index is replicated state, not a node's file).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_display_number_registered_at_one_node_is_found_at_the_others() {
    one_at_a_time(180, async {
        let opts = ClusterOptions::new(3, 3, START_MS as i64)
            .shards(4)
            .any_leader();
        let mut c = TestCluster::start_opts(opts).await;
        let nodes: Vec<&admit_server::Running> = c.nodes.values().collect();
        let mut hooks = Vec::new();
        for n in &nodes {
            hooks.push(
                admit_webhook::serve(hook_config(Vec::new()), n.in_process())
                    .await
                    .expect("receiver starts"),
            );
        }
        let api = nodes[0].in_process();
        // two numbers, so that "found" means "found the right one"
        const OTHER: &str = "109900112233446";
        const OTHER_DISPLAY: &str = "15550105678";
        for (number, display) in [(NUMBER, DISPLAY), (OTHER, OTHER_DISPLAY)] {
            settled(|| async {
                api.register_number(pb::RegisterNumberRequest {
                    number_id: number.into(),
                    portfolio_id: WABA.into(),
                    initial_tier: Some(pb::TierValue {
                        tier: Some(pb::tier_value::Tier::TierName("TIER_1K".into())),
                    }),
                    display_phone_number: display.into(),
                    ..Default::default()
                })
                .await
                .ok()
            })
            .await;
        }

        // UPGRADE to 10K, naming the number only as displayed, at node 2
        let body = fixture("quality_update.json");
        let a = settled(|| async {
            let a = deliver(hooks[1].local_addr(), &body).await;
            (a.code != 503).then_some(a)
        })
        .await;
        assert_eq!(
            (a.count("applied"), a.count("unknown_number")),
            (1, 0),
            "{a:?}"
        );
        let last = nodes[2].in_process();
        assert_eq!(headroom(&last, NUMBER).await, 10_000);
        assert_eq!(headroom(&last, OTHER).await, 1_000);

        // the other number's display, at node 3
        let body = text(&body).replace(DISPLAY, OTHER_DISPLAY);
        let a = settled(|| async {
            let a = deliver(hooks[2].local_addr(), body.as_bytes()).await;
            (a.code != 503).then_some(a)
        })
        .await;
        assert_eq!(
            (a.count("applied"), a.count("unknown_number")),
            (1, 0),
            "{a:?}"
        );
        assert_eq!(headroom(&api, OTHER).await, 10_000);

        for h in hooks {
            h.shutdown().await;
        }
        c.stop_all().await;
    })
    .await;
}
