//! The number directory, cluster-wide: where a number's scope (and so its
//! shard) is, asking the other nodes when this one does not know; and the
//! sweep, a question every shard's leader answers for its shard.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use admit_core::{NumberId, ScopeKey};
use futures_util::future::join_all;

use super::request::ReqInfo;
use super::retry::Retry;
use super::Routing;
use crate::error::{ApiError, RETRY_RAFT_MS};
use crate::wire::{NodeReq, NodeResp, ShardItem, SweepItem, SweepReq, SweepResp};

/// How long one sweep waits for the other nodes' answers.
const SWEEP_WAIT: Duration = Duration::from_secs(1);

/// A number's scope, cluster-wide.
pub(crate) enum Resolved {
    Known(ScopeKey),
    /// Registered on no shard (every shard's leader said so).
    Unknown,
}

/// A registered number's scope and the shard that holds it.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub scope: ScopeKey,
    pub shard: u32,
}

/// What a send needs routed, as this node knows it: its scope (if
/// registered on a local replica) and shard.
pub(crate) struct Route {
    pub scope: Option<ScopeKey>,
    pub shard: u32,
}

/// The answers of one sweep, and whether they cover every shard.
struct Swept {
    answers: Vec<SweepResp>,
    covered: bool,
}

impl Routing {
    /// A send's route from what this node knows (an unknown number goes to
    /// the shard a number-scoped registration would be in).
    pub(crate) fn route(&self, number: &NumberId) -> Route {
        let scope = self.scope_of(number);
        let shard = self.shard_of(scope.as_ref().unwrap_or(&ScopeKey::Number(*number)));
        Route { scope, shard }
    }

    /// The shard of a registered number (cluster-wide), or NOT_FOUND.
    pub(crate) async fn locate(&self, number: &NumberId) -> Result<Located, ApiError> {
        match self.resolve(number).await? {
            Resolved::Known(scope) => Ok(Located {
                shard: self.shard_of(&scope),
                scope,
            }),
            Resolved::Unknown => Err(ApiError::NotFound(format!("unknown number {number}"))),
        }
    }

    /// A number's scope: the local directory and replicas, else every node is
    /// asked (a registered scope never changes, so any positive answer is
    /// right; "unregistered" needs every shard's leader, with a lease, to
    /// say so). See docs/design.md, "Routing in a cluster".
    pub(crate) async fn resolve(&self, number: &NumberId) -> Result<Resolved, ApiError> {
        if let Some(s) = self.scope_of(number) {
            return Ok(Resolved::Known(s));
        }
        if !self.clustered() {
            return Ok(Resolved::Unknown);
        }
        let info = ReqInfo::current();
        let mut retry = Retry::new(info);
        loop {
            let swept = self.sweep(SweepReq::Lookup { number: *number }).await;
            let found = swept.answers.iter().find_map(|a| {
                a.any.clone().or_else(|| {
                    a.items.iter().find_map(|it| match &it.item {
                        SweepItem::Lookup(s) => s.clone(),
                        _ => None,
                    })
                })
            });
            if let Some(s) = found {
                self.router.remember(*number, s.clone());
                return Ok(Resolved::Known(s));
            }
            if swept.covered {
                return Ok(Resolved::Unknown);
            }
            if !info.retries() || !retry.again().await {
                return Err(ApiError::unavailable(
                    format!(
                        "cannot tell where number {number} lives: a shard has no reachable leader"
                    ),
                    RETRY_RAFT_MS,
                ));
            }
        }
    }

    /// Answers a sweep for the shards this node leads with a lease.
    pub(crate) fn sweep_here(&self, q: &SweepReq) -> SweepResp {
        let led: Vec<u32> = (0..self.shards())
            .filter(|s| self.raft.is_leader_with_lease(*s))
            .collect();
        let items = led
            .iter()
            .map(|s| ShardItem {
                shard: *s,
                item: q.answer(&self.reader(*s)),
            })
            .collect();
        let any = match q {
            SweepReq::Lookup { number } => self.scope_of(number),
            _ => None,
        };
        SweepResp { led, items, any }
    }

    /// Asks every node (this one too) for its led shards' answers.
    async fn sweep(&self, q: SweepReq) -> Swept {
        let short = ReqInfo::current().within(SWEEP_WAIT);
        let req = NodeReq::Sweep { sweep: q.clone() };
        let calls = self.other_nodes().into_iter().map(|node| {
            let req = &req;
            async move {
                match self.peers.call(&node, req, short).await {
                    Ok(env) => match env.result {
                        Ok(NodeResp::Sweep(s)) => Some(s),
                        _ => None,
                    },
                    Err(_) => None,
                }
            }
        });
        let mut answers = vec![self.sweep_here(&q)];
        answers.extend(join_all(calls).await.into_iter().flatten());
        let led: BTreeSet<u32> = answers.iter().flat_map(|a| a.led.iter().copied()).collect();
        Swept {
            covered: led.len() == self.shards() as usize,
            answers,
        }
    }

    /// Every shard's answer to `q`, each from its leader; retried until the
    /// deadline while a shard has no reachable leader.
    pub(crate) async fn sweep_all(&self, q: SweepReq) -> Result<Vec<ShardItem>, ApiError> {
        let mut retry = Retry::new(ReqInfo::current());
        loop {
            let swept = self.sweep(q.clone()).await;
            if swept.covered {
                let mut by_shard: BTreeMap<u32, SweepItem> = BTreeMap::new();
                for a in swept.answers {
                    for it in a.items {
                        by_shard.entry(it.shard).or_insert(it.item);
                    }
                }
                return Ok(by_shard
                    .into_iter()
                    .map(|(shard, item)| ShardItem { shard, item })
                    .collect());
            }
            // also on a relayed hop: a sweep is answered by every node itself,
            // never relayed further
            if !retry.again().await {
                return Err(ApiError::unavailable(
                    "a shard has no reachable leader right now",
                    RETRY_RAFT_MS,
                ));
            }
        }
    }
}
