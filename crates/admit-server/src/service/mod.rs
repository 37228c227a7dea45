//! The gRPC services. Each handler decodes its request ([`crate::convert`]),
//! calls the admission path, reads or routing ([`crate::ctx::Ctx`]) and
//! encodes the answer; the public handlers enter through [`handle`], which
//! also checks the caller's scope and grant (`guard`), writes the audit log
//! and records the call's metrics.

use std::future::Future;
use std::pin::Pin;

use admit_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::auth::{audit, Authenticated};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::routing::request;
use crate::telemetry;
use tracing::Instrument;

pub mod admin;
pub mod admit;
pub mod clock;
pub mod cluster;
mod guard;
pub mod node;

pub(crate) use guard::Guarded;
use guard::Need;

/// The entry of every public handler: runs `body` with the request's
/// deadline and hop count, once self-protection let the request in (R8.4,
/// the quota charged to the authenticated caller when auth is on) and the
/// caller holds the method's scope and grant; writes admin and cluster
/// calls to the audit log; maps the error to a gRPC status.
///
/// It also runs the request in an `rpc` span (the handlers record the number
/// or portfolio, routing the shard, sends their reason) and records its
/// latency per method and outcome code (docs/metrics.md).
pub(crate) fn handle<'a, T: Guarded, R: 'a>(
    ctx: &'a Ctx,
    request: &'a Request<T>,
    body: impl Future<Output = Result<R, ApiError>> + Send + 'a,
) -> impl Future<Output = Result<Response<R>, Status>> + 'a {
    // The body holds the whole admission path's state (kilobytes). Boxed
    // once here, the layers below (span, task-locals, audit, protection)
    // wrap a pointer: unboxed, each wrap copied the body, and those copies
    // were the largest cost of a fast-path admit (docs/benchmarks.md).
    handle_boxed(ctx, request, Box::pin(body))
}

/// A body boxed by [`handle`].
type Body<'a, R> = Pin<Box<dyn Future<Output = Result<R, ApiError>> + Send + 'a>>;

async fn handle_boxed<T: Guarded, R>(
    ctx: &Ctx,
    request: &Request<T>,
    body: Body<'_, R>,
) -> Result<Response<R>, Status> {
    let method = method_of::<T>();
    // The span's fields are formatted on every record while its level is
    // enabled: the hot send path gets a debug span (free at the default
    // level), changes (audited, rare) an info one, so their log lines
    // carry the number or portfolio at the default level.
    macro_rules! rpc_span {
        ($mac:ident) => {
            tracing::$mac!(
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
            )
        };
    }
    // what the request needs of its caller, worked out once (a batch names
    // a number per item): the span's level, the audit and the grant check
    let need = request.get_ref().need();
    let audited = need.audited();
    let span = if audited {
        rpc_span!(info_span)
    } else {
        rpc_span!(debug_span)
    };
    let started = std::time::Instant::now();
    let r = entry(ctx, request, need, audited, body)
        .instrument(span.clone())
        .await;
    let code = r.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
    telemetry::rpc_done(method, code, started.elapsed().as_secs_f64());
    span.in_scope(|| tracing::debug!(code = telemetry::code_name(code), "rpc done"));
    r
}

/// [`handle`] without its span and metrics: authentication, protection,
/// the scope check, the body and the audit line.
async fn entry<T: Guarded, R>(
    ctx: &Ctx,
    request: &Request<T>,
    need: Need,
    audited: bool,
    body: Body<'_, R>,
) -> Result<Response<R>, Status> {
    let caller = match &ctx.access.auth {
        None => None,
        Some(auth) => match request.extensions().get::<Authenticated>() {
            Some(a) => Some(a.0.clone()),
            // the layer let an anonymous request through: allowed only
            // when credentials are optional
            None if auth.required() => {
                return Err(ApiError::Unauthenticated("no credentials".into()).into_status())
            }
            None => None,
        },
    };
    let who = caller.as_deref().map_or("anonymous", |c| c.name.as_str());
    // an audited change carries its caller into the log: each replica's
    // audit line names it (`app`)
    let body = audit::acting(audited.then_some(who), body);
    let r = request::scoped(request.metadata(), async {
        let _permit = ctx
            .protect
            .enter(request, caller.as_deref().map(|c| c.name.as_str()))?;
        if let Some(c) = &caller {
            guard::check(ctx, c, T::METHOD, need).await?;
        }
        Ok(Response::new(body.await?))
    })
    .await;
    if audited {
        let summary = audit::summary(request.get_ref());
        audit::call(who, T::METHOD, &summary, r.as_ref().map(|_| ()));
    }
    r.map_err(|e| ctx.routing.for_caller(e).into_status())
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
