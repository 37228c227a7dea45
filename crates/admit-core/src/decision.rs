//! Decisions are values: allowed or denied, why, and what the caller may do next.

use crate::ids::{NumberId, PortfolioId};
use crate::policy::Limit;
use crate::time::Ts;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    // allowed
    ServiceWindow,
    FreeEntryPoint,
    OpenConversation,
    NewConversation,
    // denied
    LimitReached,
    OutsideServiceWindow,
    OptedOut,
    TemplatePaused,
    TemplateDisabled,
    NumberRestricted,
    ThroughputLimited,
    PairRateLimited,
    MarketingHold,
    SpamCooldown,
    UnknownNumber,
}

impl Reason {
    pub fn allows(self) -> bool {
        matches!(
            self,
            Reason::ServiceWindow
                | Reason::FreeEntryPoint
                | Reason::OpenConversation
                | Reason::NewConversation
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ServiceWindow => "SERVICE_WINDOW",
            Reason::FreeEntryPoint => "FREE_ENTRY_POINT",
            Reason::OpenConversation => "OPEN_CONVERSATION",
            Reason::NewConversation => "NEW_CONVERSATION",
            Reason::LimitReached => "LIMIT_REACHED",
            Reason::OutsideServiceWindow => "OUTSIDE_SERVICE_WINDOW",
            Reason::OptedOut => "OPTED_OUT",
            Reason::TemplatePaused => "TEMPLATE_PAUSED",
            Reason::TemplateDisabled => "TEMPLATE_DISABLED",
            Reason::NumberRestricted => "NUMBER_RESTRICTED",
            Reason::ThroughputLimited => "THROUGHPUT_LIMITED",
            Reason::PairRateLimited => "PAIR_RATE_LIMITED",
            Reason::MarketingHold => "MARKETING_HOLD",
            Reason::SpamCooldown => "SPAM_COOLDOWN",
            Reason::UnknownNumber => "UNKNOWN_NUMBER",
        }
    }
}

/// The limit scope a counted conversation belongs to.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScopeKey {
    Number(NumberId),
    Portfolio(PortfolioId),
}

impl fmt::Debug for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeKey::Number(n) => write!(f, "n{n}"),
            ScopeKey::Portfolio(p) => write!(f, "p{p}"),
        }
    }
}

impl ScopeKey {
    /// A stable hash for shard routing.
    pub fn stable_hash(&self) -> u64 {
        match self {
            ScopeKey::Number(n) => n.stable_hash(),
            ScopeKey::Portfolio(p) => crate::hash::hash_bytes(p.as_str().as_bytes()),
        }
    }
}

/// Names one counted conversation, so that a sender can release it (R3.5). It carries
/// its scope, so any node can route a release to the shard that owns it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AdmissionId {
    pub scope: ScopeKey,
    pub seq: u64,
}

impl fmt::Display for AdmissionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            ScopeKey::Number(n) => write!(f, "n{n}-{}", self.seq),
            ScopeKey::Portfolio(p) => write!(f, "p{p}-{}", self.seq),
        }
    }
}
impl fmt::Debug for AdmissionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdmissionId({self})")
    }
}

impl AdmissionId {
    pub fn parse(field: &'static str, s: &str) -> Result<Self, crate::FieldError> {
        let bad = || crate::FieldError::new(field, "is not an admission id issued by admit");
        let (scope, seq) = s.rsplit_once('-').ok_or_else(bad)?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        let scope = match scope.split_at_checked(1) {
            Some(("n", n)) => ScopeKey::Number(NumberId::parse(field, n).map_err(|_| bad())?),
            Some(("p", p)) => ScopeKey::Portfolio(PortfolioId::parse(field, p).map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        Ok(AdmissionId { scope, seq })
    }
}

/// The answer to one send (R3.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    /// When retrying may help (absolute); `None` where waiting does not help.
    pub retry_at: Option<Ts>,
    /// The scope's limit, how many conversations it counts now, and the room left
    /// (`None` for unknown numbers).
    pub limit: Option<Limit>,
    pub used: u32,
    /// When the window the send was admitted in ends.
    pub window_end: Option<Ts>,
    /// Set when this send opened a conversation.
    pub admission: Option<AdmissionId>,
    /// Whether this send took one unit of the limit.
    pub counted: bool,
    /// When the decision was made (for a replay: when it was first made).
    pub decided_at: Ts,
    /// The decision was recorded earlier for the same idempotency key and is returned
    /// again (R3.4): nothing was counted now.
    pub replayed: bool,
}

impl Decision {
    pub fn headroom(&self) -> Option<u32> {
        self.limit.and_then(|l| l.headroom(self.used))
    }
    /// A denial with nothing counted; the limit fields are filled where they are known.
    pub fn deny(reason: Reason, retry_at: Option<Ts>) -> Decision {
        Decision {
            allowed: false,
            reason,
            retry_at,
            limit: None,
            used: 0,
            window_end: None,
            admission: None,
            counted: false,
            decided_at: Ts::ZERO,
            replayed: false,
        }
    }
    pub(crate) fn allow(reason: Reason, window_end: Ts) -> Decision {
        Decision {
            allowed: true,
            reason,
            retry_at: None,
            limit: None,
            used: 0,
            window_end: Some(window_end),
            admission: None,
            counted: false,
            decided_at: Ts::ZERO,
            replayed: false,
        }
    }
    /// The recorded decision, as returned to a retry.
    pub(crate) fn replay(&self) -> Decision {
        Decision {
            replayed: true,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_ids_round_trip_as_text() {
        let a = AdmissionId {
            scope: ScopeKey::Portfolio(PortfolioId::parse("p", "waba-1").unwrap()),
            seq: 42,
        };
        assert_eq!(a.to_string(), "pwaba-1-42");
        assert_eq!(AdmissionId::parse("admission_id", "pwaba-1-42").unwrap(), a);
        let b = AdmissionId {
            scope: ScopeKey::Number(NumberId::parse("n", "0123").unwrap()),
            seq: 0,
        };
        assert_eq!(
            AdmissionId::parse("admission_id", &b.to_string()).unwrap(),
            b
        );
        for bad in ["", "x1-2", "n12", "n12-x", "n-1", "p-1"] {
            assert_eq!(
                AdmissionId::parse("admission_id", bad).unwrap_err().field,
                "admission_id"
            );
        }
    }
}
