//! What each public method needs of its caller (a scope, and for `send` the
//! numbers it acts on) and the one check of it, run by
//! [`super::handle`] before the handler's body. A number outside the grant
//! is PERMISSION_DENIED whether or not it is registered, so a caller cannot
//! probe other callers' numbers. Input that does not parse is left to the
//! handler, which names the field (INVALID_ARGUMENT).

use admit_core::{AdmissionId, NumberId, PortfolioId, ScopeKey};
use admit_proto::v1 as pb;

use crate::auth::{Caller, Scope};
use crate::ctx::Ctx;
use crate::error::ApiError;

/// What one request needs.
#[derive(Debug)]
pub(crate) enum Need {
    /// `read`, `admin` or `cluster`.
    Scope(Scope),
    /// `send`, on these numbers and admissions.
    Send {
        numbers: Vec<NumberId>,
        admissions: Vec<AdmissionId>,
    },
}

/// A public request: its method's name and what it needs.
pub(crate) trait Guarded: std::fmt::Debug {
    const METHOD: &'static str;
    fn need(&self) -> Need;
}

impl Need {
    /// Changes are written to the audit log.
    pub(crate) fn audited(&self) -> bool {
        matches!(self, Need::Scope(Scope::Admin | Scope::Cluster))
    }
}

fn number(s: &str) -> Option<NumberId> {
    NumberId::parse("number_id", s).ok()
}

/// The engine's name inside a sealed admission id (the tag is checked by the
/// handler).
fn admission(s: &str) -> Option<AdmissionId> {
    let name = s.rsplit_once('.').map_or(s, |(n, _)| n);
    AdmissionId::parse("admission_id", name).ok()
}

fn send(numbers: impl IntoIterator<Item = Option<NumberId>>) -> Need {
    Need::Send {
        numbers: numbers.into_iter().flatten().collect(),
        admissions: Vec::new(),
    }
}

macro_rules! scoped {
    ($($t:ident => $m:literal, $s:ident;)*) => {$(
        impl Guarded for pb::$t {
            const METHOD: &'static str = $m;
            fn need(&self) -> Need {
                Need::Scope(Scope::$s)
            }
        }
    )*};
}

scoped! {
    RegisterNumberRequest => "Admin.RegisterNumber", Admin;
    RegisterPortfolioRequest => "Admin.RegisterPortfolio", Admin;
    ApplyEventRequest => "Admin.ApplyEvent", Admin;
    SetPolicyRequest => "Admin.SetPolicy", Admin;
    GetStatusRequest => "Admin.GetStatus", Read;
    ListNumbersRequest => "Admin.ListNumbers", Read;
    GetPolicyRequest => "Admin.GetPolicy", Read;
    ListNodesRequest => "Cluster.ListNodes", Read;
    ListShardsRequest => "Cluster.ListShards", Read;
    AddNodeRequest => "Cluster.AddNode", Cluster;
    RemoveNodeRequest => "Cluster.RemoveNode", Cluster;
    SetClockRequest => "TestClock.SetClock", Admin;
    AdvanceClockRequest => "TestClock.AdvanceClock", Admin;
    GetClockRequest => "TestClock.GetClock", Read;
}

impl Guarded for pb::AdmitRequest {
    const METHOD: &'static str = "AdmitSend.Admit";
    fn need(&self) -> Need {
        send([self.send.as_ref().and_then(|s| number(&s.number_id))])
    }
}

/// A batch with any number outside the grant is refused whole
/// (docs/security.md): nothing in it is decided.
impl Guarded for pb::AdmitBatchRequest {
    const METHOD: &'static str = "AdmitSend.AdmitBatch";
    fn need(&self) -> Need {
        // a campaign's batch names one number in every item: each run of
        // one number's text is parsed (and checked) once
        let mut last: Option<&str> = None;
        send(self.sends.iter().filter_map(|s| {
            let text = s.number_id.as_str();
            (last.replace(text) != Some(text)).then(|| number(text))
        }))
    }
}

impl Guarded for pb::ReleaseRequest {
    const METHOD: &'static str = "AdmitSend.Release";
    fn need(&self) -> Need {
        Need::Send {
            numbers: Vec::new(),
            admissions: admission(&self.admission_id).into_iter().collect(),
        }
    }
}

impl Guarded for pb::RecordInboundRequest {
    const METHOD: &'static str = "AdmitSend.RecordInbound";
    fn need(&self) -> Need {
        send([number(&self.number_id)])
    }
}

impl Guarded for pb::ReportOutcomeRequest {
    const METHOD: &'static str = "AdmitSend.ReportOutcome";
    fn need(&self) -> Need {
        Need::Send {
            numbers: number(&self.number_id).into_iter().collect(),
            admissions: admission(&self.admission_id).into_iter().collect(),
        }
    }
}

/// PERMISSION_DENIED unless `caller` may make a request needing `need`.
pub(crate) async fn check(
    ctx: &Ctx,
    caller: &Caller,
    method: &str,
    need: Need,
) -> Result<(), ApiError> {
    match need {
        Need::Scope(s) => caller.require(s, method),
        Need::Send {
            numbers,
            admissions,
        } => {
            caller.require(Scope::Send, method)?;
            for n in &numbers {
                number_granted(ctx, caller, n).await?;
            }
            for a in &admissions {
                match &a.scope {
                    ScopeKey::Number(n) => number_granted(ctx, caller, n).await?,
                    ScopeKey::Portfolio(p) if caller.grants_portfolio(p) => {}
                    ScopeKey::Portfolio(p) => {
                        return Err(ApiError::PermissionDenied(format!(
                            "portfolio {p} is not granted to caller {:?}",
                            caller.name
                        )))
                    }
                }
            }
            Ok(())
        }
    }
}

async fn number_granted(ctx: &Ctx, caller: &Caller, n: &NumberId) -> Result<(), ApiError> {
    if caller.grants_number(n) {
        return Ok(());
    }
    if caller.has_portfolios() {
        if let Some(p) = portfolio_of(ctx, n).await? {
            if caller.grants_portfolio(&p) {
                return Ok(());
            }
        }
    }
    Err(ApiError::PermissionDenied(format!(
        "number {n} is not granted to caller {:?}",
        caller.name
    )))
}

/// The portfolio a number is registered under (`None`: none, or not
/// registered). Errors other than "unknown" (no leader, ...) are passed on.
async fn portfolio_of(ctx: &Ctx, n: &NumberId) -> Result<Option<PortfolioId>, ApiError> {
    if let Some(p) = ctx.access.portfolios.get(n) {
        return Ok(Some(p.clone()));
    }
    let found = look_up_portfolio(ctx, n).await?;
    if let Some(p) = &found {
        ctx.access.portfolios.insert(*n, p.clone());
    }
    Ok(found)
}

async fn look_up_portfolio(ctx: &Ctx, n: &NumberId) -> Result<Option<PortfolioId>, ApiError> {
    let at = match ctx.routing.locate(n).await {
        Ok(at) => at,
        Err(ApiError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if let ScopeKey::Portfolio(p) = at.scope {
        return Ok(Some(p));
    }
    let status = ctx.reads.number_status(at.shard, n, ctx.now()).await?;
    Ok(status
        .and_then(|s| s.numbers.into_iter().find(|v| v.number == *n))
        .and_then(|v| v.portfolio))
}
