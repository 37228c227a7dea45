//! Memory per sketch (`memory_bytes`). Prints the figures reported in
//! docs/benchmarks.md:
//! `cargo test -p admit-sketch --test memory -- --nocapture`

use admit_sketch::{SketchConfig, WindowedSketch, DAY_MS};

const T0: u64 = 1_735_689_600_000;

fn sketch_with(n: u64, days: u64) -> WindowedSketch {
    let s = WindowedSketch::new(SketchConfig::default());
    for i in 0..n {
        s.insert(i, T0 + (i % days) * DAY_MS);
    }
    s
}

#[test]
fn memory_per_sketch() {
    let fresh = WindowedSketch::new(SketchConfig::default());
    // reading an empty sketch allocates nothing: its ring comes with the first insert
    assert_eq!(fresh.estimate(30 * DAY_MS, T0).value, 0);
    let empty = fresh.memory_bytes();
    eprintln!("empty: {empty} bytes");
    assert!(empty <= 64, "an empty sketch holds no ring: {empty} bytes");
    assert!(
        sketch_with(1, 1).memory_bytes() > 31 * 8,
        "the ring, once inserted into"
    );
    for n in [100u64, 10_000, 1_000_000] {
        for days in [1u64, 30] {
            let s = sketch_with(n, days);
            let bytes = s.memory_bytes();
            let compact = s.clone().memory_bytes();
            eprintln!("{n:>9} distinct over {days:>2} day(s): {bytes:>8} bytes (clone/snapshot copy: {compact:>8})");
            // Bounded by 31 dense buckets plus their sparse tiers.
            assert!(bytes < 31 * 60 * 1024);
        }
    }
    assert!(sketch_with(100, 1).memory_bytes() < 4 * 1024);
}
