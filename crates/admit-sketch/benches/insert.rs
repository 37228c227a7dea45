//! Insert cost, single-threaded, and throughput of two threads sharing one
//! sketch against one thread. Run: `cargo bench -p admit-sketch`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use admit_sketch::{SketchConfig, WindowedSketch, DAY_MS};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const T0: u64 = 1_735_689_600_000;

/// A sketch whose current bucket is already dense (1M customers).
fn dense_sketch() -> WindowedSketch {
    let s = WindowedSketch::new(SketchConfig::default());
    for i in 0..1_000_000u64 {
        s.insert(i, T0 + (i % 1_000));
    }
    s
}

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("insert");
    g.throughput(Throughput::Elements(1));

    let dense = dense_sketch();
    let mut id = 0u64;
    g.bench_function("dense_new_customers", |b| {
        b.iter(|| {
            id = id.wrapping_add(1);
            dense.insert(black_box(id.wrapping_mul(0x9E37_79B9)), black_box(T0 + 5));
        })
    });

    let sparse = WindowedSketch::new(SketchConfig::default());
    let mut id = 0u64;
    g.bench_function("sparse_500_customers", |b| {
        b.iter(|| {
            id = (id + 1) % 500;
            sparse.insert(black_box(id), black_box(T0 + 5));
        })
    });
    g.finish();
}

const BATCH: u64 = 200_000;

/// Each of `threads` threads inserts `BATCH` distinct customers per
/// iteration into one shared sketch.
fn run_threads(sketch: &WindowedSketch, threads: u64, iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                for it in 0..iters {
                    let base = (t << 48) | (it << 24);
                    for i in 0..BATCH {
                        sketch.insert(base | i, T0 + i % 1_000);
                    }
                }
            });
        }
    });
    start.elapsed()
}

fn threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("throughput");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    for threads in [1u64, 2] {
        let sketch = dense_sketch();
        g.throughput(Throughput::Elements(BATCH * threads));
        g.bench_function(format!("{threads}_thread"), |b| {
            b.iter_custom(|iters| run_threads(&sketch, threads, iters))
        });
    }
    g.finish();

    // The estimate path (status/metrics): a 30-day window over 30 dense days.
    let s = WindowedSketch::new(SketchConfig::default());
    for i in 0..3_000_000u64 {
        s.insert(i, T0 + (i % 30) * DAY_MS);
    }
    c.bench_function("estimate_30d_dense", |b| {
        b.iter(|| s.estimate(black_box(30 * DAY_MS), black_box(T0 + 29 * DAY_MS)))
    });
}

criterion_group!(benches, single_thread, threads);
criterion_main!(benches);
