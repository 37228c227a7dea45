//! The single writer: applies commands in log order, deterministically.

use crate::command::*;
use crate::decision::{AdmissionId, Decision, Reason, ScopeKey};
use crate::error::CoreError;
use crate::ids::{NumberId, PortfolioId};
use crate::log::EventLog;
use crate::meta_error::MetaError;
use crate::policy::{Limit, Policy, ScopeKind, TierMeaning};
use crate::rules::{self, Member, Pre, Tier};
use crate::state::*;
use crate::time::{Dur, PackedTs, Ts};
use crate::Reader;
use admit_sketch::{SketchConfig, WindowedSketch};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// State only the writer touches (it is in snapshots too).
/// Generic over the policy type only so that snapshots can read older policy formats.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct WriterState<P = Policy> {
    pub last_now: Ts,
    pub applied: u64,
    pub next_number: u32,
    pub next_scope: u32,
    pub policies: BTreeMap<String, P>,
    /// Idempotency keys in expiry order (time only moves forward).
    pub idem_expiry: VecDeque<(Ts, crate::ids::IdempotencyKey)>,
    /// Platform deliveries already applied, by event key (at most once).
    pub seen_events: BTreeMap<String, Ts>,
    pub seen_expiry: VecDeque<(Ts, String)>,
    /// Tier values that could not be understood (kept the limit: fail safe).
    pub tier_errors: u64,
}

/// How long a platform delivery's key is remembered: Meta retries deliveries for days.
const EVENT_KEY_TTL: crate::Dur = crate::Dur::days(7);

/// The rule engine of one shard: commands in, outputs out.
///
/// Cheap to read from other threads through [`Engine::reader`]; only `apply` changes it.
#[derive(Debug)]
pub struct Engine {
    pub(crate) shared: Arc<Shared>,
    pub(crate) w: WriterState,
    pub(crate) policies: BTreeMap<String, Arc<Policy>>,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    /// An empty engine with the built-in profiles `seeds` (default) and `meta`.
    pub fn new() -> Self {
        let mut e = Engine {
            shared: Arc::new(Shared::new()),
            w: WriterState::default(),
            policies: BTreeMap::new(),
        };
        for p in [Policy::seeds(), Policy::meta()] {
            e.w.policies.insert(p.name.clone(), p.clone());
            e.policies.insert(p.name.clone(), Arc::new(p));
        }
        e
    }

    /// A handle for concurrent reads (fast-path decisions, status).
    pub fn reader(&self) -> Reader {
        Reader {
            shared: self.shared.clone(),
        }
    }

    pub fn policy(&self, name: &str) -> Option<Arc<Policy>> {
        self.policies.get(name).cloned()
    }

    /// Commands applied so far.
    pub fn applied(&self) -> u64 {
        self.w.applied
    }

    /// The time of the latest command: the engine's clock never goes back.
    pub fn now(&self) -> Ts {
        self.w.last_now
    }

    /// Tier values from the platform that were not understood (and ignored).
    pub fn tier_errors(&self) -> u64 {
        self.w.tier_errors
    }

    /// Applies one command at `now`. Deterministic: the same commands at the same times
    /// give the same outputs and state on every replica. A `now` earlier than a previous
    /// command's is taken as that previous time.
    pub fn apply(&mut self, cmd: Command, now: Ts) -> Result<Output, CoreError> {
        let now = now.max(self.w.last_now);
        self.w.last_now = now;
        self.w.applied += 1;
        match cmd {
            Command::Admit(req) => self.admit(&req, now).map(Output::Decision),
            Command::Release(id) => Ok(Output::Released {
                released: self.release(&id, now),
            }),
            Command::Inbound(i) => {
                if self.seen(i.event_key.as_deref(), now) {
                    return self.number(&i.number).map(|(idx, _, p)| {
                        let csw = self
                            .shared
                            .pairs
                            .get(&PairKey::new(idx, i.customer.get()))
                            .and_then(|w| w.csw.get());
                        Output::Inbound {
                            window_end: csw.map_or(now, |t| t.plus(p.service_window)),
                            opt: None,
                            duplicate: true,
                        }
                    });
                }
                let out = self.inbound(&i, now);
                self.remember(i.event_key, &out, now);
                out
            }
            Command::Outcome(o) => {
                if self.seen(o.event_key.as_deref(), now) {
                    return Ok(Output::Outcome {
                        released: false,
                        hold_until: None,
                        duplicate: true,
                    });
                }
                let out = self.outcome(&o, now);
                self.remember(o.event_key, &out, now);
                out
            }
            Command::Platform { event, event_key } => self.platform(event, event_key, now),
            Command::RegisterNumber(r) => self.register_number(r, now),
            Command::RegisterPortfolio(r) => self.register_portfolio(r, now),
            Command::SetPolicy(p) => self.set_policy(p, now),
            Command::Tick => Ok(Output::Ticked {
                reclaimed: self.tick(now),
            }),
        }
    }

    // ---- admission -----------------------------------------------------------------

    fn admit(&mut self, req: &AdmitRequest, now: Ts) -> Result<Decision, CoreError> {
        if let Some(key) = &req.idempotency_key {
            if let Some(e) = self.shared.idempotency.get(key) {
                if e.expires > now {
                    if e.request != *req {
                        return Err(CoreError::IdempotencyConflict(key.as_str().to_owned()));
                    }
                    return Ok(e.decision.replay());
                }
            }
        }
        let mut d = self.decide(req, now);
        d.decided_at = now;
        if let Some(key) = &req.idempotency_key {
            let ttl = self
                .shared
                .numbers
                .get(&req.number)
                .map_or(Policy::seeds().idempotency_ttl, |n| {
                    n.policy.idempotency_ttl
                });
            let expires = now.plus(ttl);
            let old = self.shared.idempotency.insert(
                key.clone(),
                IdemEntry {
                    request: req.clone(),
                    decision: d.clone(),
                    expires,
                },
            );
            // an expired record replaced here: its admission no longer names this key
            if let Some(a) = old.and_then(|e| e.decision.admission) {
                self.shared.idem_by_admission.remove(&a);
            }
            if let Some(a) = &d.admission {
                self.shared.idem_by_admission.insert(a.clone(), key.clone());
            }
            self.w.idem_expiry.push_back((expires, key.clone()));
        }
        Ok(d)
    }

    fn decide(&mut self, req: &AdmitRequest, now: Ts) -> Decision {
        let Some(scope) = self.shared.numbers.get(&req.number).map(|n| n.scope) else {
            return Decision::deny(Reason::UnknownNumber, None);
        };
        self.advance_scope(scope, now);
        let (pre, idx, policy) = {
            let ns = self.shared.numbers.get(&req.number).expect("known number");
            (
                rules::precheck(&self.shared, &ns, req, now),
                ns.idx,
                ns.policy.clone(),
            )
        };
        let customer = req.customer.get();
        let mut sc = self
            .shared
            .scopes
            .get_mut(&scope)
            .expect("scope of a number");
        let mut d = match pre {
            Pre::Final(d) => d,
            Pre::NeedsCount => {
                let already = sc.log.day_counts(customer);
                let full = sc.limit.cap().is_some_and(|cap| sc.log.day.unique >= cap);
                if full && !already {
                    Decision::deny(Reason::LimitReached, sc.log.next_release(now))
                } else {
                    // R3.2 step 4: a conversation opens (counted unless this portfolio
                    // already counts the customer in the window)
                    let seq = sc.log.push(now, customer, idx);
                    sc.sketch.insert(customer, now.ms());
                    let mut d = Decision::allow(
                        Reason::NewConversation,
                        now.plus(policy.conversation_window),
                    );
                    d.counted = !already;
                    d.admission = Some(AdmissionId {
                        scope: sc.key.clone(),
                        seq,
                    });
                    self.shared
                        .pairs
                        .entry(PairKey::new(idx, customer))
                        .or_default()
                        .bic = PackedTs::new(now);
                    d
                }
            }
        };
        d.limit = Some(sc.limit);
        d.used = sc.log.day.unique;
        let crossing = d.reason == Reason::NewConversation;
        drop(sc);
        if crossing {
            self.check_crossing(scope, now);
        }
        d
    }

    /// R5.2-R5.4: after a conversation opens, a scope whose count reached the threshold
    /// (with every other condition holding) starts its wait for the next tier.
    fn check_crossing(&mut self, scope: u32, now: Ts) {
        let (tier, members, unique, policy) = {
            let sc = self.shared.scopes.get(&scope).expect("scope");
            if sc.pending_upgrade.is_some() {
                return;
            }
            let Some(unique) = sc.log.long.as_ref().map(|l| l.unique) else {
                return;
            };
            (tier_of(&sc), sc.members.clone(), unique, sc.policy.clone())
        };
        let ms = self.members(&members);
        if !rules::upgrade_conditions(&policy, &tier, &ms, unique) {
            return;
        }
        let delay = policy
            .rule_for(tier.model_limit)
            .map_or(0, |r| r.delay.ms());
        self.shared
            .scopes
            .get_mut(&scope)
            .expect("scope")
            .pending_upgrade = Some(now.plus(crate::Dur(delay)));
        if delay == 0 {
            self.advance_scope(scope, now);
        }
    }

    fn members(&self, ids: &[NumberId]) -> Vec<Member> {
        ids.iter()
            .filter_map(|id| self.shared.numbers.get(id).map(|n| Member::of(&n)))
            .collect()
    }

    /// Brings a scope to `now`: due delayed effects at their exact times, then the windows.
    pub(crate) fn advance_scope(&mut self, scope: u32, now: Ts) {
        let (mut tier, ids, policy) = {
            let sc = self.shared.scopes.get(&scope).expect("scope");
            (tier_of(&sc), sc.members.clone(), sc.policy.clone())
        };
        let mut ms = self.members(&ids);
        let changed = {
            let sc = self.shared.scopes.get(&scope).expect("scope");
            !rules::run_due(&policy, &mut tier, &mut ms, &sc.log, now).is_empty()
        };
        if changed {
            for (id, m) in ids.iter().zip(&ms) {
                if let Some(mut n) = self.shared.numbers.get_mut(id) {
                    m.store(&mut n);
                }
            }
        }
        let mut sc = self.shared.scopes.get_mut(&scope).expect("scope");
        if changed {
            set_tier(&mut sc, &tier);
        }
        let long = policy.rule_for(sc.model_limit).map(|r| r.window);
        sc.log.set_long(long, now);
        sc.log.advance(now);
    }

    /// R3.5: takes an admission's conversation out of the log. True only when that
    /// un-counted a customer: in a portfolio scope a conversation with a customer
    /// another number already counts in the window was never counted itself, and one
    /// older than the 24 h window no longer is (it still leaves the upgrade window).
    fn release(&mut self, id: &AdmissionId, now: Ts) -> bool {
        let Some(scope) = self.shared.scope_ids.get(&id.scope).map(|s| *s) else {
            return false;
        };
        self.advance_scope(scope, now);
        let ev = self.shared.scopes.get_mut(&scope).and_then(|mut sc| {
            let before = sc.log.day.unique;
            let e = sc.log.release(id.seq)?;
            Some((e, sc.log.day.unique < before))
        });
        let Some((e, uncounted)) = ev else {
            return false;
        };
        // the pair's conversation is no longer open either, so a new template opens (and
        // counts) a new one
        if let Some(mut w) = self
            .shared
            .pairs
            .get_mut(&PairKey::new(e.number, e.customer))
        {
            if w.bic.get() == Some(e.ts) {
                w.bic = PackedTs::NONE;
            }
        }
        // R3.4/R3.5: the recorded "allowed" no longer stands for a counted send, so it
        // must not be replayed: a retry with the same key is decided (and counted) anew
        if let Some((_, key)) = self.shared.idem_by_admission.remove(id) {
            self.shared
                .idempotency
                .remove_if(&key, |_, r| r.decision.admission.as_ref() == Some(id));
        }
        uncounted
    }

    /// R3.5: whether an admission was reported delivered (or read).
    fn delivered(&self, id: &AdmissionId) -> bool {
        let scope = self.shared.scope_ids.get(&id.scope).map(|s| *s);
        scope
            .and_then(|s| self.shared.scopes.get(&s))
            .is_some_and(|sc| sc.log.delivered(id.seq))
    }

    fn mark_delivered(&self, id: &AdmissionId) {
        let scope = self.shared.scope_ids.get(&id.scope).map(|s| *s);
        if let Some(mut sc) = scope.and_then(|s| self.shared.scopes.get_mut(&s)) {
            sc.log.mark_delivered(id.seq);
        }
    }

    // ---- inbound messages and outcomes ---------------------------------------------

    fn number(&self, id: &NumberId) -> Result<(u32, u32, Arc<Policy>), CoreError> {
        self.shared
            .numbers
            .get(id)
            .map(|n| (n.idx, n.scope, n.policy.clone()))
            .ok_or_else(|| CoreError::UnknownNumber(id.to_string()))
    }

    fn inbound(&mut self, i: &Inbound, now: Ts) -> Result<Output, CoreError> {
        let (idx, scope, policy) = self.number(&i.number)?;
        let customer = i.customer.get();
        self.shared
            .pairs
            .entry(PairKey::new(idx, customer))
            .or_default()
            .csw = PackedTs::new(now);
        let opt = i.text.as_deref().and_then(|t| keyword(&policy, t));
        if let Some(o) = opt {
            self.set_opt(scope, customer, o);
        }
        Ok(Output::Inbound {
            window_end: now.plus(policy.service_window),
            opt,
            duplicate: false,
        })
    }

    fn set_opt(&mut self, scope: u32, customer: u64, o: OptChange) {
        let key = PairKey::new(scope, customer);
        let changed = match o {
            OptChange::OptedOut => self.shared.optouts.insert(key, ()).is_none(),
            OptChange::OptedIn => self.shared.optouts.remove(&key).is_some(),
        };
        if changed {
            if let Some(mut sc) = self.shared.scopes.get_mut(&scope) {
                match o {
                    OptChange::OptedOut => sc.opt_outs += 1,
                    OptChange::OptedIn => sc.opt_outs = sc.opt_outs.saturating_sub(1),
                }
            }
        }
    }

    fn outcome(&mut self, o: &Outcome, now: Ts) -> Result<Output, CoreError> {
        let (idx, scope, p) = self.number(&o.number)?;
        let customer = o.customer.get();
        let pair = PairKey::new(idx, customer);
        let mut released = false;
        let mut hold_until = None;
        if o.status == DeliveryStatus::Failed {
            // R3.5: a send that failed before delivery gives its conversation back; one
            // reported delivered already was delivered, whatever is reported after
            if let Some(a) = o.admission.as_ref().filter(|a| !self.delivered(a)) {
                released = self.release(a, now);
            }
        } else {
            if let (Some(a), DeliveryStatus::Delivered | DeliveryStatus::Read) =
                (&o.admission, o.status)
            {
                self.mark_delivered(a);
            }
            self.shared.pair_backoff.remove(&pair);
            if let Some(mut n) = self.shared.numbers.get_mut(&o.number) {
                n.throughput = Backoff::default();
            }
        }
        // Section 9: 4^x, 1, 4, 16, ... times the base, capped. The strikes are forgotten
        // after a quiet period following the last hold's end; for a pair that is exactly
        // when `tick` may reclaim the entry, so the hold never depends on when a Tick ran.
        let backoff = |b: &mut Backoff, base: Dur, max: Dur, reset_after: Dur| {
            if b.until.is_some_and(|u| u.plus(reset_after) <= now) {
                *b = Backoff::default();
            }
            let factor = Policy::BACKOFF_GROWTH.saturating_pow(b.strikes.min(31));
            b.until = Some(now.plus(Dur(base.ms().saturating_mul(factor).min(max.ms()))));
            b.strikes += 1;
            b.until
        };
        match o.error_code.map(MetaError::from) {
            Some(MetaError::PairRate) => {
                let mut b = self.shared.pair_backoff.entry(pair).or_default();
                hold_until = backoff(
                    &mut b,
                    p.pair_backoff_base,
                    p.pair_backoff_max,
                    p.pair_backoff_reset_after,
                );
            }
            Some(MetaError::Throughput) => {
                if let Some(mut n) = self.shared.numbers.get_mut(&o.number) {
                    hold_until = backoff(
                        &mut n.throughput,
                        p.throughput_backoff_base,
                        p.throughput_backoff_max,
                        p.throughput_backoff_reset_after,
                    );
                }
            }
            Some(MetaError::SpamRate) => {
                if let Some(mut n) = self.shared.numbers.get_mut(&o.number) {
                    n.spam_hold_until = Some(now.plus(p.spam_cooldown));
                    n.quality_risks += 1;
                    hold_until = n.spam_hold_until;
                }
            }
            Some(MetaError::MarketingLimit) => {
                hold_until = Some(now.plus(p.marketing_hold));
                self.shared
                    .marketing_holds
                    .insert(PairKey::new(scope, customer), now.plus(p.marketing_hold));
            }
            Some(MetaError::UserStopped) => self.set_opt(scope, customer, OptChange::OptedOut),
            Some(MetaError::WindowClosed) => {
                if let Some(mut w) = self.shared.pairs.get_mut(&pair) {
                    w.csw = PackedTs::NONE;
                }
            }
            Some(e @ (MetaError::TemplatePaused | MetaError::TemplateDisabled)) => {
                if let (Some(t), Some(ev)) = (&o.template, e.template_event()) {
                    self.template_event(t, ev, now);
                }
            }
            _ => {}
        }
        Ok(Output::Outcome {
            released,
            hold_until,
            duplicate: false,
        })
    }

    // ---- platform events -------------------------------------------------------------

    /// Whether a delivery with this key was applied already (and is still remembered).
    fn seen(&self, key: Option<&str>, now: Ts) -> bool {
        key.is_some_and(|k| self.w.seen_events.get(k).is_some_and(|exp| *exp > now))
    }

    /// Remembers an applied delivery's key; a refused one can be delivered again.
    fn remember(&mut self, key: Option<String>, out: &Result<Output, CoreError>, now: Ts) {
        if let (Some(k), Ok(_)) = (key, out) {
            let exp = now.plus(EVENT_KEY_TTL);
            self.w.seen_events.insert(k.clone(), exp);
            self.w.seen_expiry.push_back((exp, k));
        }
    }

    fn platform(
        &mut self,
        ev: PlatformEvent,
        key: Option<String>,
        now: Ts,
    ) -> Result<Output, CoreError> {
        if self.seen(key.as_deref(), now) {
            return Ok(Output::Event {
                applied: false,
                note: Some("duplicate delivery".into()),
            });
        }
        let out = self.platform_event(ev, now);
        self.remember(key, &out, now);
        out
    }

    fn with_member(
        &mut self,
        id: &NumberId,
        now: Ts,
        f: impl FnOnce(&mut Member, &Policy),
    ) -> Result<(), CoreError> {
        let (_, scope, policy) = self.number(id)?;
        self.advance_scope(scope, now);
        let mut n = self.shared.numbers.get_mut(id).expect("known");
        let mut m = Member::of(&n);
        f(&mut m, &policy);
        m.store(&mut n);
        drop(n);
        // an upgrade waiting on conditions may now hold or fail; due effects re-run
        self.advance_scope(scope, now);
        Ok(())
    }

    fn platform_event(&mut self, ev: PlatformEvent, now: Ts) -> Result<Output, CoreError> {
        let applied = |note: Option<String>| {
            Ok(Output::Event {
                applied: true,
                note,
            })
        };
        match ev {
            PlatformEvent::NumberQuality { number, quality } => {
                self.with_member(&number, now, |m, p| m.set_quality(quality, p, now))?;
                applied(None)
            }
            PlatformEvent::NumberStatus { number, status } => {
                self.with_member(&number, now, |m, _| m.set_status(status, now))?;
                applied(None)
            }
            PlatformEvent::DisplayName { number, approved } => {
                self.with_member(&number, now, |m, _| m.display_name_approved = approved)?;
                applied(None)
            }
            PlatformEvent::LimitChange { target, tier } => {
                // resolved first: a shard that holds nothing of the target refuses the
                // event (and so neither remembers its key nor counts a bad value)
                let scopes = self.target_scopes(&target)?;
                match tier.meaning() {
                    Ok(TierMeaning::Set(limit)) => {
                        for scope in scopes {
                            self.set_limit(scope, limit, now);
                        }
                        applied(None)
                    }
                    Ok(TierMeaning::NotSet) => Ok(Output::Event {
                        applied: false,
                        note: Some("tier not set: limit kept".into()),
                    }),
                    Err(why) => {
                        // fail safe: keep the current limit, count the error
                        self.w.tier_errors += 1;
                        Ok(Output::Event {
                            applied: false,
                            note: Some(format!("{why}: limit kept")),
                        })
                    }
                }
            }
            PlatformEvent::TemplateStatus { template, event } => {
                if self.template_event(&template, event, now) {
                    applied(None)
                } else {
                    Ok(Output::Event {
                        applied: false,
                        note: Some("template disabled: only APPROVED enables it again".into()),
                    })
                }
            }
            PlatformEvent::TemplateQuality { template, quality } => {
                self.template_entry(&template).quality = quality;
                applied(None)
            }
            PlatformEvent::AccountRestriction {
                target,
                until,
                lifted,
                types,
            } => {
                let (until, types) = if lifted {
                    (None, RestrictionSet::default())
                } else {
                    (
                        Some(until.unwrap_or(Ts::UNTIL_LIFTED)),
                        RestrictionSet::of(&types),
                    )
                };
                match target {
                    Target::Number(n) => {
                        self.number(&n)?;
                        let mut ns = self.shared.numbers.get_mut(&n).expect("known");
                        ns.restricted_until = until;
                        ns.restriction_types = types;
                    }
                    Target::Portfolio(p) => {
                        // only where the portfolio is registered (or has numbers): an
                        // unknown id must not create a portfolio record on every shard
                        let mut ps = self
                            .shared
                            .portfolios
                            .get_mut(&p)
                            .ok_or_else(|| CoreError::UnknownPortfolio(p.to_string()))?;
                        ps.restricted_until = until;
                        ps.restriction_types = types;
                    }
                }
                applied(None)
            }
            PlatformEvent::UserPreference {
                number,
                customer,
                stop,
            } => {
                let (_, scope, _) = self.number(&number)?;
                let o = if stop {
                    OptChange::OptedOut
                } else {
                    OptChange::OptedIn
                };
                self.set_opt(scope, customer.get(), o);
                applied(None)
            }
            PlatformEvent::FreeEntryPoint { number, customer } => {
                let (idx, _, p) = self.number(&number)?;
                if p.free_entry_window.ms() == 0 {
                    // R2.3 is the meta profile's: the seeds profile has no such window
                    return Ok(Output::Event {
                        applied: false,
                        note: Some("free entry points are off in this number's profile".into()),
                    });
                }
                let until = now.plus(p.free_entry_window);
                self.shared
                    .fep
                    .insert(PairKey::new(idx, customer.get()), until);
                applied(None)
            }
        }
    }

    fn template_entry(
        &self,
        t: &crate::ids::TemplateId,
    ) -> dashmap::mapref::one::RefMut<'_, crate::ids::TemplateId, TemplateState> {
        self.shared
            .templates
            .entry(t.clone())
            .or_insert(TemplateState {
                status: TemplateStatus::Active,
                quality: crate::Quality::Unknown,
                pauses: 0,
                pause: None,
            })
    }

    /// R6.2 / R6.3: a template status event; false if it was ignored (a Disabled template
    /// is enabled again only by `Approved`).
    ///
    /// A pause without an end given lasts its profile's length for each number (see
    /// [`TemplateState::pause_end`]); here, "still paused" means paused for some profile.
    fn template_event(&mut self, t: &crate::ids::TemplateId, ev: TemplateEvent, now: Ts) -> bool {
        let longest = |nth: u8| {
            self.policies
                .values()
                .map(|p| p.pause_len(nth))
                .max()
                .unwrap_or_default()
        };
        let (first, second) = (longest(1), longest(2));
        let mut e = self.template_entry(t);
        let disabled = matches!(e.status, TemplateStatus::Disabled);
        let paused = matches!(e.status, TemplateStatus::Paused { until } if until > now);
        let pause = |e: &mut TemplateState, nth: u8, until: Option<Ts>| {
            let longest = if nth <= 1 { first } else { second };
            e.pause = until.is_none().then_some(PauseStart { since: now, nth });
            e.status = TemplateStatus::Paused {
                until: until.unwrap_or(now.plus(longest)),
            };
        };
        match ev {
            TemplateEvent::Approved => {
                e.status = TemplateStatus::Active;
                e.pause = None;
            }
            TemplateEvent::Unpaused if disabled => return false,
            TemplateEvent::Unpaused => {
                e.status = TemplateStatus::Active;
                e.pause = None;
            }
            TemplateEvent::Disabled => {
                e.status = TemplateStatus::Disabled;
                e.pause = None;
            }
            TemplateEvent::Paused { .. } if disabled => return false,
            TemplateEvent::Paused { title, until } => {
                match title.as_deref().map(str::to_ascii_uppercase).as_deref() {
                    // Meta names the pause: that one, exactly (its count is authoritative)
                    Some("FIRST_PAUSE") => {
                        e.pauses = 1;
                        pause(&mut e, 1, until);
                    }
                    Some("SECOND_PAUSE") => {
                        e.pauses = 2;
                        pause(&mut e, 2, until);
                    }
                    // a pause of unknown rank (132015 in an outcome): the one already
                    // running, or else one of the first pause's length; never a new rank
                    _ => {
                        if !paused {
                            e.pauses = e.pauses.max(1);
                            pause(&mut e, 1, until);
                        } else if let Some(u) = until {
                            // an end given for the running pause: Meta's word
                            e.pause = None;
                            e.status = TemplateStatus::Paused { until: u };
                        }
                    }
                }
            }
        }
        true
    }

    /// The limit scopes a tier event for `t` sets (R5.6): a number's own scope (or its
    /// portfolio's, under meta); for a portfolio, the portfolio's scope (meta) and the
    /// scope of each of its numbers on this shard, which under a per-number profile
    /// (seeds) is the number itself. Numbers of a seeds portfolio live on many shards,
    /// so the event is applied on each; a shard with none of them refuses it.
    fn target_scopes(&self, t: &Target) -> Result<Vec<u32>, CoreError> {
        match t {
            Target::Number(n) => Ok(vec![self.number(n)?.1]),
            Target::Portfolio(p) => {
                let mut scopes: Vec<u32> = self
                    .shared
                    .scope_ids
                    .get(&ScopeKey::Portfolio(p.clone()))
                    .map(|s| *s)
                    .into_iter()
                    .collect();
                let members = self
                    .shared
                    .portfolios
                    .get(p)
                    .map(|ps| ps.members.clone())
                    .unwrap_or_default();
                for m in members {
                    if let Some(scope) = self.shared.numbers.get(&m).map(|n| n.scope) {
                        if !scopes.contains(&scope) {
                            scopes.push(scope);
                        }
                    }
                }
                if scopes.is_empty() {
                    return Err(CoreError::UnknownPortfolio(p.to_string()));
                }
                Ok(scopes)
            }
        }
    }

    /// A limit from the platform or an admin: authoritative (R5.6). The model follows it.
    fn set_limit(&mut self, scope: u32, limit: Limit, now: Ts) {
        self.advance_scope(scope, now);
        if let Some(mut sc) = self.shared.scopes.get_mut(&scope) {
            sc.limit = limit;
            sc.model_limit = limit;
            sc.pending_upgrade = None;
        }
        self.advance_scope(scope, now);
    }

    // ---- registration and policy -----------------------------------------------------

    fn profile(&self, name: &str) -> Result<Arc<Policy>, CoreError> {
        self.policies
            .get(name)
            .cloned()
            .ok_or_else(|| CoreError::UnknownProfile(name.to_owned()))
    }

    fn ensure_scope(
        &mut self,
        key: ScopeKey,
        policy: &Arc<Policy>,
        limit: Option<Limit>,
        now: Ts,
    ) -> u32 {
        if let Some(s) = self.shared.scope_ids.get(&key) {
            return *s;
        }
        let idx = self.w.next_scope;
        self.w.next_scope += 1;
        let limit = limit.unwrap_or(policy.initial_limit);
        let dedupe = matches!(key, ScopeKey::Portfolio(_));
        let mut log = EventLog::new(policy.conversation_window, dedupe);
        log.set_long(policy.rule_for(limit).map(|r| r.window), now);
        self.shared.scopes.insert(
            idx,
            ScopeState {
                key: key.clone(),
                profile: policy.name.clone(),
                policy: policy.clone(),
                limit,
                model_limit: limit,
                pending_upgrade: None,
                log,
                members: Vec::new(),
                opt_outs: 0,
                sketch: WindowedSketch::new(SketchConfig::default()),
                upgrades: 0,
                downgrades: 0,
            },
        );
        self.shared.scope_ids.insert(key, idx);
        idx
    }

    fn register_portfolio(
        &mut self,
        r: PortfolioRegistration,
        now: Ts,
    ) -> Result<Output, CoreError> {
        let profile = r.profile.clone().unwrap_or_else(|| {
            self.shared
                .portfolios
                .get(&r.portfolio)
                .map_or(Policy::DEFAULT_PROFILE.to_owned(), |p| p.profile.clone())
        });
        let policy = self.profile(&profile)?;
        {
            let mut p = self
                .shared
                .portfolios
                .entry(r.portfolio.clone())
                .or_default();
            if !p.members.is_empty() && p.profile != profile {
                return Err(CoreError::Conflict(
                    "profile: a portfolio with numbers keeps its profile".into(),
                ));
            }
            p.profile = profile;
        }
        if policy.scope == ScopeKind::Portfolio {
            let scope = self.ensure_scope(ScopeKey::Portfolio(r.portfolio), &policy, r.limit, now);
            if let Some(l) = r.limit {
                self.set_limit(scope, l, now);
            }
        }
        Ok(Output::Registered)
    }

    fn register_number(&mut self, r: NumberRegistration, now: Ts) -> Result<Output, CoreError> {
        let id = r
            .number
            .ok_or_else(|| CoreError::invalid("number", "is required"))?;
        if let Some(mps) = r.throughput_mps {
            if mps == 0 {
                return Err(CoreError::invalid("throughput_mps", "must be at least 1"));
            }
        }
        let existing = self
            .shared
            .numbers
            .get(&id)
            .map(|n| (n.profile.clone(), n.portfolio.clone(), n.scope));
        let scope = match existing {
            Some((profile, portfolio, scope)) => {
                let new_profile = r.profile.clone().unwrap_or(profile.clone());
                let policy = self.profile(&new_profile)?;
                let new_portfolio = r.portfolio.clone().or(portfolio.clone());
                let old_kind = self.profile(&profile)?.scope;
                if policy.scope != old_kind {
                    return Err(CoreError::Conflict(
                        "profile: a registered number keeps its limit scope; register a new number"
                            .into(),
                    ));
                }
                // admin.proto: moving a number to another portfolio is refused under
                // every profile (a number without one may join one)
                if portfolio.is_some() && new_portfolio != portfolio {
                    return Err(CoreError::Conflict(format!(
                        "portfolio_id: number {id} belongs to portfolio {}; register a new number",
                        portfolio.as_ref().map_or("", |p| p.as_str())
                    )));
                }
                if let (None, Some(p)) = (&portfolio, &new_portfolio) {
                    self.join_portfolio(&id, p, &new_profile);
                }
                let mut n = self.shared.numbers.get_mut(&id).expect("known");
                n.profile = new_profile.clone();
                n.policy = policy.clone();
                n.portfolio = new_portfolio;
                drop(n);
                if policy.scope == ScopeKind::Number {
                    let mut sc = self.shared.scopes.get_mut(&scope).expect("scope");
                    sc.profile = new_profile;
                    sc.policy = policy;
                }
                scope
            }
            None => {
                let portfolio_profile = r
                    .portfolio
                    .as_ref()
                    .and_then(|p| self.shared.portfolios.get(p).map(|p| p.profile.clone()))
                    .filter(|p| !p.is_empty());
                let profile = r
                    .profile
                    .clone()
                    .or(portfolio_profile)
                    .unwrap_or_else(|| Policy::DEFAULT_PROFILE.into());
                let policy = self.profile(&profile)?;
                let key = match policy.scope {
                    ScopeKind::Number => ScopeKey::Number(id),
                    ScopeKind::Portfolio => {
                        ScopeKey::Portfolio(r.portfolio.clone().ok_or_else(|| {
                            CoreError::invalid(
                                "portfolio",
                                "is required by a profile whose limit belongs to the portfolio",
                            )
                        })?)
                    }
                };
                if let Some(p) = &r.portfolio {
                    let mut ps = self.shared.portfolios.entry(p.clone()).or_default();
                    if ps.profile.is_empty() {
                        ps.profile = profile.clone();
                    }
                    ps.members.push(id);
                }
                let scope = self.ensure_scope(key.clone(), &policy, r.limit, now);
                let idx = self.w.next_number;
                self.w.next_number += 1;
                self.shared.numbers.insert(
                    id,
                    NumberState {
                        id,
                        idx,
                        portfolio: r.portfolio.clone(),
                        profile,
                        policy: policy.clone(),
                        scope,
                        scope_key: key,
                        quality: policy.initial_quality,
                        status: NumberStatus::Connected,
                        display_name_approved: true,
                        flagged_since: None,
                        recovering_since: None,
                        restricted_until: None,
                        restriction_types: RestrictionSet::default(),
                        spam_hold_until: None,
                        quality_risks: 0,
                        throughput: Backoff::default(),
                        throughput_mps: None,
                        registered_at: now,
                    },
                );
                self.shared
                    .scopes
                    .get_mut(&scope)
                    .expect("scope")
                    .members
                    .push(id);
                scope
            }
        };
        if let Some(mps) = r.throughput_mps {
            self.shared
                .numbers
                .get_mut(&id)
                .expect("known")
                .throughput_mps = Some(mps);
        }
        if let Some(q) = r.quality {
            self.with_member(&id, now, |m, p| m.set_quality(q, p, now))?;
        }
        if let Some(s) = r.status {
            self.with_member(&id, now, |m, _| m.set_status(s, now))?;
        }
        if let Some(a) = r.display_name_approved {
            self.with_member(&id, now, |m, _| m.display_name_approved = a)?;
        }
        if let Some(l) = r.limit {
            self.set_limit(scope, l, now);
        }
        self.advance_scope(scope, now);
        Ok(Output::Registered)
    }

    /// A number without a portfolio joins one (created with the number's profile if
    /// this shard does not know it yet, as on registration).
    fn join_portfolio(&mut self, id: &NumberId, to: &PortfolioId, profile: &str) {
        let mut p = self.shared.portfolios.entry(to.clone()).or_default();
        if p.profile.is_empty() {
            p.profile = profile.to_owned();
        }
        p.members.push(*id);
    }

    fn set_policy(&mut self, p: Policy, now: Ts) -> Result<Output, CoreError> {
        p.validate()?;
        // every shard holds every profile, but only some of a profile's numbers: a rule
        // that looked at this shard's numbers would accept the change on some shards and
        // refuse it on others. "An existing profile keeps its scope" decides alike on all.
        if let Some(old) = self.policies.get(&p.name) {
            if old.scope != p.scope {
                return Err(CoreError::Conflict(
                    "policy.scope: an existing profile keeps its limit scope; create a new profile"
                        .into(),
                ));
            }
        }
        let arc = Arc::new(p.clone());
        self.w.policies.insert(p.name.clone(), p.clone());
        self.policies.insert(p.name.clone(), arc.clone());
        for mut n in self.shared.numbers.iter_mut() {
            if n.profile == p.name {
                n.policy = arc.clone();
            }
        }
        let scopes: Vec<u32> = self
            .shared
            .scopes
            .iter_mut()
            .filter(|s| s.profile == p.name)
            .map(|mut s| {
                s.policy = arc.clone();
                *s.key()
            })
            .collect();
        for s in scopes {
            self.advance_scope(s, now);
        }
        Ok(Output::Registered)
    }

    // ---- reclaiming ------------------------------------------------------------------

    /// Drops everything that has expired by `now`, so memory returns to its baseline once
    /// every window has ended. Expired and absent entries decide alike, so this changes
    /// no decision; it runs as a logged command so that replicas stay byte-identical.
    fn tick(&mut self, now: Ts) -> u64 {
        let mut reclaimed = 0u64;
        let scopes: Vec<u32> = self.shared.scopes.iter().map(|s| *s.key()).collect();
        for s in scopes {
            self.advance_scope(s, now);
        }
        let longest = self
            .policies
            .values()
            .map(|p| p.service_window.max(p.conversation_window))
            .max()
            .unwrap_or_default();
        let ended = |t: Option<Ts>| t.is_none_or(|t| t.plus(longest) <= now);
        let sh = &self.shared;
        let before = sh.pairs.len();
        sh.pairs
            .retain(|_, w| !(ended(w.csw.get()) && ended(w.bic.get())));
        reclaimed += (before - sh.pairs.len()) as u64;
        for m in [&sh.fep, &sh.marketing_holds] {
            let before = m.len();
            m.retain(|_, until| *until > now);
            reclaimed += (before - m.len()) as u64;
        }
        // kept with its strikes for the quiet period after the hold; the longest of any
        // profile: an entry kept longer than its own profile's is forgotten on the next
        // strike all the same
        let reset_after = self
            .policies
            .values()
            .map(|p| p.pair_backoff_reset_after)
            .max()
            .unwrap_or_default();
        let before = sh.pair_backoff.len();
        sh.pair_backoff
            .retain(|_, b| b.until.is_some_and(|u| u.plus(reset_after) > now));
        reclaimed += (before - sh.pair_backoff.len()) as u64;
        while let Some((exp, _)) = self.w.idem_expiry.front() {
            if *exp > now {
                break;
            }
            let (exp, key) = self.w.idem_expiry.pop_front().expect("front");
            // a key re-bound later has a later expiry: remove only the one that ended
            if let Some((_, e)) = sh.idempotency.remove_if(&key, |_, e| e.expires <= exp) {
                if let Some(a) = e.decision.admission {
                    sh.idem_by_admission.remove(&a);
                }
                reclaimed += 1;
            }
        }
        while let Some((exp, _)) = self.w.seen_expiry.front() {
            if *exp > now {
                break;
            }
            let (exp, key) = self.w.seen_expiry.pop_front().expect("front");
            if self.w.seen_events.get(&key).is_some_and(|e| *e <= exp) {
                self.w.seen_events.remove(&key);
            }
        }
        for m in [
            &sh.pairs as &dyn Shrink,
            &sh.fep,
            &sh.marketing_holds,
            &sh.pair_backoff,
            &sh.idempotency,
            &sh.idem_by_admission,
        ] {
            m.shrink_if_sparse();
        }
        if self.w.idem_expiry.is_empty() {
            self.w.idem_expiry.shrink_to_fit();
        }
        reclaimed
    }
}

trait Shrink {
    fn shrink_if_sparse(&self);
}

impl<K: Eq + std::hash::Hash, V> Shrink for Map<K, V> {
    fn shrink_if_sparse(&self) {
        if self.capacity() > 4 * self.len() + 1024 {
            self.shrink_to_fit();
        }
    }
}

pub(crate) fn tier_of(sc: &ScopeState) -> Tier {
    Tier {
        limit: sc.limit,
        model_limit: sc.model_limit,
        pending_upgrade: sc.pending_upgrade,
        upgrades: sc.upgrades,
        downgrades: sc.downgrades,
    }
}

fn set_tier(sc: &mut ScopeState, t: &Tier) {
    sc.limit = t.limit;
    sc.model_limit = t.model_limit;
    sc.pending_upgrade = t.pending_upgrade;
    sc.upgrades = t.upgrades;
    sc.downgrades = t.downgrades;
}

/// R7.1: a whole message that is an opt-out or opt-in keyword, ignoring case and spaces.
pub(crate) fn keyword(p: &Policy, text: &str) -> Option<OptChange> {
    let norm: String = crate::policy::keyword_form(text).collect();
    // a keyword of spaces only never matches (profiles are validated to hold none; this
    // keeps one restored from older state from opting out every empty message)
    let hit = |ks: &[String]| {
        ks.iter().any(|k| {
            let mut k = crate::policy::keyword_form(k).peekable();
            k.peek().is_some() && k.eq(norm.chars())
        })
    };
    if hit(&p.opt_out_keywords) {
        Some(OptChange::OptedOut)
    } else if hit(&p.opt_in_keywords) {
        Some(OptChange::OptedIn)
    } else {
        None
    }
}
