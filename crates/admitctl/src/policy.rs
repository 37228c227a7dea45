//! Policy profiles as files: the `admit.v1.Policy` message as TOML or JSON,
//! with enums written as lower-case words (`scope = "number"`,
//! `allowed_qualities = ["high", "medium"]`). `policy get` prints this form
//! and `policy set` reads it back, so a profile can be edited as text.
//! Imports admit-client's protobuf re-export and serde; no rules: the
//! server validates every value.

use admit_client::proto as pb;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyFile {
    pub name: String,
    /// "number" or "portfolio".
    pub scope: String,
    pub ladder: Vec<TierFile>,
    /// A tier name ("TIER_250") or a limit ("250").
    pub initial_tier: String,
    pub upgrade_rules: Vec<RuleFile>,
    pub flagged_downgrade: FlaggedFile,
    pub observe_only: bool,
    pub opt_out_keywords: Vec<String>,
    pub opt_in_keywords: Vec<String>,
    /// "marketing", "utility", "authentication".
    pub opt_out_blocked_categories: Vec<String>,
    pub throughput_mps: u32,
    pub pair_rate: PairRateFile,
    pub cooldowns: CooldownsFile,
    pub free_entry_point_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TierFile {
    pub name: String,
    pub limit: u32,
    pub unlimited: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RuleFile {
    pub min_limit: u32,
    pub max_limit: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_customers: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent_of_limit: Option<u32>,
    pub lookback_ms: i64,
    /// "high", "medium".
    pub allowed_qualities: Vec<String>,
    pub require_connected: bool,
    pub require_display_name_approved: bool,
    pub delay_ms: i64,
    pub recheck_at_effect: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FlaggedFile {
    pub enabled: bool,
    pub low_duration_ms: i64,
    pub recovery_duration_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PairRateFile {
    pub interval_ms: i64,
    pub burst: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CooldownsFile {
    pub spam_cooldown_ms: i64,
    pub marketing_hold_ms: i64,
    pub pair_backoff_base_s: u32,
    pub pair_backoff_max_ms: i64,
    pub throughput_backoff_ms: i64,
    pub first_pause_ms: i64,
    pub second_pause_ms: i64,
    pub throughput_backoff_max_ms: i64,
    pub throughput_backoff_reset_after_ms: i64,
    pub pair_backoff_reset_after_ms: i64,
}

fn word(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
}

fn quality(v: &str) -> Result<i32, String> {
    admit_client::parse_quality(v)
        .map(|q| q as i32)
        .ok_or_else(|| format!("allowed_qualities: unknown quality {v:?}"))
}

fn category(v: &str) -> Result<i32, String> {
    pb::TemplateCategory::from_str_name(&format!("TEMPLATE_CATEGORY_{}", v.to_ascii_uppercase()))
        .map(|c| c as i32)
        .ok_or_else(|| format!("opt_out_blocked_categories: unknown category {v:?}"))
}

impl PolicyFile {
    pub fn from_pb(p: &pb::Policy) -> PolicyFile {
        let tier_value = |t: &Option<pb::TierValue>| match t.as_ref().and_then(|t| t.tier.clone()) {
            Some(pb::tier_value::Tier::TierName(n)) => n,
            Some(pb::tier_value::Tier::TierValue(v)) => v.to_string(),
            None => String::new(),
        };
        let fd = p.flagged_downgrade.unwrap_or_default();
        let pr = p.pair_rate.unwrap_or_default();
        let c = p.cooldowns.unwrap_or_default();
        PolicyFile {
            name: p.name.clone(),
            scope: word(p.scope().as_str_name(), "LIMIT_SCOPE_"),
            ladder: p
                .ladder
                .iter()
                .map(|t| TierFile {
                    name: t.name.clone(),
                    limit: t.limit,
                    unlimited: t.unlimited,
                })
                .collect(),
            initial_tier: tier_value(&p.initial_tier),
            upgrade_rules: p
                .upgrade_rules
                .iter()
                .map(|r| RuleFile {
                    min_limit: r.min_limit,
                    max_limit: r.max_limit,
                    unique_customers: match r.threshold {
                        Some(pb::upgrade_rule::Threshold::UniqueCustomers(n)) => Some(n),
                        _ => None,
                    },
                    percent_of_limit: match r.threshold {
                        Some(pb::upgrade_rule::Threshold::PercentOfLimit(n)) => Some(n),
                        _ => None,
                    },
                    lookback_ms: r.lookback_ms,
                    allowed_qualities: r
                        .allowed_qualities()
                        .map(|q| word(q.as_str_name(), "NUMBER_QUALITY_"))
                        .collect(),
                    require_connected: r.require_connected,
                    require_display_name_approved: r.require_display_name_approved,
                    delay_ms: r.delay_ms,
                    recheck_at_effect: r.recheck_at_effect,
                })
                .collect(),
            flagged_downgrade: FlaggedFile {
                enabled: fd.enabled,
                low_duration_ms: fd.low_duration_ms,
                recovery_duration_ms: fd.recovery_duration_ms,
            },
            observe_only: p.observe_only,
            opt_out_keywords: p.opt_out_keywords.clone(),
            opt_in_keywords: p.opt_in_keywords.clone(),
            opt_out_blocked_categories: p
                .opt_out_blocked_categories()
                .map(|c| word(c.as_str_name(), "TEMPLATE_CATEGORY_"))
                .collect(),
            throughput_mps: p.throughput_mps,
            pair_rate: PairRateFile {
                interval_ms: pr.interval_ms,
                burst: pr.burst,
            },
            cooldowns: CooldownsFile {
                spam_cooldown_ms: c.spam_cooldown_ms,
                marketing_hold_ms: c.marketing_hold_ms,
                pair_backoff_base_s: c.pair_backoff_base_s,
                pair_backoff_max_ms: c.pair_backoff_max_ms,
                throughput_backoff_ms: c.throughput_backoff_ms,
                first_pause_ms: c.first_pause_ms,
                second_pause_ms: c.second_pause_ms,
                throughput_backoff_max_ms: c.throughput_backoff_max_ms,
                throughput_backoff_reset_after_ms: c.throughput_backoff_reset_after_ms,
                pair_backoff_reset_after_ms: c.pair_backoff_reset_after_ms,
            },
            free_entry_point_ms: p.free_entry_point_ms,
        }
    }

    /// The message; a word no enum knows is an error naming the field.
    pub fn to_pb(&self) -> Result<pb::Policy, String> {
        let scope = match self.scope.to_ascii_lowercase().as_str() {
            "number" => pb::LimitScope::Number,
            "portfolio" => pb::LimitScope::Portfolio,
            s => return Err(format!("scope: {s:?} is not \"number\" or \"portfolio\"")),
        };
        let initial_tier =
            (!self.initial_tier.is_empty()).then(|| admit_client::tier_value(&self.initial_tier));
        let mut rules = Vec::new();
        for (i, r) in self.upgrade_rules.iter().enumerate() {
            let threshold = match (r.unique_customers, r.percent_of_limit) {
                (Some(n), None) => pb::upgrade_rule::Threshold::UniqueCustomers(n),
                (None, Some(p)) => pb::upgrade_rule::Threshold::PercentOfLimit(p),
                _ => {
                    return Err(format!(
                        "upgrade_rules[{i}]: exactly one of unique_customers and percent_of_limit"
                    ))
                }
            };
            rules.push(pb::UpgradeRule {
                min_limit: r.min_limit,
                max_limit: r.max_limit,
                threshold: Some(threshold),
                lookback_ms: r.lookback_ms,
                allowed_qualities: r
                    .allowed_qualities
                    .iter()
                    .map(|q| quality(q))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("upgrade_rules[{i}].{e}"))?,
                require_connected: r.require_connected,
                require_display_name_approved: r.require_display_name_approved,
                delay_ms: r.delay_ms,
                recheck_at_effect: r.recheck_at_effect,
            });
        }
        let c = &self.cooldowns;
        Ok(pb::Policy {
            name: self.name.clone(),
            scope: scope as i32,
            ladder: self
                .ladder
                .iter()
                .map(|t| pb::Tier {
                    name: t.name.clone(),
                    limit: t.limit,
                    unlimited: t.unlimited,
                })
                .collect(),
            initial_tier,
            upgrade_rules: rules,
            flagged_downgrade: Some(pb::FlaggedDowngrade {
                enabled: self.flagged_downgrade.enabled,
                low_duration_ms: self.flagged_downgrade.low_duration_ms,
                recovery_duration_ms: self.flagged_downgrade.recovery_duration_ms,
            }),
            observe_only: self.observe_only,
            opt_out_keywords: self.opt_out_keywords.clone(),
            opt_in_keywords: self.opt_in_keywords.clone(),
            opt_out_blocked_categories: self
                .opt_out_blocked_categories
                .iter()
                .map(|c| category(c))
                .collect::<Result<_, _>>()?,
            throughput_mps: self.throughput_mps,
            pair_rate: Some(pb::PairRate {
                interval_ms: self.pair_rate.interval_ms,
                burst: self.pair_rate.burst,
            }),
            cooldowns: Some(pb::Cooldowns {
                spam_cooldown_ms: c.spam_cooldown_ms,
                marketing_hold_ms: c.marketing_hold_ms,
                pair_backoff_base_s: c.pair_backoff_base_s,
                pair_backoff_max_ms: c.pair_backoff_max_ms,
                throughput_backoff_ms: c.throughput_backoff_ms,
                first_pause_ms: c.first_pause_ms,
                second_pause_ms: c.second_pause_ms,
                throughput_backoff_max_ms: c.throughput_backoff_max_ms,
                throughput_backoff_reset_after_ms: c.throughput_backoff_reset_after_ms,
                pair_backoff_reset_after_ms: c.pair_backoff_reset_after_ms,
            }),
            free_entry_point_ms: self.free_entry_point_ms,
        })
    }

    /// Reads a `.json` file as JSON, anything else as TOML.
    pub fn read(path: &std::path::Path) -> Result<PolicyFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let json = path.extension().is_some_and(|e| e == "json");
        if json {
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
        } else {
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_survives_the_file_form() {
        let p = pb::Policy {
            name: "custom".into(),
            scope: pb::LimitScope::Number as i32,
            ladder: vec![pb::Tier {
                name: "TIER_250".into(),
                limit: 250,
                unlimited: false,
            }],
            initial_tier: Some(pb::TierValue {
                tier: Some(pb::tier_value::Tier::TierName("TIER_250".into())),
            }),
            upgrade_rules: vec![pb::UpgradeRule {
                threshold: Some(pb::upgrade_rule::Threshold::PercentOfLimit(50)),
                allowed_qualities: vec![pb::NumberQuality::High as i32],
                lookback_ms: 604_800_000,
                ..Default::default()
            }],
            opt_out_blocked_categories: vec![pb::TemplateCategory::Marketing as i32],
            flagged_downgrade: Some(Default::default()),
            pair_rate: Some(Default::default()),
            cooldowns: Some(Default::default()),
            ..Default::default()
        };
        let f = PolicyFile::from_pb(&p);
        let text = toml::to_string(&f).unwrap();
        let back: PolicyFile = toml::from_str(&text).unwrap();
        assert_eq!(back.to_pb().unwrap(), p);
    }

    #[test]
    fn a_bad_word_names_its_field() {
        let f = PolicyFile {
            scope: "galaxy".into(),
            ..Default::default()
        };
        assert!(f.to_pb().unwrap_err().starts_with("scope"));
    }
}
