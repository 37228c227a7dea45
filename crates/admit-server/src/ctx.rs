//! What every handler shares: the Raft node, the shards' readers, routing, the
//! clock, the leader-local rate limiter and self-protection; and the request
//! flow for sends (fast path, replicated path).

use std::collections::BTreeMap;
use std::sync::Arc;

use admit_core::rate::{Rate, RateDenial, RateLimiter, Taken};
use admit_core::{
    AdmitRequest, Command, Decision, NumberId, Output, Policy, Reader, Reason, ScopeKey,
    ScopeStatus, Ts,
};
use admit_raft::RaftNode;
use futures_util::future::join_all;

use crate::app::{ReaderSlot, ShardApp, Stamped};
use crate::clock::Clock;
use crate::convert;
use crate::error::ApiError;
use crate::protect::Protect;
use crate::routing::Router;

/// A decided send: the decision and the scope it was decided in.
/// A decided send: the decision, the scope it was decided in, and whether it
/// is a recorded decision returned again for its idempotency key.
pub(crate) type Decided = (Decision, Option<ScopeKey>, bool);

#[derive(Debug)]
pub(crate) struct Ctx {
    pub raft: RaftNode<ShardApp>,
    pub slots: Vec<ReaderSlot>,
    pub router: Router,
    pub clock: Clock,
    pub rates: RateLimiter,
    pub protect: Protect,
    /// This node's gRPC address as others reach it.
    pub advertise: String,
}

/// What a send needs routed: its scope (if registered) and shard.
struct Route {
    scope: Option<ScopeKey>,
    shard: u32,
}

impl Ctx {
    pub fn now(&self) -> Ts {
        self.clock.now()
    }

    pub fn reader(&self, shard: u32) -> Reader {
        self.slots[shard as usize].get()
    }

    pub fn scope_of(&self, number: &NumberId) -> Option<ScopeKey> {
        self.router.scope_of(number, &self.slots)
    }

    /// The shard of a registered number, or NOT_FOUND.
    pub fn number_shard(&self, number: &NumberId) -> Result<(ScopeKey, u32), ApiError> {
        let scope = self
            .scope_of(number)
            .ok_or_else(|| ApiError::NotFound(format!("unknown number {number}")))?;
        let shard = self.router.shard_of(&scope);
        Ok((scope, shard))
    }

    fn route(&self, number: &NumberId) -> Route {
        let scope = self.scope_of(number);
        let shard = self
            .router
            .shard_of(scope.as_ref().unwrap_or(&ScopeKey::Number(*number)));
        Route { scope, shard }
    }

    // ---- the replicated path ---------------------------------------------------

    /// Proposes `cmd` to `shard`, stamped with the service clock; the core's
    /// answer once it is committed and applied.
    pub async fn write(&self, shard: u32, cmd: Command) -> Result<Output, ApiError> {
        let at = self.now();
        let reply = self.raft.write(shard, Stamped { at, cmd }).await?;
        match reply.out {
            Some(r) => Ok(r?),
            None => Err(ApiError::Internal(
                "empty reply from the state machine".into(),
            )),
        }
    }

    /// Applies `cmd` to every shard (portfolio-wide and global events).
    pub async fn write_all(&self, cmd: Command) -> Result<Vec<Output>, ApiError> {
        let at = self.now();
        let writes = (0..self.router.shards()).map(|shard| {
            let cmd = cmd.clone();
            async move { self.raft.write(shard, Stamped { at, cmd }).await }
        });
        let mut outs = Vec::new();
        for r in join_all(writes).await {
            match r?.out {
                Some(r) => outs.push(r?),
                None => return Err(ApiError::Internal("empty reply".into())),
            }
        }
        Ok(outs)
    }

    // ---- policies ----------------------------------------------------------------

    /// A policy profile by name, as the state machine holds it (every shard
    /// holds every profile; shard 0 answers).
    pub async fn policy(&self, name: &str) -> Result<Arc<Policy>, ApiError> {
        let n = name.to_owned();
        self.raft
            .with_app(0, move |a: &ShardApp| a.engine().policy(&n))
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("unknown policy profile {name:?}")))
    }

    // ---- sends ---------------------------------------------------------------------

    /// R8: takes the number's throughput cell and the pair's cell, or returns
    /// the denial. Unknown numbers take nothing (the core answers them).
    // the denial is the answer itself, moved out once; boxing it would add an
    // allocation to every rate-limited request
    #[allow(clippy::result_large_err)]
    fn take_rate(
        &self,
        reader: &Reader,
        req: &AdmitRequest,
        now: Ts,
    ) -> Result<Option<Taken>, Decision> {
        let (Some(mps), Some((interval, burst))) = (
            reader.throughput_mps(&req.number),
            reader.pair_rate(&req.number),
        ) else {
            return Ok(None);
        };
        match self.rates.try_take(
            req.number,
            req.customer,
            Rate::per_second(mps),
            Rate::every(interval, burst),
            now,
        ) {
            Ok(t) => Ok(Some(t)),
            Err(RateDenial::Throughput { retry_at }) => {
                Err(convert::rate_denial(Reason::ThroughputLimited, retry_at))
            }
            Err(RateDenial::Pair { retry_at }) => {
                Err(convert::rate_denial(Reason::PairRateLimited, retry_at))
            }
        }
    }

    fn settle(&self, taken: Option<Taken>, allowed: bool) {
        if !allowed {
            if let Some(t) = taken {
                self.rates.give_back(t);
            }
        }
    }

    /// The fast path: a decision from memory when no count is involved and
    /// this node certainly leads the shard with everything committed applied.
    fn fast(
        &self,
        route: &Route,
        reader: &Reader,
        req: &AdmitRequest,
        now: Ts,
    ) -> Option<Decision> {
        if !self.raft.is_leader_with_lease(route.shard) {
            return None;
        }
        if route.scope.is_none() {
            // not registered on any local shard: if this node leads every
            // shard with a lease, no shard holds it, so the core's answer is
            // known without a log entry
            let all = (0..self.router.shards()).all(|s| self.raft.is_leader_with_lease(s));
            return all.then_some(Decision {
                allowed: false,
                reason: Reason::UnknownNumber,
                retry_at: None,
                limit: None,
                used: 0,
                window_end: None,
                admission: None,
                counted: false,
                decided_at: now,
                replayed: false,
            });
        }
        reader.try_fast(req, now)
    }

    /// Decides one send: R8 token buckets, then the fast path, else the log.
    pub async fn admit(&self, req: AdmitRequest) -> Result<(Decided, Ts), ApiError> {
        let now = self.now();
        let route = self.route(&req.number);
        let reader = self.reader(route.shard);
        let fast = self.fast(&route, &reader, &req, now);
        // a retry of a recorded decision gets it back without using rate tokens
        if let Some(d) = fast.as_ref().filter(|d| d.replayed) {
            return Ok(((d.clone(), route.scope, true), now));
        }
        let taken = match self.take_rate(&reader, &req, now) {
            Ok(t) => t,
            Err(d) => return Ok(((d, route.scope, false), now)),
        };
        if let Some(d) = fast {
            self.settle(taken, d.allowed);
            tracing::trace!(number = %req.number, reason = d.reason.as_str(), "fast path");
            return Ok(((d, route.scope, false), now));
        }
        let at = self.now();
        let reply = self
            .raft
            .write(
                route.shard,
                Stamped {
                    at,
                    cmd: Command::Admit(req),
                },
            )
            .await
            .map_err(ApiError::from)
            .and_then(|r| match r.out {
                Some(Ok(o)) => Ok((o, r.replayed)),
                Some(Err(e)) => Err(ApiError::from(e)),
                None => Err(ApiError::Internal("empty reply".into())),
            });
        match reply {
            Ok((Output::Decision(d), replayed)) => {
                self.settle(taken, d.allowed);
                Ok(((d, route.scope, replayed), now))
            }
            Ok(other) => {
                self.settle(taken, false);
                Err(ApiError::Internal(format!("unexpected output {other:?}")))
            }
            Err(e) => {
                self.settle(taken, false);
                Err(e)
            }
        }
    }

    /// Decides many sends in order: fast ones at once, the others through the
    /// log, one `write_many` per shard (items of one shard keep their order).
    pub async fn admit_many(
        &self,
        items: Vec<Result<AdmitRequest, ApiError>>,
    ) -> (Vec<Result<Decided, ApiError>>, Ts) {
        let now = self.now();
        let mut results: Vec<Option<Result<Decided, ApiError>>> = Vec::with_capacity(items.len());
        type Slow = (usize, AdmitRequest, Option<Taken>, Option<ScopeKey>);
        let mut slow: BTreeMap<u32, Vec<Slow>> = BTreeMap::new();
        for (i, item) in items.into_iter().enumerate() {
            let req = match item {
                Ok(r) => r,
                Err(e) => {
                    results.push(Some(Err(e)));
                    continue;
                }
            };
            let route = self.route(&req.number);
            let reader = self.reader(route.shard);
            let fast = self.fast(&route, &reader, &req, now);
            if let Some(d) = fast.as_ref().filter(|d| d.replayed) {
                results.push(Some(Ok((d.clone(), route.scope, true))));
                continue;
            }
            let taken = match self.take_rate(&reader, &req, now) {
                Ok(t) => t,
                Err(d) => {
                    results.push(Some(Ok((d, route.scope, false))));
                    continue;
                }
            };
            if let Some(d) = fast {
                self.settle(taken, d.allowed);
                results.push(Some(Ok((d, route.scope, false))));
                continue;
            }
            results.push(None);
            slow.entry(route.shard)
                .or_default()
                .push((i, req, taken, route.scope));
        }
        let writes = slow.into_iter().map(|(shard, group)| async move {
            let at = self.now();
            let cmds = group
                .iter()
                .map(|(_, req, _, _)| Stamped {
                    at,
                    cmd: Command::Admit(req.clone()),
                })
                .collect();
            (group, self.raft.write_many(shard, cmds).await)
        });
        for (group, res) in join_all(writes).await {
            match res {
                Ok(outs) => {
                    let mut outs = outs.into_iter();
                    for (i, _, taken, scope) in group {
                        let r = match outs.next() {
                            Some(Ok(reply)) => match reply.out {
                                Some(Ok(Output::Decision(d))) => Ok((d, scope, reply.replayed)),
                                Some(Ok(other)) => {
                                    Err(ApiError::Internal(format!("unexpected output {other:?}")))
                                }
                                Some(Err(e)) => Err(ApiError::from(e)),
                                None => Err(ApiError::Internal("empty reply".into())),
                            },
                            Some(Err(e)) => Err(ApiError::from(e)),
                            None => Err(ApiError::Internal("missing reply".into())),
                        };
                        self.settle(taken, matches!(&r, Ok((d, _, _)) if d.allowed));
                        results[i] = Some(r);
                    }
                }
                Err(e) => {
                    let e = ApiError::from(e);
                    for (i, _, taken, _) in group {
                        self.settle(taken, false);
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        let results = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ApiError::Internal("item not decided".into()))))
            .collect();
        (results, now)
    }

    // ---- status --------------------------------------------------------------------

    /// The status of a scope, read from its shard.
    pub fn scope_status(&self, scope: &ScopeKey, now: Ts) -> Option<ScopeStatus> {
        let reader = self.reader(self.router.shard_of(scope));
        match scope {
            ScopeKey::Number(n) => reader.number_status(n, now),
            ScopeKey::Portfolio(p) => reader
                .portfolio_status(p, now)?
                .scopes
                .into_iter()
                .find(|s| s.scope == *scope),
        }
    }
}
