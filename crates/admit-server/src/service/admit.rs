//! `admit.v1.AdmitSend`: decisions, releases, inbound messages, outcomes.

use std::collections::BTreeSet;
use std::sync::Arc;

use admit_core::{Command, MetaError, Outcome, Output, PlatformEvent};
use admit_proto::v1 as pb;
use admit_proto::v1::admit_send_server::AdmitSend;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{handle, leader_hint};
use crate::convert::{self, ms};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::registry;

/// The largest batch (admit.proto).
pub const MAX_BATCH: usize = 1_000;

#[derive(Debug, Clone)]
pub struct AdmitService {
    pub(crate) ctx: Arc<Ctx>,
}

fn unexpected(out: Output) -> ApiError {
    ApiError::Internal(format!("unexpected output {out:?}"))
}

#[tonic::async_trait]
impl AdmitSend for AdmitService {
    #[instrument(level = "debug", skip_all, fields(number, reason))]
    async fn admit(
        &self,
        request: Request<pb::AdmitRequest>,
    ) -> Result<Response<pb::AdmitResponse>, Status> {
        handle(&self.ctx, &request, async {
            let req = convert::send_at("send.", request.get_ref().send.as_ref())?;
            tracing::Span::current().record("number", tracing::field::display(&req.number));
            let a = self.ctx.admission.admit(req).await?;
            let d = &a.decided;
            tracing::Span::current().record("reason", d.decision.reason.as_str());
            crate::telemetry::decided(&d.decision, d.replayed);
            let shard = d.scope.as_ref().map(|s| self.ctx.routing.shard_of(s));
            Ok(pb::AdmitResponse {
                decision: Some(convert::decision_out(
                    &d.decision,
                    d.scope.as_ref(),
                    a.now,
                    d.replayed,
                    &self.ctx.access.admission_key,
                )),
                leader_hint: shard.and_then(|s| leader_hint(&self.ctx, s)),
            })
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(items))]
    async fn admit_batch(
        &self,
        request: Request<pb::AdmitBatchRequest>,
    ) -> Result<Response<pb::AdmitBatchResponse>, Status> {
        handle(&self.ctx, &request, async {
            let sends = &request.get_ref().sends;
            tracing::Span::current().record("items", sends.len());
            if sends.is_empty() || sends.len() > MAX_BATCH {
                return Err(ApiError::invalid("sends", "must hold 1 to 1000 items"));
            }
            let items = convert::sends(sends);
            let batch = self.ctx.admission.admit_many(items).await;
            let mut shards = BTreeSet::new();
            let mut decisions = crate::telemetry::Decisions::default();
            let results = batch
                .results
                .into_iter()
                .enumerate()
                .map(|(i, r)| pb::AdmitBatchResult {
                    index: i as u32,
                    result: Some(match r {
                        Ok(d) => {
                            decisions.add(&d.decision, d.replayed);
                            if let Some(s) = &d.scope {
                                shards.insert(self.ctx.routing.shard_of(s));
                            }
                            pb::admit_batch_result::Result::Decision(convert::decision_out(
                                &d.decision,
                                d.scope.as_ref(),
                                batch.now,
                                d.replayed,
                                &self.ctx.access.admission_key,
                            ))
                        }
                        Err(e) => pb::admit_batch_result::Result::Error(convert::item_error(&e)),
                    }),
                })
                .collect();
            decisions.record();
            let leader_hint = match shards.len() {
                1 => shards.first().and_then(|s| leader_hint(&self.ctx, *s)),
                _ => None,
            };
            Ok(pb::AdmitBatchResponse {
                results,
                leader_hint,
            })
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(admission))]
    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseResponse>, Status> {
        handle(&self.ctx, &request, async {
            let id = self
                .ctx
                .access
                .admission_key
                .open("admission_id", &request.get_ref().admission_id)?;
            tracing::Span::current().record("admission", tracing::field::display(&id));
            let shard = self.ctx.routing.shard_of(&id.scope);
            let scope = id.scope.clone();
            let released = match self.ctx.routing.write(shard, Command::Release(id)).await? {
                Output::Released { released } => released,
                other => return Err(unexpected(other)),
            };
            let now = self.ctx.now();
            let usage = self
                .ctx
                .reads
                .scope_status(&scope, now)
                .await?
                .map(|s| convert::usage_out(&s));
            Ok(pb::ReleaseResponse { released, usage })
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(number))]
    async fn record_inbound(
        &self,
        request: Request<pb::RecordInboundRequest>,
    ) -> Result<Response<pb::RecordInboundResponse>, Status> {
        handle(&self.ctx, &request, async {
            let r = convert::inbound_in(request.get_ref())?;
            let (number, customer) = (r.inbound.number, r.inbound.customer);
            tracing::Span::current().record("number", tracing::field::display(&number));
            let shard = self.ctx.routing.locate(&number).await?.shard;
            let out = self
                .ctx
                .routing
                .write(shard, Command::Inbound(r.inbound))
                .await?;
            let Output::Inbound {
                window_end,
                opt,
                duplicate,
            } = out
            else {
                return Err(unexpected(out));
            };
            let mut fep_end = None;
            if r.free_entry_point && !duplicate {
                let ev = Command::Platform {
                    event: PlatformEvent::FreeEntryPoint { number, customer },
                    event_key: None,
                };
                // a profile without free entry points (seeds) ignores the event
                if let Output::Event { applied: true, .. } =
                    self.ctx.routing.write(shard, ev).await?
                {
                    let profile = registry::number_profile(&self.ctx, shard, &number).await?;
                    let p = self.ctx.reads.policy(&profile).await?;
                    fep_end = Some(ms(self.ctx.now().plus(p.free_entry_window)));
                }
            }
            Ok(pb::RecordInboundResponse {
                window_end_unix_ms: ms(window_end),
                free_entry_point_end_unix_ms: fep_end,
                opt_change: convert::opt_change_out(opt),
                duplicate,
            })
        })
        .await
    }

    #[instrument(level = "debug", skip_all, fields(number, code))]
    async fn report_outcome(
        &self,
        request: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        handle(&self.ctx, &request, async {
            // the sealed id's tag is checked here; the rest of the request
            // converts as it always did
            let mut raw = request.get_ref().clone();
            if !raw.admission_id.is_empty() {
                let id = self
                    .ctx
                    .access
                    .admission_key
                    .open("admission_id", &raw.admission_id)?;
                raw.admission_id = id.to_string();
            }
            let o = convert::outcome_in(&raw)?;
            tracing::Span::current().record("number", tracing::field::display(&o.number));
            tracing::Span::current().record("code", o.error_code.unwrap_or(0));
            let at = self.ctx.routing.locate(&o.number).await?;
            // an admission counts against its number's scope: the number
            // itself, or its portfolio under the meta profile
            if o.admission.as_ref().is_some_and(|a| a.scope != at.scope) {
                return Err(ApiError::invalid(
                    "admission_id",
                    "belongs to another number's limit scope",
                ));
            }
            // Templates are global: a pause or disable is applied to every shard
            // as a template event, not only to the number's shard.
            let template_event = o
                .meta_error
                .and_then(MetaError::template_event)
                .zip(o.template.clone());
            let effect = o.meta_error.and_then(|m| m.effect(o.template.is_some()));
            // a release must reach the admission's own shard (a portfolio scope)
            let outcome_shard = o
                .admission
                .as_ref()
                .map_or(at.shard, |a| self.ctx.routing.shard_of(&a.scope));
            let outcome = Outcome {
                number: o.number,
                customer: o.customer,
                admission: o.admission,
                status: o.status,
                error_code: o.error_code,
                template: if template_event.is_some() {
                    None
                } else {
                    o.template
                },
                event_key: o.event_key,
                message_id: o.message_id,
            };
            let (released, hold_until) = match self
                .ctx
                .routing
                .write(outcome_shard, Command::Outcome(outcome))
                .await?
            {
                Output::Outcome {
                    duplicate: true, ..
                } => {
                    return Ok(pb::ReportOutcomeResponse {
                        effects: Vec::new(),
                        hold_until_unix_ms: None,
                        duplicate: true,
                    })
                }
                Output::Outcome {
                    released,
                    hold_until,
                    ..
                } => (released, hold_until),
                other => return Err(unexpected(other)),
            };
            if let Some((event, template)) = template_event {
                self.ctx
                    .routing
                    .write_all(Command::Platform {
                        event: PlatformEvent::TemplateStatus { template, event },
                        event_key: None,
                    })
                    .await?;
            }
            Ok(pb::ReportOutcomeResponse {
                effects: convert::outcome_effects(released, effect),
                hold_until_unix_ms: hold_until.map(ms),
                duplicate: false,
            })
        })
        .await
    }
}
