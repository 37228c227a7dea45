//! `admit.v1.Admin`: registration, platform events, status, policies.

use std::sync::Arc;

use admit_core::{Command, NumberId, Output, PortfolioId, ScopeKey, Target, Ts};
use admit_proto::v1 as pb;
use admit_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{handle, leader_hint};
use crate::convert;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::registry;

/// ListNumbers' page size when the request names none, and its largest.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: u32 = 1_000;

#[derive(Debug, Clone)]
pub struct AdminService {
    pub(crate) ctx: Arc<Ctx>,
}

impl AdminService {
    async fn number_view(&self, number: &NumberId, now: Ts) -> Result<pb::StatusView, ApiError> {
        let shard = self.ctx.routing.locate(number).await?.shard;
        let s = self
            .ctx
            .reads
            .number_status(shard, number, now)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("unknown number {number}")))?;
        let n = s
            .numbers
            .first()
            .ok_or_else(|| ApiError::Internal("a number's scope lists it".into()))?;
        Ok(convert::number_status_view(&s, n, now))
    }

    async fn portfolio_view(&self, id: &PortfolioId, now: Ts) -> Result<pb::StatusView, ApiError> {
        let p = registry::portfolio_status(&self.ctx, id, now).await?;
        Ok(convert::portfolio_status_view(&p, now))
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    #[instrument(skip_all, fields(number))]
    async fn register_number(
        &self,
        request: Request<pb::RegisterNumberRequest>,
    ) -> Result<Response<pb::RegisterNumberResponse>, Status> {
        handle(&self.ctx, &request, async {
            let r = convert::number_registration_in(request.get_ref())?;
            let number = r.number;
            tracing::Span::current().record("number", tracing::field::display(&number));
            let created = registry::register_number(&self.ctx, r).await?;
            let status = self.number_view(&number, self.ctx.now()).await?;
            tracing::info!(%number, created, "number registered");
            Ok(pb::RegisterNumberResponse {
                created,
                status: Some(status),
            })
        })
        .await
    }

    #[instrument(skip_all, fields(portfolio))]
    async fn register_portfolio(
        &self,
        request: Request<pb::RegisterPortfolioRequest>,
    ) -> Result<Response<pb::RegisterPortfolioResponse>, Status> {
        handle(&self.ctx, &request, async {
            let r = request.get_ref();
            let id = convert::portfolio("portfolio_id", &r.portfolio_id)?;
            tracing::Span::current().record("portfolio", tracing::field::display(&id));
            let created =
                registry::register_portfolio(&self.ctx, &id, &r.profile, r.tier.as_ref()).await?;
            let status = self.portfolio_view(&id, self.ctx.now()).await?;
            Ok(pb::RegisterPortfolioResponse {
                created,
                status: Some(status),
            })
        })
        .await
    }

    #[instrument(skip_all, fields(event_key))]
    async fn apply_event(
        &self,
        request: Request<pb::ApplyEventRequest>,
    ) -> Result<Response<pb::ApplyEventResponse>, Status> {
        handle(&self.ctx, &request, async {
            let r = request.get_ref();
            let event_key = convert::platform_event_key(&r.event_key)?;
            tracing::Span::current().record("event_key", r.event_key.as_str());
            let ev = convert::event_in(r.event.as_ref())?;
            let cmd = Command::Platform {
                event: ev.event,
                event_key,
            };
            let outs = registry::apply_event(&self.ctx, ev.dest, cmd).await?;
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
                        return Err(ApiError::Internal(format!("unexpected output {other:?}")))
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
            Ok(pb::ApplyEventResponse {
                applied,
                duplicate,
                ignored_reason: ignored,
            })
        })
        .await
    }

    #[instrument(skip_all)]
    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        handle(&self.ctx, &request, async {
            let target = convert::target("target", request.get_ref().target.as_ref())?;
            let now = self.ctx.now();
            let (status, shard) = match &target {
                Target::Number(n) => {
                    let v = self.number_view(n, now).await?;
                    (v, self.ctx.routing.locate(n).await?.shard)
                }
                Target::Portfolio(p) => (
                    self.portfolio_view(p, now).await?,
                    self.ctx.routing.shard_of(&ScopeKey::Portfolio(p.clone())),
                ),
            };
            Ok(pb::GetStatusResponse {
                status: Some(status),
                leader_hint: leader_hint(&self.ctx, shard),
            })
        })
        .await
    }

    #[instrument(skip_all)]
    async fn list_numbers(
        &self,
        request: Request<pb::ListNumbersRequest>,
    ) -> Result<Response<pb::ListNumbersResponse>, Status> {
        handle(&self.ctx, &request, async {
            let r = request.get_ref();
            let limit = match r.limit {
                0 => DEFAULT_PAGE,
                n @ 1..=MAX_PAGE => n as usize,
                _ => return Err(ApiError::invalid("limit", "must be 0 to 1000")),
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
            for s in self.ctx.reads.list_scopes(now).await? {
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
            Ok(pb::ListNumbersResponse {
                numbers,
                next_page_token: if next < total {
                    next.to_string()
                } else {
                    String::new()
                },
                leader_hint: leader_hint(&self.ctx, 0),
            })
        })
        .await
    }

    #[instrument(skip_all)]
    async fn set_policy(
        &self,
        request: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::SetPolicyResponse>, Status> {
        handle(&self.ctx, &request, async {
            let name = convert::policy_name(request.get_ref().policy.as_ref())?;
            let existing = registry::stored_policy(self.ctx.reads.policy(&name).await)?;
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
                ));
            }
            self.ctx
                .routing
                .write_all(Command::SetPolicy(policy.clone()))
                .await?;
            tracing::info!(profile = %policy.name, created, "policy set");
            Ok(pb::SetPolicyResponse {
                created,
                policy: Some(convert::policy_out(&policy)),
            })
        })
        .await
    }

    #[instrument(skip_all)]
    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        handle(&self.ctx, &request, async {
            let name = &request.get_ref().name;
            if name.is_empty() {
                return Err(ApiError::invalid("name", "is required"));
            }
            let p = self.ctx.reads.policy(name).await?;
            Ok(pb::GetPolicyResponse {
                policy: Some(convert::policy_out(&p)),
            })
        })
        .await
    }
}
