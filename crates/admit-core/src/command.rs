//! Commands in, outputs out. A command carries no time of its own: the replicated log
//! stamps one, and [`crate::Engine::apply`] takes it as an argument.

use crate::decision::{AdmissionId, Decision, ScopeKey};
use crate::ids::{IdempotencyKey, NumberId, PortfolioId, TemplateId, WaId};
use crate::policy::{Category, Limit, Policy, Quality, TierInput};
use crate::time::Ts;
use serde::{Deserialize, Serialize};

/// What is being sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendKind {
    Template { id: TemplateId, category: Category },
    FreeForm,
}

/// One send to decide (R3.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmitRequest {
    pub number: NumberId,
    pub customer: WaId,
    pub kind: SendKind,
    pub idempotency_key: Option<IdempotencyKey>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InboundKind {
    Message,
    Call,
}

/// The customer messaged (or called) the number: the service window opens (R2.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    pub number: NumberId,
    pub customer: WaId,
    pub kind: InboundKind,
    /// The text, for opt-out and opt-in keywords (R7.1).
    pub text: Option<String>,
    /// A stable key of the delivery (Meta's message id): applied at most once.
    pub event_key: Option<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Read,
    Failed,
}

/// Meta's answer for a send, reported by the sender (section 9, docs/rules.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub number: NumberId,
    pub customer: WaId,
    pub admission: Option<AdmissionId>,
    pub status: DeliveryStatus,
    pub error_code: Option<u32>,
    pub template: Option<TemplateId>,
    /// A stable key of the report: applied at most once.
    pub event_key: Option<String>,
    /// Meta's id of the sent message (`wamid`). With an admission (the sender's
    /// report after the send) it is remembered for the admission's conversation
    /// window; without one (a status from Meta's webhook) it finds the admission
    /// remembered for it (R3.5). Layout 5 on (see `legacy`).
    pub message_id: Option<String>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NumberStatus {
    Connected,
    Flagged,
    Disconnected,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    Number(NumberId),
    Portfolio(PortfolioId),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TemplateEvent {
    /// Active again, also after Disabled (the only way back from Disabled).
    Approved,
    /// `title` is Meta's FIRST_PAUSE / SECOND_PAUSE: that pause, exactly (the pause count
    /// is set to it). Without a title (error 132015 in a send's outcome, or a webhook
    /// without `other_info.title`) it is a pause of unknown rank: it starts a pause of
    /// the first pause's length only if the template is neither paused nor disabled, and
    /// never raises the pause count past one, so repeated or late 132015 reports cannot
    /// escalate it towards Disabled (R6.2). `until` overrides the profile's length.
    /// A Disabled template is never paused (see `Approved`).
    Paused {
        title: Option<String>,
        until: Option<Ts>,
    },
    /// Active again, unless Disabled.
    Unpaused,
    Disabled,
}

/// Meta's account restriction types (`restriction_info[].restriction_type`, section 10).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RestrictionType {
    /// RESTRICTED_BIZ_INITIATED_MESSAGING: no business-initiated sends, i.e. every send
    /// outside an open customer service window (or free entry point window, which
    /// behaves as one, R2.3); replies inside one stay allowed.
    BizInitiated,
    /// RESTRICTED_CUSTOMER_INITIATED_MESSAGING: no replies inside a customer service (or
    /// free entry point) window.
    CustomerInitiated,
    /// RESTRICTED_ADD_PHONE_NUMBER_ACTION: no new numbers; no effect on admission (shown
    /// in status only).
    AddPhoneNumber,
}

/// Facts reported by the platform: authoritative, applied at once (R5.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlatformEvent {
    NumberQuality {
        number: NumberId,
        quality: Quality,
    },
    NumberStatus {
        number: NumberId,
        status: NumberStatus,
    },
    /// A tier or limit, in any of section 10's forms.
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
    /// Meta restricted the account until `until` (`None`: until lifted); `lifted` ends it.
    /// `types` says which sends are denied; an empty list denies every send (fail safe:
    /// a restriction of unknown kind).
    AccountRestriction {
        target: Target,
        until: Option<Ts>,
        lifted: bool,
        types: Vec<RestrictionType>,
    },
    UserPreference {
        number: NumberId,
        customer: WaId,
        stop: bool,
    },
    /// R2.3: a free entry point window opens for the customer. Only under a profile with
    /// free entry points (meta; `free_entry_window` > 0): the seeds profile ignores it.
    FreeEntryPoint {
        number: NumberId,
        customer: WaId,
    },
    DisplayName {
        number: NumberId,
        approved: bool,
    },
}

/// Register a number, or update the fields given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberRegistration {
    pub number: Option<NumberId>,
    pub portfolio: Option<PortfolioId>,
    pub profile: Option<String>,
    /// An admin-set limit: authoritative like a platform event.
    pub limit: Option<Limit>,
    pub quality: Option<Quality>,
    pub display_name_approved: Option<bool>,
    pub status: Option<NumberStatus>,
    /// R8.1 per-number override (1,000 upgraded, 20 coexistence).
    pub throughput_mps: Option<u32>,
    /// The number as Meta displays it, digits only: events that carry only this form
    /// find the number by it ([`crate::Reader::number_by_display`]). Layout 5 on.
    pub display_phone_number: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortfolioRegistration {
    pub portfolio: PortfolioId,
    pub profile: Option<String>,
    pub limit: Option<Limit>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    RegisterNumber(NumberRegistration),
    RegisterPortfolio(PortfolioRegistration),
    SetPolicy(Policy),
    Admit(AdmitRequest),
    Release(AdmissionId),
    Inbound(Inbound),
    Outcome(Outcome),
    Platform {
        event: PlatformEvent,
        /// A stable key of the delivery: a repeated delivery is applied at most once.
        event_key: Option<String>,
    },
    /// Time passes: reclaims expired state and runs due transitions. The log stamps it
    /// like any command, so every replica reclaims the same entries.
    Tick,
    /// Claims `number`'s limit scope, on the number's home shard (the shard of
    /// `ScopeKey::Number(number)`), before a first registration: the home shard
    /// is the one arbiter of each number's scope, so two first registrations
    /// racing with different scopes agree on one ([`Output::Claimed`]). The first
    /// claim holds for good (a number registered on this shard holds its
    /// registered scope); repeating a claim answers the same. `scope` must be
    /// `Number(number)` or a portfolio. New in log layout 6.
    ClaimScope {
        number: NumberId,
        scope: ScopeKey,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptChange {
    OptedOut,
    OptedIn,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    Decision(Decision),
    Released {
        released: bool,
    },
    Inbound {
        window_end: Ts,
        opt: Option<OptChange>,
        duplicate: bool,
    },
    Outcome {
        released: bool,
        /// The end of a hold or back-off this outcome set (section 9).
        hold_until: Option<Ts>,
        duplicate: bool,
    },
    Event {
        applied: bool,
        note: Option<String>,
    },
    Registered,
    Ticked {
        reclaimed: u64,
    },
    /// The scope that holds for the number of a [`Command::ClaimScope`]: the one
    /// claimed first (maybe by this command), or the one it is registered in here.
    Claimed {
        scope: ScopeKey,
    },
}
