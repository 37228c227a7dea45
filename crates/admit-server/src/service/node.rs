//! `admit.internal.node.NodeRpc`: requests relayed by other nodes.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::relay;
use crate::routing::request::{self, ReqInfo};
use crate::wire::{self, pb, Envelope, NodeReq};

#[derive(Debug, Clone)]
pub struct NodeService {
    pub(crate) ctx: Arc<Ctx>,
}

#[tonic::async_trait]
impl pb::node_rpc_server::NodeRpc for NodeService {
    async fn call(
        &self,
        request: Request<pb::NodeFrame>,
    ) -> Result<Response<pb::NodeFrame>, Status> {
        let frame = request.into_inner();
        let req: NodeReq = match wire::decode(&frame.body) {
            Ok(r) => r,
            // a newer node's request (rolling upgrade): said so, distinctly
            // from damaged bytes, so that the sender can do without it
            Err(_) if wire::unknown_kind(&frame.body) => {
                return Err(ApiError::UnknownKind(
                    "this node's build does not know it (an older build during an upgrade)".into(),
                )
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        let info = ReqInfo::relayed(frame.deadline_ms, frame.hops);
        // relayed work takes an in-flight permit like an API call; the
        // clock messages are the nodes' own upkeep and always answered
        let permit = match req {
            NodeReq::SetClock { .. } | NodeReq::ReadClock => None,
            _ => match self.ctx.protect.enter_relayed() {
                Ok(p) => Some(p),
                Err(e) => return reply(frame.hops, &Envelope::refused(e)),
            },
        };
        let env = request::scoped_relay(info, relay::serve(&self.ctx, req)).await;
        drop(permit);
        reply(frame.hops, &env)
    }
}

fn reply(hops: u32, env: &Envelope) -> Result<Response<pb::NodeFrame>, Status> {
    Ok(Response::new(pb::NodeFrame {
        body: wire::encode(env)?,
        hops,
        deadline_ms: 0,
    }))
}
