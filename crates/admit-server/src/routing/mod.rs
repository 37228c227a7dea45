//! Routing: which shard owns a request, which node leads that shard, and
//! how a request gets there.
//!
//! A send counts against its limit scope (the number under the seeds profile,
//! the portfolio under meta, see `Policy.scope`); the scope's stable hash
//! modulo the shard count names the shard whose Raft group holds it
//! ([`Router`]). A node-local directory maps numbers to scopes; it is filled
//! at registration and, on a miss, by asking the local shards' readers, then
//! the other nodes ([`directory`]).
//!
//! Any node accepts any request and carries it to the shard's leader
//! ([`forward`]):
//!
//! * The entry node picks the shard's leader ([`leader`]): from its own Raft
//!   group when it holds a replica, else from a hint learned from an earlier
//!   answer, else the shard's placement (the preferred leader first; a
//!   replica that is not the leader relays once more).
//! * It sends a [`NodeReq`](crate::wire::NodeReq) as a frame on the
//!   node-pair stream that carries the two nodes' Raft messages, when one is
//!   open ([`peers`]); else in a `admit.internal.node.NodeRpc/Call` frame
//!   over one cached tonic channel per peer (the peer's advertised
//!   peer-port address, the port of the Raft transport too). Requests for
//!   one peer that go as calls share its lane, which sends what queues
//!   while its calls are under way as one batch frame (each request keeps
//!   its deadline, hops and answer).
//! * The receiver runs it exactly as if it were the entry node, but it relays
//!   at most once more: a frame carries its hop count and a node never relays
//!   a frame with `hops >= MAX_HOPS`; it answers
//!   [`ApiError::NotLeader`](crate::error::ApiError::NotLeader) (nothing
//!   applied) instead ([`request`]).
//! * Only the entry node retries, with a short backoff ([`retry`]), until the
//!   request's deadline (its `grpc-timeout`, else
//!   [`request::DEFAULT_DEADLINE`]): always after `NotLeader` and refused
//!   connections (nothing was applied), and after an unknown outcome (a relay
//!   that died mid-call) only for idempotent requests (keyed sends, releases,
//!   registrations, keyed events, reads). So a leader change costs latency,
//!   not an error, within the deadline. Each forwarded attempt waits at most
//!   two leases ([`forward::MIN_ATTEMPT`] at least), so a frozen leader
//!   delays a retried request by about that, not by the whole deadline.
//! * Clients may send `admit-hops: 2` to forbid forwarding (tests, smart
//!   clients that route themselves).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use admit_core::{NumberId, Reader, ScopeKey, Ts};
use admit_raft::RaftNode;
use dashmap::DashMap;

use crate::app::{ReaderSlot, ShardApp};
use crate::clock::Clock;
use crate::wire::NodeRef;

pub(crate) mod directory;
pub(crate) mod forward;
pub(crate) mod leader;
pub(crate) mod peers;
pub mod request;
pub(crate) mod retry;

use peers::Peers;

/// What a node knows to route requests: its Raft groups and their readers,
/// the scope -> shard map and number directory, the other nodes and the
/// service clock that stamps proposals.
#[derive(Debug)]
pub(crate) struct Routing {
    pub raft: RaftNode<ShardApp>,
    pub slots: Vec<ReaderSlot>,
    pub router: Router,
    pub clock: Clock,
    /// This node's peer-port address as other nodes reach it.
    pub peer_advertise: String,
    /// This node's public API address as callers reach it.
    pub advertise: String,
    /// Channels to the other nodes (forwarding).
    pub peers: Peers,
    /// Leaders learned from forwarded answers, for shards without a local
    /// replica.
    hints: DashMap<u32, NodeRef>,
    /// Started as a member of a cluster (static peers or joining).
    cluster_cfg: bool,
    /// The static peers (contact points before the registry is known):
    /// peer-port addresses, and their API addresses.
    static_peers: BTreeMap<u64, String>,
    static_apis: BTreeMap<u64, String>,
    /// Replicas per shard (placement).
    replicas: usize,
    /// Placement over the last seen active node set.
    placement: Mutex<Option<Placement>>,
    /// A joining node's membership as the join's answer named it (issue
    /// 12): whom the peer port serves until the registry arrives.
    joined: std::sync::RwLock<Option<BTreeSet<u64>>>,
    /// The other nodes' clocks as sampled here: the bound on stamping.
    pub skew: crate::skew::Skew,
    /// Wake-ups of the periodic loops (issue 14; `crate::quiet`).
    pub wakeups: crate::quiet::LoopWakeups,
}

/// The active node set and the placement table computed for it.
#[derive(Debug)]
pub(crate) struct Placement {
    pub(super) active: BTreeSet<u64>,
    /// Per shard, its replicas, the preferred leader first.
    pub(super) table: Vec<Vec<u64>>,
}

/// How a node is placed in its cluster (see [`Routing::new`]).
#[derive(Debug)]
pub(crate) struct Membership {
    pub peer_advertise: String,
    pub advertise: String,
    pub static_apis: BTreeMap<u64, String>,
    pub peers: Peers,
    /// Started as a member of a cluster (static peers or joining).
    pub clustered: bool,
    pub static_peers: BTreeMap<u64, String>,
    pub replicas: usize,
    /// How far this node's clock may run ahead of the others' (`skew`).
    pub max_clock_offset: std::time::Duration,
}

impl Routing {
    pub fn new(
        raft: RaftNode<ShardApp>,
        slots: Vec<ReaderSlot>,
        router: Router,
        clock: Clock,
        m: Membership,
    ) -> Routing {
        Routing {
            raft,
            slots,
            router,
            peer_advertise: m.peer_advertise,
            advertise: m.advertise,
            peers: m.peers,
            hints: DashMap::new(),
            cluster_cfg: m.clustered,
            static_peers: m.static_peers,
            static_apis: m.static_apis,
            replicas: m.replicas,
            placement: Mutex::new(None),
            joined: std::sync::RwLock::new(None),
            skew: crate::skew::Skew::new(m.max_clock_offset, clock.is_test()),
            wakeups: Default::default(),
            clock,
        }
    }

    /// The time this node goes by: its service clock, raised to what a
    /// majority of the nodes' clocks have passed when it runs behind
    /// ([`crate::skew::Skew::raise`]).
    pub fn now(&self) -> Ts {
        self.skew.raise(self.clock.now())
    }

    /// This node's service clock as it reads (what the other nodes sample
    /// and the skew is measured on).
    pub fn clock_now(&self) -> Ts {
        self.clock.now()
    }

    /// The reader of this node's replica of `shard`.
    pub fn reader(&self, shard: u32) -> Reader {
        self.slots[shard as usize].get()
    }

    pub fn shards(&self) -> u32 {
        self.router.shards()
    }

    /// The shard owning `scope`.
    pub fn shard_of(&self, scope: &ScopeKey) -> u32 {
        self.router.shard_of(scope)
    }

    /// A number's scope as this node knows it (directory, local replicas).
    pub fn scope_of(&self, number: &NumberId) -> Option<ScopeKey> {
        self.router.scope_of(number, &self.slots)
    }

    /// More than one node: requests may need forwarding, numbers may live on
    /// shards without a local replica.
    pub fn clustered(&self) -> bool {
        self.cluster_cfg || self.raft.node_count() > 1
    }
}

#[derive(Debug)]
pub struct Router {
    shards: u32,
    directory: DashMap<NumberId, ScopeKey>,
}

impl Router {
    pub fn new(shards: u32) -> Router {
        Router {
            shards: shards.max(1),
            directory: DashMap::new(),
        }
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The shard owning `scope`.
    pub fn shard_of(&self, scope: &ScopeKey) -> u32 {
        (scope.stable_hash() % u64::from(self.shards)) as u32
    }

    /// Records a number's scope (at registration).
    pub fn remember(&self, number: NumberId, scope: ScopeKey) {
        self.directory.insert(number, scope);
    }

    /// The scope of a registered number: the directory, else the readers of
    /// the local shards (then remembered). `None`: not registered here.
    pub fn scope_of(&self, number: &NumberId, slots: &[ReaderSlot]) -> Option<ScopeKey> {
        if let Some(s) = self.directory.get(number) {
            return Some(s.clone());
        }
        // try the shard a number-scoped registration would be in first
        let home = self.shard_of(&ScopeKey::Number(*number)) as usize;
        let order = std::iter::once(home).chain((0..slots.len()).filter(|i| *i != home));
        for i in order {
            if let Some(s) = slots.get(i).and_then(|slot| slot.get().scope_of(number)) {
                self.directory.insert(*number, s.clone());
                return Some(s);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use admit_core::PortfolioId;

    #[test]
    fn scopes_spread_over_shards() {
        let r = Router::new(64);
        let mut hit = std::collections::BTreeSet::new();
        for i in 0..2_000u32 {
            let n = NumberId::parse("n", &(1_000_000 + i).to_string()).unwrap();
            let s = r.shard_of(&ScopeKey::Number(n));
            assert!(s < 64);
            hit.insert(s);
        }
        assert_eq!(hit.len(), 64);
    }

    /// Pinned values: a stored scope's shard must never move across versions
    /// (a change here re-routes data already on disk). Computed once with the
    /// routing of the first release; do not update them to make a change pass.
    #[test]
    fn scopes_stay_on_their_pinned_shards() {
        let number = |n: &str| ScopeKey::Number(NumberId::parse("n", n).unwrap());
        let portfolio = |p: &str| ScopeKey::Portfolio(PortfolioId::parse("p", p).unwrap());
        let pins: [(ScopeKey, u32, u32); 10] = [
            // scope, its shard of 64, its shard of 8
            (number("1"), 39, 7),
            (number("15550001234"), 6, 6),
            (number("4915112345678"), 25, 1),
            (number("1000000"), 44, 4),
            (number("1000001"), 36, 4),
            (number("999"), 14, 6),
            (portfolio("waba-1"), 53, 5),
            (portfolio("waba-2"), 60, 4),
            (portfolio("acme"), 47, 7),
            (portfolio("p"), 33, 1),
        ];
        let (r64, r8) = (Router::new(64), Router::new(8));
        for (scope, of64, of8) in &pins {
            assert_eq!(r64.shard_of(scope), *of64, "{scope:?} of 64 shards");
            assert_eq!(r8.shard_of(scope), *of8, "{scope:?} of 8 shards");
        }
    }
}
