//! [`NodeConfig`]: what a node is told at start, and the openraft
//! configuration derived from it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, SnapshotPolicy};

use crate::StartError;

/// The default [`NodeConfig::proposal_queue`]: with entries of up to
/// 1,024 commands, a few entries' worth of waiting submissions per group.
pub const DEFAULT_PROPOSAL_QUEUE: usize = 4_096;

/// The default [`NodeConfig::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The default [`NodeConfig::quiesce_after`].
pub const DEFAULT_QUIESCE_AFTER: Duration = Duration::from_millis(300);

/// A test's hook into snapshot writes ([`NodeConfig::snapshot_write_hook`]).
#[doc(hidden)]
#[derive(Clone)]
pub struct SnapshotHook(pub Arc<dyn Fn(u32) + Send + Sync>);

impl std::fmt::Debug for SnapshotHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotHook")
    }
}

/// Configuration of a [`RaftNode`](crate::RaftNode).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's Raft id (stable across restarts, unique in the cluster).
    pub node_id: u64,
    /// Directory holding the node's journal (created if missing).
    pub data_dir: PathBuf,
    /// Number of Raft groups (shards). Fixed for the lifetime of `data_dir`.
    pub shards: u32,
    /// `shards` is only a default: a data dir created with another count
    /// keeps its own (set by callers whose operator gave no count). `false`:
    /// a data dir with another count is refused.
    pub shards_from_data_dir: bool,
    /// Address other nodes use to reach this node's Raft transport
    /// (`host:port`), recorded in group membership.
    pub advertise_addr: String,
    /// If set, the node serves its Raft transport here itself. Otherwise mount
    /// [`RaftNode::grpc_service`](crate::RaftNode::grpc_service) on your own tonic server.
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
    /// How long the journal writer, with nothing left to write, keeps
    /// looking for the next op (yielding its core between looks) before it
    /// sleeps. Under load the next op then finds it awake: handing an op to
    /// a sleeping writer costs the sender a thread wake-up, the largest cost
    /// a log entry adds on small machines (docs/benchmarks.md, "A journal
    /// writer that looks before it sleeps"). Zero: sleep at once.
    pub journal_poll: Duration,
    /// Commands per log entry at most when concurrent proposals to a group
    /// are batched.
    pub batch_max_commands: usize,
    /// Entries of a group's batched proposals in flight at once; while they
    /// are, new proposals gather into the next entry.
    pub batch_inflight: usize,
    /// Submissions waiting in one group's proposer at most; beyond it a
    /// write fails at once with
    /// [`WriteError::Overloaded`](crate::WriteError::Overloaded) (nothing
    /// queued, nothing applied) instead of queueing without bound.
    pub proposal_queue: usize,
    /// How long `start` waits for groups to recover and elect a leader.
    pub startup_timeout: Duration,
    /// The initial cluster (node id -> Raft address), including this node.
    /// Empty (the default): a single node, exactly as before clustering.
    /// With `bootstrap`, a fresh group is initialized by every node of its
    /// placement over these peers, all with the identical voter set (safe in
    /// Raft: identical initial configs at log index 0). A node joining an
    /// existing cluster starts with `bootstrap = false` (`peers` then only
    /// serve as contact points) and is registered with
    /// [`RaftNode::add_node`](crate::RaftNode::add_node) on any member.
    pub peers: BTreeMap<u64, String>,
    /// Replicas per group (voters), capped by the number of active nodes.
    pub replicas: usize,
    /// Period of the reconcile loop (membership towards placement, leader
    /// balance, registry upkeep). Zero disables the loop.
    pub reconcile_interval: Duration,
    /// Transfer each group's leadership to its preferred leader (placement).
    pub balance_leaders: bool,
    /// How long [`RaftNode::shutdown`](crate::RaftNode::shutdown) waits for the groups it leads to hand
    /// leadership to another voter.
    pub handoff_timeout: Duration,
    /// Give up waiting for a write after this long
    /// ([`WriteError::Unavailable`](crate::WriteError::Unavailable), outcome unknown). `None`: wait as long as
    /// openraft does (an isolated leader may then wait until it learns of a
    /// newer leader). Default: [`DEFAULT_WRITE_TIMEOUT`], also for a single
    /// node, because a single node can grow into a cluster (`add_node`)
    /// without a restart, and a cut-off leader must not hold writes forever.
    pub write_timeout: Option<Duration>,
    /// Test switch: the journal remembers what it has not fsynced yet, so
    /// that [`RaftNode::crash_unsynced`](crate::RaftNode::crash_unsynced)
    /// can lose it as a power cut would. Costs a read per written key; never
    /// set it outside tests.
    #[doc(hidden)]
    pub simulate_power_loss: bool,
    /// Simulation switch: the journal has no writer thread; each write is
    /// made by its caller at once and fsynced (if `fsync`) by a task after
    /// a simulated fsync time of 0.1-2 ms drawn from the seeded draws, so a
    /// single-threaded simulation with paused time is deterministic and a
    /// power cut can fall between a write and its fsync. Only on a
    /// current-thread runtime; never outside tests.
    #[doc(hidden)]
    pub inline_journal: bool,

    /// Test switch: called with the group on the thread that writes a
    /// snapshot's bytes, before it writes them (a test holds a write up
    /// with it). Never set it outside tests.
    #[doc(hidden)]
    pub snapshot_write_hook: Option<SnapshotHook>,

    // --- two ports: the peer port (Raft, above) and the public API port ---
    /// This node's public API address (`host:port`), recorded in the
    /// registry for callers' leader hints; empty: not recorded.
    pub api_addr: String,
    /// The public API addresses of the static `peers` (node id ->
    /// `host:port`), recorded in the registry when it is seeded.
    pub api_addrs: BTreeMap<u64, String>,
    /// How channels to other nodes' peer ports are opened (mutual TLS);
    /// `None`: plain HTTP/2.
    pub dialer: Option<Arc<dyn crate::Dialer>>,
    /// Largest Raft message accepted or sent (a full snapshot travels in
    /// one message, so this bounds snapshots too); `None`: 256 MiB.
    pub max_message_bytes: Option<usize>,

    // --- quiescent groups (node/quiesce.rs) ---
    /// A group this node leads with nothing to replicate for this long
    /// stops ticking and heartbeating (quiesces) until its next proposal,
    /// vote, peer message or lease check; its followers stop their election
    /// timers while the leader's node keeps saying it is alive. `None`:
    /// groups never quiesce.
    pub quiesce_after: Option<Duration>,
}

impl NodeConfig {
    /// Defaults for a single node that bootstraps its groups.
    pub fn new(node_id: u64, data_dir: impl Into<PathBuf>, shards: u32) -> Self {
        Self {
            node_id,
            data_dir: data_dir.into(),
            shards,
            shards_from_data_dir: false,
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
            journal_poll: Duration::from_micros(10),
            batch_max_commands: 1_024,
            batch_inflight: 2,
            proposal_queue: DEFAULT_PROPOSAL_QUEUE,
            startup_timeout: Duration::from_secs(10),
            peers: BTreeMap::new(),
            replicas: 3,
            reconcile_interval: Duration::from_secs(1),
            balance_leaders: true,
            handoff_timeout: Duration::from_secs(3),
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            simulate_power_loss: false,
            inline_journal: false,
            snapshot_write_hook: None,
            api_addr: String::new(),
            api_addrs: BTreeMap::new(),
            dialer: None,
            max_message_bytes: None,
            quiesce_after: Some(DEFAULT_QUIESCE_AFTER),
        }
    }

    /// The largest Raft message (default 256 MiB).
    pub(crate) fn max_message(&self) -> usize {
        self.max_message_bytes.unwrap_or(256 * 1024 * 1024)
    }

    /// The timing every node of a cluster must share, in ms: heartbeat,
    /// election timeout min and max (the lease is the max).
    pub(crate) fn timing_ms(&self) -> [u64; 3] {
        let ms = |d: Duration| d.as_millis().max(1) as u64;
        [
            ms(self.heartbeat),
            ms(self.election_timeout.0),
            ms(self.election_timeout.1),
        ]
    }

    /// What the lease argument needs of the timing (crate docs, "Why lease
    /// reads are safe"): with lease = `election_timeout.1`,
    /// `election_timeout.0 >= lease / 2` and `heartbeat * 2 <= election_timeout.0`.
    fn check_timing(&self) -> Result<(), StartError> {
        let [hb, min, max] = self.timing_ms();
        if min >= max {
            return Err(StartError::Config(format!(
                "election_timeout: min ({min} ms) must be below max ({max} ms)"
            )));
        }
        if 2 * min < max {
            return Err(StartError::Config(format!(
                "election_timeout: min ({min} ms) must be at least half of max ({max} ms, \
                 the leader lease): the fast path answers for up to half a lease after a \
                 quorum acknowledged the leader, and no follower may time out before that"
            )));
        }
        if 2 * hb > min {
            return Err(StartError::Config(format!(
                "heartbeat ({hb} ms) must be at most half of election_timeout min ({min} ms)"
            )));
        }
        Ok(())
    }

    pub(crate) fn raft_config(&self) -> Result<Config, StartError> {
        self.check_timing()?;
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
            // A restarted leader must win an election (and commit a blank
            // entry of a new term) before it leads again. openraft's
            // default restores it as leader of its old term at once, with
            // the committed index of its last persisted hint, which lags:
            // it then passes every lease check while entries it had
            // acknowledged before the crash are not committed (nor applied)
            // again yet, and answers stale reads (see `lib.rs`, "Crash
            // safety").
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        cfg.validate()
            .map_err(|e| StartError::Config(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(hb: u64, min: u64, max: u64) -> Result<Config, StartError> {
        let mut c = NodeConfig::new(1, "/nonexistent", 1);
        c.heartbeat = Duration::from_millis(hb);
        c.election_timeout = (Duration::from_millis(min), Duration::from_millis(max));
        c.raft_config()
    }

    #[test]
    fn timing_must_fit_the_lease() {
        assert!(with(100, 500, 1_000).is_ok(), "defaults");
        assert!(with(50, 200, 400).is_ok(), "tests' timing");
        // election_timeout min = lease / 2 exactly is fine, one ms less is not
        assert!(with(100, 500, 1_000).is_ok());
        let e = with(100, 499, 1_000).unwrap_err().to_string();
        assert!(e.contains("election_timeout") && e.contains("half"), "{e}");
        // heartbeat = min / 2 is fine, one ms more is not
        assert!(with(250, 500, 1_000).is_ok());
        let e = with(251, 500, 1_000).unwrap_err().to_string();
        assert!(e.contains("heartbeat"), "{e}");
        assert!(with(100, 1_000, 1_000).is_err(), "min must be below max");
    }
}
