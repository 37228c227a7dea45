//! What every handler shares: the Raft node, the shards' readers, routing, the
//! clock, the leader-local rate limiter and self-protection; and the request
//! flow for sends (fast path, replicated path).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use admit_core::rate::{Rate, RateDenial, RateLimiter, Taken};
use admit_core::{
    AdmitRequest, Command, Decision, NumberId, Output, Policy, PortfolioId, PortfolioStatus,
    Reader, Reason, ScopeKey, ScopeStatus, Ts, WaId,
};
use admit_raft::{NodeState, RaftNode};
use dashmap::DashMap;
use futures_util::future::join_all;

use crate::app::{ReaderSlot, ShardApp, Stamped};
use crate::clock::Clock;
use crate::convert;
use crate::error::ApiError;
use crate::forward::{
    self, backoff, NodeReq, NodeResp, Peers, ReadReq, ReqInfo, SweepItem, SweepReq, SweepResp,
};
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
    /// Channels to the other nodes (forwarding).
    pub peers: Peers,
    /// Leaders learned from forwarded answers, for shards without a local
    /// replica.
    pub hints: DashMap<u32, (u64, String)>,
    /// Started as a member of a cluster (static peers or joining).
    pub cluster_cfg: bool,
    /// The static peers (contact points before the registry is known).
    pub static_peers: BTreeMap<u64, String>,
    /// Replicas per shard (placement).
    pub replicas: usize,
    /// Placement over the last seen active node set.
    pub placement: Mutex<Option<PlacementCache>>,
}

/// The active node set and the placement table computed for it.
pub(crate) type PlacementCache = (BTreeSet<u64>, Vec<Vec<u64>>);

/// How a send is decided on this node.
enum Triage {
    Done(Decided),
    /// Through the log, with the R8 cells taken for it (given back if denied).
    Slow(Option<Taken>),
}

/// Where a shard-bound request runs.
enum Target {
    Me,
    Peer(u64, String),
    Unknown,
}

/// A number's scope, cluster-wide.
pub(crate) enum Resolved {
    Known(ScopeKey),
    /// Registered on no shard (every shard's leader said so).
    Unknown,
}

fn unexpected(r: NodeResp) -> ApiError {
    ApiError::Internal(format!("unexpected answer {r:?}"))
}

/// The core's answer for an unregistered number.
fn unknown_number(now: Ts) -> Decision {
    Decision {
        decided_at: now,
        ..Decision::deny(Reason::UnknownNumber, None)
    }
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

    /// The shard of a registered number (cluster-wide), or NOT_FOUND.
    pub async fn number_shard(&self, number: &NumberId) -> Result<(ScopeKey, u32), ApiError> {
        match self.resolve(number).await? {
            Resolved::Known(scope) => {
                let shard = self.router.shard_of(&scope);
                Ok((scope, shard))
            }
            Resolved::Unknown => Err(ApiError::NotFound(format!("unknown number {number}"))),
        }
    }

    fn route(&self, number: &NumberId) -> Route {
        let scope = self.scope_of(number);
        let shard = self
            .router
            .shard_of(scope.as_ref().unwrap_or(&ScopeKey::Number(*number)));
        Route { scope, shard }
    }

    // ---- the replicated path ---------------------------------------------------

    /// Proposes `cmd` to `shard` on its leader (here or forwarded), stamped
    /// with the leader's service clock; the core's answer once it is
    /// committed and applied.
    pub async fn write(&self, shard: u32, cmd: Command) -> Result<Output, ApiError> {
        let idempotent = forward::idempotent(&cmd);
        let remote = NodeReq::Write {
            shard,
            cmd: Box::new(cmd.clone()),
        };
        let local = || async {
            self.write_here(shard, cmd.clone())
                .await
                .map(NodeResp::Output)
        };
        match self.on_leader(shard, idempotent, local, remote).await? {
            NodeResp::Output(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    /// Proposes `cmd` to `shard` through this node's Raft group.
    pub async fn write_here(&self, shard: u32, cmd: Command) -> Result<Output, ApiError> {
        let at = self.now();
        let fut = self.raft.write(shard, Stamped { at, cmd });
        let reply = if self.cluster_cfg {
            tokio::time::timeout(ReqInfo::current().left(), fut)
                .await
                .map_err(|_| {
                    ApiError::unavailable(
                        "the write did not commit within the deadline; outcome unknown, retry with the same idempotency key",
                        200,
                    )
                })??
        } else {
            fut.await?
        };
        Ok(reply.out?)
    }

    /// Applies `cmd` to every shard (portfolio-wide and global events).
    pub async fn write_all(&self, cmd: Command) -> Result<Vec<Output>, ApiError> {
        let writes = (0..self.router.shards()).map(|shard| self.write(shard, cmd.clone()));
        join_all(writes).await.into_iter().collect()
    }

    // ---- policies ----------------------------------------------------------------

    /// A policy profile by name, as the state machine holds it (every shard
    /// holds every profile: a shard led here answers, else shard 0's leader).
    pub async fn policy(&self, name: &str) -> Result<Arc<Policy>, ApiError> {
        let me = self.raft.node_id();
        let shard = (0..self.router.shards())
            .find(|s| self.raft.leader(*s) == Some(me))
            .unwrap_or(0);
        let read = ReadReq::Policy {
            name: name.to_owned(),
        };
        match self.read_on_leader(shard, read).await? {
            NodeResp::Policy(Some(p)) => Ok(Arc::new(p)),
            NodeResp::Policy(None) => Err(ApiError::NotFound(format!(
                "unknown policy profile {name:?}"
            ))),
            other => Err(unexpected(other)),
        }
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

    /// Sorts one send: decided here and now (the fast path, an R8 denial, a
    /// replay), or bound for the log with the rate cells it took.
    ///
    /// R3.2 order: the checks that deny whatever the windows say (restriction,
    /// template, opt-out, holds) come before the R8 token buckets, so a send
    /// they deny takes no cell and reports their reason. The reader's answer is
    /// used as that hint even without a lease (then the log decides); it is
    /// the decision only with one. A keyed send is never answered from memory
    /// unless it replays a recorded decision: its first decision must be
    /// recorded under its key (R3.4), which only the log does. `after_slow`:
    /// an earlier item of the same batch for this pair went to the log, so
    /// this one must follow it there (as if by consecutive calls).
    fn triage(&self, route: &Route, req: &AdmitRequest, now: Ts, after_slow: bool) -> Triage {
        let lease = self.raft.is_leader_with_lease(route.shard);
        let Some(scope) = route.scope.clone() else {
            // not registered on any local shard: if this node leads every
            // shard with a lease, no shard holds it, so the core's answer is
            // known without a log entry
            let all = lease && (0..self.router.shards()).all(|s| self.raft.is_leader_with_lease(s));
            return match all {
                true => Triage::Done((unknown_number(now), None, false)),
                false => Triage::Slow(None),
            };
        };
        let reader = self.reader(route.shard);
        let hint = reader.try_fast(req, now);
        if let Some(d) = hint.as_ref().filter(|d| d.replayed) {
            // a retry of a recorded decision gets it back without using rate cells
            return match lease {
                true => Triage::Done((d.clone(), Some(scope), true)),
                false => Triage::Slow(None),
            };
        }
        let denied_before_rate = hint.as_ref().is_some_and(|d| {
            !d.allowed
                && !matches!(
                    d.reason,
                    Reason::OutsideServiceWindow | Reason::SpamCooldown
                )
        });
        let answer = hint.filter(|_| lease && !after_slow && req.idempotency_key.is_none());
        if denied_before_rate {
            return match answer {
                Some(d) => Triage::Done((d, Some(scope), false)),
                None => Triage::Slow(None),
            };
        }
        let taken = match self.take_rate(&reader, req, now) {
            Ok(t) => t,
            Err(d) => return Triage::Done((d, Some(scope), false)),
        };
        match answer {
            Some(d) => {
                self.settle(taken, d.allowed);
                tracing::trace!(number = %req.number, reason = d.reason.as_str(), "fast path");
                Triage::Done((d, Some(scope), false))
            }
            None => Triage::Slow(taken),
        }
    }

    /// Decides one send on this node: the fast path or an R8 denial, else the
    /// log.
    pub async fn admit_here(&self, req: AdmitRequest) -> Result<(Decided, Ts), ApiError> {
        let now = self.now();
        let route = self.route(&req.number);
        let taken = match self.triage(&route, &req, now, false) {
            Triage::Done(d) => return Ok((d, now)),
            Triage::Slow(taken) => taken,
        };
        let at = self.now();
        let fut = self.raft.write(
            route.shard,
            Stamped {
                at,
                cmd: Command::Admit(req),
            },
        );
        let reply = if self.cluster_cfg {
            match tokio::time::timeout(ReqInfo::current().left(), fut).await {
                Ok(r) => r,
                Err(_) => Err(admit_raft::WriteError::Unavailable(
                    "the send did not commit within the deadline".into(),
                )),
            }
        } else {
            fut.await
        };
        let reply = reply
            .map_err(ApiError::from)
            .and_then(|r| Ok((r.out?, r.replayed)));
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

    /// Decides many sends in order on this node: fast ones at once, the
    /// others through the log, one `write_many` per shard (items of one shard
    /// keep their order; once an item of a pair goes to the log, the pair's
    /// later items follow it there).
    pub async fn admit_many_here(
        &self,
        items: Vec<Result<AdmitRequest, ApiError>>,
    ) -> (Vec<Result<Decided, ApiError>>, Ts) {
        let now = self.now();
        let mut results: Vec<Option<Result<Decided, ApiError>>> = Vec::with_capacity(items.len());
        type Slow = (usize, AdmitRequest, Option<Taken>, Option<ScopeKey>);
        let mut slow: BTreeMap<u32, Vec<Slow>> = BTreeMap::new();
        let mut slow_pairs: HashSet<(NumberId, WaId)> = HashSet::new();
        for (i, item) in items.into_iter().enumerate() {
            let req = match item {
                Ok(r) => r,
                Err(e) => {
                    results.push(Some(Err(e)));
                    continue;
                }
            };
            let route = self.route(&req.number);
            let pair = (req.number, req.customer);
            let after_slow = !slow_pairs.is_empty() && slow_pairs.contains(&pair);
            match self.triage(&route, &req, now, after_slow) {
                Triage::Done(d) => results.push(Some(Ok(d))),
                Triage::Slow(taken) => {
                    results.push(None);
                    slow_pairs.insert(pair);
                    slow.entry(route.shard)
                        .or_default()
                        .push((i, req, taken, route.scope));
                }
            }
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
                            Some(reply) => match reply.out {
                                Ok(Output::Decision(d)) => Ok((d, scope, reply.replayed)),
                                Ok(other) => {
                                    Err(ApiError::Internal(format!("unexpected output {other:?}")))
                                }
                                Err(e) => Err(ApiError::from(e)),
                            },
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

    /// The status of a scope, read from its shard's leader.
    pub async fn scope_status(
        &self,
        scope: &ScopeKey,
        now: Ts,
    ) -> Result<Option<ScopeStatus>, ApiError> {
        let shard = self.router.shard_of(scope);
        Ok(match scope {
            ScopeKey::Number(n) => self.number_status(shard, n, now).await?,
            ScopeKey::Portfolio(p) => self
                .portfolio_status(shard, p, now)
                .await?
                .and_then(|s| s.scopes.into_iter().find(|s| s.scope == *scope)),
        })
    }
}

// ---- the cluster: routing to shard leaders ------------------------------------------------

impl Ctx {
    /// More than one node: requests may need forwarding, numbers may live on
    /// shards without a local replica.
    pub fn clustered(&self) -> bool {
        self.cluster_cfg || self.raft.nodes().len() > 1
    }

    /// This node holds a replica (voter or learner) of `shard`.
    fn member(&self, shard: u32) -> bool {
        let me = self.raft.node_id();
        self.raft.voters(shard).contains(&me) || self.raft.learners(shard).contains(&me)
    }

    /// A node's address: the registry, else the static peers.
    pub fn node_addr(&self, id: u64) -> Option<String> {
        if id == self.raft.node_id() {
            return Some(self.advertise.clone());
        }
        self.raft
            .nodes()
            .into_iter()
            .find(|n| n.id == id && n.state != NodeState::Removed)
            .map(|n| n.addr)
            .or_else(|| self.static_peers.get(&id).cloned())
    }

    /// The nodes to ask in a sweep: every registered, non-removed node but
    /// this one (the static peers before the registry is known).
    fn other_nodes(&self) -> Vec<(u64, String)> {
        let me = self.raft.node_id();
        let reg = self.raft.nodes();
        let list: Vec<(u64, String)> = if reg.is_empty() {
            self.static_peers
                .iter()
                .map(|(i, a)| (*i, a.clone()))
                .collect()
        } else {
            reg.into_iter()
                .filter(|n| n.state != NodeState::Removed)
                .map(|n| (n.id, n.addr))
                .collect()
        };
        list.into_iter().filter(|(i, _)| *i != me).collect()
    }

    /// Test mode in a cluster: moves every other node's clock to `now`, so
    /// that whichever node leads a shard stamps its commands on the same
    /// clock. An unreachable node or one not in test mode is an error (this
    /// node's clock is already set; setting it again is harmless).
    pub async fn set_clock_everywhere(&self, now: Ts) -> Result<(), ApiError> {
        if !self.clustered() {
            return Ok(());
        }
        let info = ReqInfo::current();
        let req = NodeReq::SetClock { now };
        let calls = self.other_nodes().into_iter().map(|(id, addr)| {
            let req = &req;
            async move { (id, self.peers.call(&addr, req, info).await) }
        });
        for (id, r) in join_all(calls).await {
            match r.and_then(|env| env.result) {
                Ok(_) => {}
                Err(e) => {
                    return Err(ApiError::unavailable(
                        format!("node {id} did not take the clock: {e}"),
                        100,
                    ))
                }
            }
        }
        Ok(())
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
        if cache.as_ref().is_none_or(|(a, _)| *a != active) {
            let table = admit_raft::placement::placement_table(
                self.router.shards(),
                &active,
                self.replicas,
            );
            *cache = Some((active, table));
        }
        cache
            .as_ref()
            .and_then(|(_, t)| t.get(shard as usize).cloned())
            .unwrap_or_default()
    }

    /// Where to run a request of `shard` on attempt `attempt`.
    fn target(&self, shard: u32, attempt: u32) -> Target {
        let me = self.raft.node_id();
        if let Some(l) = self.raft.leader(shard) {
            if l == me {
                return Target::Me;
            }
            if self.member(shard) {
                if let Some(a) = self.raft.leader_addr(shard).or_else(|| self.node_addr(l)) {
                    return Target::Peer(l, a);
                }
            }
        }
        if attempt.is_multiple_of(2) {
            if let Some(h) = self.hints.get(&shard) {
                return Target::Peer(h.0, h.1.clone());
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
            Some(a) => Target::Peer(n, a),
            None => Target::Unknown,
        }
    }

    /// The leader of `shard` as known here (for `leader_hint`s).
    pub fn leader_ref(&self, shard: u32) -> Option<(u64, String)> {
        let me = self.raft.node_id();
        if let Some(l) = self.raft.leader(shard) {
            if l == me {
                return Some((me, self.advertise.clone()));
            }
            if self.member(shard) {
                if let Some(a) = self.raft.leader_addr(shard).or_else(|| self.node_addr(l)) {
                    return Some((l, a));
                }
            }
        }
        self.hints.get(&shard).map(|h| h.clone())
    }

    /// Runs a request of `shard` on the shard's leader: `local` when this
    /// node leads it, else `remote` forwarded (see [`crate::forward`]).
    /// The entry node retries until the request's deadline after
    /// not-applied failures, and after unknown outcomes if `idempotent`.
    async fn on_leader<F, Fut>(
        &self,
        shard: u32,
        idempotent: bool,
        local: F,
        remote: NodeReq,
    ) -> Result<NodeResp, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<NodeResp, ApiError>>,
    {
        let info = ReqInfo::current();
        let me = self.raft.node_id();
        let mut attempt = 0u32;
        loop {
            let r = match self.target(shard, attempt) {
                Target::Me => local().await,
                Target::Peer(id, addr) if info.may_relay() => {
                    match self.peers.call(&addr, &remote, info).await {
                        Ok(env) => {
                            if let Some(s) = env.served_by.filter(|s| s.0 != me) {
                                self.hints.insert(shard, s);
                            }
                            env.result
                        }
                        Err(e) => {
                            self.hints.remove_if(&shard, |_, h| h.0 == id);
                            Err(e)
                        }
                    }
                }
                Target::Peer(id, addr) => Err(ApiError::NotLeader {
                    leader_id: Some(id),
                    leader_addr: Some(addr),
                }),
                Target::Unknown => Err(ApiError::NotLeader {
                    leader_id: None,
                    leader_addr: None,
                }),
            };
            let retry = self.worth_retrying(shard, r.as_ref().err(), idempotent);
            attempt += 1;
            if !retry || !info.retries() || info.left() <= backoff(attempt) {
                return r;
            }
            tracing::debug!(shard, attempt, error = ?r.as_ref().err(), "retrying on the shard leader");
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// Whether a failed attempt on a shard's leader is worth another try:
    /// a wrong leader always is (its hint, if it names another node, is
    /// remembered), unavailability only for idempotent requests.
    fn worth_retrying(&self, shard: u32, err: Option<&ApiError>, idempotent: bool) -> bool {
        match err {
            Some(ApiError::NotLeader {
                leader_id: Some(l),
                leader_addr: Some(a),
            }) => {
                if *l != self.raft.node_id() {
                    self.hints.insert(shard, (*l, a.clone()));
                }
                true
            }
            Some(ApiError::NotLeader { .. }) => true,
            Some(ApiError::Unavailable { .. }) => idempotent,
            _ => false,
        }
    }

    // ---- sends, cluster-wide --------------------------------------------------------

    /// Decides one send on its shard's leader.
    pub async fn admit(&self, req: AdmitRequest) -> Result<(Decided, Ts), ApiError> {
        if !self.clustered() {
            return self.admit_here(req).await;
        }
        let now = self.now();
        let shard = match self.resolve(&req.number).await? {
            Resolved::Known(scope) => self.router.shard_of(&scope),
            Resolved::Unknown => return Ok(((unknown_number(now), None, false), now)),
        };
        let idempotent = req.idempotency_key.is_some();
        let remote = NodeReq::Admit {
            reqs: vec![req.clone()],
        };
        let local = || async {
            let (d, _) = self.admit_here(req.clone()).await?;
            Ok(NodeResp::Admitted(vec![Ok(d)]))
        };
        match self.on_leader(shard, idempotent, local, remote).await? {
            NodeResp::Admitted(mut v) if v.len() == 1 => {
                let d = v
                    .pop()
                    .unwrap_or_else(|| Err(ApiError::Internal("no answer".into())))?;
                Ok((d, now))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Decides many sends: each item on its shard's leader (one call per
    /// leader node, items of one shard in request order).
    pub async fn admit_many(
        &self,
        items: Vec<Result<AdmitRequest, ApiError>>,
    ) -> (Vec<Result<Decided, ApiError>>, Ts) {
        if !self.clustered() {
            return self.admit_many_here(items).await;
        }
        let now = self.now();
        let info = ReqInfo::current();
        let n = items.len();
        let mut results: Vec<Option<Result<Decided, ApiError>>> = vec![None; n];
        let mut pending: Vec<(usize, AdmitRequest, u32)> = Vec::new();
        let mut scopes: BTreeMap<NumberId, Option<u32>> = BTreeMap::new();
        for (i, item) in items.into_iter().enumerate() {
            let req = match item {
                Ok(r) => r,
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            };
            let shard = match scopes.get(&req.number) {
                Some(s) => *s,
                None => {
                    let s = match self.resolve(&req.number).await {
                        Ok(Resolved::Known(scope)) => Some(self.router.shard_of(&scope)),
                        Ok(Resolved::Unknown) => None,
                        Err(e) => {
                            results[i] = Some(Err(e));
                            continue;
                        }
                    };
                    scopes.insert(req.number, s);
                    s
                }
            };
            match shard {
                Some(shard) => pending.push((i, req, shard)),
                None => results[i] = Some(Ok((unknown_number(now), None, false))),
            }
        }
        let mut attempt = 0u32;
        while !pending.is_empty() {
            // group by where each item runs
            let mut here: Vec<(usize, AdmitRequest, u32)> = Vec::new();
            let mut away: BTreeMap<String, Vec<(usize, AdmitRequest, u32)>> = BTreeMap::new();
            for (i, req, shard) in std::mem::take(&mut pending) {
                match self.target(shard, attempt) {
                    Target::Me => here.push((i, req, shard)),
                    Target::Peer(_, addr) if info.may_relay() => {
                        away.entry(addr).or_default().push((i, req, shard))
                    }
                    Target::Peer(id, addr) => {
                        results[i] = Some(Err(ApiError::NotLeader {
                            leader_id: Some(id),
                            leader_addr: Some(addr),
                        }));
                        pending.push((i, req, shard));
                    }
                    Target::Unknown => {
                        results[i] = Some(Err(ApiError::NotLeader {
                            leader_id: None,
                            leader_addr: None,
                        }));
                        pending.push((i, req, shard));
                    }
                }
            }
            let local = async {
                if here.is_empty() {
                    return Vec::new();
                }
                let reqs = here.iter().map(|(_, r, _)| Ok(r.clone())).collect();
                let (out, _) = self.admit_many_here(reqs).await;
                here.into_iter().zip(out).collect::<Vec<_>>()
            };
            let remote = join_all(away.into_iter().map(|(addr, group)| async move {
                let req = NodeReq::Admit {
                    reqs: group.iter().map(|(_, r, _)| r.clone()).collect(),
                };
                let out = match self.peers.call(&addr, &req, info).await {
                    Ok(env) => match env.result {
                        Ok(NodeResp::Admitted(v)) if v.len() == group.len() => v,
                        Ok(other) => vec![Err(unexpected(other)); group.len()],
                        Err(e) => vec![Err(e); group.len()],
                    },
                    Err(e) => vec![Err(e); group.len()],
                };
                group.into_iter().zip(out).collect::<Vec<_>>()
            }));
            let (local, remote) = tokio::join!(local, remote);
            for ((i, req, shard), r) in local.into_iter().chain(remote.into_iter().flatten()) {
                let again =
                    self.worth_retrying(shard, r.as_ref().err(), req.idempotency_key.is_some());
                if again {
                    pending.push((i, req, shard));
                }
                results[i] = Some(r);
            }
            attempt += 1;
            if pending.is_empty() || !info.retries() || info.left() <= backoff(attempt) {
                break;
            }
            pending.sort_by_key(|(i, _, _)| *i);
            tokio::time::sleep(backoff(attempt)).await;
        }
        let results = results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ApiError::Internal("item not decided".into()))))
            .collect();
        (results, now)
    }

    // ---- the number directory, cluster-wide ---------------------------------------------

    /// A number's scope: the local directory and replicas, else every node is
    /// asked (a registered scope never changes, so any positive answer is
    /// right; "unregistered" needs every shard's leader, with a lease, to
    /// say so). See docs/design.md, "Routing in a cluster".
    pub async fn resolve(&self, number: &NumberId) -> Result<Resolved, ApiError> {
        if let Some(s) = self.scope_of(number) {
            return Ok(Resolved::Known(s));
        }
        if !self.clustered() {
            return Ok(Resolved::Unknown);
        }
        let info = ReqInfo::current();
        let mut attempt = 0u32;
        loop {
            let (answers, covered) = self.sweep(SweepReq::Lookup { number: *number }).await;
            let found = answers.iter().find_map(|a| {
                a.any.clone().or_else(|| {
                    a.items.iter().find_map(|(_, it)| match it {
                        SweepItem::Lookup(s) => s.clone(),
                        _ => None,
                    })
                })
            });
            if let Some(s) = found {
                self.router.remember(*number, s.clone());
                return Ok(Resolved::Known(s));
            }
            if covered {
                return Ok(Resolved::Unknown);
            }
            attempt += 1;
            if !info.retries() || info.left() <= backoff(attempt) {
                return Err(ApiError::unavailable(
                    format!(
                        "cannot tell where number {number} lives: a shard has no reachable leader"
                    ),
                    200,
                ));
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// Answers a sweep for the shards this node leads with a lease.
    pub fn sweep_here(&self, q: &SweepReq) -> SweepResp {
        let led: Vec<u32> = (0..self.router.shards())
            .filter(|s| self.raft.is_leader_with_lease(*s))
            .collect();
        let items = led
            .iter()
            .map(|s| {
                let r = self.reader(*s);
                let item = match q {
                    SweepReq::Lookup { number } => SweepItem::Lookup(r.scope_of(number)),
                    SweepReq::Portfolio { id, now } => {
                        SweepItem::Portfolio(r.portfolio_status(id, *now))
                    }
                    SweepReq::Scopes { now } => SweepItem::Scopes(r.list_by_headroom(*now)),
                };
                (*s, item)
            })
            .collect();
        let any = match q {
            SweepReq::Lookup { number } => self.scope_of(number),
            _ => None,
        };
        SweepResp { led, items, any }
    }

    /// Asks every node (this one too) for its led shards' answers; whether
    /// they cover every shard.
    async fn sweep(&self, q: SweepReq) -> (Vec<SweepResp>, bool) {
        let info = ReqInfo::current();
        let short = ReqInfo {
            deadline: info
                .deadline
                .min(std::time::Instant::now() + std::time::Duration::from_secs(1)),
            hops: info.hops,
        };
        let req = NodeReq::Sweep { sweep: q.clone() };
        let calls = self.other_nodes().into_iter().map(|(_, addr)| {
            let req = &req;
            async move {
                match self.peers.call(&addr, req, short).await {
                    Ok(env) => match env.result {
                        Ok(NodeResp::Sweep(s)) => Some(s),
                        _ => None,
                    },
                    Err(_) => None,
                }
            }
        });
        let mut out = vec![self.sweep_here(&q)];
        out.extend(join_all(calls).await.into_iter().flatten());
        let covered: BTreeSet<u32> = out.iter().flat_map(|a| a.led.iter().copied()).collect();
        let all = covered.len() == self.router.shards() as usize;
        (out, all)
    }

    /// Every shard's answer to `q`, each from its leader; retried until the
    /// deadline while a shard has no reachable leader.
    async fn sweep_all(&self, q: SweepReq) -> Result<Vec<(u32, SweepItem)>, ApiError> {
        let info = ReqInfo::current();
        let mut attempt = 0u32;
        loop {
            let (answers, covered) = self.sweep(q.clone()).await;
            if covered {
                let mut by_shard: BTreeMap<u32, SweepItem> = BTreeMap::new();
                for a in answers {
                    for (s, it) in a.items {
                        by_shard.entry(s).or_insert(it);
                    }
                }
                return Ok(by_shard.into_iter().collect());
            }
            attempt += 1;
            if info.left() <= backoff(attempt) {
                return Err(ApiError::unavailable(
                    "a shard has no reachable leader right now",
                    200,
                ));
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    // ---- reads ----------------------------------------------------------------------

    /// A number's status from its shard's leader.
    pub async fn number_status(
        &self,
        shard: u32,
        number: &NumberId,
        now: Ts,
    ) -> Result<Option<ScopeStatus>, ApiError> {
        let read = ReadReq::NumberStatus {
            number: *number,
            now,
        };
        match self.read_on_leader(shard, read).await? {
            NodeResp::NumberStatus(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// A read of one shard's state, served by the shard's leader (here, or
    /// relayed to it).
    async fn read_on_leader(&self, shard: u32, read: ReadReq) -> Result<NodeResp, ApiError> {
        let remote = NodeReq::Read {
            shard,
            read: read.clone(),
        };
        let local = || self.read_here(shard, &read);
        self.on_leader(shard, true, local, remote).await
    }

    /// Serves a read from this node's replica of the shard.
    async fn read_here(&self, shard: u32, read: &ReadReq) -> Result<NodeResp, ApiError> {
        Ok(match read {
            ReadReq::NumberStatus { number, now } => {
                NodeResp::NumberStatus(self.reader(shard).number_status(number, *now))
            }
            ReadReq::PortfolioStatus { id, now } => {
                NodeResp::PortfolioStatus(self.reader(shard).portfolio_status(id, *now))
            }
            ReadReq::Policy { name } => {
                let n = name.clone();
                let p = self
                    .raft
                    .with_app(shard, move |a: &ShardApp| a.engine().policy(&n))
                    .await?;
                NodeResp::Policy(p.map(|p| (*p).clone()))
            }
        })
    }

    /// A portfolio's status on one shard, from the shard's leader.
    pub async fn portfolio_status(
        &self,
        shard: u32,
        id: &PortfolioId,
        now: Ts,
    ) -> Result<Option<PortfolioStatus>, ApiError> {
        let read = ReadReq::PortfolioStatus {
            id: id.clone(),
            now,
        };
        match self.read_on_leader(shard, read).await? {
            NodeResp::PortfolioStatus(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// A portfolio's status on every shard that knows it.
    pub async fn portfolio_statuses(
        &self,
        id: &PortfolioId,
        now: Ts,
    ) -> Result<Vec<(u32, PortfolioStatus)>, ApiError> {
        if !self.clustered() {
            return Ok((0..self.router.shards())
                .filter_map(|s| Some((s, self.reader(s).portfolio_status(id, now)?)))
                .collect());
        }
        let items = self
            .sweep_all(SweepReq::Portfolio {
                id: id.clone(),
                now,
            })
            .await?;
        Ok(items
            .into_iter()
            .filter_map(|(s, it)| match it {
                SweepItem::Portfolio(Some(p)) => Some((s, p)),
                _ => None,
            })
            .collect())
    }

    /// Every scope's status (all shards).
    pub async fn list_scopes(&self, now: Ts) -> Result<Vec<ScopeStatus>, ApiError> {
        if !self.clustered() {
            return Ok((0..self.router.shards())
                .flat_map(|s| self.reader(s).list_by_headroom(now))
                .collect());
        }
        let items = self.sweep_all(SweepReq::Scopes { now }).await?;
        Ok(items
            .into_iter()
            .flat_map(|(_, it)| match it {
                SweepItem::Scopes(v) => v,
                _ => Vec::new(),
            })
            .collect())
    }

    // ---- serving forwarded requests ---------------------------------------------------

    /// Serves a request relayed by another node (within its deadline and hop
    /// count, see [`forward::scoped_relay`]).
    pub async fn serve_relayed(&self, req: NodeReq) -> forward::Envelope {
        let (shard, result) = match req {
            NodeReq::Write { shard, cmd } => (
                Some(shard),
                self.write(shard, *cmd).await.map(NodeResp::Output),
            ),
            NodeReq::Admit { mut reqs } => {
                if reqs.len() == 1 {
                    let req = reqs.remove(0);
                    let shard = self.scope_of(&req.number).map(|s| self.router.shard_of(&s));
                    (
                        shard,
                        self.admit(req)
                            .await
                            .map(|(d, _)| NodeResp::Admitted(vec![Ok(d)])),
                    )
                } else {
                    let (out, _) = self.admit_many(reqs.into_iter().map(Ok).collect()).await;
                    (None, Ok(NodeResp::Admitted(out)))
                }
            }
            NodeReq::Read { shard, read } => (Some(shard), self.read_on_leader(shard, read).await),
            NodeReq::Sweep { sweep } => (None, Ok(NodeResp::Sweep(self.sweep_here(&sweep)))),
            // a node already past `now` stays there: time never goes back
            NodeReq::SetClock { now } => (
                None,
                match self.clock.set(now) {
                    Ok(t) => Ok(NodeResp::Clock(t)),
                    Err(crate::clock::ClockError::Backwards { current, .. }) => {
                        Ok(NodeResp::Clock(Ts(current)))
                    }
                    Err(e) => Err(ApiError::FailedPrecondition(e.to_string())),
                },
            ),
        };
        forward::Envelope {
            result,
            served_by: shard.and_then(|s| self.leader_ref(s)),
        }
    }
}
