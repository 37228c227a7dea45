//! Shared by the client's test binaries: the workspace's test servers
//! (`tests/support` at the workspace root) and a client to them.

#![allow(dead_code)]

#[path = "../../../../tests/support/mod.rs"]
pub mod support;

use std::net::SocketAddr;
use std::time::Duration;

use admit_client::{Client, Options};

pub use support::*;

/// Options for a client of `addrs` with short deadlines for tests.
pub fn options(addrs: &[SocketAddr]) -> Options {
    let mut o = Options::new(addrs.iter().map(|a| a.to_string()));
    o.attempt_timeout = Duration::from_secs(10);
    o.call_deadline = Duration::from_secs(30);
    o
}

pub fn client(o: Options) -> Client {
    Client::new(o).expect("client options")
}
