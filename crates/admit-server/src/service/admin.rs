//! `admit.v1.Admin`: registration, platform events, status, policies.

use std::sync::Arc;

use admit_core::{
    Command, NumberId, NumberRegistration, Output, PlatformEvent, PortfolioId,
    PortfolioRegistration, PortfolioStatus, RestrictionType, ScopeKey, ScopeKind, ScopeStatus,
    Target, TemplateEvent, Ts,
};
use admit_proto::v1 as pb;
use admit_proto::v1::admin_server::Admin;
use admit_proto::v1::apply_event_request::Event;
use futures_util::future::join_all;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::convert::{self, ts_in};
use crate::ctx::Ctx;
use crate::error::ApiError;

#[derive(Debug, Clone)]
pub struct AdminService {
    pub(crate) ctx: Arc<Ctx>,
}

/// Where an event is applied.
enum Dest {
    Number(NumberId),
    /// Every shard that knows the portfolio: holds a limit scope of it, its own (meta,
    /// on its home shard) or its numbers' (seeds, wherever each number's scope hashes
    /// to), or (for a restriction) its registration.
    Portfolio(PortfolioId),
    All,
}

impl AdminService {
    async fn number_view(&self, number: &NumberId, now: Ts) -> Result<pb::StatusView, ApiError> {
        let (_, shard) = self.ctx.number_shard(number).await?;
        let s = self
            .ctx
            .number_status(shard, number, now)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("unknown number {number}")))?;
        let n = s
            .numbers
            .first()
            .ok_or_else(|| ApiError::Internal("a number's scope lists it".into()))?;
        Ok(convert::number_status_view(&s, n, now))
    }

    /// A portfolio's status, gathered from every shard (its numbers may live
    /// on many under the seeds profile).
    async fn portfolio_view(&self, id: &PortfolioId, now: Ts) -> Result<pb::StatusView, ApiError> {
        let home = self.ctx.router.shard_of(&ScopeKey::Portfolio(id.clone()));
        let mut profile: Option<String> = None;
        let mut restricted: Option<Ts> = None;
        let mut types: Vec<RestrictionType> = Vec::new();
        let mut scopes: Vec<ScopeStatus> = Vec::new();
        let mut unique = Vec::new();
        let mut found = false;
        for (shard, p) in self.ctx.portfolio_statuses(id, now).await? {
            found = true;
            if !p.scopes.is_empty() {
                unique.push((p.unique_7d, p.unique_30d));
            }
            if (shard == home || profile.is_none()) && !p.profile.is_empty() {
                profile = Some(p.profile.clone());
            }
            restricted = restricted.max(p.restricted_until);
            for t in p.restriction_types {
                if !types.contains(&t) {
                    types.push(t);
                }
            }
            for s in p.scopes {
                if !scopes.iter().any(|x| x.scope == s.scope) {
                    scopes.push(s);
                }
            }
        }
        if !found {
            return Err(ApiError::NotFound(format!("unknown portfolio {id}")));
        }
        let profile = profile.unwrap_or_else(|| "seeds".into());
        Ok(convert::portfolio_status_view(
            id,
            &profile,
            restricted,
            &types,
            &scopes,
            convert::unique_sum(&unique),
            now,
        ))
    }

    /// The profile a portfolio was registered with, from its home shard.
    async fn portfolio_profile(&self, id: &PortfolioId) -> Result<Option<String>, ApiError> {
        let home = self.ctx.router.shard_of(&ScopeKey::Portfolio(id.clone()));
        Ok(self
            .ctx
            .portfolio_status(home, id, self.ctx.now())
            .await?
            .map(|p| p.profile)
            .filter(|p| !p.is_empty()))
    }

    /// Section 10: a portfolio's restriction holds for all its numbers, one that joins
    /// later included. A restriction reaches only the shards that knew the portfolio
    /// when it arrived, so a number's shard that did not gets it from the others.
    /// Run on every registration naming a portfolio, so a retry after a failure here
    /// completes it.
    async fn share_portfolio_restriction(
        &self,
        p: &PortfolioId,
        shard: u32,
    ) -> Result<(), ApiError> {
        let statuses = self.ctx.portfolio_statuses(p, self.ctx.now()).await?;
        let restricted: Vec<(u32, PortfolioStatus)> = statuses
            .into_iter()
            .filter(|(_, ps)| ps.restricted_until.is_some())
            .collect();
        if restricted.iter().any(|(s, _)| *s == shard) {
            return Ok(());
        }
        let Some((_, latest)) = restricted
            .into_iter()
            .max_by_key(|(_, ps)| ps.restricted_until)
        else {
            return Ok(());
        };
        let cmd = Command::Platform {
            event: PlatformEvent::AccountRestriction {
                target: Target::Portfolio(p.clone()),
                // `Ts(u64::MAX)` is "until lifted", which the event says by no end
                until: latest.restricted_until.filter(|t| t.ms() != u64::MAX),
                lifted: false,
                types: latest.restriction_types,
            },
            event_key: None,
        };
        self.ctx.write(shard, cmd).await?;
        Ok(())
    }

    async fn apply_to(&self, dest: Dest, cmd: Command) -> Result<Vec<Output>, ApiError> {
        match dest {
            Dest::Number(n) => {
                let (_, shard) = self.ctx.number_shard(&n).await?;
                Ok(vec![self.ctx.write(shard, cmd).await?])
            }
            Dest::Portfolio(p) => {
                // a shard holding none of the portfolio's scopes refuses the event
                // with NOT_FOUND (and keeps no record of its key); only when every
                // shard does is the portfolio unknown. Not atomic across shards: after
                // a failure, a retry with the same event_key applies it where it is
                // missing and nowhere twice.
                let writes = (0..self.ctx.router.shards()).map(|s| self.ctx.write(s, cmd.clone()));
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
            Dest::All => self.ctx.write_all(cmd).await,
        }
    }
}

/// The stored profile of a name, or `None` when there is none (NOT_FOUND). Any other
/// failure fails the request: taking it for "no profile" would build the profile on
/// the seeds defaults and report it created.
fn stored_policy(
    read: Result<Arc<admit_core::Policy>, ApiError>,
) -> Result<Option<Arc<admit_core::Policy>>, ApiError> {
    match read {
        Ok(p) => Ok(Some(p)),
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn expect_registered(out: Output) -> Result<(), ApiError> {
    match out {
        Output::Registered => Ok(()),
        other => Err(ApiError::Internal(format!("unexpected output {other:?}"))),
    }
}

/// An event from the API, and where it must be applied.
fn event_in(ev: Option<&Event>) -> Result<(PlatformEvent, Dest), ApiError> {
    let ev = ev.ok_or_else(|| ApiError::invalid("event", "exactly one event is required"))?;
    Ok(match ev {
        Event::NumberQuality(e) => {
            let number = convert::number("number_quality.number_id", &e.number_id)?;
            let quality = convert::number_quality("number_quality.quality", e.quality)?
                .ok_or_else(|| ApiError::invalid("number_quality.quality", "is required"))?;
            (
                PlatformEvent::NumberQuality { number, quality },
                Dest::Number(number),
            )
        }
        Event::NumberStatus(e) => {
            let number = convert::number("number_status.number_id", &e.number_id)?;
            let status = convert::number_status("number_status.status", e.status)?
                .ok_or_else(|| ApiError::invalid("number_status.status", "is required"))?;
            (
                PlatformEvent::NumberStatus { number, status },
                Dest::Number(number),
            )
        }
        Event::Tier(e) => {
            let target = convert::target("tier.target", e.target.as_ref())?;
            let tier = convert::tier_input(e.tier.as_ref())
                .ok_or_else(|| ApiError::invalid("tier.tier", "is required"))?;
            let dest = match &target {
                Target::Number(n) => Dest::Number(*n),
                Target::Portfolio(p) => Dest::Portfolio(p.clone()),
            };
            (PlatformEvent::LimitChange { target, tier }, dest)
        }
        Event::TemplateStatus(e) => {
            let template = convert::template("template_status.template_id", &e.template_id)?;
            let event = match pb::TemplateStatusEvent::try_from(e.event) {
                Ok(pb::TemplateStatusEvent::Approved) => TemplateEvent::Approved,
                Ok(pb::TemplateStatusEvent::Unpaused) => TemplateEvent::Unpaused,
                Ok(pb::TemplateStatusEvent::Disabled) => TemplateEvent::Disabled,
                Ok(pb::TemplateStatusEvent::Paused) => TemplateEvent::Paused {
                    title: match pb::PauseTitle::try_from(e.pause_title) {
                        Ok(pb::PauseTitle::FirstPause) => Some("FIRST_PAUSE".into()),
                        Ok(pb::PauseTitle::SecondPause) => Some("SECOND_PAUSE".into()),
                        _ => None,
                    },
                    until: e
                        .paused_until_unix_ms
                        .map(|t| ts_in("template_status.paused_until_unix_ms", t))
                        .transpose()?,
                },
                _ => {
                    return Err(ApiError::invalid(
                        "template_status.event",
                        "is required: APPROVED, PAUSED, UNPAUSED or DISABLED",
                    ))
                }
            };
            (PlatformEvent::TemplateStatus { template, event }, Dest::All)
        }
        Event::TemplateQuality(e) => {
            let template = convert::template("template_quality.template_id", &e.template_id)?;
            let quality = convert::template_quality(e.quality)?;
            (
                PlatformEvent::TemplateQuality { template, quality },
                Dest::All,
            )
        }
        Event::AccountRestriction(e) => {
            let target = convert::target("account_restriction.target", e.target.as_ref())?;
            let until = e
                .expires_at_unix_ms
                .map(|t| ts_in("account_restriction.expires_at_unix_ms", t))
                .transpose()?;
            // section 10's types decide which sends are denied; none given (unknown
            // kind) denies every send, as admin.proto documents
            let types = if e.lifted {
                Vec::new()
            } else {
                e.restriction_types
                    .iter()
                    .map(|t| match pb::RestrictionType::try_from(*t) {
                        Ok(pb::RestrictionType::BizInitiatedMessaging) => {
                            Ok(RestrictionType::BizInitiated)
                        }
                        Ok(pb::RestrictionType::CustomerInitiatedMessaging) => {
                            Ok(RestrictionType::CustomerInitiated)
                        }
                        Ok(pb::RestrictionType::AddPhoneNumber) => {
                            Ok(RestrictionType::AddPhoneNumber)
                        }
                        _ => Err(ApiError::invalid(
                            "account_restriction.restriction_types",
                            "each must be BIZ_INITIATED_MESSAGING, \
                             CUSTOMER_INITIATED_MESSAGING or ADD_PHONE_NUMBER",
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            };
            let dest = match &target {
                Target::Number(n) => Dest::Number(*n),
                // every shard that knows the portfolio (its numbers may live on many);
                // NOT_FOUND, and nothing written, when none does
                Target::Portfolio(p) => Dest::Portfolio(p.clone()),
            };
            (
                PlatformEvent::AccountRestriction {
                    target,
                    until,
                    lifted: e.lifted,
                    types,
                },
                dest,
            )
        }
        Event::UserPreference(e) => {
            let number = convert::number("user_preference.number_id", &e.number_id)?;
            let customer = convert::customer("user_preference.customer_id", &e.customer_id)?;
            let stop = match pb::UserPreferenceValue::try_from(e.preference) {
                Ok(pb::UserPreferenceValue::Stop) => true,
                Ok(pb::UserPreferenceValue::Resume) => false,
                _ => {
                    return Err(ApiError::invalid(
                        "user_preference.preference",
                        "is required: STOP or RESUME",
                    ))
                }
            };
            (
                PlatformEvent::UserPreference {
                    number,
                    customer,
                    stop,
                },
                Dest::Number(number),
            )
        }
        Event::FreeEntryPoint(e) => {
            let number = convert::number("free_entry_point.number_id", &e.number_id)?;
            let customer = convert::customer("free_entry_point.customer_id", &e.customer_id)?;
            (
                PlatformEvent::FreeEntryPoint { number, customer },
                Dest::Number(number),
            )
        }
        Event::DisplayName(e) => {
            let number = convert::number("display_name.number_id", &e.number_id)?;
            (
                PlatformEvent::DisplayName {
                    number,
                    approved: e.approved,
                },
                Dest::Number(number),
            )
        }
    })
}

#[tonic::async_trait]
impl Admin for AdminService {
    #[instrument(skip_all, fields(number))]
    async fn register_number(
        &self,
        request: Request<pb::RegisterNumberRequest>,
    ) -> Result<Response<pb::RegisterNumberResponse>, Status> {
        crate::forward::scoped(request.metadata(), async {
            let _permit = self.ctx.protect.enter(&request)?;
            let r = request.get_ref();
            let number = convert::number("number_id", &r.number_id)?;
            tracing::Span::current().record("number", tracing::field::display(&number));
            // optional under a per-number profile; required where the limit is the portfolio's
            let portfolio = if r.portfolio_id.is_empty() {
                None
            } else {
                Some(convert::portfolio("portfolio_id", &r.portfolio_id)?)
            };
            let quality = match r.quality {
                Some(q) => convert::number_quality("quality", q)?,
                None => None,
            };
            let status = match r.status {
                Some(s) => convert::number_status("status", s)?,
                None => None,
            };
            if let Some(t) = r.throughput_mps {
                if t > 10_000 {
                    return Err(ApiError::invalid("throughput_mps", "must be 0 to 10000").into());
                }
            }
            if !r.display_phone_number.is_empty() {
                convert::customer("display_phone_number", &r.display_phone_number)?;
            }
            let existing = match self.ctx.resolve(&number).await? {
                crate::ctx::Resolved::Known(s) => Some(s),
                crate::ctx::Resolved::Unknown => None,
            };
            let created = existing.is_none();
            let profile_name = if !r.profile.is_empty() {
                r.profile.clone()
            } else if let Some(s) = &existing {
                let shard = self.ctx.router.shard_of(s);
                self.ctx
                    .number_status(shard, &number, self.ctx.now())
                    .await?
                    .and_then(|s| s.numbers.first().map(|n| n.profile.clone()))
                    .unwrap_or_else(|| "seeds".into())
            } else {
                match portfolio.as_ref() {
                    Some(p) => self.portfolio_profile(p).await?,
                    None => None,
                }
                .unwrap_or_else(|| "seeds".into())
            };
            let policy = self.ctx.policy(&profile_name).await?;
            let scope = match (&existing, policy.scope) {
                (Some(s), _) => s.clone(),
                (None, ScopeKind::Number) => ScopeKey::Number(number),
                (None, ScopeKind::Portfolio) => {
                    ScopeKey::Portfolio(portfolio.clone().ok_or_else(|| {
                        ApiError::invalid(
                            "portfolio_id",
                            "is required: this profile's limit belongs to the portfolio",
                        )
                    })?)
                }
            };
            let limit = match policy.scope {
                ScopeKind::Number => {
                    convert::tier_limit("initial_tier", r.initial_tier.as_ref(), &policy.ladder)?
                }
                ScopeKind::Portfolio => None,
            };
            let throughput_mps =
                r.throughput_mps
                    .map(|t| if t == 0 { policy.throughput_mps } else { t });
            let reg = NumberRegistration {
                number: Some(number),
                portfolio: portfolio.clone(),
                profile: Some(profile_name),
                limit,
                // unset on creation: the engine's defaults (the profile's initial
                // quality, display name approved), so that a plainly registered number
                // follows the seeds' worked examples; admin.proto documents this
                quality,
                display_name_approved: r.display_name_approved,
                status,
                throughput_mps,
            };
            let shard = self.ctx.router.shard_of(&scope);
            expect_registered(self.ctx.write(shard, Command::RegisterNumber(reg)).await?)?;
            self.ctx.router.remember(number, scope);
            if let Some(p) = &portfolio {
                self.share_portfolio_restriction(p, shard).await?;
            }
            let status = self.number_view(&number, self.ctx.now()).await?;
            tracing::info!(%number, created, "number registered");
            Ok(Response::new(pb::RegisterNumberResponse {
                created,
                status: Some(status),
            }))
        })
        .await
    }

    #[instrument(skip_all, fields(portfolio))]
    async fn register_portfolio(
        &self,
        request: Request<pb::RegisterPortfolioRequest>,
    ) -> Result<Response<pb::RegisterPortfolioResponse>, Status> {
        crate::forward::scoped(request.metadata(), async {
            let _permit = self.ctx.protect.enter(&request)?;
            let r = request.get_ref();
            let id = convert::portfolio("portfolio_id", &r.portfolio_id)?;
            tracing::Span::current().record("portfolio", tracing::field::display(&id));
            let existing = self.portfolio_profile(&id).await?;
            let created = existing.is_none();
            let name = if r.profile.is_empty() {
                existing.unwrap_or_else(|| "seeds".into())
            } else {
                r.profile.clone()
            };
            let policy = self.ctx.policy(&name).await?;
            let limit = convert::tier_limit("tier", r.tier.as_ref(), &policy.ladder)?;
            let reg = PortfolioRegistration {
                portfolio: id.clone(),
                profile: Some(name),
                limit: if policy.scope == ScopeKind::Portfolio {
                    limit
                } else {
                    None
                },
            };
            let shard = self.ctx.router.shard_of(&ScopeKey::Portfolio(id.clone()));
            expect_registered(
                self.ctx
                    .write(shard, Command::RegisterPortfolio(reg))
                    .await?,
            )?;
            let status = self.portfolio_view(&id, self.ctx.now()).await?;
            Ok(Response::new(pb::RegisterPortfolioResponse {
                created,
                status: Some(status),
            }))
        })
        .await
    }

    #[instrument(skip_all, fields(event_key))]
    async fn apply_event(
        &self,
        request: Request<pb::ApplyEventRequest>,
    ) -> Result<Response<pb::ApplyEventResponse>, Status> {
        crate::forward::scoped(request.metadata(), async {
            let _permit = self.ctx.protect.enter(&request)?;
            let r = request.get_ref();
            if r.event_key.chars().count() > 256 {
                return Err(
                    ApiError::invalid("event_key", "must be at most 256 characters").into(),
                );
            }
            tracing::Span::current().record("event_key", r.event_key.as_str());
            let (event, dest) = event_in(r.event.as_ref())?;
            let cmd = Command::Platform {
                event,
                event_key: (!r.event_key.is_empty()).then(|| r.event_key.clone()),
            };
            let outs = self.apply_to(dest, cmd).await?;
            let mut applied = false;
            let mut duplicate = !outs.is_empty();
            let mut ignored = String::new();
            for o in outs {
                match o {
                    Output::Event { applied: a, note } => {
                        applied |= a;
                        let dup = note.as_deref() == Some("duplicate delivery");
                        duplicate &= dup;
                        if !a && !dup {
                            if let Some(n) = note {
                                ignored = n;
                            }
                        }
                    }
                    other => {
                        return Err(
                            ApiError::Internal(format!("unexpected output {other:?}")).into()
                        )
                    }
                }
            }
            if applied {
                // applied where it mattered (e.g. on the shards holding a portfolio's
                // numbers): a shard's own reason not to is no reason for the caller
                ignored.clear();
            }
            if !ignored.is_empty() {
                tracing::warn!(reason = %ignored, "platform event ignored");
            }
            Ok(Response::new(pb::ApplyEventResponse {
                applied,
                duplicate,
                ignored_reason: ignored,
            }))
        })
        .await
    }

    #[instrument(skip_all)]
    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        crate::forward::scoped(request.metadata(), async {
            let _permit = self.ctx.protect.enter(&request)?;
            let target = convert::target("target", request.get_ref().target.as_ref())?;
            let now = self.ctx.now();
            let (status, shard) = match &target {
                Target::Number(n) => {
                    let v = self.number_view(n, now).await?;
                    (v, self.ctx.number_shard(n).await?.1)
                }
                Target::Portfolio(p) => (
                    self.portfolio_view(p, now).await?,
                    self.ctx.router.shard_of(&ScopeKey::Portfolio(p.clone())),
                ),
            };
            let leader_hint = self
                .ctx
                .leader_ref(shard)
                .map(|(node_id, address)| pb::NodeRef { node_id, address });
            Ok(Response::new(pb::GetStatusResponse {
                status: Some(status),
                leader_hint,
            }))
        })
        .await
    }

    #[instrument(skip_all)]
    async fn list_numbers(
        &self,
        request: Request<pb::ListNumbersRequest>,
    ) -> Result<Response<pb::ListNumbersResponse>, Status> {
        crate::forward::scoped(request.metadata(), async {
            let _permit = self.ctx.protect.enter(&request)?;
            let r = request.get_ref();
            let limit = match r.limit {
                0 => 100,
                n @ 1..=1_000 => n as usize,
                _ => return Err(ApiError::invalid("limit", "must be 0 to 1000").into()),
            };
            let offset: usize = if r.page_token.is_empty() {
                0
            } else {
                r.page_token
                    .parse()
                    .map_err(|_| ApiError::invalid("page_token", "is not a token from this API"))?
            };
            let only = if r.portfolio_id.is_empty() {
                None
            } else {
                Some(convert::portfolio("portfolio_id", &r.portfolio_id)?)
            };
            let now = self.ctx.now();
            let mut rows: Vec<(u64, pb::StatusView)> = Vec::new();
            for s in self.ctx.list_scopes(now).await? {
                let headroom = s.headroom.map_or(u64::MAX, u64::from);
                for n in &s.numbers {
                    if only
                        .as_ref()
                        .is_some_and(|p| n.portfolio.as_ref() != Some(p))
                    {
                        continue;
                    }
                    rows.push((headroom, convert::number_status_view(&s, n, now)));
                }
            }
            // ties by number_id as a string, as admin.proto says ("10" before "9",
            // "007" before "7"), not by the id's numeric value
            rows.sort_by(|a, b| {
                a.0.cmp(&b.0)
                    .then_with(|| a.1.number_id.cmp(&b.1.number_id))
            });
            let total = rows.len();
            let numbers: Vec<pb::StatusView> = rows
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|r| r.1)
                .collect();
            let next = offset + numbers.len();
            Ok(Response::new(pb::ListNumbersResponse {
                numbers,
                next_page_token: if next < total {
                    next.to_string()
                } else {
                    String::new()
                },
                leader_hint: self
                    .ctx
                    .leader_ref(0)
                    .map(|(node_id, address)| pb::NodeRef { node_id, address }),
            }))
        })
        .await
    }

    #[instrument(skip_all)]
    async fn set_policy(
        &self,
        request: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::SetPolicyResponse>, Status> {
        crate::forward::scoped(request.metadata(), async {
            let _permit = self.ctx.protect.enter(&request)?;
            let name = convert::policy_name(request.get_ref().policy.as_ref())?;
            let existing = stored_policy(self.ctx.policy(&name).await)?;
            let created = existing.is_none();
            let base = existing
                .as_ref()
                .map_or_else(admit_core::Policy::seeds, |p| (**p).clone());
            let policy = convert::policy_in(request.get_ref().policy.as_ref(), &base)?;
            // checked against the stored profile before any shard is written: each
            // shard's own check (the engine's) could only see its own numbers, and a
            // SetPolicy must be applied on every shard or on none
            if existing.as_ref().is_some_and(|p| p.scope != policy.scope) {
                return Err(ApiError::FailedPrecondition(
                    "policy.scope: an existing profile keeps its limit scope; create a new profile"
                        .into(),
                )
                .into());
            }
            self.ctx
                .write_all(Command::SetPolicy(policy.clone()))
                .await?;
            tracing::info!(profile = %policy.name, created, "policy set");
            Ok(Response::new(pb::SetPolicyResponse {
                created,
                policy: Some(convert::policy_out(&policy)),
            }))
        })
        .await
    }

    #[instrument(skip_all)]
    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        crate::forward::scoped(request.metadata(), async {
            let _permit = self.ctx.protect.enter(&request)?;
            let name = &request.get_ref().name;
            if name.is_empty() {
                return Err(ApiError::invalid("name", "is required").into());
            }
            let p = self.ctx.policy(name).await?;
            Ok(Response::new(pb::GetPolicyResponse {
                policy: Some(convert::policy_out(&p)),
            }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_policy_takes_only_not_found_for_a_new_profile() {
        let p = Arc::new(admit_core::Policy::seeds());
        assert!(stored_policy(Ok(p)).unwrap().is_some());
        assert!(stored_policy(Err(ApiError::NotFound("x".into())))
            .unwrap()
            .is_none());
        let e = stored_policy(Err(ApiError::unavailable("no leader", 200))).unwrap_err();
        assert!(matches!(e, ApiError::Unavailable { .. }), "{e:?}");
    }
}
