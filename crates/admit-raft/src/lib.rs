//! # admit-raft: many Raft groups on one node, one journal
//!
//! **Layering.** This crate may import openraft, fjall, tonic/prost (the
//! transport) and `admit-proto` (only `admit_proto::internal::raft`, the
//! node-to-node transport). It must not import `admit-core` or
//! `admit-server`, and knows nothing of admission rules: it is generic over
//! an [`App`], the deterministic state machine the server supplies. No
//! openraft type appears in its public API. Inside, the modules form a
//! strict order (see the list above `mod cluster`); the only pure ones,
//! `placement` and `membership`, do no I/O and read no clock.
//!
//! admit shards its state into `S` Raft groups (one per shard, 16 by
//! default) that all live on the same nodes. This crate runs those groups on
//! openraft `0.10.0-alpha.37` with durable storage on fjall 3, and hides
//! openraft behind a small, domain-agnostic API:
//!
//! * the server implements [`App`] (a deterministic state machine over its own
//!   `Command`/`Response` types) and starts a [`RaftNode`] with
//!   [`RaftNode::start`]`(`[`NodeConfig`]`, |shard| app)`;
//! * [`RaftNode::write`] proposes a command to a shard's group and returns the
//!   App's response once the entry is committed and applied;
//! * [`RaftNode::ensure_linearizable`] / [`RaftNode::is_leader_with_lease`]
//!   tell the server when it may answer from memory;
//! * [`NodeConfig::peers`] / [`NodeConfig::replicas`] bootstrap a cluster
//!   from static config; [`RaftNode::add_node`] / [`RaftNode::remove_node`]
//!   change it, and a reconcile loop moves replicas to follow
//!   [`placement`] (see [Cluster](#cluster));
//! * [`RaftNode::grpc_service`], [`RaftNode::add_learner`] and
//!   [`RaftNode::change_membership`] are the lower-level tools.
//!
//! No openraft type appears in that API; the server does not depend on
//! openraft.
//!
//! ## The App contract
//!
//! [`App::apply`] is called once per committed normal entry, in log order, on
//! every replica, with the entry's log index. It must be deterministic: the
//! same commands in the same order give the same state and responses (commands
//! carry their own timestamps; never read the wall clock in `apply`).
//! [`App::snapshot`] returns the whole state as bytes; [`App::restore`] replaces
//! the state with such bytes. [`App::snapshot_job`] splits a snapshot into a
//! copy taken on the state-machine task and the encoding, run later on a
//! blocking thread (the default encodes at once). After a restart the App is restored from the
//! group's latest snapshot and the log after it is replayed through `apply`,
//! so the state equals the pre-crash state.
//!
//! ## Reading the App concurrently
//!
//! The App is owned by its group's openraft state-machine task, which is the
//! only caller of `apply`/`restore`. For lock-free hot-path reads, let the App
//! keep its state behind `Arc`s (e.g. `Arc<DashMap<..>>`, atomics) and hand
//! clones to the server: the factory closure passed to [`RaftNode::start`] can
//! stash a reader handle per shard before returning the App. `restore` must
//! then replace the contents in place (not swap the `Arc`s), so handles stay
//! valid. [`RaftNode::with_app`] runs a closure on the state-machine task for
//! occasional reads (tests, admin).
//!
//! A read from such a handle is linearizable after
//! [`RaftNode::ensure_linearizable`] returned `Ok` (openraft lease read: this
//! node is leader, a quorum acknowledged it within the leader lease, which is
//! shorter than the followers' election timeout, and the App has applied all
//! entries committed before the call). [`RaftNode::is_leader_with_lease`] is
//! a synchronous, conservative variant from the group's metrics (half the
//! lease as margin) for the fast path. Lease reads were chosen over
//! read-index because the fast path must not cost a network round trip per
//! request; the price is the usual bounded-clock-drift assumption.
//!
//! ## Storage: one fjall journal for all groups
//!
//! All groups share one fjall `Database` (`<data_dir>/journal`) with three
//! keyspaces:
//!
//! | keyspace         | key                                   | value                              |
//! |------------------|---------------------------------------|------------------------------------|
//! | `raft_logs`      | shard `u32` BE ++ index `u64` BE      | postcard openraft entry (commands versioned, see `codec.rs`) |
//! | `raft_meta`      | shard `u32` BE ++ tag (vote/committed/purged) | postcard                   |
//! | `raft_snapshots` | shard `u32` BE ++ `f`                 | postcard snapshot meta + file name, length, checksum |
//!
//! The App bytes of each group's latest snapshot are a file of their own,
//! `<data_dir>/snapshots/<shard>-<index>-<checksum>.snap`, written (and
//! fsynced, with its directory) on a blocking thread before the journal
//! record that names it: a snapshot of any size never occupies the journal's
//! writer thread, which every group's appends go through (see `snapfile.rs`
//! for the order that keeps a crash safe). A data dir written before this
//! layout holds the bytes inline under the key shard `u32` BE; it is still
//! read, and replaced by the group's next snapshot.
//!
//! Big-endian keys keep each group's log contiguous and ordered, so range
//! reads, truncation and purge are range scans.
//!
//! **Why fjall rather than redb.** fjall is an LSM tree whose keyspaces all
//! write into *one* write-ahead journal, and a write batch spanning keyspaces
//! is atomic in that journal. So the appends of all the groups (plus votes,
//! purge markers, snapshots) become sequential appends to one file, and *one*
//! `fsync` of that file makes all of them durable. redb is a copy-on-write
//! B-tree: every durable commit rewrites tree pages and the root and costs its
//! own fsync(s), and it has a single writer; group commit would have to be
//! built by merging all groups' writes into one redb transaction anyway, at
//! higher write amplification per commit. Raft logs are append-mostly and
//! short-lived (purged after snapshots), the workload LSM + WAL is built for.
//!
//! **Group commit.** fjall is opened with manual journal persistence. A single
//! writer thread owns all mutations: it takes every op queued so far (appends
//! from any group, votes, truncations, purges, snapshots), writes each as its
//! own atomic batch into the journal buffer and memtable, then calls
//! `persist(SyncData)` once and only then completes all their callbacks
//! (openraft's `IOFlushed` for appends). Ops that arrive during an fsync are
//! grouped into the next one, so the number of fsyncs per second stays bounded
//! by the disk while throughput grows with concurrency. openraft additionally
//! batches concurrent `client_write`s of one group into one append.
//!
//! **Crash safety.** An append is acknowledged to openraft (and so counted for
//! commit, and so answered to the client) only after the fsync that covers it.
//! The journal is replayed as a prefix of batches, and each group's ops are
//! queued in issue order, so after `kill -9` every group sees a prefix of its
//! own history: an acknowledged write is always there; a truncation is never
//! lost while the appends after it survive; a purge never survives without the
//! snapshot that allowed it (the snapshot is written, and fsynced, first).
//! The committed index is persisted lazily (it is only a hint that lets a
//! restarted node re-apply its log before a new election). Because it lags,
//! openraft's *leader restore* is turned off: a leader that restarts does
//! not resume its old term from the hint (it would pass every lease check
//! while writes it acknowledged before the crash were not yet committed
//! again, and answer reads without them); it must win an election and
//! commit a blank entry of a new term first, which commits everything
//! before it.
//!
//! Entries are readable as soon as `append` returns (a small per-group pending
//! map bridges the time until they reach the memtable), because a leader
//! replicates entries before its own fsync completes.
//!
//! **Compaction.** openraft's snapshot policy builds a snapshot every
//! [`NodeConfig::snapshot_every`] entries. The state-machine task only asks
//! the App for its [`App::snapshot_job`] (a copy of the state, so it matches
//! the applied index exactly) and goes on applying; openraft runs the
//! builder on a task of its own, which runs the job (the encoding) on tokio's
//! blocking pool (inline with [`NodeConfig::inline_journal`]: a simulation
//! runs nothing on other threads), stores the bytes (a file, then the
//! journal record; above), and only then, once the record is durable, the
//! log below the snapshot (minus [`NodeConfig::keep_logs_after_snapshot`])
//! is purged.
//!
//! ## Network
//!
//! Raft RPCs go over gRPC (`proto/admit/internal/raft.proto`, service
//! `admit.internal.raft.RaftTransport`): one lazily connected HTTP/2 channel per
//! destination node is shared by every group (openraft-multi's
//! `GroupNetworkAdapter` binds (target, group) onto it). Payloads are
//! postcard-encoded openraft messages; the proto only routes them. Each is
//! checked before openraft sees it (`checks.rs`): what openraft assumes of a
//! peer that follows the protocol (and asserts), a message must hold, or it
//! is refused with INVALID_ARGUMENT.
//! Replication is pipelined: a group's leader queues its next appends to a
//! follower on the node-pair stream before the last is answered (up to 16),
//! and the follower hands each group's appends to openraft's
//! `Raft::stream_append` in the order they came, which answers them in
//! order. openraft's default sends one append and waits for its answer,
//! the follower's fsync included, so a busy group's entries queued behind
//! round trips (`network::GroupNet`; docs/benchmarks.md, "Pipelined
//! replication"). An append that only carries a new commit index is held
//! back 2 ms for the group's next append, which carries it too, and dropped
//! if one comes (`fold_commit_notes`): in a busy group these notes were
//! nearly half of all appends.
//!
//! ## Cluster
//!
//! ### Placement
//!
//! [`placement::placement_table`] maps every shard to `min(replicas, N)`
//! active nodes, preferred leader first. It is a pure function of (shard
//! count, active node ids, replicas): rendezvous hashing with a stable hash
//! (SplitMix64), made exactly balanced by per-node quotas (a stable matching
//! of shards to node slots, see the module docs). Replica and preferred-leader
//! counts are within ±2 of even, and adding or removing a node moves close
//! to the minimum number of replicas (unit tests measure both).
//!
//! ### Bootstrap from static config
//!
//! [`NodeConfig::peers`] lists the initial cluster (id → Raft address,
//! including this node) and [`NodeConfig::replicas`] the replication factor
//! (default 3). With `bootstrap`, each never-initialized group is initialized
//! by every node of its placement over the peers, all with the *identical*
//! voter set. openraft documents this as safe (identical initial configs at
//! log index 0; the vote decides the leader), and unlike "only the lowest id
//! initializes" it doesn't need one particular node to be up for the group to
//! form. Empty `peers` (the default) is the single-node mode, as before.
//! A node joining later starts with `bootstrap = false` and is registered with
//! [`RaftNode::add_node`].
//!
//! ### Cluster identity and lost data dirs
//!
//! A data dir draws a random *incarnation* when it is created. Every node
//! with peers registers `(node id, incarnation)` in the registry (below); the
//! first registration fixes the **cluster id**, which every Raft message
//! carries (`RaftRequest.cluster`) and every receiver checks: a message of
//! another cluster is refused (FAILED_PRECONDITION) before it reaches a
//! group.
//!
//! A node whose data dir was wiped comes back with a new incarnation.
//! [`RaftNode::start`] asks the peers (`IDENTITY`) and fails with the remedy
//! when one of them knows the node by another incarnation, so it never
//! votes with an empty log (which could elect a replica that lacks an entry
//! committed with this node's help). A peer knows the node's incarnation
//! from the registry, or, before the node's registration commits, from the
//! node's answers: every answer on the peer port carries the answerer's
//! incarnation (`RaftReply.incarnation`), each node keeps the first one of
//! every peer for its life and refuses that peer's answers from any other.
//! If no peer could answer at start, the
//! registry refuses its registration later, and from then on the node
//! refuses every Raft message ([`RaftNode::registration`]). The remedy:
//! remove the node (`remove-node`), then start the new dir under a **new**
//! node id with `--join`; it is added as a learner and catches up before it
//! votes. Not done: holding a new dir out of every group *until* its
//! registration commits (closing the window when no peer answered at
//! start); a first version did, and slowed the forming of a new cluster so
//! much that cluster tests failed. A node without peers (single node, or a
//! joiner given no contacts) registers nothing.
//!
//! ### Node registry: one extra Raft group
//!
//! The set of nodes (id → address, `Active`/`Leaving`/`Removed`) lives in a
//! dedicated cluster-metadata Raft group with group id `shards` (one past the
//! last shard), on the same journal and transport. Voters: the rendezvous
//! placement of that group over the active nodes (`replicas` of them); every
//! other active node is a learner, so every node has a local, eventually
//! consistent copy ([`RaftNode::nodes`]). A separate group (rather than a
//! special command in every shard's log) keeps the App's log and snapshot
//! format untouched, gives the registry one total order (no 64-way
//! agreement), and lets it use the same machinery (log, snapshots,
//! membership changes) as the shards. The registry refuses to register an
//! id that was removed, so ids are never reused, and a removed node started
//! again on its kept data dir is refused at start when a peer's registry
//! says it was removed ("node removed"; with no peer answering, nothing
//! tells it yet). The metadata leader seeds
//! the registry from the static peers (one `Seed` entry; later ones are
//! ignored).
//!
//! `add_node`/`remove_node` can be called on any node. They are forwarded
//! (transport RPC kind `META_WRITE`) to the metadata leader, following leader
//! hints.
//!
//! ### Reconcile loop
//!
//! Every [`NodeConfig::reconcile_interval`], each node reconciles the groups
//! it leads with the placement over its registry copy, one step at a time,
//! only through openraft membership changes:
//!
//! 1. a missing replica is added as a **learner**. openraft streams it the
//!    log, or sends a snapshot if the log was purged;
//! 2. once every new learner is within a few entries of the leader, they are
//!    promoted with `change_membership` (joint consensus) *while all old
//!    voters stay*. So a replacement is a voter before anything is removed;
//! 3. voters outside the target (replicas on `Leaving` nodes, or displaced by
//!    a new node) are removed with another joint-consensus change. If the
//!    leader itself must go, it first transfers leadership to a target voter.
//!
//! With the membership at its target, the leader transfers leadership to the
//! shard's preferred leader when that one is caught up and acknowledged
//! recently (cooldown: 4 leases per group). Members unknown to the registry
//! are left alone, so manual [`RaftNode::add_learner`] /
//! [`RaftNode::change_membership`] keep working. The metadata leader marks a
//! `Leaving` node `Removed` once the leader of every group (asked with the
//! `STATUS` RPC) reports it as neither voter nor learner.
//! [`RaftNode::shard_infos`] (local view), [`RaftNode::cluster_shard_infos`]
//! (each group's leader's view: members, matched index and lag per replica,
//! target) and [`RaftNode::nodes`] expose the progress.
//!
//! ### Shutdown, failures, lease reads
//!
//! [`RaftNode::shutdown`] first transfers the leadership of every group this
//! node leads to the most up-to-date voter that acknowledged within the
//! lease, and waits for the handover (at most
//! [`NodeConfig::handoff_timeout`]). Then it stops.
//!
//! **Why lease reads are safe.** openraft's leader lease is
//! `election_timeout_max`. The leader measures it from the *send* time `t` of
//! the last heartbeat a quorum acknowledged. A follower that receives that
//! heartbeat (at `≥ t`) refuses to vote for anyone else until
//! `election_timeout_max` after receiving it, so no other leader can exist,
//! and no entry can commit elsewhere, before `t + election_timeout_max` by
//! the follower's clock. [`RaftNode::is_leader_with_lease`] is stricter. It
//! only says `true` until `t + election_timeout_max / 2` on the leader's
//! clock, and only after the leader's first entry of its term is committed
//! and applied (so every write answered before, by this leader or in an
//! earlier term, is applied; an entry committed but not yet applied was
//! answered to no one, and a read may be ordered before it). The half-lease
//! margin absorbs clock *rate* drift between nodes (monotonic clocks; up to
//! a 2× rate difference would still be safe), scheduling delay and metrics
//! lag. The assumption is bounded drift, not synchronized clocks. Pre-vote is enabled,
//! so a node that was cut off cannot inflate its term and depose a healthy
//! leader when it returns.
//!
//! **Timing the argument needs** (checked at start, `StartError::Config`
//! naming the field): with lease `L = election_timeout_max`,
//! `election_timeout_min >= L / 2` (no follower's election timer can expire
//! while the fast path still answers from a quorum ack, so even an election
//! that skipped the lease could not overlap it) and `heartbeat <=
//! election_timeout_min / 2` (a healthy leader renews the fast path's
//! margin several times per lease). The lease only holds if the followers
//! enforce the same `L` the leader assumes, so every node must use the same
//! timeouts: a node asks its peers at start (`IDENTITY`) and refuses to
//! start if a reachable one uses others.
//!
//! **Leadership transfers.** openraft's transfer lets the followers vote for
//! the target at once, inside the lease they granted the current leader,
//! while that leader keeps its last quorum-ack time. So before this node
//! asks for any transfer (leader balance, leaving, shutdown hand-off,
//! [`RaftNode::transfer_leader`]) it raises the group's *fence*:
//! `is_leader_with_lease` says `false` until the term changes (a new leader
//! was elected; this node then leads again only through an election of its
//! own) or, if the transfer came to nothing, a quorum acknowledged a
//! heartbeat sent more than one lease after the transfer began. (openraft's
//! old leader sends no heartbeat once it transfers, so in practice the
//! fence ends with the next term.)
//!
//! A node cut off from the others loses `is_leader_with_lease` within half a
//! lease of its last acknowledged heartbeat (test: ≈ 200 ms for a 400 ms
//! lease). It cannot commit anything alone: its writes are never acknowledged
//! ([`NodeConfig::write_timeout`] bounds the wait), and its uncommitted entries
//! are truncated when it rejoins.
//!
//! ### Quiescent groups
//!
//! A group with nothing to replicate for [`NodeConfig::quiesce_after`]
//! (300 ms by default) stops its openraft ticker on the leader (no heartbeats, no timers) and,
//! once the leader's node lists it in its per-tick liveness message, on the
//! followers (no election timer). It wakes on a proposal, any message for
//! it, a lease check, a membership step or shutdown; a follower also wakes
//! when the leader's node stops listing it for an election timeout, and
//! then elects as usual. The lease is *not* kept alive by liveness: a
//! quiesced leader's `is_leader_with_lease` goes false half a lease after
//! its last quorum acknowledgement, like a cut-off leader's, and a lease
//! check wakes the group (see `docs/design.md`, "Quiescent groups and the
//! fast path", and the module docs of `node/quiesce.rs`).
//!
//! ### Limits
//!
//! Forwarding client writes to the leader is left to the server
//! ([`WriteError::ForwardToLeader`] carries the leader's address). Every
//! message between two nodes, of every group, travels on their one
//! node-pair stream (`pipe`): snapshots in pieces of at most 1 MiB, and the
//! heartbeats of active groups gathered for up to half a heartbeat into
//! one batch per pair; idle groups quiesce (below). A snapshot is still
//! built whole in memory on both ends. A crashed node stays `Active` (its
//! groups run on the remaining majority) until an operator calls
//! `remove_node`. There is no automatic
//! failure detector that re-replicates. All groups may move at once when a
//! node joins: no rate limit on concurrent snapshot transfers.

// Modules, lowest first; each imports only from those above it (the
// node's facade at the bottom is the only one that sees them all):
//
//   rt           openraft's runtime: tokio with seedable random draws
//   types        openraft type config, command/response envelopes
//   watermark    the journal's high-water mark file
//   journal      the fjall journal and its group-commit writer thread
//   codec        pure: a log entry's commands, versioned by layout
//   snapfile     snapshot files: the bytes beside the journal, a record in it
//   store, sm    openraft log storage / state machine over the journal
//   integrity    the start-time check of every group's stored log
//   placement    pure: which nodes hold and lead each shard
//   membership   pure: the reconcile decision (facts in, commands out)
//   cluster      the node registry (an App) and the public status types
//   propose      batching proposer, one per group
//   pipe         the node-pair stream: batches, replies by id, snapshot
//                pieces (bytes only; no openraft type)
//   network      gRPC transport; reaches the node only through a trait
//   config       NodeConfig
//   node/        RaftNode: boot, data path, reconcile, registry, infos,
//                hand-off
mod archives;
mod checks;
mod cluster;
mod codec;
mod config;
mod integrity;
mod journal;
mod membership;
mod network;
mod node;
mod pipe;
pub mod placement;
mod propose;
mod rt;
mod sm;
mod snapfile;
mod store;
mod types;
mod watermark;

/// Generated protobuf/gRPC types of `admit.internal.raft` (compiled in
/// `admit-proto`, like every proto of the workspace).
pub use admit_proto::internal::raft as pb;

pub use cluster::{acting_for, ClusterNode, NodeState, ReplicaInfo, ShardInfo};
pub use codec::{decode_log_entry, encode_log_entry};
pub use config::{
    NodeConfig, SnapshotHook, DEFAULT_PROPOSAL_QUEUE, DEFAULT_QUIESCE_AFTER, DEFAULT_WRITE_TIMEOUT,
};
pub use journal::is_new_data_dir;
pub use network::{AppCallError, AppFrames, Dialer, RaftGrpcService};
pub use node::{IdleCounters, JournalCounters, RaftNode, Registration, ServiceClock};
pub use pipe::{PeerCheck, PeerNode};
#[doc(hidden)]
pub use rt::seed_draws;
pub use types::{CmdData, RespData, TypeConfig};

/// The encoding half of a snapshot ([`App::snapshot_job`]): runs off the
/// state-machine task and returns the snapshot's bytes.
pub type SnapshotJob = Box<dyn FnOnce() -> Vec<u8> + Send>;

/// A deterministic replicated state machine: the server's domain engine.
///
/// One instance per shard; see the crate docs for the contract.
pub trait App: Send + Sync + 'static {
    /// A state-changing command. It carries everything `apply` needs
    /// (including its timestamp); it is stored in the Raft log with postcard.
    type Command: serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + Send
        + Sync
        + std::fmt::Debug
        + 'static;
    /// The result of applying a command, returned by [`RaftNode::write`].
    type Response: serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + Send
        + Sync
        + std::fmt::Debug
        + 'static;

    /// The layout of [`App::Command`]'s encoding this build writes; it is
    /// stored with every log entry. Bump it whenever that encoding changes
    /// (postcard has no field names: a new field is a new layout), and teach
    /// [`App::decode_command`] the old one, so logs written before still
    /// replay.
    const COMMAND_LAYOUT: u32 = 0;
    /// The layouts an entry written before the log stored one may be in,
    /// newest first. A stored entry is read with each in turn until one reads
    /// all of it.
    const UNVERSIONED_LAYOUTS: &'static [u32] = &[0];

    /// Decode one command written in `layout` (at most
    /// [`App::COMMAND_LAYOUT`]); the default knows only today's.
    fn decode_command<'de, D: serde::Deserializer<'de>>(
        layout: u32,
        d: D,
    ) -> Result<Self::Command, D::Error> {
        let _ = layout;
        <Self::Command as serde::Deserialize>::deserialize(d)
    }

    /// The layout an entry holding `cmds` is written in: at most
    /// [`App::COMMAND_LAYOUT`], and an older one where that encodes these
    /// commands the same, so that a follower of an older build refuses only
    /// the entries that need the newer layout. The default: always today's.
    fn layout_of(cmds: &[Self::Command]) -> u32 {
        let _ = cmds;
        Self::COMMAND_LAYOUT
    }

    /// Apply a committed command. Called in log order, exactly once per
    /// entry per incarnation of the state (replay after restart starts from the
    /// last snapshot); `index` is the entry's Raft log index. One entry can
    /// carry several commands (batched proposals), so commands of one entry
    /// share its index: it is non-decreasing, not unique, per command.
    fn apply(&mut self, index: u64, cmd: Self::Command) -> Self::Response;

    /// [`App::apply`] for a command that stays shared (the log's cache and
    /// replication still hold its entry). Must answer and change the state
    /// exactly as `apply` of a copy would; the default applies a copy.
    fn apply_ref(&mut self, index: u64, cmd: &Self::Command) -> Self::Response {
        self.apply(index, cmd.clone())
    }

    /// Deterministic bytes of the whole state.
    fn snapshot(&self) -> Vec<u8>;

    /// A snapshot in two steps. This call runs on the group's state-machine
    /// task between two applies and takes what the bytes need (a copy of the
    /// state, say); the job it returns runs on a blocking thread while the
    /// group goes on applying, and returns [`App::snapshot`]'s bytes *of the
    /// state at the time of this call*. Override it when encoding costs more
    /// than copying; the default encodes here, at once.
    fn snapshot_job(&self) -> SnapshotJob {
        let bytes = self.snapshot();
        Box::new(move || bytes)
    }

    /// Replace the whole state by the state encoded in `bytes`.
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String>;

    /// Whether [`App::restore`] takes `bytes`, changing nothing. A snapshot
    /// received from a peer is checked with it before openraft installs it:
    /// a restore that fails there stops the group on this node (openraft
    /// takes any state-machine error as fatal), so bytes that would fail
    /// are refused at the transport instead.
    fn check_snapshot(bytes: &[u8]) -> Result<(), String>;
}

/// Why a write was not (known to be) applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// This node is not the leader of the shard; send the write there.
    #[error("not leader; forward to node {leader_id:?} at {leader_addr:?}")]
    ForwardToLeader {
        /// Leader id, if known.
        leader_id: Option<u64>,
        /// Leader's Raft address, if known.
        leader_addr: Option<String>,
    },
    /// The group has no leader right now (election in progress); retry.
    #[error("no leader for this shard right now")]
    NoLeader,
    /// Shard id out of range.
    #[error("no such shard {0}")]
    NoSuchShard(u32),
    /// The entry was appended here but discarded when this node adopted a new
    /// leader's log. Its outcome is unknown (it may still commit elsewhere):
    /// retry with the same idempotency key.
    #[error("entry discarded by a leader change (new leader {leader_id:?})")]
    Discarded {
        /// New leader, if known.
        leader_id: Option<u64>,
    },
    /// The group stopped or failed (e.g. storage error, shutting down). The
    /// outcome of the write is unknown.
    #[error("raft group unavailable: {0}")]
    Unavailable(String),
    /// The group's proposer queue is full ([`NodeConfig::proposal_queue`]):
    /// the write was not queued, so nothing was applied; retry later.
    #[error("overloaded: {queued} proposals already wait for this shard's log")]
    Overloaded {
        /// The bound that was reached.
        queued: usize,
    },
}

/// Why a linearizable read cannot be served here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// This node is not the leader of the shard.
    #[error("not leader; forward to node {leader_id:?} at {leader_addr:?}")]
    ForwardToLeader {
        /// Leader id, if known.
        leader_id: Option<u64>,
        /// Leader's Raft address, if known.
        leader_addr: Option<String>,
    },
    /// Shard id out of range.
    #[error("no such shard {0}")]
    NoSuchShard(u32),
    /// Leadership could not be confirmed or the group stopped.
    #[error("raft group unavailable: {0}")]
    Unavailable(String),
}

/// Failure of an administrative operation (membership, snapshot).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Shard id out of range.
    #[error("no such shard {0}")]
    NoSuchShard(u32),
    /// openraft refused or failed (not leader, change in progress, ...).
    #[error("raft: {0}")]
    Raft(String),
}

/// Failure to start a node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration, or a data dir created with another node id / shard count.
    #[error("config: {0}")]
    Config(String),
    /// Opening or reading the journal failed.
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
    /// openraft failed to start, recover or elect.
    #[error("raft: {0}")]
    Raft(String),
}
