//! Node-to-node calls: serving a request another node relayed here (within
//! its deadline and hop count), and setting every node's test clock.

use admit_core::Ts;
use futures_util::future::join_all;

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
        NodeReq::Sweep { sweep } => (None, Ok(NodeResp::Sweep(routing.sweep_here(&sweep)))),
        // a node already past `now` stays there: time never goes back
        NodeReq::SetClock { now } => (
            None,
            match routing.clock.set(now) {
                Ok(t) => Ok(NodeResp::Clock(t)),
                Err(ClockError::Backwards { current, .. }) => Ok(NodeResp::Clock(Ts(current))),
                Err(e) => Err(ApiError::FailedPrecondition(e.to_string())),
            },
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
    Ok(())
}
