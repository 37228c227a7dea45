//! Many sends at once (AdmitBatch): decided in request order, each on its
//! shard's leader; the sends that need the log go there in one `write_many`
//! per shard, and once a pair's send goes to the log, the pair's later sends
//! follow it there.

use std::collections::{BTreeMap, HashSet};

use admit_core::rate::Taken;
use admit_core::{AdmitRequest, Command, NumberId, Output, ScopeKey, Ts, WaId};
use futures_util::future::join_all;

use super::{unknown_number, Admission, Triage};
use crate::app::Stamped;
use crate::error::ApiError;
use crate::routing::directory::{Resolved, Route};
use crate::routing::leader::Target;
use crate::routing::request::ReqInfo;
use crate::routing::retry::Retry;
use crate::wire::{unexpected, Decided, NodeReq, NodeResp};

/// A batch's answers, in request order, and the entry node's time they are
/// shown at.
#[derive(Debug)]
pub(crate) struct BatchAdmitted {
    pub results: Vec<Result<Decided, ApiError>>,
    pub now: Ts,
}

/// A send of the batch bound for its shard's log.
struct Slow {
    index: usize,
    taken: Option<Taken>,
    scope: Option<ScopeKey>,
}

/// A send of the batch still to be decided on its shard's leader.
struct Pending {
    index: usize,
    req: AdmitRequest,
    shard: u32,
}

/// Each item's answer, once it has one.
fn finish(results: Vec<Option<Result<Decided, ApiError>>>) -> Vec<Result<Decided, ApiError>> {
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ApiError::Internal("item not decided".into()))))
        .collect()
}

impl Admission {
    /// Decides many sends in order on this node: fast ones at once, the
    /// others through the log, one `write_many` per shard (items of one shard
    /// keep their order; once an item of a pair goes to the log, the pair's
    /// later items follow it there).
    pub async fn admit_many_here(
        &self,
        items: Vec<Result<AdmitRequest, ApiError>>,
    ) -> BatchAdmitted {
        let now = self.routing.now();
        let mut results: Vec<Option<Result<Decided, ApiError>>> = Vec::with_capacity(items.len());
        // each shard's sends to write, and their requests (moved into the
        // commands, not copied)
        let mut slow: BTreeMap<u32, (Vec<Slow>, Vec<AdmitRequest>)> = BTreeMap::new();
        let mut slow_pairs: HashSet<(NumberId, WaId), ahash::RandomState> =
            HashSet::with_capacity_and_hasher(items.len(), ahash::RandomState::new());
        let total = items.len();
        // One route per run of items of one number (a campaign's batch is one
        // number; a number's scope, once known, never changes) and one lease
        // check per shard for every LEASE_ITEMS items: the loop never awaits,
        // so a check is as fresh for the items after it as a single send's
        // is for its read, give or take the few microseconds each item takes
        // (a leadership transfer's fence is seen within that many items).
        const LEASE_ITEMS: usize = 32;
        let mut last: Option<(NumberId, Route)> = None;
        let mut leases: Vec<Option<bool>> = vec![None; self.routing.shards() as usize];
        for (index, item) in items.into_iter().enumerate() {
            if index % LEASE_ITEMS == 0 {
                leases.fill(None);
            }
            let req = match item {
                Ok(r) => r,
                Err(e) => {
                    results.push(Some(Err(e)));
                    continue;
                }
            };
            let route = match &last {
                Some((number, route)) if *number == req.number => route.clone(),
                _ => {
                    let route = self.routing.route(&req.number);
                    last = Some((req.number, route.clone()));
                    route
                }
            };
            let lease = match leases.get_mut(route.shard as usize) {
                Some(Some(lease)) => *lease,
                Some(slot) => *slot.insert(self.routing.raft.is_leader_with_lease(route.shard)),
                None => self.routing.raft.is_leader_with_lease(route.shard),
            };
            let pair = (req.number, req.customer);
            let after_slow = !slow_pairs.is_empty() && slow_pairs.contains(&pair);
            match self.triage(&route, lease, &req, now, after_slow) {
                Triage::Done(d) => results.push(Some(Ok(d))),
                Triage::Slow(taken) => {
                    results.push(None);
                    slow_pairs.insert(pair);
                    // room for the rest of the batch, up to 32: a campaign's
                    // batch is all one shard's
                    let (group, reqs) = slow.entry(route.shard).or_insert_with(|| {
                        let room = (total - index).min(32);
                        (Vec::with_capacity(room), Vec::with_capacity(room))
                    });
                    group.push(Slow {
                        index,
                        taken,
                        scope: route.scope,
                    });
                    reqs.push(req);
                }
            }
        }
        let writes = slow.into_iter().map(|(shard, (group, reqs))| async move {
            let at = self.routing.now();
            // a clock too far ahead of the others' must not stamp (crate::skew)
            if let Err(e) = self.routing.skew.check(at) {
                return (group, Err(e));
            }
            let cmds = reqs
                .into_iter()
                .map(|req| Stamped {
                    at,
                    cmd: Command::Admit(req),
                    by: None,
                })
                .collect();
            let res = self.routing.raft.write_many(shard, cmds).await;
            (group, res.map_err(crate::routing::forward::write_error))
        });
        for (group, res) in join_all(writes).await {
            match res {
                Ok(outs) => {
                    let mut outs = outs.into_iter();
                    for s in group {
                        let r = match outs.next() {
                            Some(reply) => match reply.out {
                                Ok(Output::Decision(decision)) => Ok(Decided {
                                    decision,
                                    scope: s.scope,
                                    replayed: reply.replayed,
                                }),
                                Ok(other) => {
                                    Err(ApiError::Internal(format!("unexpected output {other:?}")))
                                }
                                Err(e) => Err(ApiError::from(e)),
                            },
                            None => Err(ApiError::Internal("missing reply".into())),
                        };
                        self.settle(s.taken, matches!(&r, Ok(d) if d.decision.allowed));
                        results[s.index] = Some(r);
                    }
                }
                Err(e) => {
                    for s in group {
                        self.settle(s.taken, false);
                        results[s.index] = Some(Err(e.clone()));
                    }
                }
            }
        }
        BatchAdmitted {
            results: finish(results),
            now,
        }
    }

    /// Decides many sends: each item on its shard's leader (one call per
    /// leader node, items of one shard in request order).
    pub async fn admit_many(&self, items: Vec<Result<AdmitRequest, ApiError>>) -> BatchAdmitted {
        let routing = &self.routing;
        if !routing.clustered() {
            return self.admit_many_here(items).await;
        }
        let now = routing.now();
        let info = ReqInfo::current();
        let mut results: Vec<Option<Result<Decided, ApiError>>> = vec![None; items.len()];
        let mut pending: Vec<Pending> = Vec::new();
        let mut shards: BTreeMap<NumberId, Option<u32>> = BTreeMap::new();
        for (index, item) in items.into_iter().enumerate() {
            let req = match item {
                Ok(r) => r,
                Err(e) => {
                    results[index] = Some(Err(e));
                    continue;
                }
            };
            let shard = match shards.get(&req.number) {
                Some(s) => *s,
                None => {
                    let s = match routing.resolve(&req.number).await {
                        Ok(Resolved::Known(scope)) => Some(routing.shard_of(&scope)),
                        Ok(Resolved::Unknown) => None,
                        Err(e) => {
                            results[index] = Some(Err(e));
                            continue;
                        }
                    };
                    shards.insert(req.number, s);
                    s
                }
            };
            match shard {
                Some(shard) => pending.push(Pending { index, req, shard }),
                None => results[index] = Some(Ok(unknown_number(now))),
            }
        }
        let mut retry = Retry::new(info);
        while !pending.is_empty() {
            // group by where each item runs
            let mut here: Vec<Pending> = Vec::new();
            let mut away: BTreeMap<(u64, String), Vec<Pending>> = BTreeMap::new();
            for p in std::mem::take(&mut pending) {
                match routing.target(p.shard, retry.attempt()) {
                    Target::Me => here.push(p),
                    Target::Peer(to) if info.may_relay() => {
                        away.entry((to.id, to.addr)).or_default().push(p)
                    }
                    Target::Peer(to) => {
                        results[p.index] = Some(Err(ApiError::NotLeader {
                            leader_id: Some(to.id),
                            leader_addr: Some(to.addr),
                        }));
                        pending.push(p);
                    }
                    Target::Unknown => {
                        results[p.index] = Some(Err(ApiError::NotLeader {
                            leader_id: None,
                            leader_addr: None,
                        }));
                        pending.push(p);
                    }
                }
            }
            let local = async {
                if here.is_empty() {
                    return Vec::new();
                }
                let reqs = here.iter().map(|p| Ok(p.req.clone())).collect();
                let out = self.admit_many_here(reqs).await.results;
                here.into_iter().zip(out).collect::<Vec<_>>()
            };
            let remote = join_all(away.into_iter().map(|((id, addr), group)| async move {
                let to = crate::wire::NodeRef { id, addr };
                let req = NodeReq::Admit {
                    reqs: group.iter().map(|p| p.req.clone()).collect(),
                };
                let out = match routing.peers.call(&to, &req, info).await {
                    Ok(env) => match env.result {
                        Ok(NodeResp::Admitted(v)) if v.len() == group.len() => v,
                        Ok(other) => vec![Err(unexpected(other)); group.len()],
                        Err(e) => vec![Err(e); group.len()],
                    },
                    Err(e) => vec![Err(e); group.len()],
                };
                group.into_iter().zip(out).collect::<Vec<_>>()
            }));
            let (local, remote) = tokio::join!(local, remote);
            for (p, r) in local.into_iter().chain(remote.into_iter().flatten()) {
                let (index, keyed) = (p.index, p.req.idempotency_key.is_some());
                if routing.worth_retrying(p.shard, r.as_ref().err(), keyed) {
                    pending.push(p);
                }
                results[index] = Some(r);
            }
            if pending.is_empty() || !info.retries() || !retry.again().await {
                break;
            }
            pending.sort_by_key(|p| p.index);
        }
        BatchAdmitted {
            results: finish(results),
            now,
        }
    }
}
