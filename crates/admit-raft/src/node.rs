//! [`RaftNode`]: many openraft groups on one node, one journal.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::impls::BasicNode;
use openraft::raft::ReadPolicy;
use openraft::Instant as _;
use openraft::{Config, Raft, ServerState, SnapshotPolicy};

use crate::journal::{io_err, Journal};
use crate::network::{GroupRaft, GrpcRouter, NetFactory, RaftGrpcService};
use crate::pb::raft_transport_server::RaftTransportServer;
use crate::sm::StateMachine;
use crate::store::{decode, encode, LogStore};
use crate::types::{CmdData, C};
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
    /// How long `start` waits for groups to recover and elect a leader.
    pub startup_timeout: Duration,
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
            startup_timeout: Duration::from_secs(10),
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
            ..Default::default()
        };
        cfg.validate()
            .map_err(|e| StartError::Config(e.to_string()))
    }
}

const NODE_INFO_KEY: &[u8] = b"admit-node-info";

struct ServerHandle {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

struct Inner<A: App> {
    config: NodeConfig,
    groups: Arc<Vec<GroupRaft<A>>>,
    journal: Arc<Journal>,
    router: GrpcRouter<A>,
    lease: Duration,
    server: Mutex<Option<ServerHandle>>,
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

fn map_write_err<A: App>(node: u64, e: RaftError<C<A>, ClientWriteError<C<A>>>) -> WriteError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            if f.leader_id.is_none() || f.leader_id == Some(node) {
                WriteError::NoLeader
            } else {
                WriteError::ForwardToLeader {
                    leader_id: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.addr),
                }
            }
        }
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => WriteError::Discarded {
            leader_id: f.leader_id,
        },
        RaftError::APIError(e) => WriteError::Unavailable(e.to_string()),
        RaftError::Fatal(f) => WriteError::Unavailable(f.to_string()),
    }
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
        let mut groups = Vec::with_capacity(config.shards as usize);
        for shard in 0..config.shards {
            let log = LogStore::<A>::open(shard, journal.clone()).map_err(StartError::Storage)?;
            let sm = StateMachine::open(shard, app_factory(shard), journal.clone())
                .map_err(StartError::Storage)?;
            let net = NetFactory {
                router: router.clone(),
                group: shard,
            };
            let raft = Raft::new(config.node_id, raft_config.clone(), net, log, sm)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
            groups.push(raft);
        }

        let mut fresh = vec![false; groups.len()];
        if config.bootstrap {
            let me = BasicNode::new(config.advertise_addr.clone());
            for (raft, fresh) in groups.iter().zip(fresh.iter_mut()) {
                let initialized = raft
                    .is_initialized()
                    .await
                    .map_err(|e| StartError::Raft(e.to_string()))?;
                if !initialized {
                    let members = BTreeMap::from([(config.node_id, me.clone())]);
                    raft.initialize(members)
                        .await
                        .map_err(|e| StartError::Raft(e.to_string()))?;
                    *fresh = true;
                }
            }
        }

        let node = Self {
            inner: Arc::new(Inner {
                groups: Arc::new(groups),
                journal,
                router,
                lease,
                server: Mutex::new(None),
                config,
            }),
        };
        if let Some(addr) = node.inner.config.listen_addr {
            node.serve(addr).await?;
        }
        if let Err(e) = node.wait_ready(&fresh).await {
            let _ = node.shutdown().await;
            return Err(e);
        }
        Ok(node)
    }

    async fn wait_ready(&self, fresh: &[bool]) -> Result<(), StartError> {
        let deadline = Instant::now() + self.inner.config.startup_timeout;
        let me = self.inner.config.node_id;
        for (raft, fresh) in self.inner.groups.iter().zip(fresh) {
            // Only groups this node can commit alone are waited for; in a
            // cluster, recovery needs the peers, and reads are guarded by
            // `ensure_linearizable` anyway.
            let sole_voter = *fresh || raft.voter_ids().eq([me]);
            if !sole_voter {
                continue;
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
        }
        Ok(())
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
        let raft = self.group(shard).ok_or(WriteError::NoSuchShard(shard))?;
        raft.client_write(CmdData(cmd))
            .await
            .map(|r| r.data)
            .map_err(|e| map_write_err::<A>(self.node_id(), e))
    }

    /// Propose several commands to one group in one message to the Raft core
    /// (one log append); results in submission order.
    pub async fn write_many(
        &self,
        shard: u32,
        cmds: Vec<A::Command>,
    ) -> Result<Vec<Result<A::Response, WriteError>>, WriteError> {
        let raft = self.group(shard).ok_or(WriteError::NoSuchShard(shard))?;
        let n = cmds.len();
        let mut stream = raft
            .client_write_many(cmds.into_iter().map(CmdData))
            .await
            .map_err(|f| WriteError::Unavailable(f.to_string()))?;
        let mut out = Vec::with_capacity(n);
        while let Some(item) = stream.next().await {
            let r = match item {
                Err(f) => Err(WriteError::Unavailable(f.to_string())),
                Ok(Ok(w)) => Ok(w.response),
                Ok(Err(e)) => Err(map_write_err::<A>(self.node_id(), RaftError::APIError(e))),
            };
            out.push(r);
        }
        Ok(out)
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
        if m.last_applied < m.local_committed {
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

    /// Stop serving, stop every group, then flush and fsync the journal.
    pub async fn shutdown(&self) -> Result<(), std::io::Error> {
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
        self.inner.journal.sync().await.ok();
        self.inner.journal.close()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct NodeInfo {
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
            let info: NodeInfo = decode(&b).map_err(StartError::Storage)?;
            if info.node_id != config.node_id || info.shards != config.shards {
                return Err(StartError::Config(format!(
                    "data dir belongs to node {} with {} shards, config says node {} with {} shards",
                    info.node_id, info.shards, config.node_id, config.shards
                )));
            }
            Ok(())
        }
        None => {
            let info = NodeInfo {
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
