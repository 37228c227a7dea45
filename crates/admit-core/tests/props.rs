//! Property tests: random interleavings of admits, retries, releases, inbound messages,
//! opt-outs, account restrictions, template pauses, outcome holds, free entry points and
//! time jumps on several numbers and a shared portfolio, with the leader's R8 token
//! buckets in front of the engine as the server places them. Every decision must equal a
//! brute-force reference model written plainly below, and no rolling 24 h window of the
//! engine may ever hold more than L counted conversations (R3.4). A replay test checks
//! that the same command log gives byte-identical snapshots, also across a snapshot and
//! restore. Not modelled: tier changes (upgrades, downgrades, platform tiers: local
//! upgrades are off), the 130429 number back-off and template pauses of other lengths.

mod support;
use admit_core::rate::{Rate, RateDenial, RateLimiter};
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
    /// Section 10: a restriction of a number (`None`: portfolio P), `types` a bit set of
    /// [`TYPES`], until `until` ms from now (`None`: until lifted); or lifted.
    Restrict {
        number: Option<usize>,
        until: Option<u64>,
        types: u8,
        lifted: bool,
    },
    /// R6.2/R6.3: an event of the marketing ("promo") or utility ("receipt") template.
    Template {
        marketing: bool,
        event: u8,
    },
    /// Section 9: a reported outcome (`None`: delivered).
    Outcome {
        number: usize,
        customer: u64,
        code: Option<u32>,
    },
    /// R2.3: a free entry point (applied by the meta numbers only).
    FreeEntry {
        number: usize,
        customer: u64,
    },
}

const TYPES: [RestrictionType; 3] = [
    RestrictionType::BizInitiated,
    RestrictionType::CustomerInitiated,
    RestrictionType::AddPhoneNumber,
];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..4usize, 0..7u64, any::<bool>(), prop::option::of(0..6u8)).prop_map(
            |(number, customer, template, key)| Op::Admit { number, customer, template, key }
        ),
        2 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        4 => (0..4usize, 0..7u64, prop::sample::select(vec![None, Some("hi"), Some("STOP"), Some("start")]))
            .prop_map(|(number, customer, text)| Op::Inbound { number, customer, text }),
        5 => prop_oneof![0..2u64, 0..2_000u64, 0..20_000u64, 0..3_600_000u64, Just(WINDOW - 1), Just(WINDOW), 0..30 * 3_600_000u64]
            .prop_map(|ms| Op::Wait { ms }),
        // mostly timed and short, or lifted
        1 => (prop::option::of(0..4usize), prop::option::weighted(0.9, prop_oneof![0..3u64, 0..7_200_000u64]), 0..8u8, prop::bool::weighted(0.4))
            .prop_map(|(number, until, types, lifted)| Op::Restrict { number, until, types, lifted }),
        // mostly approvals, so that a disabled template does not stay so for long
        1 => (any::<bool>(), prop::sample::select(vec![0u8, 0, 0, 1, 2, 3, 4, 5]))
            .prop_map(|(marketing, event)| Op::Template { marketing, event }),
        2 => (0..4usize, 0..7u64, prop::sample::select(vec![None, Some(131056), Some(131048), Some(131049), Some(131050), Some(131047)]))
            .prop_map(|(number, customer, code)| Op::Outcome { number, customer, code }),
        1 => (0..4usize, 0..7u64).prop_map(|(number, customer)| Op::FreeEntry { number, customer }),
    ]
}

/// Numbers 11 and 12 have their own limits (seeds, 3 and 2); 21 and 22 share portfolio
/// P's limit of 3 (meta). Local upgrades are off but for number 12, whose profile climbs
/// a small ladder (2, 3, 4) when the 7-day count reaches its limit (R5.3's rule with a
/// 100% threshold and a 1 h wait), so that limits stay small.
fn setup(e: &mut Engine) {
    for (name, base) in [
        ("flat", Policy::seeds()),
        ("flat-p", Policy::meta()),
        ("up", Policy::seeds()),
    ] {
        let mut p = base;
        p.name = name.into();
        p.upgrade = None;
        p.first_upgrade = None;
        p.flagged_downgrade = false;
        if name == "up" {
            p.ladder = LADDER.iter().map(|&l| Limit::Capped(l as u32)).collect();
            p.initial_limit = Limit::Capped(2);
            p.upgrade = Some(UpgradeRule {
                window: Dur::days(7),
                threshold: Threshold::PercentOfLimit(100),
                min_quality: Quality::Medium,
                require_connected: true,
                require_display_name: true,
                delay: Dur(UPGRADE_WAIT),
            });
        }
        let (mps, every, burst) = rates_of(name == "flat-p");
        p.throughput_mps = mps;
        p.pair_interval = Dur(every);
        p.pair_burst = burst;
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
        reg("12", "up", 2, None),
        reg("21", "flat-p", 3, Some("P")),
        reg("22", "flat-p", 3, Some("P")),
    ] {
        e.apply(c, T0).unwrap();
    }
}

/// R8 of the profiles: (messages per second, pair interval in ms, pair burst), small so
/// that the buckets bind.
fn rates_of(portfolio: bool) -> (u32, u64, u32) {
    if portfolio {
        (2, 4_000, 2)
    } else {
        (4, 6_000, 1)
    }
}

fn scope_of(number: usize) -> usize {
    [0, 1, 2, 2][number]
}
/// Number 12's ladder and the wait from a crossing to its upgrade.
const LADDER: [usize; 3] = [2, 3, 4];
const UPGRADE_WAIT: u64 = HOUR;

#[derive(Clone, Debug)]
struct Bic {
    scope: usize,
    number: usize,
    customer: u64,
    ts: u64,
    live: bool,
    id: AdmissionId,
}

/// A template as the reference sees it: its pause's start and rank, or disabled.
#[derive(Clone, Copy, Debug, Default)]
enum Tpl {
    #[default]
    Active,
    Paused {
        since: u64,
        nth: u8,
    },
    Disabled,
}

/// What the checks before counting say (R3.2, R3.6).
enum Pre {
    Deny(Reason, Option<u64>),
    Allow(Reason),
    NeedsCount,
}

/// The reference: the rules as plainly as they can be written, state as flat lists.
struct Model {
    csw: HashMap<(usize, u64), u64>,
    bics: Vec<Bic>,
    optout: HashSet<(usize, u64)>,
    keys: HashMap<u8, (usize, u64, bool, Decision, u64)>,
    /// Restrictions (until, type bits): of a number, and of portfolio P.
    restricted: HashMap<usize, (u64, u8)>,
    restricted_p: Option<(u64, u8)>,
    /// By "is the marketing template".
    templates: HashMap<bool, Tpl>,
    /// 131056: (until, strikes) per (number, customer).
    pair_hold: HashMap<(usize, u64), (u64, u32)>,
    /// 131048: until, per number.
    spam_hold: HashMap<usize, u64>,
    /// 131049: until, per (scope, customer).
    marketing_hold: HashMap<(usize, u64), u64>,
    /// R2.3: until, per (number, customer).
    fep: HashMap<(usize, u64), u64>,
    /// Each scope's limit, and scope 1's pending upgrade (R5.3).
    limits: [usize; 3],
    upgrade_at: Option<u64>,
    /// R8 token buckets: (tokens in us, at us) per number and per (number, customer).
    throughput: HashMap<usize, (u64, u64)>,
    pair_rate: HashMap<(usize, u64), (u64, u64)>,
}

const PAUSE: [u64; 2] = [3 * HOUR, 6 * HOUR];
const UNTIL_LIFTED: u64 = u64::MAX;

/// A token bucket the plain way: `burst` tokens of `every` us each, refilled one us per
/// us. Takes a token at `now` (ms) or says when (ms, rounded up) one is there.
fn bucket(b: &mut (u64, u64), every: u64, burst: u32, now: u64) -> Result<(), u64> {
    let full = every * u64::from(burst);
    let now_us = now * 1_000;
    let level = if b.1 == 0 {
        full
    } else {
        (b.0 + (now_us - b.1)).min(full)
    };
    *b = (level, now_us);
    if level < every {
        return Err((now_us + every - level).div_ceil(1_000));
    }
    b.0 -= every;
    Ok(())
}

impl Default for Model {
    fn default() -> Self {
        Model {
            csw: HashMap::new(),
            bics: Vec::new(),
            optout: HashSet::new(),
            keys: HashMap::new(),
            restricted: HashMap::new(),
            restricted_p: None,
            templates: HashMap::new(),
            pair_hold: HashMap::new(),
            spam_hold: HashMap::new(),
            marketing_hold: HashMap::new(),
            fep: HashMap::new(),
            limits: [3, 2, 3],
            upgrade_at: None,
            throughput: HashMap::new(),
            pair_rate: HashMap::new(),
        }
    }
}

impl Model {
    /// Distinct customers of scope 1's live conversations opened in `(from, to]`.
    fn unique_between(&self, from: u64, to: u64) -> usize {
        let ids: HashSet<u64> = self
            .bics
            .iter()
            .filter(|b| b.scope == 1 && b.live && b.ts > from && b.ts <= to)
            .map(|b| b.customer)
            .collect();
        ids.len()
    }

    /// Scope 1's next tier, while there is one.
    fn next_tier(&self) -> Option<usize> {
        LADDER.iter().copied().find(|&l| l > self.limits[1])
    }

    /// R5.3: the wait ends at exactly its time, the 7-day count taken again then.
    fn run_due(&mut self, now: u64) {
        if let Some(t) = self.upgrade_at.filter(|t| *t <= now) {
            self.upgrade_at = None;
            if let Some(next) = self.next_tier() {
                if self.unique_between(t.saturating_sub(7 * DAY), t) >= self.limits[1] {
                    self.limits[1] = next;
                }
            }
        }
    }

    /// R5.3: a conversation opened while the 7-day count is at the threshold starts a wait.
    fn crossing(&mut self, now: u64) {
        if self.upgrade_at.is_none()
            && self.next_tier().is_some()
            && self.unique_between(now.saturating_sub(7 * DAY), now) >= self.limits[1]
        {
            self.upgrade_at = Some(now + UPGRADE_WAIT);
        }
    }

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

    fn open_until(map: &HashMap<(usize, u64), u64>, k: (usize, u64), now: u64) -> bool {
        map.get(&k).is_some_and(|u| *u > now)
    }

    fn precheck(&self, number: usize, customer: u64, template: bool, now: u64) -> Pre {
        let scope = scope_of(number);
        let pair = (number, customer);
        let csw = self.csw.get(&pair).is_some_and(|t| t + WINDOW > now);
        let fep = Self::open_until(&self.fep, pair, now);
        // section 10: a restriction that denies this kind of send; the latest end wins
        let replying = csw || fep;
        let blocks =
            |types: u8| types == 0 || (types & 1 != 0 && !replying) || (types & 2 != 0 && replying);
        let portfolio = if scope == 2 { self.restricted_p } else { None };
        let until = [self.restricted.get(&number).copied(), portfolio]
            .into_iter()
            .flatten()
            .filter(|&(u, types)| u > now && blocks(types))
            .map(|(u, _)| u)
            .max();
        if let Some(u) = until {
            return Pre::Deny(Reason::NumberRestricted, (u != UNTIL_LIFTED).then_some(u));
        }
        // odd customers get the utility template, even ones the marketing one
        let marketing = template && customer.is_multiple_of(2);
        if template {
            match self.templates.get(&marketing).copied().unwrap_or_default() {
                Tpl::Disabled => return Pre::Deny(Reason::TemplateDisabled, None),
                Tpl::Paused { since, nth } if since + PAUSE[nth as usize - 1] > now => {
                    return Pre::Deny(
                        Reason::TemplatePaused,
                        Some(since + PAUSE[nth as usize - 1]),
                    )
                }
                _ => {}
            }
        }
        // R7.2: opt-outs block marketing only
        if marketing && self.optout.contains(&(scope, customer)) {
            return Pre::Deny(Reason::OptedOut, None);
        }
        if marketing && Self::open_until(&self.marketing_hold, (scope, customer), now) {
            return Pre::Deny(
                Reason::MarketingHold,
                Some(self.marketing_hold[&(scope, customer)]),
            );
        }
        if let Some(&(u, _)) = self.pair_hold.get(&pair).filter(|h| h.0 > now) {
            return Pre::Deny(Reason::PairRateLimited, Some(u));
        }
        if csw {
            return Pre::Allow(Reason::ServiceWindow);
        }
        if fep {
            return Pre::Allow(Reason::FreeEntryPoint);
        }
        let open = self
            .bics
            .iter()
            .any(|b| b.number == number && b.customer == customer && b.live && b.ts + WINDOW > now);
        if open {
            return Pre::Allow(Reason::OpenConversation);
        }
        if !template {
            return Pre::Deny(Reason::OutsideServiceWindow, None);
        }
        if let Some(&u) = self.spam_hold.get(&number).filter(|u| **u > now) {
            return Pre::Deny(Reason::SpamCooldown, Some(u));
        }
        Pre::NeedsCount
    }

    /// R8: one cell of the number's throughput and one of the pair's rate, or neither.
    fn take_rates(&mut self, number: usize, customer: u64, now: u64) -> Result<(), (Reason, u64)> {
        let (mps, every, burst) = rates_of(scope_of(number) == 2);
        let tp_every = 1_000_000 / u64::from(mps);
        let mut tp = self.throughput.get(&number).copied().unwrap_or_default();
        bucket(&mut tp, tp_every, mps, now).map_err(|at| (Reason::ThroughputLimited, at))?;
        let mut pr = self
            .pair_rate
            .get(&(number, customer))
            .copied()
            .unwrap_or_default();
        bucket(&mut pr, every * 1_000, burst, now).map_err(|at| (Reason::PairRateLimited, at))?;
        self.throughput.insert(number, tp);
        self.pair_rate.insert((number, customer), pr);
        Ok(())
    }

    /// R3.6: a send denied after its cells were taken gives them back.
    fn give_back(&mut self, number: usize, customer: u64) {
        let (mps, every, _) = rates_of(scope_of(number) == 2);
        self.throughput.get_mut(&number).expect("taken").0 += 1_000_000 / u64::from(mps);
        self.pair_rate
            .get_mut(&(number, customer))
            .expect("taken")
            .0 += every * 1_000;
    }

    /// (reason, retry, counted) of a send, changing the buckets as the leader does.
    fn decide(
        &mut self,
        number: usize,
        customer: u64,
        template: bool,
        now: u64,
    ) -> (Reason, Option<u64>, bool) {
        let pre = self.precheck(number, customer, template, now);
        if let Pre::Deny(reason, retry) = pre {
            return (reason, retry, false);
        }
        if let Err((reason, at)) = self.take_rates(number, customer, now) {
            return (reason, Some(at), false);
        }
        if let Pre::Allow(reason) = pre {
            return (reason, None, false);
        }
        let scope = scope_of(number);
        let counted = self.counted(scope, now);
        if counted.contains_key(&customer) {
            return (Reason::NewConversation, None, false);
        }
        if counted.len() >= self.limits[scope] {
            self.give_back(number, customer);
            return (Reason::LimitReached, counted.values().min().copied(), false);
        }
        (Reason::NewConversation, None, true)
    }

    fn template_event(&mut self, marketing: bool, event: u8, now: u64) {
        let t = self.templates.entry(marketing).or_default();
        let paused =
            matches!(*t, Tpl::Paused { since, nth } if since + PAUSE[nth as usize - 1] > now);
        *t = match (event, *t) {
            (0, _) => Tpl::Active,
            (1 | 3 | 4 | 5, Tpl::Disabled) => Tpl::Disabled,
            (1, _) => Tpl::Active,
            (2, _) => Tpl::Disabled,
            // a pause of unknown rank: the running one, or else a first one
            (3, cur) if paused => cur,
            (3, _) => Tpl::Paused { since: now, nth: 1 },
            (4, _) => Tpl::Paused { since: now, nth: 1 },
            (_, _) => Tpl::Paused { since: now, nth: 2 },
        };
    }
}

fn template_event(event: u8) -> TemplateEvent {
    let paused = |title: Option<&str>| TemplateEvent::Paused {
        title: title.map(str::to_owned),
        until: None,
    };
    match event {
        0 => TemplateEvent::Approved,
        1 => TemplateEvent::Unpaused,
        2 => TemplateEvent::Disabled,
        3 => paused(None),
        4 => paused(Some("FIRST_PAUSE")),
        _ => paused(Some("SECOND_PAUSE")),
    }
}

/// A send as the server makes it (R3.2 order): a send that a check before counting
/// denies is decided without the R8 buckets; any other takes a cell of the number's
/// throughput and one of the pair's rate, or is denied by them before the engine sees
/// it; cells of a send the engine then denies are given back (R3.6).
fn admit_behind_rates(
    h: &mut H,
    rates: &RateLimiter,
    req: AdmitRequest,
    now: Ts,
) -> Result<Decision, CoreError> {
    let r = h.e.reader();
    if r.try_fast(&req, now).is_some_and(|d| !d.allowed) {
        return h.admit_req(req, now);
    }
    let (Some(mps), Some((every, burst))) =
        (r.throughput_mps(&req.number), r.pair_rate(&req.number))
    else {
        return h.admit_req(req, now);
    };
    match rates.try_take(
        req.number,
        req.customer,
        Rate::per_second(mps),
        Rate::every(every, burst),
        now,
    ) {
        Err(RateDenial::Throughput { retry_at }) => {
            Ok(Decision::deny(Reason::ThroughputLimited, Some(retry_at)))
        }
        Err(RateDenial::Pair { retry_at }) => {
            Ok(Decision::deny(Reason::PairRateLimited, Some(retry_at)))
        }
        Ok(taken) => {
            let d = h.admit_req(req, now)?;
            if !d.allowed {
                rates.give_back(taken);
            }
            Ok(d)
        }
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
    let rates = RateLimiter::default();
    for op in ops {
        m.run_due(now);
        engine_within_limits(&h, &m, now, check);
        match op.clone() {
            Op::Wait { ms } => now += ms,
            Op::Restrict {
                number,
                until,
                types,
                lifted,
            } => {
                let types: Vec<RestrictionType> = (0..3)
                    .filter(|i| types & (1 << i) != 0)
                    .map(|i| TYPES[i])
                    .collect();
                let target = match number {
                    Some(n) => Target::Number(num(NUMBERS[n])),
                    None => Target::Portfolio(PortfolioId::parse("portfolio", "P").unwrap()),
                };
                h.event(
                    PlatformEvent::AccountRestriction {
                        target,
                        until: until.map(|u| Ts(now + u)),
                        lifted,
                        types: types.clone(),
                    },
                    Ts(now),
                );
                let bits = types
                    .iter()
                    .map(|t| 1u8 << TYPES.iter().position(|x| x == t).unwrap())
                    .sum();
                let state = (!lifted).then(|| (until.map_or(UNTIL_LIFTED, |u| now + u), bits));
                match number {
                    Some(n) => {
                        m.restricted.remove(&n);
                        if let Some(st) = state {
                            m.restricted.insert(n, st);
                        }
                    }
                    None => m.restricted_p = state,
                }
            }
            Op::Template { marketing, event } => {
                let template = if marketing { "promo" } else { "receipt" };
                h.event(
                    PlatformEvent::TemplateStatus {
                        template: TemplateId::parse("template", template).unwrap(),
                        event: template_event(event),
                    },
                    Ts(now),
                );
                m.template_event(marketing, event, now);
            }
            Op::Outcome {
                number,
                customer,
                code,
            } => {
                h.apply(
                    Command::Outcome(Outcome {
                        number: num(NUMBERS[number]),
                        customer: cust(customer),
                        admission: None,
                        status: if code.is_some() {
                            DeliveryStatus::Failed
                        } else {
                            DeliveryStatus::Delivered
                        },
                        error_code: code,
                        template: None,
                        event_key: None,
                        message_id: None,
                    }),
                    Ts(now),
                )
                .unwrap();
                let pair = (number, customer);
                let scope = scope_of(number);
                match code {
                    // a delivery ends the pair's back-off
                    None => {
                        m.pair_hold.remove(&pair);
                    }
                    Some(131056) => {
                        // 4^x s, x counting the strikes; forgotten a quiet day after the hold
                        let (until, strikes) = m.pair_hold.get(&pair).copied().unwrap_or((0, 0));
                        let strikes = if strikes > 0 && until + DAY <= now {
                            0
                        } else {
                            strikes
                        };
                        let hold = (1_000 * 4u64.pow(strikes.min(31))).min(HOUR);
                        m.pair_hold.insert(pair, (now + hold, strikes + 1));
                    }
                    Some(131048) => {
                        m.spam_hold.insert(number, now + 6 * HOUR);
                    }
                    Some(131049) => {
                        m.marketing_hold.insert((scope, customer), now + DAY);
                    }
                    Some(131050) => {
                        m.optout.insert((scope, customer));
                    }
                    Some(131047) => {
                        m.csw.remove(&pair);
                    }
                    Some(_) => unreachable!("codes of the strategy"),
                }
            }
            Op::FreeEntry { number, customer } => {
                h.event(
                    PlatformEvent::FreeEntryPoint {
                        number: num(NUMBERS[number]),
                        customer: cust(customer),
                    },
                    Ts(now),
                );
                // the meta numbers only (the seeds profile has no free entry points)
                if scope_of(number) == 2 {
                    m.fep.insert((number, customer), now + 72 * HOUR);
                }
            }
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
                // the reference's idempotency: same key, same request -> same decision
                let recorded = key.and_then(|k| m.keys.get(&k).cloned());
                if let Some((n, c, t, d, exp)) = recorded {
                    if exp > now {
                        let got = h.admit_req(req, Ts(now));
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
                let got = admit_behind_rates(&mut h, &rates, req, Ts(now)).unwrap();
                let (reason, retry, counted) = m.decide(number, customer, template, now);
                if check {
                    assert_eq!(got.reason, reason, "{op:?} at +{}ms", now - T0.0);
                    assert_eq!(got.allowed, reason.allows());
                    assert_eq!(got.counted, counted);
                    assert_eq!(got.retry_at, retry.map(Ts), "retry of {reason:?}");
                }
                if got.decided_at == Ts::ZERO {
                    // denied by the leader's buckets: the engine never saw the send
                    continue;
                }
                if check {
                    let limit = m.limits[scope_of(number)] as u32;
                    assert_eq!(got.limit, Some(Limit::Capped(limit)), "limit");
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
                    if scope_of(number) == 1 {
                        m.crossing(now);
                    }
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
    m.run_due(now);
    engine_within_limits(&h, &m, now, check);
    h
}

/// R3.4 on the engine's own state, read through its status: no scope's rolling 24 h
/// window holds more than L counted conversations, Restricted says exactly when it holds
/// L, and (when checking against the reference) it holds the reference's count.
fn engine_within_limits(h: &H, m: &Model, now: u64, check: bool) {
    for (scope, number) in [(0, 0), (1, 1), (2, 2)] {
        let s = h.status(NUMBERS[number], Ts(now));
        let l = s.limit.cap().expect("capped");
        assert!(s.used <= l, "scope {scope} holds {} > {l}", s.used);
        assert_eq!(s.restricted, s.used == l, "scope {scope} restricted");
        if check {
            let want = m.counted(scope, now).len() as u32;
            assert_eq!(s.used, want, "scope {scope} used at +{}ms", now - T0.0);
            assert_eq!(l as usize, m.limits[scope], "scope {scope} limit");
            if scope == 1 {
                assert_eq!(s.upgrade_at, m.upgrade_at.map(Ts), "upgrade of 12");
            }
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

    /// A replica applies an entry its log still shares from a reference
    /// (`apply_ref`): every answer and the state must be those of a copy.
    #[test]
    fn applying_a_shared_command_is_applying_a_copy(ops in prop::collection::vec(op(), 1..60)) {
        let a = run(&ops, false);
        let (mut by_value, mut by_ref) = (Engine::new(), Engine::new());
        setup(&mut by_value);
        setup(&mut by_ref);
        for (c, t) in &a.log {
            let x = by_value.apply(c.clone(), *t);
            let y = by_ref.apply_ref(c, *t);
            prop_assert_eq!(format!("{x:?}"), format!("{y:?}"));
        }
        prop_assert_eq!(by_value.snapshot(), by_ref.snapshot());
    }
}
