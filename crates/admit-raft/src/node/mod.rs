//! [`RaftNode`]: many openraft groups on one node, one journal.
//!
//! The handle and its data path (writes, lease reads, App access, admin
//! calls on one group) live here; the other jobs have their own files:
//!
//! * `boot`: open the journal, start the groups, bootstrap, serve;
//! * `reconcile`: the reconcile loop, carrying out what
//!   [`crate::membership::decide`] returns;
//! * `registry`: `add_node` / `remove_node` through the metadata group;
//! * `infos`: views of the groups and of the registry;
//! * `handoff`: leadership transfers, and the hand-off before shutdown;
//! * `identity`: cluster id, data dir incarnation, admission of a new dir;
//! * `fence`: no lease-based answer while this node hands a group over;
//! * `quiesce`: idle groups stop ticking and heartbeating.

mod boot;
mod fence;
mod handoff;
mod identity;
mod infos;
mod quiesce;
mod reconcile;
mod registry;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, so that a simulation with paused time drives these too
use tokio::time::Instant;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{LinearizableReadError, RaftError};
use openraft::impls::BasicNode;
use openraft::raft::ReadPolicy;
use openraft::Instant as _;
use openraft::ServerState;

use crate::cluster::{Registry, ShardInfo};
use crate::config::NodeConfig;
use crate::journal::Journal;
use crate::network::{GrpcRouter, LocalNode, RaftGrpcService};
use crate::pb::raft_transport_server::RaftTransportServer;
use crate::propose::Proposer;
use crate::sm::{Applied, GroupRaft, StateMachine};
use crate::{AdminError, App, ReadError, WriteError};

/// Rendezvous key of the cluster-metadata group's placement.
const META_KEY: u64 = u64::MAX;

struct ServerHandle {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

pub(crate) struct Inner<A: App> {
    config: NodeConfig,
    groups: Arc<Vec<GroupRaft<A>>>,
    /// One batching proposer per group (same order as `groups`).
    proposers: Vec<Proposer<A>>,
    /// The term of the last applied entry per group, as the state machine
    /// publishes it (the lease check's).
    applied: Vec<Arc<Applied>>,
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
    /// Per shard group: a leadership transfer started here (see `fence`).
    fences: fence::Fences,
    /// Which Raft messages this node accepts yet (see `identity`).
    gate: identity::Gate,
    /// Incarnation of this node's data dir.
    incarnation: u64,
    /// Quiescent groups (see `quiesce`).
    quiet: quiesce::Quiet,
    quiescer: Mutex<Option<ServerHandle>>,
    /// Set when the node starts to stop: background work that holds the
    /// node (a registration retrying `meta_write`) ends at once, or a
    /// stopped node's journal would stay open until its deadline.
    halt: tokio::sync::watch::Sender<bool>,
    /// The gates of inbound appends during snapshot installs, and the test
    /// switch that holds installs between their checks and openraft.
    installs: crate::checks::Installs,
    /// What serves the service's requests that peers send on the node-pair
    /// streams (set once the service runs).
    app_frames: std::sync::OnceLock<Arc<dyn crate::network::AppFrames>>,
}

pub use identity::Registration;
pub use quiesce::{IdleCounters, ServiceClock};

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
    /// The gRPC service receiving Raft RPCs for all groups of this node.
    pub fn grpc_service(&self) -> RaftTransportServer<RaftGrpcService<A>> {
        RaftTransportServer::new(RaftGrpcService {
            groups: self.inner.groups.clone(),
            meta: self.inner.meta.clone(),
            node: Arc::downgrade(&self.inner) as std::sync::Weak<dyn LocalNode>,
            isolated: self.inner.router.isolated(),
            no_pipelined: self.inner.router.no_pipelined(),
            no_stream: self.inner.router.no_stream(),
            no_app: self.inner.router.no_app(),
            closed: self.inner.router.closed(),
            incarnation: self.inner.incarnation,
        })
        .max_decoding_message_size(self.inner.config.max_message())
        .max_encoding_message_size(self.inner.config.max_message())
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

    /// The leader lease (the election timeout's maximum): how long a
    /// follower that heard from its leader refuses to elect another, and so
    /// about how long a frozen leader takes to be replaced.
    pub fn lease(&self) -> Duration {
        self.inner.lease
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
        // a journal that failed a write takes none (journal.rs): say why
        let stopped = |why: String| {
            WriteError::Unavailable(format!(
                "this node's storage failed ({why}); it takes no writes until it restarts"
            ))
        };
        if let Some(why) = self.inner.journal.failure.get() {
            return Err(stopped(why));
        }
        self.inner.stir(shard as usize);
        // a leader idle for most of its lease (a quiesced group's) renews
        // it first, or openraft would refuse the entry (quiesce.rs, "The
        // first proposal after an idle spell"); looked at only after a
        // quiesced spell led here, not on every write
        if let Some(spell) = self.inner.quiet.lease_unchecked(shard as usize) {
            if self.lease_lapsing(shard) {
                self.renew_lease(shard).await;
            }
            self.inner.quiet.lease_checked(shard as usize, spell);
        }
        let r = p.propose(cmds, self.inner.config.write_timeout).await;
        match (r, self.inner.journal.failure.get()) {
            (Err(WriteError::Unavailable(_)), Some(why)) => Err(stopped(why)),
            (r, _) => r,
        }
    }

    /// Wait until a read of this node's App for `shard` is linearizable: this
    /// node is leader with a valid lease (a quorum acknowledged it within the
    /// lease, which is shorter than any follower's election timeout) and the
    /// App has applied every entry committed before the call.
    ///
    /// Uses openraft's lease read: no network round trip while the lease is
    /// fresh (heartbeats keep it so); otherwise (a quiesced group, say)
    /// waits for a heartbeat quorum (read index).
    pub async fn ensure_linearizable(&self, shard: u32) -> Result<(), ReadError> {
        let raft = self.group(shard).ok_or(ReadError::NoSuchShard(shard))?;
        self.inner.stir(shard as usize);
        let r = match raft.ensure_linearizable(ReadPolicy::LeaseRead).await {
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {
                raft.ensure_linearizable(ReadPolicy::ReadIndex).await
            }
            r => r,
        };
        match r {
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
    /// ago (single-voter groups need no acknowledgement), and an entry of its
    /// current term is applied (so is every write answered before the call).
    /// `false` means "use [`Self::ensure_linearizable`] or forward"; it never
    /// wrongly says `true` unless metrics lag the core by more than the lease
    /// margin.
    pub fn is_leader_with_lease(&self, shard: u32) -> bool {
        let Some(raft) = self.group(shard) else {
            return false;
        };
        let rx = raft.metrics();
        let m = rx.borrow_watched();
        if m.state != ServerState::Leader || m.current_leader != Some(self.node_id()) {
            return false;
        }
        // A lease check is activity: a quiesced group wakes to renew its
        // lease (the answer below is from the acknowledgements so far).
        self.inner.stir(shard as usize);
        // Every write answered before this read must be applied. Those this
        // leader answered were applied here before their answers went out;
        // those answered in earlier terms (by any leader) come before this
        // term's first entry in the log. So an applied entry of the current
        // term is enough, and also shows that the leader's first entry of its
        // term is committed. The state machine's own record is used, not the
        // metrics' `last_applied`, which follows an apply by a moment. An
        // entry committed but not yet applied has been answered to no one:
        // a read may be ordered before it, so it need not wait (waiting, or
        // sending the read through the log, turned a steady share of reads
        // into log writes whenever writes were flowing).
        let applied_term = self
            .inner
            .applied
            .get(shard as usize)
            .map_or(0, |a| a.term());
        if applied_term != m.current_term {
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
        let acked_ago = m
            .last_quorum_acked
            .as_ref()
            .map(|t| t.into_inner().elapsed());
        acked_ago.is_some_and(|ago| ago < margin)
            && self.inner.fences.lets_through(
                shard as usize,
                m.current_term,
                acked_ago,
                self.inner.lease,
            )
    }

    /// Raise the transfer fence of group `gid` (a shard; the metadata group
    /// has none) before asking openraft to transfer its leadership.
    pub(super) fn fence_transfer(&self, gid: u32) {
        self.inner.stir(gid as usize);
        if let Some(raft) = self.group(gid) {
            let term = raft.metrics().borrow_watched().current_term;
            self.inner.fences.raise(gid as usize, term);
        }
    }

    /// Id of the leader of `shard` as known here.
    pub fn leader(&self, shard: u32) -> Option<u64> {
        self.group(shard)
            .and_then(|r| r.metrics().borrow_watched().current_leader)
    }

    /// Index of the last entry of `shard`'s log here (`None`: empty, or no
    /// such shard). Equal readings mean nothing was appended in between.
    pub fn last_log_index(&self, shard: u32) -> Option<u64> {
        self.group(shard)
            .and_then(|r| r.metrics().borrow_watched().last_log_index)
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

    /// What this node sent on its node-pair Raft streams: `(batches,
    /// frames)`; frames per batch is how much the streams gather.
    pub fn stream_counters(&self) -> (u64, u64) {
        self.inner.router.stream_counts()
    }

    /// Replication on the node-pair streams: `(appends sent pipelined, the
    /// most one session to a follower had unanswered at once)`.
    pub fn pipelined_counters(&self) -> (u64, u64) {
        self.inner.router.pipelined_counts()
    }

    /// Appends without entries (a new commit index only) that were not
    /// sent because the group's next append carried the index.
    pub fn commit_notes_folded(&self) -> u64 {
        self.inner.router.notes_folded()
    }

    /// The peers this node replicates to one append at a time because they
    /// refused a pipelined one (an older build), in id order.
    pub fn peers_without_pipelining(&self) -> Vec<u64> {
        self.inner.router.one_at_a_time()
    }

    /// The peers this node speaks to with one unary call a message because
    /// they serve no node-pair stream (an older build), in id order. Each
    /// is tried on a stream again after [`RaftNode::set_stream_retry`]'s
    /// interval (a minute by default).
    pub fn peers_on_unary_calls(&self) -> Vec<u64> {
        self.inner.router.on_unary_calls()
    }

    /// The peers whose open stream refused a request of the service above
    /// (an older build), in id order: [`Self::app_call`] sends them none
    /// until a new stream to them opens (the peer restarted, perhaps
    /// upgraded).
    pub fn peers_refusing_app_frames(&self) -> Vec<u64> {
        self.inner.router.refusing_app()
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
    /// not do; see [`Self::crash_unsynced`] for one that loses what was not
    /// fsynced.
    #[doc(hidden)]
    pub async fn crash(&self) {
        self.set_isolated(true);
        let _ = self.stop(false).await;
    }

    /// Test helper: a power cut. RPCs are cut, then every journal write not
    /// yet covered by an fsync is lost (the node must have been started with
    /// [`NodeConfig::simulate_power_loss`]), then the groups stop without a
    /// handoff. Restart from the same data dir to recover.
    #[doc(hidden)]
    pub async fn crash_unsynced(&self) -> std::io::Result<()> {
        self.set_isolated(true);
        let cut = self.inner.journal.power_cut().await;
        let _ = self.stop(false).await;
        cut
    }

    async fn stop(&self, handoff: bool) -> Result<(), std::io::Error> {
        self.inner.halt.send_replace(true);
        self.stop_quiescer().await;
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
        // end the node-pair streams both ways, or the peer ports' graceful
        // shutdowns (here and on the peers) would wait for them
        self.inner.router.close();
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
    /// Test switch: every journal write from now on fails as on a full disk
    /// (ENOSPC); like a real write error it stops this node's writes until
    /// a restart ([`WriteError::Unavailable`] naming the error).
    #[doc(hidden)]
    pub fn fail_journal_writes(&self) {
        self.inner.journal.fail_writes();
    }

    /// Why this node takes no writes, if its journal failed a write (a full
    /// disk, an I/O error); cleared by a restart.
    pub fn storage_failure(&self) -> Option<String> {
        self.inner.journal.failure.get()
    }

    /// Serves, from now on, the requests of the service above that peers
    /// send on the node-pair streams ([`Self::app_call`]); the first one set
    /// stays. Until then such a request is refused UNAVAILABLE.
    pub fn serve_app_frames(&self, serve: Arc<dyn crate::network::AppFrames>) {
        let _ = self.inner.app_frames.set(serve);
    }

    /// Sends a request of the service above to node `target` on the stream
    /// that carries this node's Raft messages to it (batched with them, no
    /// HTTP/2 request of its own), and waits at most `ttl` for the answer
    /// its [`crate::network::AppFrames`] gives. Only on a stream open now:
    /// otherwise nothing is sent ([`crate::network::AppCallError::NotSent`]).
    pub async fn app_call(
        &self,
        target: u64,
        payload: Vec<u8>,
        ttl: Duration,
    ) -> Result<Vec<u8>, crate::network::AppCallError> {
        self.inner.router.app_call(target, payload, ttl).await
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

    /// Test switch: refuse pipelined appends from now on, as a build
    /// without them does (an older peer during a rolling upgrade). Not
    /// for production use.
    #[doc(hidden)]
    pub fn set_refuse_pipelined(&self, refuse: bool) {
        self.inner
            .router
            .no_pipelined()
            .store(refuse, Ordering::Relaxed);
    }

    /// Test switch: serve no node-pair stream from now on (open ones end
    /// at their next batch), as a build without one does. Not for
    /// production use.
    #[doc(hidden)]
    pub fn set_refuse_streams(&self, refuse: bool) {
        self.inner
            .router
            .no_stream()
            .store(refuse, Ordering::Relaxed);
    }

    /// Test switch: refuse the requests of the service above on node-pair
    /// streams from now on ([`Self::app_call`]), as a build without them
    /// does. Not for production use.
    #[doc(hidden)]
    pub fn set_refuse_app_frames(&self, refuse: bool) {
        self.inner.router.no_app().store(refuse, Ordering::Relaxed);
    }

    /// Test switch: while `hold` is set, a snapshot sent to this node waits
    /// after its checks and before openraft installs it (a test puts a
    /// commit in that gap). Not for production use.
    #[doc(hidden)]
    pub fn hold_snapshot_installs(&self, hold: bool) {
        self.inner.installs.hold.set(hold);
    }

    /// Snapshot installs waiting on [`Self::hold_snapshot_installs`].
    #[doc(hidden)]
    pub fn snapshot_installs_held(&self) -> usize {
        self.inner.installs.hold.waiting()
    }

    /// Inbound appends waiting now behind a snapshot install of their group.
    #[doc(hidden)]
    pub fn appends_held_by_installs(&self) -> usize {
        self.inner.installs.appends_waiting()
    }

    /// How long a peer found without a node-pair stream is spoken to with
    /// unary calls before the stream is tried again (a minute by default;
    /// tests shorten it).
    #[doc(hidden)]
    pub fn set_stream_retry(&self, after: std::time::Duration) {
        self.inner.router.set_stream_retry(after);
    }
}

impl<A: App> LocalNode for Inner<A> {
    fn id(&self) -> u64 {
        self.config.node_id
    }

    fn infos(&self) -> Vec<ShardInfo> {
        let mut v = self.shard_infos();
        v.push(self.meta_info());
        v
    }

    fn admit_message(&self, group: u32, cluster: u64) -> Result<(), tonic::Status> {
        self.admit(group, cluster)
    }

    fn identity(&self, asker: u64) -> crate::cluster::Identity {
        self.identity_for(asker)
    }

    fn liveness(&self, payload: &[u8]) -> Result<Option<u64>, String> {
        self.on_liveness(payload)
    }

    fn installs(&self) -> &crate::checks::Installs {
        &self.installs
    }

    fn stirred(&self, group: u32) {
        self.stir(group as usize);
    }

    fn app_frames(&self) -> Option<Arc<dyn crate::network::AppFrames>> {
        self.app_frames.get().cloned()
    }
}
