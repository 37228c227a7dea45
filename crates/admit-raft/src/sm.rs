//! The openraft state machine of one group: the [`App`] in memory plus its
//! latest snapshot, stored as a file with a record in the journal
//! ([`crate::snapfile`]).
//!
//! A snapshot costs the state-machine task (which applies every entry and
//! answers every write) only the App's copy of its state
//! ([`App::snapshot_job`]); the encoding runs in the [`SnapBuilder`], which
//! openraft runs on a task of its own, on tokio's blocking pool, and so does
//! the write of the file. The journal's writer thread only writes the small
//! record. An installed snapshot (from the leader) is stored the same way,
//! its file written on the blocking pool while the state-machine task
//! waits (it may not apply anything before the install is durable anyway).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::journal::{io_err, Journal, Ks, Mutation};
use crate::snapfile::{checksum, file_key, inline_key, inline_key_end, SnapDir, SnapRecord};
use crate::store::{decode, encode};
use crate::types::{LogIdT, RespData, SnapshotMetaT, SnapshotT, StoredMembershipT, C};
use crate::{App, SnapshotJob};

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct StoredSnapshot<A: App> {
    pub(crate) meta: SnapshotMetaT<A>,
    pub(crate) data: Vec<u8>,
}

/// The group's latest stored snapshot, as openraft asks for it to send it to a
/// follower that is behind (rare). Its bytes stay on disk: held in memory, the
/// snapshots of all groups would be a second copy of the whole state.
enum CurrentSnap<A: App> {
    /// Stored as a file (every snapshot since snapshot files).
    File(SnapRecord<A>),
    /// Read from an inline record of a data dir from before snapshot files.
    Inline(StoredSnapshot<A>),
}

impl<A: App> CurrentSnap<A> {
    fn meta(&self) -> &SnapshotMetaT<A> {
        match self {
            CurrentSnap::File(rec) => &rec.meta,
            CurrentSnap::Inline(s) => &s.meta,
        }
    }
}

type Current<A> = Arc<Mutex<Option<Arc<CurrentSnap<A>>>>>;

/// The openraft handle of one group running an `A`.
pub(crate) type GroupRaft<A> = openraft::Raft<C<A>, StateMachine<A>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State machine of one group. Owned by openraft's state-machine task.
pub(crate) struct StateMachine<A: App> {
    pub(crate) app: A,
    applied: Option<LogIdT<A>>,
    membership: StoredMembershipT<A>,
    store: Arc<SnapStore>,
    current: Current<A>,
    /// The last applied entry, published before its responses are sent
    /// (see [`crate::RaftNode::is_leader_with_lease`]).
    published: Arc<Applied>,
}

/// The term of a group's last applied entry, published by its state
/// machine for readers that may not wait for the state-machine task (the
/// fast path's lease check), before the entry's responses are sent: a
/// reader that sees term `t` knows every entry up to an entry of term `t`
/// is applied (entries are applied in log order).
#[derive(Debug, Default)]
pub(crate) struct Applied {
    term: AtomicU64,
}

impl Applied {
    fn set_log_id<A: App>(&self, log_id: Option<&LogIdT<A>>) {
        let term = log_id.map_or(0, |l| l.leader_id.term);
        self.term.store(term, Ordering::Release);
    }

    /// Term of the last applied entry (0: none).
    pub(crate) fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }
}

impl<A: App> StateMachine<A> {
    /// Build the state machine of `shard`, restoring `app` from the group's
    /// latest snapshot if there is one. Log entries after the snapshot are
    /// replayed by openraft afterwards.
    pub(crate) fn open(
        shard: u32,
        mut app: A,
        journal: Arc<Journal>,
        dir: Arc<SnapDir>,
        published: Arc<Applied>,
    ) -> io::Result<Self> {
        let current = match journal.snaps.get(file_key(shard)).map_err(io_err)? {
            Some(b) => {
                let rec: SnapRecord<A> = decode(&b)?;
                let data = dir.load(shard, &rec)?;
                app.restore(&data).map_err(io_err)?;
                Some(CurrentSnap::File(rec))
            }
            // a data dir from before snapshot files: the bytes inline
            None => match journal.snaps.get(inline_key(shard)).map_err(io_err)? {
                Some(b) => {
                    let s: StoredSnapshot<A> = decode(&b)?;
                    app.restore(&s.data).map_err(io_err)?;
                    Some(CurrentSnap::Inline(s))
                }
                None => None,
            },
        };
        // files no record names: a store that a crash cut short
        let file = match &current {
            Some(CurrentSnap::File(rec)) => Some(rec.file.as_str()),
            _ => None,
        };
        dir.remove_other(shard, file);
        let (applied, membership) = match &current {
            Some(c) => (c.meta().last_log_id, c.meta().last_membership.clone()),
            None => (None, StoredMembership::default()),
        };
        let current = current.map(Arc::new);
        published.set_log_id::<A>(applied.as_ref());
        Ok(Self {
            app,
            published,
            applied,
            membership,
            store: Arc::new(SnapStore {
                shard,
                dir,
                journal,
                stored: tokio::sync::Mutex::new(applied.as_ref().map_or(0, |l| l.index)),
            }),
            current: Arc::new(Mutex::new(current)),
        })
    }
}

/// Runs `f` where it stalls nothing: on tokio's blocking pool, or at once
/// with an inline journal (a single-threaded simulation, where nothing may
/// run beside its thread).
async fn off_task<T: Send + 'static>(
    inline: bool,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    if inline {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io_err(format!("snapshot thread failed: {e}")))?
}

/// Where one group's snapshots are stored: the bytes in a file of their own
/// (written off the journal's thread), a small record of it in the journal
/// (see `snapfile.rs` for the order that keeps a crash safe). One store of
/// the group at a time: a build and an install may overlap.
pub(crate) struct SnapStore {
    shard: u32,
    dir: Arc<SnapDir>,
    journal: Arc<Journal>,
    /// The last index of the snapshot stored (0: none, or none applied).
    stored: tokio::sync::Mutex<u64>,
}

impl SnapStore {
    /// Stores `data` as the group's latest snapshot, makes it `current`, and
    /// returns the bytes once the record is durable (only then may the log
    /// below it go). Does nothing if a newer snapshot is stored already (a
    /// build that an install overtook: storing it would put the snapshot
    /// behind the purged log).
    async fn persist<A: App>(
        &self,
        meta: &SnapshotMetaT<A>,
        data: Vec<u8>,
        current: &Current<A>,
    ) -> io::Result<Vec<u8>> {
        let mut stored = self.stored.lock().await;
        let index = meta.last_log_id.as_ref().map_or(0, |l| l.index);
        if index < *stored {
            return Ok(data);
        }
        let inline = self.journal.is_inline();
        let (shard, dir) = (self.shard, self.dir.clone());
        let (data, file, sum) = off_task(inline, move || {
            let sum = checksum(&data);
            let file = SnapDir::name(shard, index, sum);
            dir.store(shard, &file, &data)?;
            Ok((data, file, sum))
        })
        .await?;
        let rec = SnapRecord::<A> {
            meta: meta.clone(),
            file: file.clone(),
            len: data.len() as u64,
            sum,
        };
        self.journal
            .submit_wait(vec![
                Mutation::Put(Ks::Snapshots, file_key(shard), encode(&rec)?),
                // the inline record of a data dir from before snapshot files
                Mutation::DelRange(Ks::Snapshots, inline_key(shard), inline_key_end(shard)),
            ])
            .await?;
        let dir = self.dir.clone();
        *stored = index;
        // still under `stored`: a reader of the current snapshot holds it too,
        // so it never names a file removed below
        *lock(current) = Some(Arc::new(CurrentSnap::File(rec)));
        off_task(inline, move || {
            dir.remove_other(shard, Some(&file));
            Ok(())
        })
        .await?;
        Ok(data)
    }

    /// The bytes of the current snapshot, read from its file.
    async fn read_current<A: App>(&self, current: &Current<A>) -> io::Result<Option<SnapshotT<A>>> {
        let _stored = self.stored.lock().await;
        let Some(cur) = lock(current).clone() else {
            return Ok(None);
        };
        let data = match &*cur {
            CurrentSnap::Inline(s) => s.data.clone(),
            CurrentSnap::File(_) => {
                let (shard, dir, c) = (self.shard, self.dir.clone(), cur.clone());
                off_task(self.journal.is_inline(), move || match &*c {
                    CurrentSnap::File(rec) => dir.load(shard, rec),
                    CurrentSnap::Inline(s) => Ok(s.data.clone()),
                })
                .await?
            }
        };
        Ok(Some(Snapshot {
            meta: cur.meta().clone(),
            snapshot: data,
        }))
    }
}

/// Holds what the App took of its state on the state-machine task; encodes
/// it (on a blocking thread) and stores it, off that task.
pub(crate) struct SnapBuilder<A: App> {
    meta: SnapshotMetaT<A>,
    /// In a mutex only to make the builder `Sync`, as openraft wants.
    job: Mutex<Option<SnapshotJob>>,
    store: Arc<SnapStore>,
    current: Current<A>,
}

impl<A: App> RaftSnapshotBuilder<C<A>> for SnapBuilder<A> {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotT<A>, io::Error> {
        let job = lock(&self.job)
            .take()
            .ok_or_else(|| io_err("snapshot builder used twice"))?;
        let data = off_task(self.store.journal.is_inline(), move || Ok(job())).await?;
        let data = self
            .store
            .persist::<A>(&self.meta, data, &self.current)
            .await?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: data,
        })
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
                // the log's cache usually still shares the commands: applied
                // from a reference then, not copied
                EntryPayload::Normal(cmds) => RespData(match Arc::try_unwrap(cmds.0) {
                    Ok(cmds) => cmds
                        .into_iter()
                        .map(|cmd| self.app.apply(log_id.index, cmd))
                        .collect(),
                    Err(shared) => shared
                        .iter()
                        .map(|cmd| self.app.apply_ref(log_id.index, cmd))
                        .collect(),
                }),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(log_id), m);
                    RespData(Vec::new())
                }
            };
            self.published.set_log_id::<A>(Some(&log_id));
            self.applied = Some(log_id);
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
            meta,
            job: Mutex::new(Some(self.app.snapshot_job())),
            store: self.store.clone(),
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
        self.published.set_log_id::<A>(meta.last_log_id.as_ref());
        self.membership = meta.last_membership.clone();
        self.store
            .persist::<A>(meta, snapshot, &self.current)
            .await?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotT<A>>, io::Error> {
        self.store.read_current(&self.current).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An App whose state is its bytes.
    #[derive(Debug, Default)]
    struct Bytes(Vec<u8>);

    impl App for Bytes {
        type Command = u8;
        type Response = ();

        fn apply(&mut self, _index: u64, cmd: u8) {
            self.0.push(cmd);
        }

        fn snapshot(&self) -> Vec<u8> {
            self.0.clone()
        }

        fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
            self.0 = bytes.to_vec();
            Ok(())
        }

        fn check_snapshot(_: &[u8]) -> Result<(), String> {
            Ok(()) // any bytes are a state
        }
    }

    fn open(journal: &Arc<Journal>, dir: &Arc<SnapDir>) -> io::Result<StateMachine<Bytes>> {
        StateMachine::open(
            0,
            Bytes::default(),
            journal.clone(),
            dir.clone(),
            Arc::new(Applied::default()),
        )
    }

    fn files(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    /// A data dir from before snapshot files (the bytes inline in the
    /// journal) still restores; the next snapshot moves to a file and drops
    /// the inline record. Files no record names (a store a crash cut short)
    /// are removed at open, and a damaged file is refused.
    #[tokio::test]
    async fn inline_records_still_restore_and_files_follow_their_record() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path();
        let journal = Journal::open(
            path,
            true,
            std::time::Duration::ZERO,
            std::time::Duration::ZERO,
            false,
            false,
        )
        .unwrap();
        let dir = Arc::new(SnapDir::open(path, true, None).unwrap());
        let meta = SnapshotMetaT::<Bytes> {
            last_log_id: None,
            last_membership: StoredMembership::default(),
        };
        let old = StoredSnapshot::<Bytes> {
            meta: meta.clone(),
            data: b"old".to_vec(),
        };
        journal
            .submit_wait(vec![Mutation::Put(
                Ks::Snapshots,
                inline_key(0),
                encode(&old).unwrap(),
            )])
            .await
            .unwrap();
        crate::integrity::check::<Bytes>(&journal, 1, path).unwrap();
        let mut sm = open(&journal, &dir).unwrap();
        assert_eq!(sm.app.0, b"old");
        let cur = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(cur.snapshot, b"old");

        let data = sm
            .store
            .persist::<Bytes>(&meta, b"new".to_vec(), &sm.current)
            .await
            .unwrap();
        assert_eq!(data, b"new");
        // the current snapshot is the file's, read back when asked for
        assert!(matches!(
            lock(&sm.current).as_deref(),
            Some(CurrentSnap::File(_))
        ));
        let cur = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(cur.snapshot, b"new");
        assert!(journal.snaps.get(inline_key(0)).unwrap().is_none());
        assert!(journal.snaps.get(file_key(0)).unwrap().is_some());
        let stored = files(path);
        assert_eq!(stored, [SnapDir::name(0, 0, checksum(b"new"))]);
        drop(sm);

        // a newer file whose record never made it, a temp file, and another
        // group's file
        for f in ["0-9-00.snap", "0-9-01.snap.tmp", "1-3-00.snap"] {
            std::fs::write(path.join("snapshots").join(f), b"x").unwrap();
        }
        crate::integrity::check::<Bytes>(&journal, 1, path).unwrap();
        let mut sm = open(&journal, &dir).unwrap();
        assert_eq!(sm.app.0, b"new");
        assert_eq!(files(path), [stored[0].clone(), "1-3-00.snap".to_string()]);

        std::fs::write(path.join("snapshots").join(&stored[0]), b"wen").unwrap();
        // damaged under a running group: sending it is refused, not the bad bytes
        let e = sm
            .get_current_snapshot()
            .await
            .expect_err("a damaged file is not sent");
        assert!(e.to_string().contains("checksum"), "{e}");
        drop(sm);
        let e = open(&journal, &dir)
            .err()
            .expect("a damaged file is refused");
        assert!(e.to_string().contains("checksum"), "{e}");
        assert!(e.to_string().contains("rebuild"), "{e}");
    }
}
