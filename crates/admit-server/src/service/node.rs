//! `admit.internal.node.NodeRpc`: requests relayed by other nodes.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::ctx::Ctx;
use crate::relay;
use crate::routing::request::{self, ReqInfo};
use crate::wire::{self, pb, NodeReq};

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
        let req: NodeReq = wire::decode(&frame.body)?;
        let info = ReqInfo::relayed(frame.deadline_ms, frame.hops);
        let env = request::scoped_relay(info, relay::serve(&self.ctx, req)).await;
        Ok(Response::new(pb::NodeFrame {
            body: wire::encode(&env)?,
            hops: frame.hops,
            deadline_ms: 0,
        }))
    }
}
