//! A full disk through the gRPC API (issue 11): once the journal cannot
//! write (the test switch fails every write with ENOSPC), a write answers
//! UNAVAILABLE with a message naming the error, never OK; after a restart
//! everything acknowledged before is there and the refused write is not.

mod common;

use admit_proto::v1 as pb;
use admit_proto::v1::admin_client::AdminClient;
use admit_proto::v1::admit_send_client::AdmitSendClient;
use common::{start_node, utility};
use tonic::transport::Channel;
use tonic::Code;

fn register(number: &str) -> pb::RegisterNumberRequest {
    pb::RegisterNumberRequest {
        number_id: number.into(),
        initial_tier: Some(pb::TierValue {
            tier: Some(pb::tier_value::Tier::TierName("TIER_1K".into())),
        }),
        ..Default::default()
    }
}

async fn used(admin: &mut AdminClient<Channel>, number: &str) -> Result<u32, tonic::Status> {
    let s = admin
        .get_status(pb::GetStatusRequest {
            target: Some(pb::Target {
                target: Some(pb::target::Target::NumberId(number.into())),
            }),
        })
        .await?
        .into_inner();
    Ok(s.status.and_then(|s| s.usage).map_or(0, |u| u.used))
}

fn assert_unavailable(r: Result<impl std::fmt::Debug, tonic::Status>) {
    let e = r.expect_err("a write on a full disk is not acknowledged");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("No space left on device"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_unavailable_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (running, ch) = start_node(dir.path(), true).await;
    let mut admin = AdminClient::new(ch.clone());
    let mut send = AdmitSendClient::new(ch);
    admin
        .register_number(register("100"))
        .await
        .expect("registered");
    for c in 0..3 {
        let d = send
            .admit(pb::AdmitRequest {
                send: Some(utility("100", c)),
            })
            .await
            .expect("admitted")
            .into_inner();
        assert_eq!(
            d.decision.map(|d| d.reason()),
            Some(pb::Reason::NewConversation)
        );
    }

    running.fail_journal_writes();
    assert_unavailable(
        send.admit(pb::AdmitRequest {
            send: Some(utility("100", 9)),
        })
        .await,
    );
    assert_unavailable(admin.register_number(register("200")).await);
    running.shutdown().await.ok();

    let (running, ch) = start_node(dir.path(), true).await;
    let mut admin = AdminClient::new(ch);
    assert_eq!(used(&mut admin, "100").await.expect("status"), 3);
    let e = used(&mut admin, "200").await.expect_err("never registered");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    admin
        .register_number(register("200"))
        .await
        .expect("writes again after the restart");
    running.shutdown().await.unwrap();
}
