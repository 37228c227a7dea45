//! The server's periodic loops while this node is quiet (issue 14): every
//! Raft group on it quiesced (admit-raft's [`admit_raft::RaftNode::quiet`]).
//!
//! An idle node's CPU is its wake-ups. While every group is quiesced no
//! leader changes here without a group waking first (a vote, an append or
//! a proposal wakes it), so `scrape::watch_leaders` stops polling until one
//! wakes; `relay::watch_clocks` only re-measures the skew from the samples
//! liveness brings, so it does so every [`QUIET_CLOCK_EVERY`] instead of
//! every [`crate::skew::SAMPLE_EVERY`] until a group wakes. A node that
//! needs a unary clock call, or whose clock is beyond the bound, keeps the
//! short period.
//!
//! May import: admit-raft's quiet watch, tokio, std.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::watch;

/// How often the clock loop re-measures the skew while the node is quiet
/// (half of [`crate::skew::STALE_AFTER`], so a peer's sample never goes
/// stale between two measurements).
pub(crate) const QUIET_CLOCK_EVERY: Duration = Duration::from_secs(5);

/// Wake-ups of the periodic loops so far (tests and benches read them).
#[derive(Debug, Default)]
pub(crate) struct LoopWakeups {
    /// Scans of every shard's leader (`scrape::watch_leaders`).
    pub leaders: AtomicU64,
    /// Rounds of the clock loop (`relay::watch_clocks`).
    pub clocks: AtomicU64,
}

/// Waits while the node is quiet (`quiet` true), until a group wakes, or
/// `at_most` passed (`None`: no bound); returns `false` if `stop` came
/// first. Returns at once when the node is not quiet.
pub(crate) async fn while_quiet(
    quiet: &mut watch::Receiver<bool>,
    at_most: Option<Duration>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let bound = async {
        match at_most {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        // a dropped sender (the node stopping) ends the wait too
        _ = quiet.wait_for(|q| !*q) => true,
        _ = bound => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}
