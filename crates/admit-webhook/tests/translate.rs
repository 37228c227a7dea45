//! The translation from Meta's payloads to admit's calls, without HTTP: one
//! realistic fixture per field (written from Meta's documented shapes), tier
//! values in every form, unknown fields and numbers, stable keys.

use admit_proto::v1 as pb;
use admit_webhook::translate::{self, Action, Translation};
use pb::apply_event_request::Event;

const NUMBER: &str = "109900112233445";
const DISPLAY: &str = "15550101234";
const WABA: &str = "880011223344556";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Translates with the display number of the fixtures known.
fn tr(body: &[u8]) -> Translation {
    let env = translate::parse(body).expect("parses");
    translate::translate(&env, &|d| (d == DISPLAY).then(|| NUMBER.to_owned())).expect("translates")
}

/// Translates knowing no display number.
fn tr_unknown(body: &[u8]) -> Translation {
    let env = translate::parse(body).expect("parses");
    translate::translate(&env, &|_| None).expect("translates")
}

fn events(t: &Translation) -> Vec<(String, Event)> {
    t.planned
        .iter()
        .filter_map(|p| match &p.action {
            Action::Event(e) => Some((e.event_key.clone(), e.event.clone().unwrap())),
            _ => None,
        })
        .collect()
}

fn tier_name(n: &str) -> Option<pb::TierValue> {
    Some(pb::TierValue {
        tier: Some(pb::tier_value::Tier::TierName(n.into())),
    })
}

fn number_target() -> Option<pb::Target> {
    Some(pb::Target {
        target: Some(pb::target::Target::NumberId(NUMBER.into())),
    })
}

fn waba_target() -> Option<pb::Target> {
    Some(pb::Target {
        target: Some(pb::target::Target::PortfolioId(WABA.into())),
    })
}

#[test]
fn quality_update_upgrade_changes_the_numbers_tier() {
    let t = tr(&fixture("quality_update.json"));
    let ev = events(&t);
    assert_eq!(ev.len(), 1, "{t:?}");
    assert_eq!(
        ev[0].1,
        Event::Tier(pb::TierChanged {
            target: number_target(),
            tier: tier_name("TIER_10K"),
            old_tier: tier_name("TIER_1K"),
        })
    );
    assert!(t.unresolved.is_empty() && t.unknown.is_empty());
    let Action::Event(e) = &t.planned[0].action else {
        unreachable!()
    };
    // entry.time, in ms
    assert_eq!(e.occurred_at_unix_ms, Some(1_764_547_200_000));
}

#[test]
fn quality_update_flagged_sets_status_and_tier_by_a_formatted_display_number() {
    let t = tr(&fixture("quality_flagged.json"));
    let ev = events(&t);
    assert_eq!(ev.len(), 2, "{t:?}");
    assert_eq!(
        ev[0].1,
        Event::NumberStatus(pb::NumberStatusChanged {
            number_id: NUMBER.into(),
            status: pb::NumberStatus::Flagged as i32,
        })
    );
    assert!(matches!(&ev[1].1, Event::Tier(_)));
    // two events of one change: two keys
    assert_ne!(ev[0].0, ev[1].0);
    let unflagged = String::from_utf8(fixture("quality_flagged.json"))
        .unwrap()
        .replace("\"FLAGGED\"", "\"UNFLAGGED\"");
    let ev = events(&tr(unflagged.as_bytes()));
    assert_eq!(
        ev[0].1,
        Event::NumberStatus(pb::NumberStatusChanged {
            number_id: NUMBER.into(),
            status: pb::NumberStatus::Connected as i32,
        })
    );
}

#[test]
fn quality_update_throughput_upgrade_and_the_portfolio_limit() {
    let t = tr(&fixture("quality_throughput.json"));
    assert_eq!(t.planned.len(), 2, "{t:?}");
    assert_eq!(
        t.planned[0].action,
        Action::Throughput(pb::RegisterNumberRequest {
            number_id: NUMBER.into(),
            throughput_mps: Some(1_000),
            ..Default::default()
        })
    );
    let ev = events(&t);
    assert_eq!(
        ev[0].1,
        Event::Tier(pb::TierChanged {
            target: waba_target(),
            tier: tier_name("TIER_2K"),
            old_tier: None,
        })
    );
}

#[test]
fn a_display_number_admit_cannot_map_is_listed_not_applied() {
    let t = tr_unknown(&fixture("quality_update.json"));
    assert!(t.planned.is_empty(), "{t:?}");
    assert_eq!(
        t.unresolved,
        vec![(
            "phone_number_quality_update".to_string(),
            DISPLAY.to_string()
        )]
    );
    let t = tr_unknown(&fixture("account_restriction.json"));
    assert!(t.planned.is_empty() && t.unresolved.len() == 1, "{t:?}");
}

#[test]
fn tiers_in_every_form_meta_sends() {
    let names = [
        "TIER_50",
        "TIER_250",
        "TIER_1K",
        "TIER_2K",
        "TIER_10K",
        "TIER_100K",
        "TIER_UNLIMITED",
        "TIER_NOT_SET",
        " tier_1k ",
    ];
    for n in names {
        let body = String::from_utf8(fixture("quality_update.json"))
            .unwrap()
            .replace("\"TIER_10K\"", &format!("{n:?}"));
        let ev = events(&tr(body.as_bytes()));
        let Event::Tier(t) = &ev[0].1 else {
            panic!("{n}: {ev:?}")
        };
        // passed on as sent: the server reads every form (docs/rules.md
        // section 10) and fails safe on an unknown one
        assert_eq!(t.tier, tier_name(n), "{n}");
    }
    for v in [50i64, 250, 1_000, 2_000, 10_000, 100_000, -1] {
        let body = String::from_utf8(fixture("capability_update.json"))
            .unwrap()
            .replace("100000", &v.to_string());
        let ev = events(&tr(body.as_bytes()));
        let Event::Tier(t) = &ev[0].1 else {
            panic!("{v}: {ev:?}")
        };
        assert_eq!(
            t.tier,
            Some(pb::TierValue {
                tier: Some(pb::tier_value::Tier::TierValue(v))
            }),
            "{v}"
        );
    }
}

#[test]
fn capability_update_is_the_portfolios_tier() {
    let ev = events(&tr(&fixture("capability_update.json")));
    assert_eq!(
        ev[0].1,
        Event::Tier(pb::TierChanged {
            target: waba_target(),
            tier: Some(pb::TierValue {
                tier: Some(pb::tier_value::Tier::TierValue(100_000))
            }),
            old_tier: None,
        })
    );
}

#[test]
fn template_status_pause_with_its_title() {
    let ev = events(&tr(&fixture("template_status.json")));
    assert_eq!(
        ev[0].1,
        Event::TemplateStatus(pb::TemplateStatusChanged {
            template_id: "771122334455".into(),
            portfolio_id: WABA.into(),
            event: pb::TemplateStatusEvent::Paused as i32,
            pause_title: pb::PauseTitle::FirstPause as i32,
            paused_until_unix_ms: None,
        })
    );
    let body = String::from_utf8(fixture("template_status.json")).unwrap();
    for (meta, ours) in [
        ("APPROVED", Some(pb::TemplateStatusEvent::Approved)),
        ("REINSTATED", Some(pb::TemplateStatusEvent::Approved)),
        ("UNPAUSED", Some(pb::TemplateStatusEvent::Unpaused)),
        ("DISABLED", Some(pb::TemplateStatusEvent::Disabled)),
        ("REJECTED", None),
        ("PENDING_DELETION", None),
    ] {
        let t = tr(body.replace("\"PAUSED\"", &format!("{meta:?}")).as_bytes());
        match ours {
            Some(e) => {
                let ev = events(&t);
                let Event::TemplateStatus(s) = &ev[0].1 else {
                    panic!("{meta}")
                };
                assert_eq!(s.event, e as i32, "{meta}");
                assert_eq!(s.pause_title, 0, "{meta}: a title only with PAUSED");
            }
            None => {
                assert!(t.planned.is_empty(), "{meta}");
                assert_eq!(t.ignored.len(), 1, "{meta}");
            }
        }
    }
}

#[test]
fn template_quality_scores() {
    let ev = events(&tr(&fixture("template_quality.json")));
    assert_eq!(
        ev[0].1,
        Event::TemplateQuality(pb::TemplateQualityChanged {
            template_id: "771122334455".into(),
            portfolio_id: WABA.into(),
            quality: pb::TemplateQuality::Low as i32,
        })
    );
    let body = String::from_utf8(fixture("template_quality.json")).unwrap();
    for (meta, ours) in [
        ("GREEN", pb::TemplateQuality::High),
        ("YELLOW", pb::TemplateQuality::Medium),
        ("UNKNOWN", pb::TemplateQuality::Pending),
    ] {
        let ev = events(&tr(body
            .replace(
                "\"new_quality_score\": \"RED\"",
                &format!("\"new_quality_score\": {meta:?}"),
            )
            .as_bytes()));
        let Event::TemplateQuality(q) = &ev[0].1 else {
            panic!("{meta}")
        };
        assert_eq!(q.quality, ours as i32, "{meta}");
    }
}

#[test]
fn account_restriction_with_its_expiration() {
    let ev = events(&tr(&fixture("account_restriction.json")));
    assert_eq!(
        ev[0].1,
        Event::AccountRestriction(pb::AccountRestriction {
            target: number_target(),
            restriction_types: vec![pb::RestrictionType::BizInitiatedMessaging as i32],
            expires_at_unix_ms: Some(1_764_741_600_000),
            lifted: false,
        })
    );
    // without a number: the whole account; without an expiration: until
    // lifted; an unknown kind: every send (no types, fail safe)
    let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"880011223344556","time":1764568800,
      "changes":[{"field":"account_update","value":{"event":"ACCOUNT_RESTRICTION","restriction_info":[
        {"restriction_type":"RESTRICTED_CUSTOMER_INITIATED_MESSAGING","expiration":1764741600},
        {"restriction_type":"RESTRICTED_SOMETHING_NEW"}]}}]}]}"#;
    let ev = events(&tr(body.as_bytes()));
    assert_eq!(
        ev[0].1,
        Event::AccountRestriction(pb::AccountRestriction {
            target: waba_target(),
            restriction_types: vec![],
            expires_at_unix_ms: None,
            lifted: false,
        })
    );
    let other = body.replace("ACCOUNT_RESTRICTION", "VERIFIED_ACCOUNT");
    let t = tr(other.as_bytes());
    assert!(t.planned.is_empty() && t.ignored.len() == 1, "{t:?}");
}

#[test]
fn user_preferences_stop_and_resume() {
    let ev = events(&tr(&fixture("user_preferences.json")));
    assert_eq!(
        ev[0].1,
        Event::UserPreference(pb::UserPreference {
            number_id: NUMBER.into(),
            customer_id: "4915112345678".into(),
            preference: pb::UserPreferenceValue::Stop as i32,
        })
    );
    let body = String::from_utf8(fixture("user_preferences.json"))
        .unwrap()
        .replace("\"stop\"", "\"resume\"");
    let ev2 = events(&tr(body.as_bytes()));
    let Event::UserPreference(p) = &ev2[0].1 else {
        panic!()
    };
    assert_eq!(p.preference, pb::UserPreferenceValue::Resume as i32);
    assert_ne!(ev[0].0, ev2[0].0, "a resume is not a repeat of the stop");
}

#[test]
fn inbound_messages_open_windows_and_carry_keywords_and_entry_points() {
    let t = tr(&fixture("messages_inbound.json"));
    let inb: Vec<&pb::RecordInboundRequest> = t
        .planned
        .iter()
        .map(|p| match &p.action {
            Action::Inbound(i) => i,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(inb.len(), 3);
    assert!(inb.iter().all(|i| i.number_id == NUMBER
        && i.kind == pb::InboundKind::Message as i32
        && i.event_key.len() <= 128));
    assert_eq!(inb[0].customer_id, "447700900123");
    assert_eq!(
        inb[0].text.as_deref(),
        Some("Do you still have the blue one in stock?")
    );
    // a quick-reply button's text is matched like a typed message (R7.1)
    assert_eq!(inb[1].text.as_deref(), Some("STOP"));
    assert!(!inb[0].free_entry_point && !inb[1].free_entry_point);
    // a click-to-WhatsApp ad's referral: a free entry point (R2.3)
    assert!(inb[2].free_entry_point);
    assert_ne!(inb[0].event_key, inb[1].event_key);
    // the metadata teaches the display number
    assert_eq!(t.learned, vec![(DISPLAY.to_string(), NUMBER.to_string())]);
}

#[test]
fn statuses_feed_outcomes_with_codes_and_the_admission_echoed_back() {
    let t = tr(&fixture("messages_statuses.json"));
    let outs: Vec<&pb::ReportOutcomeRequest> = t
        .planned
        .iter()
        .map(|p| match &p.action {
            Action::Outcome(o) => o,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[0].status, pb::DeliveryStatus::Delivered as i32);
    assert_eq!(outs[0].meta_error_code, None);
    assert_eq!(outs[0].admission_id, "");
    assert_eq!(outs[1].status, pb::DeliveryStatus::Failed as i32);
    assert_eq!(outs[1].meta_error_code, Some(131_049));
    assert_eq!(outs[1].customer_id, "4915187654321");
    assert_eq!(outs[1].admission_id, "n109900112233445-1");
    assert_ne!(outs[0].event_key, outs[1].event_key);
}

#[test]
fn admission_ids_in_callback_data() {
    use translate::admission_in_callback as a;
    assert_eq!(a("n1001-7").as_deref(), Some("n1001-7"));
    assert_eq!(a("pwaba-1-12").as_deref(), Some("pwaba-1-12"));
    assert_eq!(a("order=9 admit=n1001-7").as_deref(), Some("n1001-7"));
    assert_eq!(a("campaign=spring"), None);
    assert_eq!(a("admit=nope"), None);
    assert_eq!(a(""), None);
}

#[test]
fn a_customers_call_opens_a_window() {
    let t = tr(&fixture("calls.json"));
    let Action::Inbound(i) = &t.planned[0].action else {
        panic!("{t:?}")
    };
    assert_eq!(i.kind, pb::InboundKind::Call as i32);
    assert_eq!(i.customer_id, "447700900456");
    let body = String::from_utf8(fixture("calls.json"))
        .unwrap()
        .replace("USER_INITIATED", "BUSINESS_INITIATED");
    let t = tr(body.as_bytes());
    assert!(t.planned.is_empty() && t.ignored.len() == 1, "{t:?}");
}

#[test]
fn unknown_fields_and_values_are_accepted_and_listed() {
    let t = tr(&fixture("mixed_unknown.json"));
    assert_eq!(
        t.unknown,
        vec![
            "message_template_components_update".to_string(),
            "security".to_string()
        ]
    );
    // the known change between them is still translated, its unknown JSON
    // field ignored
    assert_eq!(events(&t).len(), 1);
    let t =
        tr(br#"{"object":"page","entry":[{"id":"1","changes":[{"field":"feed","value":{}}]}]}"#);
    assert_eq!(t.unknown, vec!["feed".to_string()]);
    assert!(t.planned.is_empty());
}

#[test]
fn malformed_bodies_are_refused_with_the_reason() {
    let full = fixture("messages_inbound.json");
    let e = translate::parse(&full[..full.len() / 2]).unwrap_err();
    assert!(e.contains("malformed body"), "{e}");
    let e = translate::parse(br#"{"object":"whatsapp_business_account"}"#).unwrap_err();
    assert!(e.contains("entry"), "{e}");
    let env = translate::parse(
        br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[
            {"field":"messages","value":{"messages":[]}}]}]}"#,
    )
    .unwrap();
    let e = translate::translate(&env, &|_| None).unwrap_err();
    assert!(
        e.contains("entry[0].changes[0]") && e.contains("metadata"),
        "{e}"
    );
}

#[test]
fn keys_are_stable_and_distinct() {
    for f in [
        "quality_update.json",
        "capability_update.json",
        "template_status.json",
        "messages_inbound.json",
        "messages_statuses.json",
        "user_preferences.json",
    ] {
        let a = tr(&fixture(f));
        let b = tr(&fixture(f));
        assert_eq!(a, b, "{f}: the same delivery, the same actions and keys");
    }
    // the same event at another time is another event
    let later = String::from_utf8(fixture("quality_update.json"))
        .unwrap()
        .replace("1764547200", "1764633600");
    assert_ne!(
        events(&tr(&fixture("quality_update.json")))[0].0,
        events(&tr(later.as_bytes()))[0].0
    );
    // two changes of one entry (same account, time and field) with
    // different values are two events
    let two = r#"{"object":"whatsapp_business_account","entry":[{"id":"880011223344556","time":1764565200,
      "changes":[
        {"field":"message_template_quality_update","value":{"new_quality_score":"RED","message_template_id":1}},
        {"field":"message_template_quality_update","value":{"new_quality_score":"RED","message_template_id":2}}]}]}"#;
    let ev = events(&tr(two.as_bytes()));
    assert_eq!(ev.len(), 2);
    assert_ne!(ev[0].0, ev[1].0);
    // a failed status after a delivered one is not a repeat
    let k = translate::key(&["st", "1", "wamid.x", "failed", "131049"]);
    assert_ne!(k, translate::key(&["st", "1", "wamid.x", "delivered", ""]));
    assert!(k.starts_with("wh1-") && k.len() == 36);
    // parts are length-prefixed: no two splits of the same text collide
    assert_ne!(translate::key(&["ab", "c"]), translate::key(&["a", "bc"]));
}
