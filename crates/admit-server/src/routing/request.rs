//! The deadline and hop count of the request being served: a task-local set
//! around each handler (from `grpc-timeout` and `admit-hops`) and around each
//! relayed frame, read wherever a call must stop or decide whether to relay.

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;

/// A node never relays a frame that was relayed this often.
pub const MAX_HOPS: u32 = 2;
/// Deadline of a request without `grpc-timeout`.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// Metadata a client may set: how many times the request was relayed.
pub const HOPS_HEADER: &str = "admit-hops";

/// The deadline and hop count of the request being served.
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

    /// A relayed frame's: its remaining time and hop count.
    pub fn relayed(deadline_ms: u64, hops: u32) -> ReqInfo {
        ReqInfo {
            deadline: Instant::now() + Duration::from_millis(deadline_ms),
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

    /// The same request with its deadline cut to at most `most` from now.
    pub fn within(self, most: Duration) -> ReqInfo {
        ReqInfo {
            deadline: self.deadline.min(Instant::now() + most),
            hops: self.hops,
        }
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
}
