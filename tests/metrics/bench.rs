//! The size and render time of a scrape of a busy node with 100,000
//! registered numbers (docs/benchmarks.md). Ignored by default (it takes
//! minutes in a debug build); run it with
//! `cargo test -p admit-it --release --test metrics -- --ignored --nocapture scrape_of_100k`.

use std::time::Instant;

use crate::http::scrape;
use admit_proto::v1 as pb;

use crate::support::{bounded, Clients, InProcess, DAY1};

const NUMBERS: u64 = 100_000;
/// Numbers with conversations (each 1..=20 customers): the busy part.
const BUSY: u64 = 2_000;
const SCRAPES: usize = 5;

fn number(i: u64) -> String {
    format!("49180{i:06}")
}

/// A number of its own (no portfolio: 100,000 numbers of one portfolio
/// would be a different load), retried on a timeout of the loaded node.
async fn register(c: &mut Clients, n: &str) {
    for _ in 0..10 {
        let r = c
            .admin
            .register_number(pb::RegisterNumberRequest {
                number_id: n.into(),
                initial_tier: Some(pb::TierValue {
                    tier: Some(pb::tier_value::Tier::TierName("TIER_1K".into())),
                }),
                quality: Some(pb::NumberQuality::High as i32),
                throughput_mps: Some(10_000),
                ..Default::default()
            })
            .await;
        match r {
            Ok(_) => return,
            Err(e) if e.code() == tonic::Code::AlreadyExists => return,
            Err(e) => eprintln!("register {n}: {e}; retrying"),
        }
    }
    panic!("could not register {n}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "minutes: run by hand, see docs/benchmarks.md"]
async fn scrape_of_100k_numbers_size_and_render_time() {
    bounded(3_600, async {
        let (srv, c) = InProcess::start(DAY1).await;
        let m = srv.running.as_ref().unwrap().metrics_addr().unwrap();
        let t = Instant::now();
        let tasks: Vec<_> = (0..64u64)
            .map(|w| {
                let mut c = c.clone();
                tokio::spawn(async move {
                    for i in (w..NUMBERS).step_by(64) {
                        register(&mut c, &number(i)).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        eprintln!("registered {NUMBERS} numbers in {:?}", t.elapsed());
        let tasks: Vec<_> = (0..64u64)
            .map(|w| {
                let mut c = c.clone();
                tokio::spawn(async move {
                    for i in (w..BUSY).step_by(64) {
                        c.open_batch(&number(i), i * 100, 1 + i % 20).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut times = Vec::new();
        let mut page = String::new();
        for _ in 0..SCRAPES {
            let t = Instant::now();
            page = scrape(m).await;
            times.push(t.elapsed());
        }
        times.sort();
        let scope_lines: Vec<&str> = page
            .lines()
            .filter(|l| l.contains(&format!("scope=\"{}\"", number(BUSY - 1))))
            .collect();
        let per_scope: usize = scope_lines.iter().map(|l| l.len() + 1).sum();
        let scope_series = page.lines().filter(|l| l.starts_with("admit_scope_")).count();
        eprintln!(
            "scrape: {} bytes, {} lines ({} per-scope series), median {:?} min {:?} max {:?} over {SCRAPES} scrapes",
            page.len(),
            page.lines().count(),
            scope_series,
            times[SCRAPES / 2],
            times[0],
            times[SCRAPES - 1],
        );
        eprintln!(
            "one scope: {} series, {per_scope} bytes:\n{}",
            scope_lines.len(),
            scope_lines.join("\n")
        );
        assert!(page.len() < 1_000_000, "a scrape stays under 1 MB");
        srv.stop().await;
    })
    .await;
}
