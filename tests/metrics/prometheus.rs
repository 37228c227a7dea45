//! A real Prometheus (Debian's `prometheus`, installed by the test with
//! apt-get when missing) scrapes a real `admitd` every second on loopback,
//! from a generated config and its own data directory (never the system
//! service). Admits drive a number to a known usage; Prometheus' query API
//! must then show its headroom, limit and quality; after a tier event and a
//! quality event the series follow.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use admit_proto::v1 as pb;

use crate::http::get;
use crate::support::api::{by_name, number_target, set_tier};
use crate::support::{admitd_path, Clients, DAY1};

const N: &str = "4917000001";

/// The `prometheus` binary: on PATH, else installed from Debian now. Fails
/// loudly when neither works: this test is never skipped.
fn prometheus_bin() -> String {
    let found = || {
        Command::new("prometheus")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !found() {
        eprintln!("prometheus missing: apt-get update && apt-get install -y prometheus");
        let st = Command::new("sh")
            .args([
                "-c",
                "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus",
            ])
            .status()
            .expect("run apt-get");
        assert!(
            st.success() && found(),
            "could not install the Debian package prometheus (needed by this test)"
        );
    }
    "prometheus".into()
}

fn free_port() -> u16 {
    crate::support::ports::free_addr().port()
}

/// A child process killed (by its own pid) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `admitd` on the test clock; returns it with its gRPC and metrics
/// addresses (read from its first lines of output).
fn start_admitd(dir: &Path) -> (Proc, SocketAddr, SocketAddr) {
    use std::io::BufRead;
    let mut child = Command::new(admitd_path())
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--shards", "4", "--test-clock", "--test-clock-start-ms"])
        .arg(DAY1.to_string())
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn admitd");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let proc = Proc(child);
    let (mut grpc, mut metrics) = (None, None);
    while grpc.is_none() || metrics.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("admitd prints its addresses");
        let word = |prefix: &str| {
            line.strip_prefix(prefix)
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_owned)
        };
        if let Some(a) = word("admitd listening on ") {
            grpc = Some(a.parse().unwrap());
        }
        if let Some(u) = word("admitd metrics on http://") {
            metrics = Some(u.trim_end_matches("/metrics").parse().unwrap());
        }
    }
    (proc, grpc.unwrap(), metrics.unwrap())
}

/// Starts Prometheus scraping `target` every second.
fn start_prometheus(dir: &Path, target: SocketAddr) -> (Proc, SocketAddr) {
    let bin = prometheus_bin();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: admit\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn prometheus");
    (Proc(child), web)
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query: each result's labels and value.
async fn query(prom: SocketAddr, q: &str) -> Vec<(serde_json::Value, f64)> {
    let Ok((200, body)) = get(prom, &format!("/api/v1/query?query={}", encode(q))).await else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).expect("query API answers JSON");
    assert_eq!(v["status"], "success", "{body}");
    v["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let x = r["value"][1].as_str().unwrap().parse().unwrap();
            (r["metric"].clone(), x)
        })
        .collect()
}

/// Waits (up to 90 s) until `q` has exactly one series with value `want`.
async fn until(prom: SocketAddr, q: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = query(prom, q).await;
        if got.len() == 1 && got[0].1 == want {
            eprintln!("prometheus: {q} = {want}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus query {q}: want one series = {want}, got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `q` has no series (Prometheus marked it stale).
async fn until_gone(prom: SocketAddr, q: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = query(prom, q).await;
        if got.is_empty() {
            eprintln!("prometheus: {q} = (none)");
            return;
        }
        assert!(Instant::now() < deadline, "{q} still has {got:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_sees_headroom_limit_and_quality_follow_events() {
    crate::support::bounded(600, async {
        let dir = tempfile::tempdir().unwrap();
        let (_admitd, grpc, metrics) = start_admitd(&dir.path().join("admit"));
        let mut c = Clients::connect(grpc).await;
        c.register(N, "TIER_250").await;
        c.open_batch(N, 0, 40).await;

        let (_prom, prom) = start_prometheus(dir.path(), metrics);
        let up = format!("up{{instance=\"{metrics}\"}}");
        until(prom, &up, 1.0).await;
        let s = |name: &str| format!("{name}{{scope=\"{N}\",kind=\"number\"}}");
        until(prom, &s("admit_scope_unique_customers"), 40.0).await;
        until(prom, &s("admit_scope_tier_limit"), 250.0).await;
        until(prom, &s("admit_scope_headroom"), 210.0).await;
        until(prom, &s("admit_scope_headroom_ratio"), 0.84).await;
        let quality = |r: &str| format!("admit_scope_quality{{scope=\"{N}\",rating=\"{r}\"}}");
        until(prom, &quality("HIGH"), 3.0).await;

        // a tier event: Meta raised the number to 1K
        set_tier(&mut c, number_target(N), by_name("TIER_1K"), "tier-1")
            .await
            .expect("tier event");
        until(prom, &s("admit_scope_tier_limit"), 1000.0).await;
        until(prom, &s("admit_scope_headroom"), 960.0).await;
        until(prom, &s("admit_scope_headroom_ratio"), 0.96).await;

        // a quality event: the number's rating drops to Medium
        c.admin
            .apply_event(pb::ApplyEventRequest {
                event_key: "quality-1".into(),
                event: Some(pb::apply_event_request::Event::NumberQuality(
                    pb::NumberQualityChanged {
                        number_id: N.into(),
                        quality: pb::NumberQuality::Medium as i32,
                    },
                )),
                ..Default::default()
            })
            .await
            .expect("quality event");
        until(prom, &quality("MEDIUM"), 2.0).await;
        until_gone(prom, &quality("HIGH")).await;

        // more admits: usage and headroom follow
        c.open_batch(N, 1_000, 60).await;
        until(prom, &s("admit_scope_unique_customers"), 100.0).await;
        until(prom, &s("admit_scope_headroom"), 900.0).await;
        let allowed =
            "sum(admit_decisions_total{decision=\"allowed\",reason=\"NEW_CONVERSATION\"})";
        until(prom, allowed, 100.0).await;
    })
    .await;
}
