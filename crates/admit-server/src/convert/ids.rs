//! Identifiers (numbers, customers, portfolios, templates, targets,
//! idempotency keys) and the registration of a number.

use admit_core::{
    IdempotencyKey, NumberId, NumberStatus, PortfolioId, Quality, Target, TemplateId, WaId,
};
use admit_proto::v1 as pb;

use super::scalar::under;
use super::status::number_status;
use super::tier::number_quality;
use crate::error::ApiError;

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
pub(crate) fn idempotency_key(
    number: NumberId,
    key: &str,
) -> Result<Option<IdempotencyKey>, ApiError> {
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

/// A number's registration from the API, checked; the profile, scope and
/// initial tier are settled against the stored state, later.
#[derive(Debug, Clone)]
pub(crate) struct NumberRegistrationIn {
    pub number: NumberId,
    /// Optional under a per-number profile; required where the limit is the
    /// portfolio's.
    pub portfolio: Option<PortfolioId>,
    /// Empty: the stored profile, else the portfolio's, else the default.
    pub profile: String,
    pub initial_tier: Option<pb::TierValue>,
    pub quality: Option<Quality>,
    pub status: Option<NumberStatus>,
    pub display_name_approved: Option<bool>,
    /// 0: the profile's rate.
    pub throughput_mps: Option<u32>,
    /// Digits (a wa_id's form); `None`: keep what is stored.
    pub display_phone_number: Option<String>,
}

/// The largest per-number throughput a registration may set (messages/s).
const MAX_NUMBER_MPS: u32 = 10_000;

pub(crate) fn number_registration_in(
    r: &pb::RegisterNumberRequest,
) -> Result<NumberRegistrationIn, ApiError> {
    let number = number("number_id", &r.number_id)?;
    let portfolio = if r.portfolio_id.is_empty() {
        None
    } else {
        Some(portfolio("portfolio_id", &r.portfolio_id)?)
    };
    let quality = match r.quality {
        Some(q) => number_quality("quality", q)?,
        None => None,
    };
    let status = match r.status {
        Some(s) => number_status("status", s)?,
        None => None,
    };
    if r.throughput_mps.is_some_and(|t| t > MAX_NUMBER_MPS) {
        return Err(ApiError::invalid("throughput_mps", "must be 0 to 10000"));
    }
    let display_phone_number = if r.display_phone_number.is_empty() {
        None
    } else {
        Some(customer("display_phone_number", &r.display_phone_number)?.to_string())
    };
    Ok(NumberRegistrationIn {
        number,
        portfolio,
        profile: r.profile.clone(),
        initial_tier: r.initial_tier.clone(),
        quality,
        status,
        display_name_approved: r.display_name_approved,
        throughput_mps: r.throughput_mps,
        display_phone_number,
    })
}
