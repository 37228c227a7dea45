//! Committed-writes/s micro-benchmark: 64 groups on one node, fsync on,
//! 1 / 16 / 256 concurrent writers (each writes to its own shard `i % 64`).
//!
//! ```text
//! cargo run --release -p admit-raft --example writes [-- SECONDS [WRITERS...]]
//! ```
//! Data goes to `$ADMIT_BENCH_DIR` (default: the system temp dir);
//! `ADMIT_BENCH_FSYNC=0` turns fsync off for comparison; `ADMIT_BENCH_SHARDS`
//! sets the number of groups (default 64).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use admit_raft::{App, NodeConfig, RaftNode};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Incr {
    key: u64,
    at_ms: i64,
}

#[derive(Debug, Default)]
struct Counts(HashMap<u64, u64>);

impl App for Counts {
    type Command = Incr;
    type Response = u64;
    fn apply(&mut self, _index: u64, cmd: Incr) -> u64 {
        let c = self.0.entry(cmd.key).or_default();
        *c += 1;
        *c
    }
    fn snapshot(&self) -> Vec<u8> {
        let mut v: Vec<(u64, u64)> = self.0.iter().map(|(k, v)| (*k, *v)).collect();
        v.sort_unstable();
        postcard::to_allocvec(&v).unwrap_or_default()
    }
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let v: Vec<(u64, u64)> = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
        self.0 = v.into_iter().collect();
        Ok(())
    }
    fn check_snapshot(bytes: &[u8]) -> Result<(), String> {
        postcard::from_bytes::<Vec<(u64, u64)>>(bytes)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

fn shards() -> u32 {
    std::env::var("ADMIT_BENCH_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(64)
}

async fn run(
    writers: usize,
    secs: u64,
    base: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let dir = base.join(format!("admit-raft-bench-{}-{writers}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let shards = shards();
    let mut cfg = NodeConfig::new(1, &dir, shards);
    cfg.fsync = std::env::var("ADMIT_BENCH_FSYNC").map_or(true, |v| v != "0");
    let node = RaftNode::start(cfg, |_| Counts::default()).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let before = node.journal_counters();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let node = node.clone();
        let stop = stop.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let shard = (w % shards as usize) as u32;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let s = Instant::now();
                let cmd = Incr {
                    key: i % 100,
                    at_ms: 0,
                };
                if node.write(shard, cmd).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                    lat.push(s.elapsed());
                }
                i += 1;
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let after = node.journal_counters();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let n = done.load(Ordering::Relaxed);
    let fsyncs = after.fsyncs - before.fsyncs;
    let ops = after.ops - before.ops;
    println!(
        "writers={writers:>4}  groups={shards}  committed writes/s={:>9.0}  fsyncs/s={:>7.0}  storage ops/fsync={:>6.1}  p50={:.2}ms p99={:.2}ms",
        n as f64 / elapsed,
        fsyncs as f64 / elapsed,
        ops as f64 / fsyncs.max(1) as f64,
        pct(0.50),
        pct(0.99),
    );
    node.shutdown().await?;
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs = args.first().and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut writers: Vec<usize> = args.iter().skip(1).filter_map(|s| s.parse().ok()).collect();
    if writers.is_empty() {
        writers = vec![1, 16, 256];
    }
    let base = std::env::var_os("ADMIT_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    println!(
        "admit-raft write benchmark: {} groups, fsync={}, {secs}s per run, dir {}",
        shards(),
        std::env::var("ADMIT_BENCH_FSYNC").map_or(true, |v| v != "0"),
        base.display()
    );
    for w in writers {
        run(w, secs, &base).await?;
    }
    Ok(())
}
