//! The reclaiming `Tick` is a replicated write, and a write wakes a quiescent
//! group. A shard with nothing written since its last tick is therefore not
//! ticked again until the idle bound (10 min of service time) has passed;
//! a write, or the service clock moving past the bound, brings the tick back.
//! Read through `Cluster.ListShards`' last log index of each shard.

use std::time::{Duration, Instant};

mod common;

use admit_proto::v1 as pb;
use admit_proto::v1::admin_client::AdminClient;
use admit_proto::v1::cluster_client::ClusterClient;
use admit_proto::v1::test_clock_client::TestClockClient;
use tonic::transport::Channel;

const TICK: Duration = Duration::from_millis(50);

async fn start() -> (admit_server::Running, tempfile::TempDir, Channel) {
    let dir = tempfile::tempdir().unwrap();
    let (running, ch) = common::start_node_ticking(dir.path(), false, TICK).await;
    (running, dir, ch)
}

async fn logs(ch: &Channel) -> Vec<u64> {
    ClusterClient::new(ch.clone())
        .list_shards(pb::ListShardsRequest { local_only: true })
        .await
        .expect("list shards")
        .into_inner()
        .shards
        .iter()
        .map(|s| s.last_log_index)
        .collect()
}

/// Waits (up to 20 s) until every shard's log index has stayed the same for
/// 20 tick intervals, and returns it; panics if it never settles.
async fn settled(ch: &Channel) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = logs(ch).await;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(TICK).await;
        let now = logs(ch).await;
        if now != seen {
            seen = now;
            since = Instant::now();
        } else if since.elapsed() >= TICK * 20 {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "the shards' logs never stop growing with no traffic (last {seen:?})"
        );
    }
}

/// Entries added to each shard's log from `before` to `after`.
fn growth(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

/// Waits (up to 20 s) until `ok` holds for the shards' log indexes.
async fn until(ch: &Channel, what: &str, ok: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let l = logs(ch).await;
        if ok(&l) {
            return l;
        }
        assert!(Instant::now() < deadline, "{what}: logs stay at {l:?}");
        tokio::time::sleep(TICK).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_shard_is_not_ticked_until_written_or_the_idle_bound_passes() {
    let (running, _dir, ch) = start().await;
    let first = logs(&ch).await;
    // each shard is ticked once (its log grows), then left alone
    until(&ch, "a first tick of every shard", |l| {
        l.iter().zip(&first).all(|(a, b)| a > b)
    })
    .await;
    let idle = settled(&ch).await;
    tokio::time::sleep(TICK * 10).await;
    assert_eq!(logs(&ch).await, idle, "no tick while nothing is written");

    // a first registration on one shard: the number's scope claim and the
    // registration (issue 11, item 9), then a tick; the other shard nothing.
    // The tick loop sees the claim in the log while the registration is on
    // its way, so the tick may share the registration's entry (the proposer
    // batches commands proposed together): 2 or 3 entries.
    let register = async || {
        AdminClient::new(ch.clone())
            .register_number(pb::RegisterNumberRequest {
                number_id: "100200300".into(),
                ..Default::default()
            })
            .await
    };
    register().await.expect("register");
    let registered = settled(&ch).await;
    let grown = growth(&registered, &idle);
    assert!(
        grown.iter().filter(|g| **g == 0).count() == 1
            && grown.iter().any(|g| (2..=3).contains(g)),
        "the written shard gets the claim, the registration and a tick, the other nothing: {grown:?}"
    );

    // an update of the number is one entry, and the tick can only follow
    // it: exactly one more entry on that shard, nothing on the other
    register().await.expect("update");
    let after = settled(&ch).await;
    let grown = growth(&after, &registered);
    assert!(
        grown.contains(&2) && grown.contains(&0),
        "the written shard gets its write and one tick, the other nothing: {grown:?}"
    );

    // the service clock moves past the idle bound: every shard is ticked once more
    TestClockClient::new(ch.clone())
        .advance_clock(pb::AdvanceClockRequest { by_ms: 600_000 - 1 })
        .await
        .expect("advance");
    tokio::time::sleep(TICK * 10).await;
    assert_eq!(
        logs(&ch).await,
        after,
        "within the idle bound: still no tick"
    );
    TestClockClient::new(ch.clone())
        .advance_clock(pb::AdvanceClockRequest { by_ms: 1 })
        .await
        .expect("advance");
    until(&ch, "a tick of every shard after the idle bound", |l| {
        l.iter().zip(&after).all(|(a, b)| a == &(b + 1))
    })
    .await;
    running.shutdown().await.expect("shutdown");
}
