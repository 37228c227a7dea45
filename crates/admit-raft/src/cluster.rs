//! Cluster metadata: the node registry (replicated in its own Raft group) and
//! the public status types.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};

use crate::sm::GroupRaft;
use crate::types::CmdData;
use crate::App;

/// Lifecycle of a node in the registry. Transitions only go forward:
/// `Active -> Leaving -> Removed`; a removed id is never accepted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Holds replicas; counted by placement.
    Active,
    /// Being drained: placement ignores it, its replicas are moved away.
    Leaving,
    /// Holds no replica any more; its id is retired forever.
    Removed,
}

/// A node of the cluster as recorded in the replicated registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Raft node id (never reused).
    pub id: u64,
    /// Peer-port address (`host:port`): Raft transport and node-to-node calls.
    pub addr: String,
    /// Public API address (`host:port`) callers are pointed to; empty while
    /// unknown (set by [`RaftNode::set_api_addr`](crate::RaftNode::set_api_addr)).
    pub api_addr: String,
    /// Lifecycle state.
    pub state: NodeState,
}

/// Replication progress of one member of a group, as seen by its leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// Node id.
    pub node: u64,
    /// Voter (else learner).
    pub voter: bool,
    /// Last log index known replicated to it (leader's view; `None` if unknown).
    pub matched: Option<u64>,
    /// Entries it is behind the leader's last log index (`None` if unknown).
    pub lag: Option<u64>,
    /// Milliseconds since it last acknowledged the leader (`None` if never).
    pub last_ack_ms: Option<u64>,
}

/// State of one Raft group as known on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Shard id (`== shards` for the cluster-metadata group).
    pub shard: u32,
    /// Node that produced this view.
    pub reporter: u64,
    /// Leader as known by the reporter.
    pub leader: Option<u64>,
    /// Reporter's current term.
    pub term: u64,
    /// Voters (union of both configs during joint consensus).
    pub voters: BTreeSet<u64>,
    /// Learners.
    pub learners: BTreeSet<u64>,
    /// A membership change is in progress (joint config or not yet committed).
    pub changing: bool,
    /// Reporter's last log index.
    pub last_log_index: Option<u64>,
    /// Reporter's committed index.
    pub committed: Option<u64>,
    /// Reporter's applied index.
    pub applied: Option<u64>,
    /// Last purged index (the log starts after it).
    pub purged: Option<u64>,
    /// Index of the reporter's last snapshot (metrics: entries since it).
    pub snapshot: Option<u64>,
    /// Replication progress per member; filled only when the reporter leads.
    pub replicas: Vec<ReplicaInfo>,
    /// Target replicas from placement over the reporter's registry copy,
    /// preferred leader first (empty if the registry is unknown here).
    pub target: Vec<u64>,
}

impl ShardInfo {
    /// The reporter is the leader of this group.
    pub fn is_leader_view(&self) -> bool {
        self.leader == Some(self.reporter)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RegistryState {
    pub(crate) seeded: bool,
    pub(crate) nodes: BTreeMap<u64, (String, NodeState)>,
    /// Public API address per node (the peer address is in `nodes`).
    pub(crate) apis: BTreeMap<u64, String>,
    /// The cluster id, fixed by the first `Joined` (0: none yet).
    pub(crate) cluster: u64,
    /// Node id -> incarnation of the data dir it registered with.
    pub(crate) joined: BTreeMap<u64, u64>,
}

/// The registry state before cluster identities (decoded from old snapshots).
#[derive(Deserialize)]
struct RegistryStateV0 {
    seeded: bool,
    nodes: BTreeMap<u64, (String, NodeState)>,
}

impl RegistryState {
    pub(crate) fn active(&self) -> BTreeSet<u64> {
        self.with_state(NodeState::Active)
    }

    pub(crate) fn with_state(&self, st: NodeState) -> BTreeSet<u64> {
        self.nodes
            .iter()
            .filter(|(_, (_, s))| *s == st)
            .map(|(id, _)| *id)
            .collect()
    }

    pub(crate) fn addr(&self, id: u64) -> Option<&str> {
        self.nodes.get(&id).map(|(a, _)| a.as_str())
    }

    pub(crate) fn list(&self) -> Vec<ClusterNode> {
        self.nodes
            .iter()
            .map(|(id, (addr, state))| ClusterNode {
                id: *id,
                addr: addr.clone(),
                api_addr: self.apis.get(id).cloned().unwrap_or_default(),
                state: *state,
            })
            .collect()
    }
}

/// Commands of the metadata group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MetaCmd {
    /// First write of a fresh cluster: the initial nodes, all Active. Ignored
    /// once seeded (every bootstrap node proposes the same static config).
    Seed(BTreeMap<u64, String>),
    /// Register a node (or update its address). Refused for removed ids.
    Add { id: u64, addr: String },
    /// Start draining a node.
    Leave { id: u64 },
    /// A leaving node holds no replica any more.
    MarkRemoved { id: u64 },
    /// Record the public API addresses of registered, non-removed nodes
    /// (node id -> `host:port`); others are ignored.
    SetApi(BTreeMap<u64, String>),
    /// Node `id` runs on a data dir of this `incarnation` (random, drawn when
    /// the dir was created). The first `Joined` fixes the cluster id to its
    /// `cluster` candidate. Refused when `id` registered another incarnation:
    /// its data dir was lost, and with it what it acknowledged.
    Joined {
        id: u64,
        incarnation: u64,
        cluster: u64,
    },
    /// `cmd`, made for the authenticated caller `by` (see [`acting_for`]):
    /// every node's audit line names it.
    By { by: String, cmd: Box<MetaCmd> },
}

// The caller a membership change is made for, set by the server around an
// audited request (the server's own audit log says how it was checked).
tokio::task_local! {
    static ACTOR: Option<String>;
}

/// Runs `f` on behalf of the caller `who`: registry changes it makes carry
/// the name into the replicated log, and each node's `admit::audit` line,
/// written when it applies them, names it.
pub async fn acting_for<F: std::future::Future>(who: Option<String>, f: F) -> F::Output {
    ACTOR.scope(who, f).await
}

/// `cmd` with the current caller, if there is one.
pub(crate) fn attributed(cmd: MetaCmd) -> MetaCmd {
    match ACTOR.try_with(Clone::clone).ok().flatten() {
        Some(by) if !matches!(cmd, MetaCmd::By { .. }) => MetaCmd::By {
            by,
            cmd: Box::new(cmd),
        },
        _ => cmd,
    }
}

/// Response of a [`MetaCmd`]: `err` is set if it was refused.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct MetaResp {
    pub(crate) err: Option<String>,
}

/// The registry state machine (the App of the metadata group). State behind
/// an `Arc` so the node reads it without going through the state-machine task.
#[derive(Debug, Clone, Default)]
pub(crate) struct Registry {
    pub(crate) state: Arc<RwLock<RegistryState>>,
    /// The cluster id as last applied (0: none), shared with the transport,
    /// which stamps it on every message and checks it on every arrival.
    pub(crate) cluster: Arc<AtomicU64>,
}

impl Registry {
    /// An empty registry publishing its cluster id into `cluster`.
    pub(crate) fn with_cluster_cell(cluster: Arc<AtomicU64>) -> Self {
        Self {
            state: Arc::default(),
            cluster,
        }
    }

    pub(crate) fn read(&self) -> RegistryState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many nodes are registered, without copying the state.
    pub(crate) fn node_count(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .nodes
            .len()
    }

    fn publish(&self, s: &RegistryState) {
        self.cluster.store(s.cluster, Ordering::Release);
    }
}

fn apply_cmd(s: &mut RegistryState, cmd: MetaCmd) -> Result<(), String> {
    match cmd {
        MetaCmd::By { by, cmd } => {
            let change = format!("{cmd:?}");
            let r = apply_cmd(s, *cmd);
            // the target and fields of admit-server's audit lines
            match &r {
                Ok(()) => {
                    tracing::info!(target: "admit::audit", caller = by, command = change, result = "ok", "audit: applied")
                }
                Err(reason) => {
                    tracing::info!(target: "admit::audit", caller = by, command = change, result = "refused", reason, "audit: applied")
                }
            }
            r
        }
        MetaCmd::Seed(peers) => {
            if !s.seeded {
                s.seeded = true;
                for (id, addr) in peers {
                    s.nodes.insert(id, (addr, NodeState::Active));
                }
            }
            Ok(())
        }
        MetaCmd::Add { id, addr } => {
            if !s.seeded {
                return Err("cluster registry not initialized yet".into());
            }
            match s.nodes.get_mut(&id) {
                None => {
                    s.nodes.insert(id, (addr, NodeState::Active));
                    Ok(())
                }
                Some((a, NodeState::Active)) => {
                    *a = addr;
                    Ok(())
                }
                Some((_, NodeState::Leaving)) => Err(format!("node {id} is leaving")),
                Some((_, NodeState::Removed)) => {
                    Err(format!("node id {id} was removed and cannot be reused"))
                }
            }
        }
        MetaCmd::Leave { id } => {
            let others = s_active_count_except(&s.nodes, id);
            match s.nodes.get_mut(&id) {
                None => Err(format!("no node {id}")),
                Some((_, st)) if *st == NodeState::Active => {
                    if others == 0 {
                        return Err(format!("node {id} is the last active node"));
                    }
                    *st = NodeState::Leaving;
                    Ok(())
                }
                Some(_) => Ok(()),
            }
        }
        MetaCmd::MarkRemoved { id } => match s.nodes.get_mut(&id) {
            Some((_, st @ NodeState::Leaving)) => {
                *st = NodeState::Removed;
                Ok(())
            }
            Some((_, NodeState::Removed)) => Ok(()),
            _ => Err(format!("node {id} is not leaving")),
        },
        MetaCmd::SetApi(addrs) => {
            for (id, api) in addrs {
                if s.nodes
                    .get(&id)
                    .is_some_and(|(_, st)| *st != NodeState::Removed)
                {
                    s.apis.insert(id, api);
                }
            }
            Ok(())
        }
        MetaCmd::Joined {
            id,
            incarnation,
            cluster,
        } => {
            if s.cluster == 0 {
                s.cluster = cluster;
            }
            match s.joined.get(&id) {
                Some(known) if *known != incarnation => Err(format!(
                    "{LOST_DIR}: node {id} registered another data dir before; \
                     remove it (admitctl remove-node {id}) and start this one \
                     with a new node id and --join"
                )),
                Some(_) => Ok(()),
                None => {
                    s.joined.insert(id, incarnation);
                    Ok(())
                }
            }
        }
    }
}

/// Start of the refusal of a node whose data dir was lost.
pub(crate) const LOST_DIR: &str = "data dir lost";
/// How a refusal of a removed node's data dir begins.
pub(crate) const REMOVED: &str = "node removed";

fn s_active_count_except(nodes: &BTreeMap<u64, (String, NodeState)>, id: u64) -> usize {
    nodes
        .iter()
        .filter(|(n, (_, st))| **n != id && *st == NodeState::Active)
        .count()
}

impl App for Registry {
    type Command = MetaCmd;
    type Response = MetaResp;

    fn apply(&mut self, _index: u64, cmd: MetaCmd) -> MetaResp {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        let err = apply_cmd(&mut s, cmd).err();
        self.publish(&s);
        MetaResp { err }
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(&self.read()).unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let st = registry_snapshot(bytes)?;
        self.publish(&st);
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = st;
        Ok(())
    }

    fn check_snapshot(bytes: &[u8]) -> Result<(), String> {
        registry_snapshot(bytes).map(drop)
    }
}

/// A registry snapshot's state, of this form or the old one.
fn registry_snapshot(bytes: &[u8]) -> Result<RegistryState, String> {
    match postcard::from_bytes(bytes) {
        Ok(st) => Ok(st),
        Err(e) => {
            let old: RegistryStateV0 = postcard::from_bytes(bytes)
                .map_err(|e0| format!("registry snapshot: {e}; as the old form: {e0}"))?;
            Ok(RegistryState {
                seeded: old.seeded,
                nodes: old.nodes,
                ..RegistryState::default()
            })
        }
    }
}

/// A node's answer to `IDENTITY`: what it knows of the cluster and of the
/// asking node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    /// The cluster id in its registry (0: none yet).
    pub(crate) cluster: u64,
    /// The data dir incarnation the asker registered, if it did.
    pub(crate) asker_incarnation: Option<u64>,
    /// The responder's heartbeat and election timeout min/max, in ms: all
    /// nodes must use the same (the lease assumes it).
    pub(crate) timing_ms: [u64; 3],
    /// The asker's id is `Removed` in the responder's registry: its data
    /// dir must not serve again (ids are never reused).
    pub(crate) asker_removed: bool,
}

/// Outcome of a forwarded metadata write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MetaFwd {
    /// Applied; `Some(err)` if the registry refused it.
    Done(Option<String>),
    /// The receiver does not lead the metadata group.
    NotLeader(Option<(u64, String)>),
}

/// Propose `cmd` to the metadata group `meta` if this node leads it.
pub(crate) async fn meta_write_local(meta: &GroupRaft<Registry>, cmd: MetaCmd) -> MetaFwd {
    match meta.client_write(CmdData::new(vec![cmd])).await {
        Ok(r) => MetaFwd::Done(r.data.0.into_iter().next().and_then(|r| r.err)),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            MetaFwd::NotLeader(f.leader_id.zip(f.leader_node.map(|n| n.addr)))
        }
        Err(e) => MetaFwd::Done(Some(format!("unavailable: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_rules() {
        let mut r = Registry::default();
        let add = |id| MetaCmd::Add {
            id,
            addr: format!("h:{id}"),
        };
        assert!(r.apply(1, add(9)).err.is_some(), "not seeded");
        r.apply(
            2,
            MetaCmd::Seed(BTreeMap::from([(1, "a".into()), (2, "b".into())])),
        );
        r.apply(3, MetaCmd::Seed(BTreeMap::from([(7, "x".into())])));
        assert_eq!(r.read().active(), BTreeSet::from([1, 2]));
        assert!(r.apply(4, add(3)).err.is_none());
        assert!(r.apply(5, MetaCmd::MarkRemoved { id: 3 }).err.is_some());
        assert!(r.apply(6, MetaCmd::Leave { id: 3 }).err.is_none());
        assert!(r.apply(7, add(3)).err.is_some(), "leaving");
        assert!(r.apply(8, MetaCmd::MarkRemoved { id: 3 }).err.is_none());
        assert!(r.apply(9, add(3)).err.is_some(), "removed id reused");
        assert!(r.apply(10, MetaCmd::Leave { id: 1 }).err.is_none());
        assert!(r.apply(11, MetaCmd::Leave { id: 2 }).err.is_some(), "last");
        // API addresses only for registered, non-removed nodes
        let apis = BTreeMap::from([(2, "b:1".into()), (3, "c:1".into()), (9, "z:1".into())]);
        assert!(r.apply(12, MetaCmd::SetApi(apis)).err.is_none());
        assert_eq!(r.read().apis, BTreeMap::from([(2, "b:1".to_string())]));
        let snap = r.snapshot();
        let mut r2 = Registry::default();
        r2.restore(&snap).unwrap();
        assert_eq!(r2.read(), r.read());
    }

    #[test]
    fn joined_fixes_the_cluster_and_refuses_a_lost_data_dir() {
        let mut r = Registry::default();
        let joined = |id, incarnation, cluster| MetaCmd::Joined {
            id,
            incarnation,
            cluster,
        };
        assert!(r.apply(1, joined(1, 11, 500)).err.is_none());
        assert!(r.apply(2, joined(2, 22, 600)).err.is_none());
        assert_eq!(r.read().cluster, 500, "the first Joined fixes the id");
        assert_eq!(r.cluster.load(Ordering::Acquire), 500);
        assert!(
            r.apply(3, joined(2, 22, 700)).err.is_none(),
            "same dir again"
        );
        let err = r
            .apply(4, joined(2, 23, 700))
            .err
            .expect("lost dir refused");
        assert!(err.starts_with(LOST_DIR) && err.contains("--join"), "{err}");
        assert_eq!(r.read().joined.get(&2), Some(&22));
    }

    #[test]
    fn restores_a_registry_snapshot_of_the_old_form() {
        #[derive(Serialize)]
        struct Old {
            seeded: bool,
            nodes: BTreeMap<u64, (String, NodeState)>,
        }
        let old = Old {
            seeded: true,
            nodes: BTreeMap::from([(1, ("a:1".to_string(), NodeState::Active))]),
        };
        let mut r = Registry::default();
        r.restore(&postcard::to_allocvec(&old).unwrap()).unwrap();
        assert!(r.read().seeded);
        assert_eq!(r.read().active(), BTreeSet::from([1]));
        assert_eq!(r.read().cluster, 0);
    }
}
