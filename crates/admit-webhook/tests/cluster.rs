//! Meta repeats a delivery, and the repeat may reach another node: three
//! admit nodes on loopback (one Raft group per shard, three replicas), each
//! with its receiver; a delivery applied through one node is a repeat at the
//! others, as the keys live in the shards' replicated state.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use admit_proto::v1 as pb;
use admit_server::{Running, ServerConfig};
use support::*;

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

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
    tokio::time::timeout(Duration::from_secs(180), async {
        let addrs: BTreeMap<u64, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
        let peer_addrs: BTreeMap<u64, std::net::SocketAddr> =
            addrs.keys().map(|i| (*i, free_addr())).collect();
        let peers: BTreeMap<u64, String> = addrs
            .iter()
            .map(|(i, a)| (*i, format!("{a}/{}", peer_addrs[i])))
            .collect();
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let starts = addrs.iter().zip(&dirs).map(|((id, addr), dir)| {
            let mut cfg = ServerConfig::new(*addr, dir.path());
            cfg.node_id = *id;
            cfg.advertise = Some(addr.to_string());
            cfg.peers = peers.clone();
            cfg.peer_listen = Some(peer_addrs[id]);
            // in-process test clusters share one fixed test clock start
            cfg.test_clock_in_cluster = true;
            cfg.replicas = 3;
            cfg.shards = 4;
            cfg.test_clock = true;
            cfg.test_clock_start = Some(admit_core::Ts(START_MS));
            cfg.fsync = false;
            cfg.tick_interval = Duration::from_secs(3_600);
            cfg.heartbeat = Duration::from_millis(50);
            cfg.election_timeout = (Duration::from_millis(200), Duration::from_millis(400));
            admit_server::start(cfg)
        });
        let nodes: Vec<Running> = futures_util::future::join_all(starts)
            .await
            .into_iter()
            .map(|r| r.expect("node starts"))
            .collect();
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
        for n in nodes {
            n.shutdown().await.expect("clean shutdown");
        }
    })
    .await
    .expect("done within 180 s");
}
