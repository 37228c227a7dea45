//! The audit log: one structured line per admin or cluster change (and per
//! refused request), on the tracing target `admit::audit`, with the caller,
//! the method, a summary of the request and the result. Tokens never reach
//! it: they travel in metadata, which is not summarised.

use crate::error::ApiError;

/// The tracing target of audit lines.
pub const TARGET: &str = "admit::audit";

/// The longest request summary logged (characters).
const MAX_SUMMARY: usize = 1_000;

/// A request's summary: its debug form, cut to a bound.
pub fn summary(req: &impl std::fmt::Debug) -> String {
    let s = format!("{req:?}");
    match s.char_indices().nth(MAX_SUMMARY) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// One audited call and how it ended.
pub fn call(caller: &str, method: &str, request: &str, result: Result<(), &ApiError>) {
    match result {
        Ok(()) => tracing::info!(target: TARGET, caller, method, request, result = "ok", "audit"),
        Err(e) => tracing::info!(
            target: TARGET,
            caller,
            method,
            request,
            result = ?e.code(),
            reason = %e,
            "audit"
        ),
    }
}

/// A request refused before any handler (no or bad credentials).
pub fn refused(path: &str, e: &ApiError) {
    tracing::info!(target: TARGET, caller = "-", method = path, result = ?e.code(), reason = %e, "audit");
}
