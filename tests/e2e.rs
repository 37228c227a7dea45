//! End-to-end tests: a real admit server on loopback, driven over gRPC, on the
//! test clock. Rule numbers refer to SPEC.md.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use admit_proto::v1 as pb;
use support::*;
use tonic::Code;

const N: &str = "100200300";

/// Seed 004, first worked example (R5.3): 1K tier, 500 new BICs on day 1, the
/// 500th at 15:00 -> 10K from day 2 15:00 exactly, still 1K one ms before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_004_upgrade_24h_after_the_500th_on_day_one() {
    bounded(120, async {
        let (srv, mut c) = InProcess::start(at(1, 9)).await;
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
        srv.stop().await;
    })
    .await;
}

/// Seed 004, second worked example (R5.3): 100, 200, 200 on days 1-3, the
/// 500th at 19:00 on day 3 -> 10K from day 4 19:00; day 4's 300 after 19:00
/// count at 10K.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_004_upgrade_24h_after_the_500th_on_day_three() {
    bounded(120, async {
        let (srv, mut c) = InProcess::start(at(1, 9)).await;
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
        c.open_batch(N, 500, 300).await;
        let s = c.status(N).await;
        assert_eq!(
            s.usage.as_ref().unwrap().tier.as_ref().unwrap().limit,
            10_000
        );
        srv.stop().await;
    })
    .await;
}

/// R4.2: at the limit, open service windows and conversations are still
/// allowed, new conversations are denied LIMIT_REACHED with retry_after; the
/// restriction lifts as conversations age out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_at_the_limit_and_lifting_as_conversations_age_out() {
    bounded(120, async {
        let t0 = at(1, 8);
        let (srv, mut c) = InProcess::start(t0).await;
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
        srv.stop().await;
    })
    .await;
}

/// R7.1-R7.2 opt-out, R6.3 paused templates, R3.4 idempotent retries, R3.5
/// release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_out_paused_templates_idempotency_and_release() {
    bounded(120, async {
        let t0 = at(1, 8);
        let (srv, mut c) = InProcess::start(t0).await;
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
        srv.stop().await;
    })
    .await;
}

/// Bad input is INVALID_ARGUMENT naming the field, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field_and_changes_nothing() {
    bounded(120, async {
        let (srv, mut c) = InProcess::start(at(1, 8)).await;
        c.register(N, "TIER_250").await;
        let before = c.status(N).await;

        let mut bad_customer = template(N, 1, "t", pb::TemplateCategory::Utility);
        bad_customer.customer_id = "12".into();
        let mut bad_number = template(N, 1, "t", pb::TemplateCategory::Utility);
        bad_number.number_id = "12ab".into();
        let mut no_category = template(N, 1, "t", pb::TemplateCategory::Utility);
        if let Some(pb::send::Kind::Template(t)) = &mut no_category.kind {
            t.category = 0;
        }
        let mut no_kind = template(N, 1, "t", pb::TemplateCategory::Utility);
        no_kind.kind = None;
        let long_key = keyed(
            template(N, 1, "t", pb::TemplateCategory::Utility),
            &"k".repeat(129),
        );
        for (send, field) in [
            (bad_customer.clone(), "customer_id"),
            (bad_number, "number_id"),
            (no_category, "template.category"),
            (no_kind, "kind"),
            (long_key, "idempotency_key"),
        ] {
            let e = c.admit(send).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{field}");
            assert!(e.message().contains(field), "{field}: {}", e.message());
        }
        let e = c
            .admit
            .admit(pb::AdmitRequest { send: None })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);

        // batches: the size is checked whole, items one by one
        let e = c
            .admit
            .admit_batch(pb::AdmitBatchRequest { sends: vec![] })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("sends"));
        let r = c
            .admit
            .admit_batch(pb::AdmitBatchRequest {
                sends: vec![
                    template(N, 1, "t", pb::TemplateCategory::Utility),
                    bad_customer,
                ],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(matches!(
            r.results[0].result,
            Some(pb::admit_batch_result::Result::Decision(_))
        ));
        match &r.results[1].result {
            Some(pb::admit_batch_result::Result::Error(e)) => {
                assert_eq!(e.code, Code::InvalidArgument as i32);
                assert_eq!(e.field, "customer_id");
            }
            other => panic!("{other:?}"),
        }

        // admin calls
        let e = c
            .admin
            .register_number(pb::RegisterNumberRequest {
                number_id: N.into(),
                portfolio_id: "waba-1".into(),
                initial_tier: Some(pb::TierValue {
                    tier: Some(pb::tier_value::Tier::TierName("TIER_3K".into())),
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("initial_tier"), "{}", e.message());
        let e = c
            .admin
            .apply_event(pb::ApplyEventRequest {
                event: Some(pb::apply_event_request::Event::NumberQuality(
                    pb::NumberQualityChanged {
                        number_id: N.into(),
                        quality: 0,
                    },
                )),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("number_quality.quality"));
        let e = c
            .admit
            .record_inbound(pb::RecordInboundRequest {
                number_id: "999".into(),
                customer_id: cust(1),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let e = c
            .clock
            .set_clock(pb::SetClockRequest { now_unix_ms: 5 })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "time never goes back");

        // only the one valid batch item changed anything
        let after = c.status(N).await;
        assert_eq!(after.usage.as_ref().unwrap().used, 1);
        let mut expect = before.clone();
        expect.usage.as_mut().unwrap().used = 1;
        expect.usage.as_mut().unwrap().headroom -= 1;
        // the counted conversation ends in 24 h: that is the next release
        let next = after.usage.as_ref().unwrap().next_release_unix_ms;
        assert!(next.is_some());
        expect.usage.as_mut().unwrap().next_release_unix_ms = next;
        let mut after_cmp = after.clone();
        after_cmp.unique_customers = expect.unique_customers;
        after_cmp.upgrade = expect.upgrade.clone();
        assert_eq!(after_cmp, expect);
        // unknown numbers are a decision, not an error
        let d = c
            .admit(template("777", 1, "t", pb::TemplateCategory::Utility))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::UnknownNumber);
        srv.stop().await;
    })
    .await;
}

/// R3.4 under concurrency: 32 callers race for one number at limit 250 with
/// distinct customers; exactly 250 are admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_admit_exactly_the_limit() {
    bounded(180, async {
        let (srv, mut c) = InProcess::start(at(1, 8)).await;
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
        srv.stop().await;
    })
    .await;
}

/// kill -9 during a stream of admits, restart on the same data dir: every
/// acknowledged admission is still counted, retries return the same ids,
/// nothing is admitted twice; a clean restart keeps the status identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_admission() {
    let bin = tokio::task::spawn_blocking(admitd_path).await.unwrap();
    bounded(240, async move {
        let dir = tempfile::tempdir().unwrap();
        let t0 = at(1, 8);
        let d = Daemon::start(&bin, dir.path(), t0);
        let mut c = Clients::connect(d.addr).await;
        c.register(N, "TIER_10K").await;

        // 4 writers stream keyed admits of distinct customers
        let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let sent: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let mut c = c.clone();
            let acked = acked.clone();
            let sent = sent.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..500u64 {
                    let customer = w * 1_000 + i;
                    sent.lock().unwrap().insert(customer);
                    let s = keyed(
                        template(N, customer, "t", pb::TemplateCategory::Utility),
                        &format!("k-{customer}"),
                    );
                    match c.admit(s).await {
                        Ok(d) => {
                            assert_eq!(d.reason(), pb::Reason::NewConversation);
                            acked
                                .lock()
                                .unwrap()
                                .insert(format!("k-{customer}"), d.admission_id);
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        // kill once a good number are acknowledged
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            if acked.lock().unwrap().len() >= 150 {
                break;
            }
        }
        d.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        let sent = sent.lock().unwrap().clone();
        assert!(acked.len() >= 150);

        let d = Daemon::start(&bin, dir.path(), t0);
        let mut c = Clients::connect(d.addr).await;
        let used = c.used(N).await as usize;
        assert!(
            used >= acked.len(),
            "used {used} < acknowledged {}",
            acked.len()
        );
        assert!(used <= sent.len(), "used {used} > sent {}", sent.len());
        // acknowledged keys replay their first decision
        for (key, id) in &acked {
            let customer: u64 = key.trim_start_matches("k-").parse().unwrap();
            let s = keyed(
                template(N, customer, "t", pb::TemplateCategory::Utility),
                key,
            );
            let d = c.admit(s).await.unwrap();
            assert_eq!(&d.admission_id, id, "{key}");
            assert!(d.replayed);
        }
        assert_eq!(c.used(N).await as usize, used, "replays count nothing");
        // the unacknowledged ones: committed before the crash or not, each is
        // counted exactly once after its retry
        let mut ids: BTreeSet<String> = acked.values().cloned().collect();
        for customer in &sent {
            let key = format!("k-{customer}");
            if acked.contains_key(&key) {
                continue;
            }
            let s = keyed(
                template(N, *customer, "t", pb::TemplateCategory::Utility),
                &key,
            );
            let d = c.admit(s).await.unwrap();
            assert_eq!(d.reason(), pb::Reason::NewConversation);
            assert!(ids.insert(d.admission_id), "admitted twice");
        }
        assert_eq!(c.used(N).await as usize, sent.len());
        assert_eq!(ids.len(), sent.len());

        // clean shutdown and restart: identical status
        let before = c.status(N).await;
        drop(c);
        d.terminate();
        let d = Daemon::start(&bin, dir.path(), t0);
        let mut c = Clients::connect(d.addr).await;
        assert_eq!(c.status(N).await, before);
        drop(c);
        d.terminate();
    })
    .await;
}

fn batch_decisions(r: pb::AdmitBatchResponse) -> Vec<pb::Decision> {
    r.results
        .into_iter()
        .map(|x| match x.result.unwrap() {
            pb::admit_batch_result::Result::Decision(d) => d,
            pb::admit_batch_result::Result::Error(e) => panic!("item {}: {e:?}", x.index),
        })
        .collect()
}

/// R3.4 on the fast path: a keyed send decided inside a service window is
/// recorded under its key, so a retry after the window closed gets the same
/// decision, not a new counted conversation. AdmitBatch decides its items as
/// consecutive Admit calls would, also when an item answered from memory
/// follows one that opens a conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_window_sends_and_batch_order() {
    bounded(120, async {
        let t0 = at(1, 8);
        let (srv, mut c) = InProcess::start(t0).await;
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
        srv.stop().await;
    })
    .await;
}

/// R8 through the server, and R3.2's order: the pair rate (1 per 6 s, bursts
/// of 45) and the number's throughput deny with retry_after at their edges;
/// a send that an earlier check denies (opt-out) reports that check and takes
/// no cell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_their_place_in_the_order() {
    bounded(120, async {
        let t0 = at(1, 8);
        let (srv, mut c) = InProcess::start(t0).await;
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
        srv.stop().await;
    })
    .await;
}

// ---- SPEC section 9 through AdmitSend.ReportOutcome --------------------------------

/// A second number, outside the one under test.
const OTHER: &str = "100200301";

fn outcome(
    number: &str,
    customer: u64,
    status: pb::DeliveryStatus,
    code: Option<u32>,
) -> pb::ReportOutcomeRequest {
    pb::ReportOutcomeRequest {
        number_id: number.into(),
        customer_id: cust(customer),
        status: status as i32,
        meta_error_code: code,
        ..Default::default()
    }
}

/// A send that failed with Meta error `code`.
fn failed(number: &str, customer: u64, code: u32) -> pb::ReportOutcomeRequest {
    outcome(number, customer, pb::DeliveryStatus::Failed, Some(code))
}

async fn report(c: &mut Clients, r: pb::ReportOutcomeRequest) -> pb::ReportOutcomeResponse {
    c.admit
        .report_outcome(r)
        .await
        .expect("report outcome")
        .into_inner()
}

fn effects(r: &pb::ReportOutcomeResponse) -> Vec<pb::OutcomeEffect> {
    r.effects
        .iter()
        .map(|e| pb::OutcomeEffect::try_from(*e).expect("a known effect"))
        .collect()
}

/// The decision for `send`, as (reason, retry_after_ms, retry_at_unix_ms).
async fn decide(c: &mut Clients, send: pb::Send) -> (pb::Reason, Option<i64>, Option<i64>) {
    let d = c.admit(send).await.expect("decided");
    (d.reason(), d.retry_after_ms, d.retry_at_unix_ms)
}

fn mkt(number: &str, customer: u64) -> pb::Send {
    template(number, customer, "t-mkt", pb::TemplateCategory::Marketing)
}

fn util(number: &str, customer: u64) -> pb::Send {
    template(number, customer, "t-util", pb::TemplateCategory::Utility)
}

/// 131056: the pair backs off 1 s, then 4 s (4^x); sends to the pair are
/// PAIR_RATE_LIMITED until exactly the hold's end, other customers are not
/// held; a delivered send resets the growth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_9_131056_pair_back_off_grows_4x() {
    bounded(120, async {
        let t0 = at(1, 8);
        let (srv, mut c) = InProcess::start(t0).await;
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
        srv.stop().await;
    })
    .await;
}

/// 130429: the number backs off (1 s, then 4 s) and its end comes back as
/// hold_until; every send of the number is THROUGHPUT_LIMITED until then,
/// another number is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_9_130429_number_back_off_returns_its_end() {
    bounded(120, async {
        let t0 = at(1, 8);
        let (srv, mut c) = InProcess::start(t0).await;
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
        srv.stop().await;
    })
    .await;
}

/// 131048: new conversations of the number are held for the cool-down (6 h
/// by default); sends inside a service window or an open conversation are
/// still allowed; at exactly the end a new conversation opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_9_131048_holds_new_conversations_for_the_cool_down() {
    bounded(120, async {
        let t0 = at(1, 8);
        let (srv, mut c) = InProcess::start(t0).await;
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
        srv.stop().await;
    })
    .await;
}

/// 131049: no marketing to that customer for 24 h (denied at 24 h - 1 ms,
/// allowed at 24 h), utility still allowed, other customers unaffected.
/// 131050: the customer is opted out: marketing is OPTED_OUT without a retry,
/// also inside a service window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_9_131049_marketing_hold_and_131050_opt_out() {
    bounded(120, async {
        let t0 = at(1, 8);
        let (srv, mut c) = InProcess::start(t0).await;
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
        srv.stop().await;
    })
    .await;
}

/// 131047: the customer service window is closed: a free-form send afterwards
/// is OUTSIDE_SERVICE_WINDOW and a template opens (and counts) a conversation;
/// another customer's window stays open; a new inbound message reopens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_9_131047_closes_the_service_window() {
    bounded(120, async {
        let t0 = at(1, 8);
        let (srv, mut c) = InProcess::start(t0).await;
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
        srv.stop().await;
    })
    .await;
}

/// 132015 reported three times (three sends in flight) is one pause of the
/// first length: TEMPLATE_PAUSED with retry_after 3 h, allowed at exactly
/// 3 h. 132016 disables the template: TEMPLATE_DISABLED without a retry, and
/// a late 132015 does not enable it again. Neither uses up limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_9_132015_pauses_once_and_132016_disables() {
    bounded(120, async {
        let t0 = at(1, 8);
        let (srv, mut c) = InProcess::start(t0).await;
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
        srv.stop().await;
    })
    .await;
}

/// R3.5 via ReportOutcome: a failure before delivery releases the admission
/// (used drops by one) once, however often it is reported; a delivered send
/// keeps its count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_9_a_failure_before_delivery_releases_the_admission() {
    bounded(120, async {
        let t0 = at(1, 8);
        let (srv, mut c) = InProcess::start(t0).await;
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
        srv.stop().await;
    })
    .await;
}

async fn release(c: &mut Clients, id: &str) -> pb::ReleaseResponse {
    c.admit
        .release(pb::ReleaseRequest {
            admission_id: id.into(),
        })
        .await
        .expect("release")
        .into_inner()
}

/// R3.5 in a portfolio scope (meta): the second number's conversation with a
/// customer the first already counts was never counted, so releasing it is
/// released=false and used stays; releasing the first then un-counts the
/// customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_5_release_in_a_portfolio_is_true_only_when_it_uncounts() {
    bounded(120, async {
        let (srv, mut c) = InProcess::start(at(1, 8)).await;
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
        srv.stop().await;
    })
    .await;
}

// ---- SPEC section 10 tier values through Admin.ApplyEvent ---------------------------

fn number_target(n: &str) -> pb::Target {
    pb::Target {
        target: Some(pb::target::Target::NumberId(n.into())),
    }
}

fn portfolio_target(p: &str) -> pb::Target {
    pb::Target {
        target: Some(pb::target::Target::PortfolioId(p.into())),
    }
}

fn by_name(s: &str) -> pb::tier_value::Tier {
    pb::tier_value::Tier::TierName(s.into())
}

fn by_value(v: i64) -> pb::tier_value::Tier {
    pb::tier_value::Tier::TierValue(v)
}

async fn set_tier(
    c: &mut Clients,
    target: pb::Target,
    tier: pb::tier_value::Tier,
    key: &str,
) -> Result<pb::ApplyEventResponse, tonic::Status> {
    c.admin
        .apply_event(pb::ApplyEventRequest {
            event_key: key.into(),
            event: Some(pb::apply_event_request::Event::Tier(pb::TierChanged {
                target: Some(target),
                tier: Some(pb::TierValue { tier: Some(tier) }),
                ..Default::default()
            })),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// The tier as status shows it: (name, limit, unlimited).
async fn tier_of(c: &mut Clients, n: &str) -> (String, u32, bool) {
    let t = c.status(n).await.usage.unwrap().tier.unwrap();
    (t.name, t.limit, t.unlimited)
}

/// Section 10: every tier name and integer form sets the limit; an unknown
/// value keeps it (the call succeeds with applied=false and the reason); so
/// does TIER_NOT_SET. The limit set is the one admission enforces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_10_tier_values_through_apply_event() {
    bounded(120, async {
        let (srv, mut c) = InProcess::start(at(1, 8)).await;
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
        srv.stop().await;
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
    bounded(120, async {
        let (srv, mut c) = InProcess::start(at(1, 8)).await;
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
        let router = admit_server::routing::Router::new(8);
        let shards: BTreeSet<u32> = numbers
            .iter()
            .map(|n| {
                let id = admit_core::NumberId::parse("number", n).unwrap();
                router.shard_of(&admit_core::ScopeKey::Number(id))
            })
            .collect();
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
        srv.stop().await;
    })
    .await;
}

/// Bad input changes nothing and crashes nothing: an absurd `grpc-timeout`
/// gets the default deadline; a test clock step past the end of time is
/// INVALID_ARGUMENT (`by_ms`) and leaves the clock; an error code on a
/// status other than FAILED is INVALID_ARGUMENT (`meta_error_code`) and holds
/// nothing (section 9); an inbound text of 4,096 characters in any script
/// opens the service window (R2.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_input_at_the_edges_of_the_api() {
    bounded(120, async {
        let t0 = at(1, 8);
        let (srv, mut c) = InProcess::start(t0).await;
        c.register(N, "TIER_250").await;

        let mut req = tonic::Request::new(pb::AdmitRequest {
            send: Some(template(N, 1, "t-util", pb::TemplateCategory::Utility)),
        });
        req.metadata_mut()
            .insert("grpc-timeout", "18446744073709551615S".parse().unwrap());
        let d = c
            .admit
            .admit(req)
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::NewConversation);

        let e = c
            .clock
            .advance_clock(pb::AdvanceClockRequest { by_ms: i64::MAX })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("by_ms"), "{}", e.message());
        let now = c
            .clock
            .get_clock(pb::GetClockRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(now.now_unix_ms, t0, "the refused step changed nothing");

        let e = c
            .admit
            .report_outcome(pb::ReportOutcomeRequest {
                number_id: N.into(),
                customer_id: cust(1),
                status: pb::DeliveryStatus::Delivered as i32,
                meta_error_code: Some(131048),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("meta_error_code"), "{}", e.message());
        assert_eq!(c.status(N).await.spam_cooldown_until_unix_ms, None);
        let d = c
            .admit(template(N, 2, "t-util", pb::TemplateCategory::Utility))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::NewConversation, "no cool-down");

        let long: String = "д".repeat(4_096);
        let r = c.inbound(N, &cust(3), Some(&long)).await;
        assert_eq!(r.window_end_unix_ms, t0 + DAY);
        assert_eq!(r.opt_change(), pb::OptChange::None);
        let d = c.admit(free_form(N, 3)).await.unwrap();
        assert_eq!(d.reason(), pb::Reason::ServiceWindow);
        let e = c
            .admit
            .record_inbound(pb::RecordInboundRequest {
                number_id: N.into(),
                customer_id: cust(4),
                text: Some("д".repeat(4_097)),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("text"), "{}", e.message());

        // delivery keys are per kind: an outcome may reuse an inbound's key
        let r = c
            .admit
            .record_inbound(pb::RecordInboundRequest {
                number_id: N.into(),
                customer_id: cust(5),
                event_key: "wamid.same".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!r.duplicate);
        let o = c
            .admit
            .report_outcome(pb::ReportOutcomeRequest {
                number_id: N.into(),
                customer_id: cust(5),
                status: pb::DeliveryStatus::Failed as i32,
                meta_error_code: Some(131049),
                event_key: "wamid.same".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!o.duplicate, "an outcome is not a repeat of an inbound");
        let d = c
            .admit(template(N, 5, "t-mkt", pb::TemplateCategory::Marketing))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::MarketingHold);
        srv.stop().await;
    })
    .await;
}

// ---- SetPolicy, portfolios, registration and status at their edges ----

async fn get_policy(c: &mut Clients, name: &str) -> pb::Policy {
    c.admin
        .get_policy(pb::GetPolicyRequest { name: name.into() })
        .await
        .expect("get policy")
        .into_inner()
        .policy
        .expect("a policy")
}

async fn set_policy(
    c: &mut Clients,
    policy: pb::Policy,
) -> Result<pb::SetPolicyResponse, tonic::Status> {
    c.admin
        .set_policy(pb::SetPolicyRequest {
            policy: Some(policy),
        })
        .await
        .map(|r| r.into_inner())
}

async fn portfolio_status(c: &mut Clients, p: &str) -> Result<pb::StatusView, tonic::Status> {
    c.admin
        .get_status(pb::GetStatusRequest {
            target: Some(portfolio_target(p)),
        })
        .await
        .map(|r| r.into_inner().status.expect("a status"))
}

/// The shard (of 8, as InProcess runs) of a seeds number's own scope.
fn shard_of_number(n: &str) -> u32 {
    let id = admit_core::NumberId::parse("number", n).unwrap();
    admit_server::routing::Router::new(8).shard_of(&admit_core::ScopeKey::Number(id))
}

/// `k` numbers `<prefix>00`, `<prefix>01`, ... whose scopes live on `k`
/// different shards.
fn numbers_on_distinct_shards(prefix: &str, k: usize) -> Vec<String> {
    let mut seen = BTreeSet::new();
    (0..100)
        .map(|i| format!("{prefix}{i:02}"))
        .filter(|n| seen.insert(shard_of_number(n)))
        .take(k)
        .collect()
}

async fn restrict_portfolio(
    c: &mut Clients,
    p: &str,
    lifted: bool,
) -> Result<pb::ApplyEventResponse, tonic::Status> {
    c.admin
        .apply_event(pb::ApplyEventRequest {
            event: Some(pb::apply_event_request::Event::AccountRestriction(
                pb::AccountRestriction {
                    target: Some(portfolio_target(p)),
                    lifted,
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// A SetPolicy is applied on every shard or on none: changing the scope of an
/// existing profile is FAILED_PRECONDITION, whichever shards hold its numbers
/// (none included), and no shard keeps the change; other fields change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_policy_keeps_a_profiles_scope_on_every_shard() {
    bounded(120, async {
        let (srv, mut c) = InProcess::start(at(1, 8)).await;
        let mut own = get_policy(&mut c, "seeds").await;
        own.name = "own".into();
        assert!(set_policy(&mut c, own.clone()).await.unwrap().created);
        // its number lives on a shard other than 0, the one GetPolicy reads here
        let n = (0..100)
            .map(|i| format!("1002004{i:02}"))
            .find(|n| shard_of_number(n) != 0)
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
        srv.stop().await;
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
    bounded(120, async {
        let (srv, mut c) = InProcess::start(at(1, 8)).await;
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
        srv.stop().await;
    })
    .await;
}

/// Section 10: a restriction of a portfolio no shard knows is NOT_FOUND and
/// creates nothing; one of a known portfolio reaches its numbers on every
/// shard, and a number that joins the portfolio later; lifting it lifts it
/// for all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_10_a_portfolio_restriction_needs_a_known_portfolio() {
    bounded(120, async {
        let (srv, mut c) = InProcess::start(at(1, 8)).await;
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
        srv.stop().await;
    })
    .await;
}

/// admin.proto: a registered number keeps its portfolio under every profile
/// (the seeds one too); registering it again with its own portfolio updates
/// it and keeps its count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_number_keeps_its_portfolio() {
    bounded(120, async {
        let (srv, mut c) = InProcess::start(at(1, 8)).await;
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
        srv.stop().await;
    })
    .await;
}

/// Section 11 for a seeds portfolio (its numbers' limits added up): unique
/// customers as labelled estimates, restricted_until while a number's limit
/// is used up, the lowest known quality (UNKNOWN hides nothing), and no
/// limit shown while it has no number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn section_11_status_of_a_seeds_portfolio() {
    bounded(120, async {
        let t0 = at(1, 8);
        let (srv, mut c) = InProcess::start(t0).await;
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
        srv.stop().await;
    })
    .await;
}

/// ListNumbers: ties in headroom by number_id as a string; a `+` in a
/// customer id is refused (types.proto: digits only); a bad target names its
/// field by path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_ties_by_number_id_and_ids_by_their_letter() {
    bounded(120, async {
        let (srv, mut c) = InProcess::start(at(1, 8)).await;
        for n in ["9", "10", "007", "7"] {
            c.register(n, "TIER_250").await;
        }
        let ids: Vec<String> = c
            .admin
            .list_numbers(pb::ListNumbersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .numbers
            .into_iter()
            .map(|v| v.number_id)
            .collect();
        assert_eq!(ids, ["007", "10", "7", "9"]);

        let mut plus = free_form("9", 1);
        plus.customer_id = format!("+{}", cust(1));
        let e = c.admit(plus).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("customer_id"), "{}", e.message());
        let e = c
            .admin
            .get_status(pb::GetStatusRequest {
                target: Some(number_target("x1")),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("target.number_id"), "{}", e.message());
        srv.stop().await;
    })
    .await;
}
