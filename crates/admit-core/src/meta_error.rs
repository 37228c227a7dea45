//! Meta's error codes in a send's outcome and what each one does (section 9,
//! docs/rules.md). The codes are matched here and nowhere else: the engine applies
//! [`MetaError`]s, the server only turns the integer it receives into one.

use crate::command::TemplateEvent;
use serde::{Deserialize, Serialize};

/// An error code Meta reports with a FAILED send, by its meaning.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MetaError {
    /// 131056: too many messages to one customer; that pair backs off, 4^x.
    PairRate,
    /// 130429: the number's throughput was exceeded; the number backs off.
    Throughput,
    /// 131048: spam rate limit; new conversations of the number are held for the spam
    /// cool-down and a quality risk is recorded.
    SpamRate,
    /// 131049: the customer's marketing limit; no marketing to them for the hold.
    MarketingLimit,
    /// 131050: the customer stopped marketing messages; they are opted out.
    UserStopped,
    /// 131047: the customer service window has closed.
    WindowClosed,
    /// 132015: the template is paused.
    TemplatePaused,
    /// 132016: the template is disabled.
    TemplateDisabled,
    /// Any other code: reported, with no effect beyond a release (R3.5).
    Other(u32),
}

/// What an outcome did, beyond releasing its admission (section 9).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutcomeEffect {
    PairBackoff,
    NumberBackoff,
    SpamCooldown,
    MarketingHold,
    OptedOut,
    WindowClosed,
    TemplatePaused,
    TemplateDisabled,
}

impl From<u32> for MetaError {
    fn from(code: u32) -> Self {
        match code {
            131056 => MetaError::PairRate,
            130429 => MetaError::Throughput,
            131048 => MetaError::SpamRate,
            131049 => MetaError::MarketingLimit,
            131050 => MetaError::UserStopped,
            131047 => MetaError::WindowClosed,
            132015 => MetaError::TemplatePaused,
            132016 => MetaError::TemplateDisabled,
            other => MetaError::Other(other),
        }
    }
}

impl MetaError {
    /// Meta's integer code.
    pub fn code(self) -> u32 {
        match self {
            MetaError::PairRate => 131056,
            MetaError::Throughput => 130429,
            MetaError::SpamRate => 131048,
            MetaError::MarketingLimit => 131049,
            MetaError::UserStopped => 131050,
            MetaError::WindowClosed => 131047,
            MetaError::TemplatePaused => 132015,
            MetaError::TemplateDisabled => 132016,
            MetaError::Other(c) => c,
        }
    }

    /// The effect of reporting this code. A template's pause or disable needs the
    /// template named (`with_template`): without one there is nothing to act on.
    pub fn effect(self, with_template: bool) -> Option<OutcomeEffect> {
        match self {
            MetaError::PairRate => Some(OutcomeEffect::PairBackoff),
            MetaError::Throughput => Some(OutcomeEffect::NumberBackoff),
            MetaError::SpamRate => Some(OutcomeEffect::SpamCooldown),
            MetaError::MarketingLimit => Some(OutcomeEffect::MarketingHold),
            MetaError::UserStopped => Some(OutcomeEffect::OptedOut),
            MetaError::WindowClosed => Some(OutcomeEffect::WindowClosed),
            MetaError::TemplatePaused => with_template.then_some(OutcomeEffect::TemplatePaused),
            MetaError::TemplateDisabled => with_template.then_some(OutcomeEffect::TemplateDisabled),
            MetaError::Other(_) => None,
        }
    }

    /// The template status change this code reports (R6.2, R6.3). Templates are global:
    /// a caller with several shards applies it to every one as a platform event. A
    /// pause here has no rank and no end: it never escalates a running pause.
    pub fn template_event(self) -> Option<TemplateEvent> {
        match self {
            MetaError::TemplatePaused => Some(TemplateEvent::Paused {
                title: None,
                until: None,
            }),
            MetaError::TemplateDisabled => Some(TemplateEvent::Disabled),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_template_effects_need_a_template() {
        for code in [
            131056, 130429, 131048, 131049, 131050, 131047, 132015, 132016, 131026,
        ] {
            assert_eq!(MetaError::from(code).code(), code);
        }
        assert_eq!(MetaError::from(131026), MetaError::Other(131026));
        assert_eq!(MetaError::from(131026).effect(true), None);
        assert_eq!(
            MetaError::from(132015).effect(true),
            Some(OutcomeEffect::TemplatePaused)
        );
        assert_eq!(MetaError::from(132015).effect(false), None);
        assert_eq!(
            MetaError::from(131056).effect(false),
            Some(OutcomeEffect::PairBackoff)
        );
        assert_eq!(
            MetaError::from(132016).template_event(),
            Some(TemplateEvent::Disabled)
        );
        assert_eq!(MetaError::from(131047).template_event(), None);
    }
}
