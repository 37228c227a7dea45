//! Views: this node's view of each of its groups (leader, members, log
//! positions, replication progress when it leads), the cluster-wide view
//! gathered from every node, and the registry.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use openraft::ServerState;

use super::{Inner, RaftNode, META_KEY};
use crate::cluster::{ClusterNode, NodeState, RegistryState, ReplicaInfo, ShardInfo};
use crate::network::LocalNode;
use crate::pb::RaftRpcKind;
use crate::placement::{placement_table, rendezvous};
use crate::sm::GroupRaft;
use crate::App;

impl<A: App> RaftNode<A> {
    /// The node registry as replicated to this node (empty until this node
    /// holds a replica of the metadata group).
    pub fn nodes(&self) -> Vec<ClusterNode> {
        self.inner.registry.read().list()
    }

    /// How many nodes the registry holds (as [`Self::nodes`]`().len()`,
    /// without copying it: the API asks on every call).
    pub fn node_count(&self) -> usize {
        self.inner.registry.node_count()
    }

    /// Learner ids of `shard` as known here.
    pub fn learners(&self, shard: u32) -> BTreeSet<u64> {
        self.group(shard)
            .map(|r| r.learner_ids().collect())
            .unwrap_or_default()
    }

    /// This node's view of every shard's group: leader, voters, learners,
    /// log positions, and (on groups this node leads) each replica's matched
    /// index and lag; `target` is the placement over this node's registry copy.
    pub fn shard_infos(&self) -> Vec<ShardInfo> {
        self.inner.shard_infos()
    }

    /// This node's view of the cluster-metadata group (shard id `shards`).
    pub fn meta_info(&self) -> ShardInfo {
        self.inner.meta_info()
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
    pub(super) async fn gather(&self, reg: &RegistryState) -> Vec<Option<ShardInfo>> {
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
        let mut reports: Vec<ShardInfo> = self.inner.infos();
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
}

impl<A: App> Inner<A> {
    fn targets(&self) -> Vec<Vec<u64>> {
        let reg = self.registry.read();
        let active = reg.active();
        if active.is_empty() {
            return vec![Vec::new(); self.config.shards as usize];
        }
        placement_table(self.config.shards, &active, self.config.replicas)
    }

    pub(super) fn shard_infos(&self) -> Vec<ShardInfo> {
        let me = self.config.node_id;
        let targets = self.targets();
        self.groups
            .iter()
            .zip(targets)
            .enumerate()
            .map(|(i, (raft, t))| group_info(raft, i as u32, me, t))
            .collect()
    }

    pub(super) fn meta_info(&self) -> ShardInfo {
        let reg = self.registry.read();
        let target = rendezvous(META_KEY, &reg.active(), self.config.replicas);
        group_info(&self.meta, self.config.shards, self.config.node_id, target)
    }
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
        snapshot: m.snapshot.map(|l| l.index),
        replicas,
        target,
    }
}
