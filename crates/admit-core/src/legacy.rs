//! Older layouts of [`Command`], kept so that a Raft log written by an older build
//! still decodes after the command's encoding changed (the log is postcard, which
//! carries no field names: a new field is a new layout).
//!
//! Each layout is an explicit type with a conversion into today's [`Command`]; the
//! server picks the type by the layout number stored with the log entry (see
//! `admit-server`'s `app::layout`). Only serde and this crate's own types here.
//!
//! * `CommandV1`: builds from commit 3ca74d0 (event keys) up to 0920f48: account
//!   restrictions had no types.
//! * `CommandV2`: builds from 0920f48 up to 08be5d8: policies had no back-off reset
//!   periods (the snapshot's `PolicyV3`).
//! * `CommandV4`: builds from 08be5d8 up to the display numbers and message ids:
//!   number registrations without `display_phone_number`, outcomes without
//!   `message_id`.
//! * today's [`Command`]: from then on.

use crate::command::{
    AdmitRequest, DeliveryStatus, Inbound, NumberRegistration, NumberStatus, Outcome,
    PlatformEvent, PortfolioRegistration, Target, TemplateEvent,
};
use crate::decision::AdmissionId;
use crate::ids::{NumberId, PortfolioId, TemplateId, WaId};
use crate::policy::{Limit, Policy, Quality, TierInput};
pub use crate::snapshot::PolicyV3;
use crate::time::Ts;
use crate::Command;
use serde::Deserialize;

/// [`Command`] as builds before the display numbers and message ids wrote it (log
/// layouts 3 and 4).
#[derive(Debug, Deserialize)]
pub enum CommandV4 {
    RegisterNumber(NumberRegistrationV4),
    RegisterPortfolio(PortfolioRegistration),
    SetPolicy(Policy),
    Admit(AdmitRequest),
    Release(AdmissionId),
    Inbound(Inbound),
    Outcome(OutcomeV4),
    Platform {
        event: PlatformEvent,
        event_key: Option<String>,
    },
    Tick,
}

/// [`NumberRegistration`] without `display_phone_number`.
#[derive(Debug, Deserialize)]
pub struct NumberRegistrationV4 {
    number: Option<NumberId>,
    portfolio: Option<PortfolioId>,
    profile: Option<String>,
    limit: Option<Limit>,
    quality: Option<Quality>,
    display_name_approved: Option<bool>,
    status: Option<NumberStatus>,
    throughput_mps: Option<u32>,
}

/// [`Outcome`] without `message_id`.
#[derive(Debug, Deserialize)]
pub struct OutcomeV4 {
    number: NumberId,
    customer: WaId,
    admission: Option<AdmissionId>,
    status: DeliveryStatus,
    error_code: Option<u32>,
    template: Option<TemplateId>,
    event_key: Option<String>,
}

impl From<NumberRegistrationV4> for NumberRegistration {
    fn from(r: NumberRegistrationV4) -> NumberRegistration {
        NumberRegistration {
            number: r.number,
            portfolio: r.portfolio,
            profile: r.profile,
            limit: r.limit,
            quality: r.quality,
            display_name_approved: r.display_name_approved,
            status: r.status,
            throughput_mps: r.throughput_mps,
            display_phone_number: None,
        }
    }
}

impl From<OutcomeV4> for Outcome {
    fn from(o: OutcomeV4) -> Outcome {
        Outcome {
            number: o.number,
            customer: o.customer,
            admission: o.admission,
            status: o.status,
            error_code: o.error_code,
            template: o.template,
            event_key: o.event_key,
            message_id: None,
        }
    }
}

impl From<CommandV4> for Command {
    fn from(c: CommandV4) -> Command {
        match c {
            CommandV4::RegisterNumber(r) => Command::RegisterNumber(r.into()),
            CommandV4::RegisterPortfolio(r) => Command::RegisterPortfolio(r),
            CommandV4::SetPolicy(p) => Command::SetPolicy(p),
            CommandV4::Admit(r) => Command::Admit(r),
            CommandV4::Release(a) => Command::Release(a),
            CommandV4::Inbound(i) => Command::Inbound(i),
            CommandV4::Outcome(o) => Command::Outcome(o.into()),
            CommandV4::Platform { event, event_key } => Command::Platform { event, event_key },
            CommandV4::Tick => Command::Tick,
        }
    }
}

/// [`Command`] as builds before 08be5d8 wrote it; `E` is the platform event's
/// layout (V1's or today's).
#[derive(Debug, Deserialize)]
pub enum CommandV2<E = PlatformEvent> {
    RegisterNumber(NumberRegistrationV4),
    RegisterPortfolio(PortfolioRegistration),
    SetPolicy(PolicyV3),
    Admit(AdmitRequest),
    Release(AdmissionId),
    Inbound(Inbound),
    Outcome(OutcomeV4),
    Platform { event: E, event_key: Option<String> },
    Tick,
}

/// [`Command`] as builds before 0920f48 wrote it.
pub type CommandV1 = CommandV2<PlatformEventV1>;

/// [`PlatformEvent`] before account restrictions had types.
#[derive(Debug, Deserialize)]
pub enum PlatformEventV1 {
    NumberQuality {
        number: NumberId,
        quality: Quality,
    },
    NumberStatus {
        number: NumberId,
        status: NumberStatus,
    },
    LimitChange {
        target: Target,
        tier: TierInput,
    },
    TemplateStatus {
        template: TemplateId,
        event: TemplateEvent,
    },
    TemplateQuality {
        template: TemplateId,
        quality: Quality,
    },
    AccountRestriction {
        target: Target,
        until: Option<Ts>,
        lifted: bool,
    },
    UserPreference {
        number: NumberId,
        customer: WaId,
        stop: bool,
    },
    FreeEntryPoint {
        number: NumberId,
        customer: WaId,
    },
    DisplayName {
        number: NumberId,
        approved: bool,
    },
}

impl From<PlatformEventV1> for PlatformEvent {
    fn from(e: PlatformEventV1) -> PlatformEvent {
        use PlatformEventV1 as V1;
        match e {
            V1::NumberQuality { number, quality } => {
                PlatformEvent::NumberQuality { number, quality }
            }
            V1::NumberStatus { number, status } => PlatformEvent::NumberStatus { number, status },
            V1::LimitChange { target, tier } => PlatformEvent::LimitChange { target, tier },
            V1::TemplateStatus { template, event } => {
                PlatformEvent::TemplateStatus { template, event }
            }
            V1::TemplateQuality { template, quality } => {
                PlatformEvent::TemplateQuality { template, quality }
            }
            // no types: every send denied, as those builds applied it
            V1::AccountRestriction {
                target,
                until,
                lifted,
            } => PlatformEvent::AccountRestriction {
                target,
                until,
                lifted,
                types: Vec::new(),
            },
            V1::UserPreference {
                number,
                customer,
                stop,
            } => PlatformEvent::UserPreference {
                number,
                customer,
                stop,
            },
            V1::FreeEntryPoint { number, customer } => {
                PlatformEvent::FreeEntryPoint { number, customer }
            }
            V1::DisplayName { number, approved } => PlatformEvent::DisplayName { number, approved },
        }
    }
}

impl<E: Into<PlatformEvent>> From<CommandV2<E>> for Command {
    fn from(c: CommandV2<E>) -> Command {
        match c {
            CommandV2::RegisterNumber(r) => Command::RegisterNumber(r.into()),
            CommandV2::RegisterPortfolio(r) => Command::RegisterPortfolio(r),
            // the reset periods those builds did not have: the built-in ones
            CommandV2::SetPolicy(p) => Command::SetPolicy(p.into()),
            CommandV2::Admit(r) => Command::Admit(r),
            CommandV2::Release(a) => Command::Release(a),
            CommandV2::Inbound(i) => Command::Inbound(i),
            CommandV2::Outcome(o) => Command::Outcome(o.into()),
            CommandV2::Platform { event, event_key } => Command::Platform {
                event: event.into(),
                event_key,
            },
            CommandV2::Tick => Command::Tick,
        }
    }
}
