//! Node-to-node calls: serving a request another node relayed here (within
//! its deadline and hop count), setting every node's test clock, and
//! sampling the other nodes' clocks for the bound on stamping
//! (`crate::skew`): carried on the Raft layer's liveness answers, or by a
//! call of its own to a peer whose answers do not carry them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use admit_core::Ts;
use futures_util::future::join_all;
use tokio::sync::watch;

use crate::auth::audit;
use crate::clock::ClockError;
use crate::ctx::Ctx;
use crate::error::{ApiError, RETRY_PEER_MS};
use crate::routing::request::ReqInfo;
use crate::routing::Routing;
use crate::wire::{Envelope, NodeReq, NodeResp};

/// Serves a request relayed by another node, as if this node were its entry
/// node (but it relays at most once more, see [`crate::routing`]).
pub(crate) async fn serve(ctx: &Ctx, req: NodeReq) -> Envelope {
    let routing = &ctx.routing;
    let (shard, result) = match req {
        NodeReq::Write { shard, cmd } => (
            Some(shard),
            routing.write(shard, *cmd).await.map(NodeResp::Output),
        ),
        NodeReq::WriteFor { shard, cmd, by } => (
            Some(shard),
            audit::acting(Some(by.as_str()), routing.write(shard, *cmd))
                .await
                .map(NodeResp::Output),
        ),
        NodeReq::Admit { mut reqs } => {
            if reqs.len() == 1 {
                let req = reqs.remove(0);
                let shard = routing.scope_of(&req.number).map(|s| routing.shard_of(&s));
                (
                    shard,
                    ctx.admission
                        .admit(req)
                        .await
                        .map(|a| NodeResp::Admitted(vec![Ok(a.decided)])),
                )
            } else {
                let out = ctx
                    .admission
                    .admit_many(reqs.into_iter().map(Ok).collect())
                    .await;
                (None, Ok(NodeResp::Admitted(out.results)))
            }
        }
        NodeReq::Read { shard, read } => (Some(shard), ctx.reads.on_leader(shard, read).await),
        NodeReq::Sweep { sweep } => (None, Ok(NodeResp::Sweep(routing.sweep_here(&sweep).await))),
        // a node already past `now` stays there: time never goes back
        NodeReq::SetClock { now } => (
            None,
            match routing.clock.set(now) {
                Ok(t) => {
                    // the entry node set every node there: the others too
                    routing.skew.raise_all(now);
                    Ok(NodeResp::Clock(t))
                }
                Err(ClockError::Backwards { current, .. }) => Ok(NodeResp::Clock(Ts(current))),
                Err(e) => Err(ApiError::FailedPrecondition(e.to_string())),
            },
        ),
        NodeReq::ReadClock => (None, Ok(NodeResp::Clock(routing.clock_now()))),
        // the node service unpacks batches; one inside another is refused
        NodeReq::Batch { .. } => (
            None,
            Err(ApiError::invalid("items", "a batch inside a batch")),
        ),
    };
    Envelope {
        result,
        served_by: shard.and_then(|s| routing.leader_ref(s)),
    }
}

/// Test mode in a cluster: moves every other node's clock to `now`, so
/// that whichever node leads a shard stamps its commands on the same
/// clock. An unreachable node or one not in test mode is an error (this
/// node's clock is already set; setting it again is harmless).
pub(crate) async fn set_clock_everywhere(routing: &Routing, now: Ts) -> Result<(), ApiError> {
    if !routing.clustered() {
        return Ok(());
    }
    let info = ReqInfo::current();
    let req = NodeReq::SetClock { now };
    let calls = routing.other_nodes().into_iter().map(|node| {
        let req = &req;
        async move { (node.id, routing.peers.call(&node, req, info).await) }
    });
    for (id, r) in join_all(calls).await {
        if let Err(e) = r.and_then(|env| env.result) {
            return Err(ApiError::unavailable(
                format!("node {id} did not take the clock: {e}"),
                RETRY_PEER_MS,
            ));
        }
    }
    routing.skew.raise_all(now);
    Ok(())
}

/// How long one clock sample may take (a slower answer says little).
const SAMPLE_WAIT: Duration = Duration::from_secs(1);

/// A peer with a clock sample carried on liveness younger than this is
/// not asked with a call of its own (liveness leaves several times per
/// [`crate::skew::SAMPLE_EVERY`]).
const CARRIED_FRESH: Duration = Duration::from_secs(1);

/// The service clock the Raft layer's liveness answers carry, and where
/// the samples they bring go (`crate::skew`).
struct CarriedClock(Weak<Ctx>);

impl admit_raft::ServiceClock for CarriedClock {
    fn now_ms(&self) -> Option<u64> {
        self.0.upgrade().map(|ctx| ctx.routing.clock_now().ms())
    }

    fn sampled(&self, node: u64, clock_ms: u64, rtt: Duration, at: Instant) {
        if let Some(ctx) = self.0.upgrade() {
            ctx.routing
                .skew
                .record_carried(node, Ts(clock_ms), rtt, at.into());
        }
    }
}

/// Lets the Raft layer's liveness carry this node's service clock and
/// bring the others' (before [`watch_clocks`] starts).
pub(crate) fn carry_clocks(ctx: &Arc<Ctx>) {
    ctx.routing
        .raft
        .set_service_clock(Arc::new(CarriedClock(Arc::downgrade(ctx))));
}

/// Samples every other node's service clock every
/// [`crate::skew::SAMPLE_EVERY`] (by a call to the peers whose samples do
/// not arrive on liveness), publishes the skew, and, while this
/// node's clock is beyond the bound, hands the shards it leads to another
/// voter (it would refuse their writes anyway). While every group here is
/// quiesced and liveness brings every sample, only every
/// [`crate::quiet::QUIET_CLOCK_EVERY`] or when a group wakes.
pub(crate) async fn watch_clocks(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let routing = &ctx.routing;
    let mut interval = tokio::time::interval(crate::skew::SAMPLE_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut handed: HashMap<u32, Instant> = HashMap::new();
    let mut quiet = routing.raft.quiet();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        routing.wakeups.clocks.fetch_add(1, Ordering::Relaxed);
        if !routing.clustered() {
            continue;
        }
        let nodes = routing.other_nodes();
        let ids: Vec<u64> = nodes.iter().map(|n| n.id).collect();
        routing.skew.retain(|id| ids.contains(&id));
        let info = ReqInfo::current().within(SAMPLE_WAIT);
        // peers whose liveness answers carry their clock need no call
        let uncarried: Vec<_> = nodes
            .into_iter()
            .filter(|n| !routing.skew.carried_within(n.id, CARRIED_FRESH))
            .collect();
        let all_carried = uncarried.is_empty();
        let calls = uncarried.into_iter().map(|node| async move {
            routing.skew.unary_calls.fetch_add(1, Ordering::Relaxed);
            let sent = Instant::now();
            let r = routing.peers.call(&node, &NodeReq::ReadClock, info).await;
            (node.id, sent.elapsed(), r)
        });
        for (id, rtt, r) in join_all(calls).await {
            if let Ok(Ok(NodeResp::Clock(theirs))) = r.map(|env| env.result) {
                routing
                    .skew
                    .record(id, theirs, rtt, tokio::time::Instant::now());
            }
        }
        // after this round's samples: a first round leaves no moment in
        // which the node expects samples it has not asked for
        routing.skew.set_peers(&ids);
        let m = routing.skew.measure(routing.clock_now());
        crate::telemetry::clock_skew(m.skew_ms, &m.peers);
        let beyond = m.skew_ms > routing.skew.max_offset().as_millis() as i64;
        if beyond {
            give_away_leadership(routing, &mut handed).await;
        }
        // quiet: nothing to call, nothing to hand over; the next round
        // after the longer period, or at once when a group wakes
        if all_carried && !beyond && *quiet.borrow_and_update() {
            let rest = crate::quiet::QUIET_CLOCK_EVERY.saturating_sub(crate::skew::SAMPLE_EVERY);
            if !crate::quiet::while_quiet(&mut quiet, Some(rest), &mut stop).await {
                return;
            }
        }
    }
}

/// Asks another voter of every shard led here to take it over (once per
/// lease per shard: a transfer takes an election).
async fn give_away_leadership(routing: &Routing, handed: &mut HashMap<u32, Instant>) {
    let me = routing.raft.node_id();
    let lease = routing.raft.lease();
    for shard in 0..routing.shards() {
        if routing.raft.leader(shard) != Some(me)
            || handed.get(&shard).is_some_and(|t| t.elapsed() < lease)
        {
            continue;
        }
        let Some(to) = routing.raft.voters(shard).into_iter().find(|v| *v != me) else {
            continue;
        };
        handed.insert(shard, Instant::now());
        tracing::warn!(
            shard,
            to,
            "this node's clock is beyond the bound: handing the shard's leadership over"
        );
        if let Err(e) = routing.raft.transfer_leader(shard, to).await {
            tracing::debug!(shard, error = %e, "leadership transfer not started");
        }
    }
}
