//! `admit.internal.node.NodeRpc`: requests relayed by other nodes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

use crate::ctx::Ctx;
use crate::forward::{self, pb, NodeReq, ReqInfo};

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
        let req: NodeReq = forward::decode(&frame.body).map_err(Status::from)?;
        let info = ReqInfo {
            deadline: Instant::now() + Duration::from_millis(frame.deadline_ms),
            hops: frame.hops,
        };
        let env = forward::scoped_relay(info, self.ctx.serve_relayed(req)).await;
        Ok(Response::new(pb::NodeFrame {
            body: forward::encode(&env).map_err(Status::from)?,
            hops: frame.hops,
            deadline_ms: 0,
        }))
    }
}
