//! The gRPC services. Each handler decodes its request ([`crate::convert`]),
//! calls the admission path, reads or routing ([`crate::ctx::Ctx`]) and
//! encodes the answer; the public handlers enter through [`handle`].

use std::future::Future;

use admit_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::routing::request;

pub mod admin;
pub mod admit;
pub mod clock;
pub mod cluster;
pub mod node;

/// The entry of every public AdmitSend and Admin handler: runs `body` with
/// the request's deadline and hop count, once self-protection let the
/// request in (R8.4), and maps its error to a gRPC status.
pub(crate) async fn handle<T, R>(
    ctx: &Ctx,
    request: &Request<T>,
    body: impl Future<Output = Result<R, ApiError>>,
) -> Result<Response<R>, Status> {
    request::scoped(request.metadata(), async {
        let _permit = ctx.protect.enter(request)?;
        Ok(Response::new(body.await?))
    })
    .await
    .map_err(|e| ctx.routing.for_caller(e).into_status())
}

/// The shard's leader as this node knows it, for an answer's `leader_hint`.
pub(crate) fn leader_hint(ctx: &Ctx, shard: u32) -> Option<pb::NodeRef> {
    let n = ctx.routing.leader_ref(shard)?;
    Some(pb::NodeRef {
        node_id: n.id,
        address: ctx.routing.api_addr(n.id).unwrap_or(n.addr),
    })
}
