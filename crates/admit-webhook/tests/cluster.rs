//! Meta repeats a delivery, and the repeat may reach another node: three
//! admit nodes on loopback (one Raft group per shard, three replicas), each
//! with its receiver; a delivery applied through one node is a repeat at the
//! others, as the keys live in the shards' replicated state.

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
