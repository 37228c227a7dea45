//! The replicated path without gRPC: concurrent writers propose `Admit` commands that
//! open new conversations straight through `RaftNode::write` on the real state machine.
//! Compared with `admit-bench`'s new-conversation figure, it tells how much of a
//! request's cost is the service layer and how much is Raft plus the engine.
//!
//! `cargo run --release -p admit-server --example replicated -- [SECONDS] [WRITERS...]`
//! (`ADMIT_BATCH=100` proposes 100 commands at a time, as an AdmitBatch from one number;
//! `ADMIT_BENCH_SHARDS` sets the number of shards, default 64)

use admit_core::*;
use admit_server::app::{ShardApp, Stamped};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now() -> Ts {
    Ts(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64)
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let secs = args.first().copied().unwrap_or(4);
    let writers: Vec<u64> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec![64, 256]
    };
    let dir =
        tempfile::tempdir_in(std::env::var("ADMIT_BENCH_DIR").unwrap_or("/tmp".into())).unwrap();
    let shards: u32 = match std::env::var("ADMIT_BENCH_SHARDS").map(|v| v.parse()) {
        Ok(Ok(n)) if n > 0 => n,
        _ => 64,
    };
    let node =
        admit_raft::RaftNode::start(admit_raft::NodeConfig::new(1, dir.path(), shards), |_| {
            ShardApp::new().0
        })
        .await
        .expect("raft node starts");
    let router = admit_server::routing::Router::new(shards);
    // one number per shard, unlimited, so every writer opens counted conversations
    let mut numbers = Vec::new();
    let mut i = 0u64;
    while numbers.len() < shards as usize {
        let n = NumberId::parse("n", &(7_000_000 + i).to_string()).unwrap();
        i += 1;
        let shard = router.shard_of(&ScopeKey::Number(n));
        if numbers.iter().any(|(s, _)| *s == shard) {
            continue;
        }
        let reg = Command::RegisterNumber(NumberRegistration {
            number: Some(n),
            limit: Some(Limit::Unlimited),
            ..Default::default()
        });
        node.write(
            shard,
            Stamped {
                at: now(),
                cmd: reg,
                by: None,
            },
        )
        .await
        .unwrap();
        numbers.push((shard, n));
    }
    let numbers = Arc::new(numbers);
    // commands per proposal (as one AdmitBatch from one number gives)
    let batch: u64 = std::env::var("ADMIT_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    println!(
        "replicated path: {shards} shards, fsync on, {secs}s per run, new conversations, {batch} per proposal"
    );
    for w in writers {
        let done = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(secs);
        let start = Instant::now();
        let tasks: Vec<_> = (0..w)
            .map(|t| {
                let (node, numbers, done, next) =
                    (node.clone(), numbers.clone(), done.clone(), next.clone());
                tokio::spawn(async move {
                    let (shard, number) = numbers[t as usize % numbers.len()];
                    while Instant::now() < deadline {
                        let cmds: Vec<Stamped> = (0..batch)
                            .map(|_| {
                                let c = 100_000_000_000 + next.fetch_add(1, Ordering::Relaxed);
                                let cmd = Command::Admit(AdmitRequest {
                                    number,
                                    customer: WaId::parse("c", &c.to_string()).unwrap(),
                                    kind: SendKind::Template {
                                        id: TemplateId::parse("t", "bench").unwrap(),
                                        category: Category::Utility,
                                    },
                                    idempotency_key: None,
                                });
                                Stamped {
                                    at: now(),
                                    cmd,
                                    by: None,
                                }
                            })
                            .collect();
                        if let Ok(rs) = node.write_many(shard, cmds).await {
                            done.fetch_add(rs.len() as u64, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let n = done.load(Ordering::Relaxed);
        println!(
            "writers={w:4}  committed admits/s={:8.0}",
            n as f64 / start.elapsed().as_secs_f64()
        );
    }
    node.shutdown().await.unwrap();
}
