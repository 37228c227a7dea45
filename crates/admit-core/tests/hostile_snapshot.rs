//! Hostile input (issue 11): snapshot bytes a replica receives from its
//! leader, or reads back from its own disk, may be damaged. Random bytes and
//! valid snapshots with bytes flipped, cut short, extended or spliced are
//! loaded with `Engine::restore` and `Engine::load_snapshot`: never a panic;
//! a damaged snapshot is an error (and leaves a loaded engine as it was) or
//! a state that snapshots again without a panic.
//!
//! Bounded case counts so `cargo test` runs it in seconds;
//! `PROPTEST_CASES=100000 cargo test -p admit-core --test hostile_snapshot`
//! runs more.

use admit_core::*;
use proptest::prelude::*;

const T0: Ts = Ts(1_893_456_000_000);

/// Case count: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An engine with a bit of every kind of state: numbers in both profiles,
/// a portfolio, counted conversations, keyed sends, service windows, an
/// opt-out.
fn populated() -> Engine {
    let mut e = Engine::new();
    let mut reg = |n: &str, portfolio: Option<&str>, profile: &str| {
        let c = Command::RegisterNumber(NumberRegistration {
            number: Some(NumberId::parse("n", n).unwrap()),
            profile: Some(profile.into()),
            limit: Some(Limit::Capped(5)),
            portfolio: portfolio.map(|p| PortfolioId::parse("p", p).unwrap()),
            ..Default::default()
        });
        e.apply(c, T0).unwrap();
    };
    reg("100200300", None, "seeds");
    reg("100200301", Some("waba-1"), "meta");
    for (i, n) in ["100200300", "100200301"].iter().enumerate() {
        for c in 0..8u64 {
            let customer = WaId::parse("c", &(491_500_000_000 + c).to_string()).unwrap();
            let number = NumberId::parse("n", n).unwrap();
            if c % 3 == 0 {
                let _ = e.apply(
                    Command::Inbound(Inbound {
                        number,
                        customer,
                        kind: InboundKind::Message,
                        text: Some(if c == 3 { "STOP" } else { "hi" }.into()),
                        event_key: Some(format!("ev-{i}-{c}")),
                    }),
                    Ts(T0.0 + c),
                );
            }
            let _ = e.apply(
                Command::Admit(AdmitRequest {
                    number,
                    customer,
                    kind: SendKind::Template {
                        id: TemplateId::parse("t", "welcome").unwrap(),
                        category: if c % 2 == 0 {
                            Category::Marketing
                        } else {
                            Category::Utility
                        },
                    },
                    idempotency_key: (c % 2 == 1)
                        .then(|| IdempotencyKey::parse("k", &format!("k-{c}")).unwrap()),
                }),
                Ts(T0.0 + 100 + c),
            );
        }
    }
    e
}

/// Loads `bytes` both ways; panics only if the engine does.
fn load(bytes: &[u8]) {
    if let Ok(e) = Engine::restore(bytes) {
        // whatever was accepted is a state the engine can work with
        let _ = e.snapshot();
    }
    let mut e = populated();
    let before = e.snapshot();
    if e.load_snapshot(bytes).is_err() {
        assert_eq!(e.snapshot(), before, "a refused snapshot changed the state");
    }
}

#[derive(Clone, Debug)]
enum Damage {
    Flip { at: usize, xor: u8 },
    Cut { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Overwrite { at: usize, bytes: Vec<u8> },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, xor)| Damage::Flip { at, xor }),
        any::<usize>().prop_map(|at| Damage::Cut { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
        (any::<usize>(), 1..32usize).prop_map(|(at, len)| Damage::Remove { at, len }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(at, bytes)| Damage::Overwrite { at, bytes }),
    ]
}

/// Applies the damage to `b` (positions taken modulo its length).
fn apply(b: &mut Vec<u8>, d: &Damage) {
    let n = b.len().max(1);
    match d {
        Damage::Flip { at, xor } => {
            if !b.is_empty() {
                b[at % n] ^= xor;
            }
        }
        Damage::Cut { at } => b.truncate(at % n),
        Damage::Insert { at, bytes } => {
            let at = at % (b.len() + 1);
            b.splice(at..at, bytes.iter().copied());
        }
        Damage::Remove { at, len } => {
            let at = at % n;
            let end = (at + len).min(b.len());
            if at < end {
                b.drain(at..end);
            }
        }
        Damage::Overwrite { at, bytes } => {
            for (i, x) in bytes.iter().enumerate() {
                let j = (at + i) % n;
                if j < b.len() {
                    b[j] = *x;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn random_bytes_never_panic(version in 0..=6u8, rest in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut b = vec![version];
        b.extend(rest);
        load(&b);
    }

    #[test]
    fn damaged_snapshots_never_panic(ds in prop::collection::vec(damage(), 1..6)) {
        let mut b = populated().snapshot();
        for d in &ds {
            apply(&mut b, d);
        }
        load(&b);
    }
}

/// The empty snapshot and an unknown version are refused by name.
#[test]
fn empty_and_unknown_versions_are_refused() {
    assert!(matches!(Engine::restore(&[]), Err(SnapshotError::Empty)));
    assert!(matches!(
        Engine::restore(&[99, 0, 0]),
        Err(SnapshotError::Version(99))
    ));
    // the populated state round-trips, so the damage above starts from a
    // snapshot that loads
    let s = populated().snapshot();
    assert_eq!(Engine::restore(&s).unwrap().snapshot(), s);
}
