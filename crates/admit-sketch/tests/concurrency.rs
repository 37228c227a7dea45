//! Concurrent `&self` inserts, including promotion to dense registers and
//! bucket rotation, from several threads.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Barrier;

use admit_sketch::{SketchConfig, WindowedSketch, DAY_MS};
use common::{customer, T0};

const THREADS: u64 = 4;

#[test]
fn concurrent_sparse_inserts_are_exact() {
    let s = WindowedSketch::new(SketchConfig::default());
    std::thread::scope(|sc| {
        for t in 0..THREADS {
            let s = &s;
            sc.spawn(move || {
                // Overlapping ranges in different orders.
                for i in 0..1_500u64 {
                    let i = if t % 2 == 0 { i } else { 1_499 - i };
                    s.insert(customer(0, i), T0 + t);
                }
            });
        }
    });
    let e = s.estimate(DAY_MS, T0 + 10);
    assert_eq!((e.value, e.exact), (1_500, true));
}

#[test]
fn concurrent_inserts_give_the_same_snapshot_as_sequential() {
    let n = 200_000u64;
    let parallel = WindowedSketch::new(SketchConfig::default());
    std::thread::scope(|sc| {
        for t in 0..THREADS {
            let p = &parallel;
            sc.spawn(move || {
                for i in (t..n).step_by(THREADS as usize) {
                    p.insert(customer(1, i), T0 + (i % 3) * DAY_MS);
                }
            });
        }
    });
    let sequential = WindowedSketch::new(SketchConfig::default());
    for i in 0..n {
        sequential.insert(customer(1, i), T0 + (i % 3) * DAY_MS);
    }
    let a = postcard::to_allocvec(&parallel).expect("serialize");
    let b = postcard::to_allocvec(&sequential).expect("serialize");
    assert!(a == b, "snapshots differ");
    assert_eq!(
        parallel.estimate(7 * DAY_MS, T0 + 2 * DAY_MS),
        sequential.estimate(7 * DAY_MS, T0 + 2 * DAY_MS)
    );
}

#[test]
fn concurrent_rotation_loses_at_most_a_handful() {
    // Small buckets so the ring rotates many times; all threads move to the
    // next bucket together (a barrier per bucket), like callers on one clock.
    let cfg = SketchConfig {
        bucket_ms: 1_000,
        buckets: 4,
        precision: 12,
    };
    let s = WindowedSketch::new(cfg);
    let per_thread = 300u64; // THREADS * 300 = 1_200: stays sparse and exact
    let barrier = Barrier::new(THREADS as usize);
    let lost: Vec<u64> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (s, barrier) = (&s, &barrier);
                sc.spawn(move || {
                    let mut lost = Vec::new();
                    for bucket in 0..200u64 {
                        let now = bucket * 1_000 + t;
                        for i in 0..per_thread {
                            s.insert(customer(bucket, t * per_thread + i), now);
                        }
                        barrier.wait();
                        if t == 0 {
                            let e = s.estimate(1_000, bucket * 1_000 + 999);
                            assert!(e.exact);
                            assert!(e.value <= THREADS * per_thread);
                            lost.push(THREADS * per_thread - e.value);
                        }
                        barrier.wait();
                    }
                    lost
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("panicked"))
            .collect()
    });
    let total_lost: u64 = lost.iter().sum();
    let worst = lost.iter().copied().max().unwrap_or(0);
    eprintln!("rotations: 200, inserts lost in total: {total_lost}, worst bucket: {worst}");
    // Only inserts racing the wipe of a bucket can be lost.
    assert!(worst <= 64, "lost {worst} inserts in one bucket");
}

/// Standard error of a dense estimate at `precision` (crate docs: 1.04 / sqrt(2^p)).
fn std_error(precision: u8) -> f64 {
    1.04 / f64::from(1u32 << precision).sqrt()
}

#[test]
fn concurrent_inserts_and_reads_with_skewed_clocks_stay_within_the_exact_count() {
    let cfg = SketchConfig {
        bucket_ms: 7,
        buckets: 5,
        precision: 10,
    };
    let window = 35;
    // thread `t`'s `i`-th insert: times jump around, so rotations race with late inserts
    let at = |t: u64, i: u64| (i / 10) + (t * 13 + i % 17) * 3;
    let id = |t: u64, i: u64| customer(t, i % 5_000);
    // the exact oracle: every customer any thread ever inserts, by bucket
    let mut by_bucket: HashMap<u64, HashSet<u64>> = HashMap::new();
    for t in 0..THREADS {
        for i in 0..200_000u64 {
            by_bucket
                .entry(at(t, i) / cfg.bucket_ms)
                .or_default()
                .insert(id(t, i));
        }
    }
    // at most the customers inserted (by then or later) in the buckets the window
    // overlaps: racing inserts can be lost or dropped, never invented, except one per
    // stalled thread in a later bucket (crate docs); plus the estimator's error
    let most = |now: u64| {
        let first = (now + 1).saturating_sub(window) / cfg.bucket_ms;
        let ids: HashSet<u64> = (first..=now / cfg.bucket_ms)
            .filter_map(|b| by_bucket.get(&b))
            .flatten()
            .copied()
            .collect();
        let n = ids.len() as f64;
        (n * (1.0 + 4.0 * std_error(cfg.precision))) as u64 + THREADS * u64::from(cfg.buckets)
    };
    let s = WindowedSketch::new(cfg);
    std::thread::scope(|sc| {
        for t in 0..THREADS {
            let (s, most) = (&s, &most);
            sc.spawn(move || {
                for i in 0..200_000u64 {
                    let now = at(t, i);
                    s.insert(id(t, i), now);
                    if i % 1_000 == 0 {
                        let e = s.estimate(window, now);
                        assert!(e.value <= most(now), "{e:?} at {now}");
                        let _ = postcard::to_allocvec(s).expect("serialize");
                    }
                }
            });
        }
    });
    let _ = s.clone();
}

/// Without rotation (every insert's bucket is in the ring), no insert is lost: the
/// registers' maxima and the sparse sets do not depend on the order, so the estimate
/// of the concurrent inserts is the one of the exact set, within the documented error.
#[test]
fn concurrent_dense_inserts_are_within_the_error_bound_of_the_exact_count() {
    let cfg = SketchConfig {
        bucket_ms: 7,
        buckets: 5,
        precision: 12,
    };
    let s = WindowedSketch::new(cfg);
    let at = |t: u64, i: u64| (t + i) % 35;
    let id = |t: u64, i: u64| customer(t, i % 5_000);
    std::thread::scope(|sc| {
        for t in 0..THREADS {
            let s = &s;
            sc.spawn(move || {
                for i in 0..20_000u64 {
                    s.insert(id(t, i), at(t, i));
                }
            });
        }
    });
    let mut exact: HashSet<u64> = HashSet::new();
    let mut last_bucket: HashSet<u64> = HashSet::new();
    for t in 0..THREADS {
        for i in 0..20_000u64 {
            exact.insert(id(t, i));
            if at(t, i) >= 28 {
                last_bucket.insert(id(t, i));
            }
        }
    }
    let bound = 3.0 * std_error(cfg.precision);
    for (window, want) in [(35, exact.len()), (7, last_bucket.len())] {
        let e = s.estimate(window, 34);
        let err = (e.value as f64 - want as f64).abs() / want as f64;
        assert!(!e.exact, "{want} customers make the buckets dense");
        assert!(
            err <= bound,
            "window {window}: {} for {want}, error {:.2}% > {:.2}%",
            e.value,
            err * 100.0,
            bound * 100.0
        );
    }
}
