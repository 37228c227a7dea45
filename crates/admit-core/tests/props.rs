//! Property tests: random interleavings of admits, retries, releases, inbound messages,
//! opt-outs and time jumps on several numbers and a shared portfolio. Every decision must
//! equal a brute-force reference model written plainly below, and no rolling 24 h window
//! may ever hold more than L counted conversations (R3.4). A replay test checks that the
//! same command log gives byte-identical snapshots, also across a snapshot and restore.

mod support;
use admit_core::*;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use support::*;

const NUMBERS: [&str; 4] = ["11", "12", "21", "22"];
const WINDOW: u64 = DAY;

#[derive(Clone, Debug)]
enum Op {
    Admit {
        number: usize,
        customer: u64,
        template: bool,
        key: Option<u8>,
    },
    Release {
        pick: usize,
    },
    Inbound {
        number: usize,
        customer: u64,
        text: Option<&'static str>,
    },
    Wait {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4usize, 0..7u64, any::<bool>(), prop::option::of(0..6u8)).prop_map(
            |(number, customer, template, key)| Op::Admit { number, customer, template, key }
        ),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        2 => (0..4usize, 0..7u64, prop::sample::select(vec![None, Some("hi"), Some("STOP"), Some("start")]))
            .prop_map(|(number, customer, text)| Op::Inbound { number, customer, text }),
        2 => prop_oneof![0..2u64, 0..3_600_000u64, Just(WINDOW - 1), Just(WINDOW), 0..30 * 3_600_000u64]
            .prop_map(|ms| Op::Wait { ms }),
    ]
}

/// Numbers 11 and 12 have their own limits (seeds, 3 and 2); 21 and 22 share portfolio
/// P's limit of 3 (meta). Local upgrades are off so that limits stay put.
fn setup(e: &mut Engine) {
    for (name, base) in [("flat", Policy::seeds()), ("flat-p", Policy::meta())] {
        let mut p = base;
        p.name = name.into();
        p.upgrade = None;
        p.first_upgrade = None;
        p.flagged_downgrade = false;
        e.apply(Command::SetPolicy(p), T0).unwrap();
    }
    let reg = |n: &str, profile: &str, limit: u32, portfolio: Option<&str>| {
        Command::RegisterNumber(NumberRegistration {
            number: Some(num(n)),
            profile: Some(profile.into()),
            limit: Some(Limit::Capped(limit)),
            portfolio: portfolio.map(|p| PortfolioId::parse("portfolio", p).unwrap()),
            ..Default::default()
        })
    };
    for c in [
        reg("11", "flat", 3, None),
        reg("12", "flat", 2, None),
        reg("21", "flat-p", 3, Some("P")),
        reg("22", "flat-p", 3, Some("P")),
    ] {
        e.apply(c, T0).unwrap();
    }
}

fn scope_of(number: usize) -> usize {
    [0, 1, 2, 2][number]
}
fn limit_of(scope: usize) -> usize {
    [3, 2, 3][scope]
}

#[derive(Clone, Debug)]
struct Bic {
    scope: usize,
    number: usize,
    customer: u64,
    ts: u64,
    live: bool,
    id: AdmissionId,
}

/// The reference: the rules as plainly as they can be written, state as flat lists.
#[derive(Default)]
struct Model {
    csw: HashMap<(usize, u64), u64>,
    bics: Vec<Bic>,
    optout: HashSet<(usize, u64)>,
    keys: HashMap<u8, (usize, u64, bool, Decision, u64)>,
}

impl Model {
    fn counted(&self, scope: usize, now: u64) -> HashMap<u64, u64> {
        // customer -> the end of its latest live conversation in the window
        let mut m = HashMap::new();
        for b in &self.bics {
            if b.scope == scope && b.live && b.ts + WINDOW > now {
                let end = m.entry(b.customer).or_insert(0);
                *end = (*end).max(b.ts + WINDOW);
            }
        }
        m
    }

    fn decide(
        &mut self,
        number: usize,
        customer: u64,
        template: bool,
        now: u64,
    ) -> (Reason, Option<u64>, bool) {
        let scope = scope_of(number);
        if template && self.optout.contains(&(scope, customer)) {
            return (Reason::OptedOut, None, false);
        }
        if self
            .csw
            .get(&(number, customer))
            .is_some_and(|t| t + WINDOW > now)
        {
            return (Reason::ServiceWindow, None, false);
        }
        let open = self
            .bics
            .iter()
            .any(|b| b.number == number && b.customer == customer && b.live && b.ts + WINDOW > now);
        if open {
            return (Reason::OpenConversation, None, false);
        }
        if !template {
            return (Reason::OutsideServiceWindow, None, false);
        }
        let counted = self.counted(scope, now);
        if counted.contains_key(&customer) {
            return (Reason::NewConversation, None, false);
        }
        if counted.len() >= limit_of(scope) {
            return (Reason::LimitReached, counted.values().min().copied(), false);
        }
        (Reason::NewConversation, None, true)
    }
}

fn run(ops: &[Op], check: bool) -> H {
    let mut h = H::new();
    let mut e = Engine::new();
    setup(&mut e);
    h.log.clear();
    h.e = e;
    let mut m = Model::default();
    let mut now = T0.0;
    let mut ids: Vec<AdmissionId> = Vec::new();
    for op in ops {
        engine_within_limits(&h, &m, now, check);
        match op.clone() {
            Op::Wait { ms } => now += ms,
            Op::Inbound {
                number,
                customer,
                text,
            } => {
                h.inbound(NUMBERS[number], customer, text, Ts(now));
                m.csw.insert((number, customer), now);
                let scope = scope_of(number);
                match text {
                    Some("STOP") => {
                        m.optout.insert((scope, customer));
                    }
                    Some("start") => {
                        m.optout.remove(&(scope, customer));
                    }
                    _ => {}
                }
            }
            Op::Release { pick } => {
                if ids.is_empty() {
                    continue;
                }
                let id = ids[pick % ids.len()].clone();
                let out = h.apply(Command::Release(id.clone()), Ts(now)).unwrap();
                let scope = m.bics.iter().find(|b| b.id == id).expect("issued").scope;
                let before = m.counted(scope, now).len();
                let b = m.bics.iter_mut().find(|b| b.id == id).expect("issued");
                let live = b.live && b.ts + WINDOW > now;
                b.live = false;
                if live {
                    // R3.5: a released admission's key no longer replays it
                    m.keys.retain(|_, k| k.3.admission.as_ref() != Some(&id));
                }
                // released only if a customer is no longer counted (in a portfolio,
                // another number's conversation may still count the customer)
                let uncounted = m.counted(scope, now).len() < before;
                if check {
                    assert_eq!(
                        out,
                        Output::Released {
                            released: uncounted
                        },
                        "release {id}"
                    );
                }
            }
            Op::Admit {
                number,
                customer,
                template,
                key,
            } => {
                let kind = if template {
                    mkt_or_util(customer)
                } else {
                    SendKind::FreeForm
                };
                let req = AdmitRequest {
                    number: num(NUMBERS[number]),
                    customer: cust(customer),
                    kind,
                    idempotency_key: key
                        .map(|k| IdempotencyKey::parse("k", &format!("key-{k}")).unwrap()),
                };
                let got = h.admit_req(req, Ts(now));
                // the reference's idempotency: same key, same request -> same decision
                if let Some(k) = key {
                    if let Some((n, c, t, d, exp)) = m.keys.get(&k).cloned() {
                        if exp > now {
                            if check {
                                if (n, c, t) == (number, customer, template) {
                                    assert_eq!(
                                        got.as_ref().unwrap(),
                                        &Decision {
                                            replayed: true,
                                            ..d
                                        },
                                        "replayed decision"
                                    );
                                } else {
                                    assert!(matches!(got, Err(CoreError::IdempotencyConflict(_))));
                                }
                            }
                            continue;
                        }
                    }
                }
                let got = got.unwrap();
                let template_marketing = template && customer.is_multiple_of(2);
                let (reason, retry, counted) = {
                    // opt-outs block marketing only (odd customers get utility templates)
                    let scope = scope_of(number);
                    let opted = m.optout.contains(&(scope, customer));
                    if template && !template_marketing && opted {
                        m.optout.remove(&(scope, customer));
                        let r = m.decide(number, customer, template, now);
                        m.optout.insert((scope, customer));
                        r
                    } else {
                        m.decide(number, customer, template, now)
                    }
                };
                if check {
                    assert_eq!(got.reason, reason, "{op:?} at +{}ms", now - T0.0);
                    assert_eq!(got.allowed, reason.allows());
                    assert_eq!(got.counted, counted);
                    if reason == Reason::LimitReached {
                        assert_eq!(got.retry_at, retry.map(Ts));
                    }
                }
                if reason == Reason::NewConversation {
                    let id = got.admission.clone().expect("a new conversation has an id");
                    m.bics.push(Bic {
                        scope: scope_of(number),
                        number,
                        customer,
                        ts: now,
                        live: true,
                        id: id.clone(),
                    });
                    ids.push(id);
                }
                if let Some(k) = key {
                    m.keys
                        .insert(k, (number, customer, template, got.clone(), now + DAY));
                }
                if check {
                    let used = m.counted(scope_of(number), now).len() as u32;
                    assert_eq!(got.used, used, "used after {op:?}");
                }
            }
        }
    }
    engine_within_limits(&h, &m, now, check);
    h
}

/// R3.4 on the engine's own state, read through its status: no scope's rolling 24 h
/// window holds more than L counted conversations, Restricted says exactly when it holds
/// L, and (when checking against the reference) it holds the reference's count.
fn engine_within_limits(h: &H, m: &Model, now: u64, check: bool) {
    for (scope, number) in [(0, 0), (1, 1), (2, 2)] {
        let s = h.status(NUMBERS[number], Ts(now));
        let l = limit_of(scope) as u32;
        assert!(s.used <= l, "scope {scope} holds {} > {l}", s.used);
        assert_eq!(s.restricted, s.used == l, "scope {scope} restricted");
        if check {
            let want = m.counted(scope, now).len() as u32;
            assert_eq!(s.used, want, "scope {scope} used at +{}ms", now - T0.0);
        }
    }
}

fn mkt_or_util(customer: u64) -> SendKind {
    if customer.is_multiple_of(2) {
        mkt()
    } else {
        util()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, .. ProptestConfig::default() })]

    #[test]
    fn r3_4_decisions_match_the_reference_and_never_exceed_the_limit(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops, true);
    }

    #[test]
    fn replay_gives_byte_identical_snapshots(ops in prop::collection::vec(op(), 1..60), cut in any::<prop::sample::Index>()) {
        let a = run(&ops, false);
        let replay = |cmds: &[(Command, Ts)], mut e: Engine| {
            for (c, t) in cmds {
                let _ = e.apply(c.clone(), *t);
            }
            e
        };
        let mut fresh = Engine::new();
        setup(&mut fresh);
        let b = replay(&a.log, fresh);
        prop_assert_eq!(a.e.snapshot(), b.snapshot());
        // a replica that restores a snapshot taken midway, then applies the rest, agrees
        let cut = cut.index(a.log.len() + 1);
        let mut first = Engine::new();
        setup(&mut first);
        let first = replay(&a.log[..cut], first);
        let restored = Engine::restore(&first.snapshot()).unwrap();
        let rest = replay(&a.log[cut..], restored);
        prop_assert_eq!(rest.snapshot(), a.e.snapshot());
    }
}
