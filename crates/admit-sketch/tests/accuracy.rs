//! Accuracy with seeded data: relative error at the 99th percentile of 100
//! trials, per cardinality.
//!
//! * Below 1K the sketch must be within 1 % (it is in fact exact: the sparse
//!   front of a bucket holds 1,788 customers).
//! * 1K..=1M: 100 trials each, p99 of the relative error at most 2 %.
//! * 10M: 100 trials too, p99 at most 2 % (see `ten_million`).
//!
//! All customers of a trial go into one bucket, the worst case for the
//! estimator (every bucket that is not exact is dense); `spread_over_30_days`
//! checks the union over buckets.

mod common;

use admit_sketch::{SketchConfig, WindowedSketch, DAY_MS};
use common::{customer, T0};

const TRIALS: u64 = 100;

/// Relative errors of `trials` runs at cardinality `n`, two worker threads.
fn errors(n: u64, trials: u64, spread_days: u64) -> Vec<f64> {
    let workers = 2;
    let mut out: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || {
                    let mut errs = Vec::new();
                    for trial in (w..trials).step_by(workers as usize) {
                        let sketch = WindowedSketch::new(SketchConfig::default());
                        for i in 0..n {
                            let day = i % spread_days;
                            sketch.insert(
                                customer(trial + n * 1000, i),
                                T0 + day * DAY_MS + i % 1000,
                            );
                        }
                        let now = T0 + (spread_days - 1) * DAY_MS + DAY_MS / 2;
                        let e = sketch.estimate(30 * DAY_MS, now);
                        errs.push((e.value as f64 - n as f64).abs() / n as f64);
                    }
                    errs
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    out.sort_by(f64::total_cmp);
    out
}

/// The 99th percentile (nearest rank) of sorted values.
fn p99(sorted: &[f64]) -> f64 {
    let rank = ((sorted.len() as f64) * 0.99).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn check(n: u64, trials: u64, bound: f64, spread_days: u64) {
    let errs = errors(n, trials, spread_days);
    assert_eq!(errs.len() as u64, trials);
    let p = p99(&errs);
    let max = errs[errs.len() - 1];
    eprintln!(
        "n={n:>9} trials={trials} spread={spread_days}d p99={:.3}% max={:.3}%",
        p * 100.0,
        max * 100.0
    );
    assert!(
        p <= bound,
        "n={n}: p99 relative error {:.3}% > {:.1}%",
        p * 100.0,
        bound * 100.0
    );
}

#[test]
fn below_1k_within_1_percent() {
    for n in [1, 2, 10, 100, 500, 999] {
        check(n, TRIALS, 0.01, 1);
    }
}

#[test]
fn from_1k_to_1m_within_2_percent() {
    for n in [1_000, 2_000, 5_000, 10_000, 30_000, 100_000, 1_000_000] {
        check(n, TRIALS, 0.02, 1);
    }
}

#[test]
fn ten_million() {
    check(10_000_000, TRIALS, 0.02, 1);
}

#[test]
fn spread_over_30_days() {
    // Each trial's customers spread over 30 day-buckets, so the estimate is a
    // union of 30 buckets (sparse, dense or both).
    for n in [500, 5_000, 60_000, 1_000_000] {
        check(n, 20, 0.02, 30);
    }
}
