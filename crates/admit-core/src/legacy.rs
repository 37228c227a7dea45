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
//! * today's [`Command`]: from 08be5d8 on.

use crate::command::{
    AdmitRequest, Inbound, NumberRegistration, Outcome, PlatformEvent, PortfolioRegistration,
    Target, TemplateEvent,
};
use crate::decision::AdmissionId;
use crate::ids::{NumberId, TemplateId, WaId};
use crate::policy::{Quality, TierInput};
pub use crate::snapshot::PolicyV3;
use crate::time::Ts;
use crate::Command;
use crate::NumberStatus;
use serde::Deserialize;

/// [`Command`] as builds before 08be5d8 wrote it; `E` is the platform event's
/// layout (V1's or today's).
#[derive(Debug, Deserialize)]
pub enum CommandV2<E = PlatformEvent> {
    RegisterNumber(NumberRegistration),
    RegisterPortfolio(PortfolioRegistration),
    SetPolicy(PolicyV3),
    Admit(AdmitRequest),
    Release(AdmissionId),
    Inbound(Inbound),
    Outcome(Outcome),
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
            CommandV2::RegisterNumber(r) => Command::RegisterNumber(r),
            CommandV2::RegisterPortfolio(r) => Command::RegisterPortfolio(r),
            // the reset periods those builds did not have: the built-in ones
            CommandV2::SetPolicy(p) => Command::SetPolicy(p.into()),
            CommandV2::Admit(r) => Command::Admit(r),
            CommandV2::Release(a) => Command::Release(a),
            CommandV2::Inbound(i) => Command::Inbound(i),
            CommandV2::Outcome(o) => Command::Outcome(o),
            CommandV2::Platform { event, event_key } => Command::Platform {
                event: event.into(),
                event_key,
            },
            CommandV2::Tick => Command::Tick,
        }
    }
}
