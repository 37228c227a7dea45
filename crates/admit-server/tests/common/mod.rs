//! What the admit-server test binaries share.

#![allow(dead_code)] // each test binary uses part of it

use std::time::Duration;

use admit_proto::v1 as pb;
use tonic::transport::Channel;

/// A single node on loopback with the test clock at `start_ms`, no fsync,
/// and the given tick interval; with its data dir and a channel to its API.
pub async fn single_node(
    shards: u32,
    start_ms: u64,
    tick: Duration,
) -> (admit_server::Running, tempfile::TempDir, Channel) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = admit_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path());
    cfg.shards = shards;
    cfg.test_clock = true;
    cfg.test_clock_start = Some(admit_core::Ts(start_ms));
    cfg.fsync = false;
    cfg.tick_interval = tick;
    let running = admit_server::start(cfg).await.expect("server starts");
    let ch = Channel::from_shared(format!("http://{}", running.local_addr()))
        .unwrap()
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect");
    (running, dir, ch)
}

/// A utility template from `number` to customer `491500000000 + customer`.
pub fn utility(number: &str, customer: u64) -> pb::Send {
    pb::Send {
        number_id: number.into(),
        customer_id: (491_500_000_000 + customer).to_string(),
        kind: Some(pb::send::Kind::Template(pb::Template {
            template_id: "t-util".into(),
            category: pb::TemplateCategory::Utility as i32,
            ..Default::default()
        })),
        idempotency_key: String::new(),
    }
}
