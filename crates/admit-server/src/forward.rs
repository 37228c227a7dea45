//! Forwarding: any node accepts any request and carries it to the node that
//! leads the shard owning it.
//!
//! * The entry node routes a request to a shard (number -> scope -> shard,
//!   see [`crate::routing`]) and picks the shard's leader: from its own Raft
//!   group when it holds a replica, else from a hint learned from an earlier
//!   answer, else the shard's placement (the preferred leader first; a
//!   replica that is not the leader relays once more).
//! * It sends a [`NodeReq`] in a `admit.internal.node.NodeRpc/Call` frame over
//!   one cached tonic channel per peer (the peer's advertised address, the
//!   same port as the public API and the Raft transport).
//! * The receiver runs it exactly as if it were the entry node, but it relays
//!   at most once more: a frame carries its hop count and a node never relays
//!   a frame with `hops >= MAX_HOPS`; it answers [`ApiError::NotLeader`]
//!   (nothing applied) instead.
//! * Only the entry node retries, with a short backoff, until the request's
//!   deadline (its `grpc-timeout`, else [`DEFAULT_DEADLINE`]): always after
//!   `NotLeader` and refused connections (nothing was applied), and after an
//!   unknown outcome (a relay that died mid-call) only for idempotent
//!   requests (keyed sends, releases, registrations, keyed events, reads).
//!   So a leader change costs latency, not an error, within the deadline.
//! * Clients may send `admit-hops: 2` to forbid forwarding (tests, smart
//!   clients that route themselves).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use admit_core::{
    AdmitRequest, Command, NumberId, Output, Policy, PortfolioId, PortfolioStatus, ScopeKey,
    ScopeStatus, Ts,
};
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use crate::ctx::Decided;
use crate::error::ApiError;

/// Generated types of `admit.internal.node` (compiled in `admit-proto`).
pub use admit_proto::internal::node as pb;

use pb::node_rpc_client::NodeRpcClient;

/// A node never relays a frame that was relayed this often.
pub const MAX_HOPS: u32 = 2;
/// Deadline of a request without `grpc-timeout`.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// Metadata a client may set: how many times the request was relayed.
pub const HOPS_HEADER: &str = "admit-hops";

/// The deadline and hop count of the request being served (a task-local
/// around each handler).
#[derive(Debug, Clone, Copy)]
pub struct ReqInfo {
    pub deadline: Instant,
    pub hops: u32,
}

tokio::task_local! {
    static REQ: ReqInfo;
}

impl ReqInfo {
    fn from_metadata(md: &MetadataMap) -> ReqInfo {
        let timeout = md
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .unwrap_or(DEFAULT_DEADLINE);
        let hops = md
            .get(HOPS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let now = Instant::now();
        ReqInfo {
            // a timeout too large for the clock is no timeout at all: the default
            deadline: now.checked_add(timeout).unwrap_or(now + DEFAULT_DEADLINE),
            hops,
        }
    }

    /// The current request's info (outside a request: now + the default
    /// deadline, entry node).
    pub fn current() -> ReqInfo {
        REQ.try_with(|r| *r).unwrap_or_else(|_| ReqInfo {
            deadline: Instant::now() + DEFAULT_DEADLINE,
            hops: 0,
        })
    }

    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Only the entry node retries; relays answer once.
    pub fn retries(&self) -> bool {
        self.hops == 0
    }

    /// This node may relay the request further.
    pub fn may_relay(&self) -> bool {
        self.hops < MAX_HOPS
    }
}

/// `grpc-timeout` values: at most 8 digits and a unit (H, M, S, m, u, n), as
/// the gRPC protocol defines them.
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    if num.is_empty() || num.len() > 8 {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3_600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Runs a public handler with its request's deadline and hop count.
pub async fn scoped<F: Future>(md: &MetadataMap, f: F) -> F::Output {
    REQ.scope(ReqInfo::from_metadata(md), f).await
}

/// Runs `f` as a relayed request.
pub async fn scoped_relay<F: Future>(info: ReqInfo, f: F) -> F::Output {
    REQ.scope(info, f).await
}

/// The backoff before retry `attempt` (1-based).
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((10u64 << attempt.min(5)).min(250))
}

// ---- wire -----------------------------------------------------------------------------

/// A request relayed to another node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeReq {
    /// Propose a command to the shard (the receiver stamps its clock).
    Write { shard: u32, cmd: Box<Command> },
    /// Decide sends (fast path, rate limits, log) on the shards' leader.
    Admit { reqs: Vec<AdmitRequest> },
    /// A read from the shard leader's applied state.
    Read { shard: u32, read: ReadReq },
    /// A read answered for every shard the receiver leads with a lease
    /// (never relayed).
    Sweep { sweep: SweepReq },
    /// Test mode: move the receiver's clock to at least this time (the
    /// TestClock service sets every node's clock, never relayed).
    SetClock { now: Ts },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReadReq {
    NumberStatus { number: NumberId, now: Ts },
    PortfolioStatus { id: PortfolioId, now: Ts },
    Policy { name: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SweepReq {
    /// Where is this number registered.
    Lookup { number: NumberId },
    /// A portfolio's status on each shard.
    Portfolio { id: PortfolioId, now: Ts },
    /// Every scope's status (ListNumbers).
    Scopes { now: Ts },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SweepItem {
    Lookup(Option<ScopeKey>),
    Portfolio(Option<PortfolioStatus>),
    Scopes(Vec<ScopeStatus>),
}

/// A sweep answer: the shards the node leads with a lease and an item per shard.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SweepResp {
    pub led: Vec<u32>,
    pub items: Vec<(u32, SweepItem)>,
    /// Lookup only: the scope as found on any local replica.
    pub any: Option<ScopeKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeResp {
    Output(Output),
    /// The receiver's clock after a `SetClock`.
    Clock(Ts),
    Admitted(Vec<Result<Decided, ApiError>>),
    NumberStatus(Option<ScopeStatus>),
    PortfolioStatus(Option<PortfolioStatus>),
    Policy(Option<Policy>),
    Sweep(SweepResp),
}

/// The body of a response frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub result: Result<NodeResp, ApiError>,
    /// The node that finally served the request (the shard's leader), if
    /// the request was shard-bound.
    pub served_by: Option<(u64, String)>,
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    postcard::to_allocvec(v).map_err(|e| ApiError::Internal(format!("encode: {e}")))
}

pub fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, ApiError> {
    postcard::from_bytes(b).map_err(|e| ApiError::Internal(format!("decode: {e}")))
}

// ---- channels -------------------------------------------------------------------------

/// One lazily connected channel per peer address, shared by all requests.
#[derive(Debug, Default)]
pub struct Peers {
    clients: Mutex<HashMap<String, NodeRpcClient<Channel>>>,
}

impl Peers {
    fn client(&self, addr: &str) -> Result<NodeRpcClient<Channel>, ApiError> {
        let mut m = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = m.get(addr) {
            return Ok(c.clone());
        }
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let ch = Endpoint::from_shared(uri)
            .map_err(|e| ApiError::Internal(format!("peer address {addr}: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .initial_connection_window_size(crate::server::CONN_WINDOW)
            .initial_stream_window_size(crate::server::STREAM_WINDOW)
            .connect_lazy();
        let c = NodeRpcClient::new(ch)
            .max_decoding_message_size(256 * 1024 * 1024)
            .max_encoding_message_size(256 * 1024 * 1024);
        m.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Sends `req` to the node at `addr` as one more hop of the current
    /// request. Transport failures: a refused connection is
    /// [`ApiError::NotLeader`] (certainly not applied); anything else is an
    /// unknown outcome ([`ApiError::Unavailable`]).
    pub async fn call(
        &self,
        addr: &str,
        req: &NodeReq,
        info: ReqInfo,
    ) -> Result<Envelope, ApiError> {
        let mut client = self.client(addr)?;
        let left = info.left();
        if left.is_zero() {
            return Err(ApiError::unavailable(
                "deadline exceeded while forwarding",
                0,
            ));
        }
        let frame = pb::NodeFrame {
            body: encode(req)?,
            hops: info.hops + 1,
            deadline_ms: left.as_millis() as u64,
        };
        let mut r = tonic::Request::new(frame);
        r.set_timeout(left);
        match client.call(r).await {
            Ok(resp) => decode(&resp.get_ref().body),
            Err(s) => {
                let text = format!("{s:?}");
                let refused = s.code() == tonic::Code::Unavailable
                    && (text.contains("onnect") || text.contains("refused"))
                    && !text.contains("reset");
                if refused {
                    Err(ApiError::NotLeader {
                        leader_id: None,
                        leader_addr: None,
                    })
                } else {
                    Err(ApiError::unavailable(
                        format!(
                            "forwarding to {addr} failed ({}: {}); outcome unknown, retry with the same idempotency key",
                            s.code(),
                            s.message()
                        ),
                        100,
                    ))
                }
            }
        }
    }
}

/// Whether proposing `cmd` twice has the effect of proposing it once (so an
/// unknown outcome may be retried automatically).
pub fn idempotent(cmd: &Command) -> bool {
    match cmd {
        Command::Admit(r) => r.idempotency_key.is_some(),
        Command::Inbound(i) => i.event_key.is_some(),
        Command::Outcome(o) => o.event_key.is_some(),
        Command::Platform { event_key, .. } => event_key.is_some(),
        Command::Release(_)
        | Command::RegisterNumber(_)
        | Command::RegisterPortfolio(_)
        | Command::SetPolicy(_)
        | Command::Tick => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        // the protocol allows at most 8 digits
        assert_eq!(
            parse_grpc_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3_600))
        );
        assert_eq!(parse_grpc_timeout("999999999S"), None);
        assert_eq!(parse_grpc_timeout("18446744073709551615S"), None);
    }

    #[test]
    fn an_absurd_timeout_gets_the_default_deadline() {
        let mut md = MetadataMap::new();
        md.insert("grpc-timeout", "18446744073709551615S".parse().unwrap());
        let info = ReqInfo::from_metadata(&md);
        assert!(info.left() <= DEFAULT_DEADLINE && info.left() > Duration::ZERO);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) < backoff(3));
        assert_eq!(backoff(30), Duration::from_millis(250));
    }
}
