//! The openraft state machine of one group: the [`App`] in memory plus its
//! latest snapshot in the journal.
//!
//! A snapshot costs the state-machine task (which applies every entry and
//! answers every write) only the App's copy of its state
//! ([`App::snapshot_job`]); the encoding runs in the [`SnapBuilder`], which
//! openraft runs on a task of its own, on tokio's blocking pool.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::journal::{io_err, Journal, Ks, Mutation};
use crate::store::{decode, encode};
use crate::types::{LogIdT, RespData, SnapshotMetaT, SnapshotT, StoredMembershipT, C};
use crate::{App, SnapshotJob};

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct StoredSnapshot<A: App> {
    pub(crate) meta: SnapshotMetaT<A>,
    pub(crate) data: Vec<u8>,
}

impl<A: App> Clone for StoredSnapshot<A> {
    fn clone(&self) -> Self {
        Self {
            meta: self.meta.clone(),
            data: self.data.clone(),
        }
    }
}

pub(crate) fn snap_key(shard: u32) -> Vec<u8> {
    shard.to_be_bytes().to_vec()
}

type Current<A> = Arc<Mutex<Option<Arc<StoredSnapshot<A>>>>>;

/// The openraft handle of one group running an `A`.
pub(crate) type GroupRaft<A> = openraft::Raft<C<A>, StateMachine<A>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State machine of one group. Owned by openraft's state-machine task.
pub(crate) struct StateMachine<A: App> {
    shard: u32,
    pub(crate) app: A,
    applied: Option<LogIdT<A>>,
    membership: StoredMembershipT<A>,
    journal: Arc<Journal>,
    current: Current<A>,
    /// Index of the last applied entry, published before its responses are
    /// sent (see [`crate::RaftNode::is_leader_with_lease`]).
    applied_index: Arc<AtomicU64>,
}

impl<A: App> StateMachine<A> {
    /// Build the state machine of `shard`, restoring `app` from the group's
    /// latest snapshot if there is one. Log entries after the snapshot are
    /// replayed by openraft afterwards.
    pub(crate) fn open(
        shard: u32,
        mut app: A,
        journal: Arc<Journal>,
        applied_index: Arc<AtomicU64>,
    ) -> io::Result<Self> {
        let stored: Option<StoredSnapshot<A>> = journal
            .snaps
            .get(snap_key(shard))
            .map_err(io_err)?
            .map(|b| decode(&b))
            .transpose()?;
        let (applied, membership, current) = match stored {
            Some(s) => {
                app.restore(&s.data).map_err(io_err)?;
                (
                    s.meta.last_log_id,
                    s.meta.last_membership.clone(),
                    Some(Arc::new(s)),
                )
            }
            None => (None, StoredMembership::default(), None),
        };
        applied_index.store(applied.as_ref().map_or(0, |l| l.index), Ordering::Release);
        Ok(Self {
            shard,
            app,
            applied_index,
            applied,
            membership,
            journal,
            current: Arc::new(Mutex::new(current)),
        })
    }
}

async fn persist_snapshot<A: App>(
    journal: &Journal,
    shard: u32,
    snap: &StoredSnapshot<A>,
) -> io::Result<()> {
    let bytes = encode(snap)?;
    journal
        .submit_wait(vec![Mutation::Put(Ks::Snapshots, snap_key(shard), bytes)])
        .await
}

/// Holds what the App took of its state on the state-machine task; encodes
/// it (on a blocking thread) and persists it, off that task.
pub(crate) struct SnapBuilder<A: App> {
    shard: u32,
    meta: SnapshotMetaT<A>,
    /// In a mutex only to make the builder `Sync`, as openraft wants.
    job: Mutex<Option<SnapshotJob>>,
    journal: Arc<Journal>,
    current: Current<A>,
}

/// Runs a snapshot job where it stalls nothing: on tokio's blocking pool,
/// or at once with an inline journal (a single-threaded simulation, where
/// nothing may run beside its thread).
async fn run_job(job: SnapshotJob, inline: bool) -> io::Result<Vec<u8>> {
    if inline {
        return Ok(job());
    }
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| io_err(format!("snapshot encoding failed: {e}")))
}

impl<A: App> RaftSnapshotBuilder<C<A>> for SnapBuilder<A> {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotT<A>, io::Error> {
        let job = lock(&self.job)
            .take()
            .ok_or_else(|| io_err("snapshot builder used twice"))?;
        let data = run_job(job, self.journal.is_inline()).await?;
        let snap = StoredSnapshot {
            meta: self.meta.clone(),
            data,
        };
        persist_snapshot(&self.journal, self.shard, &snap).await?;
        let out = Snapshot {
            meta: snap.meta.clone(),
            snapshot: snap.data.clone(),
        };
        *lock(&self.current) = Some(Arc::new(snap));
        Ok(out)
    }
}

impl<A: App> RaftStateMachine<C<A>> for StateMachine<A> {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapBuilder<A>;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdT<A>>, StoredMembershipT<A>), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C<A>>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            let resp = match entry.payload {
                EntryPayload::Blank => RespData(Vec::new()),
                EntryPayload::Normal(cmds) => RespData(
                    cmds.0
                        .into_iter()
                        .map(|cmd| self.app.apply(log_id.index, cmd))
                        .collect(),
                ),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(log_id), m);
                    RespData(Vec::new())
                }
            };
            self.applied = Some(log_id);
            self.applied_index.store(log_id.index, Ordering::Release);
            if let Some(r) = responder {
                r.send(resp);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let meta = SnapshotMetaT::<A> {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
        };
        // only the App's copy is taken here, between two applies: the
        // encoding runs in the builder, which openraft runs on a task of its own
        SnapBuilder {
            shard: self.shard,
            meta,
            job: Mutex::new(Some(self.app.snapshot_job())),
            journal: self.journal.clone(),
            current: self.current.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaT<A>,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        self.app.restore(&snapshot).map_err(io_err)?;
        self.applied = meta.last_log_id;
        self.applied_index.store(
            meta.last_log_id.as_ref().map_or(0, |l| l.index),
            Ordering::Release,
        );
        self.membership = meta.last_membership.clone();
        let snap = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot,
        };
        persist_snapshot(&self.journal, self.shard, &snap).await?;
        *lock(&self.current) = Some(Arc::new(snap));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotT<A>>, io::Error> {
        let cur = lock(&self.current).clone();
        Ok(cur.map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: s.data.clone(),
        }))
    }
}
