//! The client's errors: one enum a caller can match on, built from a gRPC
//! status (and its `retry-after-ms` trailer) or from a local failure.
//! Imports tonic's `Status` and nothing of the rest of the crate.

use std::time::Duration;

use tonic::{Code, Status};

/// Trailer carrying the server's retry hint in milliseconds (R8.4).
pub const RETRY_AFTER_MS: &str = "retry-after-ms";
/// Trailers naming the shard's leader when the answering node is not it.
pub const LEADER_ID: &str = "admit-leader-id";
/// See [`LEADER_ID`].
pub const LEADER_ADDR: &str = "admit-leader-addr";
/// Trailer set when the request was certainly not applied.
pub const NOT_APPLIED: &str = "admit-not-applied";

/// Everything a call can end in besides its answer. A denial is not an
/// error: it is a [`Decision`](crate::Decision) with `allowed == false`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The server refused the request as malformed (INVALID_ARGUMENT);
    /// `field` names the request field at fault when the server said.
    #[error("{}", invalid_text(field.as_deref(), message))]
    InvalidArgument {
        field: Option<String>,
        message: String,
    },
    /// An unknown number, portfolio or profile where one must exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request does not fit the current state (e.g. clock control on a
    /// server not in test mode).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// No or a wrong bearer token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token is not allowed this call.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The caller's request-rate quota stayed exhausted for every attempt.
    #[error("resource exhausted: {message}")]
    ResourceExhausted {
        message: String,
        retry_after: Option<Duration>,
    },
    /// No node could serve the request in any attempt (overloaded, no
    /// leader, unreachable). Nothing says whether it was applied unless the
    /// server said so.
    #[error("unavailable: {message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The request may or may not have been applied, and it carried no
    /// idempotency key, so it was not retried: repeating it could apply it
    /// twice.
    #[error("outcome unknown (not retried without an idempotency key): {0}")]
    UnknownOutcome(String),
    /// The client-wide retry budget is used up: the failure is not retried
    /// so that a struggling cluster is not flooded with retries.
    #[error("retry budget exhausted; last error: {last}")]
    RetryBudgetExhausted { last: Box<Error> },
    /// The call's overall deadline passed (attempts and waits included).
    #[error("deadline exceeded after {attempts} attempt(s): {last}")]
    DeadlineExceeded { attempts: u32, last: String },
    /// The client's options are unusable (bad address, unreadable TLS file).
    #[error("configuration: {0}")]
    Config(String),
    /// Any other status from the server.
    #[error("server error {code:?}: {message}")]
    Server { code: Code, message: String },
}

impl Error {
    /// The server's error for a status that is final (not retried).
    pub(crate) fn from_status(s: &Status) -> Error {
        let message = s.message().to_owned();
        match s.code() {
            Code::InvalidArgument => Error::InvalidArgument {
                field: field_of(&message),
                message,
            },
            Code::NotFound => Error::NotFound(message),
            Code::FailedPrecondition => Error::FailedPrecondition(message),
            Code::Unauthenticated => Error::Unauthenticated(message),
            Code::PermissionDenied => Error::PermissionDenied(message),
            Code::ResourceExhausted => Error::ResourceExhausted {
                message,
                retry_after: retry_after(s),
            },
            Code::Unavailable => Error::Unavailable {
                message,
                retry_after: retry_after(s),
            },
            code => Error::Server { code, message },
        }
    }

    /// True when the error says the cluster could not be reached or could
    /// not serve (as opposed to a refusal of the request itself).
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Unavailable { .. }
            | Error::DeadlineExceeded { .. }
            | Error::UnknownOutcome(_) => true,
            Error::RetryBudgetExhausted { last } => last.is_unreachable(),
            _ => false,
        }
    }
}

/// An INVALID_ARGUMENT's text: the server's own message when it already
/// says "invalid FIELD: PROBLEM", so the field is named once.
fn invalid_text(field: Option<&str>, message: &str) -> String {
    match field {
        Some(f) if field_of(message).as_deref() == Some(f) => message.to_owned(),
        Some(f) => format!("invalid argument {f}: {message}"),
        None => format!("invalid argument: {message}"),
    }
}

/// The server writes bad input as "invalid FIELD: PROBLEM".
fn field_of(message: &str) -> Option<String> {
    let rest = message.strip_prefix("invalid ")?;
    let (field, _) = rest.split_once(": ")?;
    (!field.is_empty() && !field.contains(' ')).then(|| field.to_owned())
}

/// The `retry-after-ms` trailer, if present and well-formed.
pub(crate) fn retry_after(s: &Status) -> Option<Duration> {
    s.metadata()
        .get(RETRY_AFTER_MS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// The leader named by `admit-leader-addr`, if any.
pub(crate) fn leader_addr(s: &Status) -> Option<String> {
    s.metadata()
        .get(LEADER_ADDR)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// True when the server marked the request as certainly not applied.
pub(crate) fn not_applied(s: &Status) -> bool {
    s.metadata().get(NOT_APPLIED).is_some()
}

/// True when the failure happened while connecting, before the request was
/// sent (a refused or unroutable connection): nothing was applied.
pub(crate) fn connect_failure(s: &Status) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | AddrNotAvailable | NetworkUnreachable | HostUnreachable
            ) {
                return true;
            }
        }
        src = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_is_read_from_the_servers_message() {
        assert_eq!(
            field_of("invalid send.customer_id: 6-15 digits").as_deref(),
            Some("send.customer_id")
        );
        assert_eq!(field_of("something else"), None);
    }

    #[test]
    fn an_invalid_argument_names_its_field_once() {
        let s = Status::invalid_argument("invalid send.customer_id: 6-15 digits");
        assert_eq!(
            Error::from_status(&s).to_string(),
            "invalid send.customer_id: 6-15 digits"
        );
        let s = Status::invalid_argument("too many items");
        assert_eq!(
            Error::from_status(&s).to_string(),
            "invalid argument: too many items"
        );
        let local = Error::InvalidArgument {
            field: Some("items[3]".into()),
            message: "bad category".into(),
        };
        assert_eq!(local.to_string(), "invalid argument items[3]: bad category");
    }

    #[test]
    fn retry_after_is_read_from_the_trailer() {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(RETRY_AFTER_MS, "250".parse().unwrap());
        let s = Status::with_metadata(Code::Unavailable, "busy", md);
        assert_eq!(retry_after(&s), Some(Duration::from_millis(250)));
        assert!(matches!(
            Error::from_status(&s),
            Error::Unavailable { retry_after: Some(d), .. } if d == Duration::from_millis(250)
        ));
    }
}
