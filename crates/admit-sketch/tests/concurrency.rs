//! Concurrent `&self` inserts, including promotion to dense registers and
//! bucket rotation, from several threads.

mod common;

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

#[test]
fn concurrent_inserts_and_reads_with_skewed_clocks_do_not_panic() {
    let cfg = SketchConfig {
        bucket_ms: 7,
        buckets: 5,
        precision: 10,
    };
    let s = WindowedSketch::new(cfg);
    std::thread::scope(|sc| {
        for t in 0..THREADS {
            let s = &s;
            sc.spawn(move || {
                for i in 0..200_000u64 {
                    // Times jump around, so rotations race with late inserts.
                    let now = (i / 10) + (t * 13 + i % 17) * 3;
                    s.insert(customer(t, i % 5_000), now);
                    if i % 1_000 == 0 {
                        let e = s.estimate(35, now);
                        assert!(e.value < 50_000);
                        let _ = postcard::to_allocvec(s).expect("serialize");
                    }
                }
            });
        }
    });
    let _ = s.clone();
}
