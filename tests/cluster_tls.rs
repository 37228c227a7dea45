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
use support::cluster::{one_at_a_time, Configure, TestCluster};
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

/// A keyed admit through the nodes in turn until one answers (bounded).
async fn admit_until_answered(clients: &[(u64, Clients)], send: pb::Send) -> pb::Decision {
    let deadline = Instant::now() + Duration::from_millis(100 * ELECTION_MS.1);
    let mut attempt = 0usize;
    loop {
        let (_, c) = &clients[attempt % clients.len()];
        let mut req = tonic::Request::new(pb::AdmitRequest {
            send: Some(send.clone()),
        });
        req.set_timeout(Duration::from_secs(3));
        match c.admit.clone().admit(req).await {
            Ok(r) => return r.into_inner().decision.expect("a decision"),
            Err(e) => {
                assert!(Instant::now() < deadline, "no node answered: {e:?}");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn clients_of(c: &TestCluster) -> Vec<(u64, Clients)> {
    let mut v = Vec::new();
    for id in c.nodes.keys() {
        v.push((*id, c.client(*id).await));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_with_mutual_tls_forwards_fails_over_and_changes_membership() {
    one_at_a_time(240, async {
        let certs = tempfile::tempdir().unwrap();
        let mut c = TestCluster::start_with(3, 3, at(1, 9), Some(peer_tls(certs.path()))).await;
        let number = "100200391";
        let shard = shard_of(number);
        c.client(1).await.register(number, "TIER_1K").await;
        let leader = c.leader_of(shard).await.expect("a leader");

        // forwarding: every node answers; hints name the leader's API port
        for id in 1..=3u64 {
            let mut cl = c.client(id).await;
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
            assert_eq!(hint.node_id, leader);
            assert_eq!(
                hint.address,
                c.addrs[&leader].to_string(),
                "hints are API addresses"
            );
        }
        let nodes = c.nodes_view(1).await;
        for n in &nodes {
            assert_eq!(n.address, c.addrs[&n.node_id].to_string());
            assert_eq!(n.peer_address, c.peer_addrs[&n.node_id].to_string());
        }

        // failover: crash the leader; a keyed admit is answered by the others
        c.crash(leader).await;
        let clients = clients_of(&c).await;
        let d = admit_until_answered(&clients, keyed(util(number, 10), "after-crash")).await;
        assert!(d.allowed, "{d:?}");
        // and the crashed node comes back over mutual TLS
        c.restart(leader).await;
        c.wait_all_led(Duration::from_secs(30)).await;

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
        let clients = clients_of(&c).await;
        let d = admit_until_answered(&clients, keyed(util(number, 11), "after-remove")).await;
        assert!(d.allowed, "{d:?}");
        c.stop_all().await;
    })
    .await
}
