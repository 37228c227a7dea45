//! Policies: opt-out and paused templates (R7, R6.3), SetPolicy applied on every shard or none, portfolio restrictions, registration and portfolio status (section 11).

use admit_proto::v1 as pb;
use tonic::Code;

use crate::support::api::*;
use crate::support::*;

/// R7.1-R7.2 opt-out, R6.3 paused templates, R3.4 idempotent retries, R3.5
/// release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_out_paused_templates_idempotency_and_release() {
    let t0 = at(1, 8);
    serve(t0, async |mut c| {
        c.register(N, "TIER_250").await;

        // STOP opts out; marketing denied even inside the service window
        let r = c.inbound(N, &cust(1), Some("  s t o p ")).await;
        assert_eq!(r.opt_change(), pb::OptChange::OptedOut);
        assert_eq!(r.window_end_unix_ms, t0 + DAY);
        let d = c
            .admit(template(N, 1, "t-mkt", pb::TemplateCategory::Marketing))
            .await
            .unwrap();
        assert!(!d.allowed);
        assert_eq!(d.reason(), pb::Reason::OptedOut);
        assert_eq!(d.retry_after_ms, None);
        let d = c
            .admit(template(N, 1, "t-util", pb::TemplateCategory::Utility))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::ServiceWindow);
        let d = c.admit(free_form(N, 1)).await.unwrap();
        assert!(d.allowed);
        assert_eq!(c.status(N).await.opt_out_count, 1);
        // START opts back in
        let r = c.inbound(N, &cust(1), Some("start")).await;
        assert_eq!(r.opt_change(), pb::OptChange::OptedIn);
        let d = c
            .admit(template(N, 1, "t-mkt", pb::TemplateCategory::Marketing))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::ServiceWindow);

        // a paused template: denied with retry until the pause ends
        let pause = pb::ApplyEventRequest {
            event_key: "tmpl-pause-1".into(),
            event: Some(pb::apply_event_request::Event::TemplateStatus(
                pb::TemplateStatusChanged {
                    template_id: "t-promo".into(),
                    event: pb::TemplateStatusEvent::Paused as i32,
                    pause_title: pb::PauseTitle::FirstPause as i32,
                    paused_until_unix_ms: Some(t0 + 3 * HOUR),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let r = c
            .admin
            .apply_event(pause.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(r.applied && !r.duplicate);
        let r = c.admin.apply_event(pause).await.unwrap().into_inner();
        assert!(
            !r.applied && r.duplicate,
            "a repeated delivery is applied once"
        );
        let d = c
            .admit(template(N, 2, "t-promo", pb::TemplateCategory::Marketing))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::TemplatePaused);
        assert_eq!(d.retry_after_ms, Some(3 * HOUR));
        assert_eq!(c.used(N).await, 0, "a denied send uses nothing");
        c.set_clock(t0 + 3 * HOUR).await;
        let d = c
            .admit(template(N, 2, "t-promo", pb::TemplateCategory::Marketing))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::NewConversation);
        assert_eq!(c.used(N).await, 1);

        // idempotent retries: same decision and admission id, counted once
        let s = keyed(
            template(N, 3, "t-util", pb::TemplateCategory::Utility),
            "order-3",
        );
        let first = c.admit(s.clone()).await.unwrap();
        assert_eq!(first.reason(), pb::Reason::NewConversation);
        assert!(first.counted && !first.replayed);
        c.set_clock(t0 + 4 * HOUR).await;
        for _ in 0..3 {
            let again = c.admit(s.clone()).await.unwrap();
            assert_eq!(again.reason(), pb::Reason::NewConversation);
            assert_eq!(again.admission_id, first.admission_id);
            assert!(again.replayed);
            assert!(!again.counted);
        }
        let batch = c
            .admit
            .admit_batch(pb::AdmitBatchRequest {
                sends: vec![s.clone()],
            })
            .await
            .unwrap()
            .into_inner();
        match batch.results[0].result.as_ref().unwrap() {
            pb::admit_batch_result::Result::Decision(d) => {
                assert_eq!(d.admission_id, first.admission_id)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.used(N).await, 2);
        // the same key for another send is refused
        let other = keyed(
            template(N, 4, "t-util", pb::TemplateCategory::Utility),
            "order-3",
        );
        let e = c.admit(other).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("idempotency_key"), "{}", e.message());
        assert_eq!(c.used(N).await, 2);

        // release (R3.5): no longer counted; idempotent
        let r = c
            .admit
            .release(pb::ReleaseRequest {
                admission_id: first.admission_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.released);
        assert_eq!(r.usage.unwrap().used, 1);
        let r = c
            .admit
            .release(pb::ReleaseRequest {
                admission_id: first.admission_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!r.released);
    })
    .await;
}

/// A SetPolicy is applied on every shard or on none: changing the scope of an
/// existing profile is FAILED_PRECONDITION, whichever shards hold its numbers
/// (none included), and no shard keeps the change; other fields change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_policy_keeps_a_profiles_scope_on_every_shard() {
    serve(at(1, 8), async |mut c| {
        let mut own = get_policy(&mut c, "seeds").await;
        own.name = "own".into();
        assert!(set_policy(&mut c, own.clone()).await.unwrap().created);
        // its number lives on a shard other than 0, the one GetPolicy reads here
        let n = (0..100)
            .map(|i| format!("1002004{i:02}"))
            .find(|n| shard_of(n) != 0)
            .unwrap();
        c.admin
            .register_number(pb::RegisterNumberRequest {
                number_id: n.clone(),
                profile: "own".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut p = own.clone();
        p.scope = pb::LimitScope::Portfolio as i32;
        let e = set_policy(&mut c, p.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("policy.scope"), "{}", e.message());
        assert_eq!(
            get_policy(&mut c, "own").await.scope(),
            pb::LimitScope::Number
        );
        // a profile no number uses keeps its scope as well
        p.name = "unused".into();
        p.scope = pb::LimitScope::Number as i32;
        set_policy(&mut c, p.clone()).await.unwrap();
        p.scope = pb::LimitScope::Portfolio as i32;
        let e = set_policy(&mut c, p).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        // other fields change, on every shard: the number follows them
        own.pair_rate.as_mut().unwrap().burst = 2;
        own.pair_rate.as_mut().unwrap().interval_ms = DAY;
        let r = set_policy(&mut c, own).await.unwrap();
        assert!(!r.created);
        assert_eq!(r.policy.unwrap().pair_rate.unwrap().burst, 2);
        c.inbound(&n, &cust(1), None).await;
        for _ in 0..2 {
            assert_eq!(
                decide(&mut c, free_form(&n, 1)).await.0,
                pb::Reason::ServiceWindow
            );
        }
        assert_eq!(
            decide(&mut c, free_form(&n, 1)).await.0,
            pb::Reason::PairRateLimited
        );
    })
    .await;
}

/// R7.1, R8, R5.2-R5.5, section 9: SetPolicy values the service cannot follow
/// are INVALID_ARGUMENT naming the field, never stored or ignored: rates
/// beyond their bounds, blank or too many keywords, a third upgrade rule,
/// LOW as an upgrade quality, a recovery period of its own, another pair
/// back-off base, no recheck after a delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_policy_refuses_values_it_cannot_follow() {
    serve(at(1, 8), async |mut c| {
        let seeds = get_policy(&mut c, "seeds").await;
        type Change = Box<dyn Fn(&mut pb::Policy)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "policy.pair_rate.burst",
                Box::new(|p| p.pair_rate.as_mut().unwrap().burst = u32::MAX),
            ),
            (
                "policy.pair_rate.interval_ms",
                Box::new(|p| p.pair_rate.as_mut().unwrap().interval_ms = 20_000_000_000_000_000),
            ),
            (
                "policy.throughput_mps",
                Box::new(|p| p.throughput_mps = 2_000_000),
            ),
            (
                "policy.opt_out_keywords[0]",
                Box::new(|p| p.opt_out_keywords = vec![" ".into()]),
            ),
            (
                "policy.opt_in_keywords",
                Box::new(|p| p.opt_in_keywords = (0..65).map(|i| format!("GO{i}")).collect()),
            ),
            (
                "policy.upgrade_rules[2]",
                Box::new(|p| p.upgrade_rules.push(p.upgrade_rules[1].clone())),
            ),
            (
                "policy.upgrade_rules[0].allowed_qualities[0]",
                Box::new(|p| {
                    p.upgrade_rules[0].allowed_qualities = vec![pb::NumberQuality::Low as i32]
                }),
            ),
            (
                "policy.flagged_downgrade.recovery_duration_ms",
                Box::new(|p| p.flagged_downgrade.as_mut().unwrap().recovery_duration_ms = DAY),
            ),
            (
                "policy.cooldowns.pair_backoff_base_s",
                Box::new(|p| p.cooldowns.as_mut().unwrap().pair_backoff_base_s = 2),
            ),
            (
                "policy.upgrade_rules[1].recheck_at_effect",
                Box::new(|p| p.upgrade_rules[1].recheck_at_effect = false),
            ),
        ];
        for (field, change) in cases {
            let mut p = seeds.clone();
            change(&mut p);
            let e = set_policy(&mut c, p).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
            assert!(e.message().contains(field), "{field}: {}", e.message());
        }
        assert_eq!(get_policy(&mut c, "seeds").await, seeds, "nothing stored");
        // the seeds profile as it was: an empty message opts nobody out
        c.register(N, "TIER_250").await;
        c.inbound(N, &cust(1), Some(" ")).await;
        assert_eq!(decide(&mut c, mkt(N, 1)).await.0, pb::Reason::ServiceWindow);
    })
    .await;
}

/// Section 10: a restriction of a portfolio no shard knows is NOT_FOUND and
/// creates nothing; one of a known portfolio reaches its numbers on every
/// shard, and a number that joins the portfolio later; lifting it lifts it
/// for all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_10_a_portfolio_restriction_needs_a_known_portfolio() {
    serve(at(1, 8), async |mut c| {
        let e = restrict_portfolio(&mut c, "typo", false).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let e = portfolio_status(&mut c, "typo").await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "nothing created: {e:?}");

        let ns = numbers_on_distinct_shards("1002006", 3);
        // two numbers of waba-1 (see Clients::register), then the restriction
        for n in &ns[..2] {
            c.register(n, "TIER_250").await;
        }
        let r = restrict_portfolio(&mut c, "waba-1", false).await.unwrap();
        assert!(r.applied, "{r:?}");
        // a third joins later, on a shard that knew nothing of waba-1
        c.register(&ns[2], "TIER_250").await;
        for n in &ns {
            assert!(c.status(n).await.account_restricted, "{n}");
            assert_eq!(
                decide(&mut c, util(n, 1)).await.0,
                pb::Reason::NumberRestricted,
                "{n}"
            );
        }
        assert!(
            portfolio_status(&mut c, "waba-1")
                .await
                .unwrap()
                .account_restricted
        );
        restrict_portfolio(&mut c, "waba-1", true).await.unwrap();
        for n in &ns {
            assert!(!c.status(n).await.account_restricted, "{n}");
            assert_eq!(
                decide(&mut c, util(n, 1)).await.0,
                pb::Reason::NewConversation,
                "{n}"
            );
        }
    })
    .await;
}

/// admin.proto: a registered number keeps its portfolio under every profile
/// (the seeds one too); registering it again with its own portfolio updates
/// it and keeps its count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_number_keeps_its_portfolio() {
    serve(at(1, 8), async |mut c| {
        c.register(N, "TIER_250").await;
        c.open_batch(N, 0, 3).await;
        let e = c
            .admin
            .register_number(pb::RegisterNumberRequest {
                number_id: N.into(),
                portfolio_id: "waba-2".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("portfolio_id"), "{}", e.message());
        assert_eq!(c.status(N).await.portfolio_id, "waba-1");
        let e = portfolio_status(&mut c, "waba-2").await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "nothing created: {e:?}");

        let r = c
            .admin
            .register_number(pb::RegisterNumberRequest {
                number_id: N.into(),
                portfolio_id: "waba-1".into(),
                quality: Some(pb::NumberQuality::Medium as i32),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!r.created);
        let s = r.status.unwrap();
        assert_eq!(
            (s.portfolio_id.as_str(), s.quality(), s.usage.unwrap().used),
            ("waba-1", pb::NumberQuality::Medium, 3)
        );
    })
    .await;
}

/// Section 11 for a seeds portfolio (its numbers' limits added up): unique
/// customers as labelled estimates, restricted_until while a number's limit
/// is used up, the lowest known quality (UNKNOWN hides nothing), and no
/// limit shown while it has no number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_11_status_of_a_seeds_portfolio() {
    let t0 = at(1, 8);
    serve(t0, async |mut c| {
        let r = c
            .admin
            .register_portfolio(pb::RegisterPortfolioRequest {
                portfolio_id: "waba-1".into(),
                profile: "seeds".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let s = r.status.unwrap();
        assert_eq!(s.usage, None, "no number: no limit to show");
        assert!(!s.restricted);

        let ns = numbers_on_distinct_shards("1002007", 2);
        let (a, b) = (&ns[0], &ns[1]);
        c.register(a, "TIER_250").await;
        c.register(b, "TIER_250").await;
        set_tier(&mut c, number_target(a), by_name("TIER_50"), "")
            .await
            .unwrap();
        for (n, q) in [
            (a, pb::NumberQuality::Unknown),
            (b, pb::NumberQuality::Medium),
        ] {
            c.admin
                .apply_event(pb::ApplyEventRequest {
                    event: Some(pb::apply_event_request::Event::NumberQuality(
                        pb::NumberQualityChanged {
                            number_id: n.clone(),
                            quality: q as i32,
                        },
                    )),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        c.open_batch(a, 0, 50).await;
        c.set_clock(t0 + HOUR).await;
        c.open_batch(b, 100, 10).await;

        let s = portfolio_status(&mut c, "waba-1").await.unwrap();
        assert_eq!(s.quality(), pb::NumberQuality::Medium);
        assert!(s.restricted);
        assert_eq!(s.restricted_until_unix_ms, Some(t0 + DAY));
        let u = s.usage.unwrap();
        assert_eq!((u.tier.unwrap().limit, u.used), (300, 60));
        assert_eq!(u.next_release_unix_ms, Some(t0 + DAY));
        let uc = s.unique_customers.expect("unique customers");
        assert!(uc.estimated, "two shards: an estimate");
        assert!((55..=65).contains(&uc.last_7d), "{uc:?}");
        assert!((55..=65).contains(&uc.last_30d), "{uc:?}");
    })
    .await;
}
