//! Status views: a scope's usage, a number's and a portfolio's status, and
//! the number and account states they show.

use admit_core::{
    AccountStatus, Limit, NumberStatus, NumberView, PortfolioId, Quality, RestrictionType,
    ScopeKey, ScopeStatus, Ts, UniqueCount,
};
use admit_proto::v1 as pb;

use super::decision::scope_out;
use super::ms;
use super::tier::{quality_out, tier_out};
use crate::error::ApiError;

/// The core knows Connected, Flagged and Disconnected; Meta's other states
/// (pending, restricted, banned) do not allow sending, so they map to
/// Disconnected.
pub(crate) fn number_status(field: &str, v: i32) -> Result<Option<NumberStatus>, ApiError> {
    match pb::NumberStatus::try_from(v) {
        Ok(pb::NumberStatus::Unspecified) => Ok(None),
        Ok(pb::NumberStatus::Connected) => Ok(Some(NumberStatus::Connected)),
        Ok(pb::NumberStatus::Flagged) => Ok(Some(NumberStatus::Flagged)),
        Ok(
            pb::NumberStatus::Pending
            | pb::NumberStatus::Disconnected
            | pb::NumberStatus::Restricted
            | pb::NumberStatus::Banned,
        ) => Ok(Some(NumberStatus::Disconnected)),
        Err(_) => Err(ApiError::invalid(field, format!("unknown value {v}"))),
    }
}

fn number_status_out(s: NumberStatus) -> i32 {
    (match s {
        NumberStatus::Connected => pb::NumberStatus::Connected,
        NumberStatus::Flagged => pb::NumberStatus::Flagged,
        NumberStatus::Disconnected => pb::NumberStatus::Disconnected,
    }) as i32
}

fn account_status_out(s: AccountStatus) -> i32 {
    (match s {
        AccountStatus::Healthy => pb::AccountStatus::Healthy,
        AccountStatus::AtRisk => pb::AccountStatus::AtRisk,
        AccountStatus::Restricted => pb::AccountStatus::Restricted,
    }) as i32
}

pub(crate) fn usage_out(s: &ScopeStatus) -> pb::LimitUsage {
    let (kind, id) = scope_out(&s.scope);
    pb::LimitUsage {
        scope: kind,
        scope_id: id,
        tier: Some(tier_out(s.limit)),
        used: s.used,
        headroom: s.headroom.unwrap_or(0),
        next_release_unix_ms: s.next_release.map(ms),
    }
}

fn scope_fields(s: &ScopeStatus, now: Ts, observe_only: bool) -> pb::StatusView {
    pb::StatusView {
        profile: s.profile.clone(),
        usage: Some(usage_out(s)),
        restricted: s.restricted,
        restricted_until_unix_ms: s.restricted_until.map(ms),
        account_status: account_status_out(s.account_status),
        quality: quality_out(s.quality),
        upgrade: Some(pb::UpgradeOutlook {
            eligible: s.upgrade_eligible,
            upgrade_at_unix_ms: s.upgrade_at.map(ms),
            predicted_tier: s.next_limit.map(tier_out),
            observe_only,
        }),
        downgrade_at_unix_ms: s.downgrade_at.map(ms),
        unique_customers: Some(pb::UniqueCustomers {
            last_7d: s.unique_7d.value,
            last_30d: s.unique_30d.value,
            estimated: !(s.unique_7d.exact && s.unique_30d.exact),
        }),
        opt_out_count: u64::from(s.opt_outs),
        as_of_unix_ms: ms(now),
        ..Default::default()
    }
}

/// A number's status: its scope's limit fields and its own fields.
pub(crate) fn number_status_view(s: &ScopeStatus, n: &NumberView, now: Ts) -> pb::StatusView {
    let mut v = scope_fields(s, now, s.predicted_limit.is_some());
    v.number_id = n.number.to_string();
    v.portfolio_id = n
        .portfolio
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_default();
    v.profile = n.profile.clone();
    v.account_status = account_status_out(n.account_status);
    v.quality = quality_out(n.quality);
    v.number_status = number_status_out(n.status);
    v.flagged_since_unix_ms = n.flagged_since.map(ms);
    v.downgrade_at_unix_ms = n.downgrade_at.map(ms);
    v.spam_cooldown_until_unix_ms = n.spam_hold_until.map(ms);
    v.account_restricted = n.restricted_until.is_some();
    v.account_restricted_until_unix_ms = n.restricted_until.filter(|t| t.ms() != u64::MAX).map(ms);
    v.display_name_approved = n.display_name_approved;
    v.throughput_mps = n.throughput_mps;
    v.account_restriction_types = restriction_types_out(&n.restriction_types);
    v
}

fn restriction_types_out(types: &[RestrictionType]) -> Vec<i32> {
    types
        .iter()
        .map(|t| {
            (match t {
                RestrictionType::BizInitiated => pb::RestrictionType::BizInitiatedMessaging,
                RestrictionType::CustomerInitiated => {
                    pb::RestrictionType::CustomerInitiatedMessaging
                }
                RestrictionType::AddPhoneNumber => pb::RestrictionType::AddPhoneNumber,
            }) as i32
        })
        .collect()
}

/// Unique customers of a portfolio whose numbers live on several shards: the sum of
/// each shard's union estimate. A customer reached from numbers on two shards counts
/// twice, so the sum is labelled an estimate unless one shard holds every number and
/// counts exactly.
pub(crate) fn unique_sum(per_shard: &[(UniqueCount, UniqueCount)]) -> pb::UniqueCustomers {
    let exact = per_shard.len() <= 1 && per_shard.iter().all(|(a, b)| a.exact && b.exact);
    pb::UniqueCustomers {
        last_7d: per_shard.iter().map(|(a, _)| a.value).sum(),
        last_30d: per_shard.iter().map(|(_, b)| b.value).sum(),
        estimated: !exact,
    }
}

/// A portfolio's status: its own scope (meta profile), or its numbers' scopes
/// added up (seeds profile; `unique` from the shards' sketches). A seeds portfolio
/// without numbers has no limit to show: `usage` is unset.
pub(crate) fn portfolio_status_view(
    id: &PortfolioId,
    profile: &str,
    restricted_until: Option<Ts>,
    restriction_types: &[RestrictionType],
    scopes: &[ScopeStatus],
    unique: pb::UniqueCustomers,
    now: Ts,
) -> pb::StatusView {
    let own = scopes
        .iter()
        .find(|s| s.scope == ScopeKey::Portfolio(id.clone()));
    let mut v = match own {
        Some(s) => scope_fields(s, now, s.predicted_limit.is_some()),
        None => {
            let mut limit: Option<u64> = Some(0);
            let mut used = 0u32;
            let mut opt_outs = 0u64;
            for s in scopes {
                used = used.saturating_add(s.used);
                opt_outs += u64::from(s.opt_outs);
                limit = match (limit, s.limit.cap()) {
                    (Some(a), Some(c)) => Some(a + u64::from(c)),
                    _ => None,
                };
            }
            let limit = limit.map_or(Limit::Unlimited, |l| {
                Limit::Capped(u32::try_from(l).unwrap_or(u32::MAX))
            });
            // restricted while any number's limit is used up (R4.1), until the last
            // of those lifts
            let restricted = scopes.iter().any(|s| s.restricted);
            let restricted_until = scopes
                .iter()
                .filter(|s| s.restricted)
                .filter_map(|s| s.restricted_until)
                .max();
            // as within a shared scope: Unknown ratings say nothing, so they count
            // only when no number has a known one (R6.1)
            let quality = scopes
                .iter()
                .map(|s| s.quality)
                .filter(|q| *q != Quality::Unknown)
                .min()
                .unwrap_or(Quality::Unknown);
            pb::StatusView {
                profile: profile.to_owned(),
                usage: (!scopes.is_empty()).then(|| pb::LimitUsage {
                    scope: pb::LimitScope::Number as i32,
                    scope_id: id.to_string(),
                    tier: Some(tier_out(limit)),
                    used,
                    headroom: limit.headroom(used).unwrap_or(0),
                    next_release_unix_ms: scopes
                        .iter()
                        .filter_map(|s| s.next_release)
                        .min()
                        .map(ms),
                }),
                restricted,
                restricted_until_unix_ms: restricted.then_some(restricted_until).flatten().map(ms),
                account_status: account_status_out(if restricted {
                    AccountStatus::Restricted
                } else if quality == Quality::Low {
                    AccountStatus::AtRisk
                } else {
                    AccountStatus::Healthy
                }),
                quality: quality_out(quality),
                unique_customers: Some(unique),
                opt_out_count: opt_outs,
                as_of_unix_ms: ms(now),
                ..Default::default()
            }
        }
    };
    v.portfolio_id = id.to_string();
    v.profile = profile.to_owned();
    v.account_restricted = restricted_until.is_some();
    v.account_restricted_until_unix_ms = restricted_until.filter(|t| t.ms() != u64::MAX).map(ms);
    v.account_restriction_types = restriction_types_out(restriction_types);
    v
}
