//! Running a shard's request on the shard's leader (here, or relayed to it)
//! with retries until the deadline, and the replicated write: a command
//! proposed through the shard's Raft log, stamped with the leader's clock.

use std::future::Future;
use std::time::Duration;

use admit_core::{Command, Output};
use futures_util::future::join_all;

use super::leader::Target;
use super::request::ReqInfo;
use super::retry::Retry;
use super::Routing;
use crate::app::{Reply, Stamped};
use crate::auth::audit;
use crate::error::{ApiError, RETRY_QUEUE_MS, RETRY_RAFT_MS};
use crate::wire::{self, unexpected, NodeReq, NodeResp};
use admit_raft::WriteError;

/// The shortest per-attempt timeout of a forwarded request (a healthy
/// leader under load answers well within it).
pub const MIN_ATTEMPT: Duration = Duration::from_secs(2);

impl Routing {
    /// Runs a request of `shard` on the shard's leader: `local` when this
    /// node leads it, else `remote` forwarded (see [`crate::routing`]).
    /// The entry node retries until the request's deadline after
    /// not-applied failures, and after unknown outcomes if `idempotent`.
    pub(crate) async fn on_leader<F, Fut>(
        &self,
        shard: u32,
        idempotent: bool,
        local: F,
        remote: NodeReq,
    ) -> Result<NodeResp, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<NodeResp, ApiError>>,
    {
        let info = ReqInfo::current();
        let mut retry = Retry::new(info);
        tracing::Span::current().record("shard", shard);
        loop {
            let r = match self.target(shard, retry.attempt()) {
                Target::Me => local().await,
                Target::Peer(to) if info.may_relay() => {
                    crate::telemetry::forwarded();
                    // One attempt waits a few leases at most: a frozen
                    // leader is replaced by then, and the retry (keyed or
                    // known-unapplied requests only) goes to the new one.
                    let attempt = info.within(self.attempt_timeout());
                    // boxed: a relayed call's state is kilobytes, and a
                    // send answered here would carry (and copy) it too
                    match Box::pin(self.peers.call(&to, &remote, attempt)).await {
                        Ok(env) => {
                            self.learn_leader(shard, env.served_by);
                            env.result
                        }
                        Err(e) => {
                            self.forget_leader(shard, to.id);
                            Err(e)
                        }
                    }
                }
                Target::Peer(to) => Err(ApiError::NotLeader {
                    leader_id: Some(to.id),
                    leader_addr: Some(to.addr),
                }),
                Target::Unknown => Err(ApiError::NotLeader {
                    leader_id: None,
                    leader_addr: None,
                }),
            };
            let worth = self.worth_retrying(shard, r.as_ref().err(), idempotent);
            if !worth || !info.retries() || !retry.again().await {
                return r;
            }
            tracing::debug!(shard, attempt = retry.attempt(), error = ?r.as_ref().err(), "retried on the shard leader");
        }
    }

    /// How long one forwarded attempt may take: two leases (the time a
    /// frozen leader takes to be replaced, with room), at least
    /// [`MIN_ATTEMPT`].
    pub(crate) fn attempt_timeout(&self) -> Duration {
        (self.raft.lease() * 2).max(MIN_ATTEMPT)
    }

    /// Proposes `cmd` to `shard` on its leader (here or forwarded), stamped
    /// with the leader's service clock; the core's answer once it is
    /// committed and applied.
    pub async fn write(&self, shard: u32, cmd: Command) -> Result<Output, ApiError> {
        let idempotent = wire::idempotent(&cmd);
        let remote = match audit::actor() {
            None => NodeReq::Write {
                shard,
                cmd: Box::new(cmd.clone()),
            },
            Some(by) => NodeReq::WriteFor {
                shard,
                cmd: Box::new(cmd.clone()),
                by,
            },
        };
        let local = || async {
            self.write_here(shard, cmd.clone())
                .await
                .map(NodeResp::Output)
        };
        match self.on_leader(shard, idempotent, local, remote).await? {
            NodeResp::Output(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    /// Applies `cmd` to every shard (portfolio-wide and global events).
    pub async fn write_all(&self, cmd: Command) -> Result<Vec<Output>, ApiError> {
        let writes = (0..self.shards()).map(|shard| self.write(shard, cmd.clone()));
        join_all(writes).await.into_iter().collect()
    }

    /// Proposes `cmd` to `shard` through this node's Raft group; the core's
    /// answer.
    pub async fn write_here(&self, shard: u32, cmd: Command) -> Result<Output, ApiError> {
        Ok(self.propose_here(shard, cmd).await?.out?)
    }

    /// Proposes `cmd` to `shard` through this node's Raft group, stamped with
    /// this node's clock. In a cluster the wait ends at the request's
    /// deadline (an isolated leader must not hold a request forever).
    pub async fn propose_here(&self, shard: u32, cmd: Command) -> Result<Reply, ApiError> {
        let at = self.now();
        // a clock too far ahead of the others' must not stamp (crate::skew)
        self.skew.check(at)?;
        // an audited change carries its caller into the log (issue 12)
        let by = audit::actor();
        let fut = self.raft.write(shard, Stamped { at, cmd, by });
        if !self.cluster_cfg {
            return fut.await.map_err(write_error);
        }
        tokio::time::timeout(ReqInfo::current().left(), fut)
            .await
            .map_err(|_| {
                ApiError::unavailable(
                    "the write did not commit within the deadline; outcome unknown, retry with the same idempotency key",
                    RETRY_RAFT_MS,
                )
            })?
            .map_err(write_error)
    }
}

/// A write's failure as the caller sees it. A full proposer queue
/// (overload) is RESOURCE_EXHAUSTED with a retry hint, counted as shed load
/// like the in-flight bound's refusals.
pub(crate) fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::Overloaded { queued } => {
            crate::telemetry::shed("proposal_queue");
            ApiError::ResourceExhausted {
                message: format!(
                    "overloaded: {queued} writes already wait for this shard's log; nothing was applied, retry later"
                ),
                retry_after_ms: RETRY_QUEUE_MS,
            }
        }
        other => ApiError::from(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11, item 6: a full proposer queue is RESOURCE_EXHAUSTED with a
    /// retry hint, not an unknown outcome.
    #[test]
    fn a_full_proposer_queue_is_resource_exhausted_with_a_hint() {
        let s = write_error(WriteError::Overloaded { queued: 8 }).into_status();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            s.metadata().get(crate::error::RETRY_AFTER_MS).unwrap(),
            &RETRY_QUEUE_MS.to_string()
        );
        assert!(
            s.message().contains("nothing was applied"),
            "{}",
            s.message()
        );
    }
}
