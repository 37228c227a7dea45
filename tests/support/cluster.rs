//! Real multi-node clusters in one test process: N admit servers on loopback
//! ports with their own data dirs, short Raft timings, 8 shards, all on the
//! same (never advanced) test clock start so their status views agree.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use admit_proto::v1 as pb;
use admit_proto::v1::cluster_client::ClusterClient;
use admit_server::{Running, ServerConfig};
use tonic::transport::Channel;

use super::SHARDS;
use super::{node_config, Clients};

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs a multi-node test alone: the cluster tests of a binary take turns,
/// so on a small machine their Raft timers (elections of 200-400 ms) do not
/// compete with another cluster's for the cores. The time bound `secs`
/// starts once it is this test's turn.
pub async fn one_at_a_time<F: std::future::Future>(secs: u64, test: F) -> F::Output {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    super::bounded(secs, test).await
}

/// Changes a node's configuration before it starts (e.g. peer TLS).
pub type Configure = std::sync::Arc<dyn Fn(u64, &mut ServerConfig) + Send + Sync>;

pub struct TestCluster {
    pub start_ms: i64,
    pub replicas: usize,
    /// API ports.
    pub addrs: BTreeMap<u64, SocketAddr>,
    /// Peer ports (Raft and node-to-node calls).
    pub peer_addrs: BTreeMap<u64, SocketAddr>,
    pub configure: Option<Configure>,
    pub dirs: BTreeMap<u64, tempfile::TempDir>,
    pub peers: BTreeMap<u64, String>,
    pub nodes: BTreeMap<u64, Running>,
}

impl TestCluster {
    /// Starts nodes 1..=n bootstrapped from static peers.
    pub async fn start(n: u64, replicas: usize, start_ms: i64) -> TestCluster {
        Self::start_with(n, replicas, start_ms, None).await
    }

    /// [`Self::start`], each node's configuration changed by `configure`.
    pub async fn start_with(
        n: u64,
        replicas: usize,
        start_ms: i64,
        configure: Option<Configure>,
    ) -> TestCluster {
        let mut c = TestCluster {
            start_ms,
            replicas,
            addrs: BTreeMap::new(),
            peer_addrs: BTreeMap::new(),
            configure,
            dirs: BTreeMap::new(),
            peers: BTreeMap::new(),
            nodes: BTreeMap::new(),
        };
        for id in 1..=n {
            c.reserve(id);
        }
        c.peers = c
            .addrs
            .iter()
            .map(|(i, a)| (*i, format!("{a}/{}", c.peer_addrs[i])))
            .collect();
        let starts = (1..=n).map(|id| admit_server::start(c.cfg(id, None)));
        for r in futures_join(starts).await {
            let r = r.expect("node starts");
            c.nodes.insert(r.node_id(), r);
        }
        c.wait_all_led(Duration::from_secs(20)).await;
        c
    }

    fn reserve(&mut self, id: u64) {
        self.dirs.insert(id, tempfile::tempdir().unwrap());
        self.addrs.insert(id, free_addr());
        self.peer_addrs.insert(id, free_addr());
    }

    fn cfg(&self, id: u64, join: Option<String>) -> ServerConfig {
        let mut cfg = node_config(self.addrs[&id], self.dirs[&id].path(), self.start_ms);
        cfg.node_id = id;
        cfg.advertise = Some(self.addrs[&id].to_string());
        cfg.peer_listen = Some(self.peer_addrs[&id]);
        cfg.replicas = self.replicas;
        cfg.reconcile_interval = Duration::from_millis(200);
        cfg.handoff_timeout = Duration::from_secs(2);
        // in-process test clusters share one fixed test clock start
        cfg.test_clock_in_cluster = true;
        match join {
            Some(via) => cfg.join = Some(via),
            None => cfg.peers = self.peers.clone(),
        }
        if let Some(f) = &self.configure {
            f(id, &mut cfg);
        }
        cfg
    }

    /// Restarts a stopped node from its data dir (same id, port, peers).
    pub async fn restart(&mut self, id: u64) {
        let r = admit_server::start(self.cfg(id, None))
            .await
            .expect("node restarts");
        self.nodes.insert(id, r);
    }

    /// Starts a new node `id` that joins through node `via`.
    pub async fn join(&mut self, id: u64, via: u64) {
        self.reserve(id);
        let r = admit_server::start(self.cfg(id, Some(self.addrs[&via].to_string())))
            .await
            .expect("joining node starts");
        self.nodes.insert(id, r);
    }

    /// Graceful stop (leadership handoff, journal flushed).
    pub async fn stop(&mut self, id: u64) {
        if let Some(r) = self.nodes.remove(&id) {
            r.shutdown().await.expect("clean shutdown");
        }
    }

    /// Stop like a crash.
    pub async fn crash(&mut self, id: u64) {
        if let Some(r) = self.nodes.remove(&id) {
            r.crash().await;
        }
    }

    pub async fn stop_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    pub fn node(&self, id: u64) -> &Running {
        &self.nodes[&id]
    }

    pub async fn client(&self, id: u64) -> Clients {
        Clients::connect(self.addrs[&id]).await
    }

    pub async fn cluster_client(&self, id: u64) -> ClusterClient<Channel> {
        ClusterClient::connect(format!("http://{}", self.addrs[&id]))
            .await
            .expect("connect")
    }

    /// The cluster-wide shard view, asked from `via` (any live node when None).
    pub async fn shards(&self, via: Option<u64>) -> Vec<pb::Shard> {
        let id = via.unwrap_or_else(|| *self.nodes.keys().next().unwrap());
        self.cluster_client(id)
            .await
            .list_shards(pb::ListShardsRequest { local_only: false })
            .await
            .expect("list shards")
            .into_inner()
            .shards
    }

    pub async fn nodes_view(&self, via: u64) -> Vec<pb::Node> {
        self.cluster_client(via)
            .await
            .list_nodes(pb::ListNodesRequest {})
            .await
            .expect("list nodes")
            .into_inner()
            .nodes
    }

    /// The leader of `shard` as its leader reports it.
    pub async fn leader_of(&self, shard: u32) -> Option<u64> {
        let s = self.shards(None).await;
        let s = &s[shard as usize];
        (s.leader_node_id == Some(s.reporter_node_id)).then_some(s.reporter_node_id)
    }

    /// Waits until every shard has a leader among the running nodes that
    /// reports itself as leader.
    pub async fn wait_all_led(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let shards = self.shards(None).await;
            // led, and by the preferred leader of the placement when it is
            // running (leader balance has settled: no transfer pending)
            let led = shards.iter().all(|s| {
                let preferred = s.target_node_ids.first().copied();
                s.leader_node_id == Some(s.reporter_node_id)
                    && self.nodes.contains_key(&s.reporter_node_id)
                    && (preferred == s.leader_node_id
                        || preferred.is_none_or(|p| !self.nodes.contains_key(&p)))
            });
            if led && shards.len() == SHARDS as usize {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not every shard got its preferred leader within {within:?}: \
                 (shard, leader, reporter, preferred) {:?}",
                shards
                    .iter()
                    .map(|s| (
                        s.shard_id,
                        s.leader_node_id,
                        s.reporter_node_id,
                        s.target_node_ids.first()
                    ))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Awaits futures concurrently (no extra dependency).
async fn futures_join<F: std::future::Future>(fs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut out = Vec::with_capacity(handles.len());
    // sequential polling is fine: each start only waits on its own groups;
    // shared groups elect in the background
    for h in handles {
        out.push(h.await);
    }
    out
}
