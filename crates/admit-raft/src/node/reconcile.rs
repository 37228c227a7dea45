//! The reconcile loop, the runtime half of [`crate::membership`]: every
//! `reconcile_interval` it reads the facts of each group this node leads,
//! asks [`decide`] what to do, and carries the commands out through
//! openraft. The metadata leader also seeds the registry and marks drained
//! nodes `Removed`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

// tokio's clock, so that a simulation with paused time drives these too
use tokio::time::Instant;

use openraft::async_runtime::WatchReceiver;
use openraft::impls::BasicNode;
use openraft::Instant as _;
use openraft::{ChangeMembers, ServerState};

use super::{RaftNode, ServerHandle, META_KEY};
use crate::cluster::{meta_write_local, MetaCmd, NodeState, RegistryState};
use crate::membership::{decide, Command, Decision, Facts, Transfer};
use crate::placement::{placement_table, rendezvous};
use crate::sm::GroupRaft;
use crate::App;

/// A node that saw no metadata leader for this many leases hands the
/// shards it leads over ([`RaftNode::registry_may_be_stale`]): several
/// elections' worth, so a metadata election or a short cut does not.
const STALE_REGISTRY_LEASES: u32 = 8;

/// How long one membership command may take before the round moves on.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

impl<A: App> RaftNode<A> {
    pub(super) fn spawn_reconciler(&self) {
        let every = self.inner.config.reconcile_interval;
        if every.is_zero() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // when this node last saw a leader of the metadata group
            let mut meta_seen = Instant::now();
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tokio::time::sleep(every) => {}
                }
                let Some(inner) = weak.upgrade() else { break };
                let node = RaftNode { inner };
                node.inner
                    .quiet
                    .reconcile_passes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = node.reconcile_once(&mut meta_seen) => {}
                }
            }
        });
        *self
            .inner
            .reconciler
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(ServerHandle { stop, task });
    }

    /// One pass of the reconcile loop.
    async fn reconcile_once(&self, meta_seen: &mut Instant) {
        if self.registry_may_be_stale(meta_seen) {
            // its targets cannot be trusted: another voter with a current
            // registry should lead (and move the replicas it must)
            let me = self.node_id();
            for (g, raft) in self.inner.groups.iter().enumerate() {
                if raft.metrics().borrow_watched().current_leader != Some(me) {
                    continue;
                }
                // a quiesced group wakes: the hand-off needs a voter's
                // fresh acknowledgement
                self.inner.stir(g);
                let timeout = self.inner.config.handoff_timeout;
                let fence = || self.fence_transfer(g as u32);
                if let Some(done) =
                    super::handoff::handoff_group(raft, me, self.inner.lease, timeout, fence).await
                {
                    tracing::warn!(
                        shard = g,
                        done,
                        "no metadata leader seen for a while: this node's registry may be stale, so it hands the shard's leadership over"
                    );
                }
            }
            return;
        }
        let reg = self.inner.registry.read();
        for (id, (addr, st)) in &reg.nodes {
            if *st != NodeState::Removed && *id != self.node_id() {
                let _ = self.inner.router.set_addr(*id, addr);
            }
        }
        let me = self.node_id();
        let replicas = self.inner.config.replicas;
        if self.inner.meta.metrics().borrow_watched().current_leader == Some(me) {
            if !reg.seeded {
                self.inner.stir(self.shards() as usize);
                let peers = if self.inner.config.peers.is_empty() {
                    BTreeMap::from([(me, self.inner.config.advertise_addr.clone())])
                } else {
                    self.inner.config.peers.clone()
                };
                let _ = meta_write_local(&self.inner.meta, MetaCmd::Seed(peers)).await;
                // the API addresses of the initial nodes, in their own entry
                let mut apis = self.inner.config.api_addrs.clone();
                apis.insert(me, self.inner.config.api_addr.clone());
                apis.retain(|_, a| !a.is_empty());
                let _ = meta_write_local(&self.inner.meta, MetaCmd::SetApi(apis)).await;
                return;
            }
            let active = reg.active();
            let voters = rendezvous(META_KEY, &active, replicas);
            let learners: BTreeSet<u64> = active
                .iter()
                .filter(|n| !voters.contains(n))
                .copied()
                .collect();
            let gid = self.shards();
            let facts = self.facts(&self.inner.meta, gid, &voters, &learners, &reg);
            self.reconcile_group(&self.inner.meta, gid, facts).await;
            for x in reg.with_state(NodeState::Leaving) {
                if self.holds_no_replica(x, &reg).await {
                    self.inner.stir(self.shards() as usize);
                    let r =
                        meta_write_local(&self.inner.meta, MetaCmd::MarkRemoved { id: x }).await;
                    tracing::info!(node = x, outcome = ?r, "leaving node holds no replica: removed");
                }
            }
        }
        if !reg.seeded || reg.active().is_empty() {
            return;
        }
        let table = placement_table(self.shards(), &reg.active(), replicas);
        let none = BTreeSet::new();
        let steps = self
            .inner
            .groups
            .iter()
            .zip(table.iter())
            .enumerate()
            .filter(|(_, (raft, _))| raft.metrics().borrow_watched().current_leader == Some(me))
            .map(|(i, (raft, target))| {
                let facts = self.facts(raft, i as u32, target, &none, &reg);
                self.reconcile_group(raft, i as u32, facts)
            });
        futures_util::future::join_all(steps).await;
    }

    /// Whether this node has seen no leader of the metadata group for
    /// [`STALE_REGISTRY_LEASES`] leases (`meta_seen` is when it last did).
    ///
    /// Why: a node can be dropped from the metadata group before it learned
    /// the registry entries that led to it (its appends held while the
    /// group changed). It then never learns it is leaving, while it may
    /// lead shards whose other voters follow it: its targets, from the old
    /// registry, keep its replicas where they are, and no one else may move
    /// them (found by the simulation, seed 11197: a node being moved out led
    /// a shard for good). Such a node keeps campaigning in a metadata group
    /// that no longer has it, so it sees no leader there.
    fn registry_may_be_stale(&self, meta_seen: &mut Instant) -> bool {
        let m = self.inner.meta.metrics().borrow_watched().clone();
        let alone = m
            .membership_config
            .membership()
            .voter_ids()
            .all(|n| n == self.node_id());
        if m.current_leader.is_some() || alone {
            *meta_seen = Instant::now();
            return false;
        }
        meta_seen.elapsed() >= self.inner.lease * STALE_REGISTRY_LEASES
    }

    /// Whether no group has `x` as voter or learner, according to each
    /// group's leader (every group must have a reachable leader).
    async fn holds_no_replica(&self, x: u64, reg: &RegistryState) -> bool {
        let best = self.gather(reg).await;
        best.iter().all(|v| {
            v.as_ref().is_some_and(|i| {
                i.is_leader_view() && !i.voters.contains(&x) && !i.learners.contains(&x)
            })
        })
    }

    /// Move a group this node leads one step towards its target: decide
    /// from its `facts`, carry out.
    async fn reconcile_group<X: App>(
        &self,
        raft: &GroupRaft<X>,
        gid: u32,
        facts: Facts,
    ) -> Decision {
        let decision = decide(&facts);
        if decision != Decision::Idle {
            // a quiesced group wakes for the step (and its acknowledgements)
            self.inner.stir(gid as usize);
        }
        if let Decision::Act(cmds) = &decision {
            for cmd in cmds {
                self.carry_out(raft, gid, cmd.clone()).await;
            }
        }
        decision
    }

    /// What the leader of `raft` knows now, for [`decide`], with the target
    /// `desired` (preferred leader first) and `want_learners`. The clock is
    /// read here: `fresh` holds the members that acknowledged within the
    /// lease.
    fn facts<X: App>(
        &self,
        raft: &GroupRaft<X>,
        gid: u32,
        desired: &[u64],
        want_learners: &BTreeSet<u64>,
        reg: &RegistryState,
    ) -> Facts {
        let me = self.node_id();
        let m = raft.metrics().borrow_watched().clone();
        let mem = m.membership_config.membership();
        let lease = self.inner.lease;
        let matched = m
            .replication
            .iter()
            .flatten()
            .filter_map(|(n, l)| l.as_ref().map(|l| (*n, l.index)))
            .collect();
        let mut fresh: BTreeSet<u64> = m
            .heartbeat
            .iter()
            .flatten()
            .filter(|(_, t)| t.is_some_and(|t| t.into_inner().elapsed() < lease))
            .map(|(n, _)| *n)
            .collect();
        if self.inner.quiet.leads_quiesced(gid as usize) {
            // no heartbeats while quiesced: a member whose node said it is
            // alive within the lease counts (a step wakes the group first)
            fresh.extend(
                mem.voter_ids()
                    .chain(mem.learner_ids())
                    .filter(|n| self.inner.quiet.heard_within(*n, lease)),
            );
        }
        let addrs = desired
            .iter()
            .chain(want_learners)
            .filter_map(|n| {
                reg.addr(*n)
                    .map(str::to_string)
                    .or_else(|| self.inner.router.addr(*n))
                    .map(|a| (*n, a))
            })
            .collect();
        Facts {
            me,
            leading: m.state == ServerState::Leader && m.current_leader == Some(me),
            change_committing: m.membership_config.log_id()
                != m.committed_membership_config.log_id(),
            joint: mem.get_joint_config().len() > 1,
            voters: mem.voter_ids().collect(),
            learners: mem.learner_ids().collect(),
            last_log_index: m.last_log_index.unwrap_or(0),
            matched,
            fresh,
            registered: reg.nodes.keys().copied().collect(),
            addrs,
            may_transfer: self.transfer_cooldown_over(gid),
            desired: desired.to_vec(),
            want_learners: want_learners.clone(),
            balance_leaders: self.inner.config.balance_leaders,
        }
    }

    /// Carry out one command of [`decide`] on group `gid`.
    async fn carry_out<X: App>(&self, raft: &GroupRaft<X>, gid: u32, cmd: Command) {
        match cmd {
            Command::RemoveLearners(stray) => {
                tracing::info!(group = gid, ?stray, "removing learners");
                let r = tokio::time::timeout(
                    OP_TIMEOUT,
                    raft.change_membership(ChangeMembers::RemoveNodes(stray), false),
                )
                .await;
                log_op(gid, "remove learners", r);
            }
            Command::AddLearner { node, addr } => {
                tracing::info!(group = gid, node, "adding learner");
                let r = tokio::time::timeout(
                    OP_TIMEOUT,
                    raft.add_learner(node, BasicNode::new(addr), false),
                )
                .await;
                log_op(gid, "add learner", r);
            }
            Command::Promote(voters) => self.replace_voters(raft, gid, voters, "promote").await,
            Command::RemoveVoters(voters) => {
                self.replace_voters(raft, gid, voters, "remove voters")
                    .await;
            }
            Command::TransferLeader { to, why } => {
                match why {
                    Transfer::Balance => tracing::debug!(group = gid, to, "leader balance"),
                    Transfer::Leaving => {
                        tracing::info!(group = gid, to, "handing leadership to a remaining voter");
                    }
                }
                self.note_transfer(gid);
                self.fence_transfer(gid);
                let _ = raft.trigger().transfer_leader(to).await;
            }
        }
    }

    /// Make `voters` the voter set of `raft` (joint consensus inside openraft).
    async fn replace_voters<X: App>(
        &self,
        raft: &GroupRaft<X>,
        gid: u32,
        voters: BTreeSet<u64>,
        what: &str,
    ) {
        tracing::info!(group = gid, to = ?voters, "{what}");
        let r = tokio::time::timeout(
            OP_TIMEOUT,
            raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), false),
        )
        .await;
        log_op(gid, what, r);
    }

    /// No leadership transfer of group `gid` within the cooldown (4 leases).
    fn transfer_cooldown_over(&self, gid: u32) -> bool {
        let t = self
            .inner
            .transfers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        t.get(&gid)
            .is_none_or(|at| at.elapsed() >= self.inner.lease * 4)
    }

    fn note_transfer(&self, gid: u32) {
        self.inner
            .transfers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(gid, Instant::now());
    }
}

fn log_op<T, E: std::fmt::Display>(
    gid: u32,
    what: &str,
    r: Result<Result<T, E>, tokio::time::error::Elapsed>,
) {
    match r {
        Ok(Ok(_)) => tracing::info!(group = gid, "{what}: done"),
        Ok(Err(e)) => tracing::info!(group = gid, error = %e, "{what}: failed"),
        Err(_) => tracing::info!(group = gid, "{what}: timed out"),
    }
}
