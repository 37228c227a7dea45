//! The bound on the service clock (issue 11, item 2): how far this node's
//! clock may run ahead of the other nodes' before it must not stamp
//! commands.
//!
//! A replicated command carries the time its proposer read from its own
//! service clock, and the engine never goes back in time, so one node whose
//! clock runs a day ahead would age a day of conversations out at once and
//! drag every later stamp into its future. Each node therefore samples the
//! other nodes' service clocks (a cheap periodic exchange, `relay::watch_clocks`)
//! and, before stamping, estimates where their clocks stand *now*: a sample
//! taken `e` ago (on the monotonic clock) of a clock that read `c`, answered
//! within a round trip `r`, stands at most at `c + r + e` (the estimate
//! errs towards the peer being later, so it never makes this node look
//! further ahead than it is). The clock that a majority of the nodes (this
//! one counted) have reached or passed is the *quorum clock*; this node's
//! skew is its own clock minus that. A skew above [`Skew::max_offset`]
//! refuses the stamp: the write answers UNAVAILABLE naming the skew, and
//! the node logs it. A jump of this node's own clock is seen at the next
//! stamp (the estimates run on the monotonic clock), not at the next sample.
//!
//! The samples arrive on the Raft layer's node liveness messages: each
//! answer carries the receiver's clock, and the sender's round trip bounds
//! it (`admit_raft`'s quiesce docs, "Clock samples"; [`Skew::record_carried`]).
//! A peer that sent no such sample lately (an older build, liveness off,
//! a peer sharing no group with this node) is asked with a unary call
//! every [`SAMPLE_EVERY`] instead; the estimate rule is the same for both.
//!
//! Peers without a sample younger than [`STALE_AFTER`] are not counted. A
//! node needs fresh samples of enough of the other nodes to make a
//! majority with itself before it stamps ([`Skew::set_peers`]; a single
//! node has no others and stamps as always).
//!
//! The other way round, a clock *behind* is raised ([`Skew::raise`]): a
//! node goes by the latest time a majority of the clocks has certainly
//! passed, so a slow leader does not date its decisions in the past.
//!
//! May import: `admit_core::Ts`, `crate::error`, `crate::telemetry`, std,
//! tokio's clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock (std's outside a paused runtime): the Raft layer's
// simulation runs this on virtual time
use tokio::time::Instant;

use admit_core::Ts;

use crate::error::{ApiError, RETRY_RAFT_MS};

/// How far a node's clock may run ahead of the quorum clock by default. A
/// conversation window moved by less than this is within what R3 allows for
/// clocks kept by NTP (milliseconds apart); a node beyond it is broken.
pub const DEFAULT_MAX_CLOCK_OFFSET: Duration = Duration::from_millis(500);

/// How often each node samples the others' clocks.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// A sample older than this is not counted.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// One sample of a peer's clock: what it read, plus the round trip (the
/// clock stood at most there when the answer arrived), and when it arrived.
#[derive(Debug, Clone, Copy)]
struct Sample {
    upper_ms: u64,
    /// What the clock read: it stood at least there when the answer arrived.
    lower_ms: u64,
    at: Instant,
}

/// This node's view of the other nodes' clocks.
#[derive(Debug)]
pub struct Skew {
    max_offset: Duration,
    /// On the test clock, which moves only when told: a sample never lowers
    /// an estimate (one taken while a cluster-wide set is under way would).
    test: bool,
    peers: Mutex<HashMap<u64, Sample>>,
    /// When the refusal was last logged (at most once a second).
    warned: Mutex<Option<Instant>>,
    /// Per peer: when its last sample carried on liveness arrived.
    carried: Mutex<HashMap<u64, Instant>>,
    /// How many other nodes the cluster has ([`Self::set_peers`]): a
    /// stamp needs fresh samples of enough of them to make a majority.
    expected: std::sync::atomic::AtomicUsize,
    /// Unary clock calls sent (the fallback), for tests and benches.
    pub(crate) unary_calls: std::sync::atomic::AtomicU64,
}

impl Skew {
    pub fn new(max_offset: Duration, test: bool) -> Skew {
        Skew {
            max_offset,
            test,
            peers: Mutex::new(HashMap::new()),
            warned: Mutex::new(None),
            carried: Mutex::new(HashMap::new()),
            expected: Default::default(),
            unary_calls: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The configured bound.
    pub fn max_offset(&self) -> Duration {
        self.max_offset
    }

    /// Records a peer's clock `theirs`, answered `rtt` after the question
    /// and arriving at `at`.
    pub fn record(&self, peer: u64, theirs: Ts, rtt: Duration, at: Instant) {
        let upper_ms = theirs.ms().saturating_add(rtt.as_millis() as u64);
        let s = Sample {
            upper_ms,
            lower_ms: theirs.ms(),
            at,
        };
        let mut peers = self.lock();
        let keep_old = self.test
            && peers.get(&peer).is_some_and(|old| {
                let age = at.saturating_duration_since(old.at).as_millis() as u64;
                old.upper_ms.saturating_add(age) > upper_ms
            });
        if !keep_old {
            peers.insert(peer, s);
        }
    }

    /// [`Self::record`] for a sample carried on a liveness answer.
    pub fn record_carried(&self, peer: u64, theirs: Ts, rtt: Duration, at: Instant) {
        self.record(peer, theirs, rtt, at);
        self.carried
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, at);
    }

    /// Whether `peer`'s last sample carried on liveness is younger than
    /// `within` (then it needs no unary call).
    pub fn carried_within(&self, peer: u64, within: Duration) -> bool {
        self.carried
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&peer)
            .is_some_and(|at| at.elapsed() < within)
    }

    /// Test mode: the test clock was set to `now` on every node, so every
    /// peer's clock is at least there (the samples keep the difference).
    pub fn raise_all(&self, now: Ts) {
        let at = Instant::now();
        for s in self.lock().values_mut() {
            let elapsed = at.saturating_duration_since(s.at).as_millis() as u64;
            if s.upper_ms.saturating_add(elapsed) < now.ms() {
                *s = Sample {
                    upper_ms: now.ms(),
                    lower_ms: now.ms(),
                    at,
                };
            }
        }
    }

    /// The other nodes of the cluster now: the samples of any other are
    /// forgotten, and from now on a stamp needs fresh samples of enough of
    /// these to make a majority with this node.
    pub fn set_peers(&self, ids: &[u64]) {
        self.retain(|id| ids.contains(&id));
        self.expected
            .store(ids.len(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Forgets a peer (it left the cluster).
    pub fn retain(&self, keep: impl Fn(u64) -> bool) {
        self.lock().retain(|id, _| keep(*id));
        self.carried
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| keep(*id));
    }

    /// Each counted peer's estimated clock now, upper bound.
    fn estimates(&self, at: Instant) -> Vec<(u64, u64)> {
        self.lock()
            .iter()
            .filter_map(|(id, s)| {
                let age = at.saturating_duration_since(s.at);
                (age < STALE_AFTER)
                    .then(|| (*id, s.upper_ms.saturating_add(age.as_millis() as u64)))
            })
            .collect()
    }

    /// The time this node goes by when its clock reads `mine`: `mine`, or,
    /// when a majority of the nodes' clocks (this one counted) have
    /// certainly passed it, the latest time they all have passed. A
    /// command's time and the fast path's `now` come from here.
    ///
    /// Why: the engine never goes back, so a leader whose clock runs behind
    /// stamps nothing new; what it decides is dated at the last time a good
    /// clock stamped, and ages out early by as long as it led once a good
    /// clock stamps again (over-admission, found by the Raft layer's
    /// simulation). Raised, a slow clock dates a decision at most a round
    /// trip behind the true time. The lower bound of a sample is what the
    /// peer's clock read (it stood at least there when the answer arrived),
    /// aged on the monotonic clock; a slow clock is thus never raised past
    /// what the majority's clocks read, so the raise cannot run ahead.
    pub fn raise(&self, mine: Ts) -> Ts {
        // a test clock moves only when told: a sample does not age
        if self.test {
            return mine;
        }
        let at = Instant::now();
        let peers = self.lock();
        let lows = || {
            peers.values().filter_map(|s| {
                let age = at.saturating_duration_since(s.at);
                (age < STALE_AFTER).then(|| s.lower_ms.saturating_add(age.as_millis() as u64))
            })
        };
        // the common case, on the fast path, without allocating: unless a
        // majority (this node counted) certainly passed `mine`, it stands
        let (fresh, later) = lows().fold((0usize, 0usize), |(f, l), low| {
            (f + 1, l + usize::from(low > mine.ms()))
        });
        if later < fresh.div_ceil(2) + 1 {
            return mine;
        }
        let mut lows: Vec<u64> = lows().collect();
        lows.push(mine.ms());
        lows.sort_unstable_by(|a, b| b.cmp(a));
        Ts(mine.ms().max(lows[lows.len() / 2]))
    }

    /// This node's clock `mine` minus the quorum clock (negative: behind
    /// it), and each counted peer's estimated offset from `mine`.
    pub fn measure(&self, mine: Ts) -> Measured {
        let est = self.estimates(Instant::now());
        let mut clocks: Vec<u64> = est.iter().map(|(_, c)| *c).collect();
        clocks.push(mine.ms());
        clocks.sort_unstable_by(|a, b| b.cmp(a));
        // the clock a majority (this node included) has reached or passed
        let quorum = clocks[clocks.len() / 2];
        Measured {
            skew_ms: signed(mine.ms(), quorum),
            peers: est
                .into_iter()
                .map(|(id, c)| (id, signed(c, mine.ms())))
                .collect(),
        }
    }

    /// Whether this node may stamp a command at `mine`: refused, with the
    /// reason, when its clock is beyond the bound.
    pub fn check(&self, mine: Ts) -> Result<(), ApiError> {
        let m = self.measure(mine);
        // without a majority's clocks to compare with, a clock far ahead
        // would go unseen (found by the Raft layer's simulation: a node
        // restarted with its clock ahead stamped before any sample came);
        // a node that can reach a majority, as a leader must to commit,
        // has their samples within a round of liveness or clock calls
        let expected = self.expected.load(std::sync::atomic::Ordering::Relaxed);
        let needed = expected.div_ceil(2);
        if !self.test && m.peers.len() < needed {
            return Err(ApiError::unavailable(
                format!(
                    "this node has fresh samples of {} of the other {expected} nodes' clocks and \
                     needs {needed} to bound its own: it stamps no command until they come; \
                     nothing was applied, retry",
                    m.peers.len()
                ),
                RETRY_RAFT_MS,
            ));
        }
        let skew = m.skew_ms;
        let max = self.max_offset.as_millis() as i64;
        if skew <= max {
            return Ok(());
        }
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            *warned = Some(Instant::now());
            tracing::warn!(
                skew_ms = skew,
                max_ms = max,
                "this node's clock runs ahead of the other nodes' beyond the bound: it stamps no command"
            );
        }
        Err(ApiError::unavailable(
            format!(
                "this node's clock is {skew} ms ahead of the other nodes' (the bound is {max} ms): \
                 it stamps no command until its clock is fixed; nothing was applied, retry"
            ),
            RETRY_RAFT_MS,
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Sample>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A measurement of this node's clock against the others.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// This node's clock minus the quorum clock.
    pub skew_ms: i64,
    /// Per counted peer: its estimated clock minus this node's.
    pub peers: Vec<(u64, i64)>,
}

fn signed(a: u64, b: u64) -> i64 {
    (i128::from(a) - i128::from(b)).clamp(i64::MIN.into(), i64::MAX.into()) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_893_456_000_000;

    #[test]
    fn a_node_alone_has_no_skew() {
        let s = Skew::new(DEFAULT_MAX_CLOCK_OFFSET, false);
        assert_eq!(s.measure(Ts(T)).skew_ms, 0);
        assert!(s.check(Ts(T)).is_ok());
    }

    #[test]
    fn ahead_of_a_majority_beyond_the_bound_is_refused_at_its_edge() {
        let s = Skew::new(Duration::from_millis(500), false);
        let now = Instant::now();
        s.record(2, Ts(T), Duration::ZERO, now);
        s.record(3, Ts(T - 10_000), Duration::ZERO, now);
        // the quorum clock is node 2's (the later of the two others)
        assert!(s.check(Ts(T + 400)).is_ok());
        let e = s.check(Ts(T + 2_000)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(e.to_string().contains("ahead"), "{e}");
        // one peer far behind is outvoted: this node and node 2 agree
        assert!(s.check(Ts(T)).is_ok());
    }

    #[test]
    fn the_round_trip_counts_for_the_peer() {
        let s = Skew::new(Duration::from_millis(500), false);
        s.record(2, Ts(T), Duration::from_millis(300), Instant::now());
        // node 2 may stand at T + 300 already: 700 ahead of that is beyond
        assert!(s.check(Ts(T + 800)).is_ok());
        assert!(s.check(Ts(T + 1_300)).is_err());
    }

    #[test]
    fn raising_every_peer_follows_a_cluster_wide_test_clock() {
        let s = Skew::new(Duration::from_millis(500), false);
        s.record(2, Ts(T), Duration::ZERO, Instant::now());
        assert!(s.check(Ts(T + 86_400_000)).is_err());
        s.raise_all(Ts(T + 86_400_000));
        assert!(s.check(Ts(T + 86_400_000)).is_ok());
    }

    #[test]
    fn a_clock_behind_a_majority_is_raised_to_what_they_certainly_passed() {
        let s = Skew::new(Duration::from_millis(500), false);
        let now = Instant::now();
        // node 2 read T (answered within 300 ms), node 3 read T + 100
        s.record(2, Ts(T), Duration::from_millis(300), now);
        s.record(3, Ts(T + 100), Duration::ZERO, now);
        // a majority (this node counted) certainly passed T: what node 2
        // read, not the 300 ms its answer may have taken
        let raised = s.raise(Ts(T - 5_000)).ms();
        assert!((T..T + 50).contains(&raised), "raised to {raised}");
        // a clock at or ahead of that keeps its own time
        assert_eq!(s.raise(Ts(T + 10)), Ts(T + 10));
        assert_eq!(s.raise(Ts(T + 99_000)), Ts(T + 99_000));
    }

    #[test]
    fn one_peer_of_two_does_not_raise_a_clock() {
        let s = Skew::new(Duration::from_millis(500), false);
        s.record(2, Ts(T), Duration::ZERO, Instant::now());
        // this node and node 2 are both needed for a majority of two
        assert_eq!(s.raise(Ts(T - 5_000)), Ts(T - 5_000));
        // nor does a peer on a test clock (which moves only when told)
        let t = Skew::new(Duration::from_millis(500), true);
        t.record(2, Ts(T), Duration::ZERO, Instant::now());
        t.record(3, Ts(T), Duration::ZERO, Instant::now());
        assert_eq!(t.raise(Ts(T - 5_000)), Ts(T - 5_000));
    }

    #[test]
    fn a_stamp_needs_fresh_samples_of_a_majority() {
        let s = Skew::new(Duration::from_millis(500), false);
        // before the first clock round: nothing expected
        assert!(s.check(Ts(T)).is_ok());
        s.set_peers(&[2, 3]);
        let e = s.check(Ts(T)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(e.to_string().contains("0 of the other 2"), "{e}");
        s.record(2, Ts(T), Duration::ZERO, Instant::now());
        assert!(s.check(Ts(T)).is_ok());
        // five nodes: two others with this one make the majority
        s.set_peers(&[2, 3, 4, 5]);
        assert!(s.check(Ts(T)).is_err());
        s.record(4, Ts(T), Duration::ZERO, Instant::now());
        assert!(s.check(Ts(T)).is_ok());
        // a node that left is forgotten
        s.set_peers(&[3, 4]);
        assert!(s.check(Ts(T)).is_ok());
        s.set_peers(&[3, 5]);
        assert!(s.check(Ts(T)).is_err());
    }

    #[test]
    fn stale_samples_are_not_counted() {
        let s = Skew::new(Duration::from_millis(500), false);
        let Some(old) = Instant::now().checked_sub(STALE_AFTER + Duration::from_secs(1)) else {
            return;
        };
        s.record(2, Ts(T), Duration::ZERO, old);
        assert!(s.check(Ts(T + 86_400_000)).is_ok());
    }
}
