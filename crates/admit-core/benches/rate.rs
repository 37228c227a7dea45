//! R8's token buckets under a campaign: every send a new customer, so every
//! take adds a pair bucket, and a sweep forgets the full ones as the tick
//! loop does. Time moves 1 ms per 200 takes (200,000 sends a second, about
//! 1.2M pair buckets held at R8.2's 6 s).
//!
//! `cargo bench -p admit-core --bench rate`

use admit_core::rate::{Rate, RateLimiter};
use admit_core::{Dur, NumberId, Ts, WaId};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

const T0: u64 = 1_767_571_200_000;
const RING: u64 = 2_000_000;

fn num(i: u64) -> NumberId {
    NumberId::parse("number", &(15_550_000_000 + i).to_string()).unwrap()
}

fn run(c: &mut Criterion, name: &str, numbers: u64) {
    let ids: Vec<NumberId> = (0..numbers).map(num).collect();
    let throughput = Rate::per_second(1_000_000);
    let pair = Rate::every(Dur::secs(6), 45);
    // 10 s of customers: one taken again was swept (full) 4 s before
    let customers: Vec<WaId> = (0..RING)
        .map(|i| WaId::parse("c", &(491_500_000_000 + i).to_string()).unwrap())
        .collect();
    let rl = RateLimiter::default();
    let mut k = 0u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            k += 1;
            let now = Ts(T0 + k / 200);
            if k.is_multiple_of(100_000) {
                rl.sweep(now);
            }
            let customer = customers[(k % RING) as usize];
            black_box(rl.try_take(ids[(k % numbers) as usize], customer, throughput, pair, now))
        })
    });
}

fn campaign(c: &mut Criterion) {
    run(c, "r8/new_pairs_one_number", 1);
    run(c, "r8/new_pairs_100k_numbers", 100_000);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = campaign
}
criterion_main!(benches);
