//! Service windows and rates: keyed sends answered inside a window and AdmitBatch order (R3.4), the R8 pair and number rates and their place in R3.2's order.

use admit_proto::v1 as pb;

use crate::support::api::*;
use crate::support::*;

/// R3.4 on the fast path: a keyed send decided inside a service window is
/// recorded under its key, so a retry after the window closed gets the same
/// decision, not a new counted conversation. AdmitBatch decides its items as
/// consecutive Admit calls would, also when an item answered from memory
/// follows one that opens a conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_window_sends_and_batch_order() {
    let t0 = at(1, 8);
    serve(t0, async |mut c| {
        c.register(N, "TIER_250").await;
        c.inbound(N, &cust(1), Some("hello")).await;

        c.set_clock(t0 + DAY - 10).await;
        let s = keyed(
            template(N, 1, "t-mkt", pb::TemplateCategory::Marketing),
            "in-window-1",
        );
        let first = c.admit(s.clone()).await.unwrap();
        assert_eq!(first.reason(), pb::Reason::ServiceWindow);
        assert!(!first.replayed && !first.counted);
        c.set_clock(t0 + DAY + 50).await;
        let again = c.admit(s.clone()).await.unwrap();
        assert_eq!(again.reason(), pb::Reason::ServiceWindow, "{again:?}");
        assert!(again.replayed && !again.counted);
        assert_eq!(c.used(N).await, 0, "the retry opened nothing");
        // the same send without a key, after the window: a new conversation
        let d = c
            .admit(template(N, 1, "t-mkt", pb::TemplateCategory::Marketing))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::NewConversation);
        assert_eq!(c.used(N).await, 1);

        // [template to C2, free-form to C2, template to C2]: as three calls
        let r = c
            .admit
            .admit_batch(pb::AdmitBatchRequest {
                sends: vec![
                    template(N, 2, "t-util", pb::TemplateCategory::Utility),
                    free_form(N, 2),
                    template(N, 2, "t-util", pb::TemplateCategory::Utility),
                    free_form(N, 3),
                ],
            })
            .await
            .unwrap()
            .into_inner();
        let reasons: Vec<_> = batch_decisions(r).iter().map(|d| d.reason()).collect();
        assert_eq!(
            reasons,
            [
                pb::Reason::NewConversation,
                pb::Reason::OpenConversation,
                pb::Reason::OpenConversation,
                pb::Reason::OutsideServiceWindow,
            ]
        );
        assert_eq!(c.used(N).await, 2);

        // one key twice in a batch: decided once, replayed once
        let k = keyed(
            template(N, 4, "t-util", pb::TemplateCategory::Utility),
            "twice",
        );
        let r = c
            .admit
            .admit_batch(pb::AdmitBatchRequest {
                sends: vec![k.clone(), k],
            })
            .await
            .unwrap()
            .into_inner();
        let ds = batch_decisions(r);
        assert_eq!(ds[0].reason(), pb::Reason::NewConversation);
        assert!(ds[0].counted && !ds[0].replayed);
        assert!(ds[1].replayed && !ds[1].counted);
        assert_eq!(ds[0].admission_id, ds[1].admission_id);
        assert_eq!(c.used(N).await, 3);
    })
    .await;
}

/// R8 through the server, and R3.2's order: the pair rate (1 per 6 s, bursts
/// of 45) and the number's throughput deny with retry_after at their edges;
/// a send that an earlier check denies (opt-out) reports that check and takes
/// no cell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_their_place_in_the_order() {
    let t0 = at(1, 8);
    serve(t0, async |mut c| {
        c.register(N, "TIER_250").await;
        c.inbound(N, &cust(1), Some("hi")).await;
        for i in 0..45 {
            let d = c.admit(free_form(N, 1)).await.unwrap();
            assert!(d.allowed, "send {i} of the burst");
        }
        let d = c.admit(free_form(N, 1)).await.unwrap();
        assert_eq!(d.reason(), pb::Reason::PairRateLimited);
        assert_eq!(d.retry_after_ms, Some(6_000));
        // the customer opts out: marketing now gets OPTED_OUT, not the pair rate
        c.inbound(N, &cust(1), Some("STOP")).await;
        let d = c
            .admit(template(N, 1, "t-mkt", pb::TemplateCategory::Marketing))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::OptedOut);
        assert_eq!(d.retry_after_ms, None);
        c.set_clock(t0 + 6_000 - 1).await;
        let d = c.admit(free_form(N, 1)).await.unwrap();
        assert_eq!(d.reason(), pb::Reason::PairRateLimited);
        assert_eq!(d.retry_after_ms, Some(1));
        c.set_clock(t0 + 6_000).await;
        let d = c.admit(free_form(N, 1)).await.unwrap();
        assert_eq!(
            d.reason(),
            pb::Reason::ServiceWindow,
            "one cell back at 6 s"
        );
        let d = c.admit(free_form(N, 1)).await.unwrap();
        assert_eq!(d.reason(), pb::Reason::PairRateLimited);

        // R8.1: a number at 2 messages/s bursts 2, then one every 500 ms
        let slow = "100200399";
        c.admin
            .register_number(pb::RegisterNumberRequest {
                number_id: slow.into(),
                initial_tier: Some(pb::TierValue {
                    tier: Some(pb::tier_value::Tier::TierName("TIER_250".into())),
                }),
                throughput_mps: Some(2),
                ..Default::default()
            })
            .await
            .unwrap();
        let t1 = t0 + 10_000;
        c.set_clock(t1).await;
        for i in 10..12 {
            let d = c
                .admit(template(slow, i, "t-util", pb::TemplateCategory::Utility))
                .await
                .unwrap();
            assert_eq!(d.reason(), pb::Reason::NewConversation);
        }
        let d = c
            .admit(template(slow, 12, "t-util", pb::TemplateCategory::Utility))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::ThroughputLimited);
        assert_eq!(d.retry_after_ms, Some(500));
        assert_eq!(c.used(slow).await, 2, "a throttled send counts nothing");
        c.set_clock(t1 + 499).await;
        let d = c
            .admit(template(slow, 12, "t-util", pb::TemplateCategory::Utility))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::ThroughputLimited);
        c.set_clock(t1 + 500).await;
        let d = c
            .admit(template(slow, 12, "t-util", pb::TemplateCategory::Utility))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::NewConversation);
    })
    .await;
}
