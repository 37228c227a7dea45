//! Rules whose edge cases were once wrong (R2.3, R3.5, R5.3, R5.6 portfolio tier events,
//! R6.2, R6.3, section 9 131056 and 130429, section 10 restrictions, section 11
//! restricted_until, the fast path and due effects), each at its edges: the millisecond
//! before and at the end of a window, pause or hold.

mod support;
use admit_core::*;
use support::*;

const N: &str = "1001";

fn h_with(limit: u32) -> H {
    let mut h = H::new();
    h.register(N, Some(Limit::Capped(limit)), T0);
    h
}

fn promo() -> TemplateId {
    TemplateId::parse("template", "promo").unwrap()
}

/// A template status event for "promo", as Admin.ApplyEvent or a 132015 outcome sends it.
fn tpl_event(h: &mut H, event: TemplateEvent, t: Ts) -> Output {
    h.event(
        PlatformEvent::TemplateStatus {
            template: promo(),
            event,
        },
        t,
    )
}

/// A pause: titled (Meta's FIRST_PAUSE / SECOND_PAUSE) or not (a 132015 outcome).
fn paused(title: Option<&str>) -> TemplateEvent {
    TemplateEvent::Paused {
        title: title.map(str::to_owned),
        until: None,
    }
}

fn ms(t: Ts, d: u64) -> Ts {
    Ts(t.0 + d)
}

/// The (reason, retry_at) of a marketing template to a fresh customer `c`.
fn try_mkt(h: &mut H, n: &str, c: u64, t: Ts) -> (Reason, Option<Ts>) {
    let d = h.admit(n, c, mkt(), t);
    (d.reason, d.retry_at)
}

// ---- R6.2/R6.3: 132015 never escalates a pause, never re-enables a disabled template ----

#[test]
fn r6_2_repeated_132015_reports_are_one_pause_of_the_first_length() {
    let mut h = h_with(250);
    let t = at(1, 12, 0);
    // three sends in flight fail with 132015: three untitled pauses
    for i in 0..3 {
        tpl_event(&mut h, paused(None), ms(t, i));
    }
    assert_eq!(
        try_mkt(&mut h, N, 1, ms(t, 3 * HOUR - 1)),
        (Reason::TemplatePaused, Some(ms(t, 3 * HOUR)))
    );
    // one pause, ended: not a second (6 h) nor a third (disabled)
    assert_eq!(
        try_mkt(&mut h, N, 1, ms(t, 3 * HOUR)).0,
        Reason::NewConversation
    );
}

#[test]
fn r6_2_132015_during_a_pause_keeps_its_end_and_never_adds_a_pause() {
    let mut h = h_with(250);
    let t = at(1, 12, 0);
    tpl_event(&mut h, paused(Some("FIRST_PAUSE")), t);
    // reports during the pause, up to its last millisecond, change nothing
    tpl_event(&mut h, paused(None), ms(t, 1_000));
    tpl_event(&mut h, paused(None), ms(t, 3 * HOUR - 1));
    assert_eq!(
        try_mkt(&mut h, N, 1, ms(t, 3 * HOUR - 1)),
        (Reason::TemplatePaused, Some(ms(t, 3 * HOUR)))
    );
    // at exactly its end the pause is over; a report then starts a new pause, of the
    // first pause's length (its rank is unknown)
    let t1 = ms(t, 3 * HOUR);
    tpl_event(&mut h, paused(None), t1);
    assert_eq!(
        try_mkt(&mut h, N, 2, ms(t1, 3 * HOUR - 1)),
        (Reason::TemplatePaused, Some(ms(t1, 3 * HOUR)))
    );
    assert_eq!(
        try_mkt(&mut h, N, 2, ms(t1, 3 * HOUR)).0,
        Reason::NewConversation
    );
    // Meta's SECOND_PAUSE sets that pause exactly, whatever was counted
    let t2 = ms(t1, 4 * HOUR);
    tpl_event(&mut h, paused(Some("SECOND_PAUSE")), t2);
    tpl_event(&mut h, paused(None), ms(t2, 1));
    assert_eq!(
        try_mkt(&mut h, N, 3, ms(t2, 6 * HOUR - 1)),
        (Reason::TemplatePaused, Some(ms(t2, 6 * HOUR)))
    );
    // after the second pause a 132015 report is one more pause, never "disabled"
    let t3 = ms(t2, 6 * HOUR);
    tpl_event(&mut h, paused(None), t3);
    assert_eq!(
        try_mkt(&mut h, N, 3, t3),
        (Reason::TemplatePaused, Some(ms(t3, 3 * HOUR)))
    );
    assert_eq!(
        try_mkt(&mut h, N, 3, ms(t3, 3 * HOUR)).0,
        Reason::NewConversation
    );
}

#[test]
fn r6_3_a_disabled_template_is_enabled_again_only_by_approved() {
    let mut h = h_with(250);
    let t = at(1, 12, 0);
    tpl_event(&mut h, TemplateEvent::Disabled, t);
    for (i, ev) in [
        paused(None),
        paused(Some("FIRST_PAUSE")),
        TemplateEvent::Unpaused,
    ]
    .into_iter()
    .enumerate()
    {
        let out = tpl_event(&mut h, ev, ms(t, i as u64 + 1));
        assert!(matches!(out, Output::Event { applied: false, .. }));
    }
    for late in [1, 3 * HOUR, 6 * HOUR, DAY] {
        assert_eq!(
            try_mkt(&mut h, N, 1, ms(t, late)),
            (Reason::TemplateDisabled, None),
            "+{late}ms"
        );
    }
    tpl_event(&mut h, TemplateEvent::Approved, ms(t, DAY));
    assert_eq!(try_mkt(&mut h, N, 1, ms(t, DAY)).0, Reason::NewConversation);
}

#[test]
fn r6_2_132015_outcomes_applied_by_the_engine_do_not_escalate() {
    let mut h = h_with(250);
    let t = at(1, 12, 0);
    for i in 0..3u64 {
        h.apply(
            Command::Outcome(Outcome {
                number: num(N),
                customer: cust(i),
                admission: None,
                status: DeliveryStatus::Failed,
                error_code: Some(132015),
                template: Some(promo()),
                event_key: Some(format!("wamid.{i}")),
                message_id: None,
            }),
            ms(t, i),
        )
        .unwrap();
    }
    assert_eq!(
        try_mkt(&mut h, N, 9, ms(t, 3 * HOUR - 1)),
        (Reason::TemplatePaused, Some(ms(t, 3 * HOUR)))
    );
    assert_eq!(
        try_mkt(&mut h, N, 9, ms(t, 3 * HOUR)).0,
        Reason::NewConversation
    );
}

// ---- R6.2: pause lengths are the number's own profile's ----

#[test]
fn r6_2_pause_lengths_come_from_each_numbers_profile() {
    let mut h = h_with(250);
    let mut short = Policy::seeds();
    short.name = "short".into();
    short.first_pause = Dur::hours(1);
    short.second_pause = Dur::hours(2);
    h.apply(Command::SetPolicy(short), T0).unwrap();
    h.register_with(
        NumberRegistration {
            number: Some(num("2002")),
            profile: Some("short".into()),
            ..Default::default()
        },
        T0,
    );
    let t = at(1, 12, 0);
    tpl_event(&mut h, paused(None), t);
    assert_eq!(
        try_mkt(&mut h, "2002", 1, ms(t, HOUR - 1)),
        (Reason::TemplatePaused, Some(ms(t, HOUR)))
    );
    assert_eq!(
        try_mkt(&mut h, "2002", 1, ms(t, HOUR)).0,
        Reason::NewConversation
    );
    // the seeds number's pause is 3 h
    assert_eq!(
        try_mkt(&mut h, N, 1, ms(t, HOUR)),
        (Reason::TemplatePaused, Some(ms(t, 3 * HOUR)))
    );
    let t2 = ms(t, 5 * HOUR);
    tpl_event(&mut h, paused(Some("SECOND_PAUSE")), t2);
    assert_eq!(
        try_mkt(&mut h, "2002", 2, ms(t2, 2 * HOUR - 1)),
        (Reason::TemplatePaused, Some(ms(t2, 2 * HOUR)))
    );
    assert_eq!(
        try_mkt(&mut h, N, 2, ms(t2, 6 * HOUR - 1)),
        (Reason::TemplatePaused, Some(ms(t2, 6 * HOUR)))
    );
    // the snapshot keeps where each pause started
    let restored = Engine::restore(&h.e.snapshot()).unwrap();
    assert_eq!(restored.snapshot(), h.e.snapshot());
    let req = AdmitRequest {
        number: num("2002"),
        customer: cust(3),
        kind: mkt(),
        idempotency_key: None,
    };
    let d = restored.reader().try_fast(&req, ms(t2, HOUR)).unwrap();
    assert_eq!(d.retry_at, Some(ms(t2, 2 * HOUR)));
}

// ---- R2.3: free entry points are the meta profile's only ----

#[test]
fn r2_3_the_seeds_profile_ignores_free_entry_points() {
    let mut h = h_with(250);
    let t = at(1, 0, 0);
    let out = h.event(
        PlatformEvent::FreeEntryPoint {
            number: num(N),
            customer: cust(5),
        },
        t,
    );
    assert!(matches!(out, Output::Event { applied: false, .. }));
    // no window: a template opens (and counts) a conversation, free-form is refused
    let d = h.admit(N, 5, mkt(), ms(t, 1));
    assert_eq!((d.reason, d.counted), (Reason::NewConversation, true));
    assert_eq!(
        h.admit(N, 6, SendKind::FreeForm, ms(t, 1)).reason,
        Reason::OutsideServiceWindow
    );
    h.event(
        PlatformEvent::FreeEntryPoint {
            number: num(N),
            customer: cust(6),
        },
        ms(t, 2),
    );
    assert_eq!(
        h.admit(N, 6, SendKind::FreeForm, ms(t, 72 * HOUR - 1))
            .reason,
        Reason::OutsideServiceWindow
    );
}

// ---- R3.4/R3.5: a released admission is not replayed ----

fn keyed(c: u64, key: &str) -> AdmitRequest {
    AdmitRequest {
        number: num(N),
        customer: cust(c),
        kind: mkt(),
        idempotency_key: Some(IdempotencyKey::parse("idempotency_key", key).unwrap()),
    }
}

#[test]
fn r3_5_a_retry_after_a_release_is_decided_anew() {
    let mut h = h_with(1);
    let first = h.admit_req(keyed(1, "k1"), T0).unwrap();
    assert!(first.counted);
    assert!(h.admit_req(keyed(1, "k1"), ms(T0, 1)).unwrap().replayed);
    h.apply(
        Command::Release(first.admission.clone().unwrap()),
        ms(T0, MIN),
    )
    .unwrap();
    assert_eq!(h.status(N, ms(T0, MIN)).used, 0);
    // the fast path does not replay it either: the send needs the log
    let r = h.e.reader();
    assert!(r.try_fast(&keyed(1, "k1"), ms(T0, MIN)).is_none());
    // another customer takes the room; the retry of k1 is not an "allowed" replay
    h.admit(N, 2, mkt(), ms(T0, MIN));
    let d = h.admit_req(keyed(1, "k1"), ms(T0, 2 * MIN)).unwrap();
    assert_eq!(
        (d.allowed, d.reason, d.replayed, d.used),
        (false, Reason::LimitReached, false, 1)
    );
    // that denial is now k1's decision
    let again = h.admit_req(keyed(1, "k1"), ms(T0, 3 * MIN)).unwrap();
    assert_eq!(
        again,
        Decision {
            replayed: true,
            ..d
        }
    );
}

#[test]
fn r3_5_a_retry_after_a_failed_outcome_counts_again() {
    let mut h = h_with(1);
    let first = h.admit_req(keyed(1, "k1"), T0).unwrap();
    let out = h
        .apply(
            Command::Outcome(Outcome {
                number: num(N),
                customer: cust(1),
                admission: first.admission.clone(),
                status: DeliveryStatus::Failed,
                error_code: Some(131026),
                template: None,
                event_key: None,
                message_id: None,
            }),
            ms(T0, 1),
        )
        .unwrap();
    assert!(matches!(out, Output::Outcome { released: true, .. }));
    // a snapshot taken now restores the same (the admission -> key link is derived)
    let mut restored = Engine::restore(&h.e.snapshot()).unwrap();
    let d = h.admit_req(keyed(1, "k1"), ms(T0, 2)).unwrap();
    assert_eq!(
        (d.reason, d.counted, d.replayed, d.used),
        (Reason::NewConversation, true, false, 1)
    );
    assert_ne!(d.admission, first.admission);
    let Output::Decision(rd) = restored
        .apply(Command::Admit(keyed(1, "k1")), ms(T0, 2))
        .unwrap()
    else {
        panic!("a decision")
    };
    assert_eq!(rd, d);
    // and releasing the new admission on the restored engine drops the new record
    restored
        .apply(Command::Release(rd.admission.clone().unwrap()), ms(T0, 3))
        .unwrap();
    assert!(restored
        .reader()
        .try_fast(&keyed(1, "k1"), ms(T0, 3))
        .is_none());
    // a release that un-counts nothing keeps the record
    h.apply(Command::Release(first.admission.unwrap()), ms(T0, 3))
        .unwrap();
    assert!(h.admit_req(keyed(1, "k1"), ms(T0, 4)).unwrap().replayed);
}

// ---- section 10: account restriction types; an indefinite one wins ----

fn restrict(h: &mut H, target: Target, until: Option<Ts>, types: Vec<RestrictionType>, t: Ts) {
    h.event(
        PlatformEvent::AccountRestriction {
            target,
            until,
            lifted: false,
            types,
        },
        t,
    );
}

#[test]
fn section_10_biz_initiated_restriction_denies_only_sends_outside_a_service_window() {
    let mut h = h_with(250);
    let t = at(1, 9, 0);
    h.inbound(N, 1, None, t);
    // customer 2 has an open conversation (business-initiated, no service window)
    h.admit(N, 2, mkt(), t);
    restrict(
        &mut h,
        Target::Number(num(N)),
        Some(ms(t, HOUR)),
        vec![RestrictionType::BizInitiated],
        t,
    );
    let end = ms(t, HOUR - 1);
    // replies inside the service window stay allowed, templates too
    assert_eq!(
        h.admit(N, 1, SendKind::FreeForm, end).reason,
        Reason::ServiceWindow
    );
    assert_eq!(h.admit(N, 1, mkt(), end).reason, Reason::ServiceWindow);
    // everything else is business-initiated
    assert_eq!(
        try_mkt(&mut h, N, 3, end),
        (Reason::NumberRestricted, Some(ms(t, HOUR)))
    );
    assert_eq!(h.admit(N, 2, mkt(), end).reason, Reason::NumberRestricted);
    assert_eq!(
        h.admit(N, 2, SendKind::FreeForm, end).reason,
        Reason::NumberRestricted
    );
    let v = &h.status(N, end).numbers[0];
    assert_eq!(
        (v.restricted_until, &v.restriction_types, v.account_status),
        (
            Some(ms(t, HOUR)),
            &vec![RestrictionType::BizInitiated],
            AccountStatus::Restricted
        )
    );
    assert_eq!(
        try_mkt(&mut h, N, 3, ms(t, HOUR)).0,
        Reason::NewConversation
    );
    assert!(h.status(N, ms(t, HOUR)).numbers[0]
        .restriction_types
        .is_empty());
}

#[test]
fn section_10_customer_initiated_restriction_denies_replies() {
    let mut h = h_with(250);
    let t = at(1, 9, 0);
    h.inbound(N, 1, None, t);
    restrict(
        &mut h,
        Target::Number(num(N)),
        Some(ms(t, HOUR)),
        vec![RestrictionType::CustomerInitiated],
        t,
    );
    let d = h.admit(N, 1, SendKind::FreeForm, ms(t, HOUR - 1));
    assert_eq!(
        (d.reason, d.retry_at),
        (Reason::NumberRestricted, Some(ms(t, HOUR)))
    );
    assert_eq!(
        try_mkt(&mut h, N, 3, ms(t, HOUR - 1)).0,
        Reason::NewConversation
    );
    assert_eq!(
        h.admit(N, 1, SendKind::FreeForm, ms(t, HOUR)).reason,
        Reason::ServiceWindow
    );
    // both types: nothing goes out
    restrict(
        &mut h,
        Target::Number(num(N)),
        None,
        vec![
            RestrictionType::CustomerInitiated,
            RestrictionType::BizInitiated,
        ],
        ms(t, HOUR),
    );
    assert_eq!(
        h.admit(N, 1, SendKind::FreeForm, ms(t, HOUR)).reason,
        Reason::NumberRestricted
    );
    assert_eq!(
        try_mkt(&mut h, N, 4, ms(t, HOUR)),
        (Reason::NumberRestricted, None)
    );
}

#[test]
fn section_10_add_phone_number_restriction_does_not_affect_admission() {
    let mut h = h_with(250);
    let t = at(1, 9, 0);
    h.inbound(N, 1, None, t);
    restrict(
        &mut h,
        Target::Number(num(N)),
        None,
        vec![RestrictionType::AddPhoneNumber],
        t,
    );
    assert_eq!(
        h.admit(N, 1, SendKind::FreeForm, t).reason,
        Reason::ServiceWindow
    );
    assert_eq!(try_mkt(&mut h, N, 2, t).0, Reason::NewConversation);
    // shown in status, without making the account Restricted
    let v = &h.status(N, t).numbers[0];
    assert_eq!(
        (v.restricted_until, &v.restriction_types, v.account_status),
        (
            Some(Ts(u64::MAX)),
            &vec![RestrictionType::AddPhoneNumber],
            AccountStatus::Healthy
        )
    );
    // no types given: a restriction of unknown kind denies everything
    restrict(&mut h, Target::Number(num(N)), None, vec![], t);
    assert_eq!(
        h.admit(N, 1, SendKind::FreeForm, t).reason,
        Reason::NumberRestricted
    );
    h.event(
        PlatformEvent::AccountRestriction {
            target: Target::Number(num(N)),
            until: None,
            lifted: true,
            types: vec![],
        },
        t,
    );
    assert_eq!(
        h.admit(N, 1, SendKind::FreeForm, t).reason,
        Reason::ServiceWindow
    );
}

#[test]
fn section_10_an_indefinite_restriction_wins_over_a_timed_one() {
    let mut h = H::new();
    let p = PortfolioId::parse("portfolio", "waba9").unwrap();
    h.register_with(
        NumberRegistration {
            number: Some(num(N)),
            portfolio: Some(p.clone()),
            ..Default::default()
        },
        T0,
    );
    let t = at(1, 9, 0);
    restrict(&mut h, Target::Number(num(N)), None, vec![], t);
    restrict(&mut h, Target::Portfolio(p), Some(ms(t, HOUR)), vec![], t);
    for x in [ms(t, HOUR - 1), ms(t, HOUR)] {
        assert_eq!(try_mkt(&mut h, N, 1, x), (Reason::NumberRestricted, None));
        // status says the same: restricted with no end
        assert_eq!(
            h.status(N, x).numbers[0].restricted_until,
            Some(Ts(u64::MAX))
        );
    }
}

// ---- section 9: 131056 strikes survive a Tick between holds ----

/// The end of the hold an outcome with `code` sets for customer 1 of `N`.
fn hold_after(h: &mut H, code: u32, t: Ts) -> Ts {
    match h.outcome(N, 1, Some(code), t) {
        Output::Outcome {
            hold_until: Some(u),
            ..
        } => u,
        other => panic!("{other:?}"),
    }
}

fn strike(h: &mut H, t: Ts) -> Ts {
    hold_after(h, 131056, t)
}

#[test]
fn section_9_pair_backoff_grows_4x_whenever_ticks_run() {
    for ticks in [false, true] {
        let mut h = h_with(250);
        let t = at(1, 0, 0);
        h.inbound(N, 1, None, t);
        let tick = |h: &mut H, at: Ts| {
            if ticks {
                h.apply(Command::Tick, at).unwrap();
            }
        };
        let mut now = t;
        let mut end = t;
        for secs in [1u64, 4, 16, 64] {
            end = strike(&mut h, now);
            assert_eq!(end, ms(now, secs * 1_000), "ticks {ticks}");
            assert_eq!(
                h.admit(N, 1, SendKind::FreeForm, Ts(end.0 - 1)).reason,
                Reason::PairRateLimited
            );
            assert_eq!(
                h.admit(N, 1, SendKind::FreeForm, end).reason,
                Reason::ServiceWindow
            );
            // a Tick at the hold's end, then the next 131056 half a second later
            tick(&mut h, end);
            now = ms(end, 500);
        }
        // the strikes last a quiet day after the hold's end ...
        let quiet = ms(end, DAY);
        h.inbound(N, 1, None, Ts(quiet.0 - HOUR));
        tick(&mut h, Ts(quiet.0 - 1));
        let next = strike(&mut h, Ts(quiet.0 - 1));
        assert_eq!(next, Ts(quiet.0 - 1 + 256_000));
        // ... and then start again at 1 s
        let quiet = ms(next, DAY);
        h.inbound(N, 1, None, Ts(quiet.0 - HOUR));
        tick(&mut h, quiet);
        assert_eq!(strike(&mut h, quiet), ms(quiet, 1_000));
    }
}

// ---- R5.3 needs quality Medium or High ----

#[test]
fn r5_3_unknown_quality_does_not_upgrade() {
    let mut h = H::new();
    for (n, q) in [("1", Quality::Unknown), ("2", Quality::Medium)] {
        h.register_with(
            NumberRegistration {
                number: Some(num(n)),
                limit: Some(Limit::Capped(1_000)),
                quality: Some(q),
                ..Default::default()
            },
            T0,
        );
        h.open_many(n, 0, 500, at(1, 15, 0));
    }
    let s = h.status("1", at(1, 15, 0));
    assert_eq!((s.upgrade_eligible, s.upgrade_at), (false, None));
    assert_eq!(h.status("1", at(2, 15, 0)).limit, Limit::Capped(1_000));
    // Medium does
    assert_eq!(h.status("2", at(1, 15, 0)).upgrade_at, Some(at(2, 15, 0)));
    assert_eq!(
        h.status("2", Ts(at(2, 15, 0).0 - 1)).limit,
        Limit::Capped(1_000)
    );
    assert_eq!(h.status("2", at(2, 15, 0)).limit, Limit::Capped(10_000));
}

// ---- section 11: Restricted lifts once fewer than the limit are counted ----

#[test]
fn section_11_restricted_until_when_more_than_the_limit_are_counted() {
    let mut h = h_with(1_000);
    for c in 0..1_000u64 {
        h.admit(N, c, util(), ms(T0, c * MIN));
    }
    let t = ms(T0, 1_000 * MIN);
    h.event(
        PlatformEvent::LimitChange {
            target: Target::Number(num(N)),
            tier: TierInput::Name("TIER_250".into()),
        },
        t,
    );
    let s = h.status(N, t);
    // 1,000 counted at 250: 751 must age out, the 751st oldest at +750 min
    let lift = ms(T0, 750 * MIN + DAY);
    assert_eq!(
        (s.used, s.restricted, s.restricted_until, s.next_release),
        (1_000, true, Some(lift), Some(ms(T0, DAY)))
    );
    let s = h.status(N, Ts(lift.0 - 1));
    assert_eq!(
        (s.used, s.restricted, s.restricted_until),
        (250, true, Some(lift))
    );
    let s = h.status(N, lift);
    assert_eq!(
        (s.used, s.restricted, s.restricted_until),
        (249, false, None)
    );
    assert_eq!(
        try_mkt(&mut h, N, 5_000, Ts(lift.0 - 1)).0,
        Reason::LimitReached
    );
    assert_eq!(try_mkt(&mut h, N, 5_000, lift).0, Reason::NewConversation);
}

// ---- the fast path never reports a limit a due effect has changed ----

#[test]
fn fast_path_defers_to_the_log_when_a_delayed_effect_is_due() {
    let mut h = h_with(1_000);
    h.open_many(N, 0, 500, at(1, 15, 0));
    let due = at(2, 15, 0);
    h.inbound(N, 9_999, None, at(2, 14, 0));
    let req = AdmitRequest {
        number: num(N),
        customer: cust(9_999),
        kind: SendKind::FreeForm,
        idempotency_key: None,
    };
    let r = h.e.reader();
    let d = r.try_fast(&req, Ts(due.0 - 1)).unwrap();
    assert_eq!(
        (d.reason, d.limit),
        (Reason::ServiceWindow, Some(Limit::Capped(1_000)))
    );
    assert!(r.try_fast(&req, due).is_none(), "the upgrade is due");
    let d = h.admit(N, 9_999, SendKind::FreeForm, due);
    assert_eq!(d.limit, Some(Limit::Capped(10_000)));
    assert_eq!(r.try_fast(&req, due).unwrap().limit, d.limit);

    // the 7 Low days of R5.5 (a downgrade) likewise
    let t = at(3, 0, 0);
    h.event(
        PlatformEvent::NumberQuality {
            number: num(N),
            quality: Quality::Low,
        },
        t,
    );
    let down = ms(t, 7 * DAY);
    h.inbound(N, 9_999, None, Ts(down.0 - HOUR));
    assert_eq!(
        r.try_fast(&req, Ts(down.0 - 1)).unwrap().limit,
        Some(Limit::Capped(10_000))
    );
    assert!(r.try_fast(&req, down).is_none(), "the downgrade is due");
    let d = h.admit(N, 9_999, SendKind::FreeForm, down);
    assert_eq!(d.limit, Some(Limit::Capped(1_000)));
}

// ---- R5.6 / section 10: a tier event for a portfolio ----

/// A number outside the portfolios under test.
const N2: &str = "1009";

fn tier_event(h: &mut H, target: Target, tier: &str, key: Option<&str>, t: Ts) -> Output {
    h.apply(
        Command::Platform {
            event: PlatformEvent::LimitChange {
                target,
                tier: TierInput::Name(tier.into()),
            },
            event_key: key.map(str::to_owned),
        },
        t,
    )
    .unwrap()
}

fn in_portfolio(h: &mut H, n: &str, portfolio: &str, profile: &str, limit: Option<Limit>) {
    h.register_with(
        NumberRegistration {
            number: Some(num(n)),
            portfolio: Some(PortfolioId::parse("portfolio", portfolio).unwrap()),
            profile: Some(profile.into()),
            limit,
            ..Default::default()
        },
        T0,
    );
}

#[test]
fn r5_6_a_portfolio_tier_sets_each_number_of_a_seeds_portfolio() {
    let mut h = H::new();
    in_portfolio(&mut h, "1001", "W", "seeds", Some(Limit::Capped(250)));
    in_portfolio(&mut h, "1002", "W", "seeds", Some(Limit::Capped(1_000)));
    h.register(N2, Some(Limit::Capped(250)), T0);
    let w = || Target::Portfolio(PortfolioId::parse("portfolio", "W").unwrap());
    let t = at(1, 9, 0);
    assert_eq!(
        tier_event(&mut h, w(), "TIER_10K", Some("cap-1"), t),
        Output::Event {
            applied: true,
            note: None
        }
    );
    for n in ["1001", "1002"] {
        assert_eq!(h.status(n, t).limit, Limit::Capped(10_000), "{n}");
    }
    assert_eq!(h.status(N2, t).limit, Limit::Capped(250), "not in W");
    // a repeated delivery is applied once, even after another tier
    tier_event(&mut h, w(), "TIER_1K", None, ms(t, 1));
    let again = tier_event(&mut h, w(), "TIER_10K", Some("cap-1"), ms(t, 2));
    assert!(matches!(again, Output::Event { applied: false, .. }));
    assert_eq!(h.status("1001", ms(t, 2)).limit, Limit::Capped(1_000));
    // unknown values and TIER_NOT_SET keep every number's limit
    tier_event(&mut h, w(), "TIER_7", None, ms(t, 3));
    tier_event(&mut h, w(), "TIER_NOT_SET", None, ms(t, 3));
    assert_eq!(h.status("1002", ms(t, 3)).limit, Limit::Capped(1_000));
    assert_eq!(h.e.tier_errors(), 1);
    // a portfolio with nothing here is refused, and its key is not remembered
    let none = Target::Portfolio(PortfolioId::parse("portfolio", "X").unwrap());
    let e = h.apply(
        Command::Platform {
            event: PlatformEvent::LimitChange {
                target: none,
                tier: TierInput::Name("TIER_1K".into()),
            },
            event_key: Some("cap-x".into()),
        },
        ms(t, 4),
    );
    assert_eq!(e, Err(CoreError::UnknownPortfolio("X".into())));
    in_portfolio(&mut h, "1003", "X", "seeds", None);
    let x = Target::Portfolio(PortfolioId::parse("portfolio", "X").unwrap());
    let out = tier_event(&mut h, x, "TIER_1K", Some("cap-x"), ms(t, 5));
    assert!(matches!(out, Output::Event { applied: true, .. }));
    assert_eq!(h.status("1003", ms(t, 5)).limit, Limit::Capped(1_000));
}

#[test]
fn r5_6_a_portfolio_tier_sets_the_shared_limit_of_a_meta_portfolio() {
    let mut h = H::new();
    in_portfolio(&mut h, "2001", "M", "meta", None);
    in_portfolio(&mut h, "2002", "M", "meta", None);
    let m = Target::Portfolio(PortfolioId::parse("portfolio", "M").unwrap());
    let t = at(1, 9, 0);
    tier_event(&mut h, m, "TIER_2K", None, t);
    for n in ["2001", "2002"] {
        let s = h.status(n, t);
        assert_eq!(s.limit, Limit::Capped(2_000), "{n}");
        assert!(matches!(s.scope, ScopeKey::Portfolio(_)));
    }
}

// ---- section 9: 130429 returns its back-off ----

#[test]
fn section_9_130429_returns_the_end_of_the_number_back_off() {
    let mut h = h_with(250);
    let t = at(1, 9, 0);
    h.inbound(N, 1, None, t);
    let hold = |o: Output| match o {
        Output::Outcome { hold_until, .. } => hold_until,
        other => panic!("{other:?}"),
    };
    assert_eq!(hold(h.outcome(N, 1, Some(130429), t)), Some(ms(t, 1_000)));
    let d = h.admit(N, 1, SendKind::FreeForm, ms(t, 999));
    assert_eq!(
        (d.reason, d.retry_at),
        (Reason::ThroughputLimited, Some(ms(t, 1_000)))
    );
    assert_eq!(
        hold(h.outcome(N, 1, Some(130429), ms(t, 1_000))),
        Some(ms(t, 5_000))
    );
    assert_eq!(hold(h.outcome(N, 1, Some(131026), ms(t, 1_000))), None);
}

// ---- R3.5: a release says whether it un-counted a customer ----

#[test]
fn r3_5_releasing_a_portfolio_conversation_that_was_not_counted() {
    let mut h = H::new();
    in_portfolio(&mut h, "2001", "M", "meta", None);
    in_portfolio(&mut h, "2002", "M", "meta", None);
    let t = at(1, 9, 0);
    let a = h.admit("2001", 1, util(), t);
    let b = h.admit("2002", 1, util(), ms(t, 1));
    assert_eq!((a.counted, b.counted), (true, false));
    assert_eq!(h.status("2001", ms(t, 1)).used, 1);
    let release = |h: &mut H, d: &Decision, at: Ts| {
        h.apply(Command::Release(d.admission.clone().unwrap()), at)
            .unwrap()
    };
    // 2002's conversation never counted: nothing is un-counted
    assert_eq!(
        release(&mut h, &b, ms(t, 2)),
        Output::Released { released: false }
    );
    assert_eq!(h.status("2001", ms(t, 2)).used, 1);
    // it is closed all the same: a new template opens a new conversation
    assert_eq!(
        h.admit("2002", 1, util(), ms(t, 3)).reason,
        Reason::NewConversation
    );
    // 2001's still counts the customer (2002's new one does too): not un-counted
    assert_eq!(
        release(&mut h, &a, ms(t, 4)),
        Output::Released { released: false }
    );
    assert_eq!(h.status("2001", ms(t, 4)).used, 1);
    // a seeds number's conversation is counted: released once
    let mut h = h_with(250);
    let d = h.admit(N, 1, util(), t);
    assert_eq!(
        release(&mut h, &d, ms(t, 1)),
        Output::Released { released: true }
    );
    assert_eq!(
        release(&mut h, &d, ms(t, 2)),
        Output::Released { released: false }
    );
    // one older than the 24 h window is no longer counted
    let d = h.admit(N, 2, util(), ms(t, 3));
    assert_eq!(
        release(&mut h, &d, ms(t, 3 + DAY)),
        Output::Released { released: false }
    );
}

// ---- input the engine refuses whatever the shard holds ----

fn portfolio(s: &str) -> PortfolioId {
    PortfolioId::parse("portfolio", s).unwrap()
}

fn conflict(r: Result<Output, CoreError>) -> String {
    match r {
        Err(CoreError::Conflict(m)) => m,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Every shard holds every profile but only some numbers: the scope rule must not depend
/// on the numbers, or one SetPolicy is applied on some shards and refused on others.
#[test]
fn an_existing_profile_keeps_its_scope_on_every_shard_alike() {
    let mut h = H::new();
    let mut p = Policy::seeds();
    p.name = "own".into();
    h.apply(Command::SetPolicy(p.clone()), T0).unwrap();
    // no number uses it on this shard: refused all the same
    let mut q = p.clone();
    q.scope = ScopeKind::Portfolio;
    let m = conflict(h.apply(Command::SetPolicy(q.clone()), T0));
    assert!(m.starts_with("policy.scope"), "{m}");
    assert_eq!(h.e.policy("own").unwrap().scope, ScopeKind::Number);
    // the built-in profiles too
    let mut s = Policy::seeds();
    s.scope = ScopeKind::Portfolio;
    conflict(h.apply(Command::SetPolicy(s), T0));
    // other fields change freely
    let mut r = p;
    r.pair_burst = 7;
    h.apply(Command::SetPolicy(r), T0).unwrap();
    assert_eq!(h.e.policy("own").unwrap().pair_burst, 7);
}

/// Section 10: a restriction of a portfolio this shard does not know is refused and
/// creates nothing; one of a known portfolio applies to its numbers.
#[test]
fn section_10_a_restriction_of_an_unknown_portfolio_creates_nothing() {
    let mut h = h_with(250);
    let ev = |p: &str| Command::Platform {
        event: PlatformEvent::AccountRestriction {
            target: Target::Portfolio(portfolio(p)),
            until: None,
            lifted: false,
            types: vec![],
        },
        event_key: Some(format!("r-{p}")),
    };
    assert!(matches!(
        h.apply(ev("typo"), T0),
        Err(CoreError::UnknownPortfolio(_))
    ));
    let r = h.e.reader();
    assert!(r.portfolios().is_empty());
    assert!(r.portfolio_status(&portfolio("typo"), T0).is_none());
    // a registered portfolio: applied
    h.apply(
        Command::RegisterPortfolio(PortfolioRegistration {
            portfolio: portfolio("waba7"),
            profile: Some("seeds".into()),
            limit: None,
        }),
        T0,
    )
    .unwrap();
    h.apply(ev("waba7"), T0).unwrap();
    assert_eq!(
        r.portfolio_status(&portfolio("waba7"), T0)
            .unwrap()
            .restricted_until,
        Some(Ts(u64::MAX))
    );
}

/// admin.proto: a registered number keeps its portfolio under every profile; the same
/// portfolio again (or none given) updates it; a number without one may join one.
#[test]
fn a_number_keeps_its_portfolio_under_every_profile() {
    let mut h = H::new();
    let reg = |n: &str, p: Option<&str>| NumberRegistration {
        number: Some(num(n)),
        portfolio: p.map(portfolio),
        ..Default::default()
    };
    h.register_with(reg(N, Some("wa")), T0);
    h.admit(N, 1, util(), T0);
    let m = conflict(h.apply(Command::RegisterNumber(reg(N, Some("wb"))), T0));
    assert!(m.starts_with("portfolio_id"), "{m}");
    let v = &h.status(N, T0).numbers[0];
    assert_eq!(v.portfolio, Some(portfolio("wa")));
    let r = h.e.reader();
    assert!(r.portfolio_status(&portfolio("wb"), T0).is_none());
    // the same portfolio, or none given: an update that keeps the count
    h.register_with(reg(N, Some("wa")), T0);
    h.register_with(
        NumberRegistration {
            quality: Some(Quality::Medium),
            ..reg(N, None)
        },
        T0,
    );
    let s = h.status(N, T0);
    assert_eq!((s.used, s.numbers[0].quality), (1, Quality::Medium));
    assert_eq!(s.numbers[0].portfolio, Some(portfolio("wa")));
    // a number without a portfolio joins one, with its profile
    h.register_with(reg("1002", None), T0);
    h.register_with(reg("1002", Some("wc")), T0);
    let p = r.portfolio_status(&portfolio("wc"), T0).unwrap();
    assert_eq!(p.profile, "seeds");
    assert_eq!(p.scopes.len(), 1);
    conflict(h.apply(Command::RegisterNumber(reg("1002", Some("wa"))), T0));
}

/// R7.1: a keyword of spaces only would match an empty inbound message (a media message
/// without a caption) and opt the customer out; profiles are bounded in keywords and in
/// the rates' sizes (R8), and are refused naming the field.
#[test]
fn r7_1_r8_policies_hold_no_blank_keyword_and_bounded_rates() {
    let mut h = h_with(250);
    let invalid = |h: &mut H, p: Policy| match h.apply(Command::SetPolicy(p), T0) {
        Err(CoreError::Invalid { field, .. }) => field,
        other => panic!("expected invalid, got {other:?}"),
    };
    let mut p = Policy::seeds();
    p.opt_out_keywords = vec!["STOP".into(), " \t".into()];
    assert_eq!(invalid(&mut h, p.clone()), "policy.opt_out_keywords[1]");
    p.opt_out_keywords = vec![String::new()];
    assert_eq!(invalid(&mut h, p.clone()), "policy.opt_out_keywords[0]");
    p.opt_out_keywords = vec!["STOP".into()];
    p.opt_in_keywords = vec!["x".repeat(Policy::MAX_KEYWORD_CHARS + 1)];
    assert_eq!(invalid(&mut h, p.clone()), "policy.opt_in_keywords[0]");
    p.opt_in_keywords = (0..=Policy::MAX_KEYWORDS)
        .map(|i| format!("K{i}"))
        .collect();
    assert_eq!(invalid(&mut h, p.clone()), "policy.opt_in_keywords");
    let mut p = Policy::seeds();
    p.pair_burst = Policy::MAX_PAIR_BURST + 1;
    assert_eq!(invalid(&mut h, p.clone()), "policy.pair_burst");
    p.pair_burst = 45;
    p.pair_interval = Dur(Policy::MAX_PAIR_INTERVAL.ms() + 1);
    assert_eq!(invalid(&mut h, p.clone()), "policy.pair_interval");
    p.pair_interval = Dur::secs(6);
    p.throughput_mps = Policy::MAX_THROUGHPUT_MPS + 1;
    assert_eq!(invalid(&mut h, p), "policy.throughput_mps");
    // nothing changed: an empty message opts nobody out
    let out = h.inbound(N, 1, Some(" "), T0);
    assert!(matches!(out, Output::Inbound { opt: None, .. }), "{out:?}");
    assert_eq!(h.e.policy("seeds").unwrap().as_ref(), &Policy::seeds());
}

// ---- R8: a bucket denial is a decision like the others ----

/// R8.1, R8.2: a send the leader's token buckets refuse carries the scope's limit and
/// usage, as a denial by an outcome's back-off does.
#[test]
fn r8_a_bucket_denial_carries_the_scope_usage() {
    use admit_core::rate::{Rate, RateDenial, RateLimiter};
    let mut h = h_with(250);
    let t = at(1, 9, 0);
    h.open_many(N, 1, 3, t);
    let buckets = RateLimiter::default();
    let pair = Rate::every(Dur::secs(6), 1);
    assert!(buckets
        .try_take(num(N), cust(1), Rate::per_second(80), pair, t)
        .is_ok());
    let denial = buckets
        .try_take(num(N), cust(1), Rate::per_second(80), pair, t)
        .unwrap_err();
    assert_eq!(
        denial,
        RateDenial::Pair {
            retry_at: ms(t, 6_000)
        }
    );
    let d = h.e.reader().rate_denial(&num(N), denial, t);
    assert_eq!(
        (d.allowed, d.reason, d.retry_at),
        (false, Reason::PairRateLimited, Some(ms(t, 6_000)))
    );
    assert_eq!(
        (d.limit, d.used, d.headroom()),
        (Some(Limit::Capped(250)), 3, Some(247))
    );
    assert_eq!(d.decided_at, t);
    let d = h.e.reader().rate_denial(
        &num(N),
        RateDenial::Throughput {
            retry_at: ms(t, 12),
        },
        t,
    );
    assert_eq!(d.reason, Reason::ThroughputLimited);
    assert_eq!((d.limit, d.used), (Some(Limit::Capped(250)), 3));
    // the same as the writer reports for a denial of that scope
    let full = h.e.reader().number_status(&num(N), t).unwrap();
    assert_eq!((full.limit, full.used), (Limit::Capped(250), 3));
}

// ---- the default profile ----

/// R5.1: the seeds profile is the default, for a portfolio registered without a profile
/// as for a number.
#[test]
fn r5_1_a_portfolio_registered_without_a_profile_gets_the_default() {
    let mut h = H::new();
    h.apply(
        Command::RegisterPortfolio(PortfolioRegistration {
            portfolio: portfolio("wd"),
            profile: None,
            limit: None,
        }),
        T0,
    )
    .unwrap();
    let p = h.e.reader().portfolio_status(&portfolio("wd"), T0).unwrap();
    assert_eq!(p.profile, Policy::DEFAULT_PROFILE);
    assert_eq!(Policy::DEFAULT_PROFILE, Policy::seeds().name);
    // no limit scope of its own: the seeds limit is each number's
    assert!(p.scopes.is_empty());
}

// ---- policy validation, as a SetPolicy request names the fields ----

/// R5.5 (one period serves Low and recovery), section 9 (the pair back-off grows 4^x),
/// R7.1 keywords (named by index) and R7.2 (marketing always blocked for opted-out
/// customers): checked in one place, naming the request's field.
#[test]
fn r5_5_r7_policy_validation_names_the_request_field() {
    let p = Policy::seeds();
    let field = |s: Stated, p: &Policy| p.validate_stated(&s).map_err(|e| e.field);
    assert_eq!(field(Stated::default(), &p), Ok(()));
    let ok = Stated {
        recovery_period: Some(p.flag_period),
        pair_backoff_growth: Some(4),
    };
    assert_eq!(field(ok, &p), Ok(()));
    let e = p
        .validate_stated(&Stated {
            recovery_period: Some(Dur::days(3)),
            ..ok
        })
        .unwrap_err();
    assert_eq!(e.field, "policy.flagged_downgrade.recovery_duration_ms");
    assert_eq!(
        e.problem,
        "must be 0 or equal to low_duration_ms: one period serves both (R5.5)"
    );
    let e = p
        .validate_stated(&Stated {
            pair_backoff_growth: Some(2),
            ..ok
        })
        .unwrap_err();
    assert_eq!(e.field, "policy.cooldowns.pair_backoff_base_s");
    assert_eq!(
        e.problem,
        "must be 0 or 4: the pair back-off grows 4^x seconds (section 9)"
    );
    let mut k = p.clone();
    k.opt_out_keywords = vec!["STOP".into(), " \t ".into()];
    let e = k.validate().unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid policy.opt_out_keywords[1]: must hold a character other than spaces"
    );
    k.opt_out_keywords = vec!["S".repeat(Policy::MAX_KEYWORD_CHARS + 1)];
    let e = k.validate().unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid policy.opt_out_keywords[0]: must be at most 64 characters"
    );
    k.opt_out_keywords = (0..=Policy::MAX_KEYWORDS)
        .map(|i| format!("K{i}"))
        .collect();
    let e = k.validate().unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid policy.opt_out_keywords: at most 64 keywords"
    );
    assert_eq!(
        Policy::opt_out_blocks_with(&[Category::Utility]),
        vec![Category::Utility, Category::Marketing]
    );
    assert_eq!(
        Policy::opt_out_blocks_with(&[Category::Marketing, Category::Authentication]),
        vec![Category::Marketing, Category::Authentication]
    );
    assert_eq!(Policy::opt_out_blocks_with(&[]), vec![Category::Marketing]);
}

// ---- section 11: a portfolio's status from every shard ----

/// A seeds portfolio whose numbers live on two shards: one status, with the numbers'
/// limits and counts added up, the restriction's latest end, the home shard's profile,
/// and unique customers labelled an estimate (a customer may count on both shards).
#[test]
fn section_11_a_portfolio_status_merges_every_shards_part() {
    let mut a = H::new();
    let mut b = H::new();
    let t = at(1, 9, 0);
    in_portfolio(&mut a, "1001", "wp", "seeds", Some(Limit::Capped(250)));
    in_portfolio(&mut b, "1002", "wp", "seeds", Some(Limit::Capped(1_000)));
    a.open_many("1001", 1, 250, t);
    b.open_many("1002", 1, 4, t);
    b.event(
        PlatformEvent::NumberQuality {
            number: num("1002"),
            quality: Quality::Medium,
        },
        t,
    );
    restrict(
        &mut b,
        Target::Portfolio(portfolio("wp")),
        Some(at(3, 0, 0)),
        vec![],
        t,
    );
    let part = |h: &H| h.e.reader().portfolio_status(&portfolio("wp"), t).unwrap();
    let p =
        PortfolioStatus::merge(&portfolio("wp"), [(false, part(&b)), (true, part(&a))]).unwrap();
    assert_eq!(p.profile, "seeds");
    assert_eq!(p.scopes.len(), 2);
    assert_eq!(p.restricted_until, Some(at(3, 0, 0)));
    // the sum of the shards' estimates
    let (ua, ub) = (part(&a).unique_7d.value, part(&b).unique_7d.value);
    assert_eq!(p.unique_7d.value, ua + ub);
    assert!(ub >= 4);
    assert!(!p.unique_7d.exact && !p.unique_30d.exact);
    assert!(p.own_scope().is_none());
    let sum = p.sum_of_scopes();
    assert_eq!(sum.limit, Some(Limit::Capped(1_250)));
    assert_eq!((sum.used, sum.headroom), (254, Some(996)));
    // restricted while one number's limit is used up (R4.1)
    assert!(sum.restricted);
    assert_eq!(sum.restricted_until, Some(at(2, 9, 0)));
    assert_eq!(sum.next_release, Some(at(2, 9, 0)));
    assert_eq!(sum.quality, Quality::Medium);
    assert_eq!(sum.account_status, AccountStatus::Restricted);
    // one shard alone: exact; no shard: unknown
    let one = PortfolioStatus::merge(&portfolio("wp"), [(true, part(&a))]).unwrap();
    assert!(one.unique_7d.exact);
    assert_eq!(one.sum_of_scopes().limit, Some(Limit::Capped(250)));
    assert!(PortfolioStatus::merge(&portfolio("wp"), []).is_none());
    // a meta portfolio: its own scope
    let mut m = H::new();
    in_portfolio(&mut m, "1003", "wm", "meta", None);
    let p = m.e.reader().portfolio_status(&portfolio("wm"), t).unwrap();
    let p = PortfolioStatus::merge(&portfolio("wm"), [(true, p)]).unwrap();
    assert_eq!(p.profile, "meta");
    assert_eq!(
        p.own_scope().map(|s| s.scope.clone()),
        Some(ScopeKey::Portfolio(portfolio("wm")))
    );
}

// ---- R3.5: only a failure before delivery releases ----

/// A delivery report for an admission (a failure with a code that has no other effect).
fn delivery(c: u64, a: &Option<AdmissionId>, status: DeliveryStatus) -> Command {
    Command::Outcome(Outcome {
        number: num(N),
        customer: cust(c),
        admission: a.clone(),
        status,
        error_code: (status == DeliveryStatus::Failed).then_some(131026),
        template: None,
        event_key: None,
        message_id: None,
    })
}

fn report(h: &mut H, c: u64, a: &Option<AdmissionId>, status: DeliveryStatus, t: Ts) -> Output {
    h.apply(delivery(c, a, status), t).unwrap()
}

/// R3.5: a send that failed before delivery gives its conversation back; one known
/// DELIVERED (or READ) was delivered, so a FAILED report after that releases nothing:
/// the count stays and no extra conversation is admitted. Also across a snapshot.
#[test]
fn r3_5_a_failure_reported_after_delivery_does_not_release() {
    let mut h = h_with(3);
    let t = at(1, 9, 0);
    let a: Vec<_> = (1..=3)
        .map(|c| h.admit(N, c, util(), t).admission)
        .collect();
    assert_eq!(h.admit(N, 4, util(), t).reason, Reason::LimitReached);
    report(&mut h, 1, &a[0], DeliveryStatus::Delivered, ms(t, 1));
    report(&mut h, 2, &a[1], DeliveryStatus::Read, ms(t, 1));
    // a snapshot keeps what was delivered
    let mut restored = Engine::restore(&h.e.snapshot()).unwrap();
    assert_eq!(restored.snapshot(), h.e.snapshot());
    let released = |o: Output| match o {
        Output::Outcome { released, .. } => released,
        other => panic!("{other:?}"),
    };
    for (c, id) in [(1, &a[0]), (2, &a[1])] {
        let failed = delivery(c, id, DeliveryStatus::Failed);
        assert!(!released(h.apply(failed.clone(), ms(t, 2)).unwrap()));
        assert!(!released(restored.apply(failed, ms(t, 2)).unwrap()));
    }
    assert_eq!(h.status(N, ms(t, 3)).used, 3);
    assert_eq!(h.admit(N, 4, util(), ms(t, 3)).reason, Reason::LimitReached);
    // only SENT known: the failure is before delivery, and releases
    report(&mut h, 3, &a[2], DeliveryStatus::Sent, ms(t, 3));
    let out = report(&mut h, 3, &a[2], DeliveryStatus::Failed, ms(t, 4));
    assert!(
        matches!(out, Output::Outcome { released: true, .. }),
        "{out:?}"
    );
    assert_eq!(h.status(N, ms(t, 5)).used, 2);
    assert_eq!(
        h.admit(N, 4, util(), ms(t, 5)).reason,
        Reason::NewConversation
    );
    assert_eq!(h.admit(N, 5, util(), ms(t, 5)).reason, Reason::LimitReached);
}

// ---- section 9: the 130429 back-off, its growth and its reset ----

fn throughput_hold(h: &mut H, t: Ts) -> Ts {
    hold_after(h, 130429, t)
}

/// Section 9: consecutive 130429 reports back the number off 1 s, 4 s, 16 s, ... up to
/// the cap; a quiet day after a hold's end forgets the strikes, so two reports two days
/// apart both give the base. The same with a profile's own base, cap and quiet period.
#[test]
fn section_9_130429_back_off_grows_and_is_forgotten_after_a_quiet_day() {
    let mut h = h_with(250);
    let t = at(1, 9, 0);
    assert_eq!(throughput_hold(&mut h, t), ms(t, 1_000));
    let later = ms(t, 2 * DAY);
    assert_eq!(throughput_hold(&mut h, later), ms(later, 1_000));
    let mut now = later;
    let mut end = now;
    for secs in [4u64, 16, 64, 64] {
        now = ms(end, 10);
        end = throughput_hold(&mut h, now);
        assert_eq!(end, ms(now, secs * 1_000));
    }
    // still remembered a millisecond before the quiet day ends, forgotten at its end
    let before = Ts(ms(end, DAY).0 - 1);
    assert_eq!(throughput_hold(&mut h, before), ms(before, 64_000));
    let quiet = ms(ms(before, 64_000), DAY);
    assert_eq!(throughput_hold(&mut h, quiet), ms(quiet, 1_000));
    // a profile's own base, cap and quiet periods (both back-offs)
    let mut p = Policy::seeds();
    p.name = "brisk".into();
    (p.throughput_backoff_base, p.throughput_backoff_max) = (Dur(500), Dur(3_000));
    p.throughput_backoff_reset_after = Dur::HOUR;
    p.pair_backoff_reset_after = Dur::MINUTE;
    h.apply(Command::SetPolicy(p), quiet).unwrap();
    h.register_with(
        NumberRegistration {
            number: Some(num(N)),
            profile: Some("brisk".into()),
            ..Default::default()
        },
        quiet,
    );
    let t = ms(quiet, DAY);
    let ends: Vec<_> = (0..3).map(|_| throughput_hold(&mut h, t)).collect();
    assert_eq!(ends, vec![ms(t, 500), ms(t, 2_000), ms(t, 3_000)]);
    let before = Ts(ms(t, 3_000 + HOUR).0 - 1);
    assert_eq!(throughput_hold(&mut h, before), ms(before, 3_000));
    let quiet = ms(ms(before, 3_000), HOUR);
    assert_eq!(throughput_hold(&mut h, quiet), ms(quiet, 500));
    h.inbound(N, 1, None, quiet);
    let end = strike(&mut h, quiet);
    assert_eq!(end, ms(quiet, 1_000));
    assert_eq!(
        strike(&mut h, Ts(ms(end, MIN).0 - 1)),
        ms(end, MIN - 1 + 4_000)
    );
    let end = ms(end, MIN - 1 + 4_000);
    assert_eq!(strike(&mut h, ms(end, MIN)), ms(end, MIN + 1_000));
}
