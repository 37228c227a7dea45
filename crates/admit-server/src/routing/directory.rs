//! The number directory, cluster-wide: where a number's scope (and so its
//! shard) is, asking the other nodes when this one does not know; and the
//! sweep, a question every shard's leader answers for its shard.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use admit_core::{NumberId, ScopeKey};
use futures_util::future::{join, join_all};

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
#[derive(Clone)]
pub(crate) struct Route {
    pub scope: Option<ScopeKey>,
    pub shard: u32,
}

/// The answers of one sweep, and whether they cover every shard.
struct Swept {
    answers: Vec<SweepResp>,
    covered: bool,
    /// Nodes that answered that they do not know the question (older builds).
    unknown_at: Vec<u64>,
}

/// Every shard's answer a sweep could get, and whether some could not be had
/// because a node does not know the question (an older build, mid-upgrade).
pub(crate) struct Partial {
    pub items: Vec<ShardItem>,
    /// Nodes that do not know the question, when not every shard answered.
    pub unknown_at: Vec<u64>,
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

    /// A number's scope: the local directory and replicas (registrations, and
    /// the claim on the number's home shard), else every node is asked (a
    /// registered or claimed scope never changes, so any positive answer is
    /// right; "unregistered" needs every shard's leader, with a lease, to
    /// say so). See docs/design.md, "Routing in a cluster".
    pub(crate) async fn resolve(&self, number: &NumberId) -> Result<Resolved, ApiError> {
        if let Some(s) = self.known_here(number) {
            return Ok(Resolved::Known(s));
        }
        if !self.clustered() {
            return Ok(Resolved::Unknown);
        }
        // boxed: the sweep's state is large and rarely needed; inline, every
        // send's future would carry (and copy) it
        Box::pin(self.resolve_by_sweep(number)).await
    }

    /// [`Self::resolve`] for a number this node does not know: asks every node.
    async fn resolve_by_sweep(&self, number: &NumberId) -> Result<Resolved, ApiError> {
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

    /// A number's scope as this node knows it: [`Routing::scope_of`], else the
    /// claim on its local replica of the number's home shard (a claim is right
    /// once made, even before its registration is applied; then remembered).
    /// Not the send path's [`Routing::route`], which stays as it was.
    fn known_here(&self, number: &NumberId) -> Option<ScopeKey> {
        self.scope_of(number).or_else(|| {
            let home = self.shard_of(&ScopeKey::Number(*number)) as usize;
            let s = self.slots.get(home)?.get().claim_of(number)?;
            self.router.remember(*number, s.clone());
            Some(s)
        })
    }

    /// Answers a sweep for the shards this node leads with a lease. A shard
    /// it leads whose lease lapsed (a quiesced spell, acknowledgements late
    /// under load) is renewed first, within three quarters of the sweep's
    /// time (at most a lease), so that the answer is in before the asker
    /// gives up; one whose renewal fails stays unanswered: never an answer
    /// without a lease (docs/design.md, "Routing in a cluster").
    pub(crate) async fn sweep_here(&self, q: &SweepReq) -> SweepResp {
        let within = (ReqInfo::current().within(SWEEP_WAIT).left() * 3 / 4).min(self.raft.lease());
        let me = self.raft.node_id();
        let held = (0..self.shards()).map(|s| async move {
            (self.raft.leader(s) == Some(me) && self.raft.ensure_lease(s, within).await)
                .then_some(s)
        });
        let led: Vec<u32> = join_all(held).await.into_iter().flatten().collect();
        let items = led
            .iter()
            .map(|s| ShardItem {
                shard: *s,
                item: q.answer(&self.reader(*s)),
            })
            .collect();
        let any = match q {
            SweepReq::Lookup { number } => self.known_here(number),
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
                        Ok(NodeResp::Sweep(s)) => Ok(Some(s)),
                        _ => Ok(None),
                    },
                    Err(ApiError::UnknownKind(_)) => Err(node.id),
                    Err(_) => Ok(None),
                }
            }
        });
        // this node's own answer may wait for a lease renewal: meanwhile
        let (here, others) = join(self.sweep_here(&q), join_all(calls)).await;
        let mut answers = vec![here];
        let mut unknown_at = Vec::new();
        for a in others {
            match a {
                Ok(a) => answers.extend(a),
                Err(node) => unknown_at.push(node),
            }
        }
        let led: BTreeSet<u32> = answers.iter().flat_map(|a| a.led.iter().copied()).collect();
        Swept {
            covered: led.len() == self.shards() as usize,
            answers,
            unknown_at,
        }
    }

    /// Every shard's answer to `q`, each from its leader; retried until the
    /// deadline while a shard has no reachable leader.
    pub(crate) async fn sweep_all(&self, q: SweepReq) -> Result<Vec<ShardItem>, ApiError> {
        let p = self.sweep_known(q).await?;
        if p.unknown_at.is_empty() {
            Ok(p.items)
        } else {
            Err(ApiError::UnknownKind(format!(
                "nodes {:?} do not know this question",
                p.unknown_at
            )))
        }
    }

    /// [`Routing::sweep_all`], but a sweep that a node cannot answer because
    /// it does not know the question (an older build) is not retried: it
    /// returns what the other shards answered, with those nodes named.
    pub(crate) async fn sweep_known(&self, q: SweepReq) -> Result<Partial, ApiError> {
        let mut retry = Retry::new(ReqInfo::current());
        loop {
            let swept = self.sweep(q.clone()).await;
            if swept.covered || !swept.unknown_at.is_empty() {
                let mut by_shard: BTreeMap<u32, SweepItem> = BTreeMap::new();
                for a in swept.answers {
                    for it in a.items {
                        by_shard.entry(it.shard).or_insert(it.item);
                    }
                }
                let items = by_shard
                    .into_iter()
                    .map(|(shard, item)| ShardItem { shard, item })
                    .collect();
                let unknown_at = if swept.covered {
                    Vec::new()
                } else {
                    swept.unknown_at
                };
                return Ok(Partial { items, unknown_at });
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
