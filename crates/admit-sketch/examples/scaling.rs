//! Two threads sharing one sketch against one thread, with the process's CPU
//! time next to the wall time so a busy machine shows up (a CPU/wall ratio
//! below the thread count means the threads did not get a core each).
//!
//! Run: `cargo run --release -p admit-sketch --example scaling`

use std::time::Instant;

use admit_sketch::{SketchConfig, WindowedSketch};

const T0: u64 = 1_735_689_600_000;
const PER_THREAD: u64 = 50_000_000;

/// utime + stime of this process in clock ticks (Linux), if readable.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn dense_sketch() -> WindowedSketch {
    let sketch = WindowedSketch::new(SketchConfig::default());
    for i in 0..1_000_000u64 {
        sketch.insert(i, T0 + i % 1_000);
    }
    sketch
}

/// Inserts/s and CPU/wall for `threads` threads on one shared sketch, or on
/// one sketch each when `!shared` (the control: no shared memory at all).
fn run(threads: u64, shared: bool) -> (f64, f64) {
    let sketches: Vec<WindowedSketch> = (0..if shared { 1 } else { threads })
        .map(|_| dense_sketch())
        .collect();
    let cpu0 = cpu_ticks();
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let sketch = &sketches[if shared { 0 } else { t as usize }];
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    sketch.insert((t << 48) | i, T0 + i % 1_000);
                }
            });
        }
    });
    let wall = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_ticks()) {
        (Some(a), Some(b)) => (b - a) as f64 / 100.0, // USER_HZ is 100 on Linux
        _ => f64::NAN,
    };
    ((threads * PER_THREAD) as f64 / wall, cpu / wall)
}

fn main() {
    let rounds = 5;
    // best[shared?][threads - 1]
    let mut best = [[0.0f64; 2]; 2];
    for round in 0..rounds {
        for shared in [true, false] {
            for threads in [1u64, 2] {
                let (rate, util) = run(threads, shared);
                println!(
                    "round {round} {} threads {threads}: {:7.1} M inserts/s, CPU/wall {util:.2}",
                    if shared {
                        "shared sketch  "
                    } else {
                        "sketch per thread"
                    },
                    rate / 1e6
                );
                let b = &mut best[usize::from(shared)][threads as usize - 1];
                *b = b.max(rate);
            }
        }
    }
    for (shared, name) in [(1, "shared sketch"), (0, "sketch per thread (control)")] {
        let [one, two] = best[shared];
        println!(
            "best, {name}: 1 thread {:.1} M/s, 2 threads {:.1} M/s, ratio {:.2}x",
            one / 1e6,
            two / 1e6,
            two / one
        );
    }
}
