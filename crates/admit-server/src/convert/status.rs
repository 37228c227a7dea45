//! Status views: a scope's usage, a number's and a portfolio's status, and
//! the number and account states they show.

use admit_core::{
    AccountStatus, NumberStatus, NumberView, PortfolioStatus, RestrictionType, ScopeStatus, Ts,
};
use admit_proto::v1 as pb;

use super::decision::scope_out;
use super::scalar::ms;
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
    v.account_restricted_until_unix_ms = until_out(n.restricted_until);
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

/// A portfolio's status, merged from its shards (`PortfolioStatus::merge`):
/// its own scope (meta profile), or its numbers' scopes added up (seeds
/// profile). A seeds portfolio without numbers has no limit to show: `usage`
/// is unset.
pub(crate) fn portfolio_status_view(p: &PortfolioStatus, now: Ts) -> pb::StatusView {
    let id = &p.portfolio;
    let mut v = match p.own_scope() {
        Some(s) => scope_fields(s, now, s.predicted_limit.is_some()),
        None => {
            let sum = p.sum_of_scopes();
            pb::StatusView {
                usage: sum.limit.map(|limit| pb::LimitUsage {
                    scope: pb::LimitScope::Number as i32,
                    scope_id: id.to_string(),
                    tier: Some(tier_out(limit)),
                    used: sum.used,
                    headroom: sum.headroom.unwrap_or(0),
                    next_release_unix_ms: sum.next_release.map(ms),
                }),
                restricted: sum.restricted,
                restricted_until_unix_ms: sum.restricted_until.map(ms),
                account_status: account_status_out(sum.account_status),
                quality: quality_out(sum.quality),
                unique_customers: Some(pb::UniqueCustomers {
                    last_7d: p.unique_7d.value,
                    last_30d: p.unique_30d.value,
                    estimated: !(p.unique_7d.exact && p.unique_30d.exact),
                }),
                opt_out_count: sum.opt_outs,
                as_of_unix_ms: ms(now),
                ..Default::default()
            }
        }
    };
    v.portfolio_id = id.to_string();
    v.profile = p.profile.clone();
    v.account_restricted = p.restricted_until.is_some();
    v.account_restricted_until_unix_ms = until_out(p.restricted_until);
    v.account_restriction_types = restriction_types_out(&p.restriction_types);
    v
}

/// A restriction's end as the API shows it: none while it holds until lifted.
fn until_out(t: Option<Ts>) -> Option<i64> {
    t.filter(|t| *t != Ts::UNTIL_LIFTED).map(ms)
}
