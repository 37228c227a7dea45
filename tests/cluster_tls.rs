//! The cluster scenarios with mutual TLS between the nodes (peer port: node
//! certificates of one development CA; the API port stays plain text on
//! loopback): forwarding from any node with leader hints that are API
//! addresses, failover after the leader crashes, a crashed node restarting,
//! a node joining and one removed. Same timings and turn-taking as
//! `tests/cluster.rs`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use admit_certs::DevCa;
use admit_proto::v1 as pb;
use admit_server::transport::TlsFiles;
use support::api::util;
use support::cluster::{admit_until_answered, one_at_a_time, Configure, TestCluster};
use support::*;

/// Node certificates 1..=5 of one CA in a temp dir; every node gets its own
/// as peer certificate.
fn peer_tls(dir: &std::path::Path) -> Configure {
    let ca = DevCa::new("cluster CA").unwrap();
    std::fs::write(dir.join("ca.pem"), &ca.cert).unwrap();
    for id in 1..=5 {
        ca.node(id, &[])
            .unwrap()
            .write(dir, &format!("node-{id}"))
            .unwrap();
    }
    let dir = dir.to_path_buf();
    Arc::new(move |id, cfg| {
        cfg.transport.peer_tls = Some(TlsFiles {
            cert: dir.join(format!("node-{id}.pem")),
            key: dir.join(format!("node-{id}.key")),
            ca: Some(dir.join("ca.pem")),
        });
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_with_mutual_tls_forwards_fails_over_and_changes_membership() {
    one_at_a_time(240, async {
        let certs = tempfile::tempdir().unwrap();
        let mut c = TestCluster::start_with(3, 3, at(1, 9), Some(peer_tls(certs.path()))).await;
        let number = "100200391";
        let shard = shard_of(number);
        c.client(1).await.register(number, "TIER_1K").await;

        // forwarding: every node answers; hints name the leader's API port.
        // A hint is checked against the leader read before and after the
        // call when both reads agree (an election in between is retried:
        // the same key replays the same decision)
        let mut leader = 0;
        for id in 1..=3u64 {
            let mut cl = c.client(id).await;
            let deadline = Instant::now() + c.opts.leader_bound();
            loop {
                let before = c.await_leader(shard).await;
                let r = cl
                    .admit
                    .admit(pb::AdmitRequest {
                        send: Some(keyed(util(number, id), &format!("f-{id}"))),
                    })
                    .await
                    .expect("admitted through any node")
                    .into_inner();
                assert!(r.decision.unwrap().allowed);
                let hint = r.leader_hint.expect("a leader hint");
                if c.await_leader(shard).await != before {
                    assert!(Instant::now() < deadline, "the leader never stayed put");
                    continue;
                }
                assert_eq!(hint.node_id, before);
                assert_eq!(
                    hint.address,
                    c.addrs[&before].to_string(),
                    "hints are API addresses"
                );
                leader = before;
                break;
            }
        }
        // a node's addresses reach the registry after it starts: wait for
        // every node's, then check them
        let deadline = Instant::now() + c.opts.leader_bound();
        let nodes = loop {
            let nodes = c.nodes_view(1).await;
            if nodes.len() == 3
                && nodes
                    .iter()
                    .all(|n| !n.address.is_empty() && !n.peer_address.is_empty())
            {
                break nodes;
            }
            assert!(
                Instant::now() < deadline,
                "node addresses never reached the registry: {nodes:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for n in &nodes {
            assert_eq!(n.address, c.addrs[&n.node_id].to_string());
            assert_eq!(n.peer_address, c.peer_addrs[&n.node_id].to_string());
        }

        // failover: crash the leader; a keyed admit is answered by the others
        c.crash(leader).await;
        let clients = c.clients().await;
        let (d, _) =
            admit_until_answered(&clients, keyed(util(number, 10), "after-crash"), 0).await;
        assert!(d.allowed, "{d:?}");
        // and the crashed node comes back over mutual TLS
        c.restart(leader).await;
        c.wait_all_led(c.opts.settle_within).await;

        // membership: node 4 joins, node `leader` is removed
        c.join(4, 2).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let nodes = c.nodes_view(2).await;
            let four = nodes.iter().find(|n| n.node_id == 4);
            if four.is_some_and(|n| n.replica_count > 0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node 4 got no replica: {nodes:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let other = if leader == 2 { 3 } else { 2 };
        c.cluster_client(other)
            .await
            .remove_node(pb::RemoveNodeRequest { node_id: leader })
            .await
            .expect("remove a node");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let nodes = c.nodes_view(other).await;
            let gone = nodes.iter().find(|n| n.node_id == leader).unwrap();
            if gone.state() == pb::NodeState::Removed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {leader} was not drained: {nodes:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        c.stop(leader).await;
        let clients = c.clients().await;
        let (d, _) =
            admit_until_answered(&clients, keyed(util(number, 11), "after-remove"), 0).await;
        assert!(d.allowed, "{d:?}");
        c.stop_all().await;
    })
    .await
}
