//! The transfer fence: no lease-based answer from a group whose leadership
//! this node is handing over.
//!
//! openraft's leadership transfer lets the followers vote for the target at
//! once, inside the lease they granted the current leader, while that leader
//! keeps its last quorum-acknowledgement time. So from the moment this node
//! asks for a transfer, its lease proves nothing: the target may already
//! lead and commit. The fence is set before every transfer this node starts
//! and turns `is_leader_with_lease` off until either the term changes (a new
//! leader was elected; this node then leads again only through an election
//! of its own and its usual checks) or, if the transfer came to nothing, a
//! quorum acknowledged a heartbeat sent more than one lease after the
//! transfer began (the target's one election round is over by then).
//!
//! Lock-free (atomics), because `is_leader_with_lease` is on the fast path.
//! Imports nothing of the node but its facade.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

// tokio's clock, so that a simulation with paused time drives these too
use tokio::time::Instant;

/// The fence of one group.
#[derive(Debug, Default)]
pub(super) struct Fence {
    /// When the transfer began, in ns since the node's epoch (0: no fence).
    since_ns: AtomicU64,
    /// The term in which it began.
    term: AtomicU64,
}

/// Every group's fence.
#[derive(Debug)]
pub(super) struct Fences {
    epoch: Instant,
    groups: Vec<Fence>,
}

impl Fences {
    pub(super) fn new(groups: usize) -> Self {
        Self {
            epoch: Instant::now(),
            groups: (0..groups).map(|_| Fence::default()).collect(),
        }
    }

    fn now_ns(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    /// A transfer of group `g` begins now, in `term`.
    pub(super) fn raise(&self, g: usize, term: u64) {
        if let Some(f) = self.groups.get(g) {
            f.term.store(term, Ordering::Release);
            f.since_ns.store(self.now_ns(), Ordering::Release);
        }
    }

    /// Whether a fence of group `g` is up (a transfer may be under way).
    pub(super) fn raised(&self, g: usize) -> bool {
        self.groups
            .get(g)
            .is_some_and(|f| f.since_ns.load(Ordering::Acquire) != 0)
    }

    /// Whether group `g`, led here in `term`, may answer from its lease.
    /// `acked_ago`: how long ago the heartbeat the quorum last acknowledged
    /// was sent.
    pub(super) fn lets_through(
        &self,
        g: usize,
        term: u64,
        acked_ago: Option<Duration>,
        lease: Duration,
    ) -> bool {
        let Some(f) = self.groups.get(g) else {
            return true;
        };
        let since = f.since_ns.load(Ordering::Acquire);
        if since == 0 {
            return true;
        }
        let age = Duration::from_nanos(self.now_ns().saturating_sub(since));
        let over = fence_over(f.term.load(Ordering::Acquire), term, acked_ago, age, lease);
        if over {
            // only the fence seen here is lowered (a newer one stays)
            let _ = f
                .since_ns
                .compare_exchange(since, 0, Ordering::AcqRel, Ordering::Acquire);
        }
        over
    }
}

/// Whether a fence raised in `fenced_term`, `age` ago, is over: the term
/// changed, or the quorum acknowledged a heartbeat sent (`acked_ago` ago)
/// more than one `lease` after the transfer began.
fn fence_over(
    fenced_term: u64,
    term: u64,
    acked_ago: Option<Duration>,
    age: Duration,
    lease: Duration,
) -> bool {
    fenced_term != term || acked_ago.is_some_and(|ago| ago + lease < age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_holds_until_a_new_term_or_a_later_quorum_ack() {
        let ms = Duration::from_millis;
        let lease = ms(400);
        let age = ms(1_000); // the transfer began 1 s ago
                             // acks sent before the transfer, or within a lease after it began,
                             // prove nothing; one sent more than a lease after it does
        assert!(!fence_over(5, 5, None, age, lease));
        assert!(!fence_over(5, 5, Some(ms(1_200)), age, lease));
        assert!(
            !fence_over(5, 5, Some(ms(600)), age, lease),
            "exactly a lease after"
        );
        assert!(fence_over(5, 5, Some(ms(599)), age, lease));
        // a new term ends it
        assert!(fence_over(5, 6, None, age, lease));
    }

    #[test]
    fn raised_fences_hold_per_group_and_fall_with_the_term() {
        let lease = Duration::from_millis(400);
        let f = Fences::new(2);
        assert!(
            f.lets_through(0, 5, Some(Duration::ZERO), lease),
            "no fence"
        );
        f.raise(0, 5);
        assert!(!f.lets_through(0, 5, Some(Duration::ZERO), lease));
        assert!(
            f.lets_through(1, 5, Some(Duration::ZERO), lease),
            "other group"
        );
        assert!(f.lets_through(0, 6, None, lease), "new term");
        assert!(
            f.lets_through(0, 5, Some(Duration::ZERO), lease),
            "lowered for good"
        );
    }
}
