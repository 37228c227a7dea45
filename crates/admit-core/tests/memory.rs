//! Memory of the exact per-customer state, measured with a counting allocator: bytes per
//! open window entry at 1M entries (target: 64 bytes or less), and memory back at its
//! baseline once every window has expired and the reclaiming tick ran.
#![allow(unsafe_code)] // a counting global allocator needs `unsafe impl GlobalAlloc`

mod support;
use admit_core::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use support::*;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Bytes a registered number may hold (its records and its scope's, before any
/// conversation), measured in `window_entries_are_compact_and_reclaimed`.
const PER_NUMBER_BYTES: f64 = 1_000.0;

/// One test body so that no other test allocates while this one measures.
#[test]
fn window_entries_are_compact_and_reclaimed() {
    const NUMBERS: u64 = 1_000;
    const PER_NUMBER: u64 = 1_000;
    let mut e = Engine::new();
    let empty = live();
    for n in 0..NUMBERS {
        e.apply(
            Command::RegisterNumber(NumberRegistration {
                number: Some(num(&(10_000 + n).to_string())),
                limit: Some(Limit::Unlimited),
                ..Default::default()
            }),
            T0,
        )
        .unwrap();
    }
    let base = live();
    // a registered number: its record, its scope's (with the limit's event log) and
    // their index entries; tables grow by doubling, so this is an average over
    // tables filled between half and whole
    let per_number = (base - empty) as f64 / NUMBERS as f64;
    println!("registered numbers: {NUMBERS}, {per_number:.1} bytes each");
    assert!(
        per_number <= PER_NUMBER_BYTES,
        "{per_number:.1} bytes per number"
    );
    for n in 0..NUMBERS {
        let number = num(&(10_000 + n).to_string());
        for c in 0..PER_NUMBER {
            e.apply(
                Command::Inbound(Inbound {
                    number,
                    customer: cust(c),
                    kind: InboundKind::Message,
                    text: None,
                    event_key: None,
                }),
                Ts(T0.0 + n),
            )
            .unwrap();
        }
    }
    let entries = e.reader().window_entries() as isize;
    assert_eq!(entries, (NUMBERS * PER_NUMBER) as isize);
    let per_entry = (live() - base) as f64 / entries as f64;
    println!("service-window entries: {entries}, {per_entry:.1} bytes per entry");
    assert!(per_entry <= 64.0, "{per_entry:.1} bytes per window entry");

    // every window ends; the tick reclaims them and memory returns to the baseline
    e.apply(Command::Tick, Ts(T0.0 + DAY + NUMBERS)).unwrap();
    assert_eq!(e.reader().window_entries(), 0);
    let after = live() - base;
    println!("after expiry: {after} bytes above the baseline");
    assert!(
        after < 64 * 1024,
        "{after} bytes still held after every window ended"
    );

    // conversations: the window entry plus the scope's event log
    let base = live();
    let number = num("10000");
    let conv = 200_000u64;
    for c in 0..conv {
        let d = e
            .apply(
                Command::Admit(AdmitRequest {
                    number,
                    customer: cust(c),
                    kind: util(),
                    idempotency_key: None,
                }),
                Ts(T0.0 + 2 * DAY),
            )
            .unwrap();
        assert!(matches!(
            d,
            Output::Decision(Decision { counted: true, .. })
        ));
    }
    let per_conv = (live() - base) as f64 / conv as f64;
    println!("open conversations: {conv}, {per_conv:.1} bytes each (window entry + event log)");
    e.apply(Command::Tick, Ts(T0.0 + 3 * DAY)).unwrap();
    let after = live() - base;
    println!("after expiry: {after} bytes above the baseline");
    assert!(
        after < 64 * 1024,
        "{after} bytes still held after every conversation ended"
    );

    r8_buckets();
}

/// R8's leader-local buckets: bytes per pair bucket with many numbers of one
/// recent customer each (sends spread over a portfolio) and with one number of
/// many (a campaign), and nothing left once a sweep finds them all full again.
fn r8_buckets() {
    use admit_core::rate::{Rate, RateLimiter};
    let throughput = Rate::per_second(1_000_000);
    let pair = Rate::every(Dur::secs(6), 45);
    let cases: [(u64, u64, f64); 2] = [(100_000, 1, 200.0), (1, 200_000, 48.0)];
    for (numbers, customers, bound) in cases {
        let base = live();
        let rl = RateLimiter::default();
        for n in 0..numbers {
            let number = num(&(20_000_000 + n).to_string());
            for c in 0..customers {
                rl.try_take(number, cust(c), throughput, pair, T0).unwrap();
            }
        }
        assert_eq!(rl.len() as u64, numbers * (customers + 1));
        let per_pair = (live() - base) as f64 / (numbers * customers) as f64;
        println!(
            "R8 buckets: {numbers} numbers x {customers} customers, {per_pair:.1} bytes a pair"
        );
        assert!(per_pair <= bound, "{per_pair:.1} bytes a pair bucket");
        rl.sweep(Ts(T0.0 + 6_000));
        assert!(rl.is_empty());
        let after = live() - base;
        assert!(after < 64 * 1024, "{after} bytes held after the sweep");
    }
}
