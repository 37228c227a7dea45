//! [`RaftNode`]: many openraft groups on one node, one journal.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::impls::BasicNode;
use openraft::raft::ReadPolicy;
use openraft::Instant as _;
use openraft::{ChangeMembers, Config, Raft, ServerState, SnapshotPolicy};

use crate::cluster::{
    ClusterNode, MetaCmd, MetaFwd, NodeState, Registry, RegistryState, ReplicaInfo, ShardInfo,
};
use crate::journal::{io_err, Journal};
use crate::network::{GroupRaft, GrpcRouter, NetFactory, RaftGrpcService};
use crate::pb::raft_transport_server::RaftTransportServer;
use crate::pb::RaftRpcKind;
use crate::placement::{placement_table, rendezvous};
use crate::propose::{BatchConfig, Proposer};
use crate::sm::StateMachine;
use crate::store::{decode, encode, LogStore};
use crate::types::CmdData;
use crate::{AdminError, App, ReadError, StartError, WriteError};

/// Configuration of a [`RaftNode`].
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's Raft id (stable across restarts, unique in the cluster).
    pub node_id: u64,
    /// Directory holding the node's journal (created if missing).
    pub data_dir: PathBuf,
    /// Number of Raft groups (shards). Fixed for the lifetime of `data_dir`.
    pub shards: u32,
    /// Address other nodes use to reach this node's Raft transport
    /// (`host:port`), recorded in group membership.
    pub advertise_addr: String,
    /// If set, the node serves its Raft transport here itself. Otherwise mount
    /// [`RaftNode::grpc_service`] on your own tonic server.
    pub listen_addr: Option<SocketAddr>,
    /// Initialize groups that have never been initialized with this node as
    /// their only voter (single-node start, or the first node of a cluster).
    pub bootstrap: bool,
    /// fsync the journal before acknowledging appends (turn off only in tests).
    pub fsync: bool,
    /// Build a snapshot of a group after this many log entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log below a snapshot (helps lagging followers).
    pub keep_logs_after_snapshot: u64,
    /// Purge only once at least this many entries can go (fewer, larger deletes).
    pub purge_batch_size: u64,
    /// Raft heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout range; the leader lease is derived from it.
    pub election_timeout: (Duration, Duration),
    /// Extra time the journal writer waits to gather more ops into one fsync
    /// (zero: group only what arrives while the previous fsync runs).
    pub group_commit_linger: Duration,
    /// Commands per log entry at most when concurrent proposals to a group
    /// are batched.
    pub batch_max_commands: usize,
    /// Entries of a group's batched proposals in flight at once; while they
    /// are, new proposals gather into the next entry.
    pub batch_inflight: usize,
    /// How long `start` waits for groups to recover and elect a leader.
    pub startup_timeout: Duration,
    /// The initial cluster (node id -> Raft address), including this node.
    /// Empty (the default): a single node, exactly as before clustering.
    /// With `bootstrap`, a fresh group is initialized by every node of its
    /// placement over these peers, all with the identical voter set (safe in
    /// Raft: identical initial configs at log index 0). A node joining an
    /// existing cluster starts with `bootstrap = false` (`peers` then only
    /// serve as contact points) and is registered with
    /// [`RaftNode::add_node`] on any member.
    pub peers: BTreeMap<u64, String>,
    /// Replicas per group (voters), capped by the number of active nodes.
    pub replicas: usize,
    /// Period of the reconcile loop (membership towards placement, leader
    /// balance, registry upkeep). Zero disables the loop.
    pub reconcile_interval: Duration,
    /// Transfer each group's leadership to its preferred leader (placement).
    pub balance_leaders: bool,
    /// How long [`RaftNode::shutdown`] waits for the groups it leads to hand
    /// leadership to another voter.
    pub handoff_timeout: Duration,
    /// Give up waiting for a write after this long
    /// ([`WriteError::Unavailable`], outcome unknown). `None`: wait as long as
    /// openraft does (an isolated leader may then wait until it learns of a
    /// newer leader).
    pub write_timeout: Option<Duration>,
}

impl NodeConfig {
    /// Defaults for a single node that bootstraps its groups.
    pub fn new(node_id: u64, data_dir: impl Into<PathBuf>, shards: u32) -> Self {
        Self {
            node_id,
            data_dir: data_dir.into(),
            shards,
            advertise_addr: "127.0.0.1:0".to_string(),
            listen_addr: None,
            bootstrap: true,
            fsync: true,
            snapshot_every: 10_000,
            keep_logs_after_snapshot: 1_000,
            purge_batch_size: 256,
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(500), Duration::from_millis(1000)),
            group_commit_linger: Duration::ZERO,
            batch_max_commands: 1_024,
            batch_inflight: 2,
            startup_timeout: Duration::from_secs(10),
            peers: BTreeMap::new(),
            replicas: 3,
            reconcile_interval: Duration::from_secs(1),
            balance_leaders: true,
            handoff_timeout: Duration::from_secs(3),
            write_timeout: None,
        }
    }

    fn raft_config(&self) -> Result<Config, StartError> {
        let ms = |d: Duration| d.as_millis().max(1) as u64;
        let cfg = Config {
            cluster_name: "admit".to_string(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_timeout.0),
            election_timeout_max: ms(self.election_timeout.1),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: self.keep_logs_after_snapshot,
            purge_batch_size: self.purge_batch_size.max(1),
            // A node that was cut off must not inflate its term and depose a
            // healthy leader when it comes back.
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        cfg.validate()
            .map_err(|e| StartError::Config(e.to_string()))
    }
}

const NODE_INFO_KEY: &[u8] = b"admit-node-info";

/// Rendezvous key of the cluster-metadata group's placement.
const META_KEY: u64 = u64::MAX;
/// A learner within this many entries of the leader counts as caught up.
const CATCH_UP_SLACK: u64 = 64;

struct ServerHandle {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

pub(crate) struct Inner<A: App> {
    config: NodeConfig,
    groups: Arc<Vec<GroupRaft<A>>>,
    /// One batching proposer per group (same order as `groups`).
    proposers: Vec<Proposer<A>>,
    /// Last applied log index per group, as the state machine publishes it.
    applied: Vec<Arc<AtomicU64>>,
    /// The cluster-metadata group (group id `shards`): the node registry.
    meta: GroupRaft<Registry>,
    registry: Registry,
    journal: Arc<Journal>,
    router: GrpcRouter<A>,
    lease: Duration,
    server: Mutex<Option<ServerHandle>>,
    reconciler: Mutex<Option<ServerHandle>>,
    /// Last leadership transfer per group (leader-balance cooldown).
    transfers: Mutex<HashMap<u32, Instant>>,
}

/// A node hosting one Raft group per shard over one durable journal.
///
/// Cheap to clone (all clones share the node).
pub struct RaftNode<A: App> {
    inner: Arc<Inner<A>>,
}

impl<A: App> Clone for RaftNode<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<A: App> std::fmt::Debug for RaftNode<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("node_id", &self.inner.config.node_id)
            .field("shards", &self.inner.config.shards)
            .finish_non_exhaustive()
    }
}

/// Group-commit counters of a node's journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalCounters {
    /// fsyncs (group commits) performed.
    pub fsyncs: u64,
    /// Storage operations (appends from any group, votes, ...) they covered.
    pub ops: u64,
}

impl<A: App> RaftNode<A> {
    /// Open (or create) the journal in `config.data_dir` and start one Raft
    /// group per shard, each with the App `app_factory(shard)` (restored from
    /// the group's snapshot, then brought up to date by replaying the log).
    ///
    /// With `config.bootstrap`, never-initialized groups are initialized with
    /// this node as their only voter. Returns once every group whose only
    /// voter is this node has recovered its pre-restart committed state and
    /// elected itself leader (groups shared with peers recover in the
    /// background; guard reads with [`Self::ensure_linearizable`]).
    pub async fn start(
        config: NodeConfig,
        app_factory: impl Fn(u32) -> A,
    ) -> Result<Self, StartError> {
        if config.shards == 0 {
            return Err(StartError::Config("shards must be > 0".into()));
        }
        let raft_config = Arc::new(config.raft_config()?);
        let lease = Duration::from_millis(raft_config.election_timeout_max);
        let journal = Journal::open(&config.data_dir, config.fsync, config.group_commit_linger)
            .map_err(StartError::Storage)?;
        check_node_info(&journal, &config).await?;

        let router = GrpcRouter::<A>::new();
        for (id, addr) in &config.peers {
            router
                .set_addr(*id, addr)
                .map_err(|e| StartError::Config(format!("peer {id} address {addr}: {e}")))?;
        }
        let me = config.node_id;
        if config.bootstrap && !config.peers.is_empty() && !config.peers.contains_key(&me) {
            return Err(StartError::Config(format!(
                "peers must include this node ({me}) to bootstrap"
            )));
        }
        let mut groups = Vec::with_capacity(config.shards as usize);
        let applied: Vec<Arc<AtomicU64>> = (0..config.shards)
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        for shard in 0..config.shards {
            let log = LogStore::<A>::open(shard, journal.clone()).map_err(StartError::Storage)?;
            let sm = StateMachine::open(
                shard,
                app_factory(shard),
                journal.clone(),
                applied[shard as usize].clone(),
            )
            .map_err(StartError::Storage)?;
            let net = NetFactory {
                router: router.clone(),
                group: shard,
            };
            let raft = Raft::new(me, raft_config.clone(), net, log, sm)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
            groups.push(raft);
        }
        let meta_id = config.shards;
        let registry = Registry::default();
        let meta = {
            let log = LogStore::<Registry>::open(meta_id, journal.clone())
                .map_err(StartError::Storage)?;
            let sm = StateMachine::open(
                meta_id,
                registry.clone(),
                journal.clone(),
                Arc::new(AtomicU64::new(0)),
            )
            .map_err(StartError::Storage)?;
            let net = NetFactory {
                router: router.retype::<Registry>(),
                group: meta_id,
            };
            Raft::new(me, raft_config.clone(), net, log, sm)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?
        };

        let mut fresh = vec![false; groups.len()];
        let mut meta_fresh = false;
        if config.bootstrap {
            // Voters of every fresh group: this node alone, or the group's
            // placement over the static peers.
            let (table, meta_voters) = if config.peers.is_empty() {
                (vec![vec![me]; groups.len()], vec![me])
            } else {
                let ids: BTreeSet<u64> = config.peers.keys().copied().collect();
                (
                    placement_table(config.shards, &ids, config.replicas),
                    rendezvous(META_KEY, &ids, config.replicas),
                )
            };
            let members = |voters: &[u64]| -> BTreeMap<u64, BasicNode> {
                voters
                    .iter()
                    .map(|id| {
                        let addr = config
                            .peers
                            .get(id)
                            .cloned()
                            .unwrap_or_else(|| config.advertise_addr.clone());
                        (*id, BasicNode::new(addr))
                    })
                    .collect()
            };
            for ((raft, fresh), voters) in groups.iter().zip(fresh.iter_mut()).zip(&table) {
                if voters.contains(&me) && init_if_fresh(raft, members(voters)).await? {
                    *fresh = voters.len() == 1;
                }
            }
            if meta_voters.contains(&me) && init_if_fresh(&meta, members(&meta_voters)).await? {
                meta_fresh = meta_voters.len() == 1;
            }
        }

        let batching = BatchConfig {
            max_commands: config.batch_max_commands.max(1),
            inflight: config.batch_inflight.max(1),
        };
        let proposers = groups
            .iter()
            .map(|g| Proposer::spawn(me, g.clone(), batching))
            .collect();
        let node = Self {
            inner: Arc::new(Inner {
                groups: Arc::new(groups),
                proposers,
                applied,
                meta,
                registry,
                journal,
                router,
                lease,
                server: Mutex::new(None),
                reconciler: Mutex::new(None),
                transfers: Mutex::new(HashMap::new()),
                config,
            }),
        };
        if let Some(addr) = node.inner.config.listen_addr {
            node.serve(addr).await?;
        }
        if let Err(e) = node.wait_ready(&fresh, meta_fresh).await {
            let _ = node.shutdown().await;
            return Err(e);
        }
        node.spawn_reconciler();
        Ok(node)
    }

    async fn wait_ready(&self, fresh: &[bool], meta_fresh: bool) -> Result<(), StartError> {
        let deadline = Instant::now() + self.inner.config.startup_timeout;
        let me = self.inner.config.node_id;
        for (raft, fresh) in self.inner.groups.iter().zip(fresh) {
            wait_sole_voter(raft, me, *fresh, deadline).await?;
        }
        wait_sole_voter(&self.inner.meta, me, meta_fresh, deadline).await
    }

    async fn serve(&self, addr: SocketAddr) -> Result<(), StartError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(StartError::Storage)?;
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let svc = self.grpc_service();
        let task = tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "raft transport server failed");
            }
        });
        *self.inner.server.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(ServerHandle { stop, task });
        Ok(())
    }

    /// The gRPC service receiving Raft RPCs for all groups of this node.
    pub fn grpc_service(&self) -> RaftTransportServer<RaftGrpcService<A>> {
        RaftTransportServer::new(RaftGrpcService {
            groups: self.inner.groups.clone(),
            meta: self.inner.meta.clone(),
            node: Arc::downgrade(&self.inner),
            isolated: self.inner.router.isolated(),
        })
        .max_decoding_message_size(256 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024)
    }

    fn group(&self, shard: u32) -> Option<&GroupRaft<A>> {
        self.inner.groups.get(shard as usize)
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.inner.config.node_id
    }

    /// Number of groups.
    pub fn shards(&self) -> u32 {
        self.inner.config.shards
    }

    /// Propose `cmd` to group `shard`; returns the App's response once the
    /// entry is committed (durable on a majority) and applied here.
    ///
    /// On a follower this fails fast with [`WriteError::ForwardToLeader`].
    /// An error other than that, `NoSuchShard` or `NoLeader` means the
    /// outcome is unknown (the command may still commit): retry with the same
    /// idempotency key.
    pub async fn write(&self, shard: u32, cmd: A::Command) -> Result<A::Response, WriteError> {
        let mut out = self.propose(shard, vec![cmd]).await?;
        out.pop()
            .ok_or_else(|| WriteError::Unavailable("no response".into()))
    }

    /// Propose several commands to one group as one log entry: they commit
    /// (or fail) together and are applied in the given order. Responses in
    /// submission order.
    pub async fn write_many(
        &self,
        shard: u32,
        cmds: Vec<A::Command>,
    ) -> Result<Vec<A::Response>, WriteError> {
        self.propose(shard, cmds).await
    }

    async fn propose(
        &self,
        shard: u32,
        cmds: Vec<A::Command>,
    ) -> Result<Vec<A::Response>, WriteError> {
        let p = self
            .inner
            .proposers
            .get(shard as usize)
            .ok_or(WriteError::NoSuchShard(shard))?;
        p.propose(cmds, self.inner.config.write_timeout).await
    }

    /// Wait until a read of this node's App for `shard` is linearizable: this
    /// node is leader with a valid lease (a quorum acknowledged it within the
    /// lease, which is shorter than any follower's election timeout) and the
    /// App has applied every entry committed before the call.
    ///
    /// Uses openraft's lease read: no network round trip while the lease is
    /// fresh (heartbeats keep it so); otherwise waits for a heartbeat quorum.
    pub async fn ensure_linearizable(&self, shard: u32) -> Result<(), ReadError> {
        let raft = self.group(shard).ok_or(ReadError::NoSuchShard(shard))?;
        match raft.ensure_linearizable(ReadPolicy::LeaseRead).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(ReadError::ForwardToLeader {
                    leader_id: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.addr),
                })
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e))) => {
                Err(ReadError::Unavailable(e.to_string()))
            }
            Err(RaftError::Fatal(f)) => Err(ReadError::Unavailable(f.to_string())),
        }
    }

    /// Synchronous, conservative check from the group's latest metrics: this
    /// node is leader of `shard`, a quorum acknowledged it less than a lease
    /// ago (single-voter groups need no acknowledgement), and everything
    /// committed is applied. `false` means "use [`Self::ensure_linearizable`]
    /// or forward"; it never wrongly says `true` unless metrics lag the core by
    /// more than the lease margin.
    pub fn is_leader_with_lease(&self, shard: u32) -> bool {
        let Some(raft) = self.group(shard) else {
            return false;
        };
        let rx = raft.metrics();
        let m = rx.borrow_watched();
        if m.state != ServerState::Leader || m.current_leader != Some(self.node_id()) {
            return false;
        }
        // Everything committed must be applied. The state machine's own
        // index is used, not the metrics' `last_applied`: the metrics follow
        // an apply by a moment, and under a steady write load they would
        // nearly always lag and turn fast reads away. The committed index may
        // lag too, but only towards entries not yet acknowledged to anyone
        // (a write is answered after its apply, which published the index).
        let applied = self
            .inner
            .applied
            .get(shard as usize)
            .map_or(0, |a| a.load(Ordering::Acquire));
        if m.local_committed
            .as_ref()
            .is_some_and(|c| c.index > applied)
        {
            return false;
        }
        // The leader's first entry of its term must be committed (and so
        // applied) before its reads are safe.
        let term_committed = m
            .local_committed
            .as_ref()
            .is_some_and(|c| c.leader_id.term == m.current_term);
        if !term_committed {
            return false;
        }
        let sole = m
            .membership_config
            .membership()
            .voter_ids()
            .eq([self.node_id()]);
        if sole {
            return true;
        }
        // Keep a margin below the lease for clock drift and metrics lag.
        let margin = self.inner.lease / 2;
        m.last_quorum_acked
            .as_ref()
            .is_some_and(|t| t.into_inner().elapsed() < margin)
    }

    /// Id of the leader of `shard` as known here.
    pub fn leader(&self, shard: u32) -> Option<u64> {
        self.group(shard)
            .and_then(|r| r.metrics().borrow_watched().current_leader)
    }

    /// Address of the leader of `shard` as recorded in the group membership.
    pub fn leader_addr(&self, shard: u32) -> Option<String> {
        let raft = self.group(shard)?;
        let m = raft.metrics();
        let m = m.borrow_watched();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    /// Run `f` on the App of `shard` on its state-machine task (serialized
    /// with `apply`). For hot-path reads prefer reader handles that the App
    /// shares through `Arc`s (see the crate docs).
    pub async fn with_app<R, F>(&self, shard: u32, f: F) -> Result<R, ReadError>
    where
        F: FnOnce(&A) -> R + Send + 'static,
        R: Send + 'static,
    {
        let raft = self.group(shard).ok_or(ReadError::NoSuchShard(shard))?;
        raft.with_state_machine(move |sm: &mut StateMachine<A>| {
            let r = f(&sm.app);
            Box::pin(async move { r })
        })
        .await
        .map_err(|e| ReadError::Unavailable(e.to_string()))
    }

    /// Build a snapshot of `shard` now and wait until it is stored (the log
    /// below it is then purged, keeping `keep_logs_after_snapshot` entries).
    pub async fn snapshot(&self, shard: u32) -> Result<(), AdminError> {
        let raft = self.group(shard).ok_or(AdminError::NoSuchShard(shard))?;
        let applied = raft.metrics().borrow_watched().last_applied;
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| AdminError::Raft(e.to_string()))?;
        raft.wait(Some(Duration::from_secs(30)))
            .metrics(|m| m.snapshot >= applied, "snapshot built")
            .await
            .map_err(|e| AdminError::Raft(e.to_string()))?;
        Ok(())
    }

    /// Index of the last purged log entry of `shard`, if any.
    pub fn purged_index(&self, shard: u32) -> Option<u64> {
        self.group(shard).and_then(|r| {
            r.metrics()
                .borrow_watched()
                .purged
                .as_ref()
                .map(|l| l.index)
        })
    }

    /// Add `node` (reachable at `addr`) as a learner of `shard`; waits until
    /// it has caught up. Call on the group leader.
    pub async fn add_learner(&self, shard: u32, node: u64, addr: &str) -> Result<(), AdminError> {
        let raft = self.group(shard).ok_or(AdminError::NoSuchShard(shard))?;
        self.inner
            .router
            .set_addr(node, addr)
            .map_err(|e| AdminError::Raft(e.to_string()))?;
        raft.add_learner(node, BasicNode::new(addr), true)
            .await
            .map(|_| ())
            .map_err(|e| AdminError::Raft(e.to_string()))
    }

    /// Make `voters` the voter set of `shard` (joint consensus inside
    /// openraft); removed voters are dropped from the group. Call on the
    /// group leader; new voters must be learners already.
    pub async fn change_membership(
        &self,
        shard: u32,
        voters: BTreeSet<u64>,
    ) -> Result<(), AdminError> {
        let raft = self.group(shard).ok_or(AdminError::NoSuchShard(shard))?;
        raft.change_membership(voters, false)
            .await
            .map(|_| ())
            .map_err(|e| AdminError::Raft(e.to_string()))
    }

    /// Voter ids of `shard` as known here.
    pub fn voters(&self, shard: u32) -> BTreeSet<u64> {
        self.group(shard)
            .map(|r| r.voter_ids().collect())
            .unwrap_or_default()
    }

    /// Group-commit counters of the journal.
    pub fn journal_counters(&self) -> JournalCounters {
        JournalCounters {
            fsyncs: self.inner.journal.stats.fsyncs.load(Ordering::Relaxed),
            ops: self.inner.journal.stats.ops.load(Ordering::Relaxed),
        }
    }

    /// Stop the reconcile loop, hand the leadership of every group this node
    /// leads to another up-to-date voter (waiting at most
    /// [`NodeConfig::handoff_timeout`]), stop serving, stop every group, then
    /// flush and fsync the journal.
    pub async fn shutdown(&self) -> Result<(), std::io::Error> {
        self.stop(true).await
    }

    /// Test helper: stop like a crash (no leadership handoff, RPCs cut
    /// first). The journal is still closed cleanly, which a real crash would
    /// not do; `kill -9` durability is tested separately.
    #[doc(hidden)]
    pub async fn crash(&self) {
        self.set_isolated(true);
        let _ = self.stop(false).await;
    }

    async fn stop(&self, handoff: bool) -> Result<(), std::io::Error> {
        let rec = self
            .inner
            .reconciler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(r) = rec {
            let _ = r.stop.send(());
            let _ = r.task.await;
        }
        if handoff {
            self.handoff().await;
        }
        let server = self
            .inner
            .server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(s) = server {
            let _ = s.stop.send(());
            let _ = s.task.await;
        }
        for raft in self.inner.groups.iter() {
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(error = %e, "raft group shutdown");
            }
        }
        if let Err(e) = self.inner.meta.shutdown().await {
            tracing::warn!(error = %e, "raft metadata group shutdown");
        }
        self.inner.journal.sync().await.ok();
        self.inner.journal.close()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct DirInfo {
    node_id: u64,
    shards: u32,
}

async fn check_node_info(journal: &Journal, config: &NodeConfig) -> Result<(), StartError> {
    let existing = journal
        .meta
        .get(NODE_INFO_KEY)
        .map_err(|e| StartError::Storage(io_err(e)))?;
    match existing {
        Some(b) => {
            let info: DirInfo = decode(&b).map_err(StartError::Storage)?;
            if info.node_id != config.node_id || info.shards != config.shards {
                return Err(StartError::Config(format!(
                    "data dir belongs to node {} with {} shards, config says node {} with {} shards",
                    info.node_id, info.shards, config.node_id, config.shards
                )));
            }
            Ok(())
        }
        None => {
            let info = DirInfo {
                node_id: config.node_id,
                shards: config.shards,
            };
            let bytes = encode(&info).map_err(StartError::Storage)?;
            journal
                .submit_wait(vec![crate::journal::Mutation::Put(
                    crate::journal::Ks::Meta,
                    NODE_INFO_KEY.to_vec(),
                    bytes,
                )])
                .await
                .map_err(StartError::Storage)
        }
    }
}

/// Initialize `raft` with `members` unless it already is. Returns whether it
/// was initialized now.
async fn init_if_fresh<X: App>(
    raft: &GroupRaft<X>,
    members: BTreeMap<u64, BasicNode>,
) -> Result<bool, StartError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    if initialized {
        return Ok(false);
    }
    raft.initialize(members)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    Ok(true)
}

/// Wait until a group this node can commit alone has recovered and elected
/// itself. Groups shared with peers recover in the background (their reads
/// are guarded by the lease anyway).
async fn wait_sole_voter<X: App>(
    raft: &GroupRaft<X>,
    me: u64,
    fresh: bool,
    deadline: Instant,
) -> Result<(), StartError> {
    let sole_voter = fresh || raft.voter_ids().eq([me]);
    if !sole_voter {
        return Ok(());
    }
    let left = deadline.saturating_duration_since(Instant::now());
    raft.wait_for_recovery(Some(left))
        .await
        .map_err(|e| StartError::Raft(format!("recovery: {e}")))?;
    let left = deadline.saturating_duration_since(Instant::now());
    raft.wait(Some(left))
        .metrics(
            |m| m.current_leader == Some(me) && m.last_applied >= m.local_committed,
            "leader of own group",
        )
        .await
        .map_err(|e| StartError::Raft(format!("election: {e}")))?;
    Ok(())
}

/// This node's view of group `raft` (id `shard`).
fn group_info<X: App>(raft: &GroupRaft<X>, shard: u32, me: u64, target: Vec<u64>) -> ShardInfo {
    let m = raft.metrics().borrow_watched().clone();
    let mem = m.membership_config.membership();
    let voters: BTreeSet<u64> = mem.voter_ids().collect();
    let learners: BTreeSet<u64> = mem.learner_ids().collect();
    let changing = mem.get_joint_config().len() > 1
        || m.membership_config.log_id() != m.committed_membership_config.log_id();
    let last = m.last_log_index;
    let mut replicas = Vec::new();
    if m.state == ServerState::Leader {
        let repl = m.replication.clone().unwrap_or_default();
        let hb = m.heartbeat.clone().unwrap_or_default();
        for n in voters.iter().chain(learners.iter()) {
            let matched = if *n == me {
                last
            } else {
                repl.get(n).cloned().flatten().map(|l| l.index)
            };
            let last_ack_ms = if *n == me {
                Some(0)
            } else {
                hb.get(n)
                    .cloned()
                    .flatten()
                    .map(|t| t.into_inner().elapsed().as_millis() as u64)
            };
            replicas.push(ReplicaInfo {
                node: *n,
                voter: voters.contains(n),
                matched,
                lag: matched.map(|i| last.unwrap_or(0).saturating_sub(i)),
                last_ack_ms,
            });
        }
    }
    ShardInfo {
        shard,
        reporter: me,
        leader: m.current_leader,
        term: m.current_term,
        voters,
        learners,
        changing,
        last_log_index: last,
        committed: m.local_committed.map(|l| l.index),
        applied: m.last_applied.map(|l| l.index),
        purged: m.purged.map(|l| l.index),
        replicas,
        target,
    }
}

/// Views of every group of this node, the metadata group last.
pub(crate) fn local_infos<A: App>(inner: &Arc<Inner<A>>) -> Vec<ShardInfo> {
    let node = RaftNode {
        inner: inner.clone(),
    };
    let mut v = node.shard_infos();
    v.push(node.meta_info());
    v
}

/// Propose `cmd` to the metadata group if this node leads it.
pub(crate) async fn meta_write_local<A: App>(inner: &Arc<Inner<A>>, cmd: MetaCmd) -> MetaFwd {
    let meta = &inner.meta;
    match meta.client_write(CmdData(vec![cmd])).await {
        Ok(r) => MetaFwd::Done(r.data.0.into_iter().next().and_then(|r| r.err)),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            MetaFwd::NotLeader(f.leader_id.zip(f.leader_node.map(|n| n.addr)))
        }
        Err(e) => MetaFwd::Done(Some(format!("unavailable: {e}"))),
    }
}

/// What the reconcile step of one group did.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Idle,
    Busy,
}

impl<A: App> RaftNode<A> {
    fn spawn_reconciler(&self) {
        let every = self.inner.config.reconcile_interval;
        if every.is_zero() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tokio::time::sleep(every) => {}
                }
                let Some(inner) = weak.upgrade() else { break };
                let node = RaftNode { inner };
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = node.reconcile_once() => {}
                }
            }
        });
        *self
            .inner
            .reconciler
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(ServerHandle { stop, task });
    }

    /// The node registry as replicated to this node (empty until this node
    /// holds a replica of the metadata group).
    pub fn nodes(&self) -> Vec<ClusterNode> {
        self.inner.registry.read().list()
    }

    /// Learner ids of `shard` as known here.
    pub fn learners(&self, shard: u32) -> BTreeSet<u64> {
        self.group(shard)
            .map(|r| r.learner_ids().collect())
            .unwrap_or_default()
    }

    fn targets(&self) -> Vec<Vec<u64>> {
        let reg = self.inner.registry.read();
        let active = reg.active();
        if active.is_empty() {
            return vec![Vec::new(); self.shards() as usize];
        }
        placement_table(self.shards(), &active, self.inner.config.replicas)
    }

    /// This node's view of every shard's group: leader, voters, learners,
    /// log positions, and (on groups this node leads) each replica's matched
    /// index and lag; `target` is the placement over this node's registry copy.
    pub fn shard_infos(&self) -> Vec<ShardInfo> {
        let me = self.node_id();
        let targets = self.targets();
        self.inner
            .groups
            .iter()
            .zip(targets)
            .enumerate()
            .map(|(i, (raft, t))| group_info(raft, i as u32, me, t))
            .collect()
    }

    /// This node's view of the cluster-metadata group (shard id `shards`).
    pub fn meta_info(&self) -> ShardInfo {
        let reg = self.inner.registry.read();
        let target = rendezvous(META_KEY, &reg.active(), self.inner.config.replicas);
        group_info(&self.inner.meta, self.shards(), self.node_id(), target)
    }

    /// Cluster-wide view: for every shard, the view of its leader (asked over
    /// the network, 1 s timeout per node), else the freshest view reachable.
    pub async fn cluster_shard_infos(&self) -> Vec<ShardInfo> {
        let reg = self.inner.registry.read();
        let mut all = self.gather(&reg).await;
        all.truncate(self.shards() as usize);
        all.into_iter()
            .enumerate()
            .map(|(i, v)| v.unwrap_or_else(|| self.shard_infos().swap_remove(i)))
            .collect()
    }

    /// Best view per group (index = group id, metadata group last) from this
    /// node and every registered, non-removed node.
    async fn gather(&self, reg: &RegistryState) -> Vec<Option<ShardInfo>> {
        let me = self.node_id();
        let peers: Vec<u64> = reg
            .nodes
            .iter()
            .filter(|(id, (_, st))| **id != me && *st != NodeState::Removed)
            .map(|(id, _)| *id)
            .collect();
        let router = self.inner.router.clone();
        let calls = peers.into_iter().map(|id| {
            let router = router.clone();
            async move {
                router
                    .call::<(), Vec<ShardInfo>>(
                        id,
                        0,
                        RaftRpcKind::Status,
                        &(),
                        Duration::from_secs(1),
                    )
                    .await
                    .ok()
            }
        });
        let mut reports: Vec<ShardInfo> = local_infos(&self.inner);
        for r in futures_util::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
        {
            reports.extend(r);
        }
        let n = self.shards() as usize + 1;
        let mut best: Vec<Option<ShardInfo>> = vec![None; n];
        for r in reports {
            let Some(slot) = best.get_mut(r.shard as usize) else {
                continue;
            };
            let key = |x: &ShardInfo| (x.is_leader_view(), x.term);
            if slot.as_ref().is_none_or(|b| key(&r) > key(b)) {
                *slot = Some(r);
            }
        }
        best
    }

    /// Register node `id` reachable at `addr` (Raft transport) as Active; the
    /// reconcile loops then move replicas onto it (learner, catch-up by log or
    /// snapshot, joint-consensus membership change). Callable on any node:
    /// forwarded to the metadata group's leader. Refused for an id that was
    /// removed (ids are never reused). Start the new node with
    /// `bootstrap = false` before calling this.
    pub async fn add_node(&self, id: u64, addr: &str) -> Result<(), AdminError> {
        self.meta_write(MetaCmd::Add {
            id,
            addr: addr.to_string(),
        })
        .await
    }

    /// Mark node `id` Leaving: placement stops counting it, the reconcile
    /// loops move its replicas to other nodes (each replacement becomes a
    /// voter before the old replica is removed), and once no group has it as
    /// a member it is marked Removed (see [`Self::nodes`]); then it can be
    /// stopped. Callable on any node. Refused for the last active node.
    pub async fn remove_node(&self, id: u64) -> Result<(), AdminError> {
        self.meta_write(MetaCmd::Leave { id }).await
    }

    async fn meta_write(&self, cmd: MetaCmd) -> Result<(), AdminError> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let me = self.node_id();
        let mut hint: Option<(u64, String)> = None;
        let mut round = 0usize;
        loop {
            if Instant::now() > deadline {
                return Err(AdminError::Raft(
                    "metadata group: no reachable leader".into(),
                ));
            }
            let outcome = if self.inner.meta.metrics().borrow_watched().current_leader == Some(me) {
                Some(meta_write_local(&self.inner, cmd.clone()).await)
            } else {
                let target = hint.take().or_else(|| self.meta_leader_hint()).or_else(|| {
                    // No leader known here: try every known contact in turn.
                    let mut c: Vec<(u64, String)> = self
                        .inner
                        .registry
                        .read()
                        .nodes
                        .into_iter()
                        .filter(|(_, (_, st))| *st == NodeState::Active)
                        .map(|(id, (a, _))| (id, a))
                        .chain(self.inner.config.peers.clone())
                        .filter(|(id, _)| *id != me)
                        .collect();
                    c.sort();
                    c.dedup();
                    (!c.is_empty()).then(|| c[round % c.len()].clone())
                });
                round += 1;
                match target {
                    None => None,
                    Some((id, addr)) => {
                        let _ = self.inner.router.set_addr(id, &addr);
                        self.inner
                            .router
                            .call::<MetaCmd, MetaFwd>(
                                id,
                                self.shards(),
                                RaftRpcKind::MetaWrite,
                                &cmd,
                                Duration::from_secs(5),
                            )
                            .await
                            .ok()
                    }
                }
            };
            match outcome {
                Some(MetaFwd::Done(None)) => return Ok(()),
                Some(MetaFwd::Done(Some(e))) if !e.starts_with("unavailable") => {
                    return Err(AdminError::Raft(e))
                }
                Some(MetaFwd::NotLeader(h)) if h.as_ref().is_some_and(|(id, _)| *id != me) => {
                    hint = h;
                    continue;
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn meta_leader_hint(&self) -> Option<(u64, String)> {
        let m = self.inner.meta.metrics();
        let m = m.borrow_watched();
        let l = m.current_leader.filter(|l| *l != self.node_id())?;
        let addr = m.membership_config.membership().get_node(&l)?.addr.clone();
        Some((l, addr))
    }

    /// Test switch: drop every Raft RPC this node sends or receives (a
    /// network partition around it). Not for production use.
    #[doc(hidden)]
    pub fn set_isolated(&self, isolated: bool) {
        self.inner
            .router
            .isolated()
            .store(isolated, Ordering::Relaxed);
    }

    /// Ask the leader of `shard` (this node) to hand leadership to `to`.
    pub async fn transfer_leader(&self, shard: u32, to: u64) -> Result<(), AdminError> {
        let raft = self.group(shard).ok_or(AdminError::NoSuchShard(shard))?;
        raft.trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| AdminError::Raft(e.to_string()))
    }

    /// One pass of the reconcile loop.
    async fn reconcile_once(&self) {
        let reg = self.inner.registry.read();
        for (id, (addr, st)) in &reg.nodes {
            if *st != NodeState::Removed && *id != self.node_id() {
                let _ = self.inner.router.set_addr(*id, addr);
            }
        }
        let me = self.node_id();
        let replicas = self.inner.config.replicas;
        if self.inner.meta.metrics().borrow_watched().current_leader == Some(me) {
            if !reg.seeded {
                let peers = if self.inner.config.peers.is_empty() {
                    BTreeMap::from([(me, self.inner.config.advertise_addr.clone())])
                } else {
                    self.inner.config.peers.clone()
                };
                let _ = meta_write_local(&self.inner, MetaCmd::Seed(peers)).await;
                return;
            }
            let active = reg.active();
            let voters = rendezvous(META_KEY, &active, replicas);
            let learners: BTreeSet<u64> = active
                .iter()
                .filter(|n| !voters.contains(n))
                .copied()
                .collect();
            self.reconcile_group(&self.inner.meta, self.shards(), &voters, &learners, &reg)
                .await;
            for x in reg.with_state(NodeState::Leaving) {
                if self.holds_no_replica(x, &reg).await {
                    let r = meta_write_local(&self.inner, MetaCmd::MarkRemoved { id: x }).await;
                    tracing::info!(node = x, outcome = ?r, "leaving node holds no replica: removed");
                }
            }
        }
        if !reg.seeded || reg.active().is_empty() {
            return;
        }
        let table = placement_table(self.shards(), &reg.active(), replicas);
        let none = BTreeSet::new();
        let steps = self
            .inner
            .groups
            .iter()
            .zip(table.iter())
            .enumerate()
            .filter(|(_, (raft, _))| raft.metrics().borrow_watched().current_leader == Some(me))
            .map(|(i, (raft, target))| self.reconcile_group(raft, i as u32, target, &none, &reg));
        futures_util::future::join_all(steps).await;
    }

    /// Whether no group has `x` as voter or learner, according to each
    /// group's leader (every group must have a reachable leader).
    async fn holds_no_replica(&self, x: u64, reg: &RegistryState) -> bool {
        let best = self.gather(reg).await;
        best.iter().all(|v| {
            v.as_ref().is_some_and(|i| {
                i.is_leader_view() && !i.voters.contains(&x) && !i.learners.contains(&x)
            })
        })
    }

    /// Move the voters of a group this node leads one step towards `desired`
    /// (preferred leader first), keep `want_learners` as learners, and
    /// balance leadership. Nodes unknown to the registry are left alone (they
    /// are managed by hand with `add_learner`/`change_membership`).
    async fn reconcile_group<X: App>(
        &self,
        raft: &GroupRaft<X>,
        gid: u32,
        desired: &[u64],
        want_learners: &BTreeSet<u64>,
        reg: &RegistryState,
    ) -> Step {
        let me = self.node_id();
        let m = raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader || m.current_leader != Some(me) || desired.is_empty() {
            return Step::Idle;
        }
        let mem = m.membership_config.membership();
        if m.membership_config.log_id() != m.committed_membership_config.log_id() {
            return Step::Busy; // a change is being committed
        }
        let joint = mem.get_joint_config().len() > 1;
        let voters: BTreeSet<u64> = mem.voter_ids().collect();
        let learners: BTreeSet<u64> = mem.learner_ids().collect();
        let mut target: BTreeSet<u64> = desired.iter().copied().collect();
        target.extend(voters.iter().filter(|v| !reg.nodes.contains_key(v)));
        let last = m.last_log_index.unwrap_or(0);
        let repl = m.replication.clone().unwrap_or_default();
        let hb = m.heartbeat.clone().unwrap_or_default();
        let lease = self.inner.lease;
        let caught_up = |n: u64| {
            n == me
                || repl
                    .get(&n)
                    .cloned()
                    .flatten()
                    .is_some_and(|l| l.index + CATCH_UP_SLACK >= last)
        };
        let fresh = |n: u64| {
            n == me
                || hb
                    .get(&n)
                    .cloned()
                    .flatten()
                    .is_some_and(|t| t.into_inner().elapsed() < lease)
        };
        let op_timeout = Duration::from_secs(10);
        let addr_of = |n: u64| {
            reg.addr(n)
                .map(str::to_string)
                .or_else(|| self.inner.router.addr(n))
        };

        if !joint && voters == target {
            let stray: BTreeSet<u64> = learners
                .iter()
                .filter(|l| reg.nodes.contains_key(l) && !want_learners.contains(l))
                .copied()
                .collect();
            if !stray.is_empty() {
                tracing::info!(group = gid, ?stray, "removing learners");
                let r = tokio::time::timeout(
                    op_timeout,
                    raft.change_membership(ChangeMembers::RemoveNodes(stray), false),
                )
                .await;
                log_op(gid, "remove learners", r);
                return Step::Busy;
            }
            let mut busy = false;
            for l in want_learners
                .iter()
                .filter(|l| !voters.contains(l) && !learners.contains(l))
            {
                if let Some(addr) = addr_of(*l) {
                    busy = true;
                    let r = tokio::time::timeout(
                        op_timeout,
                        raft.add_learner(*l, BasicNode::new(addr), false),
                    )
                    .await;
                    log_op(gid, "add learner", r);
                }
            }
            if busy {
                return Step::Busy;
            }
            let preferred = desired[0];
            if self.inner.config.balance_leaders
                && preferred != me
                && voters.contains(&preferred)
                && caught_up(preferred)
                && fresh(preferred)
                && self.transfer_allowed(gid)
            {
                tracing::debug!(group = gid, to = preferred, "leader balance");
                let _ = raft.trigger().transfer_leader(preferred).await;
                return Step::Busy;
            }
            return Step::Idle;
        }

        let missing: Vec<u64> = target.difference(&voters).copied().collect();
        if !missing.is_empty() {
            // 1. Every new replica first joins as a learner and catches up
            //    (openraft streams the log, or a snapshot if it was purged).
            let mut pending = false;
            for x in &missing {
                if !learners.contains(x) {
                    pending = true;
                    if let Some(addr) = addr_of(*x) {
                        tracing::info!(group = gid, node = x, "adding learner");
                        let r = tokio::time::timeout(
                            op_timeout,
                            raft.add_learner(*x, BasicNode::new(addr), false),
                        )
                        .await;
                        log_op(gid, "add learner", r);
                    }
                } else if !caught_up(*x) {
                    pending = true;
                }
            }
            if pending {
                return Step::Busy;
            }
            // 2. Promote them (joint consensus inside openraft) while every
            //    old voter stays: replacements are voters before anything is
            //    removed.
            let all: BTreeSet<u64> = voters.union(&target).copied().collect();
            tracing::info!(group = gid, ?voters, to = ?all, "promoting learners");
            let r = tokio::time::timeout(
                op_timeout,
                raft.change_membership(ChangeMembers::ReplaceAllVoters(all), false),
            )
            .await;
            log_op(gid, "promote", r);
            return Step::Busy;
        }
        // 3. Drop the voters outside the target (joint consensus again). If
        //    this node is one of them, hand leadership to a target voter first.
        if !target.contains(&me) {
            let to = desired
                .iter()
                .copied()
                .find(|n| voters.contains(n) && caught_up(*n) && fresh(*n));
            if let Some(to) = to {
                if self.transfer_allowed(gid) {
                    tracing::info!(group = gid, to, "handing leadership to a remaining voter");
                    let _ = raft.trigger().transfer_leader(to).await;
                }
            }
            return Step::Busy;
        }
        tracing::info!(group = gid, ?voters, to = ?target, "removing voters");
        let r = tokio::time::timeout(
            op_timeout,
            raft.change_membership(ChangeMembers::ReplaceAllVoters(target), false),
        )
        .await;
        log_op(gid, "remove voters", r);
        Step::Busy
    }

    fn transfer_allowed(&self, gid: u32) -> bool {
        let mut t = self
            .inner
            .transfers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let cooldown = self.inner.lease * 4;
        match t.get(&gid) {
            Some(at) if at.elapsed() < cooldown => false,
            _ => {
                t.insert(gid, Instant::now());
                true
            }
        }
    }

    /// Hand every group this node leads (with other voters) to the most
    /// up-to-date other voter that acknowledged recently; wait for it.
    async fn handoff(&self) {
        let me = self.node_id();
        let timeout = self.inner.config.handoff_timeout;
        if timeout.is_zero() {
            return;
        }
        let lease = self.inner.lease;
        let app = futures_util::future::join_all(
            self.inner
                .groups
                .iter()
                .map(|r| handoff_group(r, me, lease, timeout)),
        );
        let meta = handoff_group(&self.inner.meta, me, lease, timeout);
        let (app, meta) = tokio::join!(app, meta);
        let tried = app.iter().chain([&meta]).filter(|r| r.is_some()).count();
        let done = app
            .iter()
            .chain([&meta])
            .filter(|r| **r == Some(true))
            .count();
        if tried > 0 {
            tracing::info!(tried, done, "leadership handed over before shutdown");
        }
    }
}

/// Transfer the leadership of `raft` away from `me` if it leads with other
/// voters; `Some(handed over within timeout)`, `None` if nothing to do.
async fn handoff_group<X: App>(
    raft: &GroupRaft<X>,
    me: u64,
    lease: Duration,
    timeout: Duration,
) -> Option<bool> {
    let m = raft.metrics().borrow_watched().clone();
    if m.state != ServerState::Leader || m.current_leader != Some(me) {
        return None;
    }
    let repl = m.replication.clone().unwrap_or_default();
    let hb = m.heartbeat.clone().unwrap_or_default();
    let to = m
        .membership_config
        .membership()
        .voter_ids()
        .filter(|n| *n != me)
        .filter(|n| {
            hb.get(n)
                .cloned()
                .flatten()
                .is_some_and(|t| t.into_inner().elapsed() < lease)
        })
        .max_by_key(|n| (repl.get(n).cloned().flatten().map(|l| l.index), *n))?;
    raft.trigger().transfer_leader(to).await.ok()?;
    Some(
        raft.wait(Some(timeout))
            .metrics(|m| m.current_leader != Some(me), "leadership handed over")
            .await
            .is_ok(),
    )
}

fn log_op<T, E: std::fmt::Display>(
    gid: u32,
    what: &str,
    r: Result<Result<T, E>, tokio::time::error::Elapsed>,
) {
    match r {
        Ok(Ok(_)) => tracing::info!(group = gid, "{what}: done"),
        Ok(Err(e)) => tracing::info!(group = gid, error = %e, "{what}: failed"),
        Err(_) => tracing::info!(group = gid, "{what}: timed out"),
    }
}
