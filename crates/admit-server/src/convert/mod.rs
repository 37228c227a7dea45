//! Protobuf <-> domain conversions: the only place where `admit_proto`'s
//! public API types meet the core's. One file per topic; input conversions
//! validate and name the offending field (as its path in the request), so
//! nothing invalid reaches the core. This file only declares the topics and
//! re-exports them; they import each other, never this file.

pub(crate) mod decision;
pub(crate) mod event;
pub(crate) mod ids;
pub(crate) mod policy;
mod scalar;
pub(crate) mod send;
pub(crate) mod status;
pub(crate) mod tier;

pub(crate) use decision::*;
pub(crate) use event::*;
pub(crate) use ids::*;
pub(crate) use policy::*;
pub(crate) use scalar::{ms, ts_in};
pub(crate) use send::*;
pub(crate) use status::*;
pub(crate) use tier::*;
