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

    /// Whether node `id` may use the peer port (see [`peer_allowed`]).
    pub fn peer_allowed(&self, id: u64) -> bool {
        let reg = self.raft.nodes();
        let registry: Vec<(u64, NodeState)> = reg.iter().map(|n| (n.id, n.state)).collect();
        let joined = self.joined.read().unwrap_or_else(|p| p.into_inner());
        peer_allowed(
            id,
            &Known {
                me: self.raft.node_id(),
                registry: &registry,
                static_peers: &self.static_peers.keys().copied().collect(),
                joined: joined.as_ref(),
            },
        )
    }

    /// A joining node learned its cluster's members from the join's answer.
    pub(crate) fn learned_members(&self, ids: BTreeSet<u64>) {
        *self.joined.write().unwrap_or_else(|p| p.into_inner()) = Some(ids);
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

/// What a node knows of its membership, for [`peer_allowed`].
pub(crate) struct Known<'a> {
    pub me: u64,
    /// Its registry copy (empty until the registry reached it).
    pub registry: &'a [(u64, NodeState)],
    pub static_peers: &'a BTreeSet<u64>,
    /// The members a join's answer named (a node started with `--join`).
    pub joined: Option<&'a BTreeSet<u64>>,
}

/// Whether node `id` may use the peer port: a registered, non-removed
/// node; before this node has a copy of the registry, a static peer, or,
/// for a node that joined, a member the join's answer named. Itself always;
/// nobody else while a join is unanswered and no static peer is known (a
/// certificate of the cluster CA alone does not make a member: issue 12).
pub(crate) fn peer_allowed(id: u64, k: &Known<'_>) -> bool {
    if !k.registry.is_empty() {
        return k
            .registry
            .iter()
            .any(|(n, st)| *n == id && *st != NodeState::Removed);
    }
    if id == k.me {
        return true;
    }
    if !k.static_peers.is_empty() {
        return k.static_peers.contains(&id);
    }
    k.joined.is_some_and(|m| m.contains(&id))
}

#[cfg(test)]
mod peer_tests {
    use super::*;

    fn known<'a>(
        registry: &'a [(u64, NodeState)],
        static_peers: &'a BTreeSet<u64>,
        joined: Option<&'a BTreeSet<u64>>,
    ) -> Known<'a> {
        Known {
            me: 4,
            registry,
            static_peers,
            joined,
        }
    }

    #[test]
    fn a_joining_node_serves_only_the_members_its_join_named() {
        let none = BTreeSet::new();
        // the join not answered yet: itself only, not any node of the CA
        let k = known(&[], &none, None);
        assert!(peer_allowed(4, &k));
        assert!(!peer_allowed(1, &k));
        assert!(!peer_allowed(9, &k));
        // answered with members 1, 2, 4: those, no one else
        let members = BTreeSet::from([1, 2, 4]);
        let k = known(&[], &none, Some(&members));
        assert!(peer_allowed(1, &k) && peer_allowed(2, &k) && peer_allowed(4, &k));
        assert!(!peer_allowed(9, &k));
        // the registry, once here, decides
        let reg = [
            (1, NodeState::Active),
            (2, NodeState::Removed),
            (4, NodeState::Active),
        ];
        let k = known(&reg, &none, Some(&members));
        assert!(peer_allowed(1, &k));
        assert!(!peer_allowed(2, &k), "a removed node");
    }

    #[test]
    fn static_peers_before_the_registry() {
        let peers = BTreeSet::from([1, 2, 3]);
        let k = known(&[], &peers, None);
        assert!(peer_allowed(2, &k));
        assert!(!peer_allowed(9, &k));
    }
}
