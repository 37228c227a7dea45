//! The gRPC services; each handler validates, routes and converts, the logic
//! lives in [`crate::ctx`] and the core.

pub mod admin;
pub mod admit;
pub mod clock;
pub mod cluster;
pub mod node;
