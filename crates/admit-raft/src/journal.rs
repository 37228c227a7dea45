//! One fjall database per node, shared by every Raft group, with a single
//! writer thread that group-commits: all mutations that arrive while the
//! previous fsync is running are written into the journal and then made
//! durable by **one** `persist(SyncData)`, after which all of their
//! completion callbacks fire.
//!
//! Each op is atomic. Consecutive ops share one fjall batch (every batch
//! costs a journal lock, a sequence number and memtable checks whatever it
//! holds, and with 64 groups most ops are one small log entry), except that
//! an op that removes a range goes alone (its range is read from what is
//! written before it) and a key is written at most once per batch (the
//! items of a batch share one sequence number, so two writes of one key in
//! it would not be ordered).
//!
//! For durability tests the writer can also remember, for every key changed
//! since the last fsync, its value before that change, and on request
//! simulate a power cut: put those values back and stop, so that what was
//! written but not yet synced is lost as the page cache would lose it.
//!
//! **Damage and loss** ([`crate::watermark`]): every batch carries the next
//! number of a write sequence and a mark file outside the journal records
//! the number each fsync covered, so a journal that comes back shorter than
//! what was fsynced is refused at open, as are files fjall cannot read.
//!
//! **A failed write** (a full disk, an I/O error) is final for this run:
//! that op and every later one fail with the first error, and nothing more
//! is written, so no batch can be acknowledged behind a torn one (fjall's
//! recovery would stop at the torn batch and drop it). Writes come back
//! with a restart, which recovers the journal to its last whole batch. A
//! test switch makes the next writes fail as a full disk would.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::watermark::{self, Mark, SEQ_KEY};

/// What to do with a data dir the node refuses to open.
pub(crate) const REBUILD: &str = "rebuild this node from its peers: remove it \
    (admitctl remove-node N), wipe the data dir and start it with a new node id and \
    --join (a single node: restore the data dir from a backup)";

/// Which keyspace a mutation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// Test switch: lose every write not yet fsynced, reply, stop.
    PowerCut(Done),
}

/// Counters for observing group commit.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Number of fsyncs performed.
    pub fsyncs: AtomicU64,
    /// Number of ops (appends, votes, ...) made durable.
    pub ops: AtomicU64,
}

/// The first write error, shared by the writer and the node.
#[derive(Debug, Default)]
pub(crate) struct Failure {
    /// Test switch: the next writes fail as on a full disk.
    inject: AtomicBool,
    first: Mutex<Option<String>>,
}

impl Failure {
    /// Why this journal takes no more writes, if it does not.
    pub(crate) fn get(&self) -> Option<String> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, e: &io::Error) {
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            tracing::error!(error = %e, "journal write failed; this node takes no more writes until it restarts");
            *first = Some(e.to_string());
        }
    }
}

pub(crate) struct Journal {
    pub(crate) logs: Keyspace,
    pub(crate) meta: Keyspace,
    pub(crate) snaps: Keyspace,
    db: Database,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Inline mode (a simulation's switch): no thread; the caller of
    /// `submit` writes and syncs (see [`Inline`]).
    inline: Option<Arc<Inline>>,
    pub(crate) stats: Arc<JournalStats>,
    pub(crate) failure: Arc<Failure>,
    mark: Arc<Mark>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

pub(crate) fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Whether `dir` holds no journal yet: a node started there creates its data
/// dir, with the shard count it is given.
pub fn is_new_data_dir(dir: &Path) -> bool {
    !dir.join("journal").exists()
}

impl Journal {
    /// `track_unsynced` enables [`Self::power_cut`] (for tests: it costs a
    /// read per written key).
    pub(crate) fn open(
        dir: &Path,
        fsync: bool,
        linger: Duration,
        poll: Duration,
        track_unsynced: bool,
        inline: bool,
    ) -> io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("journal");
        // damage fjall would read unchecked and abort on (crate::archives)
        if let Some((version, current)) = crate::archives::find_damaged_version(&path)? {
            return Err(io_err(format!(
                "{}: the journal's files are damaged (the checksum in {} does not match); \
                 {REBUILD}",
                version.display(),
                current.display()
            )));
        }
        if let Some((file, count)) = crate::archives::find_impossible_count(&path)? {
            return Err(io_err(format!(
                "{}: the journal's files are damaged (its table of contents claims {count} \
                 entries, more than the file holds); {REBUILD}",
                file.display()
            )));
        }
        // fjall may panic on some damaged files: a refusal, not a crash
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Database::builder(&path)
                .worker_threads(JOURNAL_WORKERS)
                .manual_journal_persist(true)
                .cache_size(BLOCK_CACHE_BYTES)
                .open()
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(fjall::Error::Io(e))) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{}: the journal could not be opened: {e}", path.display()),
                ))
            }
            Ok(Err(fjall::Error::Locked)) => {
                return Err(io_err(format!(
                    "{}: the journal is in use by another process",
                    path.display()
                )))
            }
            Ok(Err(e)) => {
                return Err(io_err(format!(
                    "{}: the journal's files are damaged ({e}); {REBUILD}",
                    path.display()
                )))
            }
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                return Err(io_err(format!(
                    "{}: the journal's files are damaged (reading them failed: {why}); {REBUILD}",
                    path.display()
                )));
            }
        };
        let logs = db
            .keyspace("raft_logs", || {
                KeyspaceCreateOptions::default().max_memtable_size(LOG_MEMTABLE_BYTES)
            })
            .map_err(io_err)?;
        let meta = db
            .keyspace("raft_meta", || {
                KeyspaceCreateOptions::default().max_memtable_size(SMALL_MEMTABLE_BYTES)
            })
            .map_err(io_err)?;
        let snaps = db
            .keyspace("raft_snapshots", || {
                KeyspaceCreateOptions::default().max_memtable_size(SMALL_MEMTABLE_BYTES)
            })
            .map_err(io_err)?;
        let seq = watermark::parse_seq(meta.get(SEQ_KEY).map_err(io_err)?.as_deref())?;
        let (mark, held) = Mark::open(dir)?;
        if let Some(held) = held.filter(|h| *h > seq) {
            return Err(io_err(format!(
                "{}: the journal holds writes up to number {seq}, but writes up to {held} were \
                 fsynced before ({}): acknowledged writes are lost (a damaged or cut journal \
                 file); {REBUILD}",
                path.display(),
                mark.path().display()
            )));
        }
        let mark = Arc::new(mark);
        let failure = Arc::new(Failure::default());
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
            poll,
            stats: stats.clone(),
            unsynced: track_unsynced.then(HashMap::new),
            seq,
            mark: fsync.then(|| mark.clone()),
            failure: failure.clone(),
            dones: Vec::new(),
            written: 0,
        };
        let (tx, thread, inline) = if inline {
            drop(tx);
            let inline = Arc::new(Inline {
                queue: Mutex::new(Vec::new()),
                worker: Mutex::new(Some(worker)),
                syncing: AtomicBool::new(false),
            });
            (None, None, Some(inline))
        } else {
            let thread = std::thread::Builder::new()
                .name("admit-raft-journal".into())
                .spawn(move || worker.run())?;
            (Some(tx), Some(thread), None)
        };
        Ok(Arc::new(Self {
            logs,
            meta,
            snaps,
            db,
            tx: Mutex::new(tx),
            thread: Mutex::new(thread),
            inline,
            stats,
            failure,
            mark,
        }))
    }

    /// Whether this journal runs without a writer thread (a simulation:
    /// nothing may run on a thread of its own then).
    pub(crate) fn is_inline(&self) -> bool {
        self.inline.is_some()
    }

    /// Test switch: from now on every write fails as on a full disk
    /// (ENOSPC), which, like a real write error, stops this journal's
    /// writes until a restart.
    pub(crate) fn fail_writes(&self) {
        self.failure.inject.store(true, Ordering::SeqCst);
    }

    fn send(&self, msg: Msg) -> Result<(), Msg> {
        if let Some(inline) = &self.inline {
            return Inline::send(inline, msg);
        }
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
        self.ask(Msg::Sync).await
    }

    /// Test switch: simulate a power cut. Every write not yet covered by an
    /// fsync is undone (the journal must have been opened with
    /// `track_unsynced`), and the writer thread stops: ops still queued or
    /// arriving later fail.
    pub(crate) async fn power_cut(&self) -> io::Result<()> {
        let r = self.ask(Msg::PowerCut).await;
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        r
    }

    /// Send the writer a request and wait for its answer.
    async fn ask(&self, request: fn(Done) -> Msg) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done: Done = Box::new(move |r| {
            let _ = tx.send(r);
        });
        if let Err(Msg::Sync(done) | Msg::PowerCut(done)) = self.send(request(done)) {
            done(Err(io_err("journal is closed")));
        }
        rx.await.map_err(|_| io_err("journal thread stopped"))?
    }

    /// Stop the writer thread after it drained its queue, then fsync.
    pub(crate) fn close(&self) -> io::Result<()> {
        let _ = self.send(Msg::Stop);
        if let Some(inline) = &self.inline {
            // later ops fail as with a stopped thread
            lock(&inline.worker).take();
        }
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        if self.failure.get().is_some() {
            // nothing more is written after a failed write, not even here
            return Ok(());
        }
        self.db.persist(PersistMode::SyncAll).map_err(io_err)?;
        self.mark.sync()
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Whether the writer goes on after a group.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    More,
    Stop,
}

/// What writing a group did.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    /// written, the writer goes on
    More,
    /// written; the writer stops after making it durable
    Stop,
    /// a power cut: what was not synced is undone, nothing is acknowledged
    Cut,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The writer without a thread, for a deterministic simulation: the caller
/// of `submit` writes the op at once (readable, not yet durable), and a
/// task on the same runtime makes what was written durable after a
/// simulated fsync time drawn from the seeded draws ([`crate::rt`]), then
/// calls the callbacks. So nothing runs beside the simulation's single
/// thread, and a power cut can land between a write and its fsync, as on
/// a machine: what was written but not yet synced is then lost, and must
/// not have been acknowledged. An op submitted while the writer is busy (from
/// a callback) is queued and written by the holder right after.
struct Inline {
    queue: Mutex<Vec<Msg>>,
    /// `None` once stopped (closed or cut).
    worker: Mutex<Option<Worker>>,
    /// A simulated fsync is under way (its task is spawned).
    syncing: AtomicBool,
}

impl Inline {
    fn send(this: &Arc<Self>, msg: Msg) -> Result<(), Msg> {
        lock(&this.queue).push(msg);
        // whoever holds the writer drains the queue, this message included
        let mut worker = match this.worker.try_lock() {
            Ok(w) => w,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            // single-threaded use only: the holder is this thread's caller
            Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
        };
        this.drain(&mut worker);
        let pending = worker.as_ref().is_some_and(|w| !w.dones.is_empty());
        drop(worker);
        if pending && !this.syncing.swap(true, Ordering::AcqRel) {
            let me = this.clone();
            tokio::spawn(async move { me.sync_loop().await });
        }
        Ok(())
    }

    /// Writes every queued message (no fsync); a stop or a power cut ends
    /// the writer.
    fn drain(&self, worker: &mut Option<Worker>) {
        loop {
            let group = std::mem::take(&mut *lock(&self.queue));
            if group.is_empty() {
                return;
            }
            let Some(w) = worker.as_mut() else {
                // stopped: what is queued fails
                for m in group {
                    fail(m);
                }
                continue;
            };
            match w.write_group(group) {
                Written::More => {}
                Written::Stop => {
                    w.persist_written();
                    worker.take();
                }
                Written::Cut => {
                    worker.take();
                }
            }
        }
    }

    /// The simulated fsyncs: wait, make durable what was written, call its
    /// callbacks, write what they queued; again while anything waits.
    async fn sync_loop(self: Arc<Self>) {
        loop {
            let micros = 100 + crate::rt::draw_below(1_900);
            tokio::time::sleep(Duration::from_micros(micros)).await;
            let mut worker = lock(&self.worker);
            if let Some(w) = worker.as_mut() {
                w.persist_written();
            }
            self.drain(&mut worker);
            if worker.as_ref().is_none_or(|w| w.dones.is_empty()) {
                self.syncing.store(false, Ordering::Release);
                return;
            }
        }
    }
}

/// Answers a message a stopped writer cannot serve.
fn fail(m: Msg) {
    match m {
        Msg::Op(op) => {
            if let Some(done) = op.done {
                done(Err(io_err("journal is closed")));
            }
        }
        Msg::Sync(d) | Msg::PowerCut(d) => d(Err(io_err("journal is closed"))),
        Msg::Stop => {}
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
    /// `NodeConfig::journal_poll`.
    poll: Duration,
    stats: Arc<JournalStats>,
    /// With the power-cut test switch: the value of every key changed since
    /// the last fsync, as it was before (`None`: absent).
    unsynced: Option<Unsynced>,
    /// The number of the last batch written ([`crate::watermark`]).
    seq: u64,
    /// Where each fsync's number is recorded (with fsync on only).
    mark: Option<Arc<Mark>>,
    failure: Arc<Failure>,
    /// Written, not yet made durable: the callbacks to call after the next
    /// fsync (with the op's own error, if its write failed).
    dones: Vec<(Done, Option<io::Error>)>,
    /// Ops written since the last fsync.
    written: u64,
}

/// Key -> its value before the first change since the last fsync.
type Unsynced = HashMap<(Ks, Vec<u8>), Option<Vec<u8>>>;

/// Ops gathered to be written as one batch.
#[derive(Default)]
struct Pending {
    muts: Vec<Mutation>,
    /// Hashes of the keys `muts` puts: a key already in the batch starts
    /// another (a hash collision only starts one needlessly).
    keys: HashSet<u64>,
    calls: Vec<(Option<Visible>, Option<Done>)>,
}

impl Pending {
    fn key(ks: Ks, k: &[u8]) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        (ks, k).hash(&mut h);
        h.finish()
    }

    /// Whether `muts` puts no key the batch already holds.
    fn fits(&self, muts: &[Mutation]) -> bool {
        muts.iter().all(|m| match m {
            Mutation::Put(ks, k, _) => !self.keys.contains(&Self::key(*ks, k)),
            Mutation::DelRange(..) => true,
        })
    }

    fn add(&mut self, op: Op) {
        for m in &op.muts {
            if let Mutation::Put(ks, k, _) = m {
                self.keys.insert(Self::key(*ks, k));
            }
        }
        self.muts.extend(op.muts);
        self.calls.push((op.visible, op.done));
    }
}

/// Upper bound on ops committed under one fsync, to bound latency.
const MAX_GROUP: usize = 4096;

/// The Raft logs' memtable size before a flush (fjall's default is 64 MiB).
/// Entries live there from their append until a flush, their purge adds a
/// tombstone beside them, and the skiplist costs more than the bytes counted:
/// with the default, the logs' memtables held about 250 MB of the heap with
/// 1M open windows (a heap profile, docs/benchmarks.md). Smaller memtables
/// flush sooner; most entries are purged soon after anyway. 4 MiB held about
/// 12 MiB less than 8 MiB after the memory scenario, for a few percent of the
/// batches' throughput (docs/benchmarks.md, session 25).
const LOG_MEMTABLE_BYTES: u64 = 4 << 20;

/// fjall's background threads, which flush memtables and compact tables.
/// One: with two or more (fjall's default is one per core, up to 4), the
/// first worker hands every compaction request back to the queue so that it
/// stays free for flushes, and while the other workers are busy it takes the
/// same request again at once: it spins for as long as a compaction runs.
/// With this journal's small memtables (frequent flushes, frequent
/// compactions) that was 15 % of a node's CPU under a minute of campaign
/// batches; one worker flushes and compacts in turn and keeps up
/// (docs/benchmarks.md, "The journal's background threads").
const JOURNAL_WORKERS: usize = 1;

/// The memtable size of the small keyspaces (votes, marks, snapshot records).
/// They hold a few keys per group, rewritten on every batch: with fjall's
/// default each would keep up to 64 MiB of dead versions of them in memory.
const SMALL_MEMTABLE_BYTES: u64 = 2 << 20;

/// fjall's block cache (its default is 32 MiB). Reads of the journal are rare:
/// recent entries come from the logs' tail cache (`store.rs`), so the cache
/// serves mostly the purge's range scans and start-up.
const BLOCK_CACHE_BYTES: u64 = 8 << 20;

impl Worker {
    fn ks(&self, ks: Ks) -> &Keyspace {
        match ks {
            Ks::Logs => &self.logs,
            Ks::Meta => &self.meta,
            Ks::Snapshots => &self.snaps,
        }
    }

    fn run(mut self) {
        loop {
            let Some(first) = self.next() else { break };
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
            if self.process(group) == Next::Stop {
                break;
            }
        }
    }

    /// The next message, looked for during `poll` before waiting for it:
    /// a message sent while this thread sleeps costs its sender a wake-up.
    /// `None` once every sender is gone.
    fn next(&self) -> Option<Msg> {
        if !self.poll.is_zero() {
            let t0 = std::time::Instant::now();
            loop {
                match self.rx.try_recv() {
                    Ok(m) => return Some(m),
                    Err(mpsc::TryRecvError::Disconnected) => return None,
                    // yielding lets the threads that send run meanwhile
                    Err(mpsc::TryRecvError::Empty) if t0.elapsed() < self.poll => {
                        std::thread::yield_now()
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
        }
        self.rx.recv().ok()
    }

    /// Writes one group of messages, each op as an atomic batch, then makes
    /// them durable with one fsync and calls their callbacks.
    fn process(&mut self, group: Vec<Msg>) -> Next {
        match self.write_group(group) {
            Written::More => {
                self.persist_written();
                Next::More
            }
            Written::Stop => {
                self.persist_written();
                Next::Stop
            }
            Written::Cut => Next::Stop,
        }
    }

    /// Writes the ops of `group` (readable, not durable), consecutive ops in
    /// one batch as the module docs say; their callbacks wait for
    /// [`Self::persist_written`].
    fn write_group(&mut self, group: Vec<Msg>) -> Written {
        let mut stop = false;
        let mut pending = Pending::default();
        let mut group = group.into_iter();
        while let Some(msg) = group.next() {
            match msg {
                Msg::Op(op) => {
                    self.written += 1;
                    let ranged = op.muts.iter().any(|m| matches!(m, Mutation::DelRange(..)));
                    if ranged || !pending.fits(&op.muts) {
                        self.write_pending(&mut pending);
                    }
                    pending.add(op);
                    if ranged {
                        self.write_pending(&mut pending);
                    }
                }
                Msg::Sync(d) => self.dones.push((d, None)),
                Msg::Stop => stop = true,
                Msg::PowerCut(reply) => {
                    // Nothing written since the last fsync was synced: it
                    // is lost with the rest, and so are the ops queued
                    // after the cut (those not written yet with them).
                    // Their callbacks are dropped, never called: a process
                    // that loses power reports nothing.
                    drop(pending);
                    self.dones.clear();
                    for m in group.by_ref() {
                        if let Msg::PowerCut(d) = m {
                            d(Err(io_err("journal is closed")));
                        }
                    }
                    reply(self.undo_unsynced());
                    return Written::Cut;
                }
            }
        }
        self.write_pending(&mut pending);
        if stop {
            Written::Stop
        } else {
            Written::More
        }
    }

    /// Writes the ops gathered in `pending` as one batch, then runs their
    /// `visible` hooks and queues their callbacks for the fsync.
    fn write_pending(&mut self, pending: &mut Pending) {
        if pending.calls.is_empty() {
            return;
        }
        let Pending { muts, calls, .. } = std::mem::take(pending);
        let res = self.write(muts);
        for (visible, done) in calls {
            if res.is_ok() {
                if let Some(v) = visible {
                    v();
                }
            }
            if let Some(d) = done {
                let err = res
                    .as_ref()
                    .err()
                    .map(|e| io::Error::new(e.kind(), e.to_string()));
                self.dones.push((d, err));
            }
        }
    }

    /// Makes everything written so far durable with one fsync, then calls
    /// the callbacks that waited for it.
    fn persist_written(&mut self) {
        let n_ops = std::mem::take(&mut self.written);
        self.stats.ops.fetch_add(n_ops, Ordering::Relaxed);
        if self.dones.is_empty() {
            // Only hints (e.g. committed markers): they ride along with
            // the next fsync.
            return;
        }
        let dones = std::mem::take(&mut self.dones);
        let mode = if self.fsync {
            PersistMode::SyncData
        } else {
            PersistMode::Buffer
        };
        let started = std::time::Instant::now(); // a real duration: the fsync's
        let persisted = match self.failure.get() {
            // no fsync behind a failed write: what it covers is unknown
            Some(why) => Err(io_err(why)),
            None => self.db.persist(mode).map_err(io_err),
        };
        match &persisted {
            Err(e) => self.failure.set(e),
            Ok(()) => {
                if let Some(mark) = &self.mark {
                    if let Err(e) = mark.record(self.seq) {
                        tracing::warn!(error = %e, "the journal's high-water mark was not written");
                    }
                }
            }
        }
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        // docs/metrics.md; the recorder is the server's (a no-op without one)
        metrics::histogram!("admit_journal_fsync_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("admit_journal_entries_per_fsync").record(n_ops as f64);
        if persisted.is_ok() && mode != PersistMode::Buffer {
            if let Some(u) = &mut self.unsynced {
                u.clear();
            }
        }
        for (done, err) in dones {
            let r = match (&persisted, err) {
                (_, Some(e)) => Err(e),
                (Err(e), None) => Err(io_err(e)),
                (Ok(()), None) => Ok(()),
            };
            done(r);
        }
    }

    /// Write one batch of ops' mutations atomically (journal buffer +
    /// memtable, no fsync), numbered with the next write sequence. After a failed write
    /// nothing is written any more.
    fn write(&mut self, mut muts: Vec<Mutation>) -> io::Result<()> {
        if let Some(why) = self.failure.get() {
            return Err(io_err(format!(
                "not written: an earlier journal write failed: {why}"
            )));
        }
        if self.failure.inject.load(Ordering::SeqCst) {
            let e = io::Error::from_raw_os_error(28);
            self.failure.set(&e);
            return Err(e);
        }
        muts.push(Mutation::Put(
            Ks::Meta,
            SEQ_KEY.to_vec(),
            watermark::seq_value(self.seq + 1),
        ));
        let mut unsynced = self.unsynced.take();
        let r = self.write_batch(muts, unsynced.as_mut());
        self.unsynced = unsynced;
        match &r {
            Ok(()) => self.seq += 1,
            Err(e) => self.failure.set(e),
        }
        r
    }

    fn write_batch(
        &self,
        muts: Vec<Mutation>,
        mut unsynced: Option<&mut Unsynced>,
    ) -> io::Result<()> {
        let mut batch = self.db.batch();
        for m in muts {
            match m {
                Mutation::Put(ks, k, v) => {
                    if let Some(u) = unsynced.as_deref_mut() {
                        if let Entry::Vacant(e) = u.entry((ks, k.clone())) {
                            let old = self.ks(ks).get(&k).map_err(io_err)?;
                            e.insert(old.map(|v| v.to_vec()));
                        }
                    }
                    batch.insert(self.ks(ks), k, v);
                }
                Mutation::DelRange(ks, from, to) => {
                    let tree = self.ks(ks);
                    for guard in tree.range(from.as_slice()..to.as_slice()) {
                        let (key, value) = guard.into_inner().map_err(io_err)?;
                        if let Some(u) = unsynced.as_deref_mut() {
                            u.entry((ks, key.to_vec()))
                                .or_insert_with(|| Some(value.to_vec()));
                        }
                        batch.remove(tree, key);
                    }
                }
            }
        }
        batch.commit().map_err(io_err)
    }

    /// The power cut: every key changed since the last fsync gets its value
    /// from before the change back, and that state is made durable.
    fn undo_unsynced(&mut self) -> io::Result<()> {
        let Some(unsynced) = self.unsynced.take() else {
            return Err(io_err("the journal does not track unsynced writes"));
        };
        let mut batch = self.db.batch();
        for ((ks, key), old) in unsynced {
            match old {
                Some(v) => batch.insert(self.ks(ks), key, v),
                None => batch.remove(self.ks(ks), key),
            }
        }
        batch.commit().map_err(io_err)?;
        self.db.persist(PersistMode::SyncAll).map_err(io_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: u8, v: &str) -> Mutation {
        Mutation::Put(Ks::Logs, vec![k], v.as_bytes().to_vec())
    }

    /// An op whose callbacks record, in `log`, that they ran.
    fn op(muts: Vec<Mutation>, log: &Arc<Mutex<Vec<String>>>, name: &str) -> Msg {
        let (l1, l2, n1, n2) = (log.clone(), log.clone(), name.to_string(), name.to_string());
        Msg::Op(Op {
            muts,
            visible: Some(Box::new(move || lock(&l1).push(format!("{n1} visible")))),
            done: Some(Box::new(move |r| {
                lock(&l2).push(format!("{n2} {}", r.is_ok()))
            })),
        })
    }

    fn read(j: &Journal, k: u8) -> Option<String> {
        j.logs
            .get([k])
            .unwrap()
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    /// Ops of one group share batches, yet each reads as written in order:
    /// a key put twice holds the later value, and a range removed after
    /// puts in the same group removes them.
    #[test]
    fn a_group_s_ops_share_batches_and_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(
            dir.path(),
            true,
            Duration::ZERO,
            Duration::ZERO,
            false,
            true,
        )
        .unwrap();
        let mut w = lock(&j.inline.as_ref().unwrap().worker).take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let seq = w.seq;
        let group = vec![
            op(vec![put(1, "a"), put(2, "a")], &log, "op1"),
            op(vec![put(3, "a")], &log, "op2"),
            op(vec![put(4, "a")], &log, "op3"),
        ];
        assert_eq!(w.write_group(group), Written::More);
        assert_eq!(w.seq, seq + 1, "three ops, one batch");
        // written and readable, not acknowledged before the fsync
        assert_eq!(
            *lock(&log),
            ["op1 visible", "op2 visible", "op3 visible"].map(String::from)
        );
        w.persist_written();
        assert_eq!(
            lock(&log)[3..],
            ["op1 true", "op2 true", "op3 true"].map(String::from)
        );

        lock(&log).clear();
        let group = vec![
            op(vec![put(5, "a")], &log, "op4"),
            // the same key again: the later value holds
            op(vec![put(5, "b"), put(6, "b")], &log, "op5"),
            // a range over keys written in this group and before it
            op(
                vec![Mutation::DelRange(Ks::Logs, vec![2], vec![6])],
                &log,
                "op6",
            ),
            op(vec![put(3, "c")], &log, "op7"),
        ];
        assert_eq!(w.write_group(group), Written::More);
        // op4 | op5 (key 5 again) | op6 (a range goes alone) | op7
        assert_eq!(w.seq, seq + 5, "a repeated key and a range start batches");
        w.persist_written();
        let got: Vec<_> = (1..=6).map(|k| read(&j, k)).collect();
        let want = [Some("a"), None, Some("c"), None, None, Some("b")];
        assert_eq!(got, want.map(|v| v.map(String::from)));
        assert_eq!(lock(&log).len(), 8, "every op visible and acknowledged");
        assert!(lock(&log).iter().all(|l| !l.ends_with("false")));
    }
}
