//! The values callers handle: sends, decisions, status views, events and
//! outcomes, with their conversions to and from the `admit.v1` messages.
//! Imports `admit-proto` (the generated messages) and serde (so that tools
//! can print them as JSON); nothing else of the workspace.

use std::time::Duration;

use admit_proto::v1 as pb;
use serde::Serialize;

/// A template's category (R7.2: marketing is blocked for opted-out
/// customers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Marketing,
    Utility,
    Authentication,
}

impl Category {
    fn to_pb(self) -> pb::TemplateCategory {
        match self {
            Category::Marketing => pb::TemplateCategory::Marketing,
            Category::Utility => pb::TemplateCategory::Utility,
            Category::Authentication => pb::TemplateCategory::Authentication,
        }
    }
}

/// What is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// A template message.
    Template { id: String, category: Category },
    /// A free-form message (inside a window or an open conversation only).
    FreeForm,
}

/// One send to decide: which number sends what to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SendSpec {
    /// The sending number (`phone_number_id`).
    pub number: String,
    /// The recipient (`wa_id`).
    pub customer: String,
    pub message: Message,
    /// The idempotency key; the client generates one when `None`, so that a
    /// retry after an unknown outcome is counted at most once (R3.4).
    pub idempotency_key: Option<String>,
}

impl SendSpec {
    /// A template send.
    pub fn template(number: &str, customer: &str, template_id: &str, category: Category) -> Self {
        SendSpec {
            number: number.to_owned(),
            customer: customer.to_owned(),
            message: Message::Template {
                id: template_id.to_owned(),
                category,
            },
            idempotency_key: None,
        }
    }

    /// A free-form send.
    pub fn free_form(number: &str, customer: &str) -> Self {
        SendSpec {
            number: number.to_owned(),
            customer: customer.to_owned(),
            message: Message::FreeForm,
            idempotency_key: None,
        }
    }

    /// The same send with a caller-chosen idempotency key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    pub(crate) fn to_pb(&self, key: String) -> pb::Send {
        pb::Send {
            number_id: self.number.clone(),
            customer_id: self.customer.clone(),
            kind: Some(match &self.message {
                Message::Template { id, category } => pb::send::Kind::Template(pb::Template {
                    template_id: id.clone(),
                    category: category.to_pb() as i32,
                    ..Default::default()
                }),
                Message::FreeForm => pb::send::Kind::FreeForm(pb::FreeForm {}),
            }),
            idempotency_key: key,
        }
    }

    pub(crate) fn template_id(&self) -> Option<&str> {
        match &self.message {
            Message::Template { id, .. } => Some(id),
            Message::FreeForm => None,
        }
    }
}

/// A tier and its limit; `limit` is `None` for the unlimited tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tier {
    pub name: String,
    pub limit: Option<u32>,
}

impl Tier {
    fn from_pb(t: Option<pb::Tier>) -> Option<Tier> {
        t.map(|t| Tier {
            name: t.name,
            limit: (!t.unlimited).then_some(t.limit),
        })
    }
}

/// A scope's limit usage in the rolling 24 h window (R3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// "number" or "portfolio".
    pub scope: &'static str,
    pub scope_id: String,
    pub tier: Option<Tier>,
    pub used: u32,
    /// Meaningless (0) when unlimited.
    pub headroom: u32,
    pub next_release_unix_ms: Option<i64>,
}

impl Usage {
    fn from_pb(u: Option<pb::LimitUsage>) -> Option<Usage> {
        u.map(|u| Usage {
            scope: match u.scope() {
                pb::LimitScope::Portfolio => "portfolio",
                _ => "number",
            },
            scope_id: u.scope_id.clone(),
            tier: Tier::from_pb(u.tier),
            used: u.used,
            headroom: u.headroom,
            next_release_unix_ms: u.next_release_unix_ms,
        })
    }

    /// True for the unlimited tier.
    pub fn unlimited(&self) -> bool {
        self.tier.as_ref().is_some_and(|t| t.limit.is_none())
    }
}

/// Why a send was allowed or denied (see `Reason` in `admit.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    ServiceWindow,
    FreeEntryPoint,
    OpenConversation,
    NewConversation,
    LimitReached,
    OutsideServiceWindow,
    OptedOut,
    TemplatePaused,
    TemplateDisabled,
    NumberRestricted,
    ThroughputLimited,
    PairRateLimited,
    MarketingHold,
    SpamCooldown,
    UnknownNumber,
    /// A value this client does not know (a newer server).
    Other,
}

impl Reason {
    fn from_pb(r: pb::Reason) -> Reason {
        use pb::Reason as P;
        match r {
            P::ServiceWindow => Reason::ServiceWindow,
            P::FreeEntryPoint => Reason::FreeEntryPoint,
            P::OpenConversation => Reason::OpenConversation,
            P::NewConversation => Reason::NewConversation,
            P::LimitReached => Reason::LimitReached,
            P::OutsideServiceWindow => Reason::OutsideServiceWindow,
            P::OptedOut => Reason::OptedOut,
            P::TemplatePaused => Reason::TemplatePaused,
            P::TemplateDisabled => Reason::TemplateDisabled,
            P::NumberRestricted => Reason::NumberRestricted,
            P::ThroughputLimited => Reason::ThroughputLimited,
            P::PairRateLimited => Reason::PairRateLimited,
            P::MarketingHold => Reason::MarketingHold,
            P::SpamCooldown => Reason::SpamCooldown,
            P::UnknownNumber => Reason::UnknownNumber,
            P::Unspecified => Reason::Other,
        }
    }

    /// The reason in snake case, as printed by tools.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ServiceWindow => "service_window",
            Reason::FreeEntryPoint => "free_entry_point",
            Reason::OpenConversation => "open_conversation",
            Reason::NewConversation => "new_conversation",
            Reason::LimitReached => "limit_reached",
            Reason::OutsideServiceWindow => "outside_service_window",
            Reason::OptedOut => "opted_out",
            Reason::TemplatePaused => "template_paused",
            Reason::TemplateDisabled => "template_disabled",
            Reason::NumberRestricted => "number_restricted",
            Reason::ThroughputLimited => "throughput_limited",
            Reason::PairRateLimited => "pair_rate_limited",
            Reason::MarketingHold => "marketing_hold",
            Reason::SpamCooldown => "spam_cooldown",
            Reason::UnknownNumber => "unknown_number",
            Reason::Other => "other",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decision for one send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    /// For a denial that may succeed later: how long to wait. `None` when
    /// retrying cannot help.
    #[serde(serialize_with = "millis")]
    pub retry_after: Option<Duration>,
    pub retry_at_unix_ms: Option<i64>,
    pub usage: Option<Usage>,
    pub window_end_unix_ms: Option<i64>,
    /// Set when the send opened a counted conversation: the id to release.
    pub admission_id: Option<String>,
    pub counted: bool,
    /// A stored decision returned again for a repeated idempotency key.
    pub replayed: bool,
    pub decided_at_unix_ms: i64,
    /// The idempotency key the send carried (the caller's or a generated
    /// one).
    pub idempotency_key: String,
}

fn millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

impl Decision {
    pub(crate) fn from_pb(d: pb::Decision, key: String) -> Decision {
        Decision {
            allowed: d.allowed,
            reason: Reason::from_pb(d.reason()),
            retry_after: d
                .retry_after_ms
                .map(|ms| Duration::from_millis(ms.max(0) as u64)),
            retry_at_unix_ms: d.retry_at_unix_ms,
            usage: Usage::from_pb(d.usage),
            window_end_unix_ms: d.window_end_unix_ms,
            admission_id: (!d.admission_id.is_empty()).then_some(d.admission_id),
            counted: d.counted,
            replayed: d.replayed,
            decided_at_unix_ms: d.decided_at_unix_ms,
            idempotency_key: key,
        }
    }
}

/// A number or a portfolio.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Number(String),
    Portfolio(String),
}

impl Target {
    pub(crate) fn to_pb(&self) -> pb::Target {
        pb::Target {
            target: Some(match self {
                Target::Number(n) => pb::target::Target::NumberId(n.clone()),
                Target::Portfolio(p) => pb::target::Target::PortfolioId(p.clone()),
            }),
        }
    }
}

/// Lower-case name of a protobuf enum value without its type prefix
/// (`NUMBER_QUALITY_HIGH` -> `high`).
fn enum_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

/// The status of a number or a portfolio (docs/rules.md section 11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// Empty for a portfolio.
    pub number: String,
    pub portfolio: String,
    pub profile: String,
    pub usage: Option<Usage>,
    /// The limit is used up now (R4.1).
    pub restricted: bool,
    pub restricted_until_unix_ms: Option<i64>,
    /// healthy, at_risk or restricted (R4.3).
    pub account_status: String,
    /// high, medium, low or unknown (R6.1).
    pub quality: String,
    /// connected, flagged, ... ("unspecified" for a portfolio).
    pub number_status: String,
    pub flagged_since_unix_ms: Option<i64>,
    pub upgrade_eligible: bool,
    pub upgrade_at_unix_ms: Option<i64>,
    pub upgrade_to: Option<Tier>,
    pub observe_only: bool,
    pub downgrade_at_unix_ms: Option<i64>,
    pub unique_7d: u64,
    pub unique_30d: u64,
    pub uniques_estimated: bool,
    pub opted_out: u64,
    pub spam_cooldown_until_unix_ms: Option<i64>,
    pub account_restricted: bool,
    pub account_restricted_until_unix_ms: Option<i64>,
    pub display_name_approved: bool,
    pub throughput_mps: u32,
    pub as_of_unix_ms: i64,
}

impl Status {
    pub(crate) fn from_pb(s: pb::StatusView) -> Status {
        let up = s.upgrade.clone();
        let uc = s.unique_customers.unwrap_or_default();
        Status {
            account_status: enum_name(s.account_status().as_str_name(), "ACCOUNT_STATUS_"),
            quality: enum_name(s.quality().as_str_name(), "NUMBER_QUALITY_"),
            number_status: enum_name(s.number_status().as_str_name(), "NUMBER_STATUS_"),
            number: s.number_id,
            portfolio: s.portfolio_id,
            profile: s.profile,
            usage: Usage::from_pb(s.usage),
            restricted: s.restricted,
            restricted_until_unix_ms: s.restricted_until_unix_ms,
            flagged_since_unix_ms: s.flagged_since_unix_ms,
            upgrade_eligible: up.as_ref().is_some_and(|u| u.eligible),
            upgrade_at_unix_ms: up.as_ref().and_then(|u| u.upgrade_at_unix_ms),
            upgrade_to: up
                .as_ref()
                .and_then(|u| Tier::from_pb(u.predicted_tier.clone())),
            observe_only: up.as_ref().is_some_and(|u| u.observe_only),
            downgrade_at_unix_ms: s.downgrade_at_unix_ms,
            unique_7d: uc.last_7d,
            unique_30d: uc.last_30d,
            uniques_estimated: uc.estimated,
            opted_out: s.opt_out_count,
            spam_cooldown_until_unix_ms: s.spam_cooldown_until_unix_ms,
            account_restricted: s.account_restricted,
            account_restricted_until_unix_ms: s.account_restricted_until_unix_ms,
            display_name_approved: s.display_name_approved,
            throughput_mps: s.throughput_mps,
            as_of_unix_ms: s.as_of_unix_ms,
        }
    }

    /// The headroom, `None` when unlimited or without a limit.
    pub fn headroom(&self) -> Option<u32> {
        self.usage
            .as_ref()
            .filter(|u| !u.unlimited())
            .map(|u| u.headroom)
    }
}

/// An inbound contact from a customer (R2.1, R7.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inbound {
    pub number: String,
    pub customer: String,
    /// A call rather than a message.
    pub call: bool,
    /// The message text, matched against opt-out / opt-in keywords.
    pub text: Option<String>,
    /// Meta marked it a free entry point (R2.3).
    pub free_entry_point: bool,
    /// De-duplication key (e.g. the `wamid`); generated when `None`.
    pub event_key: Option<String>,
}

impl Inbound {
    /// A message from `customer` to `number`.
    pub fn message(number: &str, customer: &str, text: Option<&str>) -> Inbound {
        Inbound {
            number: number.to_owned(),
            customer: customer.to_owned(),
            call: false,
            text: text.map(str::to_owned),
            free_entry_point: false,
            event_key: None,
        }
    }
}

/// What an inbound contact changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboundResult {
    pub window_end_unix_ms: i64,
    pub free_entry_point_end_unix_ms: Option<i64>,
    /// none, opted_out or opted_in.
    pub opt_change: String,
    pub duplicate: bool,
}

/// Meta's delivery status of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Sent,
    Delivered,
    Read,
    /// Failed with Meta's error code (`errors[].code`), if known.
    Failed(Option<u32>),
}

/// The outcome of a send, as reported to admit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub number: String,
    pub customer: String,
    /// The admission the send was made under (to release on failure).
    pub admission_id: Option<String>,
    pub delivery: Delivery,
    pub template_id: Option<String>,
    /// De-duplication key; generated when `None`.
    pub event_key: Option<String>,
    /// Meta's id of the sent message (wamid); with `admission_id`, a later
    /// outcome naming only the message finds the admission (see
    /// `ReportOutcomeRequest.message_id`).
    pub message_id: Option<String>,
}

impl Outcome {
    pub(crate) fn to_pb(&self, key: String) -> pb::ReportOutcomeRequest {
        let (status, code) = match self.delivery {
            Delivery::Sent => (pb::DeliveryStatus::Sent, None),
            Delivery::Delivered => (pb::DeliveryStatus::Delivered, None),
            Delivery::Read => (pb::DeliveryStatus::Read, None),
            Delivery::Failed(c) => (pb::DeliveryStatus::Failed, c),
        };
        pb::ReportOutcomeRequest {
            number_id: self.number.clone(),
            customer_id: self.customer.clone(),
            admission_id: self.admission_id.clone().unwrap_or_default(),
            status: status as i32,
            meta_error_code: code,
            template_id: self.template_id.clone().unwrap_or_default(),
            event_key: key,
            message_id: self.message_id.clone().unwrap_or_default(),
        }
    }
}

/// What the service did about an outcome (docs/rules.md section 9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutcomeResult {
    /// Effects in snake case (released, pair_backoff, ...).
    pub effects: Vec<String>,
    pub hold_until_unix_ms: Option<i64>,
    pub duplicate: bool,
}

impl OutcomeResult {
    pub(crate) fn from_pb(r: pb::ReportOutcomeResponse) -> OutcomeResult {
        OutcomeResult {
            effects: r
                .effects
                .iter()
                .map(|e| {
                    pb::OutcomeEffect::try_from(*e)
                        .map(|e| enum_name(e.as_str_name(), "OUTCOME_EFFECT_"))
                        .unwrap_or_else(|_| format!("effect_{e}"))
                })
                .collect(),
            hold_until_unix_ms: r.hold_until_unix_ms,
            duplicate: r.duplicate,
        }
    }

    /// True if the admission was released.
    pub fn released(&self) -> bool {
        self.effects.iter().any(|e| e == "released")
    }
}

impl InboundResult {
    pub(crate) fn from_pb(r: pb::RecordInboundResponse) -> InboundResult {
        InboundResult {
            window_end_unix_ms: r.window_end_unix_ms,
            free_entry_point_end_unix_ms: r.free_entry_point_end_unix_ms,
            opt_change: enum_name(r.opt_change().as_str_name(), "OPT_CHANGE_"),
            duplicate: r.duplicate,
        }
    }
}

/// A platform event applied by hand or from a webhook (R5.6: events are
/// authoritative). The common ones are typed; any other goes as `Raw`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The tier of a number or portfolio changed; `tier` as Meta sends it
    /// ("TIER_1K", "TIER_UNLIMITED", "10000", ...).
    Tier { target: Target, tier: String },
    /// A number's quality rating changed: "high", "medium", "low", "unknown"
    /// (Meta's GREEN / YELLOW / RED too).
    NumberQuality { number: String, quality: String },
    /// A template's status changed: "approved", "paused", "unpaused",
    /// "disabled".
    TemplateStatus { template_id: String, status: String },
    /// A template's quality changed: "high", "medium", "low", "pending".
    TemplateQuality {
        template_id: String,
        quality: String,
    },
    /// Any event of `ApplyEventRequest`.
    Raw(pb::apply_event_request::Event),
}

impl Event {
    /// The protobuf event; a value the API does not know names the field.
    pub fn to_pb(&self) -> Result<pb::apply_event_request::Event, crate::Error> {
        use pb::apply_event_request::Event as E;
        let bad = |field: &str, v: &str, allowed: &str| crate::Error::InvalidArgument {
            field: Some(field.to_owned()),
            message: format!("unknown value {v:?} (one of {allowed})"),
        };
        Ok(match self {
            Event::Tier { target, tier } => E::Tier(pb::TierChanged {
                target: Some(target.to_pb()),
                tier: Some(tier_value(tier)),
                old_tier: None,
            }),
            Event::NumberQuality { number, quality } => {
                E::NumberQuality(pb::NumberQualityChanged {
                    number_id: number.clone(),
                    quality: parse_quality(quality)
                        .ok_or_else(|| bad("quality", quality, "high, medium, low, unknown"))?
                        as i32,
                })
            }
            Event::TemplateStatus {
                template_id,
                status,
            } => {
                let ev = match status.to_ascii_lowercase().as_str() {
                    "approved" => pb::TemplateStatusEvent::Approved,
                    "paused" => pb::TemplateStatusEvent::Paused,
                    "unpaused" => pb::TemplateStatusEvent::Unpaused,
                    "disabled" => pb::TemplateStatusEvent::Disabled,
                    _ => {
                        return Err(bad(
                            "status",
                            status,
                            "approved, paused, unpaused, disabled",
                        ))
                    }
                };
                E::TemplateStatus(pb::TemplateStatusChanged {
                    template_id: template_id.clone(),
                    event: ev as i32,
                    ..Default::default()
                })
            }
            Event::TemplateQuality {
                template_id,
                quality,
            } => {
                let q = match quality.to_ascii_lowercase().as_str() {
                    "high" | "green" => pb::TemplateQuality::High,
                    "medium" | "yellow" => pb::TemplateQuality::Medium,
                    "low" | "red" => pb::TemplateQuality::Low,
                    "pending" | "unknown" => pb::TemplateQuality::Pending,
                    _ => return Err(bad("quality", quality, "high, medium, low, pending")),
                };
                E::TemplateQuality(pb::TemplateQualityChanged {
                    template_id: template_id.clone(),
                    quality: q as i32,
                    ..Default::default()
                })
            }
            Event::Raw(e) => e.clone(),
        })
    }
}

/// A tier as Meta writes it: a name ("TIER_1K") or the integer form
/// ("10000", "-1" for unlimited).
pub fn tier_value(tier: &str) -> pb::TierValue {
    let t = tier.trim();
    pb::TierValue {
        tier: Some(match t.parse::<i64>() {
            Ok(v) => pb::tier_value::Tier::TierValue(v),
            Err(_) => pb::tier_value::Tier::TierName(t.to_owned()),
        }),
    }
}

/// A number quality by name (Meta's colours too).
pub fn parse_quality(q: &str) -> Option<pb::NumberQuality> {
    Some(match q.to_ascii_lowercase().as_str() {
        "high" | "green" => pb::NumberQuality::High,
        "medium" | "yellow" => pb::NumberQuality::Medium,
        "low" | "red" => pb::NumberQuality::Low,
        "unknown" => pb::NumberQuality::Unknown,
        _ => return None,
    })
}

/// What an applied event did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventResult {
    pub applied: bool,
    pub duplicate: bool,
    pub ignored_reason: Option<String>,
}
