//! What every topic shares: times and durations in ms, and field paths.

use admit_core::{Dur, Ts};

use crate::error::ApiError;

pub(crate) fn ms(t: Ts) -> i64 {
    i64::try_from(t.ms()).unwrap_or(i64::MAX)
}

pub(crate) fn ts_in(field: &str, v: i64) -> Result<Ts, ApiError> {
    u64::try_from(v)
        .map(Ts)
        .map_err(|_| ApiError::invalid(field, "must not be negative"))
}

pub(super) fn dur_in(field: &str, v: i64) -> Result<Dur, ApiError> {
    u64::try_from(v)
        .map(Dur)
        .map_err(|_| ApiError::invalid(field, "must not be negative"))
}

/// Prefixes a field error with the path of the message it was found in.
pub(super) fn under(path: &str, e: impl Into<ApiError>) -> ApiError {
    match e.into() {
        ApiError::Invalid { field, problem } if !path.is_empty() => ApiError::Invalid {
            field: format!("{path}{field}"),
            problem,
        },
        other => other,
    }
}
