//! Single-node behaviour: writes, restart, snapshot + purge, kill -9.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use admit_raft::{RaftNode, WriteError};
use common::{config, kill_writer_config, Add, Counters, State};

async fn states(node: &RaftNode<Counters>) -> Vec<State> {
    let mut out = Vec::new();
    for shard in 0..node.shards() {
        let s = node
            .with_app(shard, |a: &Counters| a.state.lock().unwrap().clone())
            .await
            .unwrap();
        out.push(s);
    }
    out
}

fn add(key: &str, id: u64) -> Add {
    Add {
        key: key.to_string(),
        id,
        by: id % 7 + 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reads_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = RaftNode::start(config(dir.path(), 4), |_| Counters::default())
        .await
        .unwrap();

    let mut expected: BTreeMap<(u32, String), u64> = BTreeMap::new();
    for id in 0..200u64 {
        let shard = (id % 4) as u32;
        let key = format!("k{}", id % 5);
        let resp = node.write(shard, add(&key, id)).await.unwrap();
        let e = expected.entry((shard, key)).or_default();
        *e += id % 7 + 1;
        assert_eq!(resp, *e);
    }

    // Concurrent writes from many tasks.
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20u64 {
                let id = 1_000 + t * 100 + i;
                node.write((t % 4) as u32, add("c", id)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let st = states(&node).await;
    let total_c: usize = st
        .iter()
        .map(|s| s.counters.get("c").map_or(0, |c| c.1.len()))
        .sum();
    assert_eq!(total_c, 32 * 20);
    assert!(st.iter().all(|s| !s.index_went_back));

    // A submission of several commands is one entry, applied in order.
    let before = states(&node).await[1].entries;
    let rs = node
        .write_many(1, (0..10).map(|i| add("m", 5_000 + i)).collect())
        .await
        .unwrap();
    assert_eq!(rs.len(), 10);
    let totals = rs;
    let mut sum = 0;
    let want: Vec<u64> = (0..10u64)
        .map(|i| {
            sum += (5_000 + i) % 7 + 1;
            sum
        })
        .collect();
    assert_eq!(totals, want);
    let s1 = &states(&node).await[1];
    assert_eq!(s1.entries, before + 1);
    assert_eq!(s1.counters["m"].1, (5_000..5_010).collect::<Vec<u64>>());

    // Reads.
    for shard in 0..4 {
        node.ensure_linearizable(shard).await.unwrap();
        // the synchronous check reads metrics, which follow the apply that
        // answered the last write by a moment
        let deadline = Instant::now() + 100 * config(dir.path(), 4).election_timeout.1;
        while !node.is_leader_with_lease(shard) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(node.is_leader_with_lease(shard), "lease on shard {shard}");
        assert_eq!(node.leader(shard), Some(1));
    }

    // Bad input never panics.
    assert_eq!(
        node.write(99, add("x", 1)).await,
        Err(WriteError::NoSuchShard(99))
    );
    assert!(node.ensure_linearizable(99).await.is_err());
    assert!(!node.is_leader_with_lease(99));

    let c = node.journal_counters();
    assert!(c.fsyncs > 0 && c.ops >= c.fsyncs);
    node.shutdown().await.unwrap();
}

/// Concurrent proposals to one group leave in shared entries, and every
/// caller still gets the response of its own command.
///
/// On the single-threaded runtime the count does not depend on scheduling:
/// the 400 spawned tasks run (and submit) in spawn order before the
/// proposer task, which the first submission woke, gets its turn.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_writes_are_batched_and_answered_each() {
    let dir = tempfile::tempdir().unwrap();
    let node = RaftNode::start(config(dir.path(), 1), |_| Counters::default())
        .await
        .unwrap();
    let before = states(&node).await[0].entries;
    const N: u64 = 400;
    let tasks: Vec<_> = (0..N)
        .map(|id| {
            let node = node.clone();
            // each key is written once, so its total is this command's `by`
            tokio::spawn(async move { (id, node.write(0, add(&format!("b{id}"), id)).await) })
        })
        .collect();
    for t in tasks {
        let (id, r) = t.await.unwrap();
        assert_eq!(r.unwrap(), id % 7 + 1, "response of command {id}");
    }
    let s = &states(&node).await[0];
    let entries = s.entries - before;
    assert_eq!(
        s.counters.keys().filter(|k| k.starts_with('b')).count(),
        N as usize
    );
    assert!(!s.index_went_back);
    // two entries in flight at most: the rest of the 400 queue and share
    assert!(entries < N, "{entries} entries for {N} concurrent commands");
    eprintln!("{N} concurrent commands in {entries} entries");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recovers_identical_state() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let node = RaftNode::start(config(dir.path(), 3), |_| Counters::default())
            .await
            .unwrap();
        for id in 0..150u64 {
            node.write((id % 3) as u32, add(&format!("k{}", id % 4), id))
                .await
                .unwrap();
        }
        let s = states(&node).await;
        node.shutdown().await.unwrap();
        s
    };
    let node = RaftNode::start(config(dir.path(), 3), |_| Counters::default())
        .await
        .unwrap();
    assert_eq!(states(&node).await, before);
    // And it keeps working.
    node.write(0, add("after", 1)).await.unwrap();
    node.shutdown().await.unwrap();
    drop(node); // its journal's lock goes with it

    // Unless the count was only a default (no count configured): the data dir
    // keeps the 3 shards it was created with, and its state.
    let node = start_with_default_count(dir.path(), 5).await;
    assert_eq!(node.shards(), 3);
    let mut again = before.clone();
    again[0] = states(&node).await[0].clone();
    assert_eq!(
        states(&node).await,
        again,
        "shards 1 and 2 as before the restarts"
    );
    assert_ne!(
        again[0], before[0],
        "shard 0 has the write made after the first restart"
    );
    node.write(2, add("default", 2)).await.unwrap();
    node.shutdown().await.unwrap();
    drop(node);

    // A different shard count on the same data dir is refused when configured.
    assert_refused(dir.path(), 5, 3).await;
}

/// Starts a node whose shard count is only a default.
async fn start_with_default_count(dir: &std::path::Path, shards: u32) -> RaftNode<Counters> {
    let mut cfg = config(dir, shards);
    cfg.shards_from_data_dir = true;
    RaftNode::start(cfg, |_| Counters::default()).await.unwrap()
}

/// A count given explicitly must be the data dir's.
async fn assert_refused(dir: &std::path::Path, shards: u32, created_with: u32) {
    match RaftNode::start(config(dir, shards), |_| Counters::default()).await {
        Err(e) => assert!(
            format!("{e:?}").contains(&format!("{created_with} shards")),
            "{e:?}"
        ),
        Ok(_) => panic!("a data dir of {created_with} shards opened with {shards}"),
    }
}

/// A new data dir takes the configured count even when it is only a default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_data_dir_takes_the_default_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    assert!(admit_raft::is_new_data_dir(dir.path()));
    let node = start_with_default_count(dir.path(), 2).await;
    assert!(!admit_raft::is_new_data_dir(dir.path()));
    assert_eq!(node.shards(), 2);
    node.write(1, add("k", 1)).await.unwrap();
    node.shutdown().await.unwrap();
    drop(node);
    assert_refused(dir.path(), 4, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_purge_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 2);
    cfg.snapshot_every = 50;
    cfg.keep_logs_after_snapshot = 0;
    cfg.purge_batch_size = 1;
    let before = {
        let node = RaftNode::start(cfg.clone(), |_| Counters::default())
            .await
            .unwrap();
        for id in 0..400u64 {
            node.write((id % 2) as u32, add(&format!("k{}", id % 3), id))
                .await
                .unwrap();
        }
        // Automatic snapshots (every 50 entries) purged the log.
        for shard in 0..2 {
            let t0 = Instant::now();
            while node.purged_index(shard).is_none() && t0.elapsed() < Duration::from_secs(60) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(node.purged_index(shard).is_some(), "shard {shard} purged");
        }
        // Explicit snapshot; then a few writes after it (replayed on restart).
        node.snapshot(0).await.unwrap();
        for id in 400..410u64 {
            node.write(0, add("tail", id)).await.unwrap();
        }
        let s = states(&node).await;
        node.shutdown().await.unwrap();
        s
    };
    let node = RaftNode::start(cfg, |_| Counters::default()).await.unwrap();
    assert!(node.purged_index(0).is_some());
    assert_eq!(states(&node).await, before);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked: Vec<(u32, String, u64)> = Vec::new();
    for round in 0..2 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_admit-raft-kill-writer"))
            .arg(dir.path())
            .arg(round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ACK ") {
                    let p: Vec<&str> = rest.split(' ').collect();
                    let ack = (
                        p[0].parse::<u32>().unwrap(),
                        p[1].to_string(),
                        p[2].parse::<u64>().unwrap(),
                    );
                    if tx.send(ack).is_err() {
                        break;
                    }
                }
            }
        });
        // Let it write until it has acknowledged 1,000 more writes (the
        // second round starts from the first's data), then SIGKILL it
        // mid-flight: its 16 tasks keep writing.
        let want = 1_000 * (round as usize + 1);
        let deadline = Instant::now() + Duration::from_secs(120);
        while acked.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(a) => acked.push(a),
                Err(e) => panic!("child acknowledged {} writes, then {e:?}", acked.len()),
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        let _ = child.wait();
        reader.join().unwrap();
        // what it acknowledged before it died
        acked.extend(rx.try_iter());
    }

    let node = RaftNode::start(kill_writer_config(dir.path()), |_| Counters::default())
        .await
        .unwrap();
    let st = states(&node).await;
    for (shard, s) in st.iter().enumerate() {
        assert!(!s.index_went_back, "shard {shard} replayed out of order");
        for (key, (total, ids)) in &s.counters {
            let uniq: BTreeSet<u64> = ids.iter().copied().collect();
            assert_eq!(
                uniq.len(),
                ids.len(),
                "shard {shard} key {key}: applied twice"
            );
            assert_eq!(*total, ids.len() as u64, "shard {shard} key {key}: total");
        }
    }
    for (shard, key, id) in &acked {
        let s = &st[*shard as usize];
        let ids = &s.counters.get(key).expect("acked key missing").1;
        assert!(ids.contains(id), "acked write {id} on shard {shard} lost");
    }
    eprintln!(
        "kill -9 test: {} acknowledged writes all present",
        acked.len()
    );
    node.shutdown().await.unwrap();
}
