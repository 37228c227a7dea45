//! Window expiry at the documented granularity: an insert in bucket `b` is
//! counted while `now < (b + 1) * bucket_ms + window_ms - 1`.

mod common;

use admit_sketch::{Estimate, SketchConfig, WindowedSketch, DAY_MS};
use common::T0;

fn exact(value: u64) -> Estimate {
    Estimate { value, exact: true }
}

#[test]
fn seven_day_window_edge() {
    let s = WindowedSketch::new(SketchConfig::default());
    // Day 3 at 05:00; its bucket ends (exclusive) at day 4 00:00.
    let t = T0 + 3 * DAY_MS + 5 * 3_600_000;
    s.insert(1, t);
    let bucket_end = T0 + 4 * DAY_MS;
    let leaves = bucket_end + 7 * DAY_MS - 1;
    assert_eq!(s.estimate(7 * DAY_MS, t), exact(1));
    assert_eq!(s.estimate(7 * DAY_MS, leaves - 1), exact(1), "ms before");
    assert_eq!(s.estimate(7 * DAY_MS, leaves), exact(0), "ms after");
    // That is 23:59:59.999 on day 3 + 7.
    assert_eq!(leaves, T0 + 10 * DAY_MS + (DAY_MS - 1));
    // The exact window would have dropped it at t + 7 days; the bucketed one
    // keeps it at most one bucket (minus 1 ms) longer, never shorter.
    assert!(leaves >= t + 7 * DAY_MS && leaves - (t + 7 * DAY_MS) < DAY_MS);
}

#[test]
fn thirty_day_window_edge_with_default_ring() {
    let s = WindowedSketch::new(SketchConfig::default());
    let t = T0 + 2 * DAY_MS; // first ms of day 2
    s.insert(7, t);
    let leaves = T0 + 3 * DAY_MS + 30 * DAY_MS - 1;
    // Keep inserting other customers up to the edge: the 31-slot ring must not
    // reuse day 2's slot before it leaves the 30-day window.
    for d in 3..=32 {
        s.insert(1_000 + d, T0 + d * DAY_MS);
    }
    assert_eq!(s.estimate(30 * DAY_MS, leaves - 1), exact(31));
    let after = s.estimate(30 * DAY_MS, leaves);
    assert_eq!(after, exact(30));
    // Day 33 reuses day 2's slot (33 % 31 == 2).
    s.insert(2_000, T0 + 33 * DAY_MS);
    assert_eq!(s.estimate(30 * DAY_MS, T0 + 33 * DAY_MS), exact(31));
    // A one-day window at the first ms of day 33 also overlaps day 32...
    assert_eq!(s.estimate(DAY_MS, T0 + 33 * DAY_MS), exact(2));
    // ...and at the last ms of day 33 covers day 33 alone.
    assert_eq!(s.estimate(DAY_MS, T0 + 34 * DAY_MS - 1), exact(1));
}

#[test]
fn small_buckets_edge_and_upper_bound() {
    let cfg = SketchConfig {
        bucket_ms: 1_000,
        buckets: 8,
        precision: 12,
    };
    let s = WindowedSketch::new(cfg);
    s.insert(1, 10_250); // bucket 10: 10_000..=10_999
    let w = 5_000;
    // Counted while now < 11_000 + 5_000 - 1.
    assert_eq!(s.estimate(w, 15_998).value, 1);
    assert_eq!(s.estimate(w, 15_999).value, 0);
    // A query in an earlier bucket does not see it; one in the same bucket
    // does, even before 10_250 (bucket granularity).
    assert_eq!(s.estimate(w, 9_999).value, 0);
    assert_eq!(s.estimate(w, 10_000).value, 1);
    // Empty window.
    assert_eq!(s.estimate(0, 10_500), exact(0));
    // Windows longer than the ring answers are clamped: 7 * 1000 + 1.
    assert_eq!(cfg.max_window_ms(), 7_001);
    assert_eq!(s.estimate(u64::MAX, 17_000).value, 1);
    assert_eq!(s.estimate(u64::MAX, 17_999).value, 1);
    assert_eq!(s.estimate(u64::MAX, 18_000).value, 0);
}

#[test]
fn repeated_customer_counts_once_and_refreshes() {
    let s = WindowedSketch::new(SketchConfig::default());
    for d in 0..10 {
        s.insert(42, T0 + d * DAY_MS);
    }
    assert_eq!(s.estimate(30 * DAY_MS, T0 + 9 * DAY_MS), exact(1));
    // Seen on day 9: still in the 7-day window on day 15, gone on day 16.
    assert_eq!(s.estimate(7 * DAY_MS, T0 + 16 * DAY_MS - 2), exact(1));
    assert_eq!(s.estimate(7 * DAY_MS, T0 + 17 * DAY_MS - 1), exact(0));
}

#[test]
fn late_insert_for_reused_slot_is_dropped() {
    let cfg = SketchConfig {
        bucket_ms: 10,
        buckets: 4,
        precision: 12,
    };
    let s = WindowedSketch::new(cfg);
    s.insert(1, 40); // epoch 4, slot 0
    s.insert(2, 5); // epoch 0, slot 0: older than the slot's epoch, dropped
    assert_eq!(s.estimate(31, 45), exact(1));
    // An insert that is late but whose slot is free or older is kept.
    s.insert(3, 25); // epoch 2, slot 2
    assert_eq!(s.estimate(31, 45), exact(2));
}

#[test]
fn extreme_times_do_not_panic() {
    let s = WindowedSketch::new(SketchConfig {
        bucket_ms: 1,
        buckets: 3,
        precision: 10,
    });
    for t in [0, 1, u64::MAX / 4, u64::MAX - 1, u64::MAX] {
        s.insert(t, t);
        let _ = s.estimate(u64::MAX, t);
        let _ = s.estimate(0, t);
        let _ = s.estimate(1, t);
    }
}

#[test]
fn union_counts_shared_customers_once() {
    let a = WindowedSketch::new(SketchConfig::default());
    let b = WindowedSketch::new(SketchConfig::default());
    for i in 0..600 {
        a.insert(i, T0 + (i % 5) * DAY_MS);
    }
    for i in 300..900 {
        b.insert(i, T0 + (i % 5) * DAY_MS);
    }
    let now = T0 + 5 * DAY_MS;
    assert_eq!(
        WindowedSketch::union_estimate(&[&a, &b], 7 * DAY_MS, now),
        exact(900)
    );
    assert_eq!(
        WindowedSketch::union_estimate(&[], 7 * DAY_MS, now),
        exact(0)
    );
    assert_eq!(
        WindowedSketch::union_estimate(&[&a], 7 * DAY_MS, now),
        a.estimate(7 * DAY_MS, now)
    );

    // Large and with mixed precisions: registers fold to the coarser one.
    let c = WindowedSketch::new(SketchConfig::default());
    let d = WindowedSketch::new(SketchConfig {
        precision: 14,
        ..SketchConfig::default()
    });
    for i in 0..600_000u64 {
        c.insert(i, T0 + (i % 3) * DAY_MS);
    }
    for i in 300_000..900_000u64 {
        d.insert(i, T0 + (i % 3) * DAY_MS);
    }
    let u = WindowedSketch::union_estimate(&[&c, &d], 7 * DAY_MS, now);
    assert!(!u.exact);
    let err = (u.value as f64 - 900_000.0).abs() / 900_000.0;
    assert!(err < 0.03, "union estimate {} (err {err})", u.value);
}
