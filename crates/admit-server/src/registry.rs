//! Registration and platform events across shards: a registration's profile
//! and scope, the shards an event is applied on, a portfolio's restriction
//! passed on to a shard that did not know it, and a portfolio's status
//! gathered from its shards (merged by the core).

use std::sync::Arc;

use admit_core::{
    Command, NumberId, NumberRegistration, Output, PlatformEvent, Policy, PortfolioId,
    PortfolioRegistration, PortfolioStatus, ScopeKey, ScopeKind, Target, Ts,
};
use futures_util::future::join_all;

use crate::convert::{self, EventDest, NumberRegistrationIn};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::reads::ShardPortfolio;
use crate::routing::directory::Resolved;

/// The profile a number or portfolio gets when nothing names one.
const DEFAULT_PROFILE: &str = Policy::DEFAULT_PROFILE;

/// A registered number's profile, from its shard (the default if the shard
/// does not say).
pub(crate) async fn number_profile(
    ctx: &Ctx,
    shard: u32,
    number: &NumberId,
) -> Result<String, ApiError> {
    Ok(ctx
        .reads
        .number_status(shard, number, ctx.now())
        .await?
        .and_then(|s| s.numbers.first().map(|n| n.profile.clone()))
        .unwrap_or_else(|| DEFAULT_PROFILE.into()))
}

/// The profile a portfolio was registered with, from its home shard.
pub(crate) async fn portfolio_profile(
    ctx: &Ctx,
    id: &PortfolioId,
) -> Result<Option<String>, ApiError> {
    let home = ctx.routing.shard_of(&ScopeKey::Portfolio(id.clone()));
    Ok(ctx
        .reads
        .portfolio_status(home, id, ctx.now())
        .await?
        .map(|p| p.profile)
        .filter(|p| !p.is_empty()))
}

/// A portfolio's status, merged from every shard (its numbers may live on
/// many under the seeds profile); NOT_FOUND when no shard knows it.
pub(crate) async fn portfolio_status(
    ctx: &Ctx,
    id: &PortfolioId,
    now: Ts,
) -> Result<PortfolioStatus, ApiError> {
    let home = ctx.routing.shard_of(&ScopeKey::Portfolio(id.clone()));
    let parts = ctx.reads.portfolio_statuses(id, now).await?;
    let parts = parts.into_iter().map(|p| (p.shard == home, p.status));
    PortfolioStatus::merge(id, parts)
        .ok_or_else(|| ApiError::NotFound(format!("unknown portfolio {id}")))
}

/// Section 10: a portfolio's restriction holds for all its numbers, one that joins
/// later included. A restriction reaches only the shards that knew the portfolio
/// when it arrived, so a number's shard that did not gets it from the others.
/// Run on every registration naming a portfolio, so a retry after a failure here
/// completes it.
async fn share_portfolio_restriction(
    ctx: &Ctx,
    p: &PortfolioId,
    shard: u32,
) -> Result<(), ApiError> {
    let statuses = ctx.reads.portfolio_statuses(p, ctx.now()).await?;
    let restricted: Vec<ShardPortfolio> = statuses
        .into_iter()
        .filter(|s| s.status.restricted_until.is_some())
        .collect();
    if restricted.iter().any(|s| s.shard == shard) {
        return Ok(());
    }
    let Some(latest) = restricted
        .into_iter()
        .max_by_key(|s| s.status.restricted_until)
        .map(|s| s.status)
    else {
        return Ok(());
    };
    let cmd = Command::Platform {
        event: PlatformEvent::AccountRestriction {
            target: Target::Portfolio(p.clone()),
            // "until lifted" is said by an event without an end
            until: latest.restricted_until.filter(|t| *t != Ts::UNTIL_LIFTED),
            lifted: false,
            types: latest.restriction_types,
        },
        event_key: None,
    };
    ctx.routing.write(shard, cmd).await?;
    Ok(())
}

fn expect_registered(out: Output) -> Result<(), ApiError> {
    match out {
        Output::Registered => Ok(()),
        other => Err(ApiError::Internal(format!("unexpected output {other:?}"))),
    }
}

/// A number's profile if it is registered on `shard` (read from the shard's
/// leader), else `None`.
async fn registered_profile(
    ctx: &Ctx,
    shard: u32,
    number: &NumberId,
) -> Result<Option<String>, ApiError> {
    Ok(ctx
        .reads
        .number_status(shard, number, ctx.now())
        .await?
        .and_then(|s| s.numbers.into_iter().find(|n| n.number == *number))
        .map(|n| n.profile))
}

/// The profile a registration names, else the profile of `portfolio`, else the
/// default.
async fn profile_for_new(
    ctx: &Ctx,
    r: &NumberRegistrationIn,
    portfolio: Option<&PortfolioId>,
) -> Result<String, ApiError> {
    if !r.profile.is_empty() {
        return Ok(r.profile.clone());
    }
    Ok(match portfolio {
        Some(p) => portfolio_profile(ctx, p).await?,
        None => None,
    }
    .unwrap_or_else(|| DEFAULT_PROFILE.into()))
}

/// Claims `number`'s scope on its home shard (the shard of
/// `ScopeKey::Number(number)`), the one arbiter of a number's scope: the scope
/// that holds, `wanted` or a rival's claimed first. While an older build leads
/// the home shard (mid-upgrade, it does not know the claim) the registration
/// goes on unclaimed, as builds before claims did.
async fn claim_scope(ctx: &Ctx, number: NumberId, wanted: ScopeKey) -> Result<ScopeKey, ApiError> {
    let home = ctx.routing.shard_of(&ScopeKey::Number(number));
    let cmd = Command::ClaimScope {
        number,
        scope: wanted.clone(),
    };
    match ctx.routing.write(home, cmd).await {
        Ok(Output::Claimed { scope }) => Ok(scope),
        Ok(other) => Err(ApiError::Internal(format!("unexpected output {other:?}"))),
        Err(ApiError::UnknownKind(e)) => {
            tracing::warn!(%number, error = %e, "the number's home shard does not know scope claims (an older build): registering unclaimed");
            Ok(wanted)
        }
        Err(e) => Err(e),
    }
}

/// A registration that creates `number` in `scope` (claimed, or found by the
/// directory) must land in exactly that scope: the profile's limit kind and
/// the portfolio must agree with it. The portfolio the registration names.
fn fit_scope(
    number: &NumberId,
    scope: &ScopeKey,
    kind: ScopeKind,
    portfolio: Option<PortfolioId>,
) -> Result<Option<PortfolioId>, ApiError> {
    match (scope, kind) {
        (ScopeKey::Number(_), ScopeKind::Number) => Ok(portfolio),
        (ScopeKey::Portfolio(p), ScopeKind::Portfolio) => match portfolio {
            Some(q) if q != *p => Err(ApiError::FailedPrecondition(format!(
                "portfolio_id: number {number}'s limit scope is portfolio {p} (claimed by \
                 an earlier registration); register it in that portfolio"
            ))),
            _ => Ok(Some(p.clone())),
        },
        (ScopeKey::Number(_), ScopeKind::Portfolio) => Err(ApiError::FailedPrecondition(format!(
            "profile: number {number}'s limit scope is the number itself (claimed by an \
             earlier registration); register it with a profile whose limit is per number"
        ))),
        (ScopeKey::Portfolio(p), ScopeKind::Number) => Err(ApiError::FailedPrecondition(format!(
            "profile: number {number}'s limit scope is portfolio {p} (claimed by an earlier \
             registration); register it with a profile whose limit belongs to the portfolio"
        ))),
    }
}

/// Registers (or updates) a number; whether it was created.
///
/// A number no shard knows is claimed first on its home shard (see
/// [`claim_scope`]), so two first registrations racing with different scopes
/// agree on one: the later one registers in the scope the claim answered, as
/// an update, or is refused FAILED_PRECONDITION when its profile or
/// portfolio cannot apply there (docs/design.md, "Routing in a cluster").
pub(crate) async fn register_number(ctx: &Ctx, r: NumberRegistrationIn) -> Result<bool, ApiError> {
    let number = r.number;
    let mut portfolio = r.portfolio.clone();
    let (scope, profile_name, policy, created) = match ctx.routing.resolve(&number).await? {
        Resolved::Unknown => {
            let name = profile_for_new(ctx, &r, portfolio.as_ref()).await?;
            let policy = ctx.reads.policy(&name).await?;
            let wanted = match policy.scope {
                ScopeKind::Number => ScopeKey::Number(number),
                ScopeKind::Portfolio => {
                    ScopeKey::Portfolio(portfolio.clone().ok_or_else(|| {
                        ApiError::invalid(
                            "portfolio_id",
                            "is required: this profile's limit belongs to the portfolio",
                        )
                    })?)
                }
            };
            let held = claim_scope(ctx, number, wanted.clone()).await?;
            ctx.routing.router.remember(number, held.clone());
            if held == wanted {
                (held, name, policy, true)
            } else {
                // a rival registration claimed it first: this one updates the
                // number in the rival's scope
                existing_in(ctx, &r, &mut portfolio, held).await?
            }
        }
        Resolved::Known(s) => existing_in(ctx, &r, &mut portfolio, s).await?,
    };
    let limit = match policy.scope {
        ScopeKind::Number => {
            convert::tier_limit("initial_tier", r.initial_tier.as_ref(), &policy.ladder)?
        }
        ScopeKind::Portfolio => None,
    };
    let throughput_mps = r
        .throughput_mps
        .map(|t| if t == 0 { policy.throughput_mps } else { t });
    let reg = NumberRegistration {
        number: Some(number),
        portfolio: portfolio.clone(),
        profile: Some(profile_name),
        limit,
        // unset on creation: the engine's defaults (the profile's initial
        // quality, display name approved), so that a plainly registered number
        // follows the seeds' worked examples; admin.proto documents this
        quality: r.quality,
        display_name_approved: r.display_name_approved,
        status: r.status,
        throughput_mps,
        display_phone_number: r.display_phone_number.clone(),
    };
    let shard = ctx.routing.shard_of(&scope);
    expect_registered(
        ctx.routing
            .write(shard, Command::RegisterNumber(reg))
            .await?,
    )?;
    ctx.routing.router.remember(number, scope);
    if let Some(p) = &portfolio {
        share_portfolio_restriction(ctx, p, shard).await?;
    }
    Ok(created)
}

/// A registration of a number whose scope is known (registered, or claimed):
/// its scope, profile and policy, and whether it creates the number. Not
/// registered yet (claimed by a rival still registering, or whose registration
/// failed after its claim), it creates the number in `scope`, which its
/// profile and portfolio must fit.
async fn existing_in(
    ctx: &Ctx,
    r: &NumberRegistrationIn,
    portfolio: &mut Option<PortfolioId>,
    scope: ScopeKey,
) -> Result<(ScopeKey, String, Arc<Policy>, bool), ApiError> {
    let number = r.number;
    let shard = ctx.routing.shard_of(&scope);
    let registered = registered_profile(ctx, shard, &number).await?;
    let name = match (&registered, r.profile.is_empty()) {
        (_, false) => r.profile.clone(),
        (Some(p), true) => p.clone(),
        (None, true) => {
            let of = match &scope {
                ScopeKey::Portfolio(p) => Some(p.clone()),
                ScopeKey::Number(_) => portfolio.clone(),
            };
            profile_for_new(ctx, r, of.as_ref()).await?
        }
    };
    let policy = ctx.reads.policy(&name).await?;
    if registered.is_none() {
        *portfolio = fit_scope(&number, &scope, policy.scope, portfolio.take())?;
    }
    Ok((scope, name, policy, registered.is_none()))
}

/// Registers (or updates) a portfolio; whether it was created.
pub(crate) async fn register_portfolio(
    ctx: &Ctx,
    id: &PortfolioId,
    profile: &str,
    tier: Option<&admit_proto::v1::TierValue>,
) -> Result<bool, ApiError> {
    let existing = portfolio_profile(ctx, id).await?;
    let created = existing.is_none();
    let name = if profile.is_empty() {
        existing.unwrap_or_else(|| DEFAULT_PROFILE.into())
    } else {
        profile.to_owned()
    };
    let policy = ctx.reads.policy(&name).await?;
    let limit = convert::tier_limit("tier", tier, &policy.ladder)?;
    let reg = PortfolioRegistration {
        portfolio: id.clone(),
        profile: Some(name),
        limit: if policy.scope == ScopeKind::Portfolio {
            limit
        } else {
            None
        },
    };
    let shard = ctx.routing.shard_of(&ScopeKey::Portfolio(id.clone()));
    expect_registered(
        ctx.routing
            .write(shard, Command::RegisterPortfolio(reg))
            .await?,
    )?;
    Ok(created)
}

/// Applies a platform event where it belongs; the shards' answers.
pub(crate) async fn apply_event(
    ctx: &Ctx,
    dest: EventDest,
    cmd: Command,
) -> Result<Vec<Output>, ApiError> {
    match dest {
        EventDest::Number(n) => {
            let shard = ctx.routing.locate(&n).await?.shard;
            Ok(vec![ctx.routing.write(shard, cmd).await?])
        }
        EventDest::Portfolio(p) => {
            // a shard holding none of the portfolio's scopes refuses the event
            // with NOT_FOUND (and keeps no record of its key); only when every
            // shard does is the portfolio unknown. Not atomic across shards: after
            // a failure, a retry with the same event_key applies it where it is
            // missing and nowhere twice.
            let writes = (0..ctx.routing.shards()).map(|s| ctx.routing.write(s, cmd.clone()));
            let mut outs = Vec::new();
            for r in join_all(writes).await {
                match r {
                    Ok(o) => outs.push(o),
                    Err(ApiError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            if outs.is_empty() {
                return Err(ApiError::NotFound(format!(
                    "unknown portfolio {p}, or none of its numbers is registered"
                )));
            }
            Ok(outs)
        }
        EventDest::All => ctx.routing.write_all(cmd).await,
    }
}

/// The stored profile of a name, or `None` when there is none (NOT_FOUND). Any other
/// failure fails the request: taking it for "no profile" would build the profile on
/// the seeds defaults and report it created.
pub(crate) fn stored_policy(
    read: Result<Arc<Policy>, ApiError>,
) -> Result<Option<Arc<Policy>>, ApiError> {
    match read {
        Ok(p) => Ok(Some(p)),
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_policy_takes_only_not_found_for_a_new_profile() {
        let p = Arc::new(Policy::seeds());
        assert!(stored_policy(Ok(p)).unwrap().is_some());
        assert!(stored_policy(Err(ApiError::NotFound("x".into())))
            .unwrap()
            .is_none());
        let e = stored_policy(Err(ApiError::unavailable("no leader", 200))).unwrap_err();
        assert!(matches!(e, ApiError::Unavailable { .. }), "{e:?}");
    }
}
