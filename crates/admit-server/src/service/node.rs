//! `admit.internal.node.NodeRpc`: requests relayed by other nodes.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use futures_util::future::join_all;
use tonic::{Request, Response, Status};

use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::relay;
use crate::routing::request::{self, ReqInfo};
use crate::wire::{self, pb, BatchItem, Envelope, NodeReq, NodeResp};

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
        let env = self.frame(&frame).await?;
        reply(frame.hops, &env)
    }
}

/// Relayed requests that come on the node-pair stream
/// ([`admit_raft::RaftNode::app_call`]): the same frame as a `NodeRpc.Call`
/// carries, prost-encoded, served the same way; the answer is the encoded
/// envelope. The stream passed the peer port's check as the call does.
pub(crate) struct StreamRelays {
    /// Weak: the Raft node holds this, and the context holds the node.
    pub(crate) ctx: Weak<Ctx>,
}

impl admit_raft::AppFrames for StreamRelays {
    fn serve(
        &self,
        payload: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, Status>> + Send>> {
        let ctx = self.ctx.upgrade();
        Box::pin(async move {
            let ctx = ctx.ok_or_else(|| Status::unavailable("node stopping"))?;
            let frame = <pb::NodeFrame as prost::Message>::decode(payload.as_slice())
                .map_err(|e| Status::invalid_argument(format!("relayed frame: {e}")))?;
            let env = NodeService { ctx }.frame(&frame).await?;
            Ok(wire::encode(&env)?)
        })
    }
}

impl NodeService {
    /// Serves one relayed frame: a request, or a batch of them.
    async fn frame(&self, frame: &pb::NodeFrame) -> Result<Envelope, Status> {
        let req = decode(&frame.body)?;
        if let NodeReq::Batch { items } = req {
            // the items run side by side, as the separate calls they replace
            let answers = join_all(items.into_iter().map(|i| self.item(i))).await;
            return Ok(Envelope {
                result: Ok(NodeResp::Batch(answers)),
                served_by: None,
            });
        }
        Ok(self.serve(req, frame.deadline_ms, frame.hops).await)
    }

    /// Serves one relayed request within its deadline and hop count.
    async fn serve(&self, req: NodeReq, deadline_ms: u64, hops: u32) -> Envelope {
        let info = ReqInfo::relayed(deadline_ms, hops);
        // relayed work takes an in-flight permit like an API call; the
        // clock messages are the nodes' own upkeep and always answered
        let permit = match req {
            NodeReq::SetClock { .. } | NodeReq::ReadClock => None,
            _ => match self.ctx.protect.enter_relayed() {
                Ok(p) => Some(p),
                Err(e) => return Envelope::refused(e),
            },
        };
        let env = request::scoped_relay(info, relay::serve(&self.ctx, req)).await;
        drop(permit);
        env
    }

    /// One request of a batch: what the call would have answered alone,
    /// failures to read it included.
    async fn item(&self, item: BatchItem) -> Envelope {
        match decode(&item.body) {
            Ok(NodeReq::Batch { .. }) => {
                Envelope::refused(ApiError::invalid("items", "a batch inside a batch"))
            }
            Ok(req) => self.serve(req, item.deadline_ms, item.hops).await,
            Err(e) => Envelope::refused(e),
        }
    }
}

/// A relayed request's bytes as a request; a kind this build does not know
/// (a newer node's, during a rolling upgrade) is said so, distinctly from
/// damaged bytes, so that the sender can do without it.
fn decode(body: &[u8]) -> Result<NodeReq, ApiError> {
    match wire::decode(body) {
        Ok(r) => Ok(r),
        Err(_) if wire::unknown_kind(body) => Err(ApiError::UnknownKind(
            "this node's build does not know it (an older build during an upgrade)".into(),
        )),
        Err(e) => Err(e),
    }
}

fn reply(hops: u32, env: &Envelope) -> Result<Response<pb::NodeFrame>, Status> {
    Ok(Response::new(pb::NodeFrame {
        body: wire::encode(env)?,
        hops,
        deadline_ms: 0,
    }))
}
