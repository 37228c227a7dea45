//! The alerts and the dashboard cannot drift from what `admitd` exports:
//! every `admit_*` metric name that `deploy/prometheus/admit-rules.yaml` and
//! `deploy/grafana/admit.json` use must appear in a scrape of a running
//! `admitd`, driven first so that the series that exist only after an event
//! do exist: a pending upgrade, a Flagged number with a downgrade due, a Low
//! quality, shed requests (a caller over its quota), journal fsyncs.

use std::collections::BTreeSet;
use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use admit_proto::v1 as pb;

use crate::support::{admitd_path, bounded, template, Clients, DAY1};

/// The `admit_*` names a file mentions (PromQL identifiers).
fn names_used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("admit_") {
        let tail = &rest[i..];
        let boundary = i == 0 || {
            let b = rest.as_bytes()[i - 1];
            !(b.is_ascii_alphanumeric() || b == b'_')
        };
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if boundary {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// Sample names of a Prometheus text exposition.
fn names_exported(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read the scrape");
    let (head, page) = body.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    page.to_owned()
}

/// admitd on loopback with its metrics port and a tight quota for callers
/// that name themselves (the test's own calls are "anonymous", well within).
fn start(dir: &std::path::Path) -> (Child, SocketAddr, SocketAddr) {
    let conf = dir.join("admitd.toml");
    std::fs::write(&conf, "[caller_quota]\nrate = 5.0\nburst = 20.0\n").unwrap();
    let mut child = Command::new(admitd_path())
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--shards", "8", "--test-clock", "--test-clock-start-ms"])
        .arg(DAY1.to_string())
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&conf)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn admitd");
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut api, mut metrics) = (None, None);
    while api.is_none() || metrics.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("admitd printed its addresses");
        if let Some(r) = line.strip_prefix("admitd listening on ") {
            api = r.split_whitespace().next().and_then(|a| a.parse().ok());
        }
        if let Some(r) = line.strip_prefix("admitd metrics on http://") {
            metrics = r.strip_suffix("/metrics").and_then(|a| a.parse().ok());
        }
    }
    (child, api.unwrap(), metrics.unwrap())
}

async fn event(c: &mut Clients, e: pb::apply_event_request::Event) {
    c.admin
        .apply_event(pb::ApplyEventRequest {
            event: Some(e),
            ..Default::default()
        })
        .await
        .expect("apply event");
}

async fn drive(addr: SocketAddr) {
    let mut c = Clients::connect(addr).await;
    // an upgrade pending: 500 new conversations on a 1K tier (R5.3)
    c.register("1001", "TIER_1K").await;
    c.open_batch("1001", 0, 500).await;
    // a Flagged number with Low quality: a downgrade due (R5.5)
    c.register("1002", "TIER_1K").await;
    c.open_batch("1002", 1_000, 3).await;
    event(
        &mut c,
        pb::apply_event_request::Event::NumberQuality(pb::NumberQualityChanged {
            number_id: "1002".into(),
            quality: pb::NumberQuality::Low as i32,
        }),
    )
    .await;
    event(
        &mut c,
        pb::apply_event_request::Event::NumberStatus(pb::NumberStatusChanged {
            number_id: "1002".into(),
            status: pb::NumberStatus::Flagged as i32,
        }),
    )
    .await;
    // a caller over its quota is shed RESOURCE_EXHAUSTED
    let mut shed = 0;
    for i in 0..60 {
        let mut req = tonic::Request::new(pb::AdmitRequest {
            send: Some(template("1001", i, "t-util", pb::TemplateCategory::Utility)),
        });
        req.metadata_mut()
            .insert("x-admit-caller", "noisy".parse().unwrap());
        if let Err(s) = c.admit.admit(req).await {
            assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
            shed += 1;
        }
    }
    assert!(shed > 0, "the quota never shed a call");
}

/// Series only a cluster exports (a single node has no followers and relays
/// nothing): the dashboard's "Where a write waits" panel uses them, and
/// `tests/metrics/cluster.rs` checks that a cluster's nodes export them.
const CLUSTER_ONLY: &[&str] = &[
    "admit_raft_append_round_trip_seconds_bucket",
    "admit_raft_append_service_seconds_bucket",
    "admit_forward_duration_seconds_bucket",
];

#[test]
fn alerts_and_dashboard_use_only_exported_metrics() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut used = BTreeSet::new();
    for f in [
        "deploy/prometheus/admit-rules.yaml",
        "deploy/grafana/admit.json",
    ] {
        let text = std::fs::read_to_string(repo.join(f)).unwrap();
        let names = names_used(&text);
        assert!(names.len() >= 8, "{f}: only {names:?}");
        used.extend(names);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, api, metrics) = start(tmp.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(bounded(120, drive(api)));
    let page = http_get(metrics, "/metrics");
    let _ = child.kill();
    let _ = child.wait();
    let mut exported = names_exported(&page);
    for name in CLUSTER_ONLY {
        assert!(used.contains(*name), "{name} is no longer used by deploy/");
        exported.insert((*name).to_owned());
    }
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "used by the alerts or the dashboard but not exported by admitd: {missing:?}\n\
         exported: {exported:?}"
    );
    eprintln!(
        "drift: {} metric names used by deploy/, all among the {} admitd exported",
        used.len(),
        exported.len()
    );
}

#[test]
fn names_are_found_whole() {
    let t = r#"max by (scope) (admit_scope_headroom_ratio{a="b"}) / xadmit_no + rate(admit_x_total[5m])"#;
    let got: Vec<_> = names_used(t).into_iter().collect();
    assert_eq!(got, ["admit_scope_headroom_ratio", "admit_x_total"]);
    let page = "# HELP admit_a x\n# TYPE admit_a gauge\nadmit_a{s=\"1\"} 1\nadmit_b 2\n";
    let got: Vec<_> = names_exported(page).into_iter().collect();
    assert_eq!(got, ["admit_a", "admit_b"]);
}
