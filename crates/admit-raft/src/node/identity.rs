//! Cluster identity and the admission of a node whose data dir is new.
//!
//! A data dir gets a random *incarnation* when it is created. A node
//! registers `(id, incarnation)` in the registry (`MetaCmd::Joined`); the
//! first registration also fixes the cluster id, which the transport stamps
//! on every Raft message and checks on every arrival. A data dir that was
//! wiped comes back with a new incarnation: `start` asks the peers first
//! and fails with the remedy when one of them knows the node by another
//! incarnation (by the registry, or by the incarnation the node's answers
//! carried before: `pipe::Incarnations`; so it never votes with an empty
//! log, which could elect a replica that lacks a committed entry), or uses
//! other Raft timeouts (the
//! lease assumes that every node uses the same). If no peer answers, the
//! node takes no Raft message and asks again until one does; if none could
//! tell, the registry refuses the registration later and the node then
//! refuses every Raft message from that moment on. Not done: holding a new
//! dir out of the groups *until* it is registered (a first version did,
//! and slowed the formation of new clusters to the point of failing tests;
//! see docs/design.md).
//!
//! Imports the node's facade, the registry types and the transport's
//! request kinds only.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::{Inner, RaftNode};
use crate::cluster::{Identity, MetaCmd, NodeState, LOST_DIR, REMOVED};
use crate::journal::{io_err, Journal, Ks, Mutation};
use crate::pb::RaftRpcKind;
use crate::store::{decode, encode};
use crate::{AdminError, App, StartError};

const INCARNATION_KEY: &[u8] = b"admit-incarnation";
const REGISTERED_KEY: &[u8] = b"admit-registered";

/// What this data dir says about its identity.
pub(super) struct DirIdentity {
    /// Drawn when the dir was created.
    pub(super) incarnation: u64,
    /// The registry accepted this incarnation (the cluster id it gave).
    pub(super) registered: Option<u64>,
}

/// Read (or, in a new data dir, create) the incarnation and the
/// registration mark.
pub(super) async fn load(journal: &Journal) -> Result<DirIdentity, StartError> {
    let get = |k: &[u8]| -> Result<Option<u64>, StartError> {
        journal
            .meta
            .get(k)
            .map_err(|e| StartError::Storage(io_err(e)))?
            .map(|b| decode::<u64>(&b).map_err(StartError::Storage))
            .transpose()
    };
    let registered = get(REGISTERED_KEY)?;
    let incarnation = match get(INCARNATION_KEY)? {
        Some(i) => i,
        None => {
            let i = random_u64();
            let bytes = encode(&i).map_err(StartError::Storage)?;
            journal
                .submit_wait(vec![Mutation::Put(
                    Ks::Meta,
                    INCARNATION_KEY.to_vec(),
                    bytes,
                )])
                .await
                .map_err(StartError::Storage)?;
            i
        }
    };
    Ok(DirIdentity {
        incarnation,
        registered,
    })
}

/// A random non-zero u64 from the std hasher's OS-seeded keys (no
/// cryptographic strength needed: it only tells data dirs apart).
fn random_u64() -> u64 {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    RandomState::new().hash_one((t, std::process::id())).max(1)
}

/// Which Raft messages this node accepts yet.
#[derive(Debug, Default)]
pub(super) struct Gate {
    meta_open: AtomicBool,
    shards_open: AtomicBool,
    /// The registry accepted this node's data dir.
    registered: AtomicBool,
    /// Why the registry refused this node (it then stays closed).
    refused: Mutex<Option<String>>,
}

impl Gate {
    /// Every group open; `registered`: the registry accepted this dir.
    pub(super) fn open_all(registered: bool) -> Self {
        let g = Self::default();
        g.open();
        g.registered.store(registered, Ordering::Release);
        g
    }

    fn open(&self) {
        self.meta_open.store(true, Ordering::Release);
        self.shards_open.store(true, Ordering::Release);
    }

    fn close(&self) {
        self.meta_open.store(false, Ordering::Release);
        self.shards_open.store(false, Ordering::Release);
    }
}

/// Where this node's registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Not yet accepted by the registry (the node takes part meanwhile).
    Pending,
    /// Accepted: the node takes part in every group.
    Done,
    /// Refused: this node's data dir is not the one it registered with. It
    /// refuses every Raft message from then on; the message says how to
    /// bring the node back.
    Refused(String),
}

impl<A: App> Inner<A> {
    pub(super) fn admit(&self, group: u32, cluster: u64) -> Result<(), tonic::Status> {
        let mine = self.registry.cluster.load(Ordering::Acquire);
        if cluster != 0 && mine != 0 && cluster != mine {
            return Err(tonic::Status::failed_precondition(format!(
                "raft message for cluster {cluster:016x}; node {} is in cluster {mine:016x}",
                self.config.node_id
            )));
        }
        let open = if group == self.config.shards {
            &self.gate.meta_open
        } else {
            &self.gate.shards_open
        };
        if open.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(tonic::Status::unavailable(format!(
            "node {} is not registered in the cluster yet",
            self.config.node_id
        )))
    }

    pub(super) fn identity_for(&self, asker: u64) -> Identity {
        let s = self.registry.read();
        Identity {
            cluster: s.cluster,
            // the registry's, else the one the asker answered this node
            // with (a node that lost its dir before it registered)
            asker_incarnation: s
                .joined
                .get(&asker)
                .copied()
                .or_else(|| self.router.incarnations().seen(asker)),
            timing_ms: self.config.timing_ms(),
            asker_removed: s
                .nodes
                .get(&asker)
                .is_some_and(|(_, st)| *st == NodeState::Removed),
        }
    }
}

/// What the peers said.
struct Probe {
    /// At least one peer answered.
    answered: bool,
    /// A peer knows this node id by another incarnation.
    lost: bool,
    /// A peer that uses other timeouts: (id, its heartbeat, min, max in ms).
    other_timing: Option<(u64, [u64; 3])>,
    /// A peer whose registry says this id was removed.
    removed_by: Option<u64>,
}

impl<A: App> RaftNode<A> {
    /// Where this node's registration stands.
    pub fn registration(&self) -> Registration {
        let g = &self.inner.gate;
        if let Some(r) = g.refused.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Registration::Refused(r);
        }
        if g.registered.load(Ordering::Acquire) {
            Registration::Done
        } else {
            Registration::Pending
        }
    }

    /// Ask every other peer what it knows of this node (in parallel, one
    /// second each).
    async fn probe(&self) -> Probe {
        let me = self.node_id();
        let asks = self
            .inner
            .config
            .peers
            .keys()
            .filter(|id| **id != me)
            .map(|id| async move {
                let r = self
                    .inner
                    .router
                    .call::<u64, Identity>(
                        *id,
                        self.shards(),
                        RaftRpcKind::Identity,
                        &me,
                        Duration::from_secs(1),
                    )
                    .await;
                r.ok().map(|a| (*id, a))
            });
        let answers: Vec<(u64, Identity)> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        let mine = self.inner.incarnation;
        let timing = self.inner.config.timing_ms();
        Probe {
            answered: !answers.is_empty(),
            lost: answers
                .iter()
                .any(|(_, a)| a.asker_incarnation.is_some_and(|i| i != mine)),
            other_timing: answers
                .iter()
                .find(|(_, a)| a.timing_ms != timing)
                .map(|(id, a)| (*id, a.timing_ms)),
            removed_by: answers
                .iter()
                .find(|(_, a)| a.asker_removed)
                .map(|(id, _)| *id),
        }
    }

    fn lost_message(&self) -> String {
        let id = self.node_id();
        format!(
            "{LOST_DIR}: node {id} is known to its peers with another data dir (this one, {}, \
             is new); its log was lost, so it must not vote again under id {id}. Remove it \
             (admitctl remove-node {id}) and start this data dir with a new node id and --join",
            self.inner.config.data_dir.display()
        )
    }

    fn refuse(&self, why: String) {
        tracing::error!(node = self.node_id(), "{why}");
        self.inner.gate.close();
        *self
            .inner
            .gate
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    /// At start, for a node with peers: fail at once if a reachable peer
    /// uses other timeouts, or (`registered` false) knows this id by another
    /// data dir; else a new dir registers in the background. A new dir that
    /// no peer answered stays closed and asks again until one does: opened
    /// at once, a wiped dir under its old id took appends before its
    /// refusal, and a leader's openraft core panicked on the log reversion
    /// ("follower log reversion is not allowed"; seed 1002 of tests/sim.rs),
    /// leaving its shard without a leader.
    pub(super) async fn check_peers(&self, registered: bool) -> Result<(), StartError> {
        let p = self.probe().await;
        if let Some((peer, [hb, min, max])) = p.other_timing {
            let [my_hb, my_min, my_max] = self.inner.config.timing_ms();
            return Err(StartError::Config(format!(
                "heartbeat/election_timeout: this node uses {my_hb} ms and {my_min}-{my_max} ms, \
                 peer {peer} uses {hb} ms and {min}-{max} ms; every node of a cluster must use \
                 the same (the leader lease assumes it): stop them all to change the timeouts"
            )));
        }
        // a removed node restarted on its kept disk would rejoin its old
        // groups with a stale log and a stale registry: refused, as a lost
        // dir is (when no peer answers, nothing tells it yet)
        if let Some(peer) = p.removed_by {
            let id = self.node_id();
            let why = format!(
                "{REMOVED}: node {id} was removed from the cluster (peer {peer}'s registry says \
                 so) and its id is never used again; this data dir ({}) must not serve. To \
                 bring the machine back, start it with a new node id on an empty data dir and \
                 --join",
                self.inner.config.data_dir.display()
            );
            self.refuse(why.clone());
            return Err(StartError::Config(why));
        }
        if registered {
            return Ok(());
        }
        if p.lost {
            let why = self.lost_message();
            self.refuse(why.clone());
            return Err(StartError::Config(why));
        }
        let mut open = p.answered;
        if open {
            self.inner.gate.open();
        }
        let weak = std::sync::Arc::downgrade(&self.inner);
        let mut halt = self.inner.halt.subscribe();
        tokio::spawn(async move {
            loop {
                // a stopping node ends its registration (and so lets go of
                // its journal): it registers when it starts again
                if *halt.borrow_and_update() {
                    return;
                }
                let Some(inner) = weak.upgrade() else { return };
                let node = RaftNode { inner };
                if !open {
                    let p = node.probe().await;
                    if p.lost {
                        node.refuse(node.lost_message());
                        return;
                    }
                    if p.answered {
                        node.inner.gate.open();
                        open = true;
                    }
                }
                // registered once open, so that a peer's answer (not the
                // registry, which may take a while) opens the gate
                if open && node.register_once().await {
                    return;
                }
                drop(node);
                let _ = tokio::time::timeout(Duration::from_millis(200), halt.changed()).await;
            }
        });
        Ok(())
    }

    /// One attempt to register; `true` when settled (accepted or refused).
    async fn register_once(&self) -> bool {
        let gate = &self.inner.gate;
        let cmd = MetaCmd::Joined {
            id: self.node_id(),
            incarnation: self.inner.incarnation,
            cluster: random_u64(),
        };
        match self.meta_write(cmd).await {
            Ok(()) => {
                let cluster = self.inner.registry.cluster.load(Ordering::Acquire);
                let mark = encode(&cluster)
                    .map(|b| vec![Mutation::Put(Ks::Meta, REGISTERED_KEY.to_vec(), b)]);
                match mark {
                    Ok(m) => {
                        if let Err(e) = self.inner.journal.submit_wait(m).await {
                            tracing::warn!(error = %e, "registration mark not stored");
                            return false;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "registration mark not encoded");
                        return false;
                    }
                }
                gate.registered.store(true, Ordering::Release);
                tracing::info!(node = self.node_id(), cluster = %format!("{cluster:016x}"), "registered");
                true
            }
            Err(AdminError::Raft(e)) if e.starts_with(LOST_DIR) => {
                self.refuse(self.lost_message());
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "registration: retrying");
                false
            }
        }
    }
}
