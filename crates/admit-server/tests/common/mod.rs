//! What the admit-server test binaries share.
#![allow(dead_code)]

use std::time::Duration;

use admit_proto::v1 as pb;
use tonic::transport::Channel;

/// The test clock's start: 2030-01-01T00:00:00Z.
pub const START_MS: u64 = 1_893_456_000_000;

/// A single node with 2 shards on `dir`, on the test clock (it never moves
/// unless told), and a channel to it.
pub async fn start_node(dir: &std::path::Path, fsync: bool) -> (admit_server::Running, Channel) {
    start_node_ticking(dir, fsync, Duration::from_secs(3_600)).await
}

/// [`start_node`] with its `Tick` every `tick`.
pub async fn start_node_ticking(
    dir: &std::path::Path,
    fsync: bool,
    tick: Duration,
) -> (admit_server::Running, Channel) {
    let mut cfg = admit_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir);
    cfg.shards = 2;
    cfg.test_clock = true;
    cfg.test_clock_start = Some(admit_core::Ts(START_MS));
    cfg.fsync = fsync;
    cfg.tick_interval = tick;
    let running = admit_server::start(cfg).await.expect("server starts");
    let ch = Channel::from_shared(format!("http://{}", running.local_addr()))
        .unwrap()
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect");
    (running, ch)
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
