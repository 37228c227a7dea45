//! # admit-server: the admission service on one node
//!
//! This crate puts [`admit_core`]'s pure engine behind gRPC ([`admit_proto`])
//! and replicates it with [`admit_raft`]. `admitd` is a thin `main` around
//! [`start`].
//!
//! ## Layering
//!
//! admit-server is the edge around the rules: it may import `admit_core`
//! (the engine, its reader, the rate limiter, the domain types),
//! `admit_proto` (the public API and the internal node protocol),
//! `admit_raft` (replication) and transport crates (tonic, tokio). It holds
//! **no rule logic**: what a send, an event or a policy means is decided in
//! `admit_core` (see docs/rules.md); this crate validates input, routes,
//! replicates, protects the process and converts. Nothing imports this crate
//! but `admitd`, the end-to-end tests and `admit-webhook` (through
//! [`InProcess`], the public API in process).
//!
//! ## Layout, in the order the modules import each other
//!
//! Each module imports only modules above it in this list. Within a folder,
//! `mod.rs` holds what its files share and the files import it and each
//! other one way, never back (`convert/mod.rs` only re-exports the topics;
//! `routing/mod.rs` imports only the peers' channel type):
//!
//! * [`error`]: every error a request ends in and its one mapping to a gRPC
//!   status, with the named retry hints.
//! * `telemetry`: the process's metrics recorder and one helper per event
//!   counted (decisions, latency, shedding, forwarding, snapshots).
//! * [`clock`]: UTC ms from the system, or the test clock in test mode.
//! * [`skew`]: the bound on the service clock: the other nodes' clocks as
//!   sampled here, the refusal to stamp a command beyond
//!   [`DEFAULT_MAX_CLOCK_OFFSET`] (or the configured bound) ahead of them,
//!   and the raise of a clock behind them. Public so that admit-raft's
//!   simulation stamps with this code.
//! * [`protect`]: self-protection, the in-flight bound and per-caller quota
//!   (R8.4).
//! * [`auth`]: caller identity (bearer tokens, client certificates), scopes
//!   and grants, the authenticating tower layer, sealed admission ids and
//!   the audit log (docs/security.md).
//! * [`app`]: the Raft state machine of one shard. A log entry is a
//!   [`app::Stamped`] command: the core `Command` plus the time the proposing
//!   node stamped from the service clock. `apply` runs `Engine::apply(cmd, at)`
//!   on every replica, so all replicas decide alike.
//! * `convert/`: the only place where protobuf meets the domain, one file per
//!   topic (`ids`, `send`, `tier`, `decision`, `status`, `policy`, `event`,
//!   and `scalar` for the times and field paths they share); input
//!   conversions name the offending field.
//! * `wire`: what nodes say to each other (relayed requests, answers, the
//!   named `Decided` of a send) and its byte form.
//! * [`routing`]: which shard owns a request and how it reaches the shard's
//!   leader: `Router` (scope -> shard, the local number directory),
//!   `routing::request` (deadline and hops of the request), `retry` (the one
//!   retry-until-deadline helper), `peers` (channels to other nodes),
//!   `leader` (the one leader lookup, node addresses, placement), `forward`
//!   (run on the leader; the replicated, deadline-bound write) and
//!   `directory` (where a number lives, cluster-wide; sweeps).
//! * `admission/`: the path of a send: `triage` (the checks that deny, the
//!   R8 rate cells, the fast path), the replicated path, `batch`.
//! * `reads`: status and policy reads on the shard's leader, and sweeps over
//!   every shard.
//! * `ctx`: what every handler shares (routing, admission, reads,
//!   protection).
//! * `registry`: registration and platform events across shards.
//! * `relay`: serving requests other nodes relayed here; the test clock set
//!   on every node.
//! * `scrape`: the `/metrics` page (docs/metrics.md): the recorder's part
//!   plus series computed from the state at scrape time (shards, and the
//!   scopes nearest their limit on the shards this node leads), served on an
//!   HTTP port of its own.
//! * [`service`]: the gRPC handlers: decode, call, encode; the public ones
//!   enter through one helper (deadline scope and self-protection).
//! * `inproc`: the public API in process ([`InProcess`]), for the webhook
//!   receiver in `admit-webhook`.
//! * `server`: configuration, start, the tick loop, shutdown.
//!
//! A send counts against its limit scope (the number under the seeds profile,
//! the portfolio under meta); `scope.stable_hash() % shards` names the shard.
//! Portfolio-wide and global facts (template status and quality, policies,
//! a portfolio's account restriction) are written to every shard.
//!
//! ## Request flow of `Admit`
//!
//! ```text
//! validate (INVALID_ARGUMENT names the field; nothing changes)
//!   -> route: number -> scope -> shard, on the shard's leader (forwarded if
//!      need be)
//!   -> an unregistered number: UNKNOWN_NUMBER
//!   -> a replay of a recorded decision (idempotency key): that decision,
//!      without using rate cells
//!   -> the checks that deny whatever the windows say (restriction, template,
//!      opt-out, holds; R3.2): their denial, without taking rate cells
//!   -> R8 token buckets (leader-local): THROUGHPUT_LIMITED / PAIR_RATE_LIMITED
//!   -> fast path: this node leads the shard with a valid lease and has applied
//!      an entry of its term (so every answered write), the send has no
//!      idempotency key, and
//!      Reader::try_fast decides (open service window / conversation):
//!      answer from memory, no log write
//!   -> else replicated path: propose Command::Admit through the shard's Raft
//!      log; the core decides when the entry is applied (a conversation opens
//!      and counts only there), and that decision is the answer
//!   -> a denial gives its token-bucket cells back (a denied send uses nothing)
//! ```
//!
//! Without a lease the reader's answer is only a hint: the checks that deny
//! still come before the buckets, but the log decides.
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
//! been elected meanwhile), and it has applied an entry of its own term. Every
//! write that completed before the request arrived was either answered by this
//! leader, after its apply here, or answered in an earlier term and so comes
//! before this term's first entry: it is in the state the reader sees, so a
//! fast answer is linearizable. An entry committed but not yet applied has
//! been answered to no one; the read is ordered before it. When the check fails the
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

pub mod error;

// metrics recorded as things happen (docs/metrics.md)
mod telemetry;

pub mod clock;
// the bound on how far this node's clock may run ahead (issue 11, item 2)
pub mod skew;
pub use skew::DEFAULT_MAX_CLOCK_OFFSET;
pub mod protect;
pub mod shed;

pub mod auth;

pub mod app;

mod convert;
mod wire;

pub mod routing;

mod admission;
mod reads;

mod ctx;

mod registry;
mod relay;
// issue 14: the periodic loops while the node is quiet
mod quiet;

// the /metrics page and its HTTP endpoint (docs/metrics.md)
mod scrape;
pub use scrape::DEFAULT_TOP_SCOPES;

pub mod service;

// in-process access to the public API (the webhook receiver)
mod inproc;
pub use inproc::InProcess;
pub mod transport;

mod server;

// ---- issue 11: hostile input (proptest, tests only) ----
#[cfg(test)]
mod hostile;

pub use auth::{Auth, AuthConfig};
pub use protect::Quota;
pub use server::{start, Running, ServerConfig, StartError, DEFAULT_SHARDS};
