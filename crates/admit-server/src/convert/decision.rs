//! Decisions: the core's answer to a send as the API shows it.

use admit_core::{Decision, Reason, ScopeKey, Ts};
use admit_proto::v1 as pb;

use super::scalar::ms;
use super::tier::tier_out;
use crate::auth::admission::AdmissionKey;
use crate::error::ApiError;

pub(crate) fn reason_out(r: Reason) -> pb::Reason {
    match r {
        Reason::ServiceWindow => pb::Reason::ServiceWindow,
        Reason::FreeEntryPoint => pb::Reason::FreeEntryPoint,
        Reason::OpenConversation => pb::Reason::OpenConversation,
        Reason::NewConversation => pb::Reason::NewConversation,
        Reason::LimitReached => pb::Reason::LimitReached,
        Reason::OutsideServiceWindow => pb::Reason::OutsideServiceWindow,
        Reason::OptedOut => pb::Reason::OptedOut,
        Reason::TemplatePaused => pb::Reason::TemplatePaused,
        Reason::TemplateDisabled => pb::Reason::TemplateDisabled,
        Reason::NumberRestricted => pb::Reason::NumberRestricted,
        Reason::ThroughputLimited => pb::Reason::ThroughputLimited,
        Reason::PairRateLimited => pb::Reason::PairRateLimited,
        Reason::MarketingHold => pb::Reason::MarketingHold,
        Reason::SpamCooldown => pb::Reason::SpamCooldown,
        Reason::UnknownNumber => pb::Reason::UnknownNumber,
    }
}

pub(crate) fn scope_out(k: &ScopeKey) -> (i32, String) {
    match k {
        ScopeKey::Number(n) => (pb::LimitScope::Number as i32, n.to_string()),
        ScopeKey::Portfolio(p) => (pb::LimitScope::Portfolio as i32, p.to_string()),
    }
}

/// A core decision as the API shows it, decided at `now` for `scope`, its
/// admission id sealed with `key` so that it cannot be guessed
/// (`auth::admission`). `replayed`: a recorded decision returned again for its
/// idempotency key.
pub(crate) fn decision_out(
    d: &Decision,
    scope: Option<&ScopeKey>,
    now: Ts,
    replayed: bool,
    key: &AdmissionKey,
) -> pb::Decision {
    // a replay carries the time it was first decided; the wait runs from now
    let decided_at = if d.decided_at == Ts::ZERO {
        now
    } else {
        d.decided_at.min(now)
    };
    let retry = d.retry_at.map(|at| at.max(now));
    let usage = match (d.limit, scope) {
        (Some(limit), Some(scope)) => {
            let (kind, id) = scope_out(scope);
            Some(pb::LimitUsage {
                scope: kind,
                scope_id: id,
                tier: Some(tier_out(limit)),
                used: d.used,
                headroom: limit.headroom(d.used).unwrap_or(0),
                next_release_unix_ms: if d.reason == Reason::LimitReached {
                    d.retry_at.map(ms)
                } else {
                    None
                },
            })
        }
        _ => None,
    };
    pb::Decision {
        allowed: d.allowed,
        reason: reason_out(d.reason) as i32,
        retry_after_ms: retry.map(|at| ms(at) - ms(now)),
        retry_at_unix_ms: retry.map(ms),
        usage,
        window_end_unix_ms: if d.allowed {
            d.window_end.map(ms)
        } else {
            None
        },
        admission_id: d
            .admission
            .as_ref()
            .map(|a| key.seal(a))
            .unwrap_or_default(),
        counted: d.counted && !replayed,
        replayed,
        decided_at_unix_ms: ms(decided_at),
    }
}

/// A batch item's error.
pub(crate) fn item_error(e: &ApiError) -> pb::ItemError {
    pb::ItemError {
        code: e.code() as i32,
        message: e.to_string(),
        field: e.field().unwrap_or_default().to_owned(),
    }
}
