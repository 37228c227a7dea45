//! `/metrics` of a running node: per-scope values after admits agree with
//! what was admitted (limit, usage, headroom, quality), only the N scopes
//! nearest their limit get series, and every name follows Prometheus'
//! conventions and is documented in docs/metrics.md.

use std::collections::BTreeSet;

use admit_proto::v1 as pb;

use crate::http::{samples, scrape, value};
use crate::support::{bounded, cust, template, InProcess, DAY1};

const A: &str = "4915100001";
const B: &str = "4915100002";
const C: &str = "4915100003";

fn scope(n: &str) -> [(&str, &str); 2] {
    [("scope", n), ("kind", "number")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_shows_limit_usage_headroom_quality_of_the_nearest_scopes() {
    bounded(120, async {
        let (srv, mut c) = InProcess::start_with(DAY1, |cfg| {
            cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
            cfg.metrics_top_scopes = 2;
        })
        .await;
        let m = srv
            .running
            .as_ref()
            .unwrap()
            .metrics_addr()
            .expect("metrics served");
        c.register(A, "TIER_250").await;
        c.register(B, "TIER_250").await;
        c.register(C, "TIER_1K").await;
        c.open_batch(A, 0, 100).await;
        c.open_batch(A, 100, 100).await;
        c.open_batch(B, 1_000, 10).await;
        c.inbound(A, &cust(5_000), None).await;

        let page = scrape(m).await;
        let v = |name: &str, n: &str| value(&page, name, &scope(n));
        assert_eq!(v("admit_scope_tier_limit", A), Some(250.0));
        assert_eq!(v("admit_scope_unique_customers", A), Some(200.0));
        assert_eq!(v("admit_scope_headroom", A), Some(50.0));
        assert_eq!(v("admit_scope_headroom_ratio", A), Some(0.2));
        assert_eq!(v("admit_scope_headroom", B), Some(240.0));
        let q = value(
            &page,
            "admit_scope_quality",
            &[("scope", A), ("rating", "HIGH")],
        );
        assert_eq!(q, Some(3.0));
        let st = [("scope", A), ("status", "HEALTHY")];
        assert_eq!(value(&page, "admit_scope_account_status", &st), Some(1.0));
        let st = [("scope", A), ("status", "CONNECTED")];
        assert_eq!(value(&page, "admit_scope_number_status", &st), Some(1.0));
        assert_eq!(v("admit_scope_open_service_windows", A), Some(1.0));
        assert_eq!(v("admit_scope_opted_out_customers", A), Some(0.0));
        let est = v("admit_scope_unique_customers_7d_estimate", A).unwrap();
        assert!((190.0..=210.0).contains(&est), "7-day estimate {est}");
        assert_eq!(v("admit_scope_upgrade_in_seconds", A), None);

        // top 2 of 3: C (nothing used of 1000) is folded into the aggregates
        assert_eq!(v("admit_scope_headroom", C), None);
        assert_eq!(v("admit_scope_tier_limit", C), None);
        assert_eq!(value(&page, "admit_scopes_exported", &[]), Some(2.0));
        assert_eq!(value(&page, "admit_scopes_folded", &[]), Some(1.0));
        let g = |tier: &str| {
            let l = [("kind", "number"), ("status", "HEALTHY"), ("tier", tier)];
            value(&page, "admit_scopes", &l)
        };
        assert_eq!(g("250"), Some(2.0));
        assert_eq!(g("1000"), Some(1.0));
        let b = |le: &str| {
            let l = [("kind", "number"), ("le", le)];
            value(&page, "admit_scopes_headroom_ratio_bucket", &l)
        };
        assert_eq!(b("0.2"), Some(1.0));
        assert_eq!(b("1"), Some(3.0));
        assert_eq!(b("+Inf"), Some(3.0));

        let allowed = [("decision", "allowed"), ("reason", "NEW_CONVERSATION")];
        assert!(value(&page, "admit_decisions_total", &allowed).unwrap() >= 210.0);
        let rpc = [("method", "AdmitBatch"), ("code", "OK")];
        let calls = value(&page, "admit_rpc_duration_seconds_count", &rpc).unwrap();
        assert!(calls >= 3.0, "{calls}");
        assert_eq!(value(&page, "admit_shards_led", &[]), Some(8.0));
        conventions(&page);

        // A uses its limit up: headroom 0, restricted; a further send is denied
        c.open_batch(A, 200, 50).await;
        let d = c
            .admit(template(A, 9_999, "t-util", pb::TemplateCategory::Utility))
            .await
            .unwrap();
        assert_eq!(d.reason(), pb::Reason::LimitReached);
        let page = scrape(m).await;
        assert_eq!(value(&page, "admit_scope_headroom", &scope(A)), Some(0.0));
        assert_eq!(
            value(&page, "admit_scope_headroom_ratio", &scope(A)),
            Some(0.0)
        );
        let st = [("scope", A), ("status", "RESTRICTED")];
        assert_eq!(value(&page, "admit_scope_account_status", &st), Some(1.0));
        let st = [("scope", A), ("status", "HEALTHY")];
        assert_eq!(value(&page, "admit_scope_account_status", &st), None);
        let denied = [("decision", "denied"), ("reason", "LIMIT_REACHED")];
        assert!(value(&page, "admit_decisions_total", &denied).unwrap() >= 1.0);
        assert_eq!(templates(&page, A), (Some(0.0), Some(0.0)));

        // a paused and a disabled template deny every scope's sends: counted per scope
        for (id, event) in [
            ("t-promo", pb::TemplateStatusEvent::Paused),
            ("t-old", pb::TemplateStatusEvent::Disabled),
        ] {
            let ev = pb::ApplyEventRequest {
                event: Some(pb::apply_event_request::Event::TemplateStatus(
                    pb::TemplateStatusChanged {
                        template_id: id.into(),
                        event: event as i32,
                        pause_title: pb::PauseTitle::FirstPause as i32,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            };
            assert!(c.admin.apply_event(ev).await.unwrap().into_inner().applied);
        }
        let page = scrape(m).await;
        for n in [A, B] {
            assert_eq!(templates(&page, n), (Some(1.0), Some(1.0)), "{n}");
        }
        srv.stop().await;
        // the endpoint stops with the node
        assert!(crate::http::get(m, "/metrics").await.is_err());
    })
    .await;
}

/// `admit_scope_templates` of number scope `n`: (paused, disabled).
fn templates(page: &str, n: &str) -> (Option<f64>, Option<f64>) {
    let t = |st| {
        value(
            page,
            "admit_scope_templates",
            &[("scope", n), ("kind", "number"), ("status", st)],
        )
    };
    (t("PAUSED"), t("DISABLED"))
}

/// Names and units as Prometheus wants them, each family documented.
fn conventions(page: &str) {
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/metrics.md"),
    )
    .expect("docs/metrics.md");
    let mut families = BTreeSet::new();
    let mut helped = BTreeSet::new();
    for l in page.lines() {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("help text");
            assert!(!help.trim().is_empty(), "{name} has no help");
            helped.insert(name.to_owned());
        }
        let Some(rest) = l.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        assert!(families.insert(name.to_owned()), "{name} declared twice");
        assert!(helped.contains(name), "{name} has no HELP");
        assert!(
            name.starts_with("admit_")
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name}: admit_ and snake case"
        );
        for bad in ["_ms", "milli", "_kb", "_mb", "percent"] {
            assert!(!name.contains(bad), "{name}: base units only");
        }
        match kind {
            "counter" => assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            ),
            "gauge" => assert!(!name.ends_with("_total"), "gauge {name} ends in _total"),
            "histogram" => assert!(
                ["_seconds", "_bytes", "_ratio", "_per_fsync", "_per_entry"]
                    .iter()
                    .any(|u| name.ends_with(u)),
                "histogram {name} names its unit"
            ),
            other => panic!("{name}: unexpected type {other}"),
        }
        assert!(
            docs.contains(&format!("`{name}`")),
            "{name} is not in docs/metrics.md"
        );
    }
    for ((name, _), _) in samples(page) {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| families.contains(*b)))
            .unwrap_or(&name);
        assert!(families.contains(base), "{name} has no TYPE");
    }
}
