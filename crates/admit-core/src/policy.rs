//! Policies are data (R5.1, section 10, docs/rules.md): the seeds profile is the default, the meta
//! profile follows Meta's current rules, and either can be replaced at run time.

use crate::ids::FieldError;
use crate::time::Dur;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A messaging limit: unique customers with business-initiated conversations opened in a
/// rolling 24 h window (R3.1), or no cap at all (R3.3).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Limit {
    Capped(u32),
    Unlimited,
}

impl Limit {
    pub fn cap(self) -> Option<u32> {
        match self {
            Limit::Capped(n) => Some(n),
            Limit::Unlimited => None,
        }
    }
    /// Room left when `used` are counted (`None` = unlimited).
    pub fn headroom(self, used: u32) -> Option<u32> {
        self.cap().map(|c| c.saturating_sub(used))
    }
}

impl fmt::Debug for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Capped(n) => write!(f, "{n}"),
            Limit::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// A tier as Meta reports it (section 10, docs/rules.md): a name or an integer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TierInput {
    Name(String),
    Value(i64),
}

/// What a reported tier means.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TierMeaning {
    Set(Limit),
    /// `TIER_NOT_SET`: Meta has not set one; the current limit stays.
    NotSet,
}

impl TierInput {
    /// Every form of section 10; anything else is an error, and the caller keeps the
    /// current limit (fail safe).
    pub fn meaning(&self) -> Result<TierMeaning, String> {
        use TierMeaning::*;
        match self {
            TierInput::Name(s) => match s.trim().to_ascii_uppercase().as_str() {
                "TIER_50" => Ok(Set(Limit::Capped(50))),
                "TIER_250" => Ok(Set(Limit::Capped(250))),
                "TIER_1K" => Ok(Set(Limit::Capped(1_000))),
                "TIER_2K" => Ok(Set(Limit::Capped(2_000))),
                "TIER_10K" => Ok(Set(Limit::Capped(10_000))),
                "TIER_100K" => Ok(Set(Limit::Capped(100_000))),
                "TIER_UNLIMITED" | "UNLIMITED" => Ok(Set(Limit::Unlimited)),
                "TIER_NOT_SET" => Ok(NotSet),
                other => match other.parse::<i64>() {
                    Ok(v) => TierInput::Value(v).meaning(),
                    Err(_) => Err(format!("unknown tier name {s:?}")),
                },
            },
            TierInput::Value(v) => match *v {
                -1 => Ok(Set(Limit::Unlimited)),
                50 | 250 | 1_000 | 2_000 | 10_000 | 100_000 => Ok(Set(Limit::Capped(*v as u32))),
                other => Err(format!("unknown tier value {other}")),
            },
        }
    }
}

/// Where a messaging limit lives (section 1, docs/rules.md).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScopeKind {
    /// Seeds: each business number has its own limit.
    Number,
    /// Meta: the limit belongs to the portfolio and is shared by its numbers.
    Portfolio,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Quality {
    Low,
    Unknown,
    Medium,
    High,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Category {
    Marketing,
    Utility,
    Authentication,
}

/// How many unique customers an upgrade needs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Threshold {
    /// A fixed count (R5.2: 1,000 in 30 days).
    Absolute(u32),
    /// A share of the current limit, in percent, rounded up (R5.3, R5.4: 50%).
    PercentOfLimit(u32),
}

/// One upgrade rule (R5.2-R5.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeRule {
    /// Unique customers with conversations opened in this trailing window are counted.
    pub window: Dur,
    pub threshold: Threshold,
    /// `High` needs High (R5.2, R5.4); `Medium` takes Medium or High (R5.3). Unknown
    /// passes neither: the rules ask for a known good rating.
    pub min_quality: Quality,
    pub require_connected: bool,
    pub require_display_name: bool,
    /// From the crossing to the upgrade; at the end every condition is checked again.
    pub delay: Dur,
}

impl UpgradeRule {
    pub fn threshold_for(&self, limit: Limit) -> Option<u32> {
        match (self.threshold, limit) {
            (Threshold::Absolute(n), _) => Some(n),
            (Threshold::PercentOfLimit(p), Limit::Capped(l)) => {
                Some(((l as u64 * p as u64).div_ceil(100)) as u32)
            }
            (Threshold::PercentOfLimit(_), Limit::Unlimited) => None,
        }
    }
    pub fn quality_ok(&self, q: Quality) -> bool {
        match self.min_quality {
            Quality::High => q == Quality::High,
            _ => matches!(q, Quality::Medium | Quality::High),
        }
    }
}

/// A policy profile: every parameter the rules depend on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    /// Ascending tiers; the last may be `Unlimited`.
    pub ladder: Vec<Limit>,
    pub initial_limit: Limit,
    pub initial_quality: Quality,
    pub scope: ScopeKind,
    /// The rule that lifts a scope off the lowest tier (seeds R5.2), if different.
    pub first_upgrade: Option<UpgradeRule>,
    /// The rule for every other tier (R5.3 / R5.4); `None` disables local upgrades.
    pub upgrade: Option<UpgradeRule>,
    /// R5.5: 7 continuous Low days downgrade one tier.
    pub flagged_downgrade: bool,
    pub flag_period: Dur,
    /// R5.6: the local tier model only predicts.
    pub observe_only: bool,
    pub conversation_window: Dur,
    pub service_window: Dur,
    /// R2.3 free entry point windows (meta profile: 72 h). Zero turns them off: the seeds
    /// profile has none, and ignores free entry point events.
    pub free_entry_window: Dur,
    pub opt_out_keywords: Vec<String>,
    pub opt_in_keywords: Vec<String>,
    /// Categories an opted-out customer may not receive; marketing always (R7.2).
    pub opt_out_blocks: Vec<Category>,
    /// R8.1 default throughput, messages per second.
    pub throughput_mps: u32,
    /// R8.2: one message per `pair_interval` sustained, bursts of `pair_burst`.
    pub pair_interval: Dur,
    pub pair_burst: u32,
    /// Section 9 reactions.
    pub spam_cooldown: Dur,
    pub marketing_hold: Dur,
    /// Section 9 back-offs, after 131056 (of a pair) and 130429 (of a number): the x-th
    /// consecutive one (x from 0) lasts base * 4^x, at most max. The count is forgotten
    /// once no report came for the reset period (below) after a hold's end; a SENT,
    /// DELIVERED or READ report forgets it at once.
    pub pair_backoff_base: Dur,
    pub pair_backoff_max: Dur,
    pub throughput_backoff_base: Dur,
    pub throughput_backoff_max: Dur,
    /// R6.2: the first and second pause of a template.
    pub first_pause: Dur,
    pub second_pause: Dur,
    /// How long a decision stays bound to its idempotency key.
    pub idempotency_ttl: Dur,
    /// The back-offs' reset periods (section 9, above). Last, so that the encoding of
    /// older policies is a prefix of this one's (snapshots read them).
    pub pair_backoff_reset_after: Dur,
    pub throughput_backoff_reset_after: Dur,
}

/// R7.1: the form in which keywords and messages are compared, case- and
/// space-insensitively: whitespace removed, upper case.
pub fn keyword_form(text: &str) -> impl Iterator<Item = char> + '_ {
    text.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_uppercase)
}

/// What of an inbound message can matter to R7.1: its [`keyword_form`] when it
/// could equal a keyword (not empty, at most [`Policy::MAX_KEYWORD_CHARS`]),
/// else nothing. A keyword is a whole message, so a longer text never matches;
/// the server logs only this, never the message.
pub fn keyword_candidate(text: &str) -> Option<String> {
    let form: String = keyword_form(text)
        .take(Policy::MAX_KEYWORD_CHARS + 1)
        .collect();
    let n = form.chars().count();
    (n > 0 && n <= Policy::MAX_KEYWORD_CHARS).then_some(form)
}

/// Values a policy request may state although the rules fix them (docs/rules.md): each
/// may be left out, or stated with the one value the rules allow. [`Policy::validate`]
/// checks them with the policy's own fields.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Stated {
    /// R5.5: the Flagged recovery period. One period serves Low and recovery, so it
    /// must equal [`Policy::flag_period`].
    pub recovery_period: Option<Dur>,
    /// Section 9: the growth of the pair back-off, the 4 of 4^x seconds.
    pub pair_backoff_growth: Option<u64>,
}

impl Policy {
    /// The profile of a number or portfolio registered without one.
    pub const DEFAULT_PROFILE: &'static str = "seeds";
    /// Section 9: each consecutive back-off lasts this many times the previous one.
    pub const BACKOFF_GROWTH: u64 = 4;

    /// Bounds on what a profile may hold, so that every rule's arithmetic stays in range
    /// and an inbound message scans a bounded keyword list (R7.1).
    pub const MAX_KEYWORDS: usize = 64;
    pub const MAX_KEYWORD_CHARS: usize = 64;
    pub const MAX_PAIR_INTERVAL: Dur = Dur::days(1);
    pub const MAX_PAIR_BURST: u32 = 1_000_000;
    pub const MAX_THROUGHPUT_MPS: u32 = 1_000_000;

    /// The seeds' rules (sections 2-9, docs/rules.md): the default profile.
    pub fn seeds() -> Policy {
        Policy {
            name: Policy::DEFAULT_PROFILE.into(),
            ladder: vec![
                Limit::Capped(250),
                Limit::Capped(1_000),
                Limit::Capped(10_000),
                Limit::Capped(100_000),
                Limit::Unlimited,
            ],
            initial_limit: Limit::Capped(250),
            initial_quality: Quality::High,
            scope: ScopeKind::Number,
            first_upgrade: Some(UpgradeRule {
                window: Dur::days(30),
                threshold: Threshold::Absolute(1_000),
                min_quality: Quality::High,
                require_connected: false,
                require_display_name: false,
                delay: Dur(0),
            }),
            upgrade: Some(UpgradeRule {
                window: Dur::days(7),
                threshold: Threshold::PercentOfLimit(50),
                min_quality: Quality::Medium,
                require_connected: true,
                require_display_name: true,
                delay: Dur::hours(24),
            }),
            flagged_downgrade: true,
            flag_period: Dur::days(7),
            observe_only: false,
            conversation_window: Dur::hours(24),
            service_window: Dur::hours(24),
            // R2.3 is the meta profile's only
            free_entry_window: Dur(0),
            opt_out_keywords: vec!["STOP".into(), "UNSUBSCRIBE".into()],
            opt_in_keywords: vec!["START".into(), "SUBSCRIBE".into()],
            opt_out_blocks: vec![Category::Marketing],
            throughput_mps: 80,
            pair_interval: Dur::secs(6),
            pair_burst: 45,
            spam_cooldown: Dur::hours(6),
            marketing_hold: Dur::hours(24),
            pair_backoff_base: Dur::secs(1),
            pair_backoff_max: Dur::hours(1),
            throughput_backoff_base: Dur::secs(1),
            throughput_backoff_max: Dur::secs(64),
            first_pause: Dur::hours(3),
            second_pause: Dur::hours(6),
            idempotency_ttl: Dur::hours(24),
            pair_backoff_reset_after: Dur::hours(24),
            throughput_backoff_reset_after: Dur::hours(24),
        }
    }

    /// Meta's current rules (section 10, docs/rules.md).
    pub fn meta() -> Policy {
        let rule = UpgradeRule {
            window: Dur::days(7),
            threshold: Threshold::PercentOfLimit(50),
            min_quality: Quality::High,
            require_connected: false,
            require_display_name: false,
            delay: Dur::hours(6),
        };
        Policy {
            name: "meta".into(),
            ladder: vec![
                Limit::Capped(250),
                Limit::Capped(2_000),
                Limit::Capped(10_000),
                Limit::Capped(100_000),
                Limit::Unlimited,
            ],
            scope: ScopeKind::Portfolio,
            first_upgrade: None,
            upgrade: Some(rule),
            flagged_downgrade: false,
            free_entry_window: Dur::hours(72),
            ..Policy::seeds()
        }
        .named("meta")
    }

    fn named(mut self, name: &str) -> Policy {
        self.name = name.into();
        self
    }

    /// The rule that applies at `limit`, if the scope can go higher.
    pub fn rule_for(&self, limit: Limit) -> Option<&UpgradeRule> {
        self.next_tier(limit)?;
        let lowest = *self.ladder.first()?;
        if limit <= lowest {
            self.first_upgrade.as_ref().or(self.upgrade.as_ref())
        } else {
            self.upgrade.as_ref()
        }
    }

    /// R6.2: the length of a template's `nth` pause (1: the first, else the second).
    pub fn pause_len(&self, nth: u8) -> Dur {
        if nth <= 1 {
            self.first_pause
        } else {
            self.second_pause
        }
    }

    /// One tier up: the first ladder step above `limit`.
    pub fn next_tier(&self, limit: Limit) -> Option<Limit> {
        self.ladder.iter().copied().find(|&l| l > limit)
    }

    /// One tier down, never below the lowest step (R5.5).
    pub fn prev_tier(&self, limit: Limit) -> Limit {
        self.ladder
            .iter()
            .rev()
            .copied()
            .find(|&l| l < limit)
            .unwrap_or(limit)
    }

    /// Checks a policy before it is accepted, naming the field at fault.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.validate_stated(&Stated::default())
    }

    /// [`Policy::validate`], with the values a request stated beside the policy's
    /// fields. Errors name the field as its path in a SetPolicy request.
    pub fn validate_stated(&self, stated: &Stated) -> Result<(), FieldError> {
        let err = |f: &str, m: &str| Err(FieldError::new(f, m));
        if self.name.is_empty() || self.name.len() > 64 {
            return err("policy.name", "must be 1 to 64 characters");
        }
        if self.ladder.is_empty() {
            return err("policy.ladder", "must hold at least one tier");
        }
        if self.ladder.windows(2).any(|w| w[0] >= w[1]) {
            return err("policy.ladder", "must be strictly ascending");
        }
        if self.ladder.contains(&Limit::Capped(0)) {
            return err("policy.ladder", "a tier must allow at least one customer");
        }
        for (f, d) in [
            ("policy.conversation_window", self.conversation_window),
            ("policy.service_window", self.service_window),
            ("policy.flag_period", self.flag_period),
            ("policy.pair_interval", self.pair_interval),
        ] {
            if d.0 == 0 {
                return err(f, "must be longer than zero");
            }
        }
        if stated
            .recovery_period
            .is_some_and(|r| r != self.flag_period)
        {
            return err(
                "policy.flagged_downgrade.recovery_duration_ms",
                "must be 0 or equal to low_duration_ms: one period serves both (R5.5)",
            );
        }
        if stated
            .pair_backoff_growth
            .is_some_and(|g| g != Self::BACKOFF_GROWTH)
        {
            return err(
                "policy.cooldowns.pair_backoff_base_s",
                "must be 0 or 4: the pair back-off grows 4^x seconds (section 9)",
            );
        }
        for r in [&self.first_upgrade, &self.upgrade].into_iter().flatten() {
            if r.window < self.conversation_window {
                return err(
                    "policy.upgrade.window",
                    "must be at least the conversation window",
                );
            }
            if let Threshold::PercentOfLimit(0) | Threshold::Absolute(0) = r.threshold {
                return err("policy.upgrade.threshold", "must be above zero");
            }
        }
        if self.throughput_mps == 0 || self.throughput_mps > Self::MAX_THROUGHPUT_MPS {
            return err("policy.throughput_mps", "must be 1 to 1000000");
        }
        if self.pair_burst == 0 || self.pair_burst > Self::MAX_PAIR_BURST {
            return err("policy.pair_burst", "must be 1 to 1000000");
        }
        if self.pair_interval > Self::MAX_PAIR_INTERVAL {
            return err("policy.pair_interval", "must be at most one day");
        }
        keywords_valid("policy.opt_out_keywords", &self.opt_out_keywords)?;
        keywords_valid("policy.opt_in_keywords", &self.opt_in_keywords)
    }

    /// R7.2: the categories denied to an opted-out customer, given the configured ones:
    /// marketing always, whether configured or not.
    pub fn opt_out_blocks_with(configured: &[Category]) -> Vec<Category> {
        let mut v = configured.to_vec();
        if !v.contains(&Category::Marketing) {
            v.push(Category::Marketing);
        }
        v
    }
}

/// R7.1: a keyword list within bounds. Matching ignores case and spaces, so a keyword of
/// spaces only would match an empty message (a media message without a caption) and opt
/// the customer out. Errors name the keyword (`field[i]`).
fn keywords_valid(field: &str, ks: &[String]) -> Result<(), FieldError> {
    if ks.len() > Policy::MAX_KEYWORDS {
        return Err(FieldError::new(
            field,
            format!("at most {} keywords", Policy::MAX_KEYWORDS),
        ));
    }
    for (i, k) in ks.iter().enumerate() {
        let at = || format!("{field}[{i}]");
        if k.chars().all(char::is_whitespace) {
            return Err(FieldError::new(
                at(),
                "must hold a character other than spaces",
            ));
        }
        if k.chars().count() > Policy::MAX_KEYWORD_CHARS {
            return Err(FieldError::new(
                at(),
                format!("must be at most {} characters", Policy::MAX_KEYWORD_CHARS),
            ));
        }
    }
    Ok(())
}

impl Default for Policy {
    /// The seeds profile.
    fn default() -> Self {
        Policy::seeds()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r7_1_keyword_candidates_are_short_normalized_texts() {
        assert_eq!(keyword_candidate("  s t o p "), Some("STOP".into()));
        assert_eq!(keyword_candidate("Stop\n"), Some("STOP".into()));
        assert_eq!(keyword_candidate("   "), None);
        let edge = "a ".repeat(Policy::MAX_KEYWORD_CHARS);
        assert_eq!(
            keyword_candidate(&edge).map(|k| k.len()),
            Some(Policy::MAX_KEYWORD_CHARS)
        );
        let over = "a".repeat(Policy::MAX_KEYWORD_CHARS + 1);
        assert_eq!(keyword_candidate(&over), None);
    }

    #[test]
    fn tier_inputs_of_section_10() {
        use TierMeaning::*;
        let n = |s: &str| TierInput::Name(s.into()).meaning();
        assert_eq!(n("TIER_1K"), Ok(Set(Limit::Capped(1_000))));
        assert_eq!(n("tier_2k"), Ok(Set(Limit::Capped(2_000))));
        assert_eq!(n("TIER_UNLIMITED"), Ok(Set(Limit::Unlimited)));
        assert_eq!(n("TIER_NOT_SET"), Ok(NotSet));
        assert_eq!(n("TIER_50"), Ok(Set(Limit::Capped(50))));
        assert!(n("TIER_3K").is_err());
        assert_eq!(TierInput::Value(-1).meaning(), Ok(Set(Limit::Unlimited)));
        assert_eq!(
            TierInput::Value(100_000).meaning(),
            Ok(Set(Limit::Capped(100_000)))
        );
        assert!(TierInput::Value(7).meaning().is_err());
    }

    #[test]
    fn ladders_step_one_tier() {
        let p = Policy::seeds();
        assert_eq!(p.next_tier(Limit::Capped(250)), Some(Limit::Capped(1_000)));
        assert_eq!(p.next_tier(Limit::Capped(50)), Some(Limit::Capped(250)));
        assert_eq!(p.next_tier(Limit::Unlimited), None);
        assert_eq!(p.prev_tier(Limit::Capped(250)), Limit::Capped(250));
        assert_eq!(p.prev_tier(Limit::Unlimited), Limit::Capped(100_000));
        assert_eq!(p.rule_for(Limit::Capped(250)).unwrap().delay, Dur(0));
        assert_eq!(
            p.rule_for(Limit::Capped(1_000)).unwrap().delay,
            Dur::hours(24)
        );
        assert!(p.rule_for(Limit::Unlimited).is_none());
        let m = Policy::meta();
        assert_eq!(m.name, "meta");
        assert_eq!(m.next_tier(Limit::Capped(250)), Some(Limit::Capped(2_000)));
        assert_eq!(m.rule_for(Limit::Capped(250)).unwrap().delay, Dur::hours(6));
        assert!(p.validate().is_ok() && m.validate().is_ok());
    }

    #[test]
    fn thresholds_round_up() {
        let r = Policy::seeds().upgrade.unwrap();
        assert_eq!(r.threshold_for(Limit::Capped(1_000)), Some(500));
        assert_eq!(r.threshold_for(Limit::Capped(1_001)), Some(501));
    }
}
