//! Recovery from damaged data dirs (issue 11), on real files: a node writes
//! and syncs, stops like a crash, and its journal is then cut or damaged
//! before it starts again.
//!
//! * A tail cut mid-record (a torn write): the node starts with every
//!   write that was acknowledged before the cut and a prefix of the rest.
//! * A cut below what was fsynced, or a byte flipped inside older data:
//!   the node refuses to start with an error that names the data dir and
//!   says to rebuild it from its peers (or, never seen, recovers exactly).
//! * Random damage to any file of the data dir: the node starts with every
//!   acknowledged write or refuses; it never panics (fjall's decoder has
//!   debug assertions that fire on damage: the journal catches them and
//!   refuses, and the tests count them against those refusals) and never
//!   serves with a write missing. `PROPTEST_CASES` sets the number of cases (default 10),
//!   `HOSTILE_SEED` replays one run.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use admit_raft::{NodeConfig, RaftNode, StartError};
use common::{config, hostile_seed, ids, Add, Counters, Rng};

type Node = RaftNode<Counters>;

const SHARDS: u32 = 2;
/// Writes before the first crash, and in all.
const FIRST: u64 = 20;
const ALL: u64 = 40;

static PANICS: AtomicUsize = AtomicUsize::new(0);
/// The tests that count panics run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether a refusal is a panic of fjall's reader that the journal caught
/// (a debug assertion of its decoder, in debug builds).
fn caught(e: &StartError) -> bool {
    e.to_string().contains("reading them failed")
}

fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            hook(info);
        }));
    });
}

fn cfg(dir: &Path) -> NodeConfig {
    let mut c = config(dir, SHARDS);
    c.fsync = true;
    c.startup_timeout = Duration::from_secs(30);
    c
}

async fn start(dir: &Path) -> Result<Node, StartError> {
    tokio::time::timeout(
        Duration::from_secs(60),
        RaftNode::start(cfg(dir), |_| Counters::default()),
    )
    .await
    .expect("start ended within 60 s")
}

fn add(id: u64) -> (u32, Add) {
    let cmd = Add {
        key: "k".into(),
        id,
        by: 1,
    };
    ((id % SHARDS as u64) as u32, cmd)
}

/// Writes `ids` one after another, each acknowledged before the next.
async fn write_all(node: &Node, ids: std::ops::Range<u64>) {
    for id in ids {
        let (shard, cmd) = add(id);
        node.write(shard, cmd).await.expect("acknowledged");
    }
}

/// The ids every shard applied, sorted, after one more write per shard
/// (which commits whatever the log holds); those writes' ids are left out.
async fn applied(node: &Node) -> Vec<u64> {
    let mut all = Vec::new();
    for s in 0..SHARDS {
        let cmd = Add {
            key: "sentinel".into(),
            id: 0,
            by: 1,
        };
        node.write(s, cmd).await.expect("a write after recovery");
        all.extend(ids(node, s, "k").await);
    }
    all.sort_unstable();
    all
}

/// The journal file fjall writes into (the highest number).
fn newest_journal(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
        .max_by_key(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
        })
        .expect("a journal file")
}

/// Where the journal's records end (a new file is preallocated with zeros;
/// the last record ends with non-zero trailer bytes).
fn used(path: &Path) -> u64 {
    let b = std::fs::read(path).unwrap();
    b.iter().rposition(|x| *x != 0).map_or(0, |i| i as u64 + 1)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn cut(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

/// A data dir whose node acknowledged `0..FIRST`, crashed, restarted,
/// acknowledged `FIRST..ALL` and crashed again; where the first run's
/// records end in the newest journal file, and the high-water mark file as
/// it was then.
struct Damaged {
    dir: tempfile::TempDir,
    journal: PathBuf,
    first_end: u64,
    end: u64,
    first_mark: Vec<u8>,
}

impl Damaged {
    async fn write() -> Damaged {
        let dir = tempfile::tempdir().unwrap();
        let node = start(dir.path()).await.unwrap();
        write_all(&node, 0..FIRST).await;
        node.crash().await;
        drop(node);
        let journal = newest_journal(dir.path());
        let first_end = used(&journal);
        let first_mark = std::fs::read(dir.path().join("journal.hwm")).unwrap();
        let node = start(dir.path()).await.unwrap();
        write_all(&node, FIRST..ALL).await;
        node.crash().await;
        drop(node);
        assert_eq!(newest_journal(dir.path()), journal, "fjall kept one file");
        let end = used(&journal);
        assert!(end > first_end);
        Damaged {
            dir,
            journal,
            first_end,
            end,
            first_mark,
        }
    }

    /// A copy of the data dir, and its newest journal file.
    fn copy(&self) -> (tempfile::TempDir, PathBuf) {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(self.dir.path(), copy.path());
        let j = copy
            .path()
            .join(self.journal.strip_prefix(self.dir.path()).unwrap());
        (copy, j)
    }
}

/// The refusal of a damaged data dir: it names the dir and the remedy.
fn assert_refusal(e: &StartError, dir: &Path) {
    let msg = e.to_string();
    assert!(
        msg.contains(&dir.display().to_string()),
        "the error names the data dir: {msg}"
    );
    assert!(
        msg.contains("rebuild this node from its peers"),
        "the error says what to do: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_recovers_every_acknowledged_write() {
    let d = Damaged::write().await;
    let (a, b) = (d.first_end, d.end);
    let span = b - a;
    for at in [a, a + 1, a + span / 3, a + span / 2, b - 9, b - 1, b] {
        // the crash cut the second run's writes at `at`: what was fsynced
        // then is at most the first run's (the mark says so)
        let (copy, journal) = d.copy();
        cut(&journal, at);
        std::fs::write(copy.path().join("journal.hwm"), &d.first_mark).unwrap();
        let node = start(copy.path())
            .await
            .unwrap_or_else(|e| panic!("cut at {at} of {a}..{b}: {e}"));
        let ids = applied(&node).await;
        let n = ids.len() as u64;
        assert_eq!(ids, (0..n).collect::<Vec<_>>(), "a prefix, cut at {at}");
        assert!(n >= FIRST, "cut at {at}: {n} writes, {FIRST} acknowledged");
        if at == b {
            assert_eq!(n, ALL);
        }
        println!("cut at {at} of {a}..{b}: {n} writes recovered");
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_below_what_was_fsynced_is_refused() {
    let d = Damaged::write().await;
    let (copy, journal) = d.copy();
    cut(&journal, d.first_end + (d.end - d.first_end) / 2);
    let e = start(copy.path()).await.expect_err("refused");
    assert_refusal(&e, copy.path());
    assert!(
        e.to_string().contains("acknowledged writes are lost"),
        "{e}"
    );
    // and again: the refusal holds on the next start
    let e = start(copy.path()).await.expect_err("refused again");
    assert_refusal(&e, copy.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_older_data_is_refused() {
    let _serial = SERIAL.lock().await;
    count_panics();
    let before = PANICS.load(Ordering::SeqCst);
    let d = Damaged::write().await;
    let (mut refused, mut caught_panics) = (0, 0);
    for k in 1..=6u64 {
        let at = d.first_end * k / 7;
        let (copy, journal) = d.copy();
        let mut bytes = std::fs::read(&journal).unwrap();
        bytes[at as usize] ^= 0x5a;
        std::fs::write(&journal, bytes).unwrap();
        match start(copy.path()).await {
            Err(e) => {
                assert_refusal(&e, copy.path());
                println!("byte {at} flipped: refused: {e}");
                refused += 1;
                caught_panics += usize::from(caught(&e));
            }
            Ok(node) => {
                assert_eq!(applied(&node).await, (0..ALL).collect::<Vec<_>>());
                println!("byte {at} flipped: recovered exactly");
                node.shutdown().await.unwrap();
            }
        }
    }
    assert!(refused > 0);
    assert_eq!(
        PANICS.load(Ordering::SeqCst) - before,
        caught_panics,
        "a panic that was not turned into a refusal"
    );
}

/// A flipped byte in the entry count of an archive's table of contents
/// (fjall's version files and tables): the reader reserved room for the
/// count it read, up to ~140 GB, and the process aborted. Now refused,
/// naming the file. (Found by `random_damage_never_panics_...` in CI.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_archive_count_is_refused_not_an_abort() {
    let d = Damaged::write().await;
    let (copy, _) = d.copy();
    let mut all = Vec::new();
    files(copy.path(), &mut all);
    all.sort();
    let mut damaged = 0;
    for file in &all {
        let mut bytes = std::fs::read(file).unwrap();
        let n = bytes.len();
        if n < 38 || &bytes[n - 38..n - 34] != b"SFA!" {
            continue;
        }
        let toc = u64::from_le_bytes(bytes[n - 16..n - 8].try_into().unwrap()) as usize;
        assert_eq!(&bytes[toc..toc + 4], b"TOC!", "{}", file.display());
        bytes[toc + 7] ^= 0x80; // the count's top byte: 2^31 more entries
        std::fs::write(file, &bytes).unwrap();
        damaged += 1;
        let e = start(copy.path()).await.expect_err("refused");
        assert_refusal(&e, copy.path());
        // a version file's own checksum (in its tree's `current`) finds it first
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        println!("{}: refused: {e}", file.display());
        bytes[toc + 7] ^= 0x80;
        std::fs::write(file, &bytes).unwrap();
    }
    assert!(damaged > 0, "the data dir holds archives");
    // and undamaged again, it opens with every write
    let node = start(copy.path()).await.unwrap();
    assert_eq!(applied(&node).await, (0..ALL).collect::<Vec<_>>());
    node.shutdown().await.unwrap();
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.file_name().is_some_and(|n| n != "lock") {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_damage_never_panics_and_never_serves_a_lost_write() {
    let _serial = SERIAL.lock().await;
    count_panics();
    let before = PANICS.load(Ordering::SeqCst);
    let mut caught_panics = 0;
    let cases: u64 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed = hostile_seed();
    println!("{cases} cases, HOSTILE_SEED={seed}");
    let d = Damaged::write().await;
    let mut rng = Rng(seed);
    let (mut started, mut refused) = (0, 0);
    for _ in 0..cases {
        let (copy, _) = d.copy();
        let mut all = Vec::new();
        files(copy.path(), &mut all);
        all.sort();
        let file = &all[rng.below(all.len() as u64) as usize];
        let mut bytes = std::fs::read(file).unwrap();
        // damage within what was written (a journal's zeros after its
        // records are nothing)
        let len = if file.extension().is_some_and(|e| e == "jnl") {
            used(file)
        } else {
            bytes.len() as u64
        };
        let what = match rng.below(4) {
            0 if len > 0 => {
                let at = rng.below(len) as usize;
                bytes[at] ^= 1 + rng.below(255) as u8;
                format!("byte {at} flipped")
            }
            1 => {
                let at = rng.below(len + 1) as usize;
                bytes.truncate(at);
                format!("cut at {at}")
            }
            2 if len > 0 => {
                let at = rng.below(len) as usize;
                let n = (1 + rng.below(64) as usize).min(bytes.len() - at);
                bytes[at..at + n].fill(0);
                format!("{n} bytes zeroed at {at}")
            }
            _ => {
                let at = rng.below(len + 1) as usize;
                let junk: Vec<u8> = (0..1 + rng.below(32)).map(|_| rng.next() as u8).collect();
                let n = junk.len();
                bytes.splice(at..at, junk);
                format!("{n} bytes inserted at {at}")
            }
        };
        std::fs::write(file, &bytes).unwrap();
        let name = file
            .strip_prefix(copy.path())
            .unwrap()
            .display()
            .to_string();
        match start(copy.path()).await {
            Err(e) => {
                assert!(!e.to_string().is_empty());
                println!("{name}: {what}: refused: {e}");
                refused += 1;
                caught_panics += usize::from(caught(&e));
            }
            Ok(node) => {
                let ids = applied(&node).await;
                assert_eq!(
                    ids,
                    (0..ALL).collect::<Vec<_>>(),
                    "{name}: {what}: started without every acknowledged write (seed {seed})"
                );
                println!("{name}: {what}: recovered exactly");
                started += 1;
                node.shutdown().await.unwrap();
            }
        }
        assert_eq!(
            PANICS.load(Ordering::SeqCst) - before,
            caught_panics,
            "{name}: {what}: a panic not turned into a refusal (seed {seed})"
        );
    }
    println!("{started} started with every write, {refused} refused");
}

/// Removes the Raft log entries `indexes` of `shard` from the data dir's
/// journal behind the node's back (what a journal file lost in the middle
/// leaves): the write sequence stays, so only the log check can see it.
fn remove_entries(dir: &Path, shard: u32, indexes: std::ops::RangeInclusive<u64>) {
    let db = fjall::Database::builder(dir.join("journal"))
        .open()
        .unwrap();
    let logs = db
        .keyspace("raft_logs", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    for i in indexes {
        let mut k = shard.to_be_bytes().to_vec();
        k.extend_from_slice(&i.to_be_bytes());
        logs.remove(k).unwrap();
    }
    db.persist(fjall::PersistMode::SyncAll).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_with_a_hole_or_a_short_tail_is_refused() {
    let d = Damaged::write().await;
    // a hole in the middle of shard 0's log
    let (copy, _) = d.copy();
    remove_entries(copy.path(), 0, 5..=6);
    let e = start(copy.path()).await.expect_err("refused");
    assert_refusal(&e, copy.path());
    assert!(
        e.to_string()
            .contains("group 0: Raft log entries 5..=6 are missing"),
        "{e}"
    );
    // the newest entries of shard 1 gone, below its committed marker
    let (copy, _) = d.copy();
    remove_entries(copy.path(), 1, 15..=200);
    let e = start(copy.path()).await.expect_err("refused");
    assert_refusal(&e, copy.path());
    assert!(e.to_string().contains("group 1: entry"), "{e}");
    assert!(
        e.to_string()
            .contains("was committed, but the stored log ends at 14"),
        "{e}"
    );
}
