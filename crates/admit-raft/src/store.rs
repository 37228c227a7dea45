//! Per-group Raft log storage on the shared [`Journal`].
//!
//! Every mutation goes through the journal's single writer thread, in the
//! order the group issued it, so what survives a crash is always a prefix of
//! the group's operations.
//!
//! The newest entries of each group stay in an in-memory tail cache (the
//! `pending` map) from the moment `append` is called: they are readable at once
//! (the leader replicates entries before its own fsync completes), and the state
//! machine, which reads every committed entry back to apply it, and replication
//! to followers that keep up are served from memory instead of the LSM tree. The
//! cache always holds a contiguous suffix of the log (appends continue the log;
//! truncation and purge cut it at the same indexes), at most
//! [`TAIL_CACHE_ENTRIES`] entries; a read that starts inside it needs no disk.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use crate::codec::decode_entry;
use crate::journal::{io_err, Journal, Ks, Mutation, Op};
use crate::types::{EntryT, LogIdT, VoteT, C};
use crate::App;

pub(crate) const TAG_VOTE: u8 = 1;
pub(crate) const TAG_COMMITTED: u8 = 2;
pub(crate) const TAG_PURGED: u8 = 3;

pub(crate) fn log_key(shard: u32, index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(12);
    k.extend_from_slice(&shard.to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Exclusive upper key bound for `index` (handles `u64::MAX`).
fn log_key_end(shard: u32, end_exclusive: Option<u64>) -> Vec<u8> {
    match end_exclusive {
        Some(e) => log_key(shard, e),
        None => {
            // Every key of this shard is < shard ++ [0xff; 8] ++ [0].
            let mut k = log_key(shard, u64::MAX);
            k.push(0);
            k
        }
    }
}

pub(crate) fn meta_key(shard: u32, tag: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(5);
    k.extend_from_slice(&shard.to_be_bytes());
    k.push(tag);
    k
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(io_err)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    postcard::from_bytes(b).map_err(io_err)
}

/// Entries kept in memory per group (the newest ones).
///
/// Enough for applying (a committed entry is applied right after its commit)
/// and for followers within a few hundred entries; a follower further behind
/// reads from the journal. Each entry holds its commands decoded, a few hundred
/// bytes apiece: 2,048 per group held about 95 MB with 64 groups
/// (docs/benchmarks.md, the memory profile).
pub(crate) const TAIL_CACHE_ENTRIES: usize = 256;

struct Pending<A: App> {
    seq: u64,
    entry: EntryT<A>,
    /// In the memtable: the cache may drop it from then on.
    visible: bool,
}

struct GroupLog<A: App> {
    pending: Mutex<BTreeMap<u64, Pending<A>>>,
    seq: AtomicU64,
    vote: Mutex<Option<VoteT<A>>>,
    committed: Mutex<Option<LogIdT<A>>>,
    purged: Mutex<Option<LogIdT<A>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Raft log storage of one group. Cheap to clone (it is also the log reader).
pub(crate) struct LogStore<A: App> {
    shard: u32,
    journal: Arc<Journal>,
    g: Arc<GroupLog<A>>,
}

impl<A: App> Clone for LogStore<A> {
    fn clone(&self) -> Self {
        Self {
            shard: self.shard,
            journal: self.journal.clone(),
            g: self.g.clone(),
        }
    }
}

impl<A: App> LogStore<A> {
    /// Open the log of `shard`, loading its markers from disk.
    pub(crate) fn open(shard: u32, journal: Arc<Journal>) -> io::Result<Self> {
        let read = |tag| -> io::Result<Option<Vec<u8>>> {
            Ok(journal
                .meta
                .get(meta_key(shard, tag))
                .map_err(io_err)?
                .map(|v| v.to_vec()))
        };
        let vote = read(TAG_VOTE)?.map(|b| decode(&b)).transpose()?;
        let committed = read(TAG_COMMITTED)?
            .map(|b| decode::<Option<LogIdT<A>>>(&b))
            .transpose()?
            .flatten();
        let purged = read(TAG_PURGED)?
            .map(|b| decode::<Option<LogIdT<A>>>(&b))
            .transpose()?
            .flatten();
        Ok(Self {
            shard,
            journal,
            g: Arc::new(GroupLog {
                pending: Mutex::new(BTreeMap::new()),
                seq: AtomicU64::new(0),
                vote: Mutex::new(vote),
                committed: Mutex::new(committed),
                purged: Mutex::new(purged),
            }),
        })
    }

    fn bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e.checked_add(1),
            Bound::Excluded(e) => Some(*e),
            Bound::Unbounded => None,
        };
        (start, end)
    }

    fn read_range(&self, start: u64, end: Option<u64>) -> io::Result<Vec<EntryT<A>>> {
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        // The cache first: it holds a contiguous suffix of the log up to the last
        // entry, so a read starting inside it is complete without the disk. An
        // entry leaves the cache only after it reached the memtable (it is cut
        // from the front long after its append was made visible), so reading the
        // cache and then the disk never misses one.
        let mut out: BTreeMap<u64, EntryT<A>> = {
            let p = lock(&self.g.pending);
            let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
            let range = p.range((Bound::Included(start), upper));
            if p.first_key_value()
                .is_some_and(|(first, _)| *first <= start)
            {
                return Ok(range.map(|(_, e)| e.entry.clone()).collect());
            }
            range.map(|(i, e)| (*i, e.entry.clone())).collect()
        };
        let from = log_key(self.shard, start);
        let to = log_key_end(self.shard, end);
        for guard in self.journal.logs.range(from.as_slice()..to.as_slice()) {
            let (k, v) = guard.into_inner().map_err(io_err)?;
            let mut idx = [0u8; 8];
            idx.copy_from_slice(&k[4..12]);
            let idx = u64::from_be_bytes(idx);
            if let std::collections::btree_map::Entry::Vacant(slot) = out.entry(idx) {
                slot.insert(decode_entry::<A>(&v)?);
            }
        }
        Ok(out.into_values().collect())
    }

    fn last_on_disk(&self) -> io::Result<Option<LogIdT<A>>> {
        let from = log_key(self.shard, 0);
        let to = log_key_end(self.shard, None);
        match self
            .journal
            .logs
            .range(from.as_slice()..to.as_slice())
            .next_back()
        {
            Some(g) => {
                let (_, v) = g.into_inner().map_err(io_err)?;
                let e: EntryT<A> = decode_entry::<A>(&v)?;
                Ok(Some(e.log_id()))
            }
            None => Ok(None),
        }
    }
}

impl<A: App> RaftLogReader<C<A>> for LogStore<A> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryT<A>>, io::Error> {
        let (start, end) = Self::bounds(&range);
        self.read_range(start, end)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteT<A>>, io::Error> {
        Ok(*lock(&self.g.vote))
    }
}

impl<A: App> RaftLogStorage<C<A>> for LogStore<A> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C<A>>, io::Error> {
        let purged = *lock(&self.g.purged);
        let pending_last = lock(&self.g.pending)
            .last_key_value()
            .map(|(_, p)| p.entry.log_id());
        let last = match pending_last {
            Some(l) => Some(l),
            None => self.last_on_disk()?,
        };
        let last = last.or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteT<A>) -> Result<(), io::Error> {
        let bytes = encode(vote)?;
        self.journal
            .submit_wait(vec![Mutation::Put(
                Ks::Meta,
                meta_key(self.shard, TAG_VOTE),
                bytes,
            )])
            .await?;
        *lock(&self.g.vote) = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogIdT<A>>) -> Result<(), io::Error> {
        // Not awaited: the committed marker is only a recovery hint; it
        // becomes durable with the next group fsync.
        let bytes = encode(&committed)?;
        *lock(&self.g.committed) = committed;
        self.journal.submit(Op {
            muts: vec![Mutation::Put(
                Ks::Meta,
                meta_key(self.shard, TAG_COMMITTED),
                bytes,
            )],
            visible: None,
            done: None,
        });
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdT<A>>, io::Error> {
        Ok(*lock(&self.g.committed))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C<A>>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryT<A>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let seq = self.g.seq.fetch_add(1, Ordering::Relaxed);
        let mut muts = Vec::new();
        let mut indexes = Vec::new();
        {
            let mut pending = lock(&self.g.pending);
            for e in entries {
                let idx = e.index();
                muts.push(Mutation::Put(
                    Ks::Logs,
                    log_key(self.shard, idx),
                    encode(&e)?,
                ));
                indexes.push(idx);
                pending.insert(
                    idx,
                    Pending {
                        seq,
                        entry: e,
                        visible: false,
                    },
                );
            }
        }
        let g = self.g.clone();
        self.journal.submit(Op {
            muts,
            visible: Some(Box::new(move || {
                let mut pending = lock(&g.pending);
                for idx in indexes {
                    // a truncation may have replaced the entry meanwhile (other seq)
                    if let Some(p) = pending.get_mut(&idx).filter(|p| p.seq == seq) {
                        p.visible = true;
                    }
                }
                // keep the newest entries; drop old ones once the disk has them
                while pending.len() > TAIL_CACHE_ENTRIES {
                    match pending.first_entry() {
                        Some(first) if first.get().visible => {
                            first.remove();
                        }
                        _ => break,
                    }
                }
            })),
            done: Some(Box::new(move |r| callback.io_completed(r))),
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdT<A>>) -> Result<(), io::Error> {
        let from = last_log_id.as_ref().map_or(0, |l| l.index + 1);
        {
            let mut pending = lock(&self.g.pending);
            pending.split_off(&from);
        }
        self.journal
            .submit_wait(vec![Mutation::DelRange(
                Ks::Logs,
                log_key(self.shard, from),
                log_key_end(self.shard, None),
            )])
            .await
    }

    async fn purge(&mut self, log_id: LogIdT<A>) -> Result<(), io::Error> {
        let bytes = encode(&Some(log_id))?;
        let upto = log_id.index;
        *lock(&self.g.purged) = Some(log_id);
        {
            let mut pending = lock(&self.g.pending);
            let keep = pending.split_off(&(upto.saturating_add(1)));
            *pending = keep;
        }
        self.journal
            .submit_wait(vec![
                Mutation::Put(Ks::Meta, meta_key(self.shard, TAG_PURGED), bytes),
                Mutation::DelRange(
                    Ks::Logs,
                    log_key(self.shard, 0),
                    log_key_end(self.shard, upto.checked_add(1)),
                ),
            ])
            .await
    }
}
