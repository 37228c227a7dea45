//! A typed async client of admit for sender services and tools.
//!
//! ```no_run
//! # async fn run() -> Result<(), admit_client::Error> {
//! use admit_client::{Category, Client, SendSpec};
//!
//! let client = Client::connect("127.0.0.1:50051")?;
//! let send = SendSpec::template("100200300", "491500000001", "welcome", Category::Utility);
//! let d = client.admit(&send).await?;
//! if d.allowed {
//!     // send through WhatsApp, then report the outcome (see `send_with`)
//! } else {
//!     println!("denied: {} (retry after {:?})", d.reason, d.retry_after);
//! }
//! # Ok(()) }
//! ```
//!
//! ## Design
//!
//! - **Nodes and channels.** [`Options::nodes`] lists nodes to start from;
//!   any node serves any request. The client keeps one lazily connected
//!   HTTP/2 channel per node address it has used, shared by its clones.
//! - **Leader routing.** Writes and reads of a number are decided by the
//!   leader of the number's shard. The client remembers, per number, the
//!   leader named by an answer's `leader_hint` or by the `admit-leader-addr`
//!   trailer of an UNAVAILABLE answer, and sends that number's next calls
//!   there. A node that is not the leader forwards (or, with
//!   [`Options::route_self`], answers UNAVAILABLE naming the leader, which
//!   the client follows at once, spending no retry token). A leader that
//!   cannot be reached is forgotten and the seeds are tried in turn.
//! - **Deadlines.** Each attempt carries a `grpc-timeout`
//!   ([`Options::attempt_timeout`]); the whole call, retries and waits
//!   included, is bounded by [`Options::call_deadline`].
//! - **Retries.** RESOURCE_EXHAUSTED and UNAVAILABLE are retried after
//!   jittered exponential back-off that never waits less than the server's
//!   `retry-after-ms` ([`RetryPolicy`]). Retries spend tokens of a
//!   client-wide budget that first-attempt successes refill, so that a
//!   failing cluster is not flooded; when it is empty the call fails with
//!   [`Error::RetryBudgetExhausted`].
//! - **Unknown outcomes.** A timeout, a lost connection or an UNAVAILABLE
//!   that the server did not mark `admit-not-applied` may have been applied.
//!   Such a call is retried only if it is idempotent: reads, releases,
//!   registrations, and writes that carry a key. The client gives every
//!   send an idempotency key and every inbound, outcome and event a
//!   de-duplication key when the caller gave none, so a retry is counted
//!   once (R3.4, docs/rules.md). With [`Options::generate_keys`] off, an
//!   unkeyed write fails with [`Error::UnknownOutcome`] instead.
//! - **Types.** Calls take and return the crate's own types ([`SendSpec`],
//!   [`Decision`], [`Status`], ...), which serialize with serde for tools;
//!   policies and cluster views stay the `admit.v1` messages.
//! - **Flows.** [`Client::send_with`] admits, runs the caller's delivery and
//!   reports the outcome (a failure before delivery releases the
//!   admission, R3.5); [`Client::campaign`] feeds `AdmitBatch` and paces
//!   denied items by their `retry_after`.
//! - **Connection security.** A bearer token ([`Options::token`]) goes in
//!   `authorization` metadata; TLS ([`TlsOptions`]: CA, client certificate
//!   and key) needs the crate feature `tls` (rustls through tonic).
//!
//! ## Layering
//!
//! A client of the public API only: it imports `admit-proto`'s generated
//! messages and clients and tonic. It must not import `admit-core`,
//! `admit-server` or `admit-raft` (its tests start servers through them).

mod client;
mod conn;
mod error;
mod flows;
mod retry;
mod types;

pub use admit_proto::v1 as proto;
pub use client::{new_key, BatchItem, Client};
pub use conn::{Options, Stats, TlsOptions};
pub use error::{Error, LEADER_ADDR, LEADER_ID, NOT_APPLIED, RETRY_AFTER_MS};
pub use flows::{CampaignOptions, CampaignReport, Delivered, SendResult};
pub use retry::RetryPolicy;
pub use types::{
    parse_quality, tier_value, Category, Decision, Delivery, Event, EventResult, Inbound,
    InboundResult, Message, Outcome, OutcomeResult, Reason, SendSpec, Status, Target, Tier, Usage,
};
