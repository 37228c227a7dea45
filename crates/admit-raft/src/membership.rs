//! The membership decision of the reconcile loop, as a pure function.
//!
//! [`decide`] looks at what the leader of one group knows (its membership,
//! its followers' progress, the registry, the target placement) and returns
//! what to do next: nothing, wait, or a short list of [`Command`]s that the
//! runtime (`node/reconcile.rs`) carries out through openraft. It does no
//! I/O and reads no clock (the runtime passes which followers acknowledged
//! within the lease), so every case is a unit test below.
//!
//! One step at a time, and never below the target's safety:
//!
//! 1. a missing replica first joins as a **learner** and catches up;
//! 2. caught-up learners are promoted while every old voter stays, so a
//!    replacement is a voter before anything is removed;
//! 3. voters outside the target are removed; if the leader itself must go,
//!    it hands leadership to a target voter first.
//!
//! At the target: stray learners go, wanted learners join, and leadership
//! moves to the preferred leader. Members unknown to the registry are left
//! alone (they are managed by hand).

use std::collections::{BTreeMap, BTreeSet};

/// A learner within this many entries of the leader counts as caught up.
pub(crate) const CATCH_UP_SLACK: u64 = 64;

/// What the leader of one group observes, and what it should reach.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    /// This node.
    pub(crate) me: u64,
    /// This node leads the group.
    pub(crate) leading: bool,
    /// The latest membership is not committed yet (a change is under way).
    pub(crate) change_committing: bool,
    /// The membership is a joint configuration.
    pub(crate) joint: bool,
    /// Voters (both configurations while joint).
    pub(crate) voters: BTreeSet<u64>,
    /// Learners.
    pub(crate) learners: BTreeSet<u64>,
    /// The leader's last log index.
    pub(crate) last_log_index: u64,
    /// Last index known replicated to each member (absent: unknown).
    pub(crate) matched: BTreeMap<u64, u64>,
    /// Members that acknowledged the leader within the lease.
    pub(crate) fresh: BTreeSet<u64>,
    /// Node ids known to the registry, in any state.
    pub(crate) registered: BTreeSet<u64>,
    /// Known Raft addresses (registry first, else the transport's).
    pub(crate) addrs: BTreeMap<u64, String>,
    /// The leader-transfer cooldown of this group is over.
    pub(crate) may_transfer: bool,
    /// Target voters from placement, preferred leader first.
    pub(crate) desired: Vec<u64>,
    /// Nodes that should hold a learner replica.
    pub(crate) want_learners: BTreeSet<u64>,
    /// Move leadership to the preferred leader.
    pub(crate) balance_leaders: bool,
}

/// The outcome of one reconcile round for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Nothing to do: at the target, or not this node's group to change.
    Idle,
    /// Something is under way; look again next round.
    Wait(Waiting),
    /// Carry these out in order; look again next round.
    Act(Vec<Command>),
}

/// Why a round waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waiting {
    /// A membership change is being committed.
    ChangeCommitting,
    /// New replicas are catching up (or have no known address yet).
    CatchingUp,
    /// This leader must leave, but no target voter can take over yet.
    NoSuccessor,
}

/// A membership or leadership command for the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Remove these learners.
    RemoveLearners(BTreeSet<u64>),
    /// Add `node` at `addr` as a learner (without waiting for it).
    AddLearner { node: u64, addr: String },
    /// Make this the voter set: the old voters plus the caught-up new ones.
    Promote(BTreeSet<u64>),
    /// Make this the voter set: the target, without the voters outside it.
    RemoveVoters(BTreeSet<u64>),
    /// Hand leadership to `to` (the runtime starts the cooldown).
    TransferLeader { to: u64, why: Transfer },
}

/// Why leadership moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transfer {
    /// To the shard's preferred leader.
    Balance,
    /// This leader is outside the target.
    Leaving,
}

impl Facts {
    fn caught_up(&self, n: u64) -> bool {
        n == self.me
            || self
                .matched
                .get(&n)
                .is_some_and(|i| i + CATCH_UP_SLACK >= self.last_log_index)
    }

    fn fresh(&self, n: u64) -> bool {
        n == self.me || self.fresh.contains(&n)
    }

    fn add_learner(&self, node: u64) -> Option<Command> {
        self.addrs.get(&node).map(|addr| Command::AddLearner {
            node,
            addr: addr.clone(),
        })
    }
}

/// The next step of one group towards `facts.desired` (see the module docs).
pub(crate) fn decide(f: &Facts) -> Decision {
    if !f.leading || f.desired.is_empty() {
        return Decision::Idle;
    }
    if f.change_committing {
        return Decision::Wait(Waiting::ChangeCommitting);
    }
    // Voters unknown to the registry stay: they are managed by hand.
    let mut target: BTreeSet<u64> = f.desired.iter().copied().collect();
    target.extend(f.voters.iter().filter(|v| !f.registered.contains(v)));

    if !f.joint && f.voters == target {
        return at_target(f);
    }

    let missing: Vec<u64> = target.difference(&f.voters).copied().collect();
    if !missing.is_empty() {
        // 1. Every new replica first joins as a learner and catches up
        //    (openraft streams the log, or a snapshot if it was purged).
        let adds: Vec<Command> = missing
            .iter()
            .filter(|x| !f.learners.contains(x))
            .filter_map(|x| f.add_learner(*x))
            .collect();
        if !adds.is_empty() {
            return Decision::Act(adds);
        }
        if missing
            .iter()
            .any(|x| !f.learners.contains(x) || !f.caught_up(*x))
        {
            return Decision::Wait(Waiting::CatchingUp);
        }
        // 2. Promote them (joint consensus inside openraft) while every old
        //    voter stays: replacements are voters before anything is removed.
        let all = f.voters.union(&target).copied().collect();
        return Decision::Act(vec![Command::Promote(all)]);
    }
    // 3. Drop the voters outside the target (joint consensus again). If this
    //    node is one of them, it hands leadership to a target voter first.
    if !target.contains(&f.me) {
        let to = f
            .desired
            .iter()
            .copied()
            .find(|n| f.voters.contains(n) && f.caught_up(*n) && f.fresh(*n));
        return match to {
            Some(to) if f.may_transfer => Decision::Act(vec![Command::TransferLeader {
                to,
                why: Transfer::Leaving,
            }]),
            _ => Decision::Wait(Waiting::NoSuccessor),
        };
    }
    Decision::Act(vec![Command::RemoveVoters(target)])
}

/// The voters are the target: tidy the learners, then balance leadership.
fn at_target(f: &Facts) -> Decision {
    let stray: BTreeSet<u64> = f
        .learners
        .iter()
        .filter(|l| f.registered.contains(l) && !f.want_learners.contains(l))
        .copied()
        .collect();
    if !stray.is_empty() {
        return Decision::Act(vec![Command::RemoveLearners(stray)]);
    }
    let adds: Vec<Command> = f
        .want_learners
        .iter()
        .filter(|l| !f.voters.contains(l) && !f.learners.contains(l))
        .filter_map(|l| f.add_learner(*l))
        .collect();
    if !adds.is_empty() {
        return Decision::Act(adds);
    }
    let preferred = f.desired[0];
    if f.balance_leaders
        && preferred != f.me
        && f.voters.contains(&preferred)
        && f.caught_up(preferred)
        && f.fresh(preferred)
        && f.may_transfer
    {
        return Decision::Act(vec![Command::TransferLeader {
            to: preferred,
            why: Transfer::Balance,
        }]);
    }
    Decision::Idle
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    /// Node 1 leads a settled group {1, 2, 3} whose target it is, with every
    /// follower caught up and fresh; nodes 1-5 are registered with addresses.
    fn settled() -> Facts {
        Facts {
            me: 1,
            leading: true,
            voters: set(&[1, 2, 3]),
            last_log_index: 100,
            matched: BTreeMap::from([(2, 100), (3, 100)]),
            fresh: set(&[2, 3]),
            registered: set(&[1, 2, 3, 4, 5]),
            addrs: (1..=5).map(|n| (n, format!("h:{n}"))).collect(),
            may_transfer: true,
            desired: vec![1, 2, 3],
            balance_leaders: true,
            ..Facts::default()
        }
    }

    fn add(node: u64) -> Command {
        Command::AddLearner {
            node,
            addr: format!("h:{node}"),
        }
    }

    #[test]
    fn at_target_nothing_to_do() {
        assert_eq!(decide(&settled()), Decision::Idle);
    }

    #[test]
    fn only_the_leader_acts_and_only_with_a_target() {
        let mut f = settled();
        f.desired = vec![4, 5, 6];
        f.leading = false;
        assert_eq!(decide(&f), Decision::Idle);
        let mut f = settled();
        f.desired.clear();
        assert_eq!(decide(&f), Decision::Idle);
    }

    #[test]
    fn waits_while_a_change_commits() {
        let mut f = settled();
        f.desired = vec![1, 2, 4];
        f.change_committing = true;
        assert_eq!(decide(&f), Decision::Wait(Waiting::ChangeCommitting));
    }

    #[test]
    fn a_new_replica_first_joins_as_learner() {
        let mut f = settled();
        f.desired = vec![1, 2, 4];
        assert_eq!(decide(&f), Decision::Act(vec![add(4)]));
        // without an address it can only wait
        f.addrs.remove(&4);
        assert_eq!(decide(&f), Decision::Wait(Waiting::CatchingUp));
    }

    #[test]
    fn a_learner_is_promoted_once_caught_up_with_every_old_voter_kept() {
        let mut f = settled();
        f.desired = vec![1, 2, 4];
        f.learners = set(&[4]);
        // unknown progress, then one entry beyond the slack: wait
        assert_eq!(decide(&f), Decision::Wait(Waiting::CatchingUp));
        f.matched.insert(4, 100 - CATCH_UP_SLACK - 1);
        assert_eq!(decide(&f), Decision::Wait(Waiting::CatchingUp));
        // within the slack: promoted, node 3 still a voter
        f.matched.insert(4, 100 - CATCH_UP_SLACK);
        assert_eq!(
            decide(&f),
            Decision::Act(vec![Command::Promote(set(&[1, 2, 3, 4]))])
        );
    }

    #[test]
    fn promotion_waits_for_every_new_replica() {
        let mut f = settled();
        f.desired = vec![1, 4, 5];
        f.learners = set(&[4, 5]);
        f.matched.insert(4, 100);
        assert_eq!(decide(&f), Decision::Wait(Waiting::CatchingUp));
        f.matched.insert(5, 90);
        assert_eq!(
            decide(&f),
            Decision::Act(vec![Command::Promote(set(&[1, 2, 3, 4, 5]))])
        );
    }

    #[test]
    fn voters_outside_the_target_are_removed_after_promotion() {
        let mut f = settled();
        f.voters = set(&[1, 2, 3, 4]);
        f.desired = vec![1, 2, 4];
        assert_eq!(
            decide(&f),
            Decision::Act(vec![Command::RemoveVoters(set(&[1, 2, 4]))])
        );
    }

    #[test]
    fn a_joint_config_at_the_target_is_settled_by_a_change() {
        let mut f = settled();
        f.joint = true;
        assert_eq!(
            decide(&f),
            Decision::Act(vec![Command::RemoveVoters(set(&[1, 2, 3]))])
        );
    }

    #[test]
    fn unregistered_voters_and_learners_are_left_alone() {
        let mut f = settled();
        f.voters = set(&[1, 2, 3, 9]);
        f.learners = set(&[8]);
        f.matched.insert(9, 100);
        f.fresh.insert(9);
        assert_eq!(decide(&f), Decision::Idle);
    }

    #[test]
    fn a_leaving_leader_hands_over_first() {
        let mut f = settled();
        f.voters = set(&[1, 2, 3, 4]);
        f.matched.insert(4, 100);
        f.fresh.insert(4);
        f.desired = vec![4, 2, 3];
        let to = |to| {
            Decision::Act(vec![Command::TransferLeader {
                to,
                why: Transfer::Leaving,
            }])
        };
        assert_eq!(decide(&f), to(4));
        // the first target voter that is caught up and fresh
        f.fresh.remove(&4);
        assert_eq!(decide(&f), to(2));
        f.matched.insert(2, 0);
        assert_eq!(decide(&f), to(3));
        // nobody can take over, or the cooldown runs: wait
        f.fresh.clear();
        assert_eq!(decide(&f), Decision::Wait(Waiting::NoSuccessor));
        f.fresh = set(&[2, 3, 4]);
        f.may_transfer = false;
        assert_eq!(decide(&f), Decision::Wait(Waiting::NoSuccessor));
    }

    #[test]
    fn at_target_stray_learners_go_and_wanted_ones_join() {
        let mut f = settled();
        f.learners = set(&[4, 8]);
        f.want_learners = set(&[5]);
        // 4 is registered and unwanted; 8 is unknown to the registry
        assert_eq!(
            decide(&f),
            Decision::Act(vec![Command::RemoveLearners(set(&[4]))])
        );
        f.learners = set(&[8]);
        assert_eq!(decide(&f), Decision::Act(vec![add(5)]));
        // a wanted learner without an address does not hold up the rest
        f.addrs.remove(&5);
        assert_eq!(decide(&f), Decision::Idle);
    }

    #[test]
    fn leadership_moves_to_the_preferred_leader() {
        let mut f = settled();
        f.desired = vec![2, 1, 3];
        let balance = Decision::Act(vec![Command::TransferLeader {
            to: 2,
            why: Transfer::Balance,
        }]);
        assert_eq!(decide(&f), balance);
        // each condition on its own keeps the leadership here
        let blockers: [fn(&mut Facts); 4] = [
            |f| f.balance_leaders = false,
            |f| f.may_transfer = false,
            |f| {
                f.fresh.remove(&2);
            },
            |f| {
                f.matched.insert(2, 100 - CATCH_UP_SLACK - 1);
            },
        ];
        for block in blockers {
            let mut g = f.clone();
            block(&mut g);
            assert_eq!(decide(&g), Decision::Idle, "{g:?}");
        }
    }
}
