//! Batched proposals: one task per group turns the commands that callers
//! submit concurrently into few, large log entries.
//!
//! Every entry costs the same fixed work whatever it holds: a message to the
//! Raft core, an append (one journal op and memtable insert), a replication
//! message per follower, a metrics update and an apply call. A group therefore
//! keeps at most `inflight` entries of its own proposals in flight; while they
//! are on their way to disk (and to the followers), new commands queue here
//! and leave together as the next entry. Under light load an entry holds one
//! command and nothing waits; under heavy load entries grow and the cost per
//! command falls, which is what lets throughput rise with concurrency.
//!
//! Commands of one submission ([`RaftNode::write_many`](crate::RaftNode::write_many))
//! always go into the same entry, in order, so they commit or fail together.
//! Entries are handed to openraft in the order they are formed, so commands
//! of one caller that waits for each answer keep their order too.
//!
//! Under overload the queue is bounded ([`BatchConfig::queue`]): a
//! submission beyond it fails at once with [`WriteError::Overloaded`]
//! (nothing queued). A submission whose caller stopped waiting (its timeout
//! or deadline passed, or the request was dropped) while it queued is not
//! proposed: nobody would read its answer, and its work would only delay
//! the callers still waiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResult;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::sm::GroupRaft;
use crate::types::{CallbackResponder, CmdData, C};
use crate::{App, WriteError};

type Reply<A> = Result<Vec<<A as App>::Response>, WriteError>;

/// Commands submitted together, and where their responses go.
struct Unit<A: App> {
    cmds: Vec<A::Command>,
    tx: oneshot::Sender<Reply<A>>,
    /// When it was submitted (its wait for an entry is a metric).
    at: Instant,
}

/// The submission side of one group's proposer.
pub(crate) struct Proposer<A: App> {
    tx: mpsc::Sender<Unit<A>>,
    queue: usize,
}

/// How proposals are batched.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchConfig {
    /// Commands per entry at most (a single larger submission still goes
    /// alone, whole).
    pub(crate) max_commands: usize,
    /// Entries of this group's proposals in flight at once.
    pub(crate) inflight: usize,
    /// Submissions waiting at most.
    pub(crate) queue: usize,
}

impl<A: App> Proposer<A> {
    /// Start the proposer task of `raft` (it ends when the proposer is dropped).
    pub(crate) fn spawn(node_id: u64, raft: GroupRaft<A>, cfg: BatchConfig) -> Self {
        let queue = cfg.queue.max(1);
        let (tx, rx) = mpsc::channel(queue);
        tokio::spawn(run(node_id, raft, rx, cfg));
        Self { tx, queue }
    }

    /// Propose `cmds` as part of one entry; their responses in order once the
    /// entry is committed and applied here.
    pub(crate) async fn propose(
        &self,
        cmds: Vec<A::Command>,
        timeout: Option<Duration>,
    ) -> Reply<A> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .try_send(Unit {
                cmds,
                tx,
                at: Instant::now(),
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => WriteError::Overloaded { queued: self.queue },
                mpsc::error::TrySendError::Closed(_) => {
                    WriteError::Unavailable("the node is shutting down".into())
                }
            })?;
        let closed = || WriteError::Unavailable("the proposal was dropped; outcome unknown".into());
        match timeout {
            None => rx.await.map_err(|_| closed())?,
            Some(t) => tokio::time::timeout(t, rx)
                .await
                .map_err(|_| {
                    WriteError::Unavailable(format!("write timed out after {t:?}; outcome unknown"))
                })?
                .map_err(|_| closed())?,
        }
    }
}

async fn run<A: App>(
    node_id: u64,
    raft: GroupRaft<A>,
    mut rx: mpsc::Receiver<Unit<A>>,
    cfg: BatchConfig,
) {
    let slots = Arc::new(Semaphore::new(cfg.inflight.max(1)));
    while let Some(first) = rx.recv().await {
        // wait for a free slot first: commands that arrive meanwhile join
        // this entry
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // let the tasks that are ready run first: under load they are the
        // callers about to submit, and their commands join this entry; when
        // nothing else is ready this returns at once
        tokio::task::yield_now().await;
        let mut units = vec![first];
        let mut n = units[0].cmds.len();
        while n < cfg.max_commands {
            match rx.try_recv() {
                Ok(u) => {
                    n += u.cmds.len();
                    units.push(u);
                }
                Err(_) => break,
            }
        }
        // callers that gave up while they queued: nothing to propose for them
        units.retain(|u| !u.tx.is_closed());
        if units.is_empty() {
            continue;
        }
        let mut cmds = Vec::with_capacity(n);
        let mut waiters = Vec::with_capacity(units.len());
        let formed = Instant::now();
        for u in units {
            // docs/metrics.md: where a write waits, before its entry and in it
            metrics::histogram!("admit_raft_proposal_wait_seconds")
                .record(formed.saturating_duration_since(u.at).as_secs_f64());
            waiters.push((u.cmds.len(), u.tx));
            cmds.extend(u.cmds);
        }
        metrics::histogram!("admit_raft_commands_per_entry").record(cmds.len() as f64);
        let responder = CallbackResponder::new(move |res: ClientWriteResult<C<A>>| {
            metrics::histogram!("admit_raft_entry_round_seconds")
                .record(formed.elapsed().as_secs_f64());
            drop(slot);
            let res = match res {
                Ok(r) => Ok(r.data.0),
                Err(e) => Err(map_write_err::<A>(node_id, RaftError::APIError(e))),
            };
            deliver::<A>(res, waiters);
        });
        if let Err(fatal) = raft
            .client_write_ff(CmdData::new(cmds), Some(responder))
            .await
        {
            // the responder was dropped unanswered: its waiters see the
            // closed channel as "outcome unknown"
            tracing::warn!(error = %fatal, "group stopped; proposal not submitted");
        }
    }
}

/// Hands each submission its share of the entry's responses.
fn deliver<A: App>(
    res: Result<Vec<A::Response>, WriteError>,
    waiters: Vec<(usize, oneshot::Sender<Reply<A>>)>,
) {
    match res {
        Ok(all) => {
            let mut all = all.into_iter();
            for (n, tx) in waiters {
                let mine: Vec<_> = all.by_ref().take(n).collect();
                let r = if mine.len() == n {
                    Ok(mine)
                } else {
                    Err(WriteError::Unavailable(
                        "the entry's responses are incomplete".into(),
                    ))
                };
                let _ = tx.send(r);
            }
        }
        Err(e) => {
            for (_, tx) in waiters {
                let _ = tx.send(Err(e.clone()));
            }
        }
    }
}

/// openraft's write error, as the node reports it.
pub(crate) fn map_write_err<A: App>(
    node: u64,
    e: RaftError<C<A>, ClientWriteError<C<A>>>,
) -> WriteError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            if f.leader_id.is_none() || f.leader_id == Some(node) {
                WriteError::NoLeader
            } else {
                WriteError::ForwardToLeader {
                    leader_id: f.leader_id,
                    leader_addr: f.leader_node.map(|n| n.addr),
                }
            }
        }
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => WriteError::Discarded {
            leader_id: f.leader_id,
        },
        RaftError::APIError(e) => WriteError::Unavailable(e.to_string()),
        RaftError::Fatal(f) => WriteError::Unavailable(f.to_string()),
    }
}
