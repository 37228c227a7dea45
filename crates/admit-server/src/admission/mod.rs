//! The admission path of a send: triage on the shard's leader (the checks
//! that deny, the R8 rate cells, the fast path; [`triage`]), else the
//! replicated path through the shard's log; batches ([`batch`]) keep each
//! pair's sends in order. On a node that does not lead the shard, the send is
//! carried to the leader ([`crate::routing`]).

use std::sync::Arc;

use admit_core::rate::{RateLimiter, Taken};
use admit_core::{AdmitRequest, Command, Decision, Output, Reason, Ts};

use crate::error::ApiError;
use crate::routing::directory::Resolved;
use crate::routing::Routing;
use crate::wire::{unexpected, Decided, NodeReq, NodeResp};

pub(crate) mod batch;
pub(crate) mod triage;

/// How a send is decided on this node.
pub(crate) enum Triage {
    Done(Decided),
    /// Through the log, with the R8 cells taken for it (given back if denied).
    Slow(Option<Taken>),
}

/// The core's answer for an unregistered number.
pub(crate) fn unknown_number(now: Ts) -> Decided {
    Decided {
        decision: Decision {
            decided_at: now,
            ..Decision::deny(Reason::UnknownNumber, None)
        },
        scope: None,
        replayed: false,
    }
}

/// A send's answer and the entry node's time it is shown at.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub decided: Decided,
    pub now: Ts,
}

/// Decides sends: the leader-local R8 token buckets and the way through
/// routing to each send's shard leader.
#[derive(Debug)]
pub(crate) struct Admission {
    routing: Arc<Routing>,
    /// R8 token buckets of the shards this node leads.
    pub rates: RateLimiter,
}

impl Admission {
    pub fn new(routing: Arc<Routing>) -> Admission {
        Admission {
            routing,
            rates: RateLimiter::default(),
        }
    }

    /// Decides one send on its shard's leader.
    pub async fn admit(&self, req: AdmitRequest) -> Result<Admitted, ApiError> {
        let routing = &self.routing;
        if !routing.clustered() {
            return self.admit_here(req).await;
        }
        let now = routing.now();
        let shard = match routing.resolve(&req.number).await? {
            Resolved::Known(scope) => routing.shard_of(&scope),
            Resolved::Unknown => {
                return Ok(Admitted {
                    decided: unknown_number(now),
                    now,
                })
            }
        };
        let idempotent = req.idempotency_key.is_some();
        let remote = NodeReq::Admit {
            reqs: vec![req.clone()],
        };
        let local = || async {
            let a = self.admit_here(req.clone()).await?;
            Ok(NodeResp::Admitted(vec![Ok(a.decided)]))
        };
        match routing.on_leader(shard, idempotent, local, remote).await? {
            NodeResp::Admitted(mut v) if v.len() == 1 => {
                let decided = v
                    .pop()
                    .unwrap_or_else(|| Err(ApiError::Internal("no answer".into())))?;
                Ok(Admitted { decided, now })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Decides one send on this node: the fast path or an R8 denial, else the
    /// log.
    pub async fn admit_here(&self, req: AdmitRequest) -> Result<Admitted, ApiError> {
        let now = self.routing.now();
        let route = self.routing.route(&req.number);
        let lease = self.routing.raft.is_leader_with_lease(route.shard);
        let taken = match self.triage(&route, lease, &req, now, false) {
            Triage::Done(decided) => return Ok(Admitted { decided, now }),
            Triage::Slow(taken) => taken,
        };
        // boxed: the write path's state is kilobytes; the fast path above
        // would otherwise carry (and copy) it on every send
        let reply = Box::pin(self.routing.propose_here(route.shard, Command::Admit(req)))
            .await
            .and_then(|r| Ok((r.out?, r.replayed)));
        match reply {
            Ok((Output::Decision(decision), replayed)) => {
                self.settle(taken, decision.allowed);
                Ok(Admitted {
                    decided: Decided {
                        decision,
                        scope: route.scope,
                        replayed,
                    },
                    now,
                })
            }
            Ok((other, _)) => {
                self.settle(taken, false);
                Err(ApiError::Internal(format!("unexpected output {other:?}")))
            }
            Err(e) => {
                self.settle(taken, false);
                Err(e)
            }
        }
    }
}
