//! Events: platform events from the Admin API (and the shards they must be
//! applied on), inbound messages and delivery outcomes from AdmitSend, and
//! what an outcome did.

use admit_core::{
    AdmissionId, DeliveryStatus, Inbound, InboundKind, MetaError, NumberId, OptChange,
    OutcomeEffect, PlatformEvent, PortfolioId, RestrictionType, Target, TemplateEvent, TemplateId,
    WaId,
};
use admit_proto::v1 as pb;
use admit_proto::v1::apply_event_request::Event;

use super::ids::{customer, number, target, template};
use super::scalar::ts_in;
use super::status::number_status;
use super::tier::{number_quality, template_quality, tier_input};
use crate::error::ApiError;

/// The longest `event_key` of an inbound message or an outcome.
const MAX_SEND_EVENT_KEY: usize = 128;
/// The longest `event_key` of a platform event.
const MAX_PLATFORM_EVENT_KEY: usize = 256;
/// The longest inbound text.
const MAX_INBOUND_TEXT: usize = 4096;

/// Where an event is applied.
#[derive(Debug, Clone)]
pub(crate) enum EventDest {
    Number(NumberId),
    /// Every shard that knows the portfolio: holds a limit scope of it, its own (meta,
    /// on its home shard) or its numbers' (seeds, wherever each number's scope hashes
    /// to), or (for a restriction) its registration.
    Portfolio(PortfolioId),
    All,
}

/// A platform event from the API, and where it must be applied.
#[derive(Debug, Clone)]
pub(crate) struct EventIn {
    pub event: PlatformEvent,
    pub dest: EventDest,
}

/// A platform event's key, as given.
pub(crate) fn platform_event_key(key: &str) -> Result<Option<String>, ApiError> {
    if key.chars().count() > MAX_PLATFORM_EVENT_KEY {
        return Err(ApiError::invalid(
            "event_key",
            "must be at most 256 characters",
        ));
    }
    Ok((!key.is_empty()).then(|| key.to_owned()))
}

/// The key of an inbound message or an outcome, prefixed per kind so that an
/// inbound's key never collides with an outcome's or a platform event's.
fn send_event_key(kind: &str, key: &str) -> Result<Option<String>, ApiError> {
    if key.chars().count() > MAX_SEND_EVENT_KEY {
        return Err(ApiError::invalid(
            "event_key",
            "must be at most 128 characters",
        ));
    }
    Ok((!key.is_empty()).then(|| format!("{kind}/{key}")))
}

/// An inbound message from the API (R2, R7.1), and whether it came through a
/// free entry point.
pub(crate) struct InboundIn {
    pub inbound: Inbound,
    pub free_entry_point: bool,
}

pub(crate) fn inbound_in(r: &pb::RecordInboundRequest) -> Result<InboundIn, ApiError> {
    let number = number("number_id", &r.number_id)?;
    let customer = customer("customer_id", &r.customer_id)?;
    let kind = match pb::InboundKind::try_from(r.kind) {
        Ok(pb::InboundKind::Call) => InboundKind::Call,
        Ok(_) => InboundKind::Message,
        Err(_) => return Err(ApiError::invalid("kind", "unknown value")),
    };
    let event_key = send_event_key("in", &r.event_key)?;
    if r.text
        .as_ref()
        .is_some_and(|t| t.chars().count() > MAX_INBOUND_TEXT)
    {
        return Err(ApiError::invalid("text", "must be at most 4096 characters"));
    }
    Ok(InboundIn {
        inbound: Inbound {
            number,
            customer,
            kind,
            text: r.text.as_deref().and_then(admit_core::keyword_candidate),
            event_key,
        },
        free_entry_point: r.free_entry_point,
    })
}

pub(crate) fn opt_change_out(opt: Option<OptChange>) -> i32 {
    (match opt {
        Some(OptChange::OptedOut) => pb::OptChange::OptedOut,
        Some(OptChange::OptedIn) => pb::OptChange::OptedIn,
        None => pb::OptChange::None,
    }) as i32
}

/// A delivery outcome from the API, before it is routed.
#[derive(Debug, Clone)]
pub(crate) struct OutcomeIn {
    pub number: NumberId,
    pub customer: WaId,
    pub admission: Option<AdmissionId>,
    pub status: DeliveryStatus,
    pub template: Option<TemplateId>,
    /// Meta's code as given (the log keeps the integer) and its meaning.
    pub error_code: Option<u32>,
    pub meta_error: Option<MetaError>,
    pub event_key: Option<String>,
    pub message_id: Option<String>,
}

pub(crate) fn outcome_in(r: &pb::ReportOutcomeRequest) -> Result<OutcomeIn, ApiError> {
    let number = number("number_id", &r.number_id)?;
    let customer = customer("customer_id", &r.customer_id)?;
    let admission = if r.admission_id.is_empty() {
        None
    } else {
        Some(AdmissionId::parse("admission_id", &r.admission_id)?)
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
            ))
        }
    };
    let template = if r.template_id.is_empty() {
        None
    } else {
        Some(template("template_id", &r.template_id)?)
    };
    let event_key = send_event_key("out", &r.event_key)?;
    let message_id = message_id(&r.message_id)?;
    // Meta reports error codes with FAILED statuses only; a code on
    // another status is a caller's mistake, not a reason to back off
    if r.meta_error_code.is_some() && status != DeliveryStatus::Failed {
        return Err(ApiError::invalid(
            "meta_error_code",
            "is only for a FAILED status",
        ));
    }
    Ok(OutcomeIn {
        number,
        customer,
        admission,
        status,
        template,
        error_code: r.meta_error_code,
        meta_error: r.meta_error_code.map(MetaError::from),
        event_key,
        message_id,
    })
}

/// Meta's message id (`wamid`) of an outcome: at most 128 characters, no
/// control characters. Empty = none.
fn message_id(id: &str) -> Result<Option<String>, ApiError> {
    if id.chars().count() > MAX_SEND_EVENT_KEY || id.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "message_id",
            "must be at most 128 characters, without control characters",
        ));
    }
    Ok((!id.is_empty()).then(|| id.to_owned()))
}

/// What an outcome did, as `ReportOutcomeResponse.effects` lists it.
pub(crate) fn outcome_effects(released: bool, effect: Option<OutcomeEffect>) -> Vec<i32> {
    let mut effects = Vec::new();
    if released {
        effects.push(pb::OutcomeEffect::Released as i32);
    }
    effects.extend(effect.map(|e| outcome_effect_out(e) as i32));
    effects
}

fn outcome_effect_out(e: OutcomeEffect) -> pb::OutcomeEffect {
    match e {
        OutcomeEffect::PairBackoff => pb::OutcomeEffect::PairBackoff,
        OutcomeEffect::NumberBackoff => pb::OutcomeEffect::NumberBackoff,
        OutcomeEffect::SpamCooldown => pb::OutcomeEffect::SpamCooldown,
        OutcomeEffect::MarketingHold => pb::OutcomeEffect::MarketingHold,
        OutcomeEffect::OptedOut => pb::OutcomeEffect::OptedOut,
        OutcomeEffect::WindowClosed => pb::OutcomeEffect::WindowClosed,
        OutcomeEffect::TemplatePaused => pb::OutcomeEffect::TemplatePaused,
        OutcomeEffect::TemplateDisabled => pb::OutcomeEffect::TemplateDisabled,
    }
}
fn restriction_type_in(v: i32) -> Result<RestrictionType, ApiError> {
    match pb::RestrictionType::try_from(v) {
        Ok(pb::RestrictionType::BizInitiatedMessaging) => Ok(RestrictionType::BizInitiated),
        Ok(pb::RestrictionType::CustomerInitiatedMessaging) => {
            Ok(RestrictionType::CustomerInitiated)
        }
        Ok(pb::RestrictionType::AddPhoneNumber) => Ok(RestrictionType::AddPhoneNumber),
        _ => Err(ApiError::invalid(
            "account_restriction.restriction_types",
            "each must be BIZ_INITIATED_MESSAGING, \
             CUSTOMER_INITIATED_MESSAGING or ADD_PHONE_NUMBER",
        )),
    }
}

fn template_status_in(e: &pb::TemplateStatusChanged) -> Result<TemplateEvent, ApiError> {
    Ok(match pb::TemplateStatusEvent::try_from(e.event) {
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
    })
}

/// An event from the API, and where it must be applied.
pub(crate) fn event_in(ev: Option<&Event>) -> Result<EventIn, ApiError> {
    let ev = ev.ok_or_else(|| ApiError::invalid("event", "exactly one event is required"))?;
    let (event, dest) = match ev {
        Event::NumberQuality(e) => {
            let number = number("number_quality.number_id", &e.number_id)?;
            let quality = number_quality("number_quality.quality", e.quality)?
                .ok_or_else(|| ApiError::invalid("number_quality.quality", "is required"))?;
            (
                PlatformEvent::NumberQuality { number, quality },
                EventDest::Number(number),
            )
        }
        Event::NumberStatus(e) => {
            let number = number("number_status.number_id", &e.number_id)?;
            let status = number_status("number_status.status", e.status)?
                .ok_or_else(|| ApiError::invalid("number_status.status", "is required"))?;
            (
                PlatformEvent::NumberStatus { number, status },
                EventDest::Number(number),
            )
        }
        Event::Tier(e) => {
            let target = target("tier.target", e.target.as_ref())?;
            let tier = tier_input(e.tier.as_ref())
                .ok_or_else(|| ApiError::invalid("tier.tier", "is required"))?;
            let dest = match &target {
                Target::Number(n) => EventDest::Number(*n),
                Target::Portfolio(p) => EventDest::Portfolio(p.clone()),
            };
            (PlatformEvent::LimitChange { target, tier }, dest)
        }
        Event::TemplateStatus(e) => {
            let template = template("template_status.template_id", &e.template_id)?;
            let event = template_status_in(e)?;
            (
                PlatformEvent::TemplateStatus { template, event },
                EventDest::All,
            )
        }
        Event::TemplateQuality(e) => {
            let template = template("template_quality.template_id", &e.template_id)?;
            let quality = template_quality(e.quality)?;
            (
                PlatformEvent::TemplateQuality { template, quality },
                EventDest::All,
            )
        }
        Event::AccountRestriction(e) => {
            let target = target("account_restriction.target", e.target.as_ref())?;
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
                    .map(|t| restriction_type_in(*t))
                    .collect::<Result<Vec<_>, _>>()?
            };
            let dest = match &target {
                Target::Number(n) => EventDest::Number(*n),
                // every shard that knows the portfolio (its numbers may live on many);
                // NOT_FOUND, and nothing written, when none does
                Target::Portfolio(p) => EventDest::Portfolio(p.clone()),
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
            let number = number("user_preference.number_id", &e.number_id)?;
            let customer = customer("user_preference.customer_id", &e.customer_id)?;
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
                EventDest::Number(number),
            )
        }
        Event::FreeEntryPoint(e) => {
            let number = number("free_entry_point.number_id", &e.number_id)?;
            let customer = customer("free_entry_point.customer_id", &e.customer_id)?;
            (
                PlatformEvent::FreeEntryPoint { number, customer },
                EventDest::Number(number),
            )
        }
        Event::DisplayName(e) => {
            let number = number("display_name.number_id", &e.number_id)?;
            (
                PlatformEvent::DisplayName {
                    number,
                    approved: e.approved,
                },
                EventDest::Number(number),
            )
        }
    };
    Ok(EventIn { event, dest })
}
