//! # admit-core: WhatsApp messaging-limit rules as a pure, clock-free engine
//!
//! This crate is the whole of admit's domain (SPEC R2-R12) and nothing else: no async
//! runtime, no network, no clock. Every operation takes `now` as an argument, so the same
//! commands at the same times give the same decisions and the same state on every Raft
//! replica, and tests can walk days of time to the millisecond.
//!
//! ## Shape
//!
//! * [`Engine::apply`] is the **single writer**: commands in ([`Command`]), outputs out
//!   ([`Output`], with [`Decision`]s for sends). The server calls it when a command is
//!   committed in the shard's Raft log. A decision that opens (and counts) a
//!   conversation is taken only here, so a replayed log or a new leader can never admit
//!   twice (R3.4).
//! * [`Reader`] is the **hot path**: from any thread, concurrently with the writer, it
//!   decides sends that need no count — a customer inside an open service window, free
//!   entry point window or conversation, or a send that a check denies — and it computes
//!   status (SPEC section 11). It returns `None` when a send would open a conversation:
//!   that send must go through the log.
//! * State ([`state`] module) sits in sharded concurrent maps: each reader takes the read
//!   lock of the one shard holding the entry it needs; the writer changes one entry at a
//!   time and never waits on one entry while holding another. Per-customer window entries
//!   are 28 bytes (12-byte key, two packed timestamps).
//! * Exact counts: each limit scope keeps its counted conversations in an event log with
//!   sliding windows (`log` module): the 24 h limit window (R3.1) and the 7- or 30-day
//!   upgrade window (R5.2-R5.4) are counted exactly. HyperLogLog sketches
//!   (`admit-sketch`) give the 7- and 30-day unique customers shown in status and
//!   metrics, labelled as estimates; they never decide anything.
//! * Delayed effects (an upgrade 24 h after its crossing, the 7 Flagged days) are applied
//!   lazily but at exactly their own time: before any command touches a scope, every
//!   effect due by then runs in time order (`rules::run_due`), and status shows the same.
//! * Sub-second limits (R8.1-R8.2) are leader-local token buckets ([`rate`]), outside the
//!   replicated state (R8.3).
//! * [`Engine::snapshot`] writes deterministic bytes (sorted, versioned) for Raft
//!   snapshots; [`Engine::restore`] reads them back.

mod command;
mod decision;
mod engine;
mod error;
pub mod hash;
mod ids;
mod log;
mod meta_error;
mod policy;
pub mod rate;
mod reader;
mod rules;
mod snapshot;
mod state;
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
pub use snapshot::{SnapshotError, SNAPSHOT_VERSION};
pub use time::{window_open, Dur, Ts};
