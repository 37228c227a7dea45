//! # admit-core: WhatsApp messaging-limit rules as a pure, clock-free engine
//!
//! ## Layering
//!
//! admit-core is the bottom layer: every rule of admit lives here and nowhere else; the
//! server only converts its wire types to these and back. It may import `std`, `serde`,
//! `postcard`, `dashmap`, `ahash`, `admit-sketch` and `thiserror`. It must not import
//! `tokio` (or any async runtime), `tonic`, `prost`, `openraft` or any other crate of
//! admit's, and it never reads a clock: time is always an argument.
//!
//! ## What it is
//!
//! This crate is the whole of admit's domain (R2-R12, docs/rules.md) and nothing else:
//! no async runtime, no network, no clock. Every operation takes `now` as an argument,
//! so the same commands at the same times give the same decisions and the same state on
//! every Raft replica, and tests can walk days of time to the millisecond.
//!
//! ## Shape
//!
//! * [`Engine::apply`] is the **single writer**: commands in ([`Command`]), outputs out
//!   ([`Output`], with [`Decision`]s for sends). The server calls it when a command is
//!   committed in the shard's Raft log. A decision that opens (and counts) a
//!   conversation is taken only here, so a replayed log or a new leader can never admit
//!   twice (R3.4). The engine is one file per job (`engine/`): admission, inbound
//!   messages and outcomes, platform and template events, registration and policy
//!   profiles, and reclaiming (`Tick`).
//! * [`Reader`] is the **hot path**: from any thread, concurrently with the writer, it
//!   decides sends that need no count (a customer inside an open service window, free
//!   entry point window or conversation, or a send that a check denies) and it computes
//!   status (section 11). It returns `None` when a send would open a conversation:
//!   that send must go through the log.
//! * State (`state` module) sits in sharded concurrent maps: each reader takes the read
//!   lock of the one shard holding the entry it needs; the writer changes one entry at a
//!   time and never waits on one entry while holding another. Per-customer window entries
//!   are 24 bytes (12-byte key, two timestamps packed in 48 bits each).
//! * Exact counts: each limit scope keeps its counted conversations in an event log with
//!   sliding windows (`log` module): the 24 h limit window (R3.1) and the 7- or 30-day
//!   upgrade window (R5.2-R5.4) are counted exactly. HyperLogLog sketches
//!   (`admit-sketch`) give the 7- and 30-day unique customers shown in status and
//!   metrics, labelled as estimates; they never decide anything.
//! * Delayed effects (an upgrade 24 h after its crossing, the 7 Flagged days) are applied
//!   lazily but at exactly their own time: before any command touches a scope, every
//!   effect due by then runs in time order (`rules::run_due`), and status shows the same.
//! * Sub-second limits (R8.1-R8.2) are leader-local token buckets ([`rate`]), outside the
//!   replicated state (R8.3). A send they refuse is answered by
//!   [`Reader::rate_denial`], a decision with the scope's usage like any other.
//! * Inputs whose meaning is a rule are interpreted here too: Meta's error codes
//!   ([`MetaError`], section 9), a policy's validity ([`Policy::validate_stated`]) and a
//!   portfolio's status gathered from several shards ([`PortfolioStatus::merge`]).
//! * [`Engine::snapshot`] writes deterministic bytes (sorted, versioned) for Raft
//!   snapshots; [`Engine::restore`] reads them back, older versions included. It is
//!   [`Engine::freeze`] (clone the entries: the only part that needs the engine) then
//!   [`Frozen::encode`] (sort and encode), so a caller can encode while the engine goes on.

mod command;
mod decision;
mod engine;
mod error;
pub mod hash;
mod ids;
pub mod legacy;
mod log;
mod meta_error;
mod policy;
pub mod rate;
mod reader;
mod rules;
mod snapshot;
mod state;
mod summary;
mod time;

pub use command::*;
pub use decision::{AdmissionId, Decision, Reason, ScopeKey};
pub use engine::Engine;
pub use error::CoreError;
pub use ids::{FieldError, IdempotencyKey, NumberId, PortfolioId, TemplateId, WaId};
pub use meta_error::{MetaError, OutcomeEffect};
pub use policy::{
    keyword_candidate, keyword_form, Category, Limit, Policy, Quality, ScopeKind, Stated,
    Threshold, TierInput, TierMeaning, UpgradeRule,
};
pub use reader::{
    AccountStatus, NumberView, PortfolioStatus, Reader, ScopeStatus, ScopeSum, UniqueCount,
};
pub use snapshot::{Frozen, SnapshotError, SNAPSHOT_VERSION};
pub use summary::{
    RatioHistogram, ScopeBrief, ScopeGroup, ScopeRollup, ScopeSummary, TemplateCounts,
    HEADROOM_RATIO_BOUNDS,
};
pub use time::{window_open, Dur, Ts};
