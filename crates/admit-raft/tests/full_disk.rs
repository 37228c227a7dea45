//! A full disk (issue 11): once a journal write fails (the test switch
//! makes every write fail with ENOSPC, as a full disk does), every write
//! on the node fails with `WriteError::Unavailable` naming the error, on
//! every shard, also after the disk has room again, until the node
//! restarts; the restart finds every write acknowledged before, and the
//! writes that failed are not there.

mod common;

use std::time::Duration;

use admit_raft::{RaftNode, WriteError};
use common::{config, ids, Add, Counters};

const SHARDS: u32 = 2;

fn add(id: u64) -> Add {
    Add {
        key: "k".into(),
        id,
        by: 1,
    }
}

fn assert_storage_failure(r: Result<u64, WriteError>) {
    match r {
        Err(WriteError::Unavailable(m)) => {
            assert!(m.contains("No space left on device"), "{m}");
            assert!(m.contains("no writes until it restarts"), "{m}");
        }
        other => panic!("expected Unavailable naming the full disk, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_writes_visibly_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), SHARDS);
    cfg.fsync = true;
    cfg.write_timeout = Some(Duration::from_secs(20));
    let node = RaftNode::start(cfg.clone(), |_| Counters::default())
        .await
        .unwrap();
    for id in 0..10 {
        node.write((id % 2) as u32, add(id)).await.unwrap();
    }
    assert_eq!(node.storage_failure(), None);

    node.fail_journal_writes();
    // the write that meets the full disk, then every later one, any shard
    assert_storage_failure(node.write(0, add(100)).await);
    assert!(node.storage_failure().is_some());
    assert_storage_failure(node.write(1, add(101)).await);
    assert_storage_failure(node.write(0, add(102)).await);
    node.shutdown().await.ok();
    drop(node);

    let node = RaftNode::start(cfg, |_| Counters::default()).await.unwrap();
    assert_eq!(node.storage_failure(), None, "a restart clears it");
    node.write(0, add(200)).await.expect("writes again");
    node.write(1, add(201)).await.expect("writes again");
    assert_eq!(ids(&node, 0, "k").await, vec![0, 2, 4, 6, 8, 200]);
    assert_eq!(ids(&node, 1, "k").await, vec![1, 3, 5, 7, 9, 201]);
    node.shutdown().await.unwrap();
}
