//! Sorting one send on the node that leads its shard: decided here and now
//! (a check that denies, an R8 token-bucket denial, the fast path, a replay)
//! or bound for the log with the rate cells it took.

use admit_core::rate::Taken;
use admit_core::{AdmitRequest, Decision, Reader, Reason, Ts};

use super::{unknown_number, Admission, Triage};
use crate::routing::directory::Route;
use crate::wire::Decided;

impl Admission {
    /// R8: takes the number's throughput cell and the pair's cell, or returns
    /// the denial. Unknown numbers take nothing (the core answers them).
    // the denial is the answer itself, moved out once; boxing it would add an
    // allocation to every rate-limited request
    #[allow(clippy::result_large_err)]
    fn take_rate(
        &self,
        reader: &Reader,
        req: &AdmitRequest,
        now: Ts,
    ) -> Result<Option<Taken>, Decision> {
        let Some((number_rate, pair_rate)) = reader.rates(&req.number) else {
            return Ok(None);
        };
        match self
            .rates
            .try_take(req.number, req.customer, number_rate, pair_rate, now)
        {
            Ok(t) => Ok(Some(t)),
            // the core's decision: it carries the scope's usage like any denial
            Err(denial) => Err(reader.rate_denial(&req.number, denial, now)),
        }
    }

    /// Gives the cells of a send that was not allowed back: a denied send
    /// uses nothing.
    pub(crate) fn settle(&self, taken: Option<Taken>, allowed: bool) {
        if !allowed {
            if let Some(t) = taken {
                self.rates.give_back(t);
            }
        }
    }

    /// Sorts one send: decided here and now (the fast path, an R8 denial, a
    /// replay), or bound for the log with the rate cells it took.
    ///
    /// R3.2 order: the checks that deny whatever the windows say (restriction,
    /// template, opt-out, holds) come before the R8 token buckets, so a send
    /// they deny takes no cell and reports their reason. The reader's answer is
    /// used as that hint even without a lease (then the log decides); it is
    /// the decision only with one. A keyed send is never answered from memory
    /// unless it replays a recorded decision: its first decision must be
    /// recorded under its key (R3.4), which only the log does. `after_slow`:
    /// an earlier item of the same batch for this pair went to the log, so
    /// this one must follow it there (as if by consecutive calls). `lease`:
    /// this node leads the route's shard with a lease, as checked just before
    /// (`RaftNode::is_leader_with_lease`).
    pub(crate) fn triage(
        &self,
        route: &Route,
        lease: bool,
        req: &AdmitRequest,
        now: Ts,
        after_slow: bool,
    ) -> Triage {
        let raft = &self.routing.raft;
        let Some(scope) = route.scope.clone() else {
            // not registered on any local shard: if this node leads every
            // shard with a lease, no shard holds it, so the core's answer is
            // known without a log entry
            let all = lease && (0..self.routing.shards()).all(|s| raft.is_leader_with_lease(s));
            return match all {
                true => Triage::Done(unknown_number(now)),
                false => Triage::Slow(None),
            };
        };
        let decided = |decision: Decision, replayed: bool| Decided {
            decision,
            scope: Some(scope.clone()),
            replayed,
        };
        let reader = self.routing.reader(route.shard);
        // never decide on a clock behind the engine's: after a failover to a
        // node whose clock is behind, a window closed in the log's time must
        // not read as open
        let now = now.max(reader.engine_now());
        let hint = reader.try_fast(req, now);
        if let Some(d) = hint.as_ref().filter(|d| d.replayed) {
            // a retry of a recorded decision gets it back without using rate cells
            return match lease {
                true => Triage::Done(decided(d.clone(), true)),
                false => Triage::Slow(None),
            };
        }
        let denied_before_rate = hint.as_ref().is_some_and(|d| {
            !d.allowed
                && !matches!(
                    d.reason,
                    Reason::OutsideServiceWindow | Reason::SpamCooldown
                )
        });
        let answer = hint.filter(|_| lease && !after_slow && req.idempotency_key.is_none());
        if denied_before_rate {
            return match answer {
                Some(d) => Triage::Done(decided(d, false)),
                None => Triage::Slow(None),
            };
        }
        let taken = match self.take_rate(&reader, req, now) {
            Ok(t) => t,
            Err(d) => return Triage::Done(decided(d, false)),
        };
        match answer {
            Some(d) => {
                self.settle(taken, d.allowed);
                tracing::trace!(number = %req.number, reason = d.reason.as_str(), "fast path");
                Triage::Done(decided(d, false))
            }
            None => Triage::Slow(taken),
        }
    }
}
