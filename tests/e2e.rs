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
