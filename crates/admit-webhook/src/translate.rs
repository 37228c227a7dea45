//! From a parsed delivery to admit's calls, pure: no I/O, no clock. Each
//! change becomes zero or more [`Action`]s (an `Admin.ApplyEvent`, a
//! `RecordInbound`, a `ReportOutcome`, or a throughput setting), each with a
//! stable key derived from the payload so that Meta's repeated deliveries
//! are applied at most once (docs/rules.md section 10). Numbers are named by
//! `phone_number_id`, or found from `display_phone_number` through the
//! resolver given. Unknown fields and event kinds are listed, not refused.
//! Imports the payload types, admit-proto's request types and sha2.

use admit_proto::v1 as pb;
use pb::apply_event_request::Event;
use sha2::{Digest, Sha256};

use crate::payload::{self, Envelope, TierRaw};

/// The throughput Meta gives a number after THROUGHPUT_UPGRADE (R8.1).
pub const UPGRADED_THROUGHPUT_MPS: u32 = 1_000;

/// One call into admit.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Event(pb::ApplyEventRequest),
    Inbound(pb::RecordInboundRequest),
    Outcome(pb::ReportOutcomeRequest),
    /// `RegisterNumber` with only `throughput_mps` set: idempotent by itself.
    Throughput(pb::RegisterNumberRequest),
}

/// An action and where in the delivery it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The change's `field`.
    pub field: String,
    /// `entry[i].changes[j]`, for logs.
    pub at: String,
    pub action: Action,
}

/// What a delivery asks of admit.
#[derive(Debug, Default, PartialEq)]
pub struct Translation {
    pub planned: Vec<Planned>,
    /// `field` values admit does not know (and objects other than a
    /// WhatsApp business account), one per change.
    pub unknown: Vec<String>,
    /// Known fields whose event admit does not act on: (field, what).
    pub ignored: Vec<(String, String)>,
    /// Changes naming a display number admit cannot map to a
    /// `phone_number_id`: (field, display number).
    pub unresolved: Vec<(String, String)>,
    /// (display number, phone_number_id) pairs the delivery shows.
    pub learned: Vec<(String, String)>,
}

/// The `object` of every WhatsApp business account webhook.
pub const OBJECT: &str = "whatsapp_business_account";

/// Parses a body: the reason names the JSON position when it is malformed.
pub fn parse(body: &[u8]) -> Result<Envelope, String> {
    serde_json::from_slice(body).map_err(|e| format!("malformed body: {e}"))
}

/// Translates a delivery. `resolve` maps a display phone number (digits
/// only) to its `phone_number_id`. Errs with the reason (naming the change)
/// when a known field's value does not have Meta's shape; nothing is then
/// applied.
pub fn translate(
    env: &Envelope,
    resolve: &dyn Fn(&str) -> Option<String>,
) -> Result<Translation, String> {
    let mut t = Translation::default();
    if env.object != OBJECT {
        t.unknown.extend(
            env.entry
                .iter()
                .flat_map(|e| &e.changes)
                .map(|c| c.field.clone()),
        );
        if t.unknown.is_empty() {
            t.unknown.push(format!("object:{}", env.object));
        }
        return Ok(t);
    }
    // the pairs first: a display-only event may name a number the same
    // delivery introduces
    for e in &env.entry {
        for c in &e.changes {
            if let Some(m) = c.value.get("metadata") {
                if let Ok(m) = serde_json::from_value::<payload::Metadata>(m.clone()) {
                    if let Some(d) = m.display_phone_number.as_deref().map(digits) {
                        if !d.is_empty() {
                            t.learned.push((d, m.phone_number_id));
                        }
                    }
                }
            }
        }
    }
    let learned = t.learned.clone();
    let resolve = |display: &str| {
        let d = digits(display);
        learned
            .iter()
            .find(|(k, _)| *k == d)
            .map(|(_, v)| v.clone())
            .or_else(|| resolve(&d))
    };
    for (i, e) in env.entry.iter().enumerate() {
        for (j, c) in e.changes.iter().enumerate() {
            let at = format!("entry[{i}].changes[{j}]");
            let mut cx = Cx {
                t: &mut t,
                field: &c.field,
                at: &at,
                entry: e,
                value: &c.value,
                resolve: &resolve,
            };
            cx.change()?;
        }
    }
    Ok(t)
}

/// One change being translated.
struct Cx<'a> {
    t: &'a mut Translation,
    field: &'a str,
    at: &'a str,
    entry: &'a payload::Entry,
    value: &'a serde_json::Value,
    resolve: &'a dyn Fn(&str) -> Option<String>,
}

impl Cx<'_> {
    fn value<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(self.value.clone())
            .map_err(|e| format!("{}.value ({}): {e}", self.at, self.field))
    }

    fn push(&mut self, action: Action) {
        self.t.planned.push(Planned {
            field: self.field.to_owned(),
            at: self.at.to_owned(),
            action,
        });
    }

    fn ignore(&mut self, what: impl Into<String>) {
        self.t.ignored.push((self.field.to_owned(), what.into()));
    }

    /// A key for a platform event: the change itself (its account, time,
    /// field and value), plus a part when one change yields several events.
    fn event_key(&self, part: &str) -> String {
        key(&[
            "ev",
            &self.entry.id,
            &self.entry.time.map(|t| t.to_string()).unwrap_or_default(),
            self.field,
            &self.value.to_string(),
            part,
        ])
    }

    fn event(&mut self, part: &str, event: Event) {
        let req = pb::ApplyEventRequest {
            event_key: self.event_key(part),
            occurred_at_unix_ms: self.entry.time.map(|s| s.saturating_mul(1_000)),
            event: Some(event),
        };
        self.push(Action::Event(req));
    }

    /// The number a display-only event names, or `None` (recorded as
    /// unresolved).
    fn number_by_display(&mut self, display: &str) -> Option<String> {
        let n = (self.resolve)(display);
        if n.is_none() {
            self.t
                .unresolved
                .push((self.field.to_owned(), digits(display)));
        }
        n
    }

    fn change(&mut self) -> Result<(), String> {
        match self.field {
            "phone_number_quality_update" => self.quality_update(),
            "business_capability_update" => self.capability_update(),
            "message_template_status_update" => self.template_status(),
            "message_template_quality_update" => self.template_quality(),
            "account_update" => self.account_update(),
            "user_preferences" => self.user_preferences(),
            "messages" => self.messages(),
            "calls" => self.calls(),
            other => {
                self.t.unknown.push(other.to_owned());
                Ok(())
            }
        }
    }

    fn quality_update(&mut self) -> Result<(), String> {
        let v: payload::QualityUpdate = self.value()?;
        let event = v.event.as_deref().map(str::trim).unwrap_or("");
        let event = event.to_ascii_uppercase();
        let status = match event.as_str() {
            "FLAGGED" => Some(pb::NumberStatus::Flagged),
            "UNFLAGGED" => Some(pb::NumberStatus::Connected),
            _ => None,
        };
        let number = match v.display_phone_number.as_deref() {
            Some(d) => self.number_by_display(d),
            None => None,
        };
        let mut acted = false;
        if let Some(number) = &number {
            if let Some(status) = status {
                self.event(
                    "status",
                    Event::NumberStatus(pb::NumberStatusChanged {
                        number_id: number.clone(),
                        status: status as i32,
                    }),
                );
                acted = true;
            }
            if event == "THROUGHPUT_UPGRADE" {
                self.push(Action::Throughput(pb::RegisterNumberRequest {
                    number_id: number.clone(),
                    throughput_mps: Some(UPGRADED_THROUGHPUT_MPS),
                    ..Default::default()
                }));
                acted = true;
            }
            if let Some(tier) = &v.current_limit {
                self.event(
                    "tier",
                    Event::Tier(pb::TierChanged {
                        target: Some(target_number(number)),
                        tier: Some(tier_value(tier)),
                        old_tier: v.old_limit.as_ref().map(tier_value),
                    }),
                );
                acted = true;
            }
        }
        // the portfolio's own limit, when Meta gives one and no number's
        if v.current_limit.is_none() {
            if let Some(tier) = &v.max_daily_conversations_per_business {
                self.event(
                    "business-tier",
                    Event::Tier(pb::TierChanged {
                        target: Some(target_portfolio(&self.entry.id)),
                        tier: Some(tier_value(tier)),
                        old_tier: None,
                    }),
                );
                acted = true;
            }
        }
        if !acted && number.is_some() {
            self.ignore(format!("event {event:?} without a limit"));
        } else if !acted && v.display_phone_number.is_none() {
            self.ignore("no display_phone_number");
        }
        Ok(())
    }

    fn capability_update(&mut self) -> Result<(), String> {
        let v: payload::CapabilityUpdate = self.value()?;
        // per phone (each number's own limit, seeds) or per business
        // (the portfolio's, meta): both are the portfolio's tier event, which
        // the server applies to the portfolio or to each of its numbers
        let tier = v
            .max_daily_conversation_per_phone
            .or(v.max_daily_conversations_per_business);
        match tier {
            Some(tier) => self.event(
                "tier",
                Event::Tier(pb::TierChanged {
                    target: Some(target_portfolio(&self.entry.id)),
                    tier: Some(tier_value(&tier)),
                    old_tier: None,
                }),
            ),
            None => self.ignore("no messaging limit"),
        }
        Ok(())
    }

    fn template_status(&mut self) -> Result<(), String> {
        let v: payload::TemplateStatusUpdate = self.value()?;
        let event = v.event.trim().to_ascii_uppercase();
        let ev = match event.as_str() {
            // REINSTATED: active again after an appeal, as APPROVED
            "APPROVED" | "REINSTATED" => pb::TemplateStatusEvent::Approved,
            "PAUSED" => pb::TemplateStatusEvent::Paused,
            "UNPAUSED" => pb::TemplateStatusEvent::Unpaused,
            "DISABLED" => pb::TemplateStatusEvent::Disabled,
            _ => {
                self.ignore(format!("template event {event}"));
                return Ok(());
            }
        };
        let title = v
            .other_info
            .and_then(|o| o.title)
            .map(|t| t.trim().to_ascii_uppercase());
        let pause_title = match title.as_deref() {
            Some("FIRST_PAUSE") => pb::PauseTitle::FirstPause,
            Some("SECOND_PAUSE") => pb::PauseTitle::SecondPause,
            _ => pb::PauseTitle::Unspecified,
        };
        self.event(
            "",
            Event::TemplateStatus(pb::TemplateStatusChanged {
                template_id: v.message_template_id,
                portfolio_id: self.entry.id.clone(),
                event: ev as i32,
                pause_title: if ev == pb::TemplateStatusEvent::Paused {
                    pause_title as i32
                } else {
                    0
                },
                paused_until_unix_ms: None,
            }),
        );
        Ok(())
    }

    fn template_quality(&mut self) -> Result<(), String> {
        let v: payload::TemplateQualityUpdate = self.value()?;
        let score = v.new_quality_score.trim().to_ascii_uppercase();
        let quality = match score.as_str() {
            "GREEN" | "HIGH" => pb::TemplateQuality::High,
            "YELLOW" | "MEDIUM" => pb::TemplateQuality::Medium,
            "RED" | "LOW" => pb::TemplateQuality::Low,
            "UNKNOWN" | "PENDING" => pb::TemplateQuality::Pending,
            _ => {
                self.ignore(format!("quality score {score}"));
                return Ok(());
            }
        };
        self.event(
            "",
            Event::TemplateQuality(pb::TemplateQualityChanged {
                template_id: v.message_template_id,
                portfolio_id: self.entry.id.clone(),
                quality: quality as i32,
            }),
        );
        Ok(())
    }

    fn account_update(&mut self) -> Result<(), String> {
        let v: payload::AccountUpdate = self.value()?;
        let event = v.event.trim().to_ascii_uppercase();
        if event != "ACCOUNT_RESTRICTION" {
            self.ignore(format!("account event {event}"));
            return Ok(());
        }
        let target = match v.phone_number.as_deref() {
            Some(d) => match self.number_by_display(d) {
                Some(n) => target_number(&n),
                None => return Ok(()),
            },
            None => target_portfolio(&self.entry.id),
        };
        let mut types = Vec::new();
        let mut unknown_type = false;
        for r in &v.restriction_info {
            let t = r.restriction_type.as_deref().map(str::trim).unwrap_or("");
            match t.to_ascii_uppercase().as_str() {
                "RESTRICTED_BIZ_INITIATED_MESSAGING" => {
                    types.push(pb::RestrictionType::BizInitiatedMessaging as i32)
                }
                "RESTRICTED_CUSTOMER_INITIATED_MESSAGING" => {
                    types.push(pb::RestrictionType::CustomerInitiatedMessaging as i32)
                }
                "RESTRICTED_ADD_PHONE_NUMBER_ACTION" => {
                    types.push(pb::RestrictionType::AddPhoneNumber as i32)
                }
                _ => unknown_type = true,
            }
        }
        if unknown_type {
            // a kind admit does not know denies every send (fail safe,
            // section 10): an empty type list says so
            types.clear();
        }
        // one restriction with one end: the latest of the items, and none
        // (until lifted) when any item has none
        let ends: Vec<Option<i64>> = v.restriction_info.iter().map(|r| r.expiration).collect();
        let expires = if ends.is_empty() || ends.iter().any(Option::is_none) {
            None
        } else {
            ends.into_iter().flatten().max().map(seconds_to_ms)
        };
        self.event(
            "",
            Event::AccountRestriction(pb::AccountRestriction {
                target: Some(target),
                restriction_types: types,
                expires_at_unix_ms: expires,
                lifted: false,
            }),
        );
        Ok(())
    }

    fn user_preferences(&mut self) -> Result<(), String> {
        let v: payload::UserPreferencesValue = self.value()?;
        let number = v.metadata.phone_number_id;
        for p in v.user_preferences {
            let pref = match p.value.trim().to_ascii_lowercase().as_str() {
                "stop" => pb::UserPreferenceValue::Stop,
                "resume" => pb::UserPreferenceValue::Resume,
                other => {
                    self.ignore(format!("preference {other}"));
                    continue;
                }
            };
            let k = key(&[
                "up",
                &number,
                &p.wa_id,
                &p.value,
                &p.timestamp.map(|t| t.to_string()).unwrap_or_default(),
                p.category.as_deref().unwrap_or(""),
            ]);
            self.push(Action::Event(pb::ApplyEventRequest {
                event_key: k,
                occurred_at_unix_ms: p.timestamp.map(seconds_to_ms),
                event: Some(Event::UserPreference(pb::UserPreference {
                    number_id: number.clone(),
                    customer_id: p.wa_id,
                    preference: pref as i32,
                })),
            }));
        }
        Ok(())
    }

    fn messages(&mut self) -> Result<(), String> {
        let v: payload::MessagesValue = self.value()?;
        let number = v.metadata.phone_number_id;
        for m in v.messages {
            if m.kind.as_deref() == Some("system") {
                // a platform notice (e.g. the customer changed numbers), not a
                // message from the customer
                self.ignore("system message");
                continue;
            }
            let text = m
                .text
                .and_then(|t| t.body)
                .or_else(|| m.button.and_then(|b| b.text))
                .or_else(|| {
                    m.interactive.and_then(|i| {
                        i.button_reply
                            .and_then(|r| r.title)
                            .or_else(|| i.list_reply.and_then(|r| r.title))
                    })
                });
            self.push(Action::Inbound(pb::RecordInboundRequest {
                number_id: number.clone(),
                customer_id: m.from,
                kind: pb::InboundKind::Message as i32,
                text,
                free_entry_point: m.referral.is_some(),
                event_key: key(&["in", &number, &m.id]),
            }));
        }
        for s in v.statuses {
            let status = match s.status.trim().to_ascii_lowercase().as_str() {
                "sent" => pb::DeliveryStatus::Sent,
                "delivered" => pb::DeliveryStatus::Delivered,
                "read" => pb::DeliveryStatus::Read,
                "failed" => pb::DeliveryStatus::Failed,
                other => {
                    self.ignore(format!("status {other}"));
                    continue;
                }
            };
            // Meta gives codes with failures; the first one is the reason
            let code = if status == pb::DeliveryStatus::Failed {
                s.errors.first().and_then(|e| u32::try_from(e.code).ok())
            } else {
                None
            };
            let admission = s
                .biz_opaque_callback_data
                .as_deref()
                .and_then(admission_in_callback)
                .unwrap_or_default();
            // the wamid finds the admission the sender reported it under
            // (ReportOutcome.message_id); one admit would refuse is not sent
            let message_id = if s.id.chars().count() <= 128 && !s.id.chars().any(char::is_control) {
                s.id.clone()
            } else {
                String::new()
            };
            self.push(Action::Outcome(pb::ReportOutcomeRequest {
                number_id: number.clone(),
                customer_id: s.recipient_id,
                admission_id: admission,
                status: status as i32,
                meta_error_code: code,
                template_id: String::new(),
                message_id,
                event_key: key(&[
                    "st",
                    &number,
                    &s.id,
                    &s.status,
                    &code.map(|c| c.to_string()).unwrap_or_default(),
                ]),
            }));
        }
        Ok(())
    }

    fn calls(&mut self) -> Result<(), String> {
        let v: payload::CallsValue = self.value()?;
        let number = v.metadata.phone_number_id;
        for c in v.calls {
            let user_started = c
                .direction
                .as_deref()
                .is_none_or(|d| d.eq_ignore_ascii_case("USER_INITIATED"));
            let connect = c
                .event
                .as_deref()
                .is_none_or(|e| e.eq_ignore_ascii_case("connect"));
            match (&c.from, user_started && connect) {
                (Some(from), true) => self.push(Action::Inbound(pb::RecordInboundRequest {
                    number_id: number.clone(),
                    customer_id: from.clone(),
                    kind: pb::InboundKind::Call as i32,
                    text: None,
                    free_entry_point: false,
                    event_key: key(&["call", &number, &c.id]),
                })),
                _ => self.ignore("call event other than a customer's connect"),
            }
        }
        Ok(())
    }
}

/// The admission id a sender put in `biz_opaque_callback_data`: the whole
/// value, or the `admit=<id>` part of a value with several parts separated
/// by `;`, `&` or spaces. What does not parse as an admission id is not one.
pub fn admission_in_callback(data: &str) -> Option<String> {
    // an id as callers see it: `<admission>.<hex tag>` when the server seals
    // its ids, else the bare admission; the server checks the tag
    let valid = |s: &str| {
        let name = match s.rsplit_once('.') {
            Some((name, tag)) if !tag.is_empty() && tag.chars().all(|c| c.is_ascii_hexdigit()) => {
                name
            }
            _ => s,
        };
        admit_core::AdmissionId::parse("admission_id", name)
            .ok()
            .map(|_| s.to_owned())
    };
    valid(data.trim()).or_else(|| {
        data.split([';', '&', ' '])
            .find_map(|part| part.trim().strip_prefix("admit="))
            .and_then(valid)
    })
}

fn target_number(n: &str) -> pb::Target {
    pb::Target {
        target: Some(pb::target::Target::NumberId(n.to_owned())),
    }
}

fn target_portfolio(p: &str) -> pb::Target {
    pb::Target {
        target: Some(pb::target::Target::PortfolioId(p.to_owned())),
    }
}

/// A tier in the form it came: the server reads every form Meta sends
/// (docs/rules.md section 10) and fails safe on an unknown one.
fn tier_value(t: &TierRaw) -> pb::TierValue {
    pb::TierValue {
        tier: Some(match t {
            TierRaw::Name(n) => pb::tier_value::Tier::TierName(n.clone()),
            TierRaw::Value(v) => pb::tier_value::Tier::TierValue(*v),
        }),
    }
}

/// Unix seconds (Meta) to ms (admit). A value already in ms (13 digits) is
/// kept.
fn seconds_to_ms(s: i64) -> i64 {
    if s.abs() >= 100_000_000_000 {
        s
    } else {
        s.saturating_mul(1_000)
    }
}

/// The digits of a phone number as shown (`+1 555-000-1234` -> `15550001234`).
pub fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// A stable key from the parts: `wh1-` and 32 hex digits of their SHA-256
/// (fits every key limit of the API; collisions are out of reach).
pub fn key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let mut s = String::with_capacity(36);
    s.push_str("wh1-");
    for b in &d[..16] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}
