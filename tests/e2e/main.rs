//! End-to-end tests: a real admit server on loopback, driven over gRPC, on the
//! test clock, one module a topic. Rule numbers refer to docs/rules.md. One
//! binary for all topics (each test binary links the whole server); the
//! multi-node tests are the `cluster` binary.

#[path = "../support/mod.rs"]
mod support;

mod durability;
mod input;
mod outcomes;
mod policy;
mod tiers;
mod windows;
