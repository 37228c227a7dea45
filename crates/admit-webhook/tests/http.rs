//! The receiver over a real loopback listener, in front of a real admit node
//! (in process, test clock): the handshake, signatures, size limits,
//! truncated and malformed bodies, every field's effect on admit's state,
//! repeated deliveries (also after a restart), unknown numbers and fields.

use std::net::SocketAddr;
use std::time::Duration;

mod support;

use admit_proto::v1 as pb;
use admit_server::{InProcess, Running};
use admit_webhook::{Secret, Webhook};
use support::*;

/// A node, its in-process API and the receiver in front of it.
struct Node {
    running: Running,
    api: InProcess,
    hook: Webhook,
}

impl Node {
    async fn start(dir: &std::path::Path) -> Node {
        Node::start_with(dir, false).await
    }

    /// [`Node::start`], with the journal synced to disk or not.
    async fn start_with(dir: &std::path::Path, fsync: bool) -> Node {
        let mut cfg = admit_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir);
        cfg.shards = 4;
        cfg.test_clock = true;
        cfg.test_clock_start = Some(admit_core::Ts(START_MS));
        cfg.fsync = fsync;
        cfg.tick_interval = Duration::from_secs(3_600);
        let running = admit_server::start(cfg).await.expect("node starts");
        let api = running.in_process();
        let hook = admit_webhook::serve(
            hook_config(vec![(DISPLAY.into(), NUMBER.into())]),
            api.clone(),
        )
        .await
        .expect("receiver starts");
        Node { running, api, hook }
    }

    /// Starts and registers the number of the fixtures (seeds profile, in
    /// the fixtures' portfolio, at 1K).
    async fn with_number(dir: &std::path::Path) -> Node {
        Node::register(Node::start(dir).await).await
    }

    async fn register(n: Node) -> Node {
        n.api
            .register_number(pb::RegisterNumberRequest {
                number_id: NUMBER.into(),
                portfolio_id: WABA.into(),
                initial_tier: Some(pb::TierValue {
                    tier: Some(pb::tier_value::Tier::TierName("TIER_1K".into())),
                }),
                display_phone_number: DISPLAY.into(),
                ..Default::default()
            })
            .await
            .expect("registered");
        n
    }

    /// A node with the number, on a data dir of its own (kept while the
    /// directory lives).
    async fn fresh() -> (tempfile::TempDir, Node) {
        let dir = tempfile::tempdir().unwrap();
        let n = Node::with_number(dir.path()).await;
        (dir, n)
    }

    fn addr(&self) -> SocketAddr {
        self.hook.local_addr()
    }

    async fn stop(self) {
        self.hook.shutdown().await;
        self.running.shutdown().await.expect("clean shutdown");
    }

    async fn status(&self) -> pb::StatusView {
        self.api
            .get_status(pb::GetStatusRequest {
                target: Some(pb::Target {
                    target: Some(pb::target::Target::NumberId(NUMBER.into())),
                }),
            })
            .await
            .expect("status")
            .status
            .expect("a view")
    }

    async fn admit(&self, customer: &str, kind: pb::send::Kind) -> pb::Decision {
        self.api
            .admit(pb::AdmitRequest {
                send: Some(pb::Send {
                    number_id: NUMBER.into(),
                    customer_id: customer.into(),
                    kind: Some(kind),
                    idempotency_key: String::new(),
                }),
            })
            .await
            .expect("decided")
            .decision
            .expect("a decision")
    }

    async fn marketing(&self, customer: &str, template: &str) -> pb::Decision {
        self.admit(
            customer,
            pb::send::Kind::Template(pb::Template {
                template_id: template.into(),
                category: pb::TemplateCategory::Marketing as i32,
                ..Default::default()
            }),
        )
        .await
    }

    async fn free_form(&self, customer: &str) -> pb::Decision {
        self.admit(customer, pb::send::Kind::FreeForm(pb::FreeForm {}))
            .await
    }
}

#[tokio::test]
async fn subscription_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(dir.path()).await;
    let ok = get(
        n.addr(),
        &format!("hub.mode=subscribe&hub.verify_token={TOKEN}&hub.challenge=1158201444"),
    )
    .await;
    assert_eq!((ok.code, ok.body.as_str()), (200, "1158201444"));
    for q in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=subscribe&hub.verify_token=test-verify-toke&hub.challenge=1",
        "hub.mode=subscribe&hub.challenge=1",
        &format!("hub.mode=unsubscribe&hub.verify_token={TOKEN}&hub.challenge=1"),
        &format!("hub.verify_token={TOKEN}&hub.challenge=1"),
        "",
    ] {
        let a = get(n.addr(), q).await;
        assert_eq!(a.code, 403, "{q}: {a:?}");
        assert!(
            !a.body.contains('1') || q.is_empty(),
            "{q}: no challenge echoed"
        );
    }
    n.stop().await;
}

#[tokio::test]
async fn signatures_are_checked_before_anything_changes() {
    let (_dir, n) = Node::fresh().await;
    let body = fixture("user_preferences.json");
    let good = Secret::new(SECRET).sign(&body);
    let mut tampered = body.clone();
    let at = text(&body).find("stop").unwrap();
    tampered[at..at + 4].copy_from_slice(b"STOP");
    let cases: Vec<(&str, Option<String>, &[u8])> = vec![
        ("missing", None, &body),
        (
            "another secret",
            Some(Secret::new("not-the-secret").sign(&body)),
            &body,
        ),
        ("not hex", Some("sha256=zz".repeat(8)), &body),
        ("sha1", Some(good.replace("sha256=", "sha1=")), &body),
        ("empty", Some(String::new()), &body),
        ("the body changed", Some(good.clone()), &tampered),
    ];
    for (what, sig, b) in cases {
        let a = exchange(n.addr(), post_head(b.len(), sig.as_deref()), b).await;
        assert_eq!(a.code, 401, "{what}: {a:?}");
    }
    assert_eq!(n.status().await.opt_out_count, 0, "nothing applied");
    let a = deliver(n.addr(), &body).await;
    assert_eq!(a.count("applied"), 1, "{a:?}");
    assert_eq!(n.status().await.opt_out_count, 1);
    n.stop().await;
}

#[tokio::test]
async fn oversized_truncated_and_malformed_bodies_change_nothing() {
    let (_dir, n) = Node::fresh().await;
    let stop = fixture("user_preferences.json");

    // over the limit: declared, and sent chunked without a length
    let mut big = text(&stop);
    big.insert_str(
        big.len() - 2,
        &format!(",\"padding\":\"{}\"", "x".repeat(MAX_BODY)),
    );
    let a = deliver(n.addr(), big.as_bytes()).await;
    assert_eq!(a.code, 413, "{a:?}");
    let sig = Secret::new(SECRET).sign(big.as_bytes());
    let chunked_head = format!(
        "POST /webhook HTTP/1.1\r\nHost: admit.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nX-Hub-Signature-256: {sig}\r\n\r\n"
    );
    let mut chunked = Vec::new();
    for part in big.as_bytes().chunks(4096) {
        chunked.extend(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend(part);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let a = exchange(n.addr(), chunked_head, &chunked).await;
    assert_eq!(a.code, 413, "{a:?}");
    // exactly at the limit is read (and refused for its signature only)
    let at_limit = vec![b' '; MAX_BODY];
    let a = exchange(n.addr(), post_head(MAX_BODY, Some("sha256=00")), &at_limit).await;
    assert_eq!(a.code, 401, "{a:?}");

    // truncated in transit: fewer bytes than declared
    let sig = Secret::new(SECRET).sign(&stop);
    let a = exchange_closing(
        n.addr(),
        post_head(stop.len(), Some(&sig)),
        &stop[..stop.len() / 2],
        true,
    )
    .await;
    assert_eq!(a.code, 400, "{a:?}");
    assert!(a.body.contains("could not be read"), "{a:?}");
    // truncated before signing: signed, but not JSON
    let half = &stop[..stop.len() / 2];
    let a = deliver(n.addr(), half).await;
    assert_eq!(a.code, 400, "{a:?}");
    assert!(a.body.contains("malformed body"), "{a:?}");
    // JSON, but a known field without Meta's shape: nothing of the delivery
    // is applied, its good change included
    let bad = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"{WABA}","changes":[
            {{"field":"user_preferences","value":{}}},
            {{"field":"messages","value":{{"messages":[]}}}}]}}]}}"#,
        serde_json::from_slice::<serde_json::Value>(&stop).unwrap()["entry"][0]["changes"][0]
            ["value"]
    );
    let a = deliver(n.addr(), bad.as_bytes()).await;
    assert_eq!(a.code, 400, "{a:?}");
    assert!(a.body.contains("entry[0].changes[1]"), "{a:?}");
    assert_eq!(n.status().await.opt_out_count, 0, "nothing applied");
    n.stop().await;
}

#[tokio::test]
async fn platform_fields_change_admits_state() {
    let (_dir, n) = Node::fresh().await;
    let limit = |s: &pb::StatusView| s.usage.as_ref().unwrap().tier.as_ref().unwrap().limit;
    assert_eq!(limit(&n.status().await), 1_000);

    let a = deliver(n.addr(), &fixture("quality_update.json")).await;
    assert_eq!(a.count("applied"), 1);
    assert_eq!(limit(&n.status().await), 10_000);

    let a = deliver(n.addr(), &fixture("quality_flagged.json")).await;
    assert_eq!(a.count("applied"), 2, "{a:?}");
    assert_eq!(n.status().await.number_status(), pb::NumberStatus::Flagged);

    let a = deliver(n.addr(), &fixture("capability_update.json")).await;
    assert_eq!(a.count("applied"), 1, "{a:?}");
    assert_eq!(limit(&n.status().await), 100_000);

    let a = deliver(n.addr(), &fixture("quality_throughput.json")).await;
    assert_eq!(a.count("applied"), 2, "{a:?}");
    let s = n.status().await;
    assert_eq!(s.throughput_mps, 1_000);
    assert_eq!(limit(&s), 2_000, "the portfolio's TIER_2K on its number");

    let a = deliver(n.addr(), &fixture("template_quality.json")).await;
    assert_eq!(a.count("applied"), 1, "{a:?}");
    let a = deliver(n.addr(), &fixture("template_status.json")).await;
    assert_eq!(a.count("applied"), 1, "{a:?}");
    let d = n.marketing("4915100000001", "771122334455").await;
    assert_eq!(d.reason(), pb::Reason::TemplatePaused, "{d:?}");

    let a = deliver(n.addr(), &fixture("account_restriction.json")).await;
    assert_eq!(a.count("applied"), 1, "{a:?}");
    let s = n.status().await;
    assert!(s.account_restricted);
    assert_eq!(s.account_restricted_until_unix_ms, Some(1_764_741_600_000));
    let d = n.marketing("4915100000001", "another-template").await;
    assert_eq!(d.reason(), pb::Reason::NumberRestricted, "{d:?}");
    n.stop().await;
}

#[tokio::test]
async fn messages_calls_and_preferences_open_windows_and_opt_out() {
    let (_dir, n) = Node::fresh().await;
    // before: no window, nobody opted out
    assert_eq!(
        n.free_form("447700900123").await.reason(),
        pb::Reason::OutsideServiceWindow
    );
    let a = deliver(n.addr(), &fixture("messages_inbound.json")).await;
    assert_eq!(a.count("applied"), 3, "{a:?}");
    assert_eq!(
        n.free_form("447700900123").await.reason(),
        pb::Reason::ServiceWindow
    );
    // the STOP button opted its customer out (R7.1, R7.2)
    assert_eq!(
        n.marketing("4915112345678", "t").await.reason(),
        pb::Reason::OptedOut
    );
    let a = deliver(n.addr(), &fixture("calls.json")).await;
    assert_eq!(a.count("applied"), 1, "{a:?}");
    assert_eq!(
        n.free_form("447700900456").await.reason(),
        pb::Reason::ServiceWindow
    );
    let a = deliver(n.addr(), &fixture("user_preferences.json")).await;
    assert_eq!(a.count("applied"), 1, "{a:?}");
    assert_eq!(n.status().await.opt_out_count, 1, "the same customer");
    n.stop().await;
}

/// The statuses fixture with the admission id of a real send.
fn statuses_naming(admission: &str) -> Vec<u8> {
    text(&fixture("messages_statuses.json"))
        .replace("n109900112233445-1", admission)
        .into_bytes()
}

#[tokio::test]
async fn a_failed_status_releases_its_admission_and_holds_marketing() {
    let (_dir, n) = Node::fresh().await;
    let d = n.marketing("4915187654321", "t").await;
    assert_eq!(d.reason(), pb::Reason::NewConversation, "{d:?}");
    let used = |s: &pb::StatusView| s.usage.as_ref().unwrap().used;
    assert_eq!(used(&n.status().await), 1);
    let a = deliver(n.addr(), &statuses_naming(&d.admission_id)).await;
    assert_eq!(a.count("applied"), 2, "{a:?}");
    // released (R3.5), and 131049 holds marketing to the customer (section 9)
    assert_eq!(used(&n.status().await), 0);
    assert_eq!(
        n.marketing("4915187654321", "t").await.reason(),
        pb::Reason::MarketingHold
    );
    n.stop().await;
}

/// A failed status that names only Meta's message id releases the admission
/// the sender reported that id under (`ReportOutcome.message_id` with SENT);
/// a delivered one keeps its admission counted, also when a failure of the
/// same message follows.
#[tokio::test]
async fn a_failed_status_naming_the_wamid_releases_its_admission() {
    const FAILED: &str = "wamid.HBgNNDkxNTE4NzY1NDMyMRUCABEYEkQ3RTg5MEFCQ0RFRjAxMjM0AA";
    const DELIVERED: &str = "wamid.HBgMNDQ3NzAwOTAwMTIzFQIAERgSQzVGNjc4OUFCQ0RFRjAxMjMA";
    let (_dir, n) = Node::fresh().await;
    let headroom = |s: &pb::StatusView| s.usage.as_ref().unwrap().headroom;
    for (customer, wamid) in [("4915187654321", FAILED), ("447700900123", DELIVERED)] {
        let d = n.marketing(customer, "t").await;
        assert_eq!(d.reason(), pb::Reason::NewConversation, "{d:?}");
        let r = n
            .api
            .report_outcome(pb::ReportOutcomeRequest {
                number_id: NUMBER.into(),
                customer_id: customer.into(),
                admission_id: d.admission_id.clone(),
                status: pb::DeliveryStatus::Sent as i32,
                message_id: wamid.into(),
                ..Default::default()
            })
            .await
            .expect("reported");
        assert!(r.effects.is_empty(), "{r:?}");
    }
    assert_eq!(headroom(&n.status().await), 998);
    // the statuses without the callback data: only the wamids name the sends
    let body = text(&fixture("messages_statuses.json")).replace(
        "\"biz_opaque_callback_data\": \"campaign=spring;admit=n109900112233445-1\",",
        "",
    );
    assert!(!body.contains("biz_opaque"));
    let a = deliver(n.addr(), body.as_bytes()).await;
    assert_eq!(a.count("applied"), 2, "{a:?}");
    assert_eq!(
        headroom(&n.status().await),
        999,
        "the failed send's BIC is back"
    );
    // a failure reported for the delivered message releases nothing (R3.5)
    let late = text(&fixture("messages_statuses.json"))
        .replace(FAILED, DELIVERED)
        .replace("4915187654321", "447700900123")
        .replace(
            "\"biz_opaque_callback_data\": \"campaign=spring;admit=n109900112233445-1\",",
            "",
        );
    let a = deliver(n.addr(), late.as_bytes()).await;
    assert_eq!(a.count("applied"), 1, "{a:?}");
    assert_eq!(headroom(&n.status().await), 999);
    n.stop().await;
}

#[tokio::test]
async fn an_admission_of_another_scope_does_not_cost_the_codes_reaction() {
    let (_dir, n) = Node::fresh().await;
    let a = deliver(n.addr(), &statuses_naming("n1001-1")).await;
    assert_eq!((a.count("applied"), a.count("rejected")), (2, 0), "{a:?}");
    assert_eq!(
        n.marketing("4915187654321", "t").await.reason(),
        pb::Reason::MarketingHold
    );
    n.stop().await;
}

#[tokio::test]
async fn repeated_deliveries_apply_once_also_after_a_restart() {
    let (dir, n) = Node::fresh().await;
    let stop = fixture("messages_inbound.json");
    let a = deliver(n.addr(), &stop).await;
    assert_eq!((a.count("applied"), a.count("duplicate")), (3, 0));
    let event = fixture("quality_update.json");
    assert_eq!(deliver(n.addr(), &event).await.count("applied"), 1);
    // the customer opts back in; a repeat of the STOP must not undo it
    let start = text(&stop).replace("\"STOP\"", "\"START\"").replace(
        "wamid.HBgNNDkxNTExMjM0NTY3OBUCABIYFDNBMTIzNDU2Nzg5MEFCQ0RFRjAA",
        "wamid.start-1",
    );
    let a = deliver(n.addr(), start.as_bytes()).await;
    assert_eq!((a.count("applied"), a.count("duplicate")), (1, 2), "{a:?}");
    let a = deliver(n.addr(), &stop).await;
    assert_eq!((a.count("applied"), a.count("duplicate")), (0, 3), "{a:?}");
    assert_eq!(n.status().await.opt_out_count, 0);

    n.stop().await;
    let n = Node::start(dir.path()).await;
    let a = deliver(n.addr(), &stop).await;
    assert_eq!((a.count("applied"), a.count("duplicate")), (0, 3), "{a:?}");
    assert_eq!(n.status().await.opt_out_count, 0);
    let a = deliver(n.addr(), &event).await;
    assert_eq!((a.count("applied"), a.count("duplicate")), (0, 1), "{a:?}");
    n.stop().await;
}

#[tokio::test]
async fn unknown_numbers_and_fields_are_acknowledged_and_counted() {
    let (_dir, n) = Node::fresh().await;
    // a phone_number_id admit does not know
    let other = text(&fixture("messages_inbound.json"))
        .replace(NUMBER, "109900999999999")
        .replace(DISPLAY, "15550109999");
    let a = deliver(n.addr(), other.as_bytes()).await;
    assert_eq!(
        (a.count("unknown_number"), a.count("applied")),
        (3, 0),
        "{a:?}"
    );
    // a display number admit cannot map
    let shown = text(&fixture("quality_update.json")).replace(DISPLAY, "15550108888");
    let a = deliver(n.addr(), shown.as_bytes()).await;
    assert_eq!(
        (a.count("unknown_number"), a.count("applied")),
        (1, 0),
        "{a:?}"
    );
    // one delivery mixing unknown fields with a known change
    let a = deliver(n.addr(), &fixture("mixed_unknown.json")).await;
    assert_eq!(
        (a.count("unknown_field"), a.count("applied")),
        (2, 1),
        "{a:?}"
    );
    // and a known number with an unknown one in the same change
    let mixed = text(&fixture("messages_inbound.json"))
        .replace("\"from\": \"447700900123\"", "\"from\": \"not-a-wa-id\"");
    let a = deliver(n.addr(), mixed.as_bytes()).await;
    assert_eq!((a.count("rejected"), a.count("applied")), (1, 2), "{a:?}");
    n.stop().await;
}

#[tokio::test]
async fn a_delivery_is_acknowledged_only_once_committed() {
    use std::sync::atomic::Ordering::SeqCst;
    let sink = Flaky::default();
    let hook = admit_webhook::serve(hook_config(Vec::new()), sink.clone())
        .await
        .unwrap();
    sink.down.store(true, SeqCst);
    let a = deliver(hook.local_addr(), &fixture("messages_inbound.json")).await;
    assert_eq!(a.code, 503, "{a:?}");
    assert!(a.body.contains("no leader"), "{a:?}");
    assert_eq!(sink.applied.load(SeqCst), 0);
    sink.down.store(false, SeqCst);
    let a = deliver(hook.local_addr(), &fixture("messages_inbound.json")).await;
    assert_eq!(a.count("applied"), 3, "{a:?}");
    hook.shutdown().await;
}

/// The p50 and p99 of `runs` deliveries made by `body(i)`, each a distinct
/// delivery, sent one after another on fresh connections.
async fn latencies(n: &Node, runs: usize, body: impl Fn(usize) -> Vec<u8>) -> (Duration, Duration) {
    let mut took = Vec::with_capacity(runs);
    for i in 0..runs {
        let b = body(i);
        let t = std::time::Instant::now();
        let a = deliver(n.addr(), &b).await;
        took.push(t.elapsed());
        assert_eq!(a.count("applied"), 1, "{a:?}");
    }
    took.sort();
    (took[runs / 2], took[runs * 99 / 100])
}

/// The latency of realistic deliveries, from the first byte sent to the
/// last byte of the 200, with the journal synced (fsync on): one inbound
/// message, one status, one platform event. Not a pass/fail test; run it
/// with the command in docs/benchmarks.md ("Webhook deliveries").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test -p admit-webhook --test http -- --ignored --nocapture"]
async fn latency_of_realistic_deliveries() {
    const RUNS: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let n = Node::register(Node::start_with(dir.path(), true).await).await;
    let inbound = text(&fixture("messages_inbound.json"));
    let one_message = |i: usize| {
        let v: serde_json::Value = serde_json::from_str(&inbound).unwrap();
        let mut v = v;
        let msgs = v["entry"][0]["changes"][0]["value"]["messages"]
            .as_array_mut()
            .unwrap();
        msgs.truncate(1);
        msgs[0]["id"] = format!("wamid.bench-in-{i}").into();
        msgs[0]["from"] = format!("44770{:07}", i).into();
        serde_json::to_vec(&v).unwrap()
    };
    let statuses = text(&fixture("messages_statuses.json"));
    let one_status = |i: usize| {
        let mut v: serde_json::Value = serde_json::from_str(&statuses).unwrap();
        let st = v["entry"][0]["changes"][0]["value"]["statuses"]
            .as_array_mut()
            .unwrap();
        st.truncate(1);
        st[0]["id"] = format!("wamid.bench-st-{i}").into();
        st[0]["recipient_id"] = format!("44770{:07}", i).into();
        serde_json::to_vec(&v).unwrap()
    };
    let event = text(&fixture("template_quality.json"));
    let one_event = |i: usize| {
        event
            .replace("1764565200", &(1_764_565_200 + i).to_string())
            .into_bytes()
    };
    // warm up: connections, shard leaders, the first journal writes
    latencies(&n, 20, |i| one_message(RUNS + i)).await;
    for (what, (p50, p99)) in [
        (
            "one inbound message",
            latencies(&n, RUNS, one_message).await,
        ),
        (
            "one status (delivered)",
            latencies(&n, RUNS, one_status).await,
        ),
        (
            "one template quality event",
            latencies(&n, RUNS, one_event).await,
        ),
    ] {
        println!("webhook delivery, {what}: p50 {p50:?}, p99 {p99:?} ({RUNS} runs)");
    }
    n.stop().await;
}
