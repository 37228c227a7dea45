//! What a Raft message must hold before openraft sees it.
//!
//! openraft's core assumes what a peer that follows the protocol always
//! sends, and asserts it: a message that breaks those assumptions panics
//! the group's core (and with it the group on this node), or worse, is
//! obeyed: a vote request carrying a leader's vote that names the receiver
//! makes it leader with no election and no check of its log. A message that
//! decodes but that no such peer sends (a bug, random bytes, a forger who
//! holds the cluster's credentials) is refused here with INVALID_ARGUMENT,
//! on unary calls and on the node-pair stream alike.
//!
//! [`Who`] names the receiving node (no peer sends a message in its name:
//! a node never sends Raft messages to itself) and, when the peer port
//! authenticated it, the sending node ([`crate::PeerNode`]): a leader's or
//! candidate's vote must then be the sender's own. Without mutual TLS the
//! sender is unknown and any member may claim any vote.
//!
//! Functions of the message alone (a snapshot's bytes are decoded by the
//! App's own [`App::check_snapshot`]), except [`snapshot_install`], which
//! reads the group's committed log id after handing the group the
//! snapshot's vote ([`adopt_vote`]) with the group's inbound appends held
//! ([`Installs`]), so that the reading holds until the install.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};

use crate::sm::GroupRaft;
use crate::types::{SnapshotMetaT, VoteT, C};
use crate::App;

/// Who a message is for, and who it comes from when that is known.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Who {
    pub me: u64,
    pub sender: Option<u64>,
}

impl Who {
    /// A vote naming `node` as leader or candidate may come only from it
    /// (when the sender is known) and never names the receiver.
    fn speaks_for(self, node: u64, what: &str) -> Result<(), tonic::Status> {
        if node == self.me {
            return bad(what, "the vote names the receiving node");
        }
        match self.sender {
            Some(s) if s != node => bad(
                what,
                &format!("the vote names node {node}; the message comes from node {s}"),
            ),
            _ => Ok(()),
        }
    }
}

fn bad<T>(what: &str, why: &str) -> Result<T, tonic::Status> {
    Err(tonic::Status::invalid_argument(format!("{what}: {why}")))
}

/// A vote only an established leader sends: committed (granted by a
/// quorum), the sender's own, not in the receiver's name.
fn leaders<X: App>(vote: &VoteT<X>, who: Who, what: &str) -> Result<(), tonic::Status> {
    if !vote.is_committed() {
        return bad(what, "the vote is not a leader's (not committed)");
    }
    who.speaks_for(vote.leader_id().node_id, what)
}

/// An append: a leader's vote; entries that follow `prev_log_id` one index
/// after another, log ids that only grow, none from a leader after the
/// vote's.
pub(crate) fn append<X: App>(
    rpc: &AppendEntriesRequest<C<X>>,
    who: Who,
) -> Result<(), tonic::Status> {
    const WHAT: &str = "append entries";
    leaders::<X>(&rpc.vote, who, WHAT)?;
    let mut last = rpc.prev_log_id;
    for e in &rpc.entries {
        let id = e.log_id();
        let next = last.as_ref().map_or(0, |l| l.index + 1);
        if id.index != next || Some(&id) < last.as_ref() {
            return bad(
                WHAT,
                "entries do not follow prev_log_id one index after another",
            );
        }
        if id.committed_leader_id() > rpc.vote.leader_id() {
            return bad(WHAT, "an entry of a leader after the vote's");
        }
        last = Some(id);
    }
    Ok(())
}

/// A vote or pre-vote request: a candidate's vote (not committed: a leader
/// never asks for votes), the sender's own, for a candidate other than the
/// receiver, whose last log entry is from no leader after the candidate's.
pub(crate) fn vote<X: App>(rpc: &VoteRequest<C<X>>, who: Who) -> Result<(), tonic::Status> {
    const WHAT: &str = "vote request";
    if rpc.vote.is_committed() {
        return bad(WHAT, "a candidate's vote is never committed");
    }
    who.speaks_for(rpc.vote.leader_id().node_id, WHAT)?;
    if let Some(l) = &rpc.last_log_id {
        if l.committed_leader_id() > rpc.vote.leader_id() {
            return bad(WHAT, "the last log id is from a leader after the vote's");
        }
    }
    Ok(())
}

/// A snapshot: a leader's vote; a last log id from no leader after the
/// vote's; a membership from an entry the snapshot holds, with a voter.
pub(crate) fn snapshot<X: App>(
    vote: &VoteT<X>,
    meta: &SnapshotMetaT<X>,
    who: Who,
) -> Result<(), tonic::Status> {
    const WHAT: &str = "snapshot";
    leaders::<X>(vote, who, WHAT)?;
    if let Some(l) = &meta.last_log_id {
        if l.committed_leader_id() > vote.leader_id() {
            return bad(WHAT, "the last log id is from a leader after the vote's");
        }
    }
    if meta.last_membership.log_id() > &meta.last_log_id {
        return bad(
            WHAT,
            "the membership is from an entry after the snapshot's last",
        );
    }
    if meta
        .last_membership
        .membership()
        .voter_ids()
        .next()
        .is_none()
    {
        return bad(WHAT, "the membership has no voter");
    }
    Ok(())
}

/// Every check of a snapshot about to be installed in `raft`, whole or
/// assembled from pieces: its vote and metadata ([`snapshot`]), its place
/// against the committed log ([`snapshot_is_ahead`], read after
/// [`adopt_vote`]), its bytes ([`snapshot_data`], which hands them back).
/// The bytes come back with the group's append gate ([`GroupGate`]) held
/// exclusively: the caller keeps it until openraft answered the install.
pub(crate) async fn snapshot_install<X: App>(
    raft: &GroupRaft<X>,
    vote: &VoteT<X>,
    meta: &SnapshotMetaT<X>,
    data: Vec<u8>,
    who: Who,
    installs: &Installs,
    gate: &GroupGate,
) -> Result<(Vec<u8>, InstallGuard), tonic::Status> {
    snapshot::<X>(vote, meta, who)?;
    // the bytes first: decoding a large snapshot takes long, and appends
    // are held only from here on
    let data = snapshot_data::<X>(data).await?;
    let guard = gate.exclusive().await;
    adopt_vote(raft, vote).await?;
    snapshot_is_ahead(raft, meta).await?;
    installs.hold.pass().await;
    Ok((data, guard))
}

/// The snapshot's vote is handed to the group first, as an empty append
/// (a heartbeat's shape: no entries, nothing committed), before the
/// committed log is read for [`snapshot_is_ahead`].
///
/// Why: openraft asserts that a snapshot newer than the committed log ends
/// past its index, and the committed log grows while the bytes are checked.
/// Once the group holds the snapshot's vote, only that vote's leader can move
/// its committed log: a lower leader's appends are refused, and a higher
/// vote (a newer leader, or this node leading again) makes openraft refuse
/// the install before it looks at the log. That leader's own commits are in
/// its term, and a snapshot whose last entry is from a later leader than
/// its vote's is refused ([`snapshot`]), so no commit between the reading
/// and the install can make the snapshot contradict it. A real leader's
/// install loses nothing: the group takes its vote at the install anyway,
/// and an empty append from the group's own leader changes nothing.
///
/// One exception needs more: a committed vote forged in another node's
/// name (possible only without mutual TLS, where the vote must be the
/// sender's own) that reaches that node makes openraft there take it as
/// its own leadership, and its appends under that vote can carry commits
/// from its earlier term, at or past the snapshot's last index with a lower
/// log id. Every inbound append of the group waits while the install is
/// checked and installed ([`GroupGate`]), so none lands in between.
async fn adopt_vote<X: App>(raft: &GroupRaft<X>, vote: &VoteT<X>) -> Result<(), tonic::Status> {
    let heartbeat = AppendEntriesRequest::<C<X>> {
        vote: *vote,
        prev_log_id: None,
        leader_commit: None,
        entries: Vec::new(),
    };
    // a higher vote here answers "higher vote": the install is then refused
    // by openraft with that vote, which tells the sender
    raft.append_entries(heartbeat)
        .await
        .map(drop)
        .map_err(|e| tonic::Status::unavailable(e.to_string()))
}

/// Per group of a node, the gate of its inbound appends ([`GroupGate`]);
/// and the test switch that holds installs between their checks and
/// openraft.
pub(crate) struct Installs {
    gates: Vec<GroupGate>,
    /// Appends waiting behind an install now, all groups.
    waiting: Arc<AtomicUsize>,
    pub(crate) hold: InstallHold,
}

impl Installs {
    /// Gates for `groups` groups (the shards and the metadata group).
    pub(crate) fn new(groups: usize) -> Self {
        let waiting = Arc::new(AtomicUsize::new(0));
        Self {
            gates: (0..groups)
                .map(|_| GroupGate {
                    lock: Arc::default(),
                    waiting: waiting.clone(),
                })
                .collect(),
            waiting,
            hold: InstallHold::default(),
        }
    }

    /// The gate of `group`; `None` for a group this node does not have.
    pub(crate) fn gate(&self, group: u32) -> Option<&GroupGate> {
        self.gates.get(group as usize)
    }

    /// Appends waiting behind an install now.
    pub(crate) fn appends_waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// Inbound appends of one group pass while no snapshot install of it is
/// under way: each holds the gate shared from before openraft takes it
/// until openraft answered it, an install holds it exclusively from before
/// the snapshot's vote is adopted until openraft answered the install. A
/// waiting install keeps new appends out (tokio's lock is fair), so it
/// waits only for the appends openraft already has. Uncontended, passing
/// costs an append two atomic operations.
#[derive(Clone)]
pub(crate) struct GroupGate {
    lock: Arc<tokio::sync::RwLock<()>>,
    waiting: Arc<AtomicUsize>,
}

/// An append's pass through its group's gate.
pub(crate) type AppendPass = tokio::sync::OwnedRwLockReadGuard<()>;
/// An install's hold of its group's gate.
pub(crate) type InstallGuard = tokio::sync::OwnedRwLockWriteGuard<()>;

impl GroupGate {
    /// A pass at once, if no install holds or waits for the gate.
    pub(crate) fn try_pass(&self) -> Option<AppendPass> {
        self.lock.clone().try_read_owned().ok()
    }

    /// A pass, once no install holds or waits for the gate; counted in
    /// [`Installs::appends_waiting`] while it waits (a dropped wait too).
    pub(crate) async fn pass(&self) -> AppendPass {
        if let Some(p) = self.try_pass() {
            return p;
        }
        struct Counted<'a>(&'a AtomicUsize);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _counted = Counted(&self.waiting);
        self.lock.clone().read_owned().await
    }

    async fn exclusive(&self) -> InstallGuard {
        self.lock.clone().write_owned().await
    }
}

/// Test switch: while held, snapshot installs wait between their checks and
/// openraft, so a test can put a commit in that gap.
#[derive(Default)]
pub(crate) struct InstallHold {
    held: std::sync::atomic::AtomicBool,
    waiting: std::sync::atomic::AtomicUsize,
    released: tokio::sync::Notify,
}

impl InstallHold {
    pub(crate) fn set(&self, held: bool) {
        self.held.store(held, std::sync::atomic::Ordering::SeqCst);
        if !held {
            self.released.notify_waiters();
        }
    }

    /// Installs waiting now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn pass(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        if !self.held.load(SeqCst) {
            return;
        }
        self.waiting.fetch_add(1, SeqCst);
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !self.held.load(SeqCst) {
                break;
            }
            released.await;
        }
        self.waiting.fetch_sub(1, SeqCst);
    }
}

/// A snapshot newer than the group's committed log must end at a greater
/// index: a leader's snapshot ending at or before the committed index holds
/// that committed entry, so it is not newer (openraft ignores it). One that
/// claims otherwise contradicts committed entries, which openraft asserts
/// never happens.
///
/// Read after [`adopt_vote`], the committed log id holds until the install
/// as far as this check is concerned (see there).
pub(crate) async fn snapshot_is_ahead<X: App>(
    raft: &GroupRaft<X>,
    meta: &SnapshotMetaT<X>,
) -> Result<(), tonic::Status> {
    let Some(last) = meta.last_log_id else {
        return Ok(());
    };
    let committed = raft
        .with_raft_state(|st| st.local_committed().cloned())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    match committed {
        Some(c) if Some(last) > Some(c) && last.index <= c.index => bad(
            "snapshot",
            "newer than the committed log but not past its index",
        ),
        _ => Ok(()),
    }
}

/// A snapshot's bytes: what the group's [`App::restore`] takes
/// ([`App::check_snapshot`]); bytes it would refuse would stop the group.
/// Checking decodes them: above [`CHECK_INLINE`] bytes that runs on a
/// blocking thread, off the runtime's workers. The bytes come back.
pub(crate) async fn snapshot_data<X: App>(bytes: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let refused = |e: String| bad("snapshot", &format!("the data does not restore: {e}"));
    if bytes.len() <= CHECK_INLINE {
        return X::check_snapshot(&bytes).map(|()| bytes).or_else(refused);
    }
    let (r, bytes) = tokio::task::spawn_blocking(move || (X::check_snapshot(&bytes), bytes))
        .await
        .map_err(|e| tonic::Status::internal(format!("snapshot check: {e}")))?;
    r.map(|()| bytes).or_else(refused)
}

/// Snapshots up to this size are checked on the task that received them.
const CHECK_INLINE: usize = 1 << 20;

/// A leadership transfer: from the sender's leader vote, not the receiver's.
pub(crate) fn transfer<X: App>(
    rpc: &TransferLeaderRequest<C<X>>,
    who: Who,
) -> Result<(), tonic::Status> {
    leaders::<X>(rpc.from_leader(), who, "transfer leader")
}

#[cfg(test)]
mod tests {
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::impls::{BasicNode, Vote};
    use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
    use openraft::{Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership};

    use crate::cluster::Registry;
    use crate::types::C;

    /// The receiving node; the leader (or candidate) is node 1.
    const ME: u64 = 2;
    /// Received by `ME` from node 1, the sender known (mutual TLS).
    const WHO: super::Who = super::Who {
        me: ME,
        sender: Some(1),
    };

    fn at(term: u64, index: u64) -> LogId<LeaderId<u64, u64>> {
        LogId::new(LeaderId { term, node_id: 1 }, index)
    }

    fn refused(r: Result<(), tonic::Status>, name: &str) {
        let e = r.expect_err(name);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{name}");
        assert!(!e.message().is_empty(), "{name}");
    }

    /// Node 1's append at term 3 after entry 4 with 3 entries.
    fn leader_append() -> AppendEntriesRequest<C<Registry>> {
        AppendEntriesRequest {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(at(2, 4)),
            leader_commit: Some(at(2, 4)),
            entries: (5..=7)
                .map(|i| Entry {
                    log_id: at(3, i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
        }
    }

    /// An append no leader sends: a vote not committed or in the receiver's
    /// name, entries that skip an index or do not start right after
    /// `prev_log_id`, a log id that goes back a term, an entry from a leader
    /// after the vote's. A leader's own passes, with entries or without.
    #[test]
    fn appends_no_leader_sends_are_refused() {
        let check = |r: &AppendEntriesRequest<C<Registry>>| super::append::<Registry>(r, WHO);
        assert!(check(&leader_append()).is_ok());
        let mut heartbeat = leader_append();
        heartbeat.entries.clear();
        assert!(check(&heartbeat).is_ok());
        let mut uncommitted = leader_append();
        uncommitted.vote = Vote::new(3, 1);
        let mut in_my_name = leader_append();
        in_my_name.vote = Vote::new_committed(3, ME);
        let mut gap = leader_append();
        gap.entries.remove(1);
        let mut not_after_prev = leader_append();
        not_after_prev.prev_log_id = Some(at(2, 2));
        let mut back_a_term = leader_append();
        back_a_term.entries[2].log_id = at(1, 7);
        let mut after_the_vote = leader_append();
        after_the_vote.entries[2].log_id = at(4, 7);
        let mut later_node_same_term = leader_append();
        later_node_same_term.entries[2].log_id = LogId::new(
            LeaderId {
                term: 3,
                node_id: 3,
            },
            7,
        );
        for (name, r) in [
            ("uncommitted", uncommitted),
            ("in my name", in_my_name),
            ("gap", gap),
            ("not after prev", not_after_prev),
            ("back a term", back_a_term),
            ("after the vote", after_the_vote),
            ("a later leader of the same term", later_node_same_term),
        ] {
            refused(check(&r), name);
        }
    }

    /// A vote request no candidate sends: a leader's (committed) vote, one
    /// naming the receiver, a last log entry from after the candidate's
    /// term. A candidate's own passes, with or without a log.
    #[test]
    fn votes_no_candidate_asks_for_are_refused() {
        let check = |r: &VoteRequest<C<Registry>>| super::vote::<Registry>(r, WHO);
        let ask = |vote, last| VoteRequest::<C<Registry>> {
            vote,
            last_log_id: last,
            leadership_transfer: false,
        };
        assert!(check(&ask(Vote::new(5, 1), Some(at(4, 9)))).is_ok());
        assert!(check(&ask(Vote::new(1, 1), None)).is_ok());
        refused(
            check(&ask(Vote::new_committed(5, 1), Some(at(4, 9)))),
            "committed",
        );
        refused(check(&ask(Vote::new(5, ME), None)), "in my name");
        refused(
            check(&ask(Vote::new(5, 1), Some(at(6, 9)))),
            "log after the vote",
        );
    }

    /// A snapshot no leader sends: a vote not a leader's or in the
    /// receiver's name, a last entry from after the vote's leader, a
    /// membership from after the last entry or without a voter.
    #[test]
    fn snapshots_no_leader_sends_are_refused() {
        let check = |v: &Vote<LeaderId<u64, u64>>, m: &SnapshotMeta<_, _, _>| {
            super::snapshot::<Registry>(v, m, WHO)
        };
        let meta =
            |last: Option<LogId<_>>, members: Option<LogId<_>>, voters: Vec<u64>| SnapshotMeta {
                last_log_id: last,
                last_membership: StoredMembership::new(
                    members,
                    Membership::<u64, BasicNode>::new_with_defaults(
                        vec![voters.into_iter().collect()],
                        [],
                    ),
                ),
            };
        let leader = Vote::new_committed(3, 1);
        let good = meta(Some(at(3, 20)), Some(at(1, 2)), vec![1, 2, 3]);
        assert!(check(&leader, &good).is_ok());
        refused(check(&Vote::new(3, 1), &good), "uncommitted");
        refused(check(&Vote::new_committed(3, ME), &good), "in my name");
        refused(
            check(
                &leader,
                &meta(Some(at(4, 20)), Some(at(1, 2)), vec![1, 2, 3]),
            ),
            "last entry after the vote",
        );
        refused(
            check(
                &leader,
                &meta(Some(at(3, 20)), Some(at(3, 21)), vec![1, 2, 3]),
            ),
            "membership after the last entry",
        );
        refused(
            check(&leader, &meta(Some(at(3, 20)), Some(at(1, 2)), vec![])),
            "no voter",
        );
    }

    /// With the sender known, a leader's or candidate's vote must be its
    /// own; with it unknown (plain text), any member's passes.
    #[test]
    fn a_known_sender_speaks_only_for_itself() {
        let from_3 = super::Who {
            me: ME,
            sender: Some(3),
        };
        let unknown = super::Who {
            me: ME,
            sender: None,
        };
        // node 1's append and candidacy, sent by node 3
        let e = super::append::<Registry>(&leader_append(), from_3).expect_err("append");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("node 1") && e.message().contains("node 3"),
            "{e:?}"
        );
        let ask = VoteRequest::<C<Registry>> {
            vote: Vote::new(5, 1),
            last_log_id: None,
            leadership_transfer: false,
        };
        refused(super::vote::<Registry>(&ask, from_3), "vote for another");
        // the same, sender unknown: passes
        assert!(super::append::<Registry>(&leader_append(), unknown).is_ok());
        assert!(super::vote::<Registry>(&ask, unknown).is_ok());
        // node 3's own: passes
        let mut own = leader_append();
        own.vote = Vote::new_committed(3, 3);
        own.entries.clear();
        assert!(super::append::<Registry>(&own, from_3).is_ok());
    }

    /// A snapshot's bytes are refused when the App would not restore them,
    /// and handed back when it would, small ones checked in place and large
    /// ones (over `CHECK_INLINE`) on a blocking thread.
    #[tokio::test]
    async fn snapshot_bytes_the_app_would_not_restore_are_refused() {
        use crate::cluster::{NodeState, RegistryState};
        let mut big = RegistryState::default();
        for id in 0..40_000u64 {
            big.nodes.insert(
                id,
                (
                    format!("node-{id}.example.internal:50051"),
                    NodeState::Active,
                ),
            );
        }
        let big = postcard::to_allocvec(&big).unwrap();
        assert!(big.len() > super::CHECK_INLINE);
        let small = postcard::to_allocvec(&RegistryState::default()).unwrap();
        for good in [small, big.clone()] {
            let back = super::snapshot_data::<Registry>(good.clone())
                .await
                .unwrap();
            assert_eq!(back, good);
        }
        let mut cut = big;
        cut.truncate(super::CHECK_INLINE + 10);
        for (name, bad) in [("cut", cut), ("garbage", vec![0xff; 64])] {
            let e = super::snapshot_data::<Registry>(bad).await.expect_err(name);
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{name}");
            assert!(e.message().contains("does not restore"), "{name}: {e:?}");
        }
    }

    /// A transfer comes from a leader's vote, never the receiver's.
    #[test]
    fn transfers_come_from_a_leader() {
        let check = |from| {
            super::transfer::<Registry>(
                &TransferLeaderRequest::<C<Registry>>::new(from, 3, Some(at(3, 9))),
                WHO,
            )
        };
        assert!(check(Vote::new_committed(3, 1)).is_ok());
        refused(check(Vote::new(3, 1)), "uncommitted");
        refused(check(Vote::new_committed(3, ME)), "in my name");
    }
}
