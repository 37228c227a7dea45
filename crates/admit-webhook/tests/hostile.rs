//! Hostile input (issue 11): the webhook payload parser and translation fed
//! random bytes, damaged real deliveries (the fixtures with bytes flipped,
//! cut or spliced) and well-formed JSON with any value replaced by another
//! of any type. Never a panic; a refused delivery says why (a non-empty
//! reason, naming the change for a known field of the wrong shape). Over
//! a real loopback listener: damaged deliveries get 401 (damaged after
//! signing) or 400 with a reason and hand nothing on, or 413 when too large.
//!
//! Bounded case counts so `cargo test` runs it in seconds;
//! `PROPTEST_CASES=100000 cargo test -p admit-webhook --test hostile` runs
//! more.

#[path = "../../../tests/support/seeded.rs"]
mod seeded;
mod support;

use admit_webhook::{translate, Secret};
use proptest::prelude::*;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::Value;
use support::{
    deliver, exchange, fixture, hook_config, post_head, Flaky, DISPLAY, MAX_BODY, NUMBER, SECRET,
};

/// Case count: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const FIXTURES: [&str; 12] = [
    "account_restriction.json",
    "calls.json",
    "capability_update.json",
    "messages_inbound.json",
    "messages_statuses.json",
    "mixed_unknown.json",
    "quality_flagged.json",
    "quality_throughput.json",
    "quality_update.json",
    "template_quality.json",
    "template_status.json",
    "user_preferences.json",
];

/// Parses and translates `body`; panics only if the receiver does.
fn receive(body: &[u8]) -> Result<(), TestCaseError> {
    match translate::parse(body) {
        Err(why) => prop_assert!(!why.is_empty()),
        Ok(env) => {
            let known = |d: &str| (d == DISPLAY).then(|| NUMBER.to_owned());
            if let Err(why) = translate::translate(&env, &known) {
                prop_assert!(!why.is_empty());
            }
        }
    }
    Ok(())
}

/// Any JSON value, nested a little.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
        "[0-9]{0,25}".prop_map(Value::String),
        prop_oneof![
            Just("TIER_250"),
            Just("UPGRADE"),
            Just("FLAGGED"),
            Just("whatsapp_business_account"),
            Just("messages"),
            Just("STOP"),
            Just("failed"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every position in `v` (object members and array items), depth first.
fn positions(v: &Value, at: &mut Vec<Vec<PathStep>>, here: &mut Vec<PathStep>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                here.push(PathStep::Key(k.clone()));
                at.push(here.clone());
                positions(x, at, here);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                here.push(PathStep::Item(i));
                at.push(here.clone());
                positions(x, at, here);
                here.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathStep {
    Key(String),
    Item(usize),
}

fn at_mut<'a>(v: &'a mut Value, path: &[PathStep]) -> &'a mut Value {
    path.iter().fold(v, |v, s| match s {
        PathStep::Key(k) => &mut v[k.as_str()],
        PathStep::Item(i) => &mut v[*i],
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn random_bytes_are_refused_with_a_reason(b in prop::collection::vec(any::<u8>(), 0..512)) {
        receive(&b)?;
    }

    #[test]
    fn damaged_deliveries_never_panic(
        f in 0..FIXTURES.len(),
        at in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        bytes in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut b = fixture(FIXTURES[f]);
        let i = at.index(b.len());
        b.splice(i..(i + bytes.len()).min(b.len()), bytes);
        receive(&b)?;
        b.truncate(cut.index(b.len() + 1));
        receive(&b)?;
    }

    /// Well-formed JSON of Meta's shape with one to three values replaced
    /// by any other JSON value: what a changed or hostile sender sends.
    #[test]
    fn any_value_of_the_wrong_type_is_refused_or_ignored(
        f in 0..FIXTURES.len(),
        picks in prop::collection::vec((any::<prop::sample::Index>(), json()), 1..4),
    ) {
        let mut v: Value = serde_json::from_slice(&fixture(FIXTURES[f])).unwrap();
        for (pick, new) in picks {
            let mut all = Vec::new();
            positions(&v, &mut all, &mut Vec::new());
            if all.is_empty() {
                break;
            }
            *at_mut(&mut v, &all[pick.index(all.len())]) = new;
        }
        receive(&serde_json::to_vec(&v).unwrap())?;
    }
}

/// The fixtures themselves go through: the damage starts from deliveries
/// that are accepted.
#[test]
fn the_undamaged_fixtures_translate() {
    for f in FIXTURES {
        let env = translate::parse(&fixture(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        translate::translate(&env, &|_| None).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

/// A number below `n` from `rng`.
fn below(rng: &mut TestRng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// Damaged deliveries over a real loopback listener. Damaged after Meta
/// signed them: 401, nothing handed on. Signed after the damage (a sender
/// holding the secret, or a changed format): 200, or 400 with a reason and
/// nothing handed on (a delivery is translated whole before any of it is
/// applied). Never a 5xx, never a hang. Over the size limit: 413.
#[tokio::test]
async fn damaged_deliveries_over_http_change_nothing_when_refused() {
    let seed = seeded::seed("HOSTILE_SEED");
    let runs = cases(48);
    println!("{runs} deliveries, HOSTILE_SEED={seed}");
    let sink = Flaky::default();
    let calls = || sink.applied.load(std::sync::atomic::Ordering::SeqCst);
    let hook = admit_webhook::serve(
        hook_config(vec![(DISPLAY.into(), NUMBER.into())]),
        sink.clone(),
    )
    .await
    .unwrap();
    let addr = hook.local_addr();
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes);
    let mut refused = 0;
    for _ in 0..runs {
        let original = fixture(FIXTURES[below(&mut rng, FIXTURES.len())]);
        let mut b = original.clone();
        match below(&mut rng, 3) {
            0 => {
                for _ in 0..1 + below(&mut rng, 4) {
                    let i = below(&mut rng, b.len());
                    b[i] ^= 1 + below(&mut rng, 255) as u8;
                }
            }
            1 => b.truncate(below(&mut rng, b.len())),
            _ => {
                let i = below(&mut rng, b.len());
                let junk: Vec<u8> = (0..1 + below(&mut rng, 8))
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                b.splice(i..i, junk);
            }
        }
        let before = calls();
        let meta_signed = Secret::new(SECRET).sign(&original);
        let a = exchange(addr, post_head(b.len(), Some(&meta_signed)), &b).await;
        assert_eq!(a.code, 401, "damaged after signing (seed {seed}): {a:?}");
        assert!(!a.body.trim().is_empty(), "{a:?}");
        assert_eq!(calls(), before, "a 401 handed actions on");

        let a = deliver(addr, &b).await;
        match a.code {
            200 => {}
            400 => {
                refused += 1;
                assert!(!a.body.trim().is_empty(), "a 400 without a reason");
                assert_eq!(calls(), before, "a 400 handed actions on: {a:?}");
            }
            _ => panic!("seed {seed}: {a:?} for {:?}", String::from_utf8_lossy(&b)),
        }
    }
    assert!(refused > 0, "no damaged delivery was refused (seed {seed})");
    let before = calls();
    let big: Vec<u8> = (0..=MAX_BODY).map(|_| rng.next_u64() as u8).collect();
    let a = deliver(addr, &big).await;
    assert_eq!(a.code, 413, "{a:?}");
    assert!(a.body.contains("limit"), "{a:?}");
    assert_eq!(calls(), before);
    hook.shutdown().await;
}
