//! Input at the API's edges: bad fields are INVALID_ARGUMENT naming the field and change nothing, odd but valid input, list ordering, and self-protection's refusals (R8.4).

use admit_proto::v1 as pb;
use tonic::Code;

use crate::support::api::*;
use crate::support::*;

/// Bad input is INVALID_ARGUMENT naming the field, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field_and_changes_nothing() {
    serve(at(1, 8), async |mut c| {
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
    let t0 = at(1, 8);
    serve(t0, async |mut c| {
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
    })
    .await;
}

/// ListNumbers: ties in headroom by number_id as a string; a `+` in a
/// customer id is refused (types.proto: digits only); a bad target names its
/// field by path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_ties_by_number_id_and_ids_by_their_letter() {
    serve(at(1, 8), async |mut c| {
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
    })
    .await;
}

/// The `retry-after-ms` hint of a refusal, in ms.
fn retry_hint(e: &tonic::Status) -> u64 {
    e.metadata()
        .get("retry-after-ms")
        .unwrap_or_else(|| panic!("no retry-after-ms hint: {e:?}"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// R8.4: past the bound on requests in flight (here 1) a request is refused
/// at once, UNAVAILABLE, with a `retry-after-ms` hint of 50 ms. Rounds of
/// concurrent admits are sent until one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r8_4_the_in_flight_bound_refuses_with_a_retry_hint() {
    let one_in_flight = |cfg: &mut admit_server::ServerConfig| cfg.max_in_flight = 1;
    serve_with(120, at(1, 8), one_in_flight, async |mut c| {
        c.register(N, "TIER_10K").await;
        let mut refusals = Vec::new();
        for round in 0..50u64 {
            let tasks: Vec<_> = (0..16u64)
                .map(|i| {
                    let mut c = c.clone();
                    tokio::spawn(async move { c.admit(util(N, round * 100 + i)).await })
                })
                .collect();
            for t in tasks {
                if let Err(e) = t.await.unwrap() {
                    refusals.push(e);
                }
            }
            if !refusals.is_empty() {
                println!(
                    "in-flight bound: {} refused in round {round}",
                    refusals.len()
                );
                break;
            }
        }
        assert!(!refusals.is_empty(), "no request was ever refused");
        for e in &refusals {
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
            assert_eq!(retry_hint(e), 50, "{e:?}");
        }
    })
    .await;
}

/// R8.4: a caller over its request-rate quota (1 request per 100 s, bursts
/// of 1) is refused RESOURCE_EXHAUSTED with a `retry-after-ms` hint of the
/// time until its bucket holds a request again: 100 s after its first
/// request (less the moments between the two calls). Another caller is not
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r8_4_the_caller_quota_refuses_with_the_time_until_its_refill() {
    let quota = admit_server::Quota {
        rate: 0.01,
        burst: 1.0,
    };
    let with_quota = |cfg: &mut admit_server::ServerConfig| cfg.caller_quota = Some(quota);
    serve_with(120, at(1, 8), with_quota, async |c| {
        let as_caller = |caller: &str| {
            let mut r = tonic::Request::new(pb::AdmitRequest {
                send: Some(util(N, 1)),
            });
            r.metadata_mut()
                .insert("x-admit-caller", caller.parse().unwrap());
            r
        };
        let mut a = c.admit.clone();
        a.admit(as_caller("billing"))
            .await
            .expect("within the burst");
        let e = a.admit(as_caller("billing")).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        let hint = retry_hint(&e);
        println!("quota refusal: retry-after-ms {hint}");
        assert!((90_000..=100_000).contains(&hint), "hint {hint} ms");
        a.admit(as_caller("crm"))
            .await
            .expect("another caller's own bucket");
    })
    .await;
}
