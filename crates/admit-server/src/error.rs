//! Every error a request can end in, and the one place that maps them to gRPC
//! statuses ([`ApiError::into_status`]). Denials are not errors: they are
//! decisions, answered with OK.

use admit_core::{CoreError, FieldError};
use admit_raft::{ReadError, WriteError};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// The trailer carrying the retry hint in milliseconds (R8.4).
pub const RETRY_AFTER_MS: &str = "retry-after-ms";
/// Trailers naming the shard leader when this node is not it.
pub const LEADER_ID: &str = "admit-leader-id";
pub const LEADER_ADDR: &str = "admit-leader-addr";
/// Trailer set when the request was certainly not applied (not the leader,
/// no leader): a retry can never apply it twice.
pub const NOT_APPLIED: &str = "admit-not-applied";

/// Retry hint when a shard has no leader or the outcome is unknown.
pub const RETRY_RAFT_MS: u64 = 200;
/// Retry hint after a call to another node failed (unknown outcome).
pub const RETRY_PEER_MS: u64 = 100;
/// Retry hint when a shard's proposer queue is full (overload): about the
/// time a few entries take to commit.
pub const RETRY_QUEUE_MS: u64 = 50;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ApiError {
    /// Bad input: the field (path in the request) and what is wrong.
    #[error("invalid {field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// The node cannot serve now (overloaded, no leader, not the leader).
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_ms: u64,
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    /// This node does not lead the shard (or the shard has no leader now) and
    /// did not forward the request: nothing was applied, so any retry is safe.
    #[error("this node does not lead the shard; retry (leader {leader_id:?} at {leader_addr:?})")]
    NotLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    /// The caller is over its request-rate quota.
    #[error("{message}")]
    ResourceExhausted {
        message: String,
        retry_after_ms: u64,
    },
    #[error("internal error: {0}")]
    Internal(String),
    // ---- caller authentication (issue 12); kept last: the wire encodes the
    // variant index ----
    /// No credentials, or credentials no caller is configured with.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The caller lacks the scope, or the number is outside its grant.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    // ---- mixed versions; kept after the above for the same reason ----
    /// A node-to-node request of a kind the receiving node does not know (a
    /// newer node's, during a rolling upgrade): nothing was done. Answered as
    /// UNIMPLEMENTED, which the sender recognises (`wire::unknown_kind_answer`).
    #[error("unknown request kind: {0}")]
    UnknownKind(String),
}

impl ApiError {
    pub fn invalid(field: &str, problem: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.to_owned(),
            problem: problem.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>, retry_after_ms: u64) -> Self {
        ApiError::Unavailable {
            message: message.into(),
            retry_after_ms,
            leader_id: None,
            leader_addr: None,
        }
    }

    /// The field at fault, for bad input.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            ApiError::Invalid { .. } => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::Unavailable { .. } | ApiError::NotLeader { .. } => Code::Unavailable,
            ApiError::ResourceExhausted { .. } => Code::ResourceExhausted,
            ApiError::Internal(_) => Code::Internal,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::UnknownKind(_) => Code::Unimplemented,
        }
    }

    /// The single mapping from errors to gRPC statuses.
    pub fn into_status(self) -> Status {
        let code = self.code();
        let message = self.to_string();
        let mut md = MetadataMap::new();
        let mut put = |k: &'static str, v: String| {
            if let Ok(v) = MetadataValue::try_from(v) {
                md.insert(k, v);
            }
        };
        match &self {
            ApiError::Unavailable {
                retry_after_ms,
                leader_id,
                leader_addr,
                ..
            } => {
                put(RETRY_AFTER_MS, retry_after_ms.to_string());
                if let Some(id) = leader_id {
                    put(LEADER_ID, id.to_string());
                }
                if let Some(a) = leader_addr {
                    put(LEADER_ADDR, a.clone());
                }
            }
            ApiError::NotLeader {
                leader_id,
                leader_addr,
            } => {
                let retry = if leader_id.is_some() {
                    0
                } else {
                    RETRY_RAFT_MS
                };
                put(RETRY_AFTER_MS, retry.to_string());
                put(NOT_APPLIED, "1".into());
                if let Some(id) = leader_id {
                    put(LEADER_ID, id.to_string());
                }
                if let Some(a) = leader_addr {
                    put(LEADER_ADDR, a.clone());
                }
            }
            ApiError::ResourceExhausted { retry_after_ms, .. } => {
                put(RETRY_AFTER_MS, retry_after_ms.to_string());
            }
            _ => {}
        }
        Status::with_metadata(code, message, md)
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        e.into_status()
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Invalid {
            field: e.field,
            problem: e.problem,
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Invalid { field, problem } => ApiError::Invalid { field, problem },
            CoreError::UnknownNumber(_)
            | CoreError::UnknownPortfolio(_)
            | CoreError::UnknownProfile(_) => ApiError::NotFound(e.to_string()),
            // admit.proto: reusing a key for a different send is INVALID_ARGUMENT
            CoreError::IdempotencyConflict(_) => ApiError::Invalid {
                field: "idempotency_key".into(),
                problem: "was used before for a different send".into(),
            },
            CoreError::Conflict(m) => ApiError::FailedPrecondition(m),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::ForwardToLeader {
                leader_id,
                leader_addr,
            } => ApiError::NotLeader {
                leader_id,
                leader_addr,
            },
            WriteError::NoLeader => ApiError::NotLeader {
                leader_id: None,
                leader_addr: None,
            },
            WriteError::NoSuchShard(s) => ApiError::Internal(format!("no such shard {s}")),
            other => ApiError::unavailable(
                format!("{other}; retry with the same idempotency key"),
                RETRY_RAFT_MS,
            ),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::ForwardToLeader {
                leader_id,
                leader_addr,
            } => ApiError::NotLeader {
                leader_id,
                leader_addr,
            },
            ReadError::NoSuchShard(s) => ApiError::Internal(format!("no such shard {s}")),
            ReadError::Unavailable(m) => ApiError::unavailable(m, RETRY_RAFT_MS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_codes_fields_and_retry_hints() {
        let s = ApiError::from(FieldError::new("customer_id", "must be digits")).into_status();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("customer_id"));
        let s = ApiError::unavailable("busy", 50).into_status();
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.metadata().get(RETRY_AFTER_MS).unwrap(), "50");
        let s = ApiError::from(CoreError::UnknownNumber("1".into())).into_status();
        assert_eq!(s.code(), Code::NotFound);
        let s = ApiError::from(WriteError::NoLeader).into_status();
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.metadata().get(RETRY_AFTER_MS).is_some());
    }
}
