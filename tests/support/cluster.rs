//! Real multi-node clusters in one test process: N admit servers on loopback
//! ports with their own data dirs, short Raft timings, all on the same
//! (never advanced) test clock start so their status views agree. Every
//! in-process cluster of the workspace's tests is built here, from
//! [`ClusterOptions`]; a test changes the options it needs (shards, Raft
//! timers, how settled the leaders must be, auth through `configure`).
//! Other crates' tests include this module by path (`#[path]` to
//! `tests/support/mod.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use admit_proto::v1 as pb;
use admit_proto::v1::cluster_client::ClusterClient;
use admit_server::{Running, ServerConfig};
use tonic::transport::Channel;

use super::{node_config, Clients};
use super::{ELECTION_MS, HEARTBEAT_MS, SHARDS};

use super::ports::free_addr;

static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Clusters running inside [`one_at_a_time`] right now: checked, so a
/// turn-taking that stops holding fails the tests instead of only making
/// them slower and flakier.
static CLUSTERS_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Runs a multi-node test alone: the cluster tests of a binary take turns,
/// so on a small machine their Raft timers (elections of 200-400 ms) do not
/// compete with another cluster's for the cores. The time bound `secs`
/// starts once it is this test's turn.
pub async fn one_at_a_time<F: std::future::Future>(secs: u64, test: F) -> F::Output {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let running = CLUSTERS_RUNNING.fetch_add(1, Ordering::SeqCst);
    // decremented on the way out, on success or panic alike
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            CLUSTERS_RUNNING.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _leave = Leave;
    assert_eq!(running, 0, "a cluster test started while another ran");
    super::bounded(secs, test).await
}

/// Changes a node's configuration before it starts (e.g. peer TLS, auth).
pub type Configure = std::sync::Arc<dyn Fn(u64, &mut ServerConfig) + Send + Sync>;

/// How a [`TestCluster`] is built. [`ClusterOptions::new`] gives the
/// cluster tests' own: 8 shards, heartbeat 50 ms, election 200-400 ms, and
/// a start that waits until every shard is led by its preferred leader.
#[derive(Clone)]
pub struct ClusterOptions {
    /// Nodes 1..=nodes, bootstrapped from static peers.
    pub nodes: u64,
    pub replicas: usize,
    /// The test clock's start, the same on every node.
    pub start_ms: i64,
    pub shards: u32,
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// The start waits for the preferred leaders (leader balance settled)
    /// when true, for any leader of every shard when false.
    pub balanced: bool,
    /// How long the start waits for those leaders.
    pub settle_within: Duration,
    pub configure: Option<Configure>,
    /// A bearer token the harness's own cluster calls carry (auth on).
    pub token: Option<String>,
}

impl ClusterOptions {
    pub fn new(nodes: u64, replicas: usize, start_ms: i64) -> ClusterOptions {
        ClusterOptions {
            nodes,
            replicas,
            start_ms,
            shards: SHARDS,
            heartbeat: Duration::from_millis(HEARTBEAT_MS),
            election_timeout: (
                Duration::from_millis(ELECTION_MS.0),
                Duration::from_millis(ELECTION_MS.1),
            ),
            balanced: true,
            // 150 election timeouts: far beyond a few elections and a
            // leader transfer per shard, even on 2 loaded cores
            settle_within: Duration::from_millis(150 * ELECTION_MS.1),
            configure: None,
            token: None,
        }
    }

    /// Raft timers 5-7x the default ones, for tests that need leaders to
    /// stay put on a loaded machine (50 ms heartbeats are missed there and
    /// the shards keep electing).
    pub fn steady(mut self) -> ClusterOptions {
        self.heartbeat = Duration::from_millis(250);
        self.election_timeout = (Duration::from_millis(1_500), Duration::from_millis(3_000));
        self.settle_within = Duration::from_secs(120);
        self
    }

    /// The start waits for any leader of every shard, not the preferred
    /// ones: for tests that retry their calls until the cluster answers.
    pub fn any_leader(mut self) -> ClusterOptions {
        self.balanced = false;
        self
    }

    pub fn shards(mut self, shards: u32) -> ClusterOptions {
        self.shards = shards;
        self
    }

    pub fn configure(mut self, f: Configure) -> ClusterOptions {
        self.configure = Some(f);
        self
    }

    pub fn token(mut self, token: &str) -> ClusterOptions {
        self.token = Some(token.into());
        self
    }

    /// The bound on waiting for a shard's leader after a start, a stop or a
    /// crash: 100 election timeouts (at least 30 s).
    pub fn leader_bound(&self) -> Duration {
        (self.election_timeout.1 * 100).max(Duration::from_secs(30))
    }
}

pub struct TestCluster {
    pub opts: ClusterOptions,
    /// API ports.
    pub addrs: BTreeMap<u64, SocketAddr>,
    /// Peer ports (Raft and node-to-node calls).
    pub peer_addrs: BTreeMap<u64, SocketAddr>,
    pub dirs: BTreeMap<u64, tempfile::TempDir>,
    pub peers: BTreeMap<u64, String>,
    pub nodes: BTreeMap<u64, Running>,
}

impl TestCluster {
    /// Starts nodes 1..=n bootstrapped from static peers.
    pub async fn start(n: u64, replicas: usize, start_ms: i64) -> TestCluster {
        Self::start_opts(ClusterOptions::new(n, replicas, start_ms)).await
    }

    /// [`Self::start`], each node's configuration changed by `configure`.
    pub async fn start_with(
        n: u64,
        replicas: usize,
        start_ms: i64,
        configure: Option<Configure>,
    ) -> TestCluster {
        let mut o = ClusterOptions::new(n, replicas, start_ms);
        o.configure = configure;
        Self::start_opts(o).await
    }

    /// Starts the cluster `opts` describes and waits for its leaders.
    pub async fn start_opts(opts: ClusterOptions) -> TestCluster {
        let n = opts.nodes;
        let mut c = TestCluster {
            opts,
            addrs: BTreeMap::new(),
            peer_addrs: BTreeMap::new(),
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
        let within = c.opts.settle_within;
        if c.opts.balanced {
            c.wait_all_led(within).await;
        } else {
            c.wait_any_leaders(within).await;
        }
        c
    }

    fn reserve(&mut self, id: u64) {
        self.dirs.insert(id, tempfile::tempdir().unwrap());
        self.addrs.insert(id, free_addr());
        self.peer_addrs.insert(id, free_addr());
    }

    fn cfg(&self, id: u64, join: Option<String>) -> ServerConfig {
        let o = &self.opts;
        let mut cfg = node_config(self.addrs[&id], self.dirs[&id].path(), o.start_ms);
        cfg.node_id = id;
        cfg.shards = o.shards;
        cfg.heartbeat = o.heartbeat;
        cfg.election_timeout = o.election_timeout;
        cfg.advertise = Some(self.addrs[&id].to_string());
        cfg.peer_listen = Some(self.peer_addrs[&id]);
        cfg.replicas = o.replicas;
        cfg.reconcile_interval = Duration::from_millis(200);
        cfg.handoff_timeout = Duration::from_secs(2);
        // in-process test clusters share one fixed test clock start
        cfg.test_clock_in_cluster = true;
        match join {
            Some(via) => cfg.join = Some(via),
            None => cfg.peers = self.peers.clone(),
        }
        if let Some(f) = &o.configure {
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

    /// One client per running node, with its id.
    pub async fn clients(&self) -> Vec<(u64, Clients)> {
        let mut v = Vec::new();
        for id in self.nodes.keys() {
            v.push((*id, self.client(*id).await));
        }
        v
    }

    pub async fn cluster_client(&self, id: u64) -> ClusterClient<Channel> {
        ClusterClient::connect(format!("http://{}", self.addrs[&id]))
            .await
            .expect("connect")
    }

    /// `msg` carrying the options' token, if any.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.opts.token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    }

    /// The cluster-wide shard view, asked from `via` (any live node when None).
    pub async fn shards(&self, via: Option<u64>) -> Vec<pb::Shard> {
        self.try_shards(via).await.expect("list shards")
    }

    /// [`Self::shards`], or the error when the node could not answer.
    pub async fn try_shards(&self, via: Option<u64>) -> Result<Vec<pb::Shard>, tonic::Status> {
        let id = via.unwrap_or_else(|| *self.nodes.keys().next().unwrap());
        let req = self.request(pb::ListShardsRequest { local_only: false });
        Ok(self
            .cluster_client(id)
            .await
            .list_shards(req)
            .await?
            .into_inner()
            .shards)
    }

    pub async fn nodes_view(&self, via: u64) -> Vec<pb::Node> {
        let req = self.request(pb::ListNodesRequest {});
        self.cluster_client(via)
            .await
            .list_nodes(req)
            .await
            .expect("list nodes")
            .into_inner()
            .nodes
    }

    /// The leader of `shard` as its leader reports it, in one read: None
    /// while the shard is between leaders. Tests that need "the leader" use
    /// [`Self::await_leader`].
    pub async fn leader_of(&self, shard: u32) -> Option<u64> {
        let s = self.shards(None).await;
        let s = &s[shard as usize];
        (s.leader_node_id == Some(s.reporter_node_id)).then_some(s.reporter_node_id)
    }

    /// The leader of `shard`, waited for: between two reads a shard may be
    /// between leaders (an election, leader balancing), so the last read's
    /// leader is never assumed to be there still.
    pub async fn await_leader(&self, shard: u32) -> u64 {
        let within = self.opts.leader_bound();
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader_of(shard).await {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "shard {shard} had no leader within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every shard has a leader among the running nodes that
    /// reports itself as leader, and it is the placement's preferred leader
    /// when that one runs (leader balance has settled: no transfer pending).
    pub async fn wait_all_led(&self, within: Duration) {
        self.wait_led(within, true).await
    }

    /// Waits until every shard has some leader among the running nodes
    /// that reports itself as leader.
    pub async fn wait_any_leaders(&self, within: Duration) {
        self.wait_led(within, false).await
    }

    async fn wait_led(&self, within: Duration, preferred_only: bool) {
        let deadline = Instant::now() + within;
        loop {
            // a node still starting may not answer yet
            let shards = self.try_shards(None).await.unwrap_or_default();
            let led = shards.iter().all(|s| {
                let preferred = s.target_node_ids.first().copied();
                s.leader_node_id == Some(s.reporter_node_id)
                    && self.nodes.contains_key(&s.reporter_node_id)
                    && (!preferred_only
                        || preferred == s.leader_node_id
                        || preferred.is_none_or(|p| !self.nodes.contains_key(&p)))
            });
            if led && shards.len() == self.opts.shards as usize {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not every shard got its {} leader within {within:?}: \
                 (shard, leader, reporter, preferred) {:?}",
                if preferred_only { "preferred" } else { "a" },
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

/// How long a keyed admit is retried before a test gives up: 100 election
/// timeouts, far beyond a failover (detection, one or two elections,
/// retries) even on a loaded machine.
pub const ANSWER_BOUND: Duration = Duration::from_millis(100 * ELECTION_MS.1);

/// One keyed admit, retried (same key) through the nodes in turn, starting
/// at `first`, until some node answers. Returns the decision and when the
/// answering call was sent.
pub async fn admit_until_answered(
    clients: &[(u64, Clients)],
    send: pb::Send,
    first: usize,
) -> (pb::Decision, Instant) {
    let deadline = Instant::now() + ANSWER_BOUND;
    let mut attempt = 0usize;
    loop {
        let (_, c) = &clients[(first + attempt) % clients.len()];
        let mut req = tonic::Request::new(pb::AdmitRequest {
            send: Some(send.clone()),
        });
        req.set_timeout(Duration::from_secs(3));
        let sent = Instant::now();
        match c.admit.clone().admit(req).await {
            Ok(r) => return (r.into_inner().decision.expect("a decision"), sent),
            Err(e) => {
                assert!(Instant::now() < deadline, "no node answered: {e:?}");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
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
