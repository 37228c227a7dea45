//! Delivery outcomes through ReportOutcome (section 9: Meta's error codes and their holds) and releases (R3.5).

use admit_proto::v1 as pb;

use crate::support::api::*;
use crate::support::*;

/// 131056: the pair backs off 1 s, then 4 s (4^x); sends to the pair are
/// PAIR_RATE_LIMITED until exactly the hold's end, other customers are not
/// held; a delivered send resets the growth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_9_131056_pair_back_off_grows_4x() {
    let t0 = at(1, 8);
    serve(t0, async |mut c| {
        c.register(N, "TIER_250").await;
        c.inbound(N, &cust(1), Some("hi")).await;
        c.inbound(N, &cust(2), Some("hi")).await;

        let r = report(&mut c, failed(N, 1, 131056)).await;
        assert_eq!(effects(&r), [pb::OutcomeEffect::PairBackoff]);
        assert_eq!(r.hold_until_unix_ms, Some(t0 + 1_000));
        assert!(!r.duplicate);
        c.set_clock(t0 + 999).await;
        assert_eq!(
            decide(&mut c, free_form(N, 1)).await,
            (pb::Reason::PairRateLimited, Some(1), Some(t0 + 1_000))
        );
        // a template to the pair is held too (the hold comes before the windows)
        assert_eq!(
            decide(&mut c, util(N, 1)).await.0,
            pb::Reason::PairRateLimited
        );
        // other customers are not
        assert_eq!(
            decide(&mut c, free_form(N, 2)).await.0,
            pb::Reason::ServiceWindow
        );
        assert_eq!(
            decide(&mut c, util(N, 3)).await.0,
            pb::Reason::NewConversation
        );
        c.set_clock(t0 + 1_000).await;
        assert_eq!(
            decide(&mut c, free_form(N, 1)).await.0,
            pb::Reason::ServiceWindow
        );

        // the second strike half a second after the first hold: 4 s
        let t1 = t0 + 1_500;
        c.set_clock(t1).await;
        let r = report(&mut c, failed(N, 1, 131056)).await;
        assert_eq!(r.hold_until_unix_ms, Some(t1 + 4_000));
        c.set_clock(t1 + 4_000 - 1).await;
        assert_eq!(
            decide(&mut c, free_form(N, 1)).await,
            (pb::Reason::PairRateLimited, Some(1), Some(t1 + 4_000))
        );
        c.set_clock(t1 + 4_000).await;
        assert_eq!(
            decide(&mut c, free_form(N, 1)).await.0,
            pb::Reason::ServiceWindow
        );

        // a delivered send ends the back-off's growth: the next strike is 1 s
        let r = report(&mut c, outcome(N, 1, pb::DeliveryStatus::Delivered, None)).await;
        assert!(effects(&r).is_empty() && r.hold_until_unix_ms.is_none());
        let t2 = t1 + 5_000;
        c.set_clock(t2).await;
        let r = report(&mut c, failed(N, 1, 131056)).await;
        assert_eq!(r.hold_until_unix_ms, Some(t2 + 1_000));
    })
    .await;
}

/// 130429: the number backs off (1 s, then 4 s) and its end comes back as
/// hold_until; every send of the number is THROUGHPUT_LIMITED until then,
/// another number is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_9_130429_number_back_off_returns_its_end() {
    let t0 = at(1, 8);
    serve(t0, async |mut c| {
        c.register(N, "TIER_250").await;
        c.register(OTHER, "TIER_250").await;
        c.inbound(N, &cust(2), Some("hi")).await;

        let r = report(&mut c, failed(N, 1, 130429)).await;
        assert_eq!(effects(&r), [pb::OutcomeEffect::NumberBackoff]);
        assert_eq!(r.hold_until_unix_ms, Some(t0 + 1_000));
        c.set_clock(t0 + 999).await;
        // the whole number, other customers and service-window replies included
        assert_eq!(
            decide(&mut c, free_form(N, 2)).await,
            (pb::Reason::ThroughputLimited, Some(1), Some(t0 + 1_000))
        );
        assert_eq!(
            decide(&mut c, util(N, 3)).await.0,
            pb::Reason::ThroughputLimited
        );
        assert_eq!(c.used(N).await, 0, "a held send counts nothing");
        assert_eq!(
            decide(&mut c, util(OTHER, 3)).await.0,
            pb::Reason::NewConversation
        );
        c.set_clock(t0 + 1_000).await;
        assert_eq!(
            decide(&mut c, free_form(N, 2)).await.0,
            pb::Reason::ServiceWindow
        );

        let r = report(&mut c, failed(N, 1, 130429)).await;
        assert_eq!(r.hold_until_unix_ms, Some(t0 + 1_000 + 4_000));
        c.set_clock(t0 + 5_000 - 1).await;
        assert_eq!(
            decide(&mut c, util(N, 3)).await,
            (pb::Reason::ThroughputLimited, Some(1), Some(t0 + 5_000))
        );
        c.set_clock(t0 + 5_000).await;
        assert_eq!(
            decide(&mut c, util(N, 3)).await.0,
            pb::Reason::NewConversation
        );
    })
    .await;
}

/// 131048: new conversations of the number are held for the cool-down (6 h
/// by default); sends inside a service window or an open conversation are
/// still allowed; at exactly the end a new conversation opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_9_131048_holds_new_conversations_for_the_cool_down() {
    let t0 = at(1, 8);
    serve(t0, async |mut c| {
        c.register(N, "TIER_250").await;
        c.inbound(N, &cust(1), Some("hi")).await;
        assert_eq!(
            decide(&mut c, util(N, 2)).await.0,
            pb::Reason::NewConversation
        );

        let r = report(&mut c, failed(N, 9, 131048)).await;
        assert_eq!(effects(&r), [pb::OutcomeEffect::SpamCooldown]);
        let end = t0 + 6 * HOUR;
        assert_eq!(r.hold_until_unix_ms, Some(end));
        assert_eq!(c.status(N).await.spam_cooldown_until_unix_ms, Some(end));

        c.set_clock(end - 1).await;
        assert_eq!(
            decide(&mut c, util(N, 3)).await,
            (pb::Reason::SpamCooldown, Some(1), Some(end))
        );
        assert_eq!(decide(&mut c, mkt(N, 1)).await.0, pb::Reason::ServiceWindow);
        assert_eq!(
            decide(&mut c, free_form(N, 1)).await.0,
            pb::Reason::ServiceWindow
        );
        assert_eq!(
            decide(&mut c, util(N, 2)).await.0,
            pb::Reason::OpenConversation
        );
        assert_eq!(c.used(N).await, 1, "the held send counts nothing");

        c.set_clock(end).await;
        assert_eq!(c.status(N).await.spam_cooldown_until_unix_ms, None);
        assert_eq!(
            decide(&mut c, util(N, 3)).await.0,
            pb::Reason::NewConversation
        );
        assert_eq!(c.used(N).await, 2);
    })
    .await;
}

/// 131049: no marketing to that customer for 24 h (denied at 24 h - 1 ms,
/// allowed at 24 h), utility still allowed, other customers unaffected.
/// 131050: the customer is opted out: marketing is OPTED_OUT without a retry,
/// also inside a service window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_9_131049_marketing_hold_and_131050_opt_out() {
    let t0 = at(1, 8);
    serve(t0, async |mut c| {
        c.register(N, "TIER_250").await;

        let r = report(&mut c, failed(N, 1, 131049)).await;
        assert_eq!(effects(&r), [pb::OutcomeEffect::MarketingHold]);
        assert_eq!(r.hold_until_unix_ms, Some(t0 + DAY));
        // utility opens a conversation; marketing is held even inside it
        assert_eq!(
            decide(&mut c, util(N, 1)).await.0,
            pb::Reason::NewConversation
        );
        c.set_clock(t0 + DAY - 1).await;
        assert_eq!(
            decide(&mut c, mkt(N, 1)).await,
            (pb::Reason::MarketingHold, Some(1), Some(t0 + DAY))
        );
        assert_eq!(
            decide(&mut c, util(N, 1)).await.0,
            pb::Reason::OpenConversation
        );
        assert_eq!(
            decide(&mut c, mkt(N, 2)).await.0,
            pb::Reason::NewConversation
        );
        let held = keyed(mkt(N, 1), "campaign-7:1");
        assert_eq!(
            decide(&mut c, held.clone()).await.0,
            pb::Reason::MarketingHold
        );
        c.set_clock(t0 + DAY).await;
        // the keyed denial replays, with nothing left to wait for (admit.proto
        // retry_after_ms): a new decision needs a new key
        let d = c.admit(held).await.unwrap();
        assert_eq!(d.reason(), pb::Reason::MarketingHold);
        assert!(d.replayed);
        assert_eq!(d.decided_at_unix_ms, t0 + DAY - 1);
        assert_eq!(
            (d.retry_after_ms, d.retry_at_unix_ms),
            (Some(0), Some(t0 + DAY))
        );
        // the hold is over, and so is the conversation opened at t0
        assert_eq!(
            decide(&mut c, mkt(N, 1)).await.0,
            pb::Reason::NewConversation
        );

        // 131050
        let t1 = t0 + DAY;
        c.inbound(N, &cust(3), Some("hello")).await;
        assert_eq!(c.status(N).await.opt_out_count, 0);
        let r = report(&mut c, failed(N, 3, 131050)).await;
        assert_eq!(effects(&r), [pb::OutcomeEffect::OptedOut]);
        assert_eq!(r.hold_until_unix_ms, None);
        assert_eq!(c.status(N).await.opt_out_count, 1);
        assert_eq!(
            decide(&mut c, mkt(N, 3)).await,
            (pb::Reason::OptedOut, None, None)
        );
        assert_eq!(
            decide(&mut c, util(N, 3)).await.0,
            pb::Reason::ServiceWindow
        );
        assert_eq!(
            decide(&mut c, free_form(N, 3)).await.0,
            pb::Reason::ServiceWindow
        );
        // no hold that ends: still opted out a month later, outside any window
        c.set_clock(t1 + 30 * DAY).await;
        assert_eq!(
            decide(&mut c, mkt(N, 3)).await,
            (pb::Reason::OptedOut, None, None)
        );
    })
    .await;
}

/// 131047: the customer service window is closed: a free-form send afterwards
/// is OUTSIDE_SERVICE_WINDOW and a template opens (and counts) a conversation;
/// another customer's window stays open; a new inbound message reopens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_9_131047_closes_the_service_window() {
    let t0 = at(1, 8);
    serve(t0, async |mut c| {
        c.register(N, "TIER_250").await;
        c.inbound(N, &cust(1), Some("hi")).await;
        c.inbound(N, &cust(2), Some("hi")).await;
        c.set_clock(t0 + HOUR).await;
        assert_eq!(
            decide(&mut c, free_form(N, 1)).await.0,
            pb::Reason::ServiceWindow
        );

        let r = report(&mut c, failed(N, 1, 131047)).await;
        assert_eq!(effects(&r), [pb::OutcomeEffect::WindowClosed]);
        assert_eq!(r.hold_until_unix_ms, None);
        assert_eq!(
            decide(&mut c, free_form(N, 1)).await,
            (pb::Reason::OutsideServiceWindow, None, None)
        );
        assert_eq!(
            decide(&mut c, free_form(N, 2)).await.0,
            pb::Reason::ServiceWindow
        );
        assert_eq!(c.used(N).await, 0);
        let d = c.admit(util(N, 1)).await.unwrap();
        assert_eq!(d.reason(), pb::Reason::NewConversation);
        assert!(d.counted);
        assert_eq!(c.used(N).await, 1);
        // the customer writes again: a service window once more
        c.set_clock(t0 + 2 * HOUR).await;
        c.inbound(N, &cust(1), Some("still there?")).await;
        assert_eq!(decide(&mut c, mkt(N, 1)).await.0, pb::Reason::ServiceWindow);
    })
    .await;
}

/// 132015 reported three times (three sends in flight) is one pause of the
/// first length: TEMPLATE_PAUSED with retry_after 3 h, allowed at exactly
/// 3 h. 132016 disables the template: TEMPLATE_DISABLED without a retry, and
/// a late 132015 does not enable it again. Neither uses up limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_9_132015_pauses_once_and_132016_disables() {
    let t0 = at(1, 8);
    serve(t0, async |mut c| {
        c.register(N, "TIER_250").await;
        let promo = |customer| template(N, customer, "t-promo", pb::TemplateCategory::Marketing);
        let old = |customer| template(N, customer, "t-old", pb::TemplateCategory::Utility);

        for i in 1..=3u64 {
            let mut r = failed(N, i, 132015);
            r.template_id = "t-promo".into();
            r.event_key = format!("wamid-{i}:failed");
            let r = report(&mut c, r).await;
            assert_eq!(
                effects(&r),
                [pb::OutcomeEffect::TemplatePaused],
                "report {i}"
            );
            assert!(!r.duplicate);
        }
        assert_eq!(
            decide(&mut c, promo(10)).await,
            (
                pb::Reason::TemplatePaused,
                Some(3 * HOUR),
                Some(t0 + 3 * HOUR)
            )
        );
        // another template is not paused
        assert_eq!(
            decide(&mut c, util(N, 11)).await.0,
            pb::Reason::NewConversation
        );
        c.set_clock(t0 + 3 * HOUR - 1).await;
        assert_eq!(
            decide(&mut c, promo(10)).await,
            (pb::Reason::TemplatePaused, Some(1), Some(t0 + 3 * HOUR))
        );
        assert_eq!(c.used(N).await, 1, "paused sends count nothing");
        c.set_clock(t0 + 3 * HOUR).await;
        assert_eq!(
            decide(&mut c, promo(10)).await.0,
            pb::Reason::NewConversation
        );

        // 132016
        let t1 = t0 + 4 * HOUR;
        c.set_clock(t1).await;
        let mut r = failed(N, 12, 132016);
        r.template_id = "t-old".into();
        let r = report(&mut c, r).await;
        assert_eq!(effects(&r), [pb::OutcomeEffect::TemplateDisabled]);
        assert_eq!(
            decide(&mut c, old(12)).await,
            (pb::Reason::TemplateDisabled, None, None)
        );
        let mut r = failed(N, 13, 132015);
        r.template_id = "t-old".into();
        report(&mut c, r).await;
        c.set_clock(t1 + 7 * DAY).await;
        assert_eq!(
            decide(&mut c, old(12)).await,
            (pb::Reason::TemplateDisabled, None, None)
        );
        assert_eq!(c.used(N).await, 0, "the first two conversations ended");
    })
    .await;
}

/// R3.5 via ReportOutcome: a failure before delivery releases the admission
/// (used drops by one) once, however often it is reported; a delivered send
/// keeps its count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_9_a_failure_before_delivery_releases_the_admission() {
    let t0 = at(1, 8);
    serve(t0, async |mut c| {
        c.register(N, "TIER_250").await;
        let a = c.admit(util(N, 1)).await.unwrap();
        let b = c.admit(util(N, 2)).await.unwrap();
        assert!(a.counted && b.counted);
        assert_eq!(c.used(N).await, 2);

        let mut r = failed(N, 1, 131026);
        r.admission_id = a.admission_id.clone();
        r.event_key = "wamid-a:failed".into();
        let got = report(&mut c, r.clone()).await;
        assert_eq!(effects(&got), [pb::OutcomeEffect::Released]);
        assert_eq!(c.used(N).await, 1);
        // the same report again: a duplicate, nothing changes
        let got = report(&mut c, r.clone()).await;
        assert!(got.duplicate && effects(&got).is_empty());
        // under another key: nothing left to release
        r.event_key = "wamid-a:failed-again".into();
        let got = report(&mut c, r).await;
        assert!(!got.duplicate && effects(&got).is_empty());
        assert_eq!(c.used(N).await, 1);

        // delivered: counted as before
        let mut r = outcome(N, 2, pb::DeliveryStatus::Delivered, None);
        r.admission_id = b.admission_id.clone();
        let got = report(&mut c, r).await;
        assert!(effects(&got).is_empty());
        assert_eq!(c.used(N).await, 1);
        // the released customer's conversation is closed: a template opens a new one
        let d = c.admit(util(N, 1)).await.unwrap();
        assert_eq!(d.reason(), pb::Reason::NewConversation);
        assert!(d.counted);
        assert_eq!(c.used(N).await, 2);
    })
    .await;
}

/// R3.5 in a portfolio scope (meta): the second number's conversation with a
/// customer the first already counts was never counted, so releasing it is
/// released=false and used stays; releasing the first then un-counts the
/// customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_5_release_in_a_portfolio_is_true_only_when_it_uncounts() {
    serve(at(1, 8), async |mut c| {
        for n in [N, OTHER] {
            c.admin
                .register_number(pb::RegisterNumberRequest {
                    number_id: n.into(),
                    portfolio_id: "waba-m".into(),
                    profile: "meta".into(),
                    throughput_mps: Some(10_000),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let a = c.admit(util(N, 1)).await.unwrap();
        let b = c.admit(util(OTHER, 1)).await.unwrap();
        assert_eq!(b.reason(), pb::Reason::NewConversation);
        assert!(a.counted && !b.counted);
        assert!(!b.admission_id.is_empty());
        let r = release(&mut c, &b.admission_id).await;
        assert!(!r.released, "nothing was un-counted");
        assert_eq!(r.usage.unwrap().used, 1);
        let r = release(&mut c, &a.admission_id).await;
        assert!(r.released);
        assert_eq!(r.usage.unwrap().used, 0);
    })
    .await;
}
