//! Every rule of SPEC R2-R9 at its edges: one millisecond before and at the end of each
//! window or delay. Test names carry the rule they check.

mod support;
use admit_core::*;
use support::*;

const N: &str = "1001";

fn h_with(limit: u32) -> H {
    let mut h = H::new();
    h.register(N, Some(Limit::Capped(limit)), T0);
    h
}

#[test]
fn r2_1_service_window_lasts_24h_from_the_latest_message() {
    let mut h = h_with(250);
    let t = at(1, 9, 0);
    h.inbound(N, 1, Some("hi"), t);
    let d = h.admit(N, 1, SendKind::FreeForm, Ts(t.0 + DAY - 1));
    assert_eq!((d.allowed, d.reason), (true, Reason::ServiceWindow));
    assert_eq!(d.window_end, Some(Ts(t.0 + DAY)));
    assert!(!d.counted);
    let d = h.admit(N, 1, SendKind::FreeForm, Ts(t.0 + DAY));
    assert_eq!((d.allowed, d.reason), (false, Reason::OutsideServiceWindow));
    // a later message moves the window's end
    h.inbound(N, 2, None, t);
    h.inbound(N, 2, None, Ts(t.0 + HOUR));
    let d = h.admit(N, 2, SendKind::FreeForm, Ts(t.0 + DAY + HOUR - 1));
    assert_eq!(d.reason, Reason::ServiceWindow);
    assert_eq!(
        h.status(N, t).used,
        0,
        "service-window sends are not counted"
    );
}

#[test]
fn r2_2_conversation_lasts_24h_from_its_first_message() {
    let mut h = h_with(250);
    let t = at(1, 10, 0);
    let d = h.admit(N, 1, mkt(), t);
    assert_eq!(
        (d.allowed, d.reason, d.counted),
        (true, Reason::NewConversation, true)
    );
    assert_eq!(d.window_end, Some(Ts(t.0 + DAY)));
    assert!(d.admission.is_some());
    let d = h.admit(N, 1, mkt(), Ts(t.0 + DAY - 1));
    assert_eq!(
        (d.reason, d.counted, d.used),
        (Reason::OpenConversation, false, 1)
    );
    // free-form inside an open conversation is allowed too
    let d = h.admit(N, 1, SendKind::FreeForm, Ts(t.0 + DAY - 1));
    assert_eq!(d.reason, Reason::OpenConversation);
    // at exactly +24 h it is over: a template opens (and counts) a new one
    let d = h.admit(N, 1, mkt(), Ts(t.0 + DAY));
    assert_eq!(
        (d.reason, d.counted, d.used),
        (Reason::NewConversation, true, 1)
    );
}

#[test]
fn r2_3_free_entry_point_window_lasts_72h() {
    // R2.3 is the meta profile's (a seeds number ignores the event: see edges.rs)
    let mut h = H::new();
    h.register_with(
        NumberRegistration {
            number: Some(num(N)),
            portfolio: Some(PortfolioId::parse("portfolio", "waba1").unwrap()),
            profile: Some("meta".into()),
            limit: Some(Limit::Capped(250)),
            ..Default::default()
        },
        T0,
    );
    let t = at(1, 0, 0);
    assert!(matches!(
        h.event(
            PlatformEvent::FreeEntryPoint {
                number: num(N),
                customer: cust(5),
            },
            t,
        ),
        Output::Event { applied: true, .. }
    ));
    let d = h.admit(N, 5, mkt(), Ts(t.0 + 72 * HOUR - 1));
    assert_eq!(
        (d.allowed, d.reason, d.counted),
        (true, Reason::FreeEntryPoint, false)
    );
    let d = h.admit(N, 5, SendKind::FreeForm, Ts(t.0 + 72 * HOUR));
    assert_eq!(d.reason, Reason::OutsideServiceWindow);
}

#[test]
fn r3_2_limit_reached_until_the_oldest_conversation_ends() {
    let mut h = h_with(250);
    let t = at(1, 8, 0);
    h.open_many(N, 0, 1, t);
    h.open_many(N, 1, 249, Ts(t.0 + HOUR));
    let d = h.admit(N, 999, mkt(), Ts(t.0 + 2 * HOUR));
    assert_eq!((d.allowed, d.reason), (false, Reason::LimitReached));
    assert_eq!(
        d.retry_at,
        Some(Ts(t.0 + DAY)),
        "when the oldest counted conversation ends"
    );
    assert_eq!(
        (d.limit, d.used, d.headroom()),
        (Some(Limit::Capped(250)), 250, Some(0))
    );
    let d = h.admit(N, 999, mkt(), Ts(t.0 + DAY - 1));
    assert_eq!(d.reason, Reason::LimitReached);
    let d = h.admit(N, 999, mkt(), Ts(t.0 + DAY));
    assert_eq!((d.reason, d.used), (Reason::NewConversation, 250));
    // the next slot frees when the 249 of hour +1 end
    let d = h.admit(N, 1000, mkt(), Ts(t.0 + DAY));
    assert_eq!(d.retry_at, Some(Ts(t.0 + HOUR + DAY)));
}

#[test]
fn r3_2_free_form_needs_a_window_and_denials_come_first() {
    let mut h = h_with(250);
    let d = h.admit(N, 1, SendKind::FreeForm, T0);
    assert_eq!(
        (d.allowed, d.reason, d.retry_at),
        (false, Reason::OutsideServiceWindow, None)
    );
    let d = h.admit("777", 1, mkt(), T0);
    assert_eq!((d.allowed, d.reason), (false, Reason::UnknownNumber));
}

#[test]
fn r3_3_unlimited_tier_counts_but_never_caps() {
    let mut h = H::new();
    h.register(N, Some(Limit::Unlimited), T0);
    h.open_many(N, 0, 300, T0);
    let s = h.status(N, T0);
    assert_eq!(
        (s.limit, s.used, s.headroom, s.restricted),
        (Limit::Unlimited, 300, None, false)
    );
}

#[test]
fn r3_4_idempotent_retries_get_the_same_decision_and_count_once() {
    let mut h = h_with(2);
    let req = |c: u64, key: &str| AdmitRequest {
        number: num(N),
        customer: cust(c),
        kind: mkt(),
        idempotency_key: Some(IdempotencyKey::parse("idempotency_key", key).unwrap()),
    };
    let first = h.admit_req(req(1, "k1"), T0).unwrap();
    let again = h.admit_req(req(1, "k1"), Ts(T0.0 + 5)).unwrap();
    assert!(!first.replayed && again.replayed);
    assert_eq!(
        first,
        Decision {
            replayed: false,
            ..again.clone()
        }
    );
    assert_eq!(
        again.decided_at, T0,
        "a replay carries the first decision's time"
    );
    assert_eq!(h.status(N, T0).used, 1);
    h.admit_req(req(2, "k2"), T0).unwrap();
    let denied = h.admit_req(req(3, "k3"), T0).unwrap();
    assert_eq!(denied.reason, Reason::LimitReached);
    // the same key for another request is an error, and changes nothing
    let e = h.admit_req(req(4, "k1"), T0).unwrap_err();
    assert!(matches!(e, CoreError::IdempotencyConflict(_)));
    assert_eq!(h.status(N, T0).used, 2);
    // a denial is replayed too, even once room frees up
    h.apply(Command::Release(first.admission.unwrap()), T0)
        .unwrap();
    assert_eq!(
        h.admit_req(req(3, "k3"), T0).unwrap(),
        Decision {
            replayed: true,
            ..denied.clone()
        }
    );
}

#[test]
fn r3_5_release_gives_the_conversation_back() {
    let mut h = h_with(1);
    let d = h.admit(N, 1, mkt(), T0);
    let id = d.admission.clone().unwrap();
    assert_eq!(h.admit(N, 2, mkt(), T0).reason, Reason::LimitReached);
    let out = h.apply(Command::Release(id.clone()), T0).unwrap();
    assert_eq!(out, Output::Released { released: true });
    assert_eq!(
        h.apply(Command::Release(id.clone()), T0).unwrap(),
        Output::Released { released: false }
    );
    assert_eq!(h.status(N, T0).used, 0);
    // the released pair has no open conversation: a new template counts again
    let d = h.admit(N, 1, mkt(), T0);
    assert_eq!((d.reason, d.counted), (Reason::NewConversation, true));
    // a failed send reported with its admission id releases it too
    let out = h
        .apply(
            Command::Outcome(Outcome {
                number: num(N),
                customer: cust(1),
                admission: d.admission,
                status: DeliveryStatus::Failed,
                error_code: Some(131026),
                template: None,
                event_key: None,
                message_id: None,
            }),
            T0,
        )
        .unwrap();
    assert!(matches!(out, Output::Outcome { released: true, .. }));
    assert_eq!(h.status(N, T0).used, 0);
    let parsed = AdmissionId::parse("admission_id", &id.to_string()).unwrap();
    assert_eq!(parsed, id);
}

#[test]
fn r3_6_denied_sends_never_use_up_the_limit() {
    let mut h = h_with(1);
    h.inbound(N, 1, Some("STOP"), T0);
    let d = h.admit(N, 1, mkt(), T0);
    assert_eq!(d.reason, Reason::OptedOut);
    assert_eq!(h.status(N, T0).used, 0);
    h.event(
        PlatformEvent::TemplateStatus {
            template: TemplateId::parse("t", "receipt").unwrap(),
            event: TemplateEvent::Disabled,
        },
        T0,
    );
    assert_eq!(h.admit(N, 2, util(), T0).reason, Reason::TemplateDisabled);
    assert_eq!(h.status(N, T0).used, 0);
    assert_eq!(
        h.admit(N, 2, tpl("other", Category::Utility), T0).reason,
        Reason::NewConversation
    );
}

#[test]
fn r3_1_portfolio_scope_counts_a_customer_once_across_its_numbers() {
    let mut h = H::new();
    // meta's rules without local upgrades, so the limit stays at 2
    let mut flat = Policy::meta();
    flat.name = "meta-flat".into();
    flat.upgrade = None;
    h.apply(Command::SetPolicy(flat), T0).unwrap();
    let p = PortfolioId::parse("portfolio", "waba1").unwrap();
    for n in ["201", "202"] {
        h.register_with(
            NumberRegistration {
                number: Some(num(n)),
                portfolio: Some(p.clone()),
                profile: Some("meta-flat".into()),
                limit: Some(Limit::Capped(2)),
                ..Default::default()
            },
            T0,
        );
    }
    let a = h.admit("201", 1, mkt(), T0);
    assert!(a.counted);
    // the same customer from the other number: a conversation opens, not counted again
    let b = h.admit("202", 1, mkt(), Ts(T0.0 + HOUR));
    assert_eq!(
        (b.reason, b.counted, b.used),
        (Reason::NewConversation, false, 1)
    );
    h.admit("202", 2, mkt(), Ts(T0.0 + HOUR));
    assert_eq!(
        h.admit("201", 3, mkt(), Ts(T0.0 + HOUR)).reason,
        Reason::LimitReached
    );
    // customer 1 stays counted until its latest conversation (number 202's) ends
    let d = h.admit("201", 3, mkt(), Ts(T0.0 + DAY));
    assert_eq!(d.reason, Reason::LimitReached);
    assert_eq!(d.retry_at, Some(Ts(T0.0 + DAY + HOUR)));
    assert_eq!(
        h.admit("201", 3, mkt(), Ts(T0.0 + DAY + HOUR)).reason,
        Reason::NewConversation
    );
    let ps = h.e.reader().portfolio_status(&p, T0).unwrap();
    assert_eq!(ps.scopes.len(), 1);
    assert_eq!(ps.scopes[0].numbers.len(), 2);
    // a portfolio-scoped profile needs the portfolio
    let e = h
        .apply(
            Command::RegisterNumber(NumberRegistration {
                number: Some(num("203")),
                profile: Some("meta".into()),
                ..Default::default()
            }),
            T0,
        )
        .unwrap_err();
    assert!(matches!(e, CoreError::Invalid { ref field, .. } if field == "portfolio"));
}

#[test]
fn r4_account_status_and_restricted_state() {
    let mut h = h_with(2);
    assert_eq!(h.status(N, T0).account_status, AccountStatus::Healthy);
    h.inbound(N, 9, None, T0);
    h.open_many(N, 0, 2, T0);
    let s = h.status(N, Ts(T0.0 + 1));
    assert_eq!(
        (s.account_status, s.restricted),
        (AccountStatus::Restricted, true)
    );
    assert_eq!(s.restricted_until, Some(Ts(T0.0 + DAY)));
    // R4.2: open service windows and conversations still work; new ones do not
    assert_eq!(
        h.admit(N, 9, mkt(), Ts(T0.0 + 2)).reason,
        Reason::ServiceWindow
    );
    assert_eq!(
        h.admit(N, 0, mkt(), Ts(T0.0 + 2)).reason,
        Reason::OpenConversation
    );
    assert_eq!(
        h.admit(N, 5, mkt(), Ts(T0.0 + 2)).reason,
        Reason::LimitReached
    );
    // it lifts by itself as conversations age out
    let s = h.status(N, Ts(T0.0 + DAY - 1));
    assert!(s.restricted);
    let s = h.status(N, Ts(T0.0 + DAY));
    assert_eq!(
        (s.restricted, s.account_status, s.used),
        (false, AccountStatus::Healthy, 0)
    );
    // R4.3: At Risk when quality is Low and not restricted
    h.event(
        PlatformEvent::NumberQuality {
            number: num(N),
            quality: Quality::Low,
        },
        Ts(T0.0 + DAY),
    );
    assert_eq!(
        h.status(N, Ts(T0.0 + DAY)).account_status,
        AccountStatus::AtRisk
    );
}

fn seeds_1k() -> H {
    let mut h = H::new();
    h.register(N, Some(Limit::Capped(1_000)), T0);
    h
}

/// R3.5 with R5.3: a release after the conversation left the 24 h window answers
/// `released = false`, yet takes the conversation out of the 7-day count (the message
/// failed: it opened none), so the next conversation does not reach the threshold.
#[test]
fn r3_5_a_release_after_the_24h_window_still_leaves_the_upgrade_count() {
    // 499 in the 7 days, the last one's admission id kept
    let setup = || {
        let mut h = seeds_1k();
        h.open_many(N, 0, 498, at(1, 9, 0));
        let d = h.admit(N, 498, util(), at(1, 9, 0));
        let id = d.admission.clone().expect("a new conversation");
        assert_eq!(h.status(N, at(2, 9, 0)).upgrade_count, 499);
        (h, id)
    };
    // a millisecond before its window ends it is still counted, and given back
    let (mut h, id) = setup();
    let out = h.apply(Command::Release(id), Ts(at(2, 9, 0).0 - 1));
    assert_eq!(out.unwrap(), Output::Released { released: true });
    assert_eq!(h.status(N, at(2, 9, 0)).upgrade_count, 498);
    // at the window's end it no longer counts in the 24 h window: not "released",
    // yet out of the 7-day count
    let (mut h, id) = setup();
    let out = h.apply(Command::Release(id), at(2, 9, 0));
    assert_eq!(out.unwrap(), Output::Released { released: false });
    let s = h.status(N, at(2, 9, 0));
    assert_eq!((s.used, s.upgrade_count), (0, 498));
    h.open_many(N, 499, 1, at(2, 10, 0));
    let s = h.status(N, at(2, 10, 0));
    assert_eq!(
        (s.upgrade_count, s.upgrade_at),
        (499, None),
        "no wait at 499"
    );
}

#[test]
fn r5_3_seed_example_1_upgrade_24h_after_the_500th() {
    let mut h = seeds_1k();
    h.open_many(N, 0, 499, at(1, 9, 0));
    h.open_many(N, 499, 1, at(1, 15, 0));
    let s = h.status(N, at(1, 15, 0));
    assert_eq!(s.upgrade_at, Some(at(2, 15, 0)));
    assert!(s.upgrade_eligible);
    assert_eq!((s.upgrade_count, s.upgrade_threshold), (500, Some(500)));
    assert_eq!(
        h.status(N, Ts(at(2, 15, 0).0 - 1)).limit,
        Limit::Capped(1_000)
    );
    assert_eq!(h.status(N, at(2, 15, 0)).limit, Limit::Capped(10_000));
    // day 2's 500: the 7-day count reaches 1,000, as in the seed's table
    h.open_many(N, 500, 500, at(2, 15, 0));
    let s = h.status(N, at(2, 15, 0));
    assert_eq!(
        (s.limit, s.used, s.upgrade_count),
        (Limit::Capped(10_000), 500, 1_000)
    );
    assert_eq!(s.upgrades, 1);
}

#[test]
fn r5_3_seed_example_2_upgrade_on_day_4_at_19_00() {
    let mut h = seeds_1k();
    h.open_many(N, 0, 100, at(1, 10, 0));
    h.open_many(N, 100, 200, at(2, 10, 0));
    h.open_many(N, 300, 199, at(3, 12, 0));
    assert_eq!(h.status(N, at(3, 18, 0)).upgrade_at, None);
    h.open_many(N, 499, 1, at(3, 19, 0));
    assert_eq!(h.status(N, at(3, 19, 0)).upgrade_at, Some(at(4, 19, 0)));
    h.open_many(N, 500, 100, at(4, 9, 0));
    assert_eq!(
        h.status(N, Ts(at(4, 19, 0).0 - 1)).limit,
        Limit::Capped(1_000)
    );
    let d = h.admit(N, 600, util(), at(4, 19, 0));
    assert_eq!(
        (d.reason, d.limit),
        (Reason::NewConversation, Some(Limit::Capped(10_000)))
    );
    h.open_many(N, 601, 199, at(4, 20, 0));
    let s = h.status(N, at(4, 20, 0));
    assert_eq!(s.limit, Limit::Capped(10_000));
    assert_eq!(s.upgrade_count, 800, "day 4's 300 count in the 7-day total");
    // day 4's 300 alone fit under 1K too: 701 more make 1,001 in the 24 h window, which
    // only the 10K limit admits
    h.open_many(N, 800, 701, at(4, 21, 0));
    let s = h.status(N, at(4, 21, 0));
    assert_eq!((s.used, s.restricted), (1_001, false));
}

#[test]
fn r5_3_conditions_are_checked_again_when_the_wait_ends() {
    let mut h = seeds_1k();
    h.open_many(N, 0, 500, at(1, 15, 0));
    assert_eq!(h.status(N, at(1, 15, 0)).upgrade_at, Some(at(2, 15, 0)));
    h.event(
        PlatformEvent::DisplayName {
            number: num(N),
            approved: false,
        },
        at(2, 10, 0),
    );
    let s = h.status(N, at(2, 15, 0));
    assert_eq!(
        (s.limit, s.upgrade_at),
        (Limit::Capped(1_000), None),
        "no upgrade"
    );
    h.event(
        PlatformEvent::DisplayName {
            number: num(N),
            approved: true,
        },
        at(2, 16, 0),
    );
    // the next crossing (the next conversation while at the threshold) starts a new wait
    h.open_many(N, 500, 1, at(2, 17, 0));
    assert_eq!(h.status(N, at(2, 17, 0)).upgrade_at, Some(at(3, 17, 0)));
    assert_eq!(h.status(N, at(3, 17, 0)).limit, Limit::Capped(10_000));
}

#[test]
fn r5_3_seven_day_count_is_taken_at_the_end_of_the_wait() {
    let mut h = seeds_1k();
    // 250 on day 1, 250 on day 7 at 12:00: the 500th crosses on day 7 at 12:00 ...
    h.open_many(N, 0, 250, at(1, 11, 0));
    h.open_many(N, 250, 250, at(7, 12, 0));
    assert_eq!(h.status(N, at(7, 12, 0)).upgrade_at, Some(at(8, 12, 0)));
    // ... but by day 8 at 12:00 day 1's 250 have left the 7-day window: no upgrade
    let s = h.status(N, at(8, 12, 0));
    assert_eq!(s.limit, Limit::Capped(1_000));
}

#[test]
fn r5_2_250_to_1k_after_1000_unique_customers_in_30_days_with_high_quality() {
    let mut h = H::new();
    h.register(N, None, T0);
    assert_eq!(h.status(N, T0).limit, Limit::Capped(250));
    for day in 1..=4 {
        h.open_many(N, (day - 1) * 250, 250, at(day, 9, 0));
    }
    // the 1,000th at day 4 09:00: takes effect at the crossing (no delay by default)
    let s = h.status(N, at(4, 9, 0));
    assert_eq!(s.limit, Limit::Capped(1_000));
    // with Medium quality it would not have happened
    let mut h = H::new();
    h.register_with(
        NumberRegistration {
            number: Some(num(N)),
            quality: Some(Quality::Medium),
            ..Default::default()
        },
        T0,
    );
    for day in 1..=4 {
        h.open_many(N, (day - 1) * 250, 250, at(day, 9, 0));
    }
    assert_eq!(h.status(N, at(4, 9, 0)).limit, Limit::Capped(250));
}

#[test]
fn r5_4_meta_profile_upgrades_after_its_delay_with_high_quality() {
    let mut h = H::new();
    let p = PortfolioId::parse("portfolio", "w").unwrap();
    h.register_with(
        NumberRegistration {
            number: Some(num(N)),
            portfolio: Some(p.clone()),
            profile: Some("meta".into()),
            ..Default::default()
        },
        T0,
    );
    assert_eq!(h.status(N, T0).limit, Limit::Capped(250));
    h.open_many(N, 0, 125, at(1, 10, 0));
    let s = h.status(N, at(1, 10, 0));
    assert_eq!(s.upgrade_at, Some(at(1, 16, 0)));
    assert_eq!(
        h.status(N, Ts(at(1, 16, 0).0 - 1)).limit,
        Limit::Capped(250)
    );
    assert_eq!(h.status(N, at(1, 16, 0)).limit, Limit::Capped(2_000));
    // status through the portfolio shows the same scope
    let ps = h.e.reader().portfolio_status(&p, at(1, 16, 0)).unwrap();
    assert_eq!(ps.scopes[0].limit, Limit::Capped(2_000));
}

fn low(h: &mut H, q: Quality, t: Ts) {
    h.event(
        PlatformEvent::NumberQuality {
            number: num(N),
            quality: q,
        },
        t,
    );
}

#[test]
fn r5_5_seven_low_days_downgrade_one_tier_and_flag_again() {
    let mut h = H::new();
    h.register(N, Some(Limit::Capped(10_000)), T0);
    let t = at(1, 8, 0);
    low(&mut h, Quality::Low, t);
    let s = h.status(N, t);
    assert_eq!(s.numbers[0].status, NumberStatus::Flagged);
    assert_eq!(s.numbers[0].flagged_since, Some(t));
    assert_eq!(s.downgrade_at, Some(Ts(t.0 + 7 * DAY)));
    assert_eq!(
        h.status(N, Ts(t.0 + 7 * DAY - 1)).limit,
        Limit::Capped(10_000)
    );
    let s = h.status(N, Ts(t.0 + 7 * DAY));
    assert_eq!(s.limit, Limit::Capped(1_000));
    // still Low: a new Flagged period starts at once
    assert_eq!(s.numbers[0].status, NumberStatus::Flagged);
    assert_eq!(s.numbers[0].flagged_since, Some(Ts(t.0 + 7 * DAY)));
    // the model's state is the same whether read or applied
    let d = h.admit(N, 1, util(), Ts(t.0 + 14 * DAY));
    assert_eq!(d.limit, Some(Limit::Capped(250)));
    let d = h.admit(N, 2, util(), Ts(t.0 + 21 * DAY));
    assert_eq!(
        d.limit,
        Some(Limit::Capped(250)),
        "never below the lowest tier"
    );
}

#[test]
fn r5_5_recovery_for_seven_days_unflags_without_downgrade() {
    let mut h = H::new();
    h.register(N, Some(Limit::Capped(10_000)), T0);
    let t = at(1, 0, 0);
    low(&mut h, Quality::Low, t);
    low(&mut h, Quality::Medium, Ts(t.0 + 2 * DAY));
    let s = h.status(N, Ts(t.0 + 9 * DAY - 1));
    assert_eq!(
        (s.numbers[0].status, s.limit),
        (NumberStatus::Flagged, Limit::Capped(10_000))
    );
    let s = h.status(N, Ts(t.0 + 9 * DAY));
    assert_eq!(
        (s.numbers[0].status, s.limit),
        (NumberStatus::Connected, Limit::Capped(10_000))
    );
    assert_eq!(s.numbers[0].flagged_since, None);
    // a fall back to Low during recovery restarts the 7 Low days from that moment
    let t2 = Ts(t.0 + 20 * DAY);
    low(&mut h, Quality::Low, t2);
    low(&mut h, Quality::High, Ts(t2.0 + 3 * DAY));
    low(&mut h, Quality::Low, Ts(t2.0 + 5 * DAY));
    assert_eq!(
        h.status(N, Ts(t2.0 + 12 * DAY - 1)).limit,
        Limit::Capped(10_000)
    );
    assert_eq!(h.status(N, Ts(t2.0 + 12 * DAY)).limit, Limit::Capped(1_000));
}

#[test]
fn r5_5_no_upgrade_while_flagged() {
    let mut h = seeds_1k();
    low(&mut h, Quality::Low, at(1, 0, 0));
    h.open_many(N, 0, 500, at(1, 15, 0));
    let s = h.status(N, at(1, 15, 0));
    assert_eq!((s.upgrade_at, s.upgrade_eligible), (None, false));
}

/// R5.5 by itself: under R5.2's rule (no Connected status asked for, High quality) a
/// Flagged number rated High again is recovering, and every other condition holds; the
/// Flagged status alone keeps it at 250 until the recovery's 7 days end.
#[test]
fn r5_5_no_first_upgrade_while_flagged_even_when_rated_high_again() {
    let mut h = H::new();
    h.register(N, None, T0);
    low(&mut h, Quality::Low, at(1, 0, 0));
    low(&mut h, Quality::High, at(1, 1, 0));
    for day in 1..=4 {
        h.open_many(N, (day - 1) * 250, 250, at(day, 9, 0));
    }
    let s = h.status(N, at(4, 9, 0));
    assert_eq!(s.numbers[0].status, NumberStatus::Flagged);
    assert_eq!(
        (s.limit, s.upgrade_at, s.upgrade_eligible),
        (Limit::Capped(250), None, false)
    );
    // recovered at day 8 01:00: the next conversation crosses with the 1,000 still counted
    assert_eq!(
        h.status(N, at(8, 1, 0)).numbers[0].status,
        NumberStatus::Connected
    );
    h.open_many(N, 1_000, 1, at(8, 2, 0));
    assert_eq!(h.status(N, at(8, 2, 0)).limit, Limit::Capped(1_000));
}

/// The same under R5.3's rule in a profile that does not ask for Connected status: a
/// recovering (Flagged, High) number starts no wait and gets no upgrade.
#[test]
fn r5_5_no_upgrade_while_flagged_under_a_rule_without_connected() {
    let mut h = H::new();
    let mut p = Policy::seeds();
    p.name = "noconnected".into();
    p.upgrade.as_mut().unwrap().require_connected = false;
    h.apply(Command::SetPolicy(p), T0).unwrap();
    h.register_with(
        NumberRegistration {
            number: Some(num(N)),
            limit: Some(Limit::Capped(1_000)),
            profile: Some("noconnected".into()),
            ..Default::default()
        },
        T0,
    );
    low(&mut h, Quality::Low, at(1, 0, 0));
    low(&mut h, Quality::High, at(1, 1, 0));
    h.open_many(N, 0, 500, at(1, 15, 0));
    let s = h.status(N, at(1, 15, 0));
    assert_eq!(s.numbers[0].status, NumberStatus::Flagged);
    assert_eq!((s.upgrade_at, s.upgrade_eligible), (None, false));
    assert_eq!(h.status(N, at(2, 15, 0)).limit, Limit::Capped(1_000));
}

#[test]
fn r5_6_platform_tiers_are_authoritative_in_every_form() {
    let mut h = h_with(250);
    let set = |h: &mut H, tier: TierInput| {
        h.event(
            PlatformEvent::LimitChange {
                target: Target::Number(num(N)),
                tier,
            },
            T0,
        )
    };
    set(&mut h, TierInput::Name("TIER_10K".into()));
    assert_eq!(h.status(N, T0).limit, Limit::Capped(10_000));
    set(&mut h, TierInput::Value(-1));
    assert_eq!(h.status(N, T0).limit, Limit::Unlimited);
    set(&mut h, TierInput::Value(2_000));
    assert_eq!(h.status(N, T0).limit, Limit::Capped(2_000));
    let out = set(&mut h, TierInput::Name("TIER_NOT_SET".into()));
    assert!(matches!(out, Output::Event { applied: false, .. }));
    // an unknown value fails safe: the limit stays, the error is counted
    let out = set(&mut h, TierInput::Name("TIER_7".into()));
    assert!(matches!(out, Output::Event { applied: false, .. }));
    assert_eq!(h.status(N, T0).limit, Limit::Capped(2_000));
    assert_eq!(h.e.tier_errors(), 1);
}

#[test]
fn r5_6_observe_only_predicts_without_changing_the_limit() {
    let mut h = H::new();
    let mut p = Policy::seeds();
    p.name = "watch".into();
    p.observe_only = true;
    h.apply(Command::SetPolicy(p), T0).unwrap();
    h.register_with(
        NumberRegistration {
            number: Some(num(N)),
            profile: Some("watch".into()),
            limit: Some(Limit::Capped(1_000)),
            ..Default::default()
        },
        T0,
    );
    h.open_many(N, 0, 500, at(1, 15, 0));
    let s = h.status(N, at(2, 15, 0));
    assert_eq!(s.limit, Limit::Capped(1_000));
    assert_eq!(s.predicted_limit, Some(Limit::Capped(10_000)));
}

/// Meta's titled pause (FIRST_PAUSE, SECOND_PAUSE) of the "promo" template.
fn pause(h: &mut H, title: &str, t: Ts) -> Output {
    h.event(
        PlatformEvent::TemplateStatus {
            template: TemplateId::parse("template", "promo").unwrap(),
            event: TemplateEvent::Paused {
                title: Some(title.into()),
                until: None,
            },
        },
        t,
    )
}

#[test]
fn r6_3_paused_template_until_the_pause_ends_then_disabled() {
    let mut h = h_with(250);
    let id = TemplateId::parse("template", "promo").unwrap();
    let t = at(1, 12, 0);
    pause(&mut h, "FIRST_PAUSE", t);
    h.inbound(N, 1, None, t);
    let d = h.admit(N, 1, mkt(), Ts(t.0 + 3 * HOUR - 1));
    assert_eq!(
        (d.allowed, d.reason, d.retry_at),
        (false, Reason::TemplatePaused, Some(Ts(t.0 + 3 * HOUR)))
    );
    assert_eq!(h.status(N, t).used, 0);
    assert_eq!(
        h.admit(N, 1, mkt(), Ts(t.0 + 3 * HOUR)).reason,
        Reason::ServiceWindow
    );
    let t2 = Ts(t.0 + 4 * HOUR);
    pause(&mut h, "SECOND_PAUSE", t2);
    let d = h.admit(N, 2, mkt(), t2);
    assert_eq!(d.retry_at, Some(Ts(t2.0 + 6 * HOUR)));
    h.event(
        PlatformEvent::TemplateStatus {
            template: id.clone(),
            event: TemplateEvent::Disabled,
        },
        t2,
    );
    let d = h.admit(N, 2, mkt(), Ts(t.0 + DAY));
    assert_eq!((d.reason, d.retry_at), (Reason::TemplateDisabled, None));
}

#[test]
fn r7_1_keywords_opt_out_and_in_ignoring_case_and_spaces() {
    let mut h = h_with(250);
    let out = h.inbound(N, 1, Some("  s t o p "), T0);
    assert!(matches!(
        out,
        Output::Inbound {
            opt: Some(OptChange::OptedOut),
            ..
        }
    ));
    assert_eq!(h.status(N, T0).opt_outs, 1);
    assert!(matches!(
        h.inbound(N, 1, Some("Start"), T0),
        Output::Inbound {
            opt: Some(OptChange::OptedIn),
            ..
        }
    ));
    assert_eq!(h.status(N, T0).opt_outs, 0);
    assert!(matches!(
        h.inbound(N, 1, Some("stop please"), T0),
        Output::Inbound { opt: None, .. }
    ));
    h.inbound(N, 2, Some("unsubscribe"), T0);
    h.event(
        PlatformEvent::UserPreference {
            number: num(N),
            customer: cust(3),
            stop: true,
        },
        T0,
    );
    assert_eq!(h.status(N, T0).opt_outs, 2);
}

#[test]
fn r7_2_opted_out_customers_get_no_marketing_even_in_a_service_window() {
    let mut h = h_with(250);
    h.inbound(N, 1, Some("STOP"), T0);
    let d = h.admit(N, 1, mkt(), Ts(T0.0 + 1));
    assert_eq!(
        (d.allowed, d.reason, d.retry_at),
        (false, Reason::OptedOut, None)
    );
    // utility and free-form replies stay allowed by default
    assert_eq!(
        h.admit(N, 1, util(), Ts(T0.0 + 1)).reason,
        Reason::ServiceWindow
    );
    assert_eq!(
        h.admit(N, 1, SendKind::FreeForm, Ts(T0.0 + 1)).reason,
        Reason::ServiceWindow
    );
    // a profile can block utility too
    let mut p = Policy::seeds();
    p.name = "strict".into();
    p.opt_out_blocks = vec![Category::Marketing, Category::Utility];
    h.apply(Command::SetPolicy(p), T0).unwrap();
    h.register_with(
        NumberRegistration {
            number: Some(num("2002")),
            profile: Some("strict".into()),
            ..Default::default()
        },
        T0,
    );
    h.inbound("2002", 1, Some("STOP"), T0);
    assert_eq!(h.admit("2002", 1, util(), T0).reason, Reason::OptedOut);
    assert_eq!(
        h.admit("2002", 1, tpl("otp", Category::Authentication), T0)
            .reason,
        Reason::ServiceWindow
    );
}

#[test]
fn section_9_outcomes_back_off_and_hold() {
    let mut h = h_with(250);
    let t = at(1, 0, 0);
    let ms = |x: u64| Ts(t.0 + x);
    h.inbound(N, 1, None, t);
    // 131056: pair back-off 4^x seconds
    h.outcome(N, 1, Some(131056), t);
    let d = h.admit(N, 1, SendKind::FreeForm, t);
    assert_eq!(
        (d.reason, d.retry_at),
        (Reason::PairRateLimited, Some(ms(1_000)))
    );
    assert_eq!(
        h.admit(N, 1, SendKind::FreeForm, ms(999)).reason,
        Reason::PairRateLimited
    );
    assert_eq!(
        h.admit(N, 1, SendKind::FreeForm, ms(1_000)).reason,
        Reason::ServiceWindow
    );
    h.outcome(N, 1, Some(131056), ms(1_000));
    let d = h.admit(N, 1, SendKind::FreeForm, ms(1_000));
    assert_eq!(d.retry_at, Some(ms(5_000)));
    // 130429: the whole number backs off
    h.outcome(N, 1, Some(130429), ms(6_000));
    assert_eq!(
        h.admit(N, 7, mkt(), ms(6_999)).reason,
        Reason::ThroughputLimited
    );
    assert_eq!(
        h.admit(N, 7, mkt(), ms(7_000)).reason,
        Reason::NewConversation
    );
    // 131048: new conversations of the number are held; open ones still work
    h.outcome(N, 1, Some(131048), ms(10_000));
    let d = h.admit(N, 8, mkt(), ms(10_000));
    assert_eq!(
        (d.reason, d.retry_at),
        (Reason::SpamCooldown, Some(ms(10_000 + 6 * HOUR)))
    );
    assert_eq!(
        h.admit(N, 7, mkt(), ms(10_000)).reason,
        Reason::OpenConversation
    );
    assert_eq!(h.status(N, ms(10_000)).numbers[0].quality_risks, 1);
    assert_eq!(
        h.admit(N, 8, mkt(), ms(10_000 + 6 * HOUR)).reason,
        Reason::NewConversation
    );
    // 131049: no marketing to that customer for 24 h
    let t2 = ms(7 * HOUR);
    h.outcome(N, 7, Some(131049), t2);
    assert_eq!(
        h.admit(N, 7, mkt(), Ts(t2.0 + DAY - 1)).reason,
        Reason::MarketingHold
    );
    assert_eq!(
        h.admit(N, 7, util(), Ts(t2.0 + DAY - 1)).reason,
        Reason::NewConversation
    );
    // 131050: opt-out
    h.outcome(N, 9, Some(131050), Ts(t2.0 + DAY));
    assert_eq!(
        h.admit(N, 9, mkt(), Ts(t2.0 + DAY)).reason,
        Reason::OptedOut
    );
    // 131047: the service window is closed
    h.inbound(N, 10, None, Ts(t2.0 + DAY));
    h.outcome(N, 10, Some(131047), Ts(t2.0 + DAY));
    assert_eq!(
        h.admit(N, 10, SendKind::FreeForm, Ts(t2.0 + DAY)).reason,
        Reason::OutsideServiceWindow
    );
}

#[test]
fn account_restriction_denies_until_it_expires() {
    let mut h = h_with(250);
    let t = at(1, 0, 0);
    h.inbound(N, 1, None, t);
    h.event(
        PlatformEvent::AccountRestriction {
            target: Target::Number(num(N)),
            until: Some(Ts(t.0 + HOUR)),
            lifted: false,
            types: vec![],
        },
        t,
    );
    let d = h.admit(N, 1, SendKind::FreeForm, Ts(t.0 + HOUR - 1));
    assert_eq!(
        (d.reason, d.retry_at),
        (Reason::NumberRestricted, Some(Ts(t.0 + HOUR)))
    );
    assert_eq!(
        h.admit(N, 1, SendKind::FreeForm, Ts(t.0 + HOUR)).reason,
        Reason::ServiceWindow
    );
}

#[test]
fn repeated_platform_deliveries_apply_once() {
    let mut h = h_with(250);
    let ev = |k: &str| Command::Platform {
        event: PlatformEvent::UserPreference {
            number: num(N),
            customer: cust(1),
            stop: true,
        },
        event_key: Some(k.into()),
    };
    assert!(matches!(
        h.apply(ev("e1"), T0).unwrap(),
        Output::Event { applied: true, .. }
    ));
    assert!(matches!(
        h.apply(ev("e1"), T0).unwrap(),
        Output::Event { applied: false, .. }
    ));
}

#[test]
fn inbound_and_outcome_deliveries_with_a_key_apply_once() {
    let mut h = h_with(250);
    let inbound = |k: &str, text: &str| {
        Command::Inbound(Inbound {
            number: num(N),
            customer: cust(1),
            kind: InboundKind::Message,
            text: Some(text.into()),
            event_key: Some(k.into()),
        })
    };
    let out = h.apply(inbound("wamid.1", "STOP"), T0).unwrap();
    assert!(matches!(
        out,
        Output::Inbound {
            opt: Some(OptChange::OptedOut),
            duplicate: false,
            ..
        }
    ));
    h.apply(inbound("wamid.2", "START"), T0).unwrap();
    // the first message delivered again changes nothing: the customer stays opted in
    let out = h.apply(inbound("wamid.1", "STOP"), Ts(T0.0 + 1)).unwrap();
    assert_eq!(
        out,
        Output::Inbound {
            window_end: Ts(T0.0 + DAY),
            opt: None,
            duplicate: true
        }
    );
    assert_eq!(h.status(N, T0).opt_outs, 0);
    let outcome = |k: &str| {
        Command::Outcome(Outcome {
            number: num(N),
            customer: cust(1),
            admission: None,
            status: DeliveryStatus::Failed,
            error_code: Some(131056),
            template: None,
            event_key: Some(k.into()),
            message_id: None,
        })
    };
    let t = Ts(T0.0 + 1);
    let out = h.apply(outcome("s1"), t).unwrap();
    assert_eq!(
        out,
        Output::Outcome {
            released: false,
            hold_until: Some(Ts(t.0 + 1_000)),
            duplicate: false
        }
    );
    let out = h.apply(outcome("s1"), t).unwrap();
    assert!(matches!(
        out,
        Output::Outcome {
            duplicate: true,
            ..
        }
    ));
    // one strike only: the back-off is still the first one
    assert_eq!(
        h.admit(N, 1, SendKind::FreeForm, Ts(t.0 + 1_000)).reason,
        Reason::ServiceWindow
    );
}

#[test]
fn r12_time_never_goes_back() {
    let mut h = h_with(250);
    h.admit(N, 1, mkt(), Ts(T0.0 + DAY));
    // an earlier stamp is taken as the latest time seen
    let d = h.admit(N, 1, mkt(), T0);
    assert_eq!(d.reason, Reason::OpenConversation);
    assert_eq!(h.e.now(), Ts(T0.0 + DAY));
}

#[test]
fn expired_state_is_reclaimed_and_snapshots_round_trip() {
    let mut h = h_with(10_000);
    for c in 0..2_000 {
        h.inbound(N, c, None, T0);
        h.admit(N, c + 5_000, util(), T0);
    }
    assert_eq!(h.e.reader().window_entries(), 4_000);
    let snap = h.e.snapshot();
    let restored = Engine::restore(&snap).unwrap();
    assert_eq!(
        restored.snapshot(),
        snap,
        "restore then snapshot gives the same bytes"
    );
    assert_eq!(
        restored.reader().number_status(&num(N), T0),
        h.e.reader().number_status(&num(N), T0)
    );
    // loading a snapshot in place keeps earlier readers valid
    let mut other = Engine::new();
    let r = other.reader();
    other.load_snapshot(&snap).unwrap();
    assert_eq!(other.snapshot(), snap);
    assert_eq!(r.window_entries(), 4_000);
    assert!(other.load_snapshot(&[7]).is_err());
    assert_eq!(other.snapshot(), snap, "a bad snapshot changes nothing");
    h.apply(Command::Tick, Ts(T0.0 + DAY - 1)).unwrap();
    assert_eq!(h.e.reader().window_entries(), 4_000);
    h.apply(Command::Tick, Ts(T0.0 + DAY)).unwrap();
    assert_eq!(h.e.reader().window_entries(), 0);
    assert_eq!(h.status(N, Ts(T0.0 + DAY)).used, 0);
    assert!(Engine::restore(&[]).is_err());
    assert!(Engine::restore(&[99, 1, 2]).is_err());
    assert!(Engine::restore(&[1, 255, 255]).is_err());
}

#[test]
fn the_fast_path_decides_open_windows_and_defers_new_conversations() {
    let mut h = h_with(250);
    h.inbound(N, 1, None, T0);
    let req = |c: u64| AdmitRequest {
        number: num(N),
        customer: cust(c),
        kind: mkt(),
        idempotency_key: None,
    };
    let r = h.e.reader();
    assert_eq!(
        r.try_fast(&req(1), T0).unwrap().reason,
        Reason::ServiceWindow
    );
    assert!(
        r.try_fast(&req(2), T0).is_none(),
        "a new conversation needs the log"
    );
    h.admit(N, 2, mkt(), T0);
    assert_eq!(
        r.try_fast(&req(2), T0).unwrap().reason,
        Reason::OpenConversation
    );
}

#[test]
fn policies_are_validated_naming_the_field() {
    let mut h = H::new();
    let mut p = Policy::seeds();
    p.name = "bad".into();
    p.ladder = vec![Limit::Capped(1_000), Limit::Capped(250)];
    let e = h.apply(Command::SetPolicy(p), T0).unwrap_err();
    assert!(matches!(e, CoreError::Invalid { ref field, .. } if field == "policy.ladder"));
    let e = h
        .apply(
            Command::RegisterNumber(NumberRegistration {
                number: Some(num("5")),
                profile: Some("nope".into()),
                ..Default::default()
            }),
            T0,
        )
        .unwrap_err();
    assert!(matches!(e, CoreError::UnknownProfile(_)));
    assert!(
        h.e.reader().numbers().is_empty(),
        "a refused command changes nothing"
    );
}

// ---- rule edges on both sides: t + d - 1 ms and t + d ms ----

/// R5.2: 999 customers from `t` on, the 1,000th at `t + late` (at most 250 a day).
fn seeds_250_crossing_at(late: u64) -> (H, Ts) {
    let mut h = H::new();
    h.register(N, None, T0);
    let t = at(1, 9, 0);
    for day in 0..3 {
        h.open_many(N, day * 250, 250, Ts(t.0 + day * DAY));
    }
    h.open_many(N, 750, 249, Ts(t.0 + 3 * DAY));
    let c = Ts(t.0 + late);
    h.open_many(N, 999, 1, c);
    (h, c)
}

#[test]
fn r5_2_thirty_day_lookback_on_both_sides() {
    // day 1's 250 are still in the 30 days at t + 30 d - 1: the 1,000th crosses
    let (h, c) = seeds_250_crossing_at(30 * DAY - 1);
    assert_eq!(h.status(N, c).limit, Limit::Capped(1_000));
    // at t + 30 d they have left: 750, no upgrade
    let (h, c) = seeds_250_crossing_at(30 * DAY);
    let s = h.status(N, c);
    assert_eq!(
        (s.limit, s.upgrade_count, s.upgrade_at),
        (Limit::Capped(250), 750, None)
    );
}

#[test]
fn r5_2_a_configured_delay_takes_effect_at_its_exact_time() {
    let mut h = H::new();
    let mut p = Policy::seeds();
    p.name = "slow".into();
    p.first_upgrade.as_mut().unwrap().delay = Dur::hours(2);
    h.apply(Command::SetPolicy(p), T0).unwrap();
    h.register_with(
        NumberRegistration {
            number: Some(num(N)),
            profile: Some("slow".into()),
            ..Default::default()
        },
        T0,
    );
    for day in 1..=4 {
        h.open_many(N, (day - 1) * 250, 250, at(day, 9, 0));
    }
    let c = at(4, 9, 0);
    let s = h.status(N, c);
    assert_eq!(
        (s.limit, s.upgrade_at),
        (Limit::Capped(250), Some(Ts(c.0 + 2 * HOUR)))
    );
    // day 4's 250 fill the 24 h window: one more is refused until the upgrade ...
    let d = h.admit(N, 5_000, util(), Ts(c.0 + 2 * HOUR - 1));
    assert_eq!(
        (d.reason, d.limit),
        (Reason::LimitReached, Some(Limit::Capped(250)))
    );
    // ... and admitted at its exact time
    let d = h.admit(N, 5_000, util(), Ts(c.0 + 2 * HOUR));
    assert_eq!(
        (d.reason, d.limit),
        (Reason::NewConversation, Some(Limit::Capped(1_000)))
    );
}

/// A 1K seeds number with 250 customers at `t` and 250 more at `t + late`.
fn seeds_1k_halves(t: Ts, late: u64) -> (H, Ts) {
    let mut h = seeds_1k();
    h.open_many(N, 0, 250, t);
    let c = Ts(t.0 + late);
    h.open_many(N, 250, 250, c);
    (h, c)
}

#[test]
fn r5_3_seven_day_lookback_at_the_crossing_on_both_sides() {
    let t = at(1, 9, 0);
    let (h, c) = seeds_1k_halves(t, 7 * DAY - 1);
    let s = h.status(N, c);
    assert_eq!((s.upgrade_count, s.upgrade_at), (500, Some(Ts(c.0 + DAY))));
    let (h, c) = seeds_1k_halves(t, 7 * DAY);
    let s = h.status(N, c);
    assert_eq!((s.upgrade_count, s.upgrade_at), (250, None));
}

#[test]
fn r5_3_seven_day_lookback_when_the_wait_ends_on_both_sides() {
    let t = at(1, 9, 0);
    // the wait ends at t + 7 d - 1: day 1's 250 are still in the 7 days
    let (mut h, c) = seeds_1k_halves(t, 6 * DAY - 1);
    let end = Ts(c.0 + DAY);
    assert_eq!(h.status(N, c).upgrade_at, Some(end));
    assert_eq!(
        h.status(N, Ts(end.0 - 1)).limit,
        Limit::Capped(1_000),
        "not before its time"
    );
    let d = h.admit(N, 9_999, util(), end);
    assert_eq!(d.limit, Some(Limit::Capped(10_000)));
    // it ends at t + 7 d: they have left, the conditions fail, no upgrade
    let (mut h, c) = seeds_1k_halves(t, 6 * DAY);
    let end = Ts(c.0 + DAY);
    assert_eq!(h.status(N, c).upgrade_at, Some(end));
    let s = h.status(N, end);
    assert_eq!(
        (s.limit, s.upgrade_count, s.upgrade_at),
        (Limit::Capped(1_000), 250, None)
    );
    let d = h.admit(N, 9_999, util(), end);
    assert_eq!(d.limit, Some(Limit::Capped(1_000)));
}

/// A meta number at 250 (threshold 125) with 63 customers at `t` and 62 at `t + late`.
fn meta_halves(t: Ts, late: u64) -> (H, Ts) {
    let mut h = H::new();
    h.register_with(
        NumberRegistration {
            number: Some(num(N)),
            portfolio: Some(PortfolioId::parse("portfolio", "w").unwrap()),
            profile: Some("meta".into()),
            ..Default::default()
        },
        T0,
    );
    h.open_many(N, 0, 63, t);
    let c = Ts(t.0 + late);
    h.open_many(N, 63, 62, c);
    (h, c)
}

#[test]
fn r5_4_half_the_limit_in_7_days_on_both_sides() {
    let t = at(1, 9, 0);
    // at the crossing
    let (h, c) = meta_halves(t, 7 * DAY - 1);
    let s = h.status(N, c);
    assert_eq!(
        (s.upgrade_count, s.upgrade_at),
        (125, Some(Ts(c.0 + 6 * HOUR)))
    );
    let (h, c) = meta_halves(t, 7 * DAY);
    let s = h.status(N, c);
    assert_eq!((s.upgrade_count, s.upgrade_at), (62, None));
    // when the 6 h delay ends (the conditions are checked again then)
    let (h, c) = meta_halves(t, 7 * DAY - 6 * HOUR - 1);
    assert_eq!(h.status(N, Ts(c.0 + 6 * HOUR)).limit, Limit::Capped(2_000));
    let (h, c) = meta_halves(t, 7 * DAY - 6 * HOUR);
    assert_eq!(h.status(N, c).upgrade_at, Some(Ts(c.0 + 6 * HOUR)));
    let s = h.status(N, Ts(c.0 + 6 * HOUR));
    assert_eq!((s.limit, s.upgrade_count), (Limit::Capped(250), 62));
}

#[test]
fn r6_2_second_pause_ends_after_6h_on_both_sides() {
    let mut h = h_with(250);
    let t = at(1, 12, 0);
    pause(&mut h, "FIRST_PAUSE", t);
    let t2 = Ts(t.0 + 4 * HOUR);
    pause(&mut h, "SECOND_PAUSE", t2);
    let d = h.admit(N, 1, mkt(), Ts(t2.0 + 6 * HOUR - 1));
    assert_eq!(
        (d.allowed, d.reason, d.retry_at),
        (false, Reason::TemplatePaused, Some(Ts(t2.0 + 6 * HOUR)))
    );
    let d = h.admit(N, 1, mkt(), Ts(t2.0 + 6 * HOUR));
    assert_eq!((d.reason, d.counted), (Reason::NewConversation, true));
}

// ---- R7.1: every way in and out ----

fn opt_of(o: Output) -> Option<OptChange> {
    match o {
        Output::Inbound { opt, .. } => opt,
        other => panic!("not an inbound output: {other:?}"),
    }
}

#[test]
fn r7_1_subscribe_opts_back_in_after_stop() {
    let mut h = h_with(250);
    let t = at(1, 9, 0);
    assert_eq!(
        opt_of(h.inbound(N, 1, Some("STOP"), t)),
        Some(OptChange::OptedOut)
    );
    assert_eq!(h.admit(N, 1, mkt(), t).reason, Reason::OptedOut);
    assert_eq!(
        opt_of(h.inbound(N, 1, Some(" Sub scribe"), Ts(t.0 + 1))),
        Some(OptChange::OptedIn)
    );
    assert_eq!(h.status(N, t).opt_outs, 0);
    assert_eq!(
        h.admit(N, 1, mkt(), Ts(t.0 + 1)).reason,
        Reason::ServiceWindow
    );
}

#[test]
fn r7_1_keywords_set_by_set_policy_take_effect() {
    let mut h = H::new();
    let mut p = Policy::seeds();
    p.name = "fr".into();
    h.apply(Command::SetPolicy(p.clone()), T0).unwrap();
    h.register_with(
        NumberRegistration {
            number: Some(num(N)),
            profile: Some("fr".into()),
            ..Default::default()
        },
        T0,
    );
    h.register("2002", None, T0);
    let t = at(1, 9, 0);
    assert_eq!(opt_of(h.inbound(N, 1, Some("arret"), t)), None);
    p.opt_out_keywords = vec!["ARRET".into()];
    p.opt_in_keywords = vec!["REPRENDRE".into()];
    h.apply(Command::SetPolicy(p), t).unwrap();
    // the number's profile is changed in place: the new set applies at once
    assert_eq!(
        opt_of(h.inbound(N, 1, Some("Ar ret"), t)),
        Some(OptChange::OptedOut)
    );
    assert_eq!(h.admit(N, 1, mkt(), t).reason, Reason::OptedOut);
    // the keywords it replaced no longer match
    assert_eq!(opt_of(h.inbound(N, 1, Some("START"), t)), None);
    assert_eq!(opt_of(h.inbound(N, 2, Some("STOP"), t)), None);
    assert_eq!(h.status(N, t).opt_outs, 1);
    assert_eq!(
        opt_of(h.inbound(N, 1, Some("reprendre"), t)),
        Some(OptChange::OptedIn)
    );
    assert_eq!(h.admit(N, 1, mkt(), t).reason, Reason::ServiceWindow);
    // a number of another profile keeps its own keywords
    assert_eq!(opt_of(h.inbound("2002", 1, Some("ARRET"), t)), None);
    assert_eq!(
        opt_of(h.inbound("2002", 1, Some("STOP"), t)),
        Some(OptChange::OptedOut)
    );
}

#[test]
fn r7_1_user_preferences_resume_opts_back_in() {
    let mut h = h_with(250);
    let t = at(1, 9, 0);
    let pref = |h: &mut H, c: u64, stop: bool, at: Ts| {
        h.event(
            PlatformEvent::UserPreference {
                number: num(N),
                customer: cust(c),
                stop,
            },
            at,
        )
    };
    h.inbound(N, 1, None, t);
    pref(&mut h, 1, true, t);
    assert_eq!(h.admit(N, 1, mkt(), t).reason, Reason::OptedOut);
    assert_eq!(h.status(N, t).opt_outs, 1);
    pref(&mut h, 1, false, Ts(t.0 + 1));
    assert_eq!(h.status(N, t).opt_outs, 0);
    assert_eq!(
        h.admit(N, 1, mkt(), Ts(t.0 + 1)).reason,
        Reason::ServiceWindow
    );
    // a resume reverses a keyword opt-out too
    h.inbound(N, 2, Some("UNSUBSCRIBE"), t);
    pref(&mut h, 2, false, Ts(t.0 + 2));
    assert_eq!(
        h.admit(N, 2, mkt(), Ts(t.0 + 2)).reason,
        Reason::ServiceWindow
    );
}

// ---- R8.3: what a leader change resets ----

/// The R8 buckets (`admit_core::rate`) are the leader's alone: in no command and no
/// snapshot. A new leader rebuilds the engine from the replicated state and starts with
/// new, full buckets; every hold the engine keeps survives the change.
#[test]
fn r8_3_a_leader_change_resets_the_token_buckets_and_nothing_else() {
    use admit_core::rate::{Rate, RateDenial, RateLimiter};
    let mut h = h_with(250);
    let t = at(1, 9, 0);
    let r = h.e.reader();
    let mps = r.throughput_mps(&num(N)).unwrap();
    let (every, burst) = r.pair_rate(&num(N)).unwrap();
    assert_eq!((mps, every, burst), (80, Dur::secs(6), 45));
    // the buckets' rates in one lookup are the same
    let rates = (Rate::per_second(mps), Rate::every(every, burst));
    assert_eq!(r.rates(&num(N)), Some(rates));
    let take = |rl: &RateLimiter, c: u64| {
        rl.try_take(
            num(N),
            cust(c),
            Rate::per_second(mps),
            Rate::every(every, burst),
            t,
        )
    };
    // the old leader: customer 1's burst and then the number's second used up
    let old = RateLimiter::default();
    for _ in 0..45 {
        take(&old, 1).unwrap();
    }
    assert_eq!(
        take(&old, 1).unwrap_err(),
        RateDenial::Pair {
            retry_at: Ts(t.0 + 6_000)
        }
    );
    for c in 0..35 {
        take(&old, 100 + c).unwrap();
    }
    assert!(matches!(take(&old, 2), Err(RateDenial::Throughput { .. })));
    // replicated state meanwhile: an opt-out, a 131056 back-off, a counted conversation
    h.inbound(N, 3, Some("STOP"), t);
    h.inbound(N, 2, None, t);
    h.outcome(N, 2, Some(131056), t);
    h.admit(N, 9, util(), t);
    // the new leader
    let new = Engine::restore(&h.e.snapshot()).unwrap();
    let fresh = RateLimiter::default();
    // full buckets: one whole burst for the pair again, then the pair rate binds
    for _ in 0..45 {
        take(&fresh, 1).unwrap();
    }
    assert!(matches!(take(&fresh, 1), Err(RateDenial::Pair { .. })));
    // the engine's holds stand
    let req = |c: u64, kind: SendKind| AdmitRequest {
        number: num(N),
        customer: cust(c),
        kind,
        idempotency_key: None,
    };
    let nr = new.reader();
    assert_eq!(
        nr.try_fast(&req(3, mkt()), t).unwrap().reason,
        Reason::OptedOut
    );
    let d = nr.try_fast(&req(2, SendKind::FreeForm), t).unwrap();
    assert_eq!(
        (d.reason, d.retry_at),
        (Reason::PairRateLimited, Some(Ts(t.0 + 1_000)))
    );
    assert_eq!(
        nr.try_fast(&req(9, util()), t).unwrap().reason,
        Reason::OpenConversation
    );
    assert_eq!(nr.number_status(&num(N), t).unwrap().used, 1);
}

// ---- R5.5/R5.6: reported status and quality through the Flagged period ----

fn reported(h: &mut H, status: NumberStatus, t: Ts) {
    h.event(
        PlatformEvent::NumberStatus {
            number: num(N),
            status,
        },
        t,
    );
}

#[test]
fn r5_5_a_second_good_rating_does_not_restart_the_recovery() {
    let mut h = H::new();
    h.register(N, Some(Limit::Capped(10_000)), T0);
    let t = at(1, 0, 0);
    low(&mut h, Quality::Low, t);
    low(&mut h, Quality::Medium, Ts(t.0 + 2 * DAY));
    // still good: the 7 recovery days keep counting from the first good rating
    low(&mut h, Quality::High, Ts(t.0 + 4 * DAY));
    let s = h.status(N, Ts(t.0 + 9 * DAY - 1));
    assert_eq!(s.numbers[0].status, NumberStatus::Flagged);
    let s = h.status(N, Ts(t.0 + 9 * DAY));
    assert_eq!(
        (s.numbers[0].status, s.limit),
        (NumberStatus::Connected, Limit::Capped(10_000))
    );
}

#[test]
fn r5_6_a_reported_connected_status_ends_the_flagged_period() {
    let mut h = H::new();
    h.register(N, Some(Limit::Capped(10_000)), T0);
    let t = at(1, 0, 0);
    low(&mut h, Quality::Low, t);
    assert_eq!(h.status(N, t).downgrade_at, Some(Ts(t.0 + 7 * DAY)));
    reported(&mut h, NumberStatus::Connected, Ts(t.0 + DAY));
    let s = h.status(N, Ts(t.0 + DAY));
    assert_eq!(
        (
            s.numbers[0].status,
            s.numbers[0].flagged_since,
            s.downgrade_at
        ),
        (NumberStatus::Connected, None, None)
    );
    // the 7 Low days that would have ended here no longer run
    assert_eq!(h.status(N, Ts(t.0 + 7 * DAY)).limit, Limit::Capped(10_000));
    let d = h.admit(N, 1, util(), Ts(t.0 + 7 * DAY));
    assert_eq!(d.limit, Some(Limit::Capped(10_000)));
}

#[test]
fn r5_6_a_reported_flagged_status_starts_a_flagged_period_and_blocks_upgrades() {
    let mut h = seeds_1k();
    let t = at(1, 9, 0);
    reported(&mut h, NumberStatus::Flagged, t);
    let s = h.status(N, t);
    assert_eq!(
        (s.numbers[0].status, s.numbers[0].flagged_since),
        (NumberStatus::Flagged, Some(t))
    );
    h.open_many(N, 0, 500, Ts(t.0 + HOUR));
    let s = h.status(N, Ts(t.0 + HOUR));
    assert_eq!((s.upgrade_at, s.upgrade_eligible), (None, false));
    // a second report of the same status keeps the period's start
    reported(&mut h, NumberStatus::Flagged, Ts(t.0 + 2 * HOUR));
    assert_eq!(
        h.status(N, Ts(t.0 + 2 * HOUR)).numbers[0].flagged_since,
        Some(t)
    );
}

#[test]
fn r5_6_a_reported_flagged_status_keeps_a_recovery_under_way() {
    let mut h = H::new();
    h.register(N, Some(Limit::Capped(10_000)), T0);
    let t = at(1, 0, 0);
    low(&mut h, Quality::Low, t);
    low(&mut h, Quality::Medium, Ts(t.0 + DAY));
    // Meta restates Flagged while quality is already Medium: recovery goes on from day 1
    reported(&mut h, NumberStatus::Flagged, Ts(t.0 + 2 * DAY));
    let s = h.status(N, Ts(t.0 + 7 * DAY));
    assert_eq!(
        (s.numbers[0].status, s.limit),
        (NumberStatus::Flagged, Limit::Capped(10_000)),
        "no downgrade: quality has not been Low for 7 days"
    );
    let s = h.status(N, Ts(t.0 + 8 * DAY - 1));
    assert_eq!(s.numbers[0].status, NumberStatus::Flagged);
    let s = h.status(N, Ts(t.0 + 8 * DAY));
    assert_eq!(
        (s.numbers[0].status, s.limit),
        (NumberStatus::Connected, Limit::Capped(10_000))
    );
}

#[test]
fn r5_3_only_a_rule_that_asks_for_connected_waits_for_it() {
    // the seeds' first rule (250 -> 1K) does not ask for Connected
    let mut h = H::new();
    h.register(N, None, T0);
    reported(&mut h, NumberStatus::Disconnected, T0);
    for day in 1..=4 {
        h.open_many(N, (day - 1) * 250, 250, at(day, 9, 0));
    }
    let s = h.status(N, at(4, 9, 0));
    assert_eq!(
        (s.numbers[0].status, s.limit),
        (NumberStatus::Disconnected, Limit::Capped(1_000))
    );
    // the second (1K -> 10K) does
    let mut h = seeds_1k();
    reported(&mut h, NumberStatus::Disconnected, T0);
    h.open_many(N, 0, 500, at(1, 15, 0));
    let s = h.status(N, at(1, 15, 0));
    assert_eq!((s.upgrade_at, s.upgrade_eligible), (None, false));
    assert_eq!(h.status(N, at(2, 15, 0)).limit, Limit::Capped(1_000));
}

// ---- section 12: delayed effects due in one pass run in time order ----

/// A profile whose upgrade wait (3 days) outlasts its Flagged period (1 day), so that an
/// upgrade and a Flagged deadline can fall due in the same pass.
fn short_flag_long_wait() -> H {
    let mut p = Policy::seeds();
    p.name = "order".into();
    p.flag_period = Dur::days(1);
    p.upgrade.as_mut().unwrap().delay = Dur::days(3);
    let mut h = H::new();
    h.apply(Command::SetPolicy(p), T0).unwrap();
    h.register_with(
        NumberRegistration {
            number: Some(num(N)),
            profile: Some("order".into()),
            limit: Some(Limit::Capped(1_000)),
            ..Default::default()
        },
        T0,
    );
    h
}

#[test]
fn s12_a_recovery_due_at_the_upgrade_s_millisecond_runs_first() {
    let mut h = short_flag_long_wait();
    let t = at(1, 12, 0);
    h.open_many(N, 0, 500, t);
    let u = Ts(t.0 + 3 * DAY);
    assert_eq!(h.status(N, t).upgrade_at, Some(u));
    low(&mut h, Quality::Low, Ts(t.0 + DAY + HOUR));
    // recovery ends exactly when the wait does: unflagged first, then the upgrade holds
    low(&mut h, Quality::Medium, Ts(t.0 + 2 * DAY));
    let s = h.status(N, Ts(u.0 - 1));
    assert_eq!(
        (s.numbers[0].status, s.limit),
        (NumberStatus::Flagged, Limit::Capped(1_000))
    );
    let s = h.status(N, u);
    assert_eq!(
        (s.numbers[0].status, s.limit),
        (NumberStatus::Connected, Limit::Capped(10_000))
    );
    // the writer's pass agrees with the reader's
    let d = h.admit(N, 9_999, util(), u);
    assert_eq!(d.limit, Some(Limit::Capped(10_000)));
}

#[test]
fn s12_an_upgrade_due_before_a_recovery_is_decided_before_it() {
    let mut h = short_flag_long_wait();
    let t = at(1, 12, 0);
    h.open_many(N, 0, 500, t);
    low(&mut h, Quality::Low, Ts(t.0 + DAY + HOUR));
    // Medium before the Low day ends (day 2 + 1 h): recovery ends at day 3 + 30 min
    low(&mut h, Quality::Medium, Ts(t.0 + 2 * DAY + HOUR / 2));
    // one pass over both: the wait ends (day 3, Flagged: no upgrade), then recovery
    // leaves the tier as it was
    let late = Ts(t.0 + 4 * DAY);
    let s = h.status(N, late);
    assert_eq!(
        (s.numbers[0].status, s.limit, s.upgrades),
        (NumberStatus::Connected, Limit::Capped(1_000), 0)
    );
    let d = h.admit(N, 9_999, util(), late);
    assert_eq!(d.limit, Some(Limit::Capped(1_000)));
}
