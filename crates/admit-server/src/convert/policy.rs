//! Policies: a profile from the API (checked field by field, each part in
//! its own function) and back.

use admit_core::{
    Category, Dur, Limit, Policy, Quality, ScopeKind, Stated, Threshold, Ts, UpgradeRule,
};
use admit_proto::v1 as pb;

use super::scalar::{dur_in, ms};
use super::send::{category, category_out};
use super::tier::{tier_limit, tier_out};
use crate::error::ApiError;

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
        scope: scope_kind_out(p.scope),
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
            pair_backoff_base_s: Policy::BACKOFF_GROWTH as u32,
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
/// not switch STOP and START off); the core checks the list (`Policy::validate`).
fn keywords_in(given: &[String], base: &[String]) -> Vec<String> {
    if given.is_empty() {
        base.to_vec()
    } else {
        given.to_vec()
    }
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
/// seeds defaults. Fields are checked in the order of the message.
pub(crate) fn policy_in(p: Option<&pb::Policy>, base: &Policy) -> Result<Policy, ApiError> {
    let name = policy_name(p)?;
    let p = p.ok_or_else(|| ApiError::invalid("policy", "is required"))?;
    let scope = scope_kind_in(p.scope)?;
    let ladder = ladder_in(&p.ladder)?;
    let initial_limit = initial_limit_in(p.initial_tier.as_ref(), &ladder)?;
    let (first_upgrade, upgrade) = rules_in(&p.upgrade_rules, &ladder, base.conversation_window)?;
    let opt_out_blocks = blocked_categories_in(&p.opt_out_blocked_categories)?;
    let fd = p.flagged_downgrade.unwrap_or_default();
    let pr = p.pair_rate.unwrap_or_default();
    let cd = p.cooldowns.unwrap_or_default();
    let flag_period = flag_period_in(&fd, base)?;
    let pair_interval = pair_interval_in(&pr, base)?;
    let free_entry_window = dur_in("policy.free_entry_point_ms", p.free_entry_point_ms)?;
    // empty lists keep the base profile's keywords (R7.1's defaults): an
    // unset repeated field must not switch STOP and START off
    let opt_out_keywords = keywords_in(&p.opt_out_keywords, &base.opt_out_keywords);
    let opt_in_keywords = keywords_in(&p.opt_in_keywords, &base.opt_in_keywords);
    let throughput_mps = count_or(
        "policy.throughput_mps",
        p.throughput_mps,
        Policy::MAX_THROUGHPUT_MPS,
        base.throughput_mps,
    )?;
    let pair_burst = count_or(
        "policy.pair_rate.burst",
        pr.burst,
        Policy::MAX_PAIR_BURST,
        base.pair_burst,
    )?;
    let c = cooldowns_in(&cd, base)?;
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
        free_entry_window,
        opt_out_keywords,
        opt_in_keywords,
        opt_out_blocks,
        throughput_mps,
        pair_interval,
        pair_burst,
        spam_cooldown: c.spam_cooldown,
        marketing_hold: c.marketing_hold,
        pair_backoff_base: base.pair_backoff_base,
        pair_backoff_max: c.pair_backoff_max,
        throughput_backoff_base: c.throughput_backoff_base,
        throughput_backoff_max: c.throughput_backoff_max,
        first_pause: c.first_pause,
        second_pause: c.second_pause,
        idempotency_ttl: base.idempotency_ttl,
        pair_backoff_reset_after: c.pair_backoff_reset_after,
        throughput_backoff_reset_after: c.throughput_backoff_reset_after,
    };
    // what the API states and the core fixes is checked by the core too
    policy.validate_stated(&Stated {
        // a negative length is no flag period either: it gets the R5.5 message
        recovery_period: (fd.recovery_duration_ms != 0)
            .then(|| Dur(u64::try_from(fd.recovery_duration_ms).unwrap_or(u64::MAX))),
        pair_backoff_growth: (cd.pair_backoff_base_s != 0)
            .then_some(u64::from(cd.pair_backoff_base_s)),
    })?;
    Ok(policy)
}

fn scope_kind_in(v: i32) -> Result<ScopeKind, ApiError> {
    match pb::LimitScope::try_from(v) {
        Ok(pb::LimitScope::Number) => Ok(ScopeKind::Number),
        Ok(pb::LimitScope::Portfolio) => Ok(ScopeKind::Portfolio),
        _ => Err(ApiError::invalid(
            "policy.scope",
            "is required: NUMBER or PORTFOLIO",
        )),
    }
}

fn scope_kind_out(k: ScopeKind) -> i32 {
    (match k {
        ScopeKind::Number => pb::LimitScope::Number,
        ScopeKind::Portfolio => pb::LimitScope::Portfolio,
    }) as i32
}

/// The ladder of tiers, lowest first; a capped tier has a limit above zero.
fn ladder_in(tiers: &[pb::Tier]) -> Result<Vec<Limit>, ApiError> {
    let mut ladder = Vec::with_capacity(tiers.len());
    for (i, t) in tiers.iter().enumerate() {
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
    Ok(ladder)
}

/// The initial tier: one on the ladder, else its lowest.
fn initial_limit_in(t: Option<&pb::TierValue>, ladder: &[Limit]) -> Result<Limit, ApiError> {
    match tier_limit("policy.initial_tier", t, ladder)? {
        Some(l) if ladder.contains(&l) => Ok(l),
        Some(_) => Err(ApiError::invalid(
            "policy.initial_tier",
            "must be on the ladder",
        )),
        None => ladder
            .first()
            .copied()
            .ok_or_else(|| ApiError::invalid("policy.ladder", "must hold at least one tier")),
    }
}

/// The categories an opt-out blocks, as configured (the core adds what R7.2
/// always blocks).
fn blocked_categories_in(given: &[i32]) -> Result<Vec<Category>, ApiError> {
    let mut blocks = Vec::with_capacity(given.len() + 1);
    for (i, c) in given.iter().enumerate() {
        let c = category(*c).map_err(|_| {
            ApiError::invalid(
                &format!("policy.opt_out_blocked_categories[{i}]"),
                "must be MARKETING, UTILITY or AUTHENTICATION",
            )
        })?;
        blocks.push(c);
    }
    Ok(Policy::opt_out_blocks_with(&blocks))
}

/// A duration in ms, 0 for the base profile's value.
fn dur_or(field: &str, v: i64, base: Dur) -> Result<Dur, ApiError> {
    if v == 0 {
        Ok(base)
    } else {
        dur_in(field, v)
    }
}

/// The flagged-downgrade period (R5.5).
fn flag_period_in(fd: &pb::FlaggedDowngrade, base: &Policy) -> Result<Dur, ApiError> {
    dur_or(
        "policy.flagged_downgrade.low_duration_ms",
        fd.low_duration_ms,
        base.flag_period,
    )
}

/// The R8 pair rate's interval, at most a day.
fn pair_interval_in(pr: &pb::PairRate, base: &Policy) -> Result<Dur, ApiError> {
    let interval = dur_or(
        "policy.pair_rate.interval_ms",
        pr.interval_ms,
        base.pair_interval,
    )?;
    if interval > Policy::MAX_PAIR_INTERVAL {
        return Err(ApiError::invalid(
            "policy.pair_rate.interval_ms",
            "must be 0 (default) to 86400000 (one day)",
        ));
    }
    Ok(interval)
}

/// The holds and back-offs of `Cooldowns` the core takes from the API.
struct CooldownsIn {
    spam_cooldown: Dur,
    marketing_hold: Dur,
    pair_backoff_max: Dur,
    throughput_backoff_base: Dur,
    first_pause: Dur,
    second_pause: Dur,
    throughput_backoff_max: Dur,
    throughput_backoff_reset_after: Dur,
    pair_backoff_reset_after: Dur,
}

fn cooldowns_in(cd: &pb::Cooldowns, base: &Policy) -> Result<CooldownsIn, ApiError> {
    Ok(CooldownsIn {
        spam_cooldown: dur_or(
            "policy.cooldowns.spam_cooldown_ms",
            cd.spam_cooldown_ms,
            base.spam_cooldown,
        )?,
        marketing_hold: dur_or(
            "policy.cooldowns.marketing_hold_ms",
            cd.marketing_hold_ms,
            base.marketing_hold,
        )?,
        pair_backoff_max: dur_or(
            "policy.cooldowns.pair_backoff_max_ms",
            cd.pair_backoff_max_ms,
            base.pair_backoff_max,
        )?,
        throughput_backoff_base: dur_or(
            "policy.cooldowns.throughput_backoff_ms",
            cd.throughput_backoff_ms,
            base.throughput_backoff_base,
        )?,
        first_pause: dur_or(
            "policy.cooldowns.first_pause_ms",
            cd.first_pause_ms,
            base.first_pause,
        )?,
        second_pause: dur_or(
            "policy.cooldowns.second_pause_ms",
            cd.second_pause_ms,
            base.second_pause,
        )?,
        throughput_backoff_max: dur_or(
            "policy.cooldowns.throughput_backoff_max_ms",
            cd.throughput_backoff_max_ms,
            base.throughput_backoff_max,
        )?,
        throughput_backoff_reset_after: dur_or(
            "policy.cooldowns.throughput_backoff_reset_after_ms",
            cd.throughput_backoff_reset_after_ms,
            base.throughput_backoff_reset_after,
        )?,
        pair_backoff_reset_after: dur_or(
            "policy.cooldowns.pair_backoff_reset_after_ms",
            cd.pair_backoff_reset_after_ms,
            base.pair_backoff_reset_after,
        )?,
    })
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

    /// Section 9's back-off parameters travel both ways; 0 keeps the base
    /// profile's value.
    #[test]
    fn back_off_parameters_cross_the_api() {
        let base = Policy::seeds();
        let mut p = policy_out(&base);
        let cd = p.cooldowns.as_mut().unwrap();
        cd.throughput_backoff_max_ms = 120_000;
        cd.throughput_backoff_reset_after_ms = 3_600_000;
        cd.pair_backoff_reset_after_ms = 7_200_000;
        let got = policy_in(Some(&p), &base).unwrap();
        assert_eq!(got.throughput_backoff_max, Dur(120_000));
        assert_eq!(got.throughput_backoff_reset_after, Dur(3_600_000));
        assert_eq!(got.pair_backoff_reset_after, Dur(7_200_000));
        assert_eq!(policy_out(&got), p);
        let cd = p.cooldowns.as_mut().unwrap();
        (cd.throughput_backoff_max_ms, cd.pair_backoff_reset_after_ms) = (0, 0);
        let got = policy_in(Some(&p), &base).unwrap();
        assert_eq!(got.throughput_backoff_max, base.throughput_backoff_max);
        assert_eq!(got.pair_backoff_reset_after, base.pair_backoff_reset_after);
        p.cooldowns
            .as_mut()
            .unwrap()
            .throughput_backoff_reset_after_ms = -1;
        assert_eq!(
            policy_in(Some(&p), &base).unwrap_err().field(),
            Some("policy.cooldowns.throughput_backoff_reset_after_ms")
        );
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
}
