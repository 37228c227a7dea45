//! # admit-raft: many Raft groups on one node, one journal
//!
//! admit shards its state into `S` Raft groups (one per shard, e.g. 64) that
//! all live on the same nodes. This crate runs those groups on
//! [openraft](https://docs.rs/openraft) `0.10.0-alpha.37` with durable storage
//! on [fjall](https://docs.rs/fjall) 3, and hides openraft behind a small,
//! domain-agnostic API:
//!
//! * the server implements [`App`] (a deterministic state machine over its own
//!   `Command`/`Response` types) and starts a [`RaftNode`] with
//!   [`RaftNode::start`]`(`[`NodeConfig`]`, |shard| app)`;
//! * [`RaftNode::write`] proposes a command to a shard's group and returns the
//!   App's response once the entry is committed and applied;
//! * [`RaftNode::ensure_linearizable`] / [`RaftNode::is_leader_with_lease`]
//!   tell the server when it may answer from memory;
//! * [`RaftNode::grpc_service`], [`RaftNode::add_learner`] and
//!   [`RaftNode::change_membership`] spread groups over several nodes.
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
//! the state with such bytes. After a restart the App is restored from the
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
//! | `raft_logs`      | shard `u32` BE ++ index `u64` BE      | postcard openraft entry            |
//! | `raft_meta`      | shard `u32` BE ++ tag (vote/committed/purged) | postcard                   |
//! | `raft_snapshots` | shard `u32` BE                        | postcard snapshot meta + App bytes |
//!
//! Big-endian keys keep each group's log contiguous and ordered, so range
//! reads, truncation and purge are range scans.
//!
//! **Why fjall rather than redb.** fjall is an LSM tree whose keyspaces all
//! write into *one* write-ahead journal, and a write batch spanning keyspaces
//! is atomic in that journal. So the appends of all 64 groups (plus votes,
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
//! restarted node re-apply its log before a new election).
//!
//! Entries are readable as soon as `append` returns (a small per-group pending
//! map bridges the time until they reach the memtable), because a leader
//! replicates entries before its own fsync completes.
//!
//! **Compaction.** openraft's snapshot policy builds a snapshot every
//! [`NodeConfig::snapshot_every`] entries; the bytes are taken from the App on
//! its own task (so they match the applied index exactly), stored, and then the
//! log below the snapshot (minus [`NodeConfig::keep_logs_after_snapshot`]) is
//! purged.
//!
//! ## Network
//!
//! Raft RPCs go over gRPC (`proto/admit/internal/raft.proto`, service
//! `admit.internal.raft.RaftTransport`): one lazily connected HTTP/2 channel per
//! destination node is shared by every group (openraft-multi's
//! `GroupNetworkAdapter` binds (target, group) onto it). Payloads are
//! postcard-encoded openraft messages; the proto only routes them.
//!
//! ## Not done yet (multi-node)
//!
//! Forwarding client writes to the leader is left to the server
//! ([`WriteError::ForwardToLeader`] carries the leader's address); snapshots
//! are sent whole in one RPC (fine for MB-sized states, not for GB); heartbeats
//! are per group (64 groups × followers), not coalesced per node pair.

mod journal;
mod network;
mod node;
mod sm;
mod store;
mod types;

/// Generated protobuf/gRPC types of `admit.internal.raft`.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod pb {
    tonic::include_proto!("admit.internal.raft");
}

pub use network::RaftGrpcService;
pub use node::{JournalCounters, NodeConfig, RaftNode};
pub use types::{CmdData, TypeConfig};

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
    /// `Default` is used for internal (blank, membership) entries.
    type Response: serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + Send
        + Sync
        + std::fmt::Debug
        + Default
        + 'static;

    /// Apply a committed command. Called in log order, exactly once per
    /// entry per incarnation of the state (replay after restart starts from the
    /// last snapshot); `index` is the entry's Raft log index (unique and
    /// increasing within the shard, usable for deterministic ids).
    fn apply(&mut self, index: u64, cmd: Self::Command) -> Self::Response;

    /// Deterministic bytes of the whole state.
    fn snapshot(&self) -> Vec<u8>;

    /// Replace the whole state by the state encoded in `bytes`.
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String>;
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
