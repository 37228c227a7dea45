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

// Who a replicated change is made for. Set around an audited request's
// handler (`service::handle`) and around a write relayed with its caller;
// read where the write is stamped (`routing::forward`), so the command
// carries the caller into the log and every replica's audit line names it.
tokio::task_local! {
    static ACTOR: Option<std::sync::Arc<str>>;
}

/// Runs `f` as `who` (also for admit-raft's membership writes).
pub async fn acting<F: std::future::Future>(who: Option<&str>, f: F) -> F::Output {
    let who: Option<std::sync::Arc<str>> = who.map(Into::into);
    let raft_who = who.as_deref().map(str::to_owned);
    ACTOR.scope(who, admit_raft::acting_for(raft_who, f)).await
}

/// The caller a change is being made for, if any.
pub fn actor() -> Option<String> {
    ACTOR
        .try_with(|a| a.as_deref().map(str::to_owned))
        .ok()
        .flatten()
}

/// A replicated change applied on this replica for `caller` (one line per
/// replica: the log entry's `index` tells one change from another).
pub fn applied(caller: &str, index: u64, command: &str, result: Result<(), String>) {
    match result {
        Ok(()) => {
            tracing::info!(target: TARGET, caller, index, command, result = "ok", "audit: applied")
        }
        Err(reason) => tracing::info!(
            target: TARGET,
            caller,
            index,
            command,
            result = "refused",
            reason,
            "audit: applied"
        ),
    }
}
