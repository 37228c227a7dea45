//! Protobuf <-> domain conversions, all in one place. Input conversions
//! validate and name the offending field (as its path in the request);
//! nothing invalid reaches the core.

use admit_core::{
    AccountStatus, AdmitRequest, Category, Decision, Dur, IdempotencyKey, Limit, NumberId,
    NumberStatus, NumberView, Policy, PortfolioId, Quality, Reason, RestrictionType, ScopeKey,
    ScopeKind, ScopeStatus, SendKind, Target, TemplateId, Threshold, TierInput, TierMeaning, Ts,
    UniqueCount, UpgradeRule, WaId,
};
use admit_proto::v1 as pb;

use crate::error::ApiError;

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

// ---- identifiers -----------------------------------------------------------------

pub(crate) fn number(field: &'static str, s: &str) -> Result<NumberId, ApiError> {
    Ok(NumberId::parse(field, s)?)
}

pub(crate) fn customer(field: &'static str, s: &str) -> Result<WaId, ApiError> {
    Ok(WaId::parse(field, s)?)
}

pub(crate) fn portfolio(field: &'static str, s: &str) -> Result<PortfolioId, ApiError> {
    Ok(PortfolioId::parse(field, s)?)
}

pub(crate) fn template(field: &'static str, s: &str) -> Result<TemplateId, ApiError> {
    Ok(TemplateId::parse(field, s)?)
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

pub(crate) fn target(field: &'static str, t: Option<&pb::Target>) -> Result<Target, ApiError> {
    let path = format!("{field}.");
    match t.and_then(|t| t.target.as_ref()) {
        Some(pb::target::Target::NumberId(n)) => Ok(Target::Number(
            number("number_id", n).map_err(|e| under(&path, e))?,
        )),
        Some(pb::target::Target::PortfolioId(p)) => Ok(Target::Portfolio(
            portfolio("portfolio_id", p).map_err(|e| under(&path, e))?,
        )),
        None => Err(ApiError::invalid(
            field,
            "is required (a number_id or a portfolio_id)",
        )),
    }
}

/// Idempotency keys are scoped to the number (admit.proto): the core key is
/// the number and the caller's key, with long keys hashed to stay in bounds.
fn idempotency_key(number: NumberId, key: &str) -> Result<Option<IdempotencyKey>, ApiError> {
    if key.is_empty() {
        return Ok(None);
    }
    if key.chars().count() > 128 {
        return Err(ApiError::invalid(
            "idempotency_key",
            "must be at most 128 characters",
        ));
    }
    let scoped = format!("{number}/{key}");
    let scoped = if scoped.len() <= 128 {
        scoped
    } else {
        let h1 = admit_core::hash::hash_bytes(key.as_bytes());
        let h2 = admit_core::hash::mix64(h1 ^ key.len() as u64);
        format!("{number}/#{h1:016x}{h2:016x}")
    };
    Ok(Some(IdempotencyKey::parse("idempotency_key", &scoped)?))
}

fn category(v: i32) -> Result<Category, ApiError> {
    match pb::TemplateCategory::try_from(v) {
        Ok(pb::TemplateCategory::Marketing) => Ok(Category::Marketing),
        Ok(pb::TemplateCategory::Utility) => Ok(Category::Utility),
        Ok(pb::TemplateCategory::Authentication) => Ok(Category::Authentication),
        _ => Err(ApiError::invalid(
            "template.category",
            "is required: MARKETING, UTILITY or AUTHENTICATION",
        )),
    }
}

fn category_out(c: Category) -> i32 {
    match c {
        Category::Marketing => pb::TemplateCategory::Marketing as i32,
        Category::Utility => pb::TemplateCategory::Utility as i32,
        Category::Authentication => pb::TemplateCategory::Authentication as i32,
    }
}

/// One send, validated; errors name the field within the Send (a batch item's
/// `ItemError.field`).
pub(crate) fn send(s: Option<&pb::Send>) -> Result<AdmitRequest, ApiError> {
    send_at("", s)
}

/// One send found at `path` in its request (`"send."` for Admit): errors name the
/// field as its path in the request.
pub(crate) fn send_at(path: &str, s: Option<&pb::Send>) -> Result<AdmitRequest, ApiError> {
    let s = s.ok_or_else(|| {
        let at = path.trim_end_matches('.');
        ApiError::invalid(if at.is_empty() { "send" } else { at }, "is required")
    })?;
    send_fields(s).map_err(|e| under(path, e))
}

fn send_fields(s: &pb::Send) -> Result<AdmitRequest, ApiError> {
    let number = number("number_id", &s.number_id)?;
    let customer = customer("customer_id", &s.customer_id)?;
    let kind = match &s.kind {
        Some(pb::send::Kind::Template(t)) => SendKind::Template {
            id: template("template.template_id", &t.template_id)?,
            category: category(t.category)?,
        },
        Some(pb::send::Kind::FreeForm(_)) => SendKind::FreeForm,
        None => {
            return Err(ApiError::invalid(
                "kind",
                "is required: a template or free_form",
            ))
        }
    };
    Ok(AdmitRequest {
        number,
        customer,
        kind,
        idempotency_key: idempotency_key(number, &s.idempotency_key)?,
    })
}

// ---- tiers and qualities -----------------------------------------------------------

pub(crate) fn tier_name(l: Limit) -> String {
    match l {
        Limit::Unlimited => "TIER_UNLIMITED".into(),
        Limit::Capped(n) => match n {
            1_000 => "TIER_1K".into(),
            2_000 => "TIER_2K".into(),
            10_000 => "TIER_10K".into(),
            100_000 => "TIER_100K".into(),
            n => format!("TIER_{n}"),
        },
    }
}

pub(crate) fn tier_out(l: Limit) -> pb::Tier {
    pb::Tier {
        name: tier_name(l),
        limit: l.cap().unwrap_or(0),
        unlimited: l.cap().is_none(),
    }
}

pub(crate) fn tier_input(t: Option<&pb::TierValue>) -> Option<TierInput> {
    match t.and_then(|t| t.tier.as_ref())? {
        pb::tier_value::Tier::TierName(n) => Some(TierInput::Name(n.clone())),
        pb::tier_value::Tier::TierValue(v) => Some(TierInput::Value(*v)),
    }
}

/// A tier that must be understood (registration, policies): unknown values
/// are bad input here (events fail safe instead, in the core).
pub(crate) fn tier_limit(
    field: &str,
    t: Option<&pb::TierValue>,
    ladder: &[Limit],
) -> Result<Option<Limit>, ApiError> {
    let Some(input) = tier_input(t) else {
        return Ok(None);
    };
    // any value on the policy's ladder is accepted too
    if let TierInput::Value(v) = input {
        if let Ok(v) = u32::try_from(v) {
            if ladder.contains(&Limit::Capped(v)) {
                return Ok(Some(Limit::Capped(v)));
            }
        }
    }
    match input.meaning() {
        Ok(TierMeaning::Set(l)) => Ok(Some(l)),
        Ok(TierMeaning::NotSet) => Ok(None),
        Err(why) => Err(ApiError::invalid(field, why)),
    }
}

pub(crate) fn number_quality(field: &str, v: i32) -> Result<Option<Quality>, ApiError> {
    match pb::NumberQuality::try_from(v) {
        Ok(pb::NumberQuality::Unspecified) => Ok(None),
        Ok(pb::NumberQuality::High) => Ok(Some(Quality::High)),
        Ok(pb::NumberQuality::Medium) => Ok(Some(Quality::Medium)),
        Ok(pb::NumberQuality::Low) => Ok(Some(Quality::Low)),
        Ok(pb::NumberQuality::Unknown) => Ok(Some(Quality::Unknown)),
        Err(_) => Err(ApiError::invalid(field, format!("unknown value {v}"))),
    }
}

pub(crate) fn quality_out(q: Quality) -> i32 {
    (match q {
        Quality::High => pb::NumberQuality::High,
        Quality::Medium => pb::NumberQuality::Medium,
        Quality::Low => pb::NumberQuality::Low,
        Quality::Unknown => pb::NumberQuality::Unknown,
    }) as i32
}

pub(crate) fn template_quality(v: i32) -> Result<Quality, ApiError> {
    match pb::TemplateQuality::try_from(v) {
        Ok(pb::TemplateQuality::Pending) => Ok(Quality::Unknown),
        Ok(pb::TemplateQuality::High) => Ok(Quality::High),
        Ok(pb::TemplateQuality::Medium) => Ok(Quality::Medium),
        Ok(pb::TemplateQuality::Low) => Ok(Quality::Low),
        _ => Err(ApiError::invalid(
            "template_quality.quality",
            "is required: PENDING, HIGH, MEDIUM or LOW",
        )),
    }
}

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

// ---- decisions -------------------------------------------------------------------

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

fn scope_out(k: &ScopeKey) -> (i32, String) {
    match k {
        ScopeKey::Number(n) => (pb::LimitScope::Number as i32, n.to_string()),
        ScopeKey::Portfolio(p) => (pb::LimitScope::Portfolio as i32, p.to_string()),
    }
}

/// A core decision as the API shows it, decided at `now` for `scope`.
/// `replayed`: a recorded decision returned again for its idempotency key.
pub(crate) fn decision_out(
    d: &Decision,
    scope: Option<&ScopeKey>,
    now: Ts,
    replayed: bool,
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
            .map(|a| a.to_string())
            .unwrap_or_default(),
        counted: d.counted && !replayed,
        replayed,
        decided_at_unix_ms: ms(decided_at),
    }
}

/// A denial decided on the node before the core (R8 token buckets).
pub(crate) fn rate_denial(reason: Reason, retry_at: Ts) -> Decision {
    Decision::deny(reason, Some(retry_at))
}

// ---- status ----------------------------------------------------------------------

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

// ---- policies --------------------------------------------------------------------

fn rule_out(r: &UpgradeRule, min_limit: u32, max_limit: u32) -> pb::UpgradeRule {
    pb::UpgradeRule {
        min_limit,
        max_limit,
        threshold: Some(match r.threshold {
            Threshold::Absolute(n) => pb::upgrade_rule::Threshold::UniqueCustomers(n),
            Threshold::PercentOfLimit(p) => pb::upgrade_rule::Threshold::PercentOfLimit(p),
        }),
        lookback_ms: ms(Ts(r.window.ms())),
        allowed_qualities: match r.min_quality {
            Quality::High => vec![pb::NumberQuality::High as i32],
            _ => vec![
                pb::NumberQuality::High as i32,
                pb::NumberQuality::Medium as i32,
            ],
        },
        require_connected: r.require_connected,
        require_display_name_approved: r.require_display_name,
        delay_ms: ms(Ts(r.delay.ms())),
        recheck_at_effect: true,
    }
}

pub(crate) fn policy_out(p: &Policy) -> pb::Policy {
    let lowest = p.ladder.first().and_then(|l| l.cap()).unwrap_or(0);
    let second = p.ladder.get(1).and_then(|l| l.cap()).unwrap_or(0);
    let mut rules = Vec::new();
    if let Some(r) = &p.first_upgrade {
        rules.push(rule_out(r, 0, lowest));
    }
    if let Some(r) = &p.upgrade {
        let min = if p.first_upgrade.is_some() { second } else { 0 };
        rules.push(rule_out(r, min, 0));
    }
    let d = |x: Dur| ms(Ts(x.ms()));
    pb::Policy {
        name: p.name.clone(),
        scope: match p.scope {
            ScopeKind::Number => pb::LimitScope::Number as i32,
            ScopeKind::Portfolio => pb::LimitScope::Portfolio as i32,
        },
        ladder: p.ladder.iter().map(|l| tier_out(*l)).collect(),
        initial_tier: Some(pb::TierValue {
            tier: Some(pb::tier_value::Tier::TierValue(
                p.initial_limit.cap().map_or(-1, i64::from),
            )),
        }),
        upgrade_rules: rules,
        flagged_downgrade: Some(pb::FlaggedDowngrade {
            enabled: p.flagged_downgrade,
            low_duration_ms: d(p.flag_period),
            recovery_duration_ms: d(p.flag_period),
        }),
        observe_only: p.observe_only,
        opt_out_keywords: p.opt_out_keywords.clone(),
        opt_in_keywords: p.opt_in_keywords.clone(),
        opt_out_blocked_categories: p.opt_out_blocks.iter().map(|c| category_out(*c)).collect(),
        throughput_mps: p.throughput_mps,
        pair_rate: Some(pb::PairRate {
            interval_ms: d(p.pair_interval),
            burst: p.pair_burst,
        }),
        cooldowns: Some(pb::Cooldowns {
            spam_cooldown_ms: d(p.spam_cooldown),
            marketing_hold_ms: d(p.marketing_hold),
            pair_backoff_base_s: 4,
            pair_backoff_max_ms: d(p.pair_backoff_max),
            throughput_backoff_ms: d(p.throughput_backoff_base),
            first_pause_ms: d(p.first_pause),
            second_pause_ms: d(p.second_pause),
            throughput_backoff_max_ms: d(p.throughput_backoff_max),
            throughput_backoff_reset_after_ms: d(p.throughput_backoff_reset_after),
            pair_backoff_reset_after_ms: d(p.pair_backoff_reset_after),
        }),
        free_entry_point_ms: d(p.free_entry_window),
    }
}

/// One upgrade rule. The core models R5.2-R5.4 with at most two rules (one for the
/// lowest tier, one for the others), a minimum quality (HIGH, or MEDIUM and HIGH) and a
/// check of every condition again when the delay ends; what it cannot hold is refused
/// here rather than dropped.
fn rule_in(
    i: usize,
    r: &pb::UpgradeRule,
    conversation_window: Dur,
) -> Result<UpgradeRule, ApiError> {
    let f = |name: &str| format!("policy.upgrade_rules[{i}].{name}");
    let threshold = match r.threshold {
        Some(pb::upgrade_rule::Threshold::UniqueCustomers(n)) if n > 0 => Threshold::Absolute(n),
        Some(pb::upgrade_rule::Threshold::PercentOfLimit(p)) if (1..=100).contains(&p) => {
            Threshold::PercentOfLimit(p)
        }
        Some(pb::upgrade_rule::Threshold::PercentOfLimit(_)) => {
            return Err(ApiError::invalid(
                &f("percent_of_limit"),
                "must be 1 to 100",
            ))
        }
        _ => {
            return Err(ApiError::invalid(
                &f("threshold"),
                "is required: unique_customers > 0 or percent_of_limit",
            ))
        }
    };
    let (mut high, mut medium) = (false, false);
    for (j, q) in r.allowed_qualities.iter().enumerate() {
        match pb::NumberQuality::try_from(*q) {
            Ok(pb::NumberQuality::High) => high = true,
            Ok(pb::NumberQuality::Medium) => medium = true,
            _ => {
                return Err(ApiError::invalid(
                    &f(&format!("allowed_qualities[{j}]")),
                    "must be HIGH or MEDIUM: only a known good rating allows an upgrade",
                ))
            }
        }
    }
    let min_quality = match (high, medium) {
        (true, false) => Quality::High,
        // empty: MEDIUM and HIGH (R5.3)
        (true, true) | (false, false) => Quality::Medium,
        (false, true) => {
            return Err(ApiError::invalid(
                &f("allowed_qualities"),
                "MEDIUM must come with HIGH: a rule takes HIGH, or MEDIUM and HIGH",
            ))
        }
    };
    let window = dur_in(&f("lookback_ms"), r.lookback_ms)?;
    if window < conversation_window {
        return Err(ApiError::invalid(
            &f("lookback_ms"),
            format!(
                "must be at least the conversation window ({} ms)",
                conversation_window.ms()
            ),
        ));
    }
    let delay = dur_in(&f("delay_ms"), r.delay_ms)?;
    if delay.ms() > 0 && !r.recheck_at_effect {
        return Err(ApiError::invalid(
            &f("recheck_at_effect"),
            "must be true: every condition is checked again when the delay ends (R5.3)",
        ));
    }
    Ok(UpgradeRule {
        window,
        threshold,
        min_quality,
        require_connected: r.require_connected,
        require_display_name: r.require_display_name_approved,
        delay,
    })
}

/// The upgrade rules (first match wins) as the core holds them: none; one for every
/// tier (`max_limit` 0); one for the lowest tier only (`max_limit` = its limit); or
/// the lowest tier's rule followed by one for the tiers above.
fn rules_in(
    rules: &[pb::UpgradeRule],
    ladder: &[Limit],
    conversation_window: Dur,
) -> Result<(Option<UpgradeRule>, Option<UpgradeRule>), ApiError> {
    let lowest = ladder.first().and_then(|l| l.cap()).unwrap_or(0);
    let second = ladder
        .get(1)
        .map_or(lowest, |l| l.cap().unwrap_or(u32::MAX));
    if rules.len() > 2 {
        return Err(ApiError::invalid(
            "policy.upgrade_rules[2]",
            "at most two rules: one for the lowest tier and one for the tiers above",
        ));
    }
    let mut first_upgrade = None;
    let mut upgrade = None;
    for (i, r) in rules.iter().enumerate() {
        let f = |name: &str| format!("policy.upgrade_rules[{i}].{name}");
        let rule = rule_in(i, r, conversation_window)?;
        let only_lowest = r.max_limit != 0;
        if only_lowest && r.max_limit != lowest {
            return Err(ApiError::invalid(
                &f("max_limit"),
                format!("must be 0 (no bound) or the lowest tier's limit ({lowest})"),
            ));
        }
        if only_lowest && i > 0 {
            return Err(ApiError::invalid(
                &f("max_limit"),
                "must be 0: only the first rule may be the lowest tier's",
            ));
        }
        if !only_lowest && i > 0 && first_upgrade.is_none() {
            return Err(ApiError::invalid(
                &f("max_limit"),
                "never applies: rule [0] covers every tier",
            ));
        }
        // the rule must cover the lowest tier it is for: the lowest, or (after the
        // lowest tier's rule) the next one up
        let most = if i == 0 { lowest } else { second };
        if r.min_limit > most {
            return Err(ApiError::invalid(
                &f("min_limit"),
                format!("must be at most {most}: this rule applies from that tier up"),
            ));
        }
        if only_lowest {
            first_upgrade = Some(rule);
        } else {
            upgrade = Some(rule);
        }
    }
    Ok((first_upgrade, upgrade))
}

/// The profile name, checked before anything is read or written.
pub(crate) fn policy_name(p: Option<&pb::Policy>) -> Result<String, ApiError> {
    let p = p.ok_or_else(|| ApiError::invalid("policy", "is required"))?;
    if p.name.is_empty()
        || p.name.len() > 64
        || !p
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(ApiError::invalid(
            "policy.name",
            "must be 1 to 64 characters of [a-z0-9_-]",
        ));
    }
    Ok(p.name.clone())
}

/// R7.1 keywords: an empty list keeps the base profile's (an unset repeated field must
/// not switch STOP and START off). Matching ignores case and spaces, so a blank keyword
/// would match an empty message (a media message without a caption) and is refused.
fn keywords_in(field: &str, given: &[String], base: &[String]) -> Result<Vec<String>, ApiError> {
    if given.is_empty() {
        return Ok(base.to_vec());
    }
    if given.len() > Policy::MAX_KEYWORDS {
        return Err(ApiError::invalid(
            field,
            format!("at most {} keywords", Policy::MAX_KEYWORDS),
        ));
    }
    for (i, k) in given.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if k.chars().all(char::is_whitespace) {
            return Err(ApiError::invalid(
                &f,
                "must hold a character other than spaces",
            ));
        }
        if k.chars().count() > Policy::MAX_KEYWORD_CHARS {
            return Err(ApiError::invalid(
                &f,
                format!("must be at most {} characters", Policy::MAX_KEYWORD_CHARS),
            ));
        }
    }
    Ok(given.to_vec())
}

/// A count in `1..=max`, 0 for the base profile's value.
fn count_or(field: &str, v: u32, max: u32, base: u32) -> Result<u32, ApiError> {
    match v {
        0 => Ok(base),
        v if v <= max => Ok(v),
        _ => Err(ApiError::invalid(
            field,
            format!("must be 0 (default) to {max}"),
        )),
    }
}

/// A policy from the API. Fields the API does not carry (window lengths, the
/// idempotency time) come from `base`, the stored profile of that name or the
/// seeds defaults.
pub(crate) fn policy_in(p: Option<&pb::Policy>, base: &Policy) -> Result<Policy, ApiError> {
    let name = policy_name(p)?;
    let p = p.ok_or_else(|| ApiError::invalid("policy", "is required"))?;
    let scope = match pb::LimitScope::try_from(p.scope) {
        Ok(pb::LimitScope::Number) => ScopeKind::Number,
        Ok(pb::LimitScope::Portfolio) => ScopeKind::Portfolio,
        _ => {
            return Err(ApiError::invalid(
                "policy.scope",
                "is required: NUMBER or PORTFOLIO",
            ))
        }
    };
    let mut ladder = Vec::new();
    for (i, t) in p.ladder.iter().enumerate() {
        ladder.push(if t.unlimited {
            Limit::Unlimited
        } else if t.limit == 0 {
            return Err(ApiError::invalid(
                &format!("policy.ladder[{i}].limit"),
                "must be above zero unless unlimited",
            ));
        } else {
            Limit::Capped(t.limit)
        });
    }
    let initial_limit = match tier_limit("policy.initial_tier", p.initial_tier.as_ref(), &ladder)? {
        Some(l) if ladder.contains(&l) => l,
        Some(_) => {
            return Err(ApiError::invalid(
                "policy.initial_tier",
                "must be on the ladder",
            ))
        }
        None => *ladder
            .first()
            .ok_or_else(|| ApiError::invalid("policy.ladder", "must hold at least one tier"))?,
    };
    let (first_upgrade, upgrade) = rules_in(&p.upgrade_rules, &ladder, base.conversation_window)?;
    let mut opt_out_blocks = Vec::new();
    for (i, c) in p.opt_out_blocked_categories.iter().enumerate() {
        let c = category(*c).map_err(|_| {
            ApiError::invalid(
                &format!("policy.opt_out_blocked_categories[{i}]"),
                "must be MARKETING, UTILITY or AUTHENTICATION",
            )
        })?;
        opt_out_blocks.push(c);
    }
    if !opt_out_blocks.contains(&Category::Marketing) {
        // R7.2: marketing is always blocked for opted-out customers
        opt_out_blocks.push(Category::Marketing);
    }
    let fd = p.flagged_downgrade.unwrap_or_default();
    let pr = p.pair_rate.unwrap_or_default();
    let cd = p.cooldowns.unwrap_or_default();
    let or_base = |v: i64, b: Dur, f: &str| -> Result<Dur, ApiError> {
        if v == 0 {
            Ok(b)
        } else {
            dur_in(f, v)
        }
    };
    let flag_period = or_base(
        fd.low_duration_ms,
        base.flag_period,
        "policy.flagged_downgrade.low_duration_ms",
    )?;
    // R5.5 gives Low and recovery the same 7 days; the core has one period
    if fd.recovery_duration_ms != 0 && fd.recovery_duration_ms != ms(Ts(flag_period.ms())) {
        return Err(ApiError::invalid(
            "policy.flagged_downgrade.recovery_duration_ms",
            "must be 0 or equal to low_duration_ms: one period serves both (R5.5)",
        ));
    }
    // section 9: 131056 backs off 4^x seconds; the growth is fixed
    if !matches!(cd.pair_backoff_base_s, 0 | 4) {
        return Err(ApiError::invalid(
            "policy.cooldowns.pair_backoff_base_s",
            "must be 0 or 4: the pair back-off grows 4^x seconds (section 9)",
        ));
    }
    let pair_interval = or_base(
        pr.interval_ms,
        base.pair_interval,
        "policy.pair_rate.interval_ms",
    )?;
    if pair_interval > Policy::MAX_PAIR_INTERVAL {
        return Err(ApiError::invalid(
            "policy.pair_rate.interval_ms",
            "must be 0 (default) to 86400000 (one day)",
        ));
    }
    let policy = Policy {
        name,
        ladder,
        initial_limit,
        initial_quality: base.initial_quality,
        scope,
        first_upgrade,
        upgrade,
        flagged_downgrade: fd.enabled,
        flag_period,
        observe_only: p.observe_only,
        conversation_window: base.conversation_window,
        service_window: base.service_window,
        free_entry_window: dur_in("policy.free_entry_point_ms", p.free_entry_point_ms)?,
        // empty lists keep the base profile's keywords (R7.1's defaults): an
        // unset repeated field must not switch STOP and START off
        opt_out_keywords: keywords_in(
            "policy.opt_out_keywords",
            &p.opt_out_keywords,
            &base.opt_out_keywords,
        )?,
        opt_in_keywords: keywords_in(
            "policy.opt_in_keywords",
            &p.opt_in_keywords,
            &base.opt_in_keywords,
        )?,
        opt_out_blocks,
        throughput_mps: count_or(
            "policy.throughput_mps",
            p.throughput_mps,
            Policy::MAX_THROUGHPUT_MPS,
            base.throughput_mps,
        )?,
        pair_interval,
        pair_burst: count_or(
            "policy.pair_rate.burst",
            pr.burst,
            Policy::MAX_PAIR_BURST,
            base.pair_burst,
        )?,
        spam_cooldown: or_base(
            cd.spam_cooldown_ms,
            base.spam_cooldown,
            "policy.cooldowns.spam_cooldown_ms",
        )?,
        marketing_hold: or_base(
            cd.marketing_hold_ms,
            base.marketing_hold,
            "policy.cooldowns.marketing_hold_ms",
        )?,
        pair_backoff_base: base.pair_backoff_base,
        pair_backoff_max: or_base(
            cd.pair_backoff_max_ms,
            base.pair_backoff_max,
            "policy.cooldowns.pair_backoff_max_ms",
        )?,
        throughput_backoff_base: or_base(
            cd.throughput_backoff_ms,
            base.throughput_backoff_base,
            "policy.cooldowns.throughput_backoff_ms",
        )?,
        throughput_backoff_max: or_base(
            cd.throughput_backoff_max_ms,
            base.throughput_backoff_max,
            "policy.cooldowns.throughput_backoff_max_ms",
        )?,
        first_pause: or_base(
            cd.first_pause_ms,
            base.first_pause,
            "policy.cooldowns.first_pause_ms",
        )?,
        second_pause: or_base(
            cd.second_pause_ms,
            base.second_pause,
            "policy.cooldowns.second_pause_ms",
        )?,
        idempotency_ttl: base.idempotency_ttl,
        pair_backoff_reset_after: or_base(
            cd.pair_backoff_reset_after_ms,
            base.pair_backoff_reset_after,
            "policy.cooldowns.pair_backoff_reset_after_ms",
        )?,
        throughput_backoff_reset_after: or_base(
            cd.throughput_backoff_reset_after_ms,
            base.throughput_backoff_reset_after,
            "policy.cooldowns.throughput_backoff_reset_after_ms",
        )?,
    };
    policy.validate()?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip_through_the_api() {
        for p in [Policy::seeds(), Policy::meta()] {
            let back = policy_in(Some(&policy_out(&p)), &p).unwrap();
            assert_eq!(back, p);
        }
    }

    /// Whatever the API carries and the core cannot hold is refused naming the field,
    /// never dropped; rate and keyword sizes are bounded (R7.1, R8).
    #[test]
    fn policies_refuse_what_the_core_cannot_hold() {
        let base = Policy::seeds();
        let good = policy_out(&base);
        let field = |f: &dyn Fn(&mut pb::Policy)| {
            let mut p = good.clone();
            f(&mut p);
            match policy_in(Some(&p), &base) {
                Err(e) => e.field().unwrap_or_default().to_owned(),
                Ok(_) => String::new(),
            }
        };
        type Change = Box<dyn Fn(&mut pb::Policy)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "",
                Box::new(|p| p.pair_rate.as_mut().unwrap().interval_ms = 86_400_000),
            ),
            (
                "policy.pair_rate.interval_ms",
                Box::new(|p| p.pair_rate.as_mut().unwrap().interval_ms = 86_400_001),
            ),
            (
                "policy.pair_rate.interval_ms",
                Box::new(|p| p.pair_rate.as_mut().unwrap().interval_ms = i64::MAX),
            ),
            (
                "",
                Box::new(|p| p.pair_rate.as_mut().unwrap().burst = 1_000_000),
            ),
            (
                "policy.pair_rate.burst",
                Box::new(|p| p.pair_rate.as_mut().unwrap().burst = u32::MAX),
            ),
            ("", Box::new(|p| p.throughput_mps = 1_000_000)),
            (
                "policy.throughput_mps",
                Box::new(|p| p.throughput_mps = 1_000_001),
            ),
            (
                "policy.opt_out_keywords[1]",
                Box::new(|p| p.opt_out_keywords = vec!["STOP".into(), " \t ".into()]),
            ),
            (
                "policy.opt_in_keywords[0]",
                Box::new(|p| p.opt_in_keywords = vec![String::new()]),
            ),
            (
                "policy.opt_out_keywords[0]",
                Box::new(|p| p.opt_out_keywords = vec!["S".repeat(65)]),
            ),
            (
                "policy.opt_out_keywords",
                Box::new(|p| p.opt_out_keywords = (0..65).map(|i| format!("K{i}")).collect()),
            ),
            (
                "policy.flagged_downgrade.recovery_duration_ms",
                Box::new(|p| p.flagged_downgrade.as_mut().unwrap().recovery_duration_ms = 1),
            ),
            (
                "",
                Box::new(|p| {
                    let f = p.flagged_downgrade.as_mut().unwrap();
                    (f.low_duration_ms, f.recovery_duration_ms) = (3_600_000, 3_600_000);
                }),
            ),
            (
                "policy.cooldowns.pair_backoff_base_s",
                Box::new(|p| p.cooldowns.as_mut().unwrap().pair_backoff_base_s = 2),
            ),
            (
                "",
                Box::new(|p| p.cooldowns.as_mut().unwrap().pair_backoff_base_s = 0),
            ),
            (
                "policy.upgrade_rules[1].recheck_at_effect",
                Box::new(|p| p.upgrade_rules[1].recheck_at_effect = false),
            ),
            // no delay: nothing to check again
            (
                "",
                Box::new(|p| p.upgrade_rules[0].recheck_at_effect = false),
            ),
            (
                "policy.upgrade_rules[2]",
                Box::new(|p| p.upgrade_rules.push(p.upgrade_rules[1].clone())),
            ),
            (
                "policy.upgrade_rules[1].max_limit",
                Box::new(|p| p.upgrade_rules[1] = p.upgrade_rules[0].clone()),
            ),
            (
                "policy.upgrade_rules[1].max_limit",
                Box::new(|p| p.upgrade_rules[0].max_limit = 0),
            ),
            (
                "policy.upgrade_rules[0].max_limit",
                Box::new(|p| p.upgrade_rules[0].max_limit = 5_000),
            ),
            (
                "policy.upgrade_rules[0].min_limit",
                Box::new(|p| p.upgrade_rules[0].min_limit = 251),
            ),
            (
                "policy.upgrade_rules[1].min_limit",
                Box::new(|p| p.upgrade_rules[1].min_limit = 10_000),
            ),
            ("", Box::new(|p| p.upgrade_rules[1].min_limit = 0)),
            (
                "policy.upgrade_rules[0].allowed_qualities[0]",
                Box::new(|p| {
                    p.upgrade_rules[0].allowed_qualities = vec![pb::NumberQuality::Low as i32]
                }),
            ),
            (
                "policy.upgrade_rules[1].allowed_qualities",
                Box::new(|p| {
                    p.upgrade_rules[1].allowed_qualities = vec![pb::NumberQuality::Medium as i32]
                }),
            ),
            (
                "policy.upgrade_rules[1].lookback_ms",
                Box::new(|p| p.upgrade_rules[1].lookback_ms = 3_600_000),
            ),
            ("policy.name", Box::new(|p| p.name = "Bad Name".into())),
        ];
        for (i, (want, f)) in cases.iter().enumerate() {
            assert_eq!(field(f.as_ref()), *want, "case {i}");
        }
        // a single rule for the lowest tier only, or one for every tier
        let mut p = good.clone();
        p.upgrade_rules.truncate(1);
        let got = policy_in(Some(&p), &base).unwrap();
        assert!(got.first_upgrade.is_some() && got.upgrade.is_none());
        assert_eq!(policy_out(&got).upgrade_rules.len(), 1);
        p.upgrade_rules = vec![good.upgrade_rules[1].clone()];
        p.upgrade_rules[0].allowed_qualities.clear();
        assert_eq!(
            policy_in(Some(&p), &base).unwrap_err().field(),
            Some("policy.upgrade_rules[0].min_limit")
        );
        p.upgrade_rules[0].min_limit = 0;
        let got = policy_in(Some(&p), &base).unwrap();
        assert!(got.first_upgrade.is_none());
        assert_eq!(got.upgrade.unwrap().min_quality, Quality::Medium);
    }

    #[test]
    fn targets_and_single_sends_name_the_field_by_its_path() {
        let t = pb::Target {
            target: Some(pb::target::Target::NumberId("x".into())),
        };
        let e = target("tier.target", Some(&t)).unwrap_err();
        assert_eq!(e.field(), Some("tier.target.number_id"));
        let t = pb::Target {
            target: Some(pb::target::Target::PortfolioId("a b".into())),
        };
        let e = target("target", Some(&t)).unwrap_err();
        assert_eq!(e.field(), Some("target.portfolio_id"));
        let s = pb::Send {
            number_id: "1".into(),
            customer_id: "+4915112345".into(),
            kind: Some(pb::send::Kind::FreeForm(pb::FreeForm {})),
            idempotency_key: String::new(),
        };
        assert_eq!(send(Some(&s)).unwrap_err().field(), Some("customer_id"));
        let e = send_at("send.", Some(&s)).unwrap_err();
        assert_eq!(e.field(), Some("send.customer_id"));
        assert_eq!(send_at("send.", None).unwrap_err().field(), Some("send"));
    }

    #[test]
    fn sends_name_the_bad_field() {
        let mut s = pb::Send {
            number_id: "123".into(),
            customer_id: "4915112345".into(),
            kind: Some(pb::send::Kind::FreeForm(pb::FreeForm {})),
            idempotency_key: String::new(),
        };
        assert!(send(Some(&s)).is_ok());
        s.customer_id = "12".into();
        assert_eq!(send(Some(&s)).unwrap_err().field(), Some("customer_id"));
        s.customer_id = "4915112345".into();
        s.number_id = "x".into();
        assert_eq!(send(Some(&s)).unwrap_err().field(), Some("number_id"));
        s.number_id = "1".into();
        s.kind = Some(pb::send::Kind::Template(pb::Template {
            template_id: "t1".into(),
            category: 0,
            ..Default::default()
        }));
        assert_eq!(
            send(Some(&s)).unwrap_err().field(),
            Some("template.category")
        );
    }
}
