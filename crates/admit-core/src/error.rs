//! Errors of the core. Denials are not errors: they are [`crate::Decision`]s. These are for
//! requests that cannot be carried out at all; each names what is wrong.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CoreError {
    /// Bad input: the field and the problem.
    #[error("invalid {field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("unknown number {0}")]
    UnknownNumber(String),
    #[error("unknown portfolio {0}")]
    UnknownPortfolio(String),
    #[error("unknown policy profile {0:?}")]
    UnknownProfile(String),
    /// The key was used before for a different request.
    #[error("idempotency_key {0:?} was used for a different request")]
    IdempotencyConflict(String),
    /// The request contradicts state that must not change this way.
    #[error("{0}")]
    Conflict(String),
}

impl CoreError {
    pub fn invalid(field: &str, problem: &str) -> Self {
        CoreError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl From<crate::ids::FieldError> for CoreError {
    fn from(e: crate::ids::FieldError) -> Self {
        CoreError::Invalid {
            field: e.field,
            problem: e.problem,
        }
    }
}
