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
//! * [`numbers`]: display phone number -> `phone_number_id`.
//! * [`apply`]: actions -> admit, and what counts as acknowledged.
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
//! ## Known gaps
//!
//! * Statuses and admissions: a status names Meta's message id, which admit
//!   never sees (the sender gets it after the send). A failed status
//!   releases an admission only when the sender echoes the admission id in
//!   the send's `biz_opaque_callback_data` (the whole value, or an
//!   `admit=<id>` part); otherwise it feeds the error-code reactions only.
//! * 132015 / 132016 in a failed status pause or disable nothing: Meta's
//!   statuses name no template, and section 9 of docs/rules.md acts on
//!   these codes only when the report names it. The template's own
//!   `message_template_status_update` does (subscribe to that field).
//! * Display numbers: admit's replicated state does not keep
//!   `RegisterNumber.display_phone_number`, so events carrying only the
//!   number as shown are mapped through a node-local index filled from
//!   configuration and from the deliveries that carry both forms (kept in
//!   a file of the node's data dir across restarts, not shared between
//!   nodes).

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
