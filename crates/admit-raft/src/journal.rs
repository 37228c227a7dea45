//! One fjall database per node, shared by every Raft group, with a single
//! writer thread that group-commits: all mutations that arrive while the
//! previous fsync is running are written as separate atomic batches into the
//! journal and then made durable by **one** `persist(SyncData)`, after which
//! all of their completion callbacks fire.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

/// Which keyspace a mutation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ks {
    /// Log entries, key = shard (u32 BE) ++ index (u64 BE).
    Logs,
    /// Per-group markers, key = shard (u32 BE) ++ tag (u8).
    Meta,
    /// Per-group latest snapshot, key = shard (u32 BE).
    Snapshots,
}

/// One mutation inside an atomic batch.
#[derive(Debug)]
pub(crate) enum Mutation {
    Put(Ks, Vec<u8>, Vec<u8>),
    /// Remove every key `k` with `from <= k < to`.
    DelRange(Ks, Vec<u8>, Vec<u8>),
}

/// Completion callback: called once the op is durable (or failed).
pub(crate) type Done = Box<dyn FnOnce(io::Result<()>) + Send>;
/// Hook run right after the op's batch is in the memtable (readable), before the fsync.
pub(crate) type Visible = Box<dyn FnOnce() + Send>;

pub(crate) struct Op {
    pub(crate) muts: Vec<Mutation>,
    pub(crate) visible: Option<Visible>,
    pub(crate) done: Option<Done>,
}

enum Msg {
    Op(Op),
    /// Persist everything and reply.
    Sync(Done),
    Stop,
}

/// Counters for observing group commit.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Number of fsyncs performed.
    pub fsyncs: AtomicU64,
    /// Number of ops (appends, votes, ...) made durable.
    pub ops: AtomicU64,
}

pub(crate) struct Journal {
    pub(crate) logs: Keyspace,
    pub(crate) meta: Keyspace,
    pub(crate) snaps: Keyspace,
    db: Database,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pub(crate) stats: Arc<JournalStats>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

pub(crate) fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Journal {
    pub(crate) fn open(dir: &Path, fsync: bool, linger: Duration) -> io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let db = Database::builder(dir.join("journal"))
            .manual_journal_persist(true)
            .open()
            .map_err(io_err)?;
        let logs = db
            .keyspace("raft_logs", KeyspaceCreateOptions::default)
            .map_err(io_err)?;
        let meta = db
            .keyspace("raft_meta", KeyspaceCreateOptions::default)
            .map_err(io_err)?;
        let snaps = db
            .keyspace("raft_snapshots", KeyspaceCreateOptions::default)
            .map_err(io_err)?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(JournalStats::default());
        let worker = Worker {
            db: db.clone(),
            logs: logs.clone(),
            meta: meta.clone(),
            snaps: snaps.clone(),
            rx,
            fsync,
            linger,
            stats: stats.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("admit-raft-journal".into())
            .spawn(move || worker.run())?;
        Ok(Arc::new(Self {
            logs,
            meta,
            snaps,
            db,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            stats,
        }))
    }

    fn send(&self, msg: Msg) -> Result<(), Msg> {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(tx) => tx.send(msg).map_err(|e| e.0),
            None => Err(msg),
        }
    }

    /// Enqueue an op; its callbacks run on the journal thread.
    pub(crate) fn submit(&self, op: Op) {
        if let Err(Msg::Op(op)) = self.send(Msg::Op(op)) {
            if let Some(done) = op.done {
                done(Err(io_err("journal is closed")));
            }
        }
    }

    /// Enqueue an op and wait until it is durable.
    pub(crate) async fn submit_wait(&self, muts: Vec<Mutation>) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Op {
            muts,
            visible: None,
            done: Some(Box::new(move |r| {
                let _ = tx.send(r);
            })),
        });
        rx.await.map_err(|_| io_err("journal thread stopped"))?
    }

    /// Wait until everything submitted so far is durable.
    pub(crate) async fn sync(&self) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done: Done = Box::new(move |r| {
            let _ = tx.send(r);
        });
        if let Err(Msg::Sync(done)) = self.send(Msg::Sync(done)) {
            done(Err(io_err("journal is closed")));
        }
        rx.await.map_err(|_| io_err("journal thread stopped"))?
    }

    /// Stop the writer thread after it drained its queue, then fsync.
    pub(crate) fn close(&self) -> io::Result<()> {
        let _ = self.send(Msg::Stop);
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        self.db.persist(PersistMode::SyncAll).map_err(io_err)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

struct Worker {
    db: Database,
    logs: Keyspace,
    meta: Keyspace,
    snaps: Keyspace,
    rx: mpsc::Receiver<Msg>,
    fsync: bool,
    linger: Duration,
    stats: Arc<JournalStats>,
}

/// Upper bound on ops committed under one fsync, to bound latency.
const MAX_GROUP: usize = 4096;

impl Worker {
    fn ks(&self, ks: Ks) -> &Keyspace {
        match ks {
            Ks::Logs => &self.logs,
            Ks::Meta => &self.meta,
            Ks::Snapshots => &self.snaps,
        }
    }

    fn run(self) {
        let mut stop = false;
        while !stop {
            let first = match self.rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            };
            let mut group = vec![first];
            if !self.linger.is_zero() {
                std::thread::sleep(self.linger);
            }
            while group.len() < MAX_GROUP {
                match self.rx.try_recv() {
                    Ok(m) => group.push(m),
                    Err(_) => break,
                }
            }
            let mut dones: Vec<(Done, Option<io::Error>)> = Vec::with_capacity(group.len());
            let mut n_ops = 0u64;
            for msg in group {
                match msg {
                    Msg::Op(op) => {
                        n_ops += 1;
                        let res = self.write(op.muts);
                        if res.is_ok() {
                            if let Some(v) = op.visible {
                                v();
                            }
                        }
                        if let Some(d) = op.done {
                            dones.push((d, res.err()));
                        }
                    }
                    Msg::Sync(d) => dones.push((d, None)),
                    Msg::Stop => stop = true,
                }
            }
            self.stats.ops.fetch_add(n_ops, Ordering::Relaxed);
            if dones.is_empty() {
                // Only hints (e.g. committed markers): they ride along with
                // the next fsync.
                continue;
            }
            let mode = if self.fsync {
                PersistMode::SyncData
            } else {
                PersistMode::Buffer
            };
            let persisted = self.db.persist(mode).map_err(io_err);
            self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
            for (done, err) in dones {
                let r = match (&persisted, err) {
                    (_, Some(e)) => Err(e),
                    (Err(e), None) => Err(io_err(e)),
                    (Ok(()), None) => Ok(()),
                };
                done(r);
            }
        }
    }

    /// Write one op as one atomic batch (journal buffer + memtable, no fsync).
    fn write(&self, muts: Vec<Mutation>) -> io::Result<()> {
        let mut batch = self.db.batch();
        for m in muts {
            match m {
                Mutation::Put(ks, k, v) => batch.insert(self.ks(ks), k, v),
                Mutation::DelRange(ks, from, to) => {
                    let tree = self.ks(ks);
                    for guard in tree.range(from.as_slice()..to.as_slice()) {
                        let key = guard.key().map_err(io_err)?;
                        batch.remove(tree, key);
                    }
                }
            }
        }
        batch.commit().map_err(io_err)
    }
}
