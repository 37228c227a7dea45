//! Admit decisions by path, in an engine holding 100K numbers and 1M open windows.
//!
//! `cargo bench -p admit-core --bench admit`

use admit_core::*;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::hint::black_box;

const T0: Ts = Ts(1_767_571_200_000);
const NUMBERS: u64 = 100_000;
const WINDOWS_PER_NUMBER: u64 = 10;

fn num(i: u64) -> NumberId {
    NumberId::parse("number", &(1_000_000 + i).to_string()).unwrap()
}
fn cust(i: u64) -> WaId {
    WaId::parse("customer", &(491_500_000_000 + i).to_string()).unwrap()
}
fn send(n: u64, c: u64) -> AdmitRequest {
    AdmitRequest {
        number: num(n),
        customer: cust(c),
        kind: SendKind::Template {
            id: TemplateId::parse("template", "receipt").unwrap(),
            category: Category::Utility,
        },
        idempotency_key: None,
    }
}

/// 100K numbers; customers 0..5 of each in a service window, 5..10 in an open
/// conversation: 1M open windows. Number 0 is at its limit.
fn engine() -> Engine {
    let mut e = Engine::new();
    for n in 0..NUMBERS {
        let limit = if n == 0 {
            Limit::Capped(250)
        } else {
            Limit::Unlimited
        };
        e.apply(
            Command::RegisterNumber(NumberRegistration {
                number: Some(num(n)),
                limit: Some(limit),
                ..Default::default()
            }),
            T0,
        )
        .unwrap();
        for c in 0..WINDOWS_PER_NUMBER / 2 {
            e.apply(
                Command::Inbound(Inbound {
                    number: num(n),
                    customer: cust(c),
                    kind: InboundKind::Message,
                    text: None,
                    event_key: None,
                }),
                T0,
            )
            .unwrap();
        }
        for c in WINDOWS_PER_NUMBER / 2..WINDOWS_PER_NUMBER {
            e.apply(Command::Admit(send(n, c)), T0).unwrap();
        }
    }
    for c in 100..345 {
        e.apply(Command::Admit(send(0, c)), T0).unwrap();
    }
    e
}

fn paths(c: &mut Criterion) {
    let mut e = engine();
    let r = e.reader();
    let now = Ts(T0.0 + 60_000);
    let mut g = c.benchmark_group("admit");
    // requests built ahead, spread over the numbers, so the loop times the decision only
    let spread = |offset: u64| -> Vec<AdmitRequest> {
        (0..4_096u64)
            .map(|k| {
                let n = (k * 7_919) % NUMBERS;
                send(n, offset + n % 5)
            })
            .collect()
    };
    let in_window = spread(0);
    let in_conversation = spread(5);
    let mut i = 0usize;
    g.bench_function("service_window/fast_path", |b| {
        b.iter(|| {
            i = (i + 1) & 4_095;
            let d = r.try_fast(&in_window[i], now);
            debug_assert_eq!(d.as_ref().map(|d| d.reason), Some(Reason::ServiceWindow));
            black_box(d)
        })
    });
    g.bench_function("open_conversation/fast_path", |b| {
        b.iter(|| {
            i = (i + 1) & 4_095;
            let d = r.try_fast(&in_conversation[i], now);
            debug_assert_eq!(d.as_ref().map(|d| d.reason), Some(Reason::OpenConversation));
            black_box(d)
        })
    });
    let mut fresh = 1_000u64;
    g.bench_function("new_conversation/apply", |b| {
        b.iter_batched(
            || {
                fresh += 1;
                send(1 + fresh % (NUMBERS - 1), fresh)
            },
            |req| black_box(e.apply(Command::Admit(req), now)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("limit_reached/apply", |b| {
        b.iter_batched(
            || {
                fresh += 1;
                send(0, fresh)
            },
            |req| black_box(e.apply(Command::Admit(req), now)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = paths
}
criterion_main!(benches);
