//! Tiers and limits: seed 004's upgrades (R5.3), the limit at R4.2 and under concurrency (R3.4), tier values and portfolio tier events (section 10).

use std::collections::BTreeSet;

use admit_proto::v1 as pb;
use tonic::Code;

use crate::support::api::*;
use crate::support::*;

/// Seed 004, first worked example (R5.3): 1K tier, 500 new BICs on day 1, the
/// 500th at 15:00 -> 10K from day 2 15:00 exactly, still 1K one ms before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_004_upgrade_24h_after_the_500th_on_day_one() {
    serve(at(1, 9), async |mut c| {
        c.register(N, "TIER_1K").await;
        assert_eq!(c.limit(N).await, 1_000);
        c.open_batch(N, 0, 499).await;
        c.set_clock(at(1, 15)).await;
        c.open_batch(N, 499, 1).await;
        let s = c.status(N).await;
        let up = s.upgrade.unwrap();
        assert!(up.eligible);
        assert_eq!(up.upgrade_at_unix_ms, Some(at(2, 15)));
        assert_eq!(up.predicted_tier.unwrap().limit, 10_000);

        c.set_clock(at(2, 15) - 1).await;
        assert_eq!(c.limit(N).await, 1_000, "one ms before: still 1K");
        c.set_clock(at(2, 15)).await;
        assert_eq!(c.limit(N).await, 10_000, "at day 2 15:00: 10K");
    })
    .await;
}

/// Seed 004, second worked example (R5.3): 100, 200, 200 on days 1-3, the
/// 500th at 19:00 on day 3 -> 10K from day 4 19:00; day 4's 300 after 19:00
/// count at 10K: with 800 more they are 1,100 in one 24 h window, which a
/// 1K limit would refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_004_upgrade_24h_after_the_500th_on_day_three() {
    serve(at(1, 9), async |mut c| {
        c.register(N, "TIER_1K").await;
        c.set_clock(at(1, 10)).await;
        c.open_batch(N, 0, 100).await;
        c.set_clock(at(2, 10)).await;
        c.open_batch(N, 100, 200).await;
        c.set_clock(at(3, 10)).await;
        c.open_batch(N, 300, 199).await;
        let up = c.status(N).await.upgrade.unwrap();
        assert_eq!(up.upgrade_at_unix_ms, None, "499: not crossed yet");
        c.set_clock(at(3, 19)).await;
        c.open_batch(N, 499, 1).await;
        assert_eq!(
            c.status(N).await.upgrade.unwrap().upgrade_at_unix_ms,
            Some(at(4, 19))
        );
        c.set_clock(at(4, 19) - 1).await;
        assert_eq!(c.limit(N).await, 1_000);
        c.set_clock(at(4, 19)).await;
        assert_eq!(c.limit(N).await, 10_000);
        let before = c.used(N).await;
        c.open_batch(N, 500, 300).await;
        c.open_batch(N, 800, 800).await;
        let s = c.status(N).await;
        assert_eq!(
            s.usage.as_ref().unwrap().tier.as_ref().unwrap().limit,
            10_000
        );
        let usage = s.usage.unwrap();
        assert_eq!(usage.used, before + 1_100);
        assert!(usage.used > 1_000, "more than a 1K limit allows");
        assert_eq!(usage.headroom, 10_000 - usage.used);
    })
    .await;
}

/// R4.2: at the limit, open service windows and conversations are still
/// allowed, new conversations are denied LIMIT_REACHED with retry_after; the
/// restriction lifts as conversations age out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_at_the_limit_and_lifting_as_conversations_age_out() {
    let t0 = at(1, 8);
    serve(t0, async |mut c| {
        c.register(N, "TIER_250").await;
        // customer 9000 writes in: a service window opens
        c.inbound(N, &cust(9_000), Some("hello")).await;
        c.open_batch(N, 0, 100).await;
        c.set_clock(t0 + HOUR).await;
        c.open_batch(N, 100, 150).await;

        let s = c.status(N).await;
        assert!(s.restricted);
        assert_eq!(s.account_status(), pb::AccountStatus::Restricted);
        assert_eq!(s.usage.as_ref().unwrap().used, 250);
        assert_eq!(s.restricted_until_unix_ms, Some(t0 + DAY));

        let d = c
            .admit(template(N, 5_000, "t-util", pb::TemplateCategory::Utility))
            .await
            .unwrap();
        assert!(!d.allowed);
        assert_eq!(d.reason(), pb::Reason::LimitReached);
        assert_eq!(d.retry_after_ms, Some(DAY - HOUR));
        assert_eq!(d.retry_at_unix_ms, Some(t0 + DAY));
        assert_eq!(d.usage.unwrap().used, 250);

        // inside the service window: allowed, not counted
        let d = c.admit(free_form(N, 9_000)).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.reason(), pb::Reason::ServiceWindow);
        let d = c
            .admit(template(N, 9_000, "t-mkt", pb::TemplateCategory::Marketing))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::ServiceWindow);
        // an open conversation: allowed, not counted again
        let d = c
            .admit(template(N, 7, "t-util", pb::TemplateCategory::Utility))
            .await
            .unwrap();
        assert!(d.allowed);
        assert_eq!(d.reason(), pb::Reason::OpenConversation);
        assert!(!d.counted);
        // free-form outside any window
        let d = c.admit(free_form(N, 6_000)).await.unwrap();
        assert_eq!(d.reason(), pb::Reason::OutsideServiceWindow);
        assert_eq!(c.used(N).await, 250);

        // one ms before the first 100 end: still restricted
        c.set_clock(t0 + DAY - 1).await;
        let d = c
            .admit(template(N, 5_000, "t-util", pb::TemplateCategory::Utility))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::LimitReached);
        assert_eq!(d.retry_after_ms, Some(1));
        // at t0 + 24 h they age out: 100 of room
        c.set_clock(t0 + DAY).await;
        let s = c.status(N).await;
        assert!(!s.restricted);
        assert_eq!(s.usage.as_ref().unwrap().used, 150);
        assert_eq!(s.usage.as_ref().unwrap().headroom, 100);
        let d = c
            .admit(template(N, 5_000, "t-util", pb::TemplateCategory::Utility))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::NewConversation);
        assert!(d.counted);
        assert!(!d.admission_id.is_empty());
    })
    .await;
}

/// R3.4 under concurrency: 32 callers race for one number at limit 250 with
/// distinct customers; exactly 250 are admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_admit_exactly_the_limit() {
    serve_within(180, at(1, 8), async |mut c| {
        c.register(N, "TIER_250").await;
        let mut tasks = Vec::new();
        for t in 0..32u64 {
            let mut c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut admitted = Vec::new();
                let mut limited = 0;
                for i in 0..16u64 {
                    let customer = t * 100 + i;
                    let d = c
                        .admit(template(N, customer, "t", pb::TemplateCategory::Utility))
                        .await
                        .expect("decided");
                    match d.reason() {
                        pb::Reason::NewConversation => admitted.push(d.admission_id),
                        pb::Reason::LimitReached => limited += 1,
                        other => panic!("unexpected {other:?}"),
                    }
                }
                (admitted, limited)
            }));
        }
        let mut ids = BTreeSet::new();
        let mut limited = 0;
        for t in tasks {
            let (a, l) = t.await.unwrap();
            limited += l;
            for id in a {
                assert!(ids.insert(id), "an admission id given twice");
            }
        }
        assert_eq!(ids.len(), 250);
        assert_eq!(limited, 32 * 16 - 250);
        assert_eq!(c.used(N).await, 250);
    })
    .await;
}

/// Section 10: every tier name and integer form sets the limit; an unknown
/// value keeps it (the call succeeds with applied=false and the reason); so
/// does TIER_NOT_SET. The limit set is the one admission enforces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_10_tier_values_through_apply_event() {
    serve(at(1, 8), async |mut c| {
        c.register(N, "TIER_250").await;
        let ok =
            |r: &pb::ApplyEventResponse| r.applied && !r.duplicate && r.ignored_reason.is_empty();
        let cases = [
            (by_name("TIER_1K"), ("TIER_1K", 1_000, false)),
            (by_name("TIER_2K"), ("TIER_2K", 2_000, false)),
            (by_name("TIER_10K"), ("TIER_10K", 10_000, false)),
            (by_name("TIER_100K"), ("TIER_100K", 100_000, false)),
            (by_name("TIER_UNLIMITED"), ("TIER_UNLIMITED", 0, true)),
            (by_name("TIER_50"), ("TIER_50", 50, false)),
            (by_name("TIER_250"), ("TIER_250", 250, false)),
            (by_value(2_000), ("TIER_2K", 2_000, false)),
            (by_value(10_000), ("TIER_10K", 10_000, false)),
            (by_value(100_000), ("TIER_100K", 100_000, false)),
            (by_value(-1), ("TIER_UNLIMITED", 0, true)),
            (by_value(250), ("TIER_250", 250, false)),
        ];
        for (i, (tier, (name, limit, unlimited))) in cases.into_iter().enumerate() {
            let r = set_tier(&mut c, number_target(N), tier.clone(), &format!("tier-{i}"))
                .await
                .unwrap();
            assert!(ok(&r), "{tier:?}: {r:?}");
            assert_eq!(
                tier_of(&mut c, N).await,
                (name.to_owned(), limit, unlimited),
                "{tier:?}"
            );
        }

        // unknown values fail safe: no error, not applied, the limit kept
        for (tier, shown) in [(by_value(3_000), "3000"), (by_name("TIER_7"), "TIER_7")] {
            let r = set_tier(&mut c, number_target(N), tier, "").await.unwrap();
            assert!(!r.applied && !r.duplicate, "{r:?}");
            assert!(r.ignored_reason.contains(shown), "{r:?}");
            assert!(r.ignored_reason.contains("limit kept"), "{r:?}");
            assert_eq!(tier_of(&mut c, N).await.1, 250);
        }
        // TIER_NOT_SET keeps the limit too, and says so
        let r = set_tier(&mut c, number_target(N), by_name("TIER_NOT_SET"), "")
            .await
            .unwrap();
        assert!(!r.applied && !r.duplicate, "{r:?}");
        assert!(r.ignored_reason.contains("not set"), "{r:?}");
        assert_eq!(tier_of(&mut c, N).await.1, 250);

        // the limit set is the one enforced: 50 at TIER_50, the 51st is denied
        set_tier(&mut c, number_target(N), by_name("TIER_50"), "")
            .await
            .unwrap();
        c.open_batch(N, 0, 50).await;
        assert_eq!(
            decide(&mut c, util(N, 50)).await.0,
            pb::Reason::LimitReached
        );
        // a repeated delivery is applied once
        let r = set_tier(&mut c, number_target(N), by_value(-1), "tier-10")
            .await
            .unwrap();
        assert!(!r.applied && r.duplicate, "{r:?}");
        assert_eq!(tier_of(&mut c, N).await.1, 50);
    })
    .await;
}

/// R5.6, section 10: a tier event for a seeds portfolio (Meta
/// `max_daily_conversation_per_phone`) sets each of its numbers' limits,
/// numbers whose scopes live on different shards included; at most once per
/// event_key. Under meta it sets the portfolio's shared limit. TIER_NOT_SET
/// and unknown values keep every limit; an unknown portfolio is NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_10_a_portfolio_tier_event_reaches_every_number() {
    serve(at(1, 8), async |mut c| {
        // the numbers of "waba-1" (see Clients::register), on several shards
        let numbers = [
            "100200310",
            "100200311",
            "100200312",
            "100200313",
            "100200314",
        ];
        for n in numbers {
            c.register(n, "TIER_250").await;
        }
        let shards: BTreeSet<u32> = numbers.iter().map(|n| shard_of(n)).collect();
        assert!(shards.len() >= 2, "the numbers share one shard: {shards:?}");
        // a number of another portfolio
        c.admin
            .register_number(pb::RegisterNumberRequest {
                number_id: OTHER.into(),
                portfolio_id: "waba-2".into(),
                ..Default::default()
            })
            .await
            .unwrap();

        let r = set_tier(
            &mut c,
            portfolio_target("waba-1"),
            by_value(10_000),
            "cap-1",
        )
        .await
        .unwrap();
        assert!(
            r.applied && !r.duplicate && r.ignored_reason.is_empty(),
            "{r:?}"
        );
        for n in numbers {
            assert_eq!(c.limit(n).await, 10_000, "{n}");
        }
        assert_eq!(c.limit(OTHER).await, 250, "another portfolio's number");

        // the same delivery again: applied once
        set_tier(
            &mut c,
            portfolio_target("waba-1"),
            by_name("TIER_1K"),
            "cap-2",
        )
        .await
        .unwrap();
        let r = set_tier(
            &mut c,
            portfolio_target("waba-1"),
            by_value(10_000),
            "cap-1",
        )
        .await
        .unwrap();
        assert!(!r.applied && r.duplicate, "{r:?}");
        for n in numbers {
            assert_eq!(c.limit(n).await, 1_000, "{n}");
        }

        // TIER_NOT_SET and unknown values keep every number's limit
        for tier in [by_name("TIER_NOT_SET"), by_value(3_000)] {
            let r = set_tier(&mut c, portfolio_target("waba-1"), tier, "")
                .await
                .unwrap();
            assert!(!r.applied && !r.ignored_reason.is_empty(), "{r:?}");
            for n in numbers {
                assert_eq!(c.limit(n).await, 1_000, "{n}");
            }
        }
        let e = set_tier(
            &mut c,
            portfolio_target("waba-none"),
            by_name("TIER_1K"),
            "",
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");

        // meta: the portfolio's shared limit
        for n in ["100200320", "100200321"] {
            c.admin
                .register_number(pb::RegisterNumberRequest {
                    number_id: n.into(),
                    portfolio_id: "waba-m".into(),
                    profile: "meta".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let r = set_tier(
            &mut c,
            portfolio_target("waba-m"),
            by_name("TIER_10K"),
            "m-1",
        )
        .await
        .unwrap();
        assert!(r.applied, "{r:?}");
        for n in ["100200320", "100200321"] {
            let u = c.status(n).await.usage.unwrap();
            assert_eq!(u.scope(), pb::LimitScope::Portfolio);
            assert_eq!(u.tier.unwrap().limit, 10_000, "{n}");
        }
    })
    .await;
}
