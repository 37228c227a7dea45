//! `admit.v1.AdmitSend`: decisions, releases, inbound messages, outcomes.

use std::sync::Arc;

use admit_core::{
    AdmissionId, Command, DeliveryStatus, Inbound, InboundKind, Outcome, Output, PlatformEvent,
    TemplateEvent,
};
use admit_proto::v1 as pb;
use admit_proto::v1::admit_send_server::AdmitSend;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::convert::{self, ms};
use crate::ctx::Ctx;
use crate::error::ApiError;

/// The largest batch (admit.proto).
pub const MAX_BATCH: usize = 1_000;

#[derive(Debug, Clone)]
pub struct AdmitService {
    pub(crate) ctx: Arc<Ctx>,
}

fn item_error(e: &ApiError) -> pb::ItemError {
    pb::ItemError {
        code: e.code() as i32,
        message: e.to_string(),
        field: e.field().unwrap_or_default().to_owned(),
    }
}

impl AdmitService {
    fn leader_hint(&self, shard: u32) -> Option<pb::NodeRef> {
        self.ctx
            .leader_ref(shard)
            .map(|(node_id, address)| pb::NodeRef { node_id, address })
    }
}

#[tonic::async_trait]
impl AdmitSend for AdmitService {
    #[instrument(level = "debug", skip_all, fields(number, reason))]
    async fn admit(
        &self,
        request: Request<pb::AdmitRequest>,
    ) -> Result<Response<pb::AdmitResponse>, Status> {
        crate::forward::scoped(request.metadata(), async {
            let _permit = self.ctx.protect.enter(&request)?;
            let req = convert::send_at("send.", request.get_ref().send.as_ref())?;
            tracing::Span::current().record("number", tracing::field::display(&req.number));
            let ((d, scope, replayed), now) = self.ctx.admit(req).await?;
            tracing::Span::current().record("reason", d.reason.as_str());
            let shard = scope.as_ref().map(|s| self.ctx.router.shard_of(s));
            Ok(Response::new(pb::AdmitResponse {
                decision: Some(convert::decision_out(&d, scope.as_ref(), now, replayed)),
                leader_hint: shard.and_then(|s| self.leader_hint(s)),
            }))
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(items))]
    async fn admit_batch(
        &self,
        request: Request<pb::AdmitBatchRequest>,
    ) -> Result<Response<pb::AdmitBatchResponse>, Status> {
        crate::forward::scoped(request.metadata(), async {
            let _permit = self.ctx.protect.enter(&request)?;
            let sends = &request.get_ref().sends;
            tracing::Span::current().record("items", sends.len());
            if sends.is_empty() || sends.len() > MAX_BATCH {
                return Err(ApiError::invalid("sends", "must hold 1 to 1000 items").into());
            }
            let items = sends.iter().map(|s| convert::send(Some(s))).collect();
            let (results, now) = self.ctx.admit_many(items).await;
            let mut shards = std::collections::BTreeSet::new();
            let results = results
                .into_iter()
                .enumerate()
                .map(|(i, r)| pb::AdmitBatchResult {
                    index: i as u32,
                    result: Some(match r {
                        Ok((d, scope, replayed)) => {
                            if let Some(s) = &scope {
                                shards.insert(self.ctx.router.shard_of(s));
                            }
                            pb::admit_batch_result::Result::Decision(convert::decision_out(
                                &d,
                                scope.as_ref(),
                                now,
                                replayed,
                            ))
                        }
                        Err(e) => pb::admit_batch_result::Result::Error(item_error(&e)),
                    }),
                })
                .collect();
            let leader_hint = match shards.len() {
                1 => shards.first().and_then(|s| self.leader_hint(*s)),
                _ => None,
            };
            Ok(Response::new(pb::AdmitBatchResponse {
                results,
                leader_hint,
            }))
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(admission))]
    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        crate::forward::scoped(request.metadata(), async {
            let _permit = self.ctx.protect.enter(&request)?;
            let id = AdmissionId::parse("admission_id", &request.get_ref().admission_id)
                .map_err(ApiError::from)?;
            tracing::Span::current().record("admission", tracing::field::display(&id));
            let shard = self.ctx.router.shard_of(&id.scope);
            let scope = id.scope.clone();
            let released = match self.ctx.write(shard, Command::Release(id)).await? {
                Output::Released { released } => released,
                other => {
                    return Err(ApiError::Internal(format!("unexpected output {other:?}")).into())
                }
            };
            let now = self.ctx.now();
            let usage = self
                .ctx
                .scope_status(&scope, now)
                .await?
                .map(|s| convert::usage_out(&s));
            Ok(Response::new(pb::ReleaseResponse { released, usage }))
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(number))]
    async fn record_inbound(
        &self,
        request: Request<pb::RecordInboundRequest>,
    ) -> Result<Response<pb::RecordInboundResponse>, Status> {
        crate::forward::scoped(request.metadata(), async {
            let _permit = self.ctx.protect.enter(&request)?;
            let r = request.get_ref();
            let number = convert::number("number_id", &r.number_id)?;
            let customer = convert::customer("customer_id", &r.customer_id)?;
            tracing::Span::current().record("number", tracing::field::display(&number));
            let kind = match pb::InboundKind::try_from(r.kind) {
                Ok(pb::InboundKind::Call) => InboundKind::Call,
                Ok(_) => InboundKind::Message,
                Err(_) => return Err(ApiError::invalid("kind", "unknown value").into()),
            };
            if r.event_key.chars().count() > 128 {
                return Err(
                    ApiError::invalid("event_key", "must be at most 128 characters").into(),
                );
            }
            if r.text.as_ref().is_some_and(|t| t.chars().count() > 4096) {
                return Err(ApiError::invalid("text", "must be at most 4096 characters").into());
            }
            let (_, shard) = self.ctx.number_shard(&number).await?;
            let out = self
                .ctx
                .write(
                    shard,
                    Command::Inbound(Inbound {
                        number,
                        customer,
                        kind,
                        text: r.text.as_deref().and_then(admit_core::keyword_candidate),
                        // per kind: an inbound's key never collides with an
                        // outcome's or a platform event's
                        event_key: (!r.event_key.is_empty()).then(|| format!("in/{}", r.event_key)),
                    }),
                )
                .await?;
            let Output::Inbound {
                window_end,
                opt,
                duplicate,
            } = out
            else {
                return Err(ApiError::Internal(format!("unexpected output {out:?}")).into());
            };
            let mut fep_end = None;
            if r.free_entry_point && !duplicate {
                let ev = Command::Platform {
                    event: PlatformEvent::FreeEntryPoint { number, customer },
                    event_key: None,
                };
                // a profile without free entry points (seeds) ignores the event
                if let Output::Event { applied: true, .. } = self.ctx.write(shard, ev).await? {
                    let p = self
                        .ctx
                        .policy(&self.profile_of(shard, &number).await?)
                        .await?;
                    fep_end = Some(ms(self.ctx.now().plus(p.free_entry_window)));
                }
            }
            Ok(Response::new(pb::RecordInboundResponse {
                window_end_unix_ms: ms(window_end),
                free_entry_point_end_unix_ms: fep_end,
                opt_change: match opt {
                    Some(admit_core::OptChange::OptedOut) => pb::OptChange::OptedOut as i32,
                    Some(admit_core::OptChange::OptedIn) => pb::OptChange::OptedIn as i32,
                    None => pb::OptChange::None as i32,
                },
                duplicate,
            }))
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(number, code))]
    async fn report_outcome(
        &self,
        request: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        crate::forward::scoped(request.metadata(), async {
            let _permit = self.ctx.protect.enter(&request)?;
            let r = request.get_ref();
            let number = convert::number("number_id", &r.number_id)?;
            let customer = convert::customer("customer_id", &r.customer_id)?;
            let admission = if r.admission_id.is_empty() {
                None
            } else {
                Some(AdmissionId::parse("admission_id", &r.admission_id).map_err(ApiError::from)?)
            };
            let status = match pb::DeliveryStatus::try_from(r.status) {
                Ok(pb::DeliveryStatus::Sent) => DeliveryStatus::Sent,
                Ok(pb::DeliveryStatus::Delivered) => DeliveryStatus::Delivered,
                Ok(pb::DeliveryStatus::Read) => DeliveryStatus::Read,
                Ok(pb::DeliveryStatus::Failed) => DeliveryStatus::Failed,
                _ => {
                    return Err(ApiError::invalid(
                        "status",
                        "is required: SENT, DELIVERED, READ or FAILED",
                    )
                    .into())
                }
            };
            let template = if r.template_id.is_empty() {
                None
            } else {
                Some(convert::template("template_id", &r.template_id)?)
            };
            if r.event_key.chars().count() > 128 {
                return Err(
                    ApiError::invalid("event_key", "must be at most 128 characters").into(),
                );
            }
            tracing::Span::current().record("number", tracing::field::display(&number));
            tracing::Span::current().record("code", r.meta_error_code.unwrap_or(0));
            // Meta reports error codes with FAILED statuses only; a code on
            // another status is a caller's mistake, not a reason to back off
            if r.meta_error_code.is_some() && status != DeliveryStatus::Failed {
                return Err(
                    ApiError::invalid("meta_error_code", "is only for a FAILED status").into(),
                );
            }
            let (scope, shard) = self.ctx.number_shard(&number).await?;
            // an admission counts against its number's scope: the number
            // itself, or its portfolio under the meta profile
            if admission.as_ref().is_some_and(|a| a.scope != scope) {
                return Err(ApiError::invalid(
                    "admission_id",
                    "belongs to another number's limit scope",
                )
                .into());
            }
            let code = r.meta_error_code;
            // Templates are global: a pause or disable is applied to every shard
            // as a template event, not only to the number's shard.
            let template_event = match (code, &template) {
                (Some(132015), Some(t)) => Some((
                    t.clone(),
                    TemplateEvent::Paused {
                        title: None,
                        until: None,
                    },
                )),
                (Some(132016), Some(t)) => Some((t.clone(), TemplateEvent::Disabled)),
                _ => None,
            };
            let outcome = Outcome {
                number,
                customer,
                admission: admission.clone(),
                status,
                error_code: code,
                template: if template_event.is_some() {
                    None
                } else {
                    template
                },
                event_key: (!r.event_key.is_empty()).then(|| format!("out/{}", r.event_key)),
            };
            // a release must reach the admission's own shard (a portfolio scope)
            let outcome_shard = admission
                .as_ref()
                .map_or(shard, |a| self.ctx.router.shard_of(&a.scope));
            let released = match self
                .ctx
                .write(outcome_shard, Command::Outcome(outcome))
                .await?
            {
                Output::Outcome {
                    duplicate: true, ..
                } => {
                    return Ok(Response::new(pb::ReportOutcomeResponse {
                        effects: Vec::new(),
                        hold_until_unix_ms: None,
                        duplicate: true,
                    }))
                }
                Output::Outcome {
                    released,
                    hold_until,
                    ..
                } => (released, hold_until),
                other => {
                    return Err(ApiError::Internal(format!("unexpected output {other:?}")).into())
                }
            };
            let (released, hold_until) = released;
            if let Some((template, event)) = template_event {
                self.ctx
                    .write_all(Command::Platform {
                        event: PlatformEvent::TemplateStatus { template, event },
                        event_key: None,
                    })
                    .await?;
            }
            let mut effects = Vec::new();
            if released {
                effects.push(pb::OutcomeEffect::Released as i32);
            }
            let effect = match code {
                Some(131056) => Some(pb::OutcomeEffect::PairBackoff),
                Some(130429) => Some(pb::OutcomeEffect::NumberBackoff),
                Some(131048) => Some(pb::OutcomeEffect::SpamCooldown),
                Some(131049) => Some(pb::OutcomeEffect::MarketingHold),
                Some(131050) => Some(pb::OutcomeEffect::OptedOut),
                Some(131047) => Some(pb::OutcomeEffect::WindowClosed),
                Some(132015) if r.template_id.is_empty() => None,
                Some(132015) => Some(pb::OutcomeEffect::TemplatePaused),
                Some(132016) if r.template_id.is_empty() => None,
                Some(132016) => Some(pb::OutcomeEffect::TemplateDisabled),
                _ => None,
            };
            effects.extend(effect.map(|e| e as i32));
            Ok(Response::new(pb::ReportOutcomeResponse {
                effects,
                hold_until_unix_ms: hold_until.map(ms),
                duplicate: false,
            }))
        })
        .await
    }
}

impl AdmitService {
    async fn profile_of(
        &self,
        shard: u32,
        number: &admit_core::NumberId,
    ) -> Result<String, ApiError> {
        Ok(self
            .ctx
            .number_status(shard, number, self.ctx.now())
            .await?
            .and_then(|s| s.numbers.first().map(|n| n.profile.clone()))
            .unwrap_or_else(|| "seeds".into()))
    }
}
