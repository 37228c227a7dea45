//! R8 token-bucket denials through the gRPC API: a send refused by the
//! number's throughput or the pair's rate still shows its scope's usage
//! (admit.proto: `Decision.usage` is unset only for UNKNOWN_NUMBER).

use std::time::Duration;

mod common;

use admit_proto::v1 as pb;
use admit_proto::v1::admin_client::AdminClient;
use admit_proto::v1::admit_send_client::AdmitSendClient;
use common::{start_node, utility};
use tonic::transport::Channel;

/// The test clock never moves, so no bucket refills.
async fn start() -> (admit_server::Running, tempfile::TempDir, Channel) {
    let dir = tempfile::tempdir().unwrap();
    let (running, ch) = start_node(dir.path(), false).await;
    (running, dir, ch)
}

async fn register(admin: &mut AdminClient<Channel>, number: &str, mps: u32) {
    admin
        .register_number(pb::RegisterNumberRequest {
            number_id: number.into(),
            initial_tier: Some(pb::TierValue {
                tier: Some(pb::tier_value::Tier::TierName("TIER_1K".into())),
            }),
            quality: Some(pb::NumberQuality::High as i32),
            display_name_approved: Some(true),
            throughput_mps: Some(mps),
            ..Default::default()
        })
        .await
        .expect("register");
}

async fn admit(c: &mut AdmitSendClient<Channel>, send: pb::Send) -> pb::Decision {
    c.admit(pb::AdmitRequest { send: Some(send) })
        .await
        .expect("admit")
        .into_inner()
        .decision
        .expect("a decision")
}

/// The usage a denial shows: the number's scope, its limit and what it used.
fn assert_usage(d: &pb::Decision, number: &str, used: u32) {
    let u = d
        .usage
        .as_ref()
        .unwrap_or_else(|| panic!("no usage on {:?}", d.reason()));
    assert_eq!(u.scope(), pb::LimitScope::Number);
    assert_eq!(u.scope_id, number);
    assert_eq!(u.tier.as_ref().map(|t| t.limit), Some(1_000));
    assert_eq!(u.used, used);
    assert_eq!(u.headroom, 1_000 - used);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_denials_carry_the_scopes_usage() {
    let (running, _dir, ch) = start().await;
    let mut admin = AdminClient::new(ch.clone());
    let mut send = AdmitSendClient::new(ch);
    let work = async {
        // R8.1: one message a second, bursts of one
        register(&mut admin, "100", 1).await;
        let first = admit(&mut send, utility("100", 1)).await;
        assert!(first.allowed, "{:?}", first.reason());
        let d = admit(&mut send, utility("100", 2)).await;
        assert_eq!(d.reason(), pb::Reason::ThroughputLimited);
        assert!(!d.allowed && d.retry_after_ms.is_some());
        assert_usage(&d, "100", 1);

        // R8.2: the seeds pair rate bursts 45 sends to one customer
        register(&mut admin, "200", 10_000).await;
        for i in 0..45 {
            let d = admit(&mut send, utility("200", 1)).await;
            assert!(d.allowed, "send {i}: {:?}", d.reason());
        }
        let d = admit(&mut send, utility("200", 1)).await;
        assert_eq!(d.reason(), pb::Reason::PairRateLimited);
        assert!(!d.allowed && d.retry_after_ms.is_some());
        assert_usage(&d, "200", 1);
    };
    tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .expect("test exceeded its time bound");
    running.shutdown().await.expect("clean shutdown");
}
