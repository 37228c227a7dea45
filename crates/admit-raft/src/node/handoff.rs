//! Leadership hand-off: on request, and for every group this node leads
//! before it shuts down.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use openraft::{RaftMetrics, ServerState};

use super::RaftNode;
use crate::sm::GroupRaft;
use crate::types::C;
use crate::{AdminError, App};

impl<A: App> RaftNode<A> {
    /// Ask the leader of `shard` (this node) to hand leadership to `to`.
    pub async fn transfer_leader(&self, shard: u32, to: u64) -> Result<(), AdminError> {
        let raft = self.group(shard).ok_or(AdminError::NoSuchShard(shard))?;
        self.fence_transfer(shard);
        raft.trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| AdminError::Raft(e.to_string()))
    }

    /// Hand every group this node leads (with other voters) to the most
    /// up-to-date other voter that acknowledged recently; wait for it.
    pub(super) async fn handoff(&self) {
        let me = self.node_id();
        let timeout = self.inner.config.handoff_timeout;
        if timeout.is_zero() {
            return;
        }
        let lease = self.inner.lease;
        let app =
            futures_util::future::join_all(self.inner.groups.iter().enumerate().map(|(g, r)| {
                handoff_group(r, me, lease, timeout, move || self.fence_transfer(g as u32))
            }));
        let meta = handoff_group(&self.inner.meta, me, lease, timeout, || {});
        let (app, meta) = tokio::join!(app, meta);
        let tried = app.iter().chain([&meta]).filter(|r| r.is_some()).count();
        let done = app
            .iter()
            .chain([&meta])
            .filter(|r| **r == Some(true))
            .count();
        if tried > 0 {
            tracing::info!(tried, done, "leadership handed over before shutdown");
        }
    }
}

/// Transfer the leadership of `raft` away from `me` if it leads with other
/// voters; `Some(handed over within timeout)`, `None` if nothing to do.
pub(super) async fn handoff_group<X: App>(
    raft: &GroupRaft<X>,
    me: u64,
    lease: Duration,
    timeout: Duration,
    fence: impl FnOnce(),
) -> Option<bool> {
    let leads =
        |m: &RaftMetrics<C<X>>| m.state == ServerState::Leader && m.current_leader == Some(me);
    {
        let m = raft.metrics();
        let m = m.borrow_watched();
        if !leads(&m)
            || m.membership_config
                .membership()
                .voter_ids()
                .all(|n| n == me)
        {
            return None;
        }
    }
    // A group that was quiesced was woken just before (a heartbeat is on
    // its way): give the voters a lease to acknowledge it.
    let fresh_voter = |m: &RaftMetrics<C<X>>| {
        let hb = m.heartbeat.clone().unwrap_or_default();
        m.membership_config
            .membership()
            .voter_ids()
            .filter(|n| *n != me)
            .any(|n| {
                hb.get(&n)
                    .cloned()
                    .flatten()
                    .is_some_and(|t| t.into_inner().elapsed() < lease)
            })
    };
    let _ = raft
        .wait(Some(lease))
        .metrics(|m| !leads(m) || fresh_voter(m), "a voter acknowledged")
        .await;
    let m = raft.metrics().borrow_watched().clone();
    if !leads(&m) {
        return None;
    }
    let repl = m.replication.clone().unwrap_or_default();
    let hb = m.heartbeat.clone().unwrap_or_default();
    let to = m
        .membership_config
        .membership()
        .voter_ids()
        .filter(|n| *n != me)
        .filter(|n| {
            hb.get(n)
                .cloned()
                .flatten()
                .is_some_and(|t| t.into_inner().elapsed() < lease)
        })
        .max_by_key(|n| (repl.get(n).cloned().flatten().map(|l| l.index), *n))?;
    fence();
    raft.trigger().transfer_leader(to).await.ok()?;
    Some(
        raft.wait(Some(timeout))
            .metrics(|m| m.current_leader != Some(me), "leadership handed over")
            .await
            .is_ok(),
    )
}
