//! Reads of the shards' applied state, each served by the shard's leader
//! (here, or relayed to it); portfolio-wide and listing reads ask every
//! shard's leader at once (a sweep).

use std::sync::Arc;

use admit_core::{NumberId, Policy, PortfolioId, PortfolioStatus, ScopeKey, ScopeStatus, Ts};

use crate::app::ShardApp;
use crate::error::{ApiError, RETRY_RAFT_MS};
use crate::routing::request::ReqInfo;
use crate::routing::Routing;
use crate::wire::{unexpected, NodeReq, NodeResp, ReadReq, ShardItem, SweepItem, SweepReq};

/// A portfolio's status on one shard.
#[derive(Debug, Clone)]
pub(crate) struct ShardPortfolio {
    pub shard: u32,
    pub status: PortfolioStatus,
}

#[derive(Debug)]
pub(crate) struct Reads {
    routing: Arc<Routing>,
}

impl Reads {
    pub fn new(routing: Arc<Routing>) -> Reads {
        Reads { routing }
    }

    /// A policy profile by name, as the state machine holds it (every shard
    /// holds every profile: a shard led here answers, else shard 0's leader).
    pub async fn policy(&self, name: &str) -> Result<Arc<Policy>, ApiError> {
        let me = self.routing.raft.node_id();
        let shard = (0..self.routing.shards())
            .find(|s| self.routing.raft.leader(*s) == Some(me))
            .unwrap_or(0);
        let read = ReadReq::Policy {
            name: name.to_owned(),
        };
        match self.on_leader(shard, read).await? {
            NodeResp::Policy(Some(p)) => Ok(Arc::new(p)),
            NodeResp::Policy(None) => Err(ApiError::NotFound(format!(
                "unknown policy profile {name:?}"
            ))),
            other => Err(unexpected(other)),
        }
    }

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
        match self.on_leader(shard, read).await? {
            NodeResp::NumberStatus(s) => Ok(s),
            other => Err(unexpected(other)),
        }
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
        match self.on_leader(shard, read).await? {
            NodeResp::PortfolioStatus(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// The status of a scope, read from its shard's leader.
    pub async fn scope_status(
        &self,
        scope: &ScopeKey,
        now: Ts,
    ) -> Result<Option<ScopeStatus>, ApiError> {
        let shard = self.routing.shard_of(scope);
        Ok(match scope {
            ScopeKey::Number(n) => self.number_status(shard, n, now).await?,
            ScopeKey::Portfolio(p) => self
                .portfolio_status(shard, p, now)
                .await?
                .and_then(|s| s.scopes.into_iter().find(|s| s.scope == *scope)),
        })
    }

    /// A portfolio's status on every shard that knows it.
    pub async fn portfolio_statuses(
        &self,
        id: &PortfolioId,
        now: Ts,
    ) -> Result<Vec<ShardPortfolio>, ApiError> {
        let routing = &self.routing;
        if !routing.clustered() {
            return Ok((0..routing.shards())
                .filter_map(|shard| {
                    let status = routing.reader(shard).portfolio_status(id, now)?;
                    Some(ShardPortfolio { shard, status })
                })
                .collect());
        }
        let items = routing
            .sweep_all(SweepReq::Portfolio {
                id: id.clone(),
                now,
            })
            .await?;
        Ok(items
            .into_iter()
            .filter_map(|ShardItem { shard, item }| match item {
                SweepItem::Portfolio(Some(status)) => Some(ShardPortfolio { shard, status }),
                _ => None,
            })
            .collect())
    }

    /// Every scope's status (all shards).
    pub async fn list_scopes(&self, now: Ts) -> Result<Vec<ScopeStatus>, ApiError> {
        let routing = &self.routing;
        if !routing.clustered() {
            return Ok((0..routing.shards())
                .flat_map(|s| routing.reader(s).list_by_headroom(now))
                .collect());
        }
        let items = routing.sweep_all(SweepReq::Scopes { now }).await?;
        Ok(items
            .into_iter()
            .flat_map(|it| match it.item {
                SweepItem::Scopes(v) => v,
                _ => Vec::new(),
            })
            .collect())
    }

    /// The number registered with these display digits, on any shard: each
    /// shard's leader answers from its applied state (a number's shard
    /// follows from its id, not from its display digits), and the latest
    /// registration of the digits wins.
    ///
    /// A node of an older build does not know this question (mid-upgrade):
    /// its shards count as not holding the digits, and when no other shard
    /// does the answer is [`ApiError::UnknownKind`], so that the caller can
    /// tell "not found" from "not asked everywhere" (the webhook then falls
    /// back to its node-local index).
    pub async fn number_by_display(&self, digits: &str) -> Result<Option<NumberId>, ApiError> {
        let routing = &self.routing;
        let mut unknown_at = Vec::new();
        let found: Vec<(NumberId, Ts)> = if !routing.clustered() {
            (0..routing.shards())
                .filter_map(|s| routing.reader(s).number_by_display(digits))
                .collect()
        } else {
            let q = SweepReq::Display {
                digits: digits.to_owned(),
            };
            let p = routing.sweep_known(q).await?;
            unknown_at = p.unknown_at;
            p.items
                .into_iter()
                .filter_map(|it| match it.item {
                    SweepItem::Display(d) => d,
                    _ => None,
                })
                .collect()
        };
        let latest = found
            .into_iter()
            .max_by_key(|(n, at)| (*at, *n))
            .map(|(n, _)| n);
        match latest {
            None if !unknown_at.is_empty() => Err(ApiError::UnknownKind(format!(
                "display number lookup: nodes {unknown_at:?} run a build without it"
            ))),
            found => Ok(found),
        }
    }

    /// A read of one shard's state, served by the shard's leader (here, or
    /// relayed to it).
    pub(crate) async fn on_leader(&self, shard: u32, read: ReadReq) -> Result<NodeResp, ApiError> {
        let remote = NodeReq::Read {
            shard,
            read: read.clone(),
        };
        let local = || self.here(shard, &read);
        self.routing.on_leader(shard, true, local, remote).await
    }

    /// Serves a read from this node's replica of the shard, once it is sure
    /// to lead it (like a write: a leader cut off from the others must not
    /// serve its stale state; issue 11, item 9).
    async fn here(&self, shard: u32, read: &ReadReq) -> Result<NodeResp, ApiError> {
        self.confirm_lead(shard).await?;
        let reader = self.routing.reader(shard);
        // on a clock behind the engine's, state would show as it was
        let at = |now: &Ts| (*now).max(reader.engine_now());
        Ok(match read {
            ReadReq::NumberStatus { number, now } => {
                NodeResp::NumberStatus(reader.number_status(number, at(now)))
            }
            ReadReq::PortfolioStatus { id, now } => {
                NodeResp::PortfolioStatus(reader.portfolio_status(id, at(now)))
            }
            ReadReq::Policy { name } => {
                let n = name.clone();
                let p = self
                    .routing
                    .raft
                    .with_app(shard, move |a: &ShardApp| a.engine().policy(&n))
                    .await?;
                NodeResp::Policy(p.map(|p| (*p).clone()))
            }
        })
    }

    /// Whether this node may answer from its replica of `shard`: it leads
    /// with a lease, or a quorum confirms it within a lease (a linearizable
    /// read). A cut-off leader answers UNAVAILABLE, as a write would.
    async fn confirm_lead(&self, shard: u32) -> Result<(), ApiError> {
        let raft = &self.routing.raft;
        if raft.is_leader_with_lease(shard) {
            return Ok(());
        }
        let wait = raft.lease().min(ReqInfo::current().left());
        // boxed: the read path's future is deep enough already
        let confirm = Box::pin(raft.ensure_linearizable(shard));
        match tokio::time::timeout(wait, confirm).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ApiError::unavailable(
                format!("this node cannot confirm it leads shard {shard} (no quorum within a lease); retry"),
                RETRY_RAFT_MS,
            )),
        }
    }
}
