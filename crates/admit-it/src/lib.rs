//! Hosts admit's top-level end-to-end tests, at the workspace root:
//! `tests/e2e/` (one binary, a module a topic), `tests/cluster.rs` (the
//! multi-node tests, taking turns) and their helpers in `tests/support/`.
//! Run them with `cargo test -p admit-it`.
//!
//! The tests start real servers: in-process through `admit-server` on an
//! ephemeral 127.0.0.1 port with a temporary data dir, and, for the crash
//! test, the `admitd` binary as a child process (built on demand). They talk
//! gRPC over loopback only, run on the test clock, and stop what they start.
//!
//! ## Layering
//!
//! The crate holds no code: it gives the workspace-level tests a package.
//! Nothing depends on it. The tests may import `admit-server` to start nodes
//! in-process and to learn where a number is routed (`start`, `routing`),
//! `admit-proto` for the clients they call as a sender would, and
//! `admit-core` for plain values (ids, times). They check behaviour through
//! the gRPC API and the `admitd` binary, not through a server's internals;
//! tests of one rule's edges belong in `admit-core/tests`, tests of one
//! crate's parts in that crate.
