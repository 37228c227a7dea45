//! Protobuf <-> domain conversions: the only place where `admit_proto`'s
//! public API types meet the core's. One file per topic; input conversions
//! validate and name the offending field (as its path in the request), so
//! nothing invalid reaches the core.

use admit_core::{Dur, Ts};

use crate::error::ApiError;

pub(crate) mod decision;
pub(crate) mod event;
pub(crate) mod ids;
pub(crate) mod policy;
pub(crate) mod send;
pub(crate) mod status;
pub(crate) mod tier;

pub(crate) use decision::*;
pub(crate) use event::*;
pub(crate) use ids::*;
pub(crate) use policy::*;
pub(crate) use send::*;
pub(crate) use status::*;
pub(crate) use tier::*;

pub(crate) fn ms(t: Ts) -> i64 {
    i64::try_from(t.ms()).unwrap_or(i64::MAX)
}

pub(crate) fn ts_in(field: &str, v: i64) -> Result<Ts, ApiError> {
    u64::try_from(v)
        .map(Ts)
        .map_err(|_| ApiError::invalid(field, "must not be negative"))
}

fn dur_in(field: &str, v: i64) -> Result<Dur, ApiError> {
    u64::try_from(v)
        .map(Dur)
        .map_err(|_| ApiError::invalid(field, "must not be negative"))
}

/// Prefixes a field error with the path of the message it was found in.
fn under(path: &str, e: impl Into<ApiError>) -> ApiError {
    match e.into() {
        ApiError::Invalid { field, problem } if !path.is_empty() => ApiError::Invalid {
            field: format!("{path}{field}"),
            problem,
        },
        other => other,
    }
}
