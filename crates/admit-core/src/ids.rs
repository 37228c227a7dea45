//! Identifiers, validated once at the edge of the core. Invalid input is an error that names
//! the field; it never reaches the state.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An input error: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {problem}")]
pub struct FieldError {
    /// The field's path in the request (`policy.opt_out_keywords[1]`).
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A WhatsApp business phone number id: 1-32 decimal digits (section 1, docs/rules.md).
///
/// Stored as a number plus its digit count so that it is `Copy`, hashes fast and keeps
/// leading zeros distinct ("07" is not "7"). The number is two `u64` halves, not a
/// `u128`: 8-byte alignment makes the id 24 bytes instead of 32, and it sits in every
/// number's record, scope key and registry table. Field order keeps the derived order
/// that of (value, digits); serde sees `{ value: u128, digits: u8 }`, the stored form.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "NumberIdRepr", into = "NumberIdRepr")]
pub struct NumberId {
    hi: u64,
    lo: u64,
    digits: u8,
}

/// The stored form of a [`NumberId`] (snapshots and the log are written with it).
#[derive(Serialize, Deserialize)]
#[serde(rename = "NumberId")]
struct NumberIdRepr {
    value: u128,
    digits: u8,
}

impl From<NumberIdRepr> for NumberId {
    fn from(r: NumberIdRepr) -> Self {
        NumberId::from_parts(r.value, r.digits)
    }
}
impl From<NumberId> for NumberIdRepr {
    fn from(n: NumberId) -> Self {
        NumberIdRepr {
            value: n.value(),
            digits: n.digits,
        }
    }
}

impl NumberId {
    pub fn parse(field: &'static str, s: &str) -> Result<Self, FieldError> {
        if !all_digits(s) || s.len() > 32 {
            return Err(FieldError::new(field, "must be 1 to 32 decimal digits"));
        }
        Ok(NumberId::from_parts(
            s.parse().expect("32 digits fit in u128"),
            s.len() as u8,
        ))
    }
    fn from_parts(value: u128, digits: u8) -> Self {
        NumberId {
            hi: (value >> 64) as u64,
            lo: value as u64,
            digits,
        }
    }
    fn value(&self) -> u128 {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }
    /// A stable 64-bit hash for shard routing (not `Hash`, which may be randomized).
    pub fn stable_hash(&self) -> u64 {
        crate::hash::mix64(self.lo ^ self.hi ^ (self.digits as u64) << 56)
    }
}

impl fmt::Display for NumberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // u128 formatting divides in 128 bits; ids of up to 19 digits fit a u64
        // (admission ids print one per admitted send)
        let width = self.digits as usize;
        match self.hi {
            0 => write!(f, "{:0width$}", self.lo),
            _ => write!(f, "{:0width$}", self.value()),
        }
    }
}
impl fmt::Debug for NumberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NumberId({self})")
    }
}

/// A customer's WhatsApp id: E.164 digits without `+`, 6-15 digits, no leading zero
/// (E.164 country codes never start with 0), so it fits a `u64` exactly.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WaId(u64);

impl WaId {
    pub fn parse(field: &'static str, s: &str) -> Result<Self, FieldError> {
        // digits only, as docs/rules.md section 1 and types.proto say: a `+` is refused, not
        // silently dropped
        if !all_digits(s) || !(6..=15).contains(&s.len()) {
            return Err(FieldError::new(
                field,
                "must be 6 to 15 decimal digits (E.164 without +)",
            ));
        }
        if s.starts_with('0') {
            return Err(FieldError::new(field, "must not start with 0 (E.164)"));
        }
        Ok(WaId(s.parse().expect("15 digits fit in u64")))
    }
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for WaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Debug for WaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WaId({})", self.0)
    }
}

fn parse_token(field: &'static str, s: &str, max: usize) -> Result<String, FieldError> {
    if s.is_empty() || s.len() > max {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return Err(FieldError::new(
            field,
            "may hold only letters, digits and _ - . :",
        ));
    }
    Ok(s.to_owned())
}

/// A business portfolio (WhatsApp business account) id.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortfolioId(String);

impl PortfolioId {
    pub fn parse(field: &'static str, s: &str) -> Result<Self, FieldError> {
        parse_token(field, s, 64).map(PortfolioId)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Display for PortfolioId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for PortfolioId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PortfolioId({})", self.0)
    }
}

/// A message template id.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TemplateId(String);

impl TemplateId {
    pub fn parse(field: &'static str, s: &str) -> Result<Self, FieldError> {
        parse_token(field, s, 128).map(TemplateId)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for TemplateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TemplateId({})", self.0)
    }
}

/// A caller-chosen key that makes a retried request idempotent (R3.4).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(field: &'static str, s: &str) -> Result<Self, FieldError> {
        if s.is_empty() || s.len() > 128 {
            return Err(FieldError::new(field, "must be 1 to 128 bytes"));
        }
        Ok(IdempotencyKey(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_ids_keep_leading_zeros_and_bounds() {
        let a = NumberId::parse("number", "007").unwrap();
        let b = NumberId::parse("number", "7").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.to_string(), "007");
        assert!(NumberId::parse("number", &"9".repeat(32)).is_ok());
        let e = NumberId::parse("number", &"9".repeat(33)).unwrap_err();
        assert_eq!(e.field, "number");
        assert!(NumberId::parse("number", "").is_err());
        assert!(NumberId::parse("number", "12a").is_err());
    }

    #[test]
    fn number_ids_keep_their_stored_form_and_order() {
        // the form snapshots and the log hold: a u128 then the digit count
        #[derive(serde::Serialize)]
        struct Stored {
            value: u128,
            digits: u8,
        }
        let samples = [
            "0",
            "7",
            "007",
            "18446744073709551615",
            "18446744073709551616",
        ];
        let long = "9".repeat(32);
        let mut ids = Vec::new();
        for s in samples.iter().copied().chain([long.as_str()]) {
            let id = NumberId::parse("number", s).unwrap();
            let stored = Stored {
                value: s.parse().unwrap(),
                digits: s.len() as u8,
            };
            let bytes = postcard::to_allocvec(&id).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&stored).unwrap(), "{s}");
            assert_eq!(postcard::from_bytes::<NumberId>(&bytes).unwrap(), id);
            assert_eq!(id.to_string(), s);
            // routing: a number stays on the shard it was placed on
            let (v, d) = (stored.value, stored.digits as u64);
            let old = crate::hash::mix64(v as u64 ^ (v >> 64) as u64 ^ d << 56);
            assert_eq!(id.stable_hash(), old, "{s}");
            ids.push((id, (stored.value, stored.digits)));
        }
        for (a, ka) in &ids {
            for (b, kb) in &ids {
                assert_eq!(a.cmp(b), ka.cmp(kb), "{a} vs {b}");
            }
        }
        assert_eq!(std::mem::size_of::<NumberId>(), 24);
    }

    #[test]
    fn wa_ids_are_e164_digits() {
        assert_eq!(
            WaId::parse("customer", "491701234567").unwrap().get(),
            491701234567
        );
        assert!(WaId::parse("customer", "+491701234567").is_err());
        assert!(WaId::parse("customer", "123456").is_ok());
        assert!(WaId::parse("customer", "12345").is_err());
        assert!(WaId::parse("customer", "1234567890123456").is_err());
        assert!(WaId::parse("customer", "0123456").is_err());
        assert_eq!(WaId::parse("customer", "x").unwrap_err().field, "customer");
    }
}
