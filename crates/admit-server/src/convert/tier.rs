//! Tiers (messaging limits) and quality ratings.

use admit_core::{Limit, Quality, TierInput, TierMeaning};
use admit_proto::v1 as pb;

use crate::error::ApiError;

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
