//! # admit-server: the admission service on one node
//!
//! This crate puts [`admit_core`]'s pure engine behind gRPC ([`admit_proto`])
//! and replicates it with [`admit_raft`]. `admitd` is a thin `main` around
//! [`start`].
//!
//! ## Layers
//!
//! * [`app`]: the Raft state machine of one shard. A log entry is a
//!   [`app::Stamped`] command: the core `Command` plus the time the proposing
//!   node stamped from the service clock. `apply` runs `Engine::apply(cmd, at)`
//!   on every replica, so all replicas decide alike.
//! * [`routing`]: a send counts against its limit scope (the number under the
//!   seeds profile, the portfolio under meta); `scope.stable_hash() % shards`
//!   names the shard. A node-local directory caches number -> scope.
//!   Portfolio-wide and global facts (template status and quality, policies,
//!   a portfolio's account restriction) are written to every shard.
//! * `ctx`: the request flow below; `service::*`: thin gRPC handlers;
//!   [`convert`]: every protobuf <-> domain conversion; [`error`]: the one
//!   mapping of errors to `tonic::Status`.
//! * [`clock`]: UTC ms from the system, or the test clock in test mode.
//! * [`protect`]: in-flight bound and per-caller quota (R8.4).
//!
//! ## Request flow of `Admit`
//!
//! ```text
//! validate (INVALID_ARGUMENT names the field; nothing changes)
//!   -> route: number -> scope -> shard
//!   -> R8 token buckets (leader-local): THROUGHPUT_LIMITED / PAIR_RATE_LIMITED
//!   -> fast path: this node leads the shard with a valid lease and has applied
//!      everything committed, and Reader::try_fast decides (open service
//!      window / conversation, a denial by a check, an idempotent replay):
//!      answer from memory, no log write
//!   -> else replicated path: propose Command::Admit through the shard's Raft
//!      log; the core decides when the entry is applied (a conversation opens
//!      and counts only there), and that decision is the answer
//!   -> a denial gives its token-bucket cells back (a denied send uses nothing)
//! ```
//!
//! ### Why the fast path is correct
//!
//! `try_fast` only decides sends that need no count: it never opens or counts
//! a conversation, so it cannot break R3.4 (no window ever holds more than L
//! counted conversations): every counted conversation is decided by the single
//! writer, in log order, on applied state. What the fast path must not do is
//! answer from *stale* state, e.g. allow a marketing send after an opt-out was
//! committed under a newer leader. [`admit_raft::RaftNode::is_leader_with_lease`]
//! guarantees it is not stale: this node is the leader of the shard's current
//! term, a quorum acknowledged it less than half a lease ago (the lease is
//! shorter than any follower's election timeout, so no other leader can have
//! been elected meanwhile), its term's first entry is committed and it has
//! applied everything committed. Every write that completed before the
//! request arrived was committed by this leader and applied to the state the
//! reader sees, so a fast answer is linearizable. When the check fails the
//! send simply takes the replicated path.
//!
//! ## Idempotency
//!
//! Idempotency keys are scoped to the number and stored by the core with the
//! decision, in replicated state: a retry after a crash, restart or leader
//! change finds the first decision (the fast path returns it from memory, the
//! log path from the engine) and nothing is counted twice. Platform events
//! carry an `event_key` the core applies at most once per shard.
//!
//! ## Time
//!
//! Every rule runs on the service clock ([`clock::Clock`]): the system's UTC
//! clock, or, only when started in test mode, a test clock that the
//! `TestClock` RPCs set or advance (never backwards). The clock is read once
//! per request; replicated commands carry that time, so replay is exact.

pub mod app;
pub mod clock;
pub mod convert;
mod ctx;
pub mod error;
pub mod forward;
pub mod protect;
pub mod routing;
mod server;
pub mod service;

pub use protect::Quota;
pub use server::{start, Running, ServerConfig, StartError};
