//! Loopback addresses for test servers that must know their port before
//! they start (a cluster's members list each other's addresses).
//!
//! Binding port 0 and releasing it is not enough: the kernel hands out the
//! same ephemeral range to the source ports of outgoing connections, and
//! the tests open many, so a port released a moment ago can be a client's
//! source port by the time the server binds it (AddrInUse, seen in CI).
//! Ports below the ephemeral range are never given out that way. Each
//! process starts at its own offset (so test binaries run side by side
//! rarely meet), never hands a port out twice, and still checks that the
//! port is free before it returns it.
//!
//! Standalone (std only): included by path from every crate's tests.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Lowest port handed out: above the well-known and most registered
/// service ports.
const FIRST: u32 = 10_000;

/// The first port of the kernel's ephemeral range (Linux's default when it
/// cannot be read).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Ports handed out by this process so far.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A free `127.0.0.1` address whose port lies outside the ephemeral range.
pub fn free_addr() -> SocketAddr {
    let end = ephemeral_start();
    if end <= FIRST + 1_000 {
        // no room below the ephemeral range: the kernel's choice
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        return l.local_addr().unwrap();
    }
    let span = end - FIRST;
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (offset + n) % span;
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free loopback port in {FIRST}..{end}");
}
