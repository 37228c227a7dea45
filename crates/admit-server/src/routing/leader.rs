//! Who leads a shard and how to reach a node: the one leader lookup (for
//! forwarding and for the `leader_hint`s of answers), node addresses, and the
//! shard placement used when this node holds no replica of a shard.

use std::collections::BTreeSet;

use admit_raft::NodeState;

use super::{Placement, Routing};
use crate::error::ApiError;
use crate::wire::NodeRef;

/// Where a shard-bound request runs.
pub(crate) enum Target {
    Me,
    Peer(NodeRef),
    Unknown,
}

impl Routing {
    /// This node holds a replica (voter or learner) of `shard`.
    fn member(&self, shard: u32) -> bool {
        let me = self.raft.node_id();
        self.raft.voters(shard).contains(&me) || self.raft.learners(shard).contains(&me)
    }

    /// The shard's leader as this node's own replica knows it (this node
    /// included); `None` without a replica here or a known leader.
    fn replica_leader(&self, shard: u32) -> Option<NodeRef> {
        let me = self.raft.node_id();
        let l = self.raft.leader(shard)?;
        if l == me {
            return Some(NodeRef {
                id: me,
                addr: self.peer_advertise.clone(),
            });
        }
        if !self.member(shard) {
            return None;
        }
        let addr = self.raft.leader_addr(shard).or_else(|| self.node_addr(l))?;
        Some(NodeRef { id: l, addr })
    }

    /// The leader of `shard` as known here (for `leader_hint`s): the local
    /// replica's, else the last one learned from a forwarded answer.
    pub fn leader_ref(&self, shard: u32) -> Option<NodeRef> {
        self.replica_leader(shard)
            .or_else(|| self.hints.get(&shard).map(|h| h.clone()))
    }

    /// Where to run a request of `shard` on attempt `attempt`: the leader the
    /// local replica knows; else, on even attempts, a learned hint; else the
    /// shard's placed replicas in turn.
    pub(crate) fn target(&self, shard: u32, attempt: u32) -> Target {
        let me = self.raft.node_id();
        if let Some(l) = self.replica_leader(shard) {
            return if l.id == me {
                Target::Me
            } else {
                Target::Peer(l)
            };
        }
        if attempt.is_multiple_of(2) {
            if let Some(h) = self.hints.get(&shard) {
                return Target::Peer(h.clone());
            }
        }
        let t: Vec<u64> = self
            .placement_of(shard)
            .into_iter()
            .filter(|n| *n != me)
            .collect();
        if t.is_empty() {
            return Target::Unknown;
        }
        let n = t[(attempt as usize / 2) % t.len()];
        match self.node_addr(n) {
            Some(addr) => Target::Peer(NodeRef { id: n, addr }),
            None => Target::Unknown,
        }
    }

    /// Remembers the node that served a request of `shard` (if not this one).
    pub(crate) fn learn_leader(&self, shard: u32, served_by: Option<NodeRef>) {
        if let Some(s) = served_by.filter(|s| s.id != self.raft.node_id()) {
            self.hints.insert(shard, s);
        }
    }

    /// Forgets a learned leader of `shard` that could not be reached.
    pub(crate) fn forget_leader(&self, shard: u32, id: u64) {
        self.hints.remove_if(&shard, |_, h| h.id == id);
    }

    /// Whether a failed attempt on a shard's leader is worth another try:
    /// a wrong leader always is (its hint, if it names another node, is
    /// remembered), unavailability only for idempotent requests.
    pub(crate) fn worth_retrying(
        &self,
        shard: u32,
        err: Option<&ApiError>,
        idempotent: bool,
    ) -> bool {
        match err {
            Some(ApiError::NotLeader {
                leader_id: Some(l),
                leader_addr: Some(_),
            }) => {
                // the address in the error may be the API address (it is
                // shown to callers): forwarding uses the peer address
                if let Some(addr) = self.node_addr(*l) {
                    self.learn_leader(shard, Some(NodeRef { id: *l, addr }));
                }
                true
            }
            Some(ApiError::NotLeader { .. }) => true,
            Some(ApiError::Unavailable { .. }) => idempotent,
            _ => false,
        }
    }

    /// A node's address: the registry, else the static peers.
    pub fn node_addr(&self, id: u64) -> Option<String> {
        if id == self.raft.node_id() {
            return Some(self.peer_advertise.clone());
        }
        self.raft
            .nodes()
            .into_iter()
            .find(|n| n.id == id && n.state != NodeState::Removed)
            .map(|n| n.addr)
            .or_else(|| self.static_peers.get(&id).cloned())
    }

    /// A node's public API address (for callers): the registry, else the
    /// static peers.
    pub fn api_addr(&self, id: u64) -> Option<String> {
        if id == self.raft.node_id() {
            return Some(self.advertise.clone());
        }
        self.raft
            .nodes()
            .into_iter()
            .find(|n| n.id == id && n.state != NodeState::Removed && !n.api_addr.is_empty())
            .map(|n| n.api_addr)
            .or_else(|| self.static_apis.get(&id).cloned())
    }

    /// An error as a caller sees it: a leader named by its API address.
    pub(crate) fn for_caller(&self, e: ApiError) -> ApiError {
        match e {
            ApiError::NotLeader {
                leader_id: Some(l), ..
            } => ApiError::NotLeader {
                leader_id: Some(l),
                leader_addr: self.api_addr(l),
            },
            other => other,
        }
    }

    /// Whether node `id` may use the peer port: a registered, non-removed
    /// node; before this node has a copy of the registry, a static peer, or
    /// (a node that joins and knows no one yet) any node of the cluster CA;
    /// a single node only itself.
    pub fn peer_allowed(&self, id: u64) -> bool {
        let reg = self.raft.nodes();
        if !reg.is_empty() {
            return reg
                .iter()
                .any(|n| n.id == id && n.state != NodeState::Removed);
        }
        if !self.static_peers.is_empty() {
            return self.static_peers.contains_key(&id);
        }
        // joining: anyone of the CA until the registry arrives; a single
        // node: only itself
        self.cluster_cfg || id == self.raft.node_id()
    }

    /// Every registered, non-removed node but this one (the static peers
    /// before the registry is known).
    pub(crate) fn other_nodes(&self) -> Vec<NodeRef> {
        let me = self.raft.node_id();
        let reg = self.raft.nodes();
        let list: Vec<NodeRef> = if reg.is_empty() {
            self.static_peers
                .iter()
                .map(|(id, addr)| NodeRef {
                    id: *id,
                    addr: addr.clone(),
                })
                .collect()
        } else {
            reg.into_iter()
                .filter(|n| n.state != NodeState::Removed)
                .map(|n| NodeRef {
                    id: n.id,
                    addr: n.addr,
                })
                .collect()
        };
        list.into_iter().filter(|n| n.id != me).collect()
    }

    /// Placement of `shard` over the active nodes (preferred leader first).
    fn placement_of(&self, shard: u32) -> Vec<u64> {
        let reg = self.raft.nodes();
        let active: BTreeSet<u64> = if reg.is_empty() {
            self.static_peers.keys().copied().collect()
        } else {
            reg.iter()
                .filter(|n| n.state == NodeState::Active)
                .map(|n| n.id)
                .collect()
        };
        if active.is_empty() {
            return Vec::new();
        }
        let mut cache = self.placement.lock().unwrap_or_else(|p| p.into_inner());
        if cache.as_ref().is_none_or(|p| p.active != active) {
            let table =
                admit_raft::placement::placement_table(self.shards(), &active, self.replicas);
            *cache = Some(Placement { active, table });
        }
        cache
            .as_ref()
            .and_then(|p| p.table.get(shard as usize).cloned())
            .unwrap_or_default()
    }
}
