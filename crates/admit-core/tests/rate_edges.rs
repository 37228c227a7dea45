//! R8.1 and R8.2's buckets at their edges, from outside the crate: a sweep
//! forgets a bucket only once it is full again (the millisecond before, it
//! still binds; at that millisecond it is gone), and the limiter's size
//! counts both kinds of bucket. Found by `cargo mutants` on `rate.rs`
//! (docs/testing.md): no test read `sweep`'s edge or `len`.

use admit_core::rate::{Rate, RateDenial, RateLimiter};
use admit_core::{NumberId, Ts, WaId};

fn number() -> NumberId {
    NumberId::parse("n", "1").unwrap()
}

fn customer(i: u64) -> WaId {
    WaId::parse("c", &(4_915_100_000 + i).to_string()).unwrap()
}

/// Far more than any test takes: this rate never binds.
fn wide() -> Rate {
    Rate::per_second(1_000_000)
}

#[test]
fn r8_1_a_sweep_keeps_a_throughput_bucket_until_it_is_full_again() {
    let rl = RateLimiter::default();
    // 2 per second, burst 2: two sends at 1 s empty the bucket; it is full
    // again at 2 s (2,000 ms)
    let tp = Rate::per_second(2);
    for i in 0..2 {
        rl.try_take(number(), customer(i), tp, wide(), Ts(1_000))
            .unwrap();
    }
    // 1 ms before: the number's bucket is kept (the pairs' are full again)
    rl.sweep(Ts(1_999));
    assert_eq!(rl.len(), 1, "the throughput bucket stays until 2,000 ms");
    assert!(!rl.is_empty());
    // ... and still binds: one cell back by 1,999 ms, not a full burst
    rl.try_take(number(), customer(2), tp, wide(), Ts(1_999))
        .unwrap();
    assert!(matches!(
        rl.try_take(number(), customer(3), tp, wide(), Ts(1_999)),
        Err(RateDenial::Throughput { .. })
    ));
    // the take at 1,999 ms moved the bucket's time to 2,500 ms: full again
    // then, and forgotten at that very millisecond
    rl.sweep(Ts(2_499));
    assert_eq!(rl.len(), 1);
    rl.sweep(Ts(2_500));
    assert_eq!(rl.len(), 0, "a full bucket is forgotten at its time");
    assert!(rl.is_empty());
}

#[test]
fn r8_2_a_sweep_keeps_a_pair_bucket_until_it_is_full_again() {
    let rl = RateLimiter::default();
    // one per 6 s, burst 2: two sends at 10 s; full again at 22 s
    let pair = Rate::every(admit_core::Dur::secs(6), 2);
    for _ in 0..2 {
        rl.try_take(number(), customer(0), wide(), pair, Ts(10_000))
            .unwrap();
    }
    rl.sweep(Ts(21_999));
    assert_eq!(rl.len(), 1, "the pair bucket stays until 22,000 ms");
    // still binds: one cell back by 16 s, the second only at 22 s
    rl.try_take(number(), customer(0), wide(), pair, Ts(21_999))
        .unwrap();
    assert_eq!(
        rl.try_take(number(), customer(0), wide(), pair, Ts(21_999))
            .err(),
        Some(RateDenial::Pair {
            retry_at: Ts(22_000)
        })
    );
    // the take at 21,999 ms moved the bucket's time one interval on from
    // 22,000 ms: full again at 28,000 ms, and forgotten then
    rl.sweep(Ts(27_999));
    assert_eq!(rl.len(), 1);
    rl.sweep(Ts(28_000));
    assert_eq!(rl.len(), 0, "a full pair bucket is forgotten at its time");
}

#[test]
fn r8_the_limiter_counts_number_and_pair_buckets() {
    let rl = RateLimiter::default();
    assert!(rl.is_empty());
    assert_eq!(rl.len(), 0);
    let slow = Rate::per_second(1);
    rl.try_take(number(), customer(0), slow, slow, Ts(1_000))
        .unwrap();
    // one number's bucket and one pair's
    assert_eq!(rl.len(), 2);
    assert!(!rl.is_empty());
    // a send the number's bucket refuses adds no pair bucket
    rl.try_take(number(), customer(1), slow, slow, Ts(1_000))
        .unwrap_err();
    assert_eq!(rl.len(), 2);
}
