//! Meta's webhook payloads as serde types: the envelope (`object`,
//! `entry[].id`, `entry[].time`, `entry[].changes[].field` / `.value`) and the
//! value of every field the rules use (docs/rules.md section 10). Unknown
//! JSON fields are accepted and ignored; ids and times are read whether Meta
//! sends them as strings or as numbers. Imports serde only.

use serde::{Deserialize, Deserializer};

/// One POST body.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    /// `whatsapp_business_account` for every field below.
    pub object: String,
    pub entry: Vec<Entry>,
}

/// One entry: the business account (portfolio) the changes belong to.
#[derive(Debug, Deserialize)]
pub struct Entry {
    /// The WhatsApp Business Account id (admit's portfolio id).
    #[serde(deserialize_with = "text")]
    pub id: String,
    /// When the changes happened, Unix seconds (absent on `messages`).
    #[serde(default, deserialize_with = "opt_int")]
    pub time: Option<i64>,
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// One change: its field name and the field's value, read by the field's
/// own type once the field is known.
#[derive(Debug, Deserialize)]
pub struct Change {
    pub field: String,
    #[serde(default)]
    pub value: serde_json::Value,
}

/// A tier as Meta sends it: a name (`TIER_1K`) or an integer (`1000`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TierRaw {
    Value(i64),
    Name(String),
}

/// `phone_number_quality_update`.
#[derive(Debug, Deserialize)]
pub struct QualityUpdate {
    /// The number as shown (E.164 digits); the event carries no
    /// `phone_number_id`.
    #[serde(default, deserialize_with = "opt_text")]
    pub display_phone_number: Option<String>,
    /// FLAGGED, UNFLAGGED, UPGRADE, DOWNGRADE, ONBOARDING, THROUGHPUT_UPGRADE.
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub current_limit: Option<TierRaw>,
    #[serde(default)]
    pub old_limit: Option<TierRaw>,
    /// The portfolio's limit (Meta's portfolio-level limits).
    #[serde(default)]
    pub max_daily_conversations_per_business: Option<TierRaw>,
}

/// `business_capability_update`.
#[derive(Debug, Deserialize)]
pub struct CapabilityUpdate {
    #[serde(default)]
    pub max_daily_conversation_per_phone: Option<TierRaw>,
    #[serde(default)]
    pub max_daily_conversations_per_business: Option<TierRaw>,
}

/// `message_template_status_update`.
#[derive(Debug, Deserialize)]
pub struct TemplateStatusUpdate {
    /// APPROVED, PAUSED, UNPAUSED, DISABLED, REINSTATED, REJECTED, ...
    pub event: String,
    #[serde(deserialize_with = "text")]
    pub message_template_id: String,
    #[serde(default)]
    pub other_info: Option<OtherInfo>,
}

/// `other_info` of a template status update.
#[derive(Debug, Deserialize)]
pub struct OtherInfo {
    /// FIRST_PAUSE, SECOND_PAUSE, ...
    #[serde(default)]
    pub title: Option<String>,
}

/// `message_template_quality_update`.
#[derive(Debug, Deserialize)]
pub struct TemplateQualityUpdate {
    /// GREEN, YELLOW, RED, UNKNOWN.
    pub new_quality_score: String,
    #[serde(deserialize_with = "text")]
    pub message_template_id: String,
}

/// `account_update`.
#[derive(Debug, Deserialize)]
pub struct AccountUpdate {
    /// ACCOUNT_RESTRICTION (acted on), and others (counted only).
    pub event: String,
    /// The number concerned, as shown; absent: the whole account.
    #[serde(default, deserialize_with = "opt_text")]
    pub phone_number: Option<String>,
    #[serde(default)]
    pub restriction_info: Vec<RestrictionInfo>,
}

/// One restriction of an `account_update`.
#[derive(Debug, Deserialize)]
pub struct RestrictionInfo {
    #[serde(default)]
    pub restriction_type: Option<String>,
    /// Unix seconds; absent: until lifted.
    #[serde(default, deserialize_with = "opt_int")]
    pub expiration: Option<i64>,
}

/// The number a `messages`, `user_preferences` or `calls` value is about.
#[derive(Debug, Deserialize)]
pub struct Metadata {
    #[serde(default, deserialize_with = "opt_text")]
    pub display_phone_number: Option<String>,
    #[serde(deserialize_with = "text")]
    pub phone_number_id: String,
}

/// `user_preferences`.
#[derive(Debug, Deserialize)]
pub struct UserPreferencesValue {
    pub metadata: Metadata,
    #[serde(default)]
    pub user_preferences: Vec<UserPreference>,
}

/// One customer's preference change.
#[derive(Debug, Deserialize)]
pub struct UserPreference {
    #[serde(deserialize_with = "text")]
    pub wa_id: String,
    /// `marketing_messages`.
    #[serde(default)]
    pub category: Option<String>,
    /// `stop` or `resume`.
    pub value: String,
    #[serde(default, deserialize_with = "opt_int")]
    pub timestamp: Option<i64>,
}

/// `messages`: inbound messages and the statuses of sent ones.
#[derive(Debug, Deserialize)]
pub struct MessagesValue {
    pub metadata: Metadata,
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default)]
    pub statuses: Vec<Status>,
}

/// An inbound message.
#[derive(Debug, Deserialize)]
pub struct Message {
    /// The customer's wa_id.
    #[serde(deserialize_with = "text")]
    pub from: String,
    /// Meta's message id (`wamid....`).
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub text: Option<Text>,
    #[serde(default)]
    pub button: Option<Button>,
    #[serde(default)]
    pub interactive: Option<Interactive>,
    /// Present when the customer came through an ad (a free entry point).
    #[serde(default)]
    pub referral: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct Text {
    #[serde(default)]
    pub body: Option<String>,
}

/// A quick-reply button press (e.g. a template's "Stop promotions").
#[derive(Debug, Deserialize)]
pub struct Button {
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Interactive {
    #[serde(default)]
    pub button_reply: Option<Reply>,
    #[serde(default)]
    pub list_reply: Option<Reply>,
}

#[derive(Debug, Deserialize)]
pub struct Reply {
    #[serde(default)]
    pub title: Option<String>,
}

/// The status of a message the business sent.
#[derive(Debug, Deserialize)]
pub struct Status {
    /// Meta's message id of the send.
    pub id: String,
    /// sent, delivered, read, failed (others are counted only).
    pub status: String,
    #[serde(deserialize_with = "text")]
    pub recipient_id: String,
    #[serde(default)]
    pub errors: Vec<StatusError>,
    /// Echoed back from the send request; admit reads an admission id here.
    #[serde(default)]
    pub biz_opaque_callback_data: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct StatusError {
    pub code: i64,
}

/// `calls`: calling events; a call the customer starts opens a window.
#[derive(Debug, Deserialize)]
pub struct CallsValue {
    pub metadata: Metadata,
    #[serde(default)]
    pub calls: Vec<Call>,
}

#[derive(Debug, Deserialize)]
pub struct Call {
    pub id: String,
    #[serde(default, deserialize_with = "opt_text")]
    pub from: Option<String>,
    /// connect, terminate, ...
    #[serde(default)]
    pub event: Option<String>,
    /// USER_INITIATED or BUSINESS_INITIATED.
    #[serde(default)]
    pub direction: Option<String>,
}

/// A string or a number, as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum TextOrNumber {
    Text(String),
    Int(i64),
    Uint(u64),
}

impl TextOrNumber {
    fn into_string(self) -> String {
        match self {
            TextOrNumber::Text(s) => s,
            TextOrNumber::Int(i) => i.to_string(),
            TextOrNumber::Uint(u) => u.to_string(),
        }
    }
}

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    TextOrNumber::deserialize(d).map(TextOrNumber::into_string)
}

fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<TextOrNumber>::deserialize(d)?.map(TextOrNumber::into_string))
}

fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<TextOrNumber>::deserialize(d)? {
        None => Ok(None),
        Some(TextOrNumber::Int(i)) => Ok(Some(i)),
        Some(TextOrNumber::Uint(u)) => i64::try_from(u)
            .map(Some)
            .map_err(|_| serde::de::Error::custom("integer out of range")),
        Some(TextOrNumber::Text(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an integer"))),
    }
}
