//! # admit-webhook: Meta's WhatsApp webhooks, received by admit
//!
//! `admitd --webhook-listen ADDR` serves this receiver on a port of its own.
//! It answers Meta's subscription handshake, checks each delivery's
//! `X-Hub-Signature-256` before reading it, and turns the changes the rules
//! use (docs/rules.md section 10) into admit's own calls, applied in process
//! through admit-server's public API ([`admit_server::InProcess`]): the same
//! validation and Raft writes as `Admin.ApplyEvent`, `RecordInbound`,
//! `ReportOutcome` and `RegisterNumber`.
//!
//! ## Layering
//!
//! May import admit-proto (the request types), admit-server (only
//! `InProcess`, in [`apply`], and the certificate reloading of
//! `transport::HttpsTls`, in [`tls`]), admit-core (only to recognise an
//! admission id), axum/tokio (only in [`http`] and [`tls`]), tokio-rustls
//! (only in [`tls`]), hmac/sha2, serde. Modules, each
//! importing only those above it:
//!
//! * [`payload`]: serde types of Meta's envelope and of each field's value.
//! * [`signature`]: the HMAC-SHA256 check, in constant time.
//! * [`translate`]: payload -> actions, pure (no I/O, no clock), with the
//!   stable key of each action.
//! * [`numbers`]: display phone number -> `phone_number_id`, the node-local
//!   fallback.
//! * [`apply`]: display numbers looked up, actions -> admit, and what counts
//!   as acknowledged.
//! * [`tls`]: HTTPS on the receiver's port (certificates reloaded from
//!   their files).
//! * [`http`]: the listener, the handshake, the order of the checks.
//!
//! ## At most once
//!
//! Meta repeats a delivery until it gets a 200, also after a 200 that got
//! lost. Every action carries a key derived from the payload (Meta's message
//! id for inbound messages and statuses, the change itself for platform
//! events); the server keeps the keys in replicated state (7 days for
//! platform events, as for `ApplyEvent`), so a repeat is applied at most
//! once also after a restart or when it reaches another node. A delivery is
//! acknowledged only when each of its actions was committed (or refused for
//! good: an unknown number, an invalid value, which a retry cannot cure).
//!
//! ## Statuses and admissions
//!
//! A status names Meta's message id (wamid), which the sender gets only
//! after the send. The sender reports it with the admission
//! (`ReportOutcome` SENT with `admission_id` and `message_id`); the shard
//! keeps wamid -> admission in replicated state for the admission's
//! conversation window, and every status the receiver reports carries its
//! wamid, so a failed one releases that admission (R3.5) and a delivered one
//! marks it delivered. An admission id echoed in the send's
//! `biz_opaque_callback_data` (the whole value, or an `admit=<id>` part)
//! names it as well.
//!
//! ## Display numbers
//!
//! Events that carry only `display_phone_number` (quality, limit and
//! restriction updates) are resolved through the display digits a number
//! was registered with (`RegisterNumber.display_phone_number`), kept in the
//! number's replicated record. A number's shard follows from its id, not
//! from those digits, so the lookup asks every shard's leader
//! ([`Sink::number_by_display`]): exact on every node, and cheap because
//! display-only events are rare (a hash index per shard, one sweep per
//! delivery that needs it). Numbers registered without display digits fall
//! back to the node-local index ([`numbers`]: configured pairs, and pairs
//! learned from the deliveries that carry both forms, kept in a file of
//! the node's data dir, not shared between nodes), which stays for them.
//! A lookup that fails (no leader) leaves the delivery unacknowledged.
//!
//! A failed status that comes before the sender's report (Meta's webhook
//! won the race) is remembered by its wamid in the shard for the
//! conversation window, and the report that names the wamid releases then
//! (unless a delivered status came in between).
//!
//! ## Known gaps
//!
//! * 132015 / 132016 in a failed status pause or disable nothing: Meta's
//!   statuses name no template, and section 9 of docs/rules.md acts on
//!   these codes only when the report names it. The template's own
//!   `message_template_status_update` does (subscribe to that field).

pub mod apply;
pub mod http;
pub mod numbers;
pub mod payload;
pub mod signature;
pub mod tls;
pub mod translate;

pub use apply::{Report, Sink};
pub use http::{serve, Config, Webhook, DEFAULT_MAX_BODY_BYTES};
pub use signature::Secret;
pub use tls::Tls;
