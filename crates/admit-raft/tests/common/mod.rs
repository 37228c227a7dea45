//! A tiny test App: named counters that remember which command ids they applied.

#![allow(dead_code)]

#[cfg(test)]
pub mod gate;
#[path = "../../../../tests/support/ports.rs"]
pub mod ports;
#[path = "../../../../tests/support/seeded.rs"]
pub mod seeded;
// the helper binaries (tests/bin) include this module without dev-dependencies
#[cfg(test)]
pub mod trio;
#[allow(unused_imports)] // used by the hostile tests only
pub use seeded::Rng;

/// The hostile-input tests' seed: `HOSTILE_SEED` when set (to replay a
/// run), else from the clock.
pub fn hostile_seed() -> u64 {
    seeded::seed("HOSTILE_SEED")
}

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use admit_raft::{App, NodeConfig, RaftNode};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Add {
    pub key: String,
    pub id: u64,
    pub by: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// key -> (total, ids applied in order)
    pub counters: BTreeMap<String, (u64, Vec<u64>)>,
    /// last applied log index (must never decrease; commands batched into
    /// one entry share it)
    pub last_index: u64,
    /// set if apply ever saw a decreasing index
    pub index_went_back: bool,
    /// distinct log entries that carried commands
    pub entries: u64,
}

/// The App keeps its state behind an `Arc<Mutex<_>>` so tests can hold a reader handle.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub state: Arc<Mutex<State>>,
}

impl App for Counters {
    type Command = Add;
    type Response = u64;

    fn apply(&mut self, index: u64, cmd: Add) -> u64 {
        let mut s = self.state.lock().unwrap();
        if index < s.last_index {
            s.index_went_back = true;
        }
        if index != s.last_index {
            s.entries += 1;
        }
        s.last_index = index;
        let e = s.counters.entry(cmd.key).or_default();
        e.0 += cmd.by;
        e.1.push(cmd.id);
        e.0
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(&*self.state.lock().unwrap()).unwrap()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let s: State = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
        *self.state.lock().unwrap() = s;
        Ok(())
    }

    fn check_snapshot(bytes: &[u8]) -> Result<(), String> {
        postcard::from_bytes::<State>(bytes)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// How many commands with `key` the App of `shard` on `node` applied.
pub async fn count(node: &RaftNode<Counters>, shard: u32, key: &str) -> usize {
    let key = key.to_string();
    node.with_app(shard, move |a: &Counters| {
        a.state
            .lock()
            .unwrap()
            .counters
            .get(&key)
            .map_or(0, |c| c.1.len())
    })
    .await
    .unwrap()
}

pub fn config(dir: &std::path::Path, shards: u32) -> NodeConfig {
    let mut c = NodeConfig::new(1, dir, shards);
    c.heartbeat = Duration::from_millis(50);
    c.election_timeout = (Duration::from_millis(200), Duration::from_millis(400));
    c
}

/// Shards and snapshot settings of the kill -9 test's writer process (the
/// test restarts from its data dir with the same).
pub fn kill_writer_config(dir: &std::path::Path) -> NodeConfig {
    let mut c = config(dir, 8);
    c.snapshot_every = 100;
    c.keep_logs_after_snapshot = 10;
    c
}

/// The ids of the commands with `key` the App of `shard` on `node` applied,
/// in order.
pub async fn ids(node: &RaftNode<Counters>, shard: u32, key: &str) -> Vec<u64> {
    let key = key.to_string();
    node.with_app(shard, move |a: &Counters| {
        a.state
            .lock()
            .unwrap()
            .counters
            .get(&key)
            .map(|c| c.1.clone())
            .unwrap_or_default()
    })
    .await
    .unwrap()
}

/// Polls `f` every 50 ms until it holds; fails the test after `secs`
/// seconds naming `what`. How long it took.
pub async fn eventually(
    what: &str,
    secs: u64,
    mut f: impl AsyncFnMut() -> bool,
) -> std::time::Duration {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f().await {
            return t0.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {secs}s waiting for {what}");
}

/// Serves `node`'s Raft service on a loopback port behind `guard`, as a
/// peer port's guard does (it may add a `PeerCheck` or a `PeerNode`).
pub async fn serve_behind<F>(node: &RaftNode<Counters>, guard: F) -> std::net::SocketAddr
where
    F: FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = tonic::service::interceptor::InterceptedService::new(node.grpc_service(), guard);
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming),
    );
    addr
}
