//! The gRPC services. Each handler decodes its request ([`crate::convert`]),
//! calls the admission path, reads or routing ([`crate::ctx::Ctx`]) and
//! encodes the answer; the public handlers enter through [`handle`].

use std::future::Future;

use admit_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::routing::request;
use crate::telemetry;
use tracing::Instrument;

pub mod admin;
pub mod admit;
pub mod clock;
pub mod cluster;
pub mod node;

/// The entry of every public AdmitSend and Admin handler: runs `body` with
/// the request's deadline and hop count, once self-protection let the
/// request in (R8.4), and maps its error to a gRPC status.
///
/// It also runs the request in an `rpc` span (the handlers record the number
/// or portfolio, routing the shard, sends their reason) and records its
/// latency per method and outcome code (docs/metrics.md).
pub(crate) async fn handle<T, R>(
    ctx: &Ctx,
    request: &Request<T>,
    body: impl Future<Output = Result<R, ApiError>>,
) -> Result<Response<R>, Status> {
    let method = method_of::<T>();
    let span = tracing::info_span!(
        "rpc",
        method,
        number = tracing::field::Empty,
        portfolio = tracing::field::Empty,
        shard = tracing::field::Empty,
        reason = tracing::field::Empty,
        items = tracing::field::Empty,
        admission = tracing::field::Empty,
        event_key = tracing::field::Empty,
        code = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let r = request::scoped(request.metadata(), async {
        let _permit = ctx.protect.enter(request)?;
        Ok(Response::new(body.await?))
    })
    .instrument(span.clone())
    .await
    .map_err(|e| ctx.routing.for_caller(e).into_status());
    let code = r.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
    telemetry::rpc_done(method, code, started.elapsed().as_secs_f64());
    span.in_scope(|| tracing::debug!(code = telemetry::code_name(code), "rpc done"));
    r
}

/// The method a request message belongs to: `admit.v1.AdmitBatchRequest`
/// is `AdmitBatch` (each public method has its own `<Method>Request`).
fn method_of<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    let name = name.rsplit("::").next().unwrap_or(name);
    name.strip_suffix("Request").unwrap_or(name)
}

/// The shard's leader as this node knows it, for an answer's `leader_hint`.
pub(crate) fn leader_hint(ctx: &Ctx, shard: u32) -> Option<pb::NodeRef> {
    let n = ctx.routing.leader_ref(shard)?;
    Some(pb::NodeRef {
        node_id: n.id,
        address: ctx.routing.api_addr(n.id).unwrap_or(n.addr),
    })
}
