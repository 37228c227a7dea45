//! The node registry from the outside: `add_node` / `remove_node`, callable
//! on any node, forwarded to the metadata group's leader.

use std::time::Duration;

// tokio's clock, so that a simulation with paused time drives these too
use tokio::time::Instant;

use openraft::async_runtime::WatchReceiver;

use super::RaftNode;
use crate::cluster::{meta_write_local, MetaCmd, MetaFwd, NodeState};
use crate::pb::RaftRpcKind;
use crate::{AdminError, App};

impl<A: App> RaftNode<A> {
    /// Register node `id` reachable at `addr` (Raft transport) as Active; the
    /// reconcile loops then move replicas onto it (learner, catch-up by log or
    /// snapshot, joint-consensus membership change). Callable on any node:
    /// forwarded to the metadata group's leader. Refused for an id that was
    /// removed (ids are never reused). Start the new node with
    /// `bootstrap = false` before calling this.
    pub async fn add_node(&self, id: u64, addr: &str) -> Result<(), AdminError> {
        self.meta_write(MetaCmd::Add {
            id,
            addr: addr.to_string(),
        })
        .await
    }

    /// Record the public API address of node `id` (registered, not removed)
    /// in the registry: the address callers are pointed to, while Raft and
    /// node-to-node calls use the peer address. Callable on any node.
    pub async fn set_api_addr(&self, id: u64, api: &str) -> Result<(), AdminError> {
        self.meta_write(MetaCmd::SetApi(std::collections::BTreeMap::from([(
            id,
            api.to_string(),
        )])))
        .await
    }

    /// Mark node `id` Leaving: placement stops counting it, the reconcile
    /// loops move its replicas to other nodes (each replacement becomes a
    /// voter before the old replica is removed), and once no group has it as
    /// a member it is marked Removed (see [`Self::nodes`]); then it can be
    /// stopped. Callable on any node. Refused for the last active node.
    pub async fn remove_node(&self, id: u64) -> Result<(), AdminError> {
        self.meta_write(MetaCmd::Leave { id }).await
    }

    pub(super) async fn meta_write(&self, cmd: MetaCmd) -> Result<(), AdminError> {
        let cmd = crate::cluster::attributed(cmd);
        self.inner.stir(self.shards() as usize);
        let deadline = Instant::now() + Duration::from_secs(15);
        let me = self.node_id();
        let mut hint: Option<(u64, String)> = None;
        let mut round = 0usize;
        // hints followed without a pause since the last one
        let mut hops = 0u32;
        let mut halt = self.inner.halt.subscribe();
        loop {
            if *halt.borrow_and_update() {
                return Err(AdminError::Raft(format!(
                    "node {me} is stopping: metadata write abandoned"
                )));
            }
            if Instant::now() > deadline {
                return Err(AdminError::Raft(
                    "metadata group: no reachable leader".into(),
                ));
            }
            let outcome = if self.inner.meta.metrics().borrow_watched().current_leader == Some(me) {
                Some(meta_write_local(&self.inner.meta, cmd.clone()).await)
            } else {
                let target = hint.take().or_else(|| self.meta_leader_hint()).or_else(|| {
                    // No leader known here: try every known contact in turn.
                    let mut c: Vec<(u64, String)> = self
                        .inner
                        .registry
                        .read()
                        .nodes
                        .into_iter()
                        .filter(|(_, (_, st))| *st == NodeState::Active)
                        .map(|(id, (a, _))| (id, a))
                        .chain(self.inner.config.peers.clone())
                        .filter(|(id, _)| *id != me)
                        .collect();
                    c.sort();
                    c.dedup();
                    (!c.is_empty()).then(|| c[round % c.len()].clone())
                });
                round += 1;
                match target {
                    None => None,
                    Some((id, addr)) => {
                        let _ = self.inner.router.set_addr(id, &addr);
                        self.inner
                            .router
                            .call::<MetaCmd, MetaFwd>(
                                id,
                                self.shards(),
                                RaftRpcKind::MetaWrite,
                                &cmd,
                                Duration::from_secs(5),
                            )
                            .await
                            .ok()
                    }
                }
            };
            match outcome {
                Some(MetaFwd::Done(None)) => return Ok(()),
                Some(MetaFwd::Done(Some(e))) if !e.starts_with("unavailable") => {
                    return Err(AdminError::Raft(e))
                }
                Some(MetaFwd::NotLeader(h)) if h.as_ref().is_some_and(|(id, _)| *id != me) => {
                    hint = h;
                    // Two nodes with stale hints can point at each other
                    // until the election settles: follow a hint at once,
                    // but not a chain of them, or this loop spins (found
                    // by the simulation, tests/sim.rs, where such calls
                    // take no time).
                    hops += 1;
                    if hops <= 2 {
                        continue;
                    }
                }
                _ => {}
            }
            hops = 0;
            let pause = Duration::from_millis(if hint.is_some() { 20 } else { 100 });
            // a stop ends the pause (checked at the top of the loop)
            let _ = tokio::time::timeout(pause, halt.changed()).await;
        }
    }

    fn meta_leader_hint(&self) -> Option<(u64, String)> {
        let m = self.inner.meta.metrics();
        let m = m.borrow_watched();
        let l = m.current_leader.filter(|l| *l != self.node_id())?;
        let addr = m.membership_config.membership().get_node(&l)?.addr.clone();
        Some((l, addr))
    }
}
