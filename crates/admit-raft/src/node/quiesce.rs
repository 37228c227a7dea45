//! Quiescent groups: a group with nothing to replicate stops costing CPU.
//!
//! An idle group otherwise keeps its openraft ticker (a wake-up every fifth
//! of a heartbeat) and its heartbeats (one RPC per follower per heartbeat)
//! running; with 64 groups on three nodes that is most of an idle node's
//! CPU. Here:
//!
//! * **The leader quiesces** a group when the log is settled (last log =
//!   committed = applied, membership committed and not joint, every replica
//!   matched the last entry, no transfer fence raised), nothing touched it
//!   (proposal, lease check, peer message) for [`NodeConfig::quiesce_after`],
//!   and every replica acknowledged a heartbeat sent after the last change
//!   (so each knows the commit index). It then turns the group's ticker off:
//!   no heartbeats, no timers.
//! * **Node liveness**: every tick (see "How often" below) each node sends
//!   one [`Liveness`] message to every other member of its groups, listing
//!   the groups it leads quiesced, with their terms; the answer carries the
//!   receiver's service clock (see "Clock samples"). This is the only
//!   traffic of an idle cluster: one message and its answer per node pair
//!   per tick.
//! * **A follower quiesces** (ticker off, so no election timer) when the
//!   leader it follows, in the term it knows, lists the group. It wakes
//!   (ticker on) on any message for the group, or when that leader has not
//!   listed the group for a jittered election timeout: then the leader's
//!   node is silent (dead, cut off) or no longer leads it quiesced, and the
//!   follower's election timer, long expired, starts an election (pre-vote
//!   first) at its next tick. Failover therefore takes about what it takes
//!   for an active group.
//! * **The leader wakes** (ticker on, one heartbeat at once) on a proposal,
//!   any message for the group, a lease check
//!   ([`RaftNode::is_leader_with_lease`] / `ensure_linearizable`), a
//!   membership step, a transfer or shutdown.
//!
//! **The lease is not kept alive by liveness.** A quiesced leader's last
//! quorum acknowledgement ages like any other; `is_leader_with_lease` goes
//! false half a lease after it, exactly as for a leader cut off, and the
//! fast path then sends the request through the log (a proposal, which
//! wakes the group) until a heartbeat round renews the lease. Liveness
//! proves only that the leader's node runs, not that a quorum still follows
//! it in this term (a follower grants votes once its own lease of the
//! leader ran out, quiesced or not), so it may not stand in for a quorum
//! acknowledgement. The safety argument of `lib.rs` ("Why lease reads are
//! safe") is thus unchanged: quiescence only stops renewing the lease.
//!
//! **The first proposal after an idle spell.** openraft takes a new entry
//! only from a leader that a quorum acknowledged within the lease
//! (`election_timeout.max`); otherwise it answers "forward to leader" with
//! no leader named, appending nothing. A quiesced leader's lease runs out
//! while it idles, so its first proposal after an idle spell longer than
//! the lease was refused that way (callers retried it as "not leader").
//! [`RaftNode::write`] therefore checks, before proposing, whether this
//! node leads the group and its last quorum acknowledgement is three
//! quarters of a lease old or older (only for the proposals after a spell
//! quiesced led here, until one has checked: an awake leader's heartbeats
//! keep its lease fresh, so the write path pays two atomic loads, not a
//! read of the metrics); then it sends a heartbeat round and
//! waits (at most a lease) until a quorum acknowledged a heartbeat sent
//! after it asked, and proposes. It is the same heartbeat round the lease
//! would take anyway; the proposal only waits for it instead of failing.
//! Tested by `a_quiesced_leader_takes_its_first_proposal_after_the_lease_ran_out`
//! (`tests/quiesce.rs`).
//!
//! **How often.** The loop runs, and liveness leaves, every
//! `max(heartbeat, election_timeout.min / 3)` ([`liveness_every`]; 167 ms
//! with the defaults, 100 ms heartbeats and 500-1000 ms election
//! timeouts), not every heartbeat: liveness only has to reach a quiesced
//! follower before its jittered silence (an election timeout, at least
//! `election_timeout.min`) runs out, and a third of the minimum leaves
//! room for two lost or late messages before a live leader's followers
//! wake. Nothing else depends on the period:
//! * *lease safety*: liveness never extends a lease (above), so sending it
//!   less often cannot make a lease answer wrong; a quiesced leader's lease
//!   runs out on its own clock exactly as before, and a proposal or lease
//!   check wakes the group at once, not at the next tick;
//! * *failover*: a follower of a dead leader wakes when the leader's last
//!   liveness is older than its silence, as before; it notices at its own
//!   next tick, so at most one period after the silence ran out instead
//!   of one heartbeat (with the defaults at most 67 ms later, against a
//!   500 ms jitter of the election timeouts themselves). Active groups do
//!   not depend on the loop at all: openraft's own timers run them.
//! * *quiescing*: a leader quiesces an idle group at the first tick after
//!   [`NodeConfig::quiesce_after`](crate::NodeConfig::quiesce_after), at
//!   most one period later than before.
//!
//! **Clock samples.** The layer above bounds how far its service clock
//! may run ahead of the other nodes' (admit-server's `skew`), from samples
//! of their clocks. Each liveness answer carries the receiver's service
//! clock ([`ServiceClock`]), read while answering; the sender measures the
//! round trip `r` from sending the message to the answer's arrival, so the
//! receiver's clock stood at most at `c + r` when the answer arrived (a
//! delay in the batch only widens `r`: the estimate errs towards the peer
//! being later, never making this node look further ahead than it is).
//! Both nodes of a pair send liveness, so both get samples, with no call
//! of their own. A node of an older build answers liveness without a
//! clock (its answer does not decode as one): no sample is taken, and the
//! layer above keeps asking that node with its own call.
//!
//! On by default ([`NodeConfig::quiesce_after`](crate::NodeConfig::quiesce_after),
//! 300 ms); `None` turns it off. Liveness travels on the node-pair stream
//! (`pipe.rs`) like any frame, and a quiesced group is checked each tick
//! from a glance at its metrics (role, term, progress), not a full view.
//!
//! May import: the node's facade (`super`), openraft's metrics and runtime
//! switches, the router (to send liveness), the store's codec and the
//! config.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

// tokio's clock, so that a simulation with paused time drives these too
use tokio::time::Instant;

use openraft::async_runtime::WatchReceiver;
use openraft::Instant as _;
use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::{Inner, RaftNode, ServerHandle};
use crate::pb::RaftRpcKind;
use crate::sm::GroupRaft;
use crate::store::decode;
use crate::App;

const ACTIVE: u8 = 0;
/// Quiesced, led here.
const LEADING: u8 = 1;
/// Quiesced, following another node.
const FOLLOWING: u8 = 2;

/// Quiescence of one group.
#[derive(Debug, Default)]
struct Slot {
    state: AtomicU8,
    /// Something asked for the group since the loop last looked.
    touched: AtomicBool,
    /// The term in which it quiesced.
    term: AtomicU64,
    /// Following: the leader it follows.
    leader: AtomicU64,
    /// Following: when that leader last listed the group (ns since epoch).
    confirmed_ns: AtomicU64,
    /// How many times the group quiesced led here, and how many of those
    /// spells a proposal has since checked the lease after (see
    /// [`Quiet::lease_unchecked`]): the write path's gate.
    led_spells: AtomicU64,
    lease_checked: AtomicU64,
    /// Serializes the state changes (never held on the fast path).
    lock: Mutex<()>,
}

/// Every group's quiescence, and what was heard from the other nodes.
#[derive(Debug)]
pub(super) struct Quiet {
    after: Option<Duration>,
    epoch: Instant,
    /// The shards, then the metadata group.
    slots: Vec<Slot>,
    /// Node id -> when its last liveness message arrived (ns since epoch).
    heard: Mutex<HashMap<u64, u64>>,
    /// The service clock liveness carries, once the server above set it.
    clock: ClockCell,
    /// Groups not quiesced here, and whether that is none (the node is
    /// quiet: see [`RaftNode::quiet`]).
    awake: AtomicUsize,
    all_quiet: tokio::sync::watch::Sender<bool>,
    /// What the loops did, for tests and benches.
    liveness_rounds: AtomicU64,
    pub(super) reconcile_passes: AtomicU64,
    liveness_sent: AtomicU64,
    clock_samples: Arc<AtomicU64>,
}

/// The service clock of the layer above (admit-server's), carried on
/// liveness: the answer to each liveness message reads the receiver's
/// clock, so the sender gets a sample of it with a round-trip bound at no
/// cost of its own (see "Clock samples" in the module docs).
pub trait ServiceClock: Send + Sync + 'static {
    /// This node's service clock now, in ms (`None`: none to tell, e.g.
    /// while stopping; the answer then carries no clock).
    fn now_ms(&self) -> Option<u64>;
    /// Node `node`'s service clock read `clock_ms`, answered within `rtt`
    /// of the liveness message leaving; the answer arrived at `at`.
    fn sampled(&self, node: u64, clock_ms: u64, rtt: Duration, at: std::time::Instant);
}

/// Where the [`ServiceClock`] is kept.
struct ClockCell(OnceLock<Arc<dyn ServiceClock>>);

impl std::fmt::Debug for ClockCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "ClockCell(set)"
        } else {
            "ClockCell(unset)"
        })
    }
}

/// What a node's quiescence loop did since the node started (an idle
/// node's own traffic; tests and benches read it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdleCounters {
    /// Rounds of the loop (each sends liveness to every peer node).
    pub liveness_rounds: u64,
    /// Liveness messages sent (one per peer node per liveness tick).
    pub liveness_sent: u64,
    /// Clock samples taken from liveness answers.
    pub clock_samples: u64,
    /// Passes of the reconcile loop.
    pub reconcile_passes: u64,
}

/// One node's liveness message to another, once per tick.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Liveness {
    from: u64,
    /// (group, term) of every group the sender leads quiesced.
    quiesced: Vec<(u32, u64)>,
}

impl Quiet {
    /// `groups`: the shards and the metadata group.
    pub(super) fn new(groups: usize, after: Option<Duration>) -> Self {
        Self {
            after,
            epoch: Instant::now(),
            slots: (0..groups).map(|_| Slot::default()).collect(),
            heard: Mutex::new(HashMap::new()),
            clock: ClockCell(OnceLock::new()),
            awake: AtomicUsize::new(groups),
            all_quiet: tokio::sync::watch::channel(false).0,
            liveness_rounds: AtomicU64::new(0),
            reconcile_passes: AtomicU64::new(0),
            liveness_sent: AtomicU64::new(0),
            clock_samples: Arc::default(),
        }
    }

    fn now_ns(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    /// Whether group `g` is quiesced here (led or followed).
    pub(super) fn is_quiesced(&self, g: usize) -> bool {
        self.slots
            .get(g)
            .is_some_and(|s| s.state.load(Ordering::Acquire) != ACTIVE)
    }

    /// Whether group `g` is quiesced and led here.
    pub(super) fn leads_quiesced(&self, g: usize) -> bool {
        self.slots
            .get(g)
            .is_some_and(|s| s.state.load(Ordering::Acquire) == LEADING)
    }

    /// Group `g` quiesced led here since a proposal last checked its lease:
    /// returns the spell to hand to [`Self::lease_checked`] once checked.
    /// Only such a group can lead with a lapsed lease that a heartbeat
    /// round renews (an awake leader's heartbeats keep it fresh; one cut
    /// off cannot renew it), so the write path checks the lease only then:
    /// two atomic loads otherwise.
    pub(super) fn lease_unchecked(&self, g: usize) -> Option<u64> {
        let s = self.slots.get(g)?;
        let spell = s.led_spells.load(Ordering::Acquire);
        (s.lease_checked.load(Ordering::Acquire) < spell).then_some(spell)
    }

    /// A proposal checked (and renewed if needed) the lease of group `g`
    /// after its quiesced spell `spell`. Not cleared at the wake: the
    /// proposals that arrive while the first one renews must wait too.
    pub(super) fn lease_checked(&self, g: usize, spell: u64) {
        if let Some(s) = self.slots.get(g) {
            s.lease_checked.fetch_max(spell, Ordering::AcqRel);
        }
    }

    /// A group went quiesced (`false`) or woke (`true`): counts it, and
    /// tells the watchers of [`RaftNode::quiet`] when the node turns quiet
    /// or stops being so (the count is read under the watch's lock, so the
    /// last of two racing changes publishes the final state).
    fn settle(&self, woke: bool) {
        if woke {
            self.awake.fetch_add(1, Ordering::SeqCst);
        } else {
            self.awake.fetch_sub(1, Ordering::SeqCst);
        }
        self.all_quiet.send_if_modified(|q| {
            let now = self.awake.load(Ordering::SeqCst) == 0;
            std::mem::replace(q, now) != now
        });
    }

    /// Wakes group `g` (ticker on; a heartbeat at once if it was led
    /// here): whether it was quiesced.
    fn wake(&self, g: usize, sw: &dyn Switch) -> bool {
        let Some(slot) = self.slots.get(g) else {
            return false;
        };
        let _guard = lock(&slot.lock);
        let was = slot.state.swap(ACTIVE, Ordering::SeqCst);
        if was == ACTIVE {
            return false;
        }
        self.settle(true);
        sw.ticking(true);
        if was == LEADING {
            sw.beat();
        }
        true
    }

    /// Quiesces group `g` as its leader in `term`: whether it did. Only
    /// an active group: the loop read its state before this lock, and a
    /// follower quiesce (a liveness message) or a wake may have run since;
    /// quiescing over those would count the group asleep twice, or awake
    /// when it is not, and [`RaftNode::quiet`] would be wrong from then on.
    fn quiesce_led(&self, g: usize, sw: &dyn Switch, term: u64) -> bool {
        let Some(slot) = self.slots.get(g) else {
            return false;
        };
        let _guard = lock(&slot.lock);
        if slot.state.load(Ordering::SeqCst) != ACTIVE {
            return false;
        }
        slot.term.store(term, Ordering::Release);
        slot.state.store(LEADING, Ordering::SeqCst);
        if slot.touched.swap(false, Ordering::SeqCst) {
            // touched meanwhile: stay awake
            slot.state.store(ACTIVE, Ordering::SeqCst);
            return false;
        }
        slot.led_spells.fetch_add(1, Ordering::AcqRel);
        self.settle(false);
        sw.ticking(false);
        true
    }

    /// Quiesces group `g` as a follower of `leader` in `term` (confirmed
    /// at `now_ns`): whether it did (only an active group).
    fn quiesce_followed(
        &self,
        g: usize,
        sw: &dyn Switch,
        leader: u64,
        term: u64,
        now_ns: u64,
    ) -> bool {
        let Some(slot) = self.slots.get(g) else {
            return false;
        };
        let _guard = lock(&slot.lock);
        if slot.state.load(Ordering::SeqCst) != ACTIVE {
            return false;
        }
        slot.leader.store(leader, Ordering::Release);
        slot.term.store(term, Ordering::Release);
        slot.confirmed_ns.store(now_ns, Ordering::Release);
        slot.state.store(FOLLOWING, Ordering::SeqCst);
        self.settle(false);
        sw.ticking(false);
        true
    }

    /// Whether `node` sent a liveness message within `within`.
    pub(super) fn heard_within(&self, node: u64, within: Duration) -> bool {
        let now = self.now_ns();
        lock(&self.heard)
            .get(&node)
            .is_some_and(|at| Duration::from_nanos(now.saturating_sub(*at)) < within)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the loop needs to know of one group, from its metrics.
#[derive(Debug, PartialEq, Eq)]
enum Role {
    Leading,
    Following(u64),
    Other,
}

#[derive(Debug)]
struct View {
    role: Role,
    term: u64,
    /// (last log index, committed index): a change is activity.
    progress: (Option<u64>, Option<u64>),
    /// Led here and nothing in flight (see the module docs).
    settled: bool,
    /// How long ago the oldest of the replicas' last acknowledged
    /// heartbeats was sent (`ZERO` without replicas; `None` if one never
    /// acknowledged).
    oldest_ack: Option<Duration>,
    /// The other members (voters and learners).
    members: Vec<u64>,
}

/// The switches the loop works a group with, whatever its App.
trait Switch {
    fn view(&self, me: u64) -> View;
    /// What a quiesced group is checked for each tick: role, term and
    /// progress only (no member lists: the loop keeps those from the last
    /// full view, and membership does not change without waking it).
    fn glance(&self, me: u64) -> (Role, u64, (Option<u64>, Option<u64>));
    fn ticking(&self, on: bool);
    /// Send a heartbeat now (renews the lease, wakes the followers).
    fn beat(&self);
}

fn role_of<X: App>(m: &openraft::RaftMetrics<crate::types::C<X>>, me: u64) -> Role {
    match (m.state, m.current_leader) {
        (ServerState::Leader, Some(l)) if l == me => Role::Leading,
        (ServerState::Follower | ServerState::Learner, Some(l)) if l != me => Role::Following(l),
        _ => Role::Other,
    }
}

impl<X: App> Switch for GroupRaft<X> {
    fn glance(&self, me: u64) -> (Role, u64, (Option<u64>, Option<u64>)) {
        let rx = self.metrics();
        let m = rx.borrow_watched();
        let committed = m.local_committed.as_ref().map(|c| c.index);
        (
            role_of::<X>(&m, me),
            m.current_term,
            (m.last_log_index, committed),
        )
    }

    fn view(&self, me: u64) -> View {
        let rx = self.metrics();
        let m = rx.borrow_watched();
        let role = role_of::<X>(&m, me);
        let last = m.last_log_index;
        let committed = m.local_committed.as_ref().map(|c| c.index);
        let applied = m.last_applied.as_ref().map(|c| c.index);
        let mem = m.membership_config.membership();
        let members: Vec<u64> = mem
            .voter_ids()
            .chain(mem.learner_ids())
            .filter(|n| *n != me)
            .collect();
        let matched = m.replication.as_ref().is_some_and(|r| {
            members.iter().all(|n| {
                r.get(n)
                    .cloned()
                    .flatten()
                    .is_some_and(|l| Some(l.index) == last)
            })
        });
        let settled = role == Role::Leading
            && last == committed
            && committed == applied
            && matched
            && m.membership_config.log_id() == m.committed_membership_config.log_id()
            && mem.get_joint_config().len() <= 1;
        let hb = m.heartbeat.as_ref();
        let oldest_ack = members.iter().try_fold(Duration::ZERO, |acc, n| {
            let t = hb.and_then(|h| h.get(n).cloned().flatten())?;
            Some(acc.max(t.into_inner().elapsed()))
        });
        View {
            role,
            term: m.current_term,
            progress: (last, committed),
            settled,
            oldest_ack,
            members,
        }
    }

    fn ticking(&self, on: bool) {
        self.runtime_config().tick(on);
    }

    fn beat(&self) {
        let raft = self.clone();
        tokio::spawn(async move {
            let _ = raft.trigger().heartbeat().await;
        });
    }
}

/// The loop's memory of one group between ticks.
#[derive(Debug, Clone)]
struct Track {
    progress: (Option<u64>, Option<u64>),
    since: Instant,
    /// The other members, from the last full view.
    members: Vec<u64>,
}

impl<A: App> Inner<A> {
    fn switch(&self, g: usize) -> Option<&dyn Switch> {
        if g < self.groups.len() {
            Some(&self.groups[g] as &dyn Switch)
        } else if g == self.groups.len() {
            Some(&self.meta as &dyn Switch)
        } else {
            None
        }
    }

    /// Activity on group `g` (a proposal, a lease check, a message, an
    /// admin step): it is not idle, and wakes if quiesced. Cheap when
    /// awake: two atomic reads.
    pub(super) fn stir(&self, g: usize) {
        let Some(slot) = self.quiet.slots.get(g) else {
            return;
        };
        // SeqCst against `quiesce_leader`: either it sees this touch or
        // this sees its state.
        if !slot.touched.load(Ordering::Relaxed) {
            slot.touched.store(true, Ordering::SeqCst);
        }
        if slot.state.load(Ordering::SeqCst) != ACTIVE {
            self.wake(g);
        }
    }

    /// Every group: awake, heartbeating.
    pub(super) fn stir_all(&self) {
        for g in 0..self.quiet.slots.len() {
            self.stir(g);
        }
    }

    fn wake(&self, g: usize) {
        let (Some(_), Some(sw)) = (self.quiet.slots.get(g), self.switch(g)) else {
            return;
        };
        if self.quiet.wake(g, sw) {
            tracing::trace!(group = g, "group woken");
        }
    }

    fn quiesce_leader(&self, g: usize, sw: &dyn Switch, term: u64) {
        if self.quiet.quiesce_led(g, sw, term) {
            tracing::trace!(group = g, term, "group quiesced (leader)");
        }
    }

    fn quiesce_follower(&self, g: usize, sw: &dyn Switch, leader: u64, term: u64) {
        if self
            .quiet
            .quiesce_followed(g, sw, leader, term, self.quiet.now_ns())
        {
            tracing::trace!(group = g, leader, term, "group quiesced (follower)");
        }
    }

    /// A liveness message arrived (the transport's `LIVENESS` kind); the
    /// answer is this node's service clock (read last, so that it is as
    /// late as the answer allows).
    pub(super) fn on_liveness(&self, payload: &[u8]) -> Result<Option<u64>, String> {
        self.heed_liveness(payload)?;
        Ok(self.quiet.clock.0.get().and_then(|c| c.now_ms()))
    }

    fn heed_liveness(&self, payload: &[u8]) -> Result<(), String> {
        let msg: Liveness = decode(payload).map_err(|e| e.to_string())?;
        let now = self.quiet.now_ns();
        lock(&self.quiet.heard).insert(msg.from, now);
        if self.quiet.after.is_none() {
            return Ok(());
        }
        let me = self.config.node_id;
        for (g, term) in msg.quiesced {
            let g = g as usize;
            let (Some(slot), Some(sw)) = (self.quiet.slots.get(g), self.switch(g)) else {
                continue;
            };
            match slot.state.load(Ordering::Acquire) {
                FOLLOWING
                    if slot.leader.load(Ordering::Acquire) == msg.from
                        && slot.term.load(Ordering::Acquire) == term =>
                {
                    slot.confirmed_ns.store(now, Ordering::Release);
                }
                ACTIVE => {
                    let v = sw.view(me);
                    if v.role == Role::Following(msg.from) && v.term == term {
                        self.quiesce_follower(g, sw, msg.from, term);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// How long a quiesced follower waits for its leader's liveness before
    /// it wakes: the election timeout, jittered per node and group (from
    /// min to max) so that the followers of a group rarely wake together.
    fn silence(&self, g: usize) -> Duration {
        let (min, max) = self.config.election_timeout;
        let span = max.saturating_sub(min).as_millis() as u64;
        if span == 0 {
            return min;
        }
        let mut x = self.config.node_id ^ ((g as u64) << 32) ^ 0x9E37_79B9_7F4A_7C15;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        min + Duration::from_millis(x % span)
    }

    /// One tick of the loop: quiesce idle groups, wake the followers whose
    /// leader went silent, tell the other nodes this one is alive.
    fn quiesce_tick(&self, track: &mut [Track], after: Duration) {
        let me = self.config.node_id;
        let now = Instant::now();
        let now_ns = self.quiet.now_ns();
        let mut led_quiesced = Vec::new();
        let mut peers = BTreeSet::new();
        for (g, t) in track.iter_mut().enumerate() {
            let (Some(slot), Some(sw)) = (self.quiet.slots.get(g), self.switch(g)) else {
                continue;
            };
            match slot.state.load(Ordering::SeqCst) {
                ACTIVE => {
                    let v = sw.view(me);
                    peers.extend(v.members.iter().copied());
                    t.members = v.members;
                    let touched = slot.touched.swap(false, Ordering::SeqCst);
                    let fenced = g < self.groups.len() && self.fences.raised(g);
                    if touched || v.progress != t.progress || !v.settled || fenced {
                        t.progress = v.progress;
                        t.since = now;
                        continue;
                    }
                    let idle = now.duration_since(t.since);
                    // every replica acknowledged a heartbeat sent after the
                    // last change, so it knows the commit index
                    if idle >= after && v.oldest_ack.is_some_and(|ago| ago < idle) {
                        self.quiesce_leader(g, sw, v.term);
                        if slot.state.load(Ordering::SeqCst) == LEADING {
                            led_quiesced.push((g as u32, v.term));
                        }
                    }
                }
                LEADING => {
                    peers.extend(t.members.iter().copied());
                    let (role, v_term, progress) = sw.glance(me);
                    let term = slot.term.load(Ordering::Acquire);
                    if role != Role::Leading || v_term != term || progress != t.progress {
                        self.wake(g);
                    } else {
                        led_quiesced.push((g as u32, term));
                    }
                }
                _ => {
                    peers.extend(t.members.iter().copied());
                    let (role, v_term, _) = sw.glance(me);
                    let leader = slot.leader.load(Ordering::Acquire);
                    let term = slot.term.load(Ordering::Acquire);
                    let quiet_for =
                        now_ns.saturating_sub(slot.confirmed_ns.load(Ordering::Acquire));
                    if role != Role::Following(leader)
                        || v_term != term
                        || Duration::from_nanos(quiet_for) > self.silence(g)
                    {
                        self.wake(g);
                        t.since = now;
                    }
                }
            }
        }
        peers.remove(&me);
        let msg = Liveness {
            from: me,
            quiesced: led_quiesced,
        };
        let ttl = self.config.election_timeout.0;
        self.quiet.liveness_rounds.fetch_add(1, Ordering::Relaxed);
        self.quiet
            .liveness_sent
            .fetch_add(peers.len() as u64, Ordering::Relaxed);
        for peer in peers {
            let router = self.router.clone();
            let msg = msg.clone();
            let clock = self.quiet.clock.0.get().cloned();
            let samples = self.quiet.clock_samples.clone();
            tokio::spawn(async move {
                // on the node-pair stream (a unary call to a peer without
                // one): a frame in a batch, not an HTTP/2 request of its own
                let sent = Instant::now();
                let r = router
                    .frame::<_, Option<u64>>(peer, 0, RaftRpcKind::Liveness, &msg, false, ttl)
                    .await;
                // an older build answers without a clock (it does not
                // decode as one): no sample, the layer above asks it
                if let (Ok(Some(theirs)), Some(clock)) = (r, clock) {
                    let at = Instant::now();
                    clock.sampled(peer, theirs, at.duration_since(sent), at.into_std());
                    samples.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
}

/// How often the loop runs and liveness leaves: every heartbeat, but no
/// more often than a third of the shortest election timeout (see "How
/// often" in the module docs).
pub(crate) fn liveness_every(config: &crate::NodeConfig) -> Duration {
    config.heartbeat.max(config.election_timeout.0 / 3)
}

impl<A: App> RaftNode<A> {
    /// Start the quiescence loop (one tick per heartbeat interval), unless
    /// [`NodeConfig::quiesce_after`](crate::NodeConfig::quiesce_after) is `None`.
    pub(super) fn spawn_quiescer(&self) {
        let Some(after) = self.inner.quiet.after else {
            return;
        };
        let every = liveness_every(&self.inner.config);
        let weak = Arc::downgrade(&self.inner);
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let groups = self.inner.quiet.slots.len();
        let task = tokio::spawn(async move {
            let mut track = vec![
                Track {
                    progress: (None, None),
                    since: Instant::now(),
                    members: Vec::new(),
                };
                groups
            ];
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tick.tick() => {}
                }
                let Some(inner) = weak.upgrade() else { break };
                inner.quiesce_tick(&mut track, after);
            }
        });
        *lock(&self.inner.quiescer) = Some(ServerHandle { stop, task });
    }

    /// Stop the quiescence loop and wake every group (before a hand-off or
    /// shutdown).
    pub(super) async fn stop_quiescer(&self) {
        let q = lock(&self.inner.quiescer).take();
        if let Some(q) = q {
            let _ = q.stop.send(());
            let _ = q.task.await;
        }
        self.inner.stir_all();
    }

    /// Sets the service clock that liveness answers carry (once; later
    /// calls are ignored). Without one, liveness carries no clock.
    pub fn set_service_clock(&self, clock: Arc<dyn ServiceClock>) {
        let _ = self.inner.quiet.clock.0.set(clock);
    }

    /// What this node's quiescence loop did so far.
    pub fn idle_counters(&self) -> IdleCounters {
        let q = &self.inner.quiet;
        IdleCounters {
            liveness_rounds: q.liveness_rounds.load(Ordering::Relaxed),
            liveness_sent: q.liveness_sent.load(Ordering::Relaxed),
            clock_samples: q.clock_samples.load(Ordering::Relaxed),
            reconcile_passes: q.reconcile_passes.load(Ordering::Relaxed),
        }
    }

    /// Whether this node leads `shard` and a quorum last acknowledged it
    /// three quarters of a lease ago or earlier (or never): openraft may
    /// refuse a proposal by the time it reaches the core.
    pub(super) fn lease_lapsing(&self, shard: u32) -> bool {
        let Some(raft) = self.inner.groups.get(shard as usize) else {
            return false;
        };
        let rx = raft.metrics();
        let m = rx.borrow_watched();
        if role_of::<A>(&m, self.node_id()) != Role::Leading {
            return false;
        }
        let me = self.node_id();
        if m.membership_config.membership().voter_ids().eq([me]) {
            return false;
        }
        let lapse = self.inner.lease * 3 / 4;
        m.last_quorum_acked
            .as_ref()
            .is_none_or(|t| t.into_inner().elapsed() >= lapse)
    }

    /// Renews this leader's lease of `shard` before a proposal: a heartbeat
    /// round now, waited for until a quorum acknowledged it (at most a
    /// lease; then the proposal goes as it is). Returns whether it did.
    pub(super) async fn renew_lease(&self, shard: u32) -> bool {
        let Some(raft) = self.inner.groups.get(shard as usize) else {
            return false;
        };
        let mut rx = raft.metrics();
        let asked = Instant::now();
        let _ = raft.trigger().heartbeat().await;
        let me = self.node_id();
        let deadline = tokio::time::Instant::now() + self.inner.lease;
        loop {
            {
                let m = rx.borrow_watched();
                if role_of::<A>(&m, me) != Role::Leading {
                    return false;
                }
                // acknowledged: a heartbeat sent after the ask
                if m.last_quorum_acked
                    .as_ref()
                    .is_some_and(|t| t.into_inner().elapsed() <= asked.elapsed())
                {
                    return true;
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// Whether this node leads `shard` with a lease
    /// ([`Self::is_leader_with_lease`]), renewing a lapsed one first: when
    /// this node believes it leads the shard but the lease lapsed (a
    /// quiesced spell, or acknowledgements late under load), it sends a
    /// heartbeat round and waits, at most `within`, until the lease holds
    /// again. `false` when another node leads, or no quorum acknowledged
    /// in time: never `true` without a valid lease. For answers that must
    /// come from the shard's leader now (a directory sweep), as a proposal
    /// renews a lapsing lease before it is made.
    pub async fn ensure_lease(&self, shard: u32, within: Duration) -> bool {
        // the check wakes a quiesced group (a heartbeat at once)
        if self.is_leader_with_lease(shard) {
            return true;
        }
        let Some(raft) = self.inner.groups.get(shard as usize) else {
            return false;
        };
        let me = self.node_id();
        let mut rx = raft.metrics();
        if role_of::<A>(&rx.borrow_watched(), me) != Role::Leading {
            return false;
        }
        let deadline = tokio::time::Instant::now() + within;
        // an awake leader whose acknowledgements came late: a round now
        if tokio::time::timeout_at(deadline, raft.trigger().heartbeat())
            .await
            .is_err()
        {
            return self.is_leader_with_lease(shard);
        }
        loop {
            if self.is_leader_with_lease(shard) {
                return true;
            }
            if role_of::<A>(&rx.borrow_watched(), me) != Role::Leading {
                return false;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.is_leader_with_lease(shard),
            }
        }
    }

    /// Whether every group of this node (the metadata group included) is
    /// quiesced, as a watch. While it is `true` no group here ticks, and no
    /// leader, term or log changes here without a group waking first (any
    /// message, proposal or lease check wakes its group, which turns it
    /// `false`): the periodic loops above may wait for that instead of
    /// polling. Never `true` with quiescence off, nor while this node holds
    /// a group it is no member of (such a group never quiesces).
    pub fn quiet(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.quiet.all_quiet.subscribe()
    }

    /// Whether `shard`'s group is quiesced on this node (led or followed).
    pub fn is_quiesced(&self, shard: u32) -> bool {
        shard < self.shards() && self.inner.quiet.is_quiesced(shard as usize)
    }

    /// How many of this node's groups (the metadata group included) are
    /// quiesced.
    pub fn quiesced_groups(&self) -> usize {
        (0..self.inner.quiet.slots.len())
            .filter(|g| self.inner.quiet.is_quiesced(*g))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_start_awake_and_report_quiescence() {
        let q = Quiet::new(3, Some(Duration::from_millis(300)));
        assert!(!q.is_quiesced(0) && !q.leads_quiesced(0));
        q.slots[1].state.store(LEADING, Ordering::SeqCst);
        q.slots[2].state.store(FOLLOWING, Ordering::SeqCst);
        assert!(q.is_quiesced(1) && q.leads_quiesced(1));
        assert!(q.is_quiesced(2) && !q.leads_quiesced(2));
        assert!(!q.is_quiesced(3), "no such group");
    }

    /// A group's switches as the tests see them: the ticker and the beats.
    #[derive(Default)]
    struct Switches {
        ticking: AtomicBool,
        beats: AtomicU64,
    }

    impl Switch for Switches {
        fn view(&self, _: u64) -> View {
            unreachable!("the transitions never read the metrics")
        }
        fn glance(&self, _: u64) -> (Role, u64, (Option<u64>, Option<u64>)) {
            unreachable!("the transitions never read the metrics")
        }
        fn ticking(&self, on: bool) {
            self.ticking.store(on, Ordering::SeqCst);
        }
        fn beat(&self) {
            self.beats.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn awake(q: &Quiet) -> usize {
        q.awake.load(Ordering::SeqCst)
    }

    /// The loop read group 0 active and its metrics as led here; before it
    /// took the slot's lock, a liveness message quiesced the group as a
    /// follower (a newer term's leader listed it). The leader quiesce must
    /// leave the group as it is: counted asleep once, not twice.
    #[test]
    fn a_leader_quiesce_after_a_follower_quiesce_changes_nothing() {
        let q = Quiet::new(2, Some(Duration::from_millis(300)));
        let sw = Switches::default();
        sw.ticking(true);
        let quiet = q.all_quiet.subscribe();
        assert!(q.quiesce_followed(0, &sw, 2, 7, q.now_ns()));
        assert!(!q.quiesce_led(0, &sw, 6), "not active: not quiesced");
        assert_eq!(q.slots[0].state.load(Ordering::SeqCst), FOLLOWING);
        assert_eq!(q.slots[0].term.load(Ordering::SeqCst), 7);
        assert_eq!(awake(&q), 1, "group 1 is still awake");
        assert!(!*quiet.borrow());
        // the other group quiesces: the node is quiet
        assert!(q.quiesce_led(1, &sw, 3));
        assert_eq!(awake(&q), 0);
        assert!(*quiet.borrow());
        // and a wake of each is counted once
        assert!(q.wake(0, &sw));
        assert!(!*quiet.borrow());
        assert!(q.wake(1, &sw));
        assert_eq!(awake(&q), 2);
        assert!(q.quiesce_led(0, &sw, 8) && q.quiesce_led(1, &sw, 3));
        assert!(*quiet.borrow(), "quiet again once every group quiesced");
    }

    /// The same race, with the group touched meanwhile: the leader quiesce
    /// must not turn a quiesced follower active behind the count's back.
    #[test]
    fn a_touched_leader_quiesce_leaves_a_quiesced_follower_counted() {
        let q = Quiet::new(1, Some(Duration::from_millis(300)));
        let sw = Switches::default();
        let quiet = q.all_quiet.subscribe();
        assert!(q.quiesce_followed(0, &sw, 2, 7, q.now_ns()));
        assert!(*quiet.borrow());
        q.slots[0].touched.store(true, Ordering::SeqCst);
        assert!(!q.quiesce_led(0, &sw, 6));
        assert_eq!(q.slots[0].state.load(Ordering::SeqCst), FOLLOWING);
        assert_eq!((awake(&q), *quiet.borrow()), (0, true));
        // its wake counts it awake once
        assert!(q.wake(0, &sw));
        assert!(!q.wake(0, &sw), "already awake");
        assert_eq!((awake(&q), *quiet.borrow()), (1, false));
        assert!(sw.ticking.load(Ordering::SeqCst));
        assert_eq!(
            sw.beats.load(Ordering::SeqCst),
            0,
            "a follower does not beat"
        );
    }

    /// A wake between the loop's read and its lock leaves an active group,
    /// which quiesces once: a second quiesce (of either kind) is refused.
    #[test]
    fn a_group_quiesces_once_whichever_quiesce_comes_second() {
        let q = Quiet::new(1, Some(Duration::from_millis(300)));
        let sw = Switches::default();
        assert!(q.quiesce_led(0, &sw, 4));
        assert!(!q.quiesce_led(0, &sw, 4));
        assert!(!q.quiesce_followed(0, &sw, 2, 4, q.now_ns()));
        assert_eq!(q.slots[0].led_spells.load(Ordering::SeqCst), 1);
        assert_eq!(awake(&q), 0);
        assert!(q.wake(0, &sw));
        assert_eq!(sw.beats.load(Ordering::SeqCst), 1, "a woken leader beats");
        assert_eq!(awake(&q), 1);
    }

    #[test]
    fn liveness_is_remembered_per_node() {
        let q = Quiet::new(1, None);
        assert!(!q.heard_within(2, Duration::from_secs(1)));
        lock(&q.heard).insert(2, q.now_ns());
        assert!(q.heard_within(2, Duration::from_secs(1)));
        assert!(!q.heard_within(3, Duration::from_secs(1)));
    }
}
