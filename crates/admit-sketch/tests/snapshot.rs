//! Serde: deterministic bytes for the same inserts, round trips, and
//! rejection (not panics) of bad input.

mod common;

use admit_sketch::{Estimate, SketchConfig, WindowedSketch, DAY_MS};
use common::{customer, T0};
use proptest::prelude::*;
use std::collections::HashSet;

fn filled(n: u64, reverse: bool) -> WindowedSketch {
    let s = WindowedSketch::new(SketchConfig::default());
    let ids: Vec<u64> = if reverse {
        (0..n).rev().collect()
    } else {
        (0..n).collect()
    };
    for i in ids {
        s.insert(customer(7, i % (n / 2 + 1)), T0 + (i % 40) * DAY_MS);
    }
    s
}

#[test]
fn same_inserts_same_bytes_and_round_trip() {
    for n in [0, 10, 3_000, 200_000] {
        let a = filled(n, false);
        let b = filled(n, true);
        let bytes = postcard::to_allocvec(&a).expect("serialize");
        assert_eq!(
            bytes,
            postcard::to_allocvec(&b).expect("serialize"),
            "n={n}"
        );
        let back: WindowedSketch = postcard::from_bytes(&bytes).expect("deserialize");
        assert_eq!(bytes, postcard::to_allocvec(&back).expect("serialize"));
        assert_eq!(bytes, postcard::to_allocvec(&a.clone()).expect("serialize"));
        for w in [DAY_MS, 7 * DAY_MS, 30 * DAY_MS] {
            let now = T0 + 39 * DAY_MS + 1;
            assert_eq!(a.estimate(w, now), back.estimate(w, now));
        }
        // The restored sketch keeps working, including rotation.
        back.insert(1, T0 + 41 * DAY_MS);
        a.insert(1, T0 + 41 * DAY_MS);
        assert_eq!(
            postcard::to_allocvec(&a).expect("serialize"),
            postcard::to_allocvec(&back).expect("serialize")
        );
    }
}

#[test]
fn clone_is_independent() {
    let a = filled(1_000, false);
    let b = a.clone();
    a.insert(u64::MAX, T0 + 39 * DAY_MS);
    let now = T0 + 39 * DAY_MS;
    assert_eq!(
        a.estimate(30 * DAY_MS, now).value,
        b.estimate(30 * DAY_MS, now).value + 1
    );
    assert!(format!("{b:?}").contains("WindowedSketch"));
}

#[test]
fn rejects_inconsistent_snapshots() {
    let s = filled(100, false);
    let mut bytes = postcard::to_allocvec(&s).expect("serialize");
    // Config fields come first: bucket_ms (varint), buckets (varint),
    // precision (u8). Bump the precision to an unsupported value.
    let cfg = SketchConfig::default();
    let head = postcard::to_allocvec(&cfg).expect("serialize");
    assert_eq!(&bytes[..head.len()], &head[..]);
    bytes[head.len() - 1] = 40;
    assert!(postcard::from_bytes::<WindowedSketch>(&bytes).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = postcard::from_bytes::<WindowedSketch>(&bytes);
    }

    #[test]
    fn round_trip_random_inserts(
        ops in proptest::collection::vec((0u64..500, 0u64..(50 * DAY_MS)), 0..300),
        windows in proptest::collection::vec((1u64..(32 * DAY_MS), 0u64..(3 * DAY_MS)), 1..6),
    ) {
        let s = WindowedSketch::new(SketchConfig::default());
        for &(c, t) in &ops {
            s.insert(c, T0 + t);
        }
        let bytes = postcard::to_allocvec(&s).expect("serialize");
        let back: WindowedSketch = postcard::from_bytes(&bytes).expect("deserialize");
        prop_assert_eq!(&bytes, &postcard::to_allocvec(&back).expect("serialize"));
        // the oracle is an exact count, not the sketch: fewer than 1,788 customers are
        // counted exactly, at any window and at any time from the newest insert on
        for &(window, after) in &windows {
            let now = T0 + 50 * DAY_MS + after;
            let want = Estimate { value: exact_count(&ops, window, now), exact: true };
            prop_assert_eq!(s.estimate(window, now), want, "window {} at +{}", window, after);
            prop_assert_eq!(back.estimate(window, now), want);
        }
    }
}

/// Distinct customers inserted in the time buckets a query overlaps: the documented
/// window `now - window < t <= now` widened to whole buckets (an insert counts until
/// the end of its bucket plus the window), with the window clamped to the ring.
fn exact_count(ops: &[(u64, u64)], window: u64, now: u64) -> u64 {
    let cfg = SketchConfig::default();
    let window = window.min(cfg.max_window_ms());
    let first = (now + 1 - window) / cfg.bucket_ms;
    let last = now / cfg.bucket_ms;
    let ids: HashSet<u64> = ops
        .iter()
        .filter(|(_, t)| (first..=last).contains(&((T0 + t) / cfg.bucket_ms)))
        .map(|(c, _)| *c)
        .collect();
    ids.len() as u64
}
