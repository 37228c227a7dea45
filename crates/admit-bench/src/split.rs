//! `--metrics`: where a scenario's time went on the servers. The nodes'
//! write-path histograms (docs/metrics.md) are read from their `/metrics`
//! before and after the scenario, summed over the nodes and labels, and
//! printed as means: the handler's time, a write's wait for a log entry,
//! the entry's round, an append's round trip and the follower's part of it,
//! a relayed request's round trip, the journal's fsync.
//!
//! May import: hyper's HTTP/1.1 client connection (as the webhook scenario
//! uses it), tokio's TCP stream.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// The histograms read, as documented in docs/metrics.md.
const HISTOGRAMS: &[&str] = &[
    "admit_rpc_duration_seconds",
    "admit_raft_proposal_wait_seconds",
    "admit_raft_commands_per_entry",
    "admit_raft_entry_round_seconds",
    "admit_raft_append_round_trip_seconds",
    "admit_raft_append_service_seconds",
    "admit_forward_duration_seconds",
    "admit_journal_fsync_duration_seconds",
];

/// `_sum` and `_count` of each histogram, summed over nodes and labels.
pub type Sums = BTreeMap<String, f64>;

/// `host:port` and path of a metrics URL (`http://` optional, path
/// `/metrics` when none is given).
fn split_url(url: &str) -> (&str, &str) {
    let rest = url.trim().strip_prefix("http://").unwrap_or(url.trim());
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    }
}

async fn get(url: &str) -> Result<String, String> {
    let (host, path) = split_url(url);
    let tcp = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("answered {}", resp.status()));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Adds `page`'s samples of the histograms' `_sum` and `_count` to `into`.
fn add(page: &str, into: &mut Sums) {
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        let Some(base) = name
            .strip_suffix("_sum")
            .or_else(|| name.strip_suffix("_count"))
        else {
            continue;
        };
        if HISTOGRAMS.contains(&base) {
            if let Ok(v) = value.parse::<f64>() {
                *into.entry(name.to_owned()).or_default() += v;
            }
        }
    }
}

/// The sums over every URL; a node that does not answer is left out (and
/// said so on stderr).
pub async fn scrape(urls: &[String]) -> Sums {
    let mut sums = Sums::new();
    for u in urls {
        match get(u).await {
            Ok(page) => add(&page, &mut sums),
            Err(e) => eprintln!("--metrics {u}: {e}"),
        }
    }
    sums
}

/// The means between two scrapes, one line each.
pub fn print(scenario: &str, before: &Sums, after: &Sums) {
    println!("  where the time went on the servers ({scenario}, means over the nodes):");
    for h in HISTOGRAMS {
        let d = |s: &str| {
            let k = format!("{h}{s}");
            after.get(&k).copied().unwrap_or(0.0) - before.get(&k).copied().unwrap_or(0.0)
        };
        let (sum, count) = (d("_sum"), d("_count"));
        if count < 1.0 {
            continue;
        }
        let mean = sum / count;
        if h.ends_with("_seconds") {
            println!("    {h:<40} {:>9.3} ms  ({count:.0})", mean * 1e3);
        } else {
            println!("    {h:<40} {mean:>9.1}     ({count:.0})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cover_every_label_and_only_the_histograms() {
        let page = "# TYPE admit_raft_entry_round_seconds histogram\n\
            admit_raft_entry_round_seconds_bucket{le=\"0.005\"} 3\n\
            admit_raft_entry_round_seconds_sum 0.012\n\
            admit_raft_entry_round_seconds_count 4\n\
            admit_rpc_duration_seconds_sum{method=\"Admit\",code=\"OK\"} 1.5\n\
            admit_rpc_duration_seconds_sum{method=\"AdmitBatch\",code=\"OK\"} 0.5\n\
            admit_decisions_total{decision=\"allowed\"} 9\n";
        let mut s = Sums::new();
        add(page, &mut s);
        add(page, &mut s);
        assert_eq!(s.get("admit_raft_entry_round_seconds_count"), Some(&8.0));
        assert_eq!(s.get("admit_rpc_duration_seconds_sum"), Some(&4.0));
        assert_eq!(s.len(), 3, "{s:?}");
    }

    #[test]
    fn urls_with_or_without_scheme_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:9461/metrics"),
            ("127.0.0.1:9461", "/metrics")
        );
        assert_eq!(split_url("127.0.0.1:9461"), ("127.0.0.1:9461", "/metrics"));
        assert_eq!(split_url("h:1/x"), ("h:1", "/x"));
    }
}
