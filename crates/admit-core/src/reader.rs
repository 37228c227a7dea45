//! Concurrent reads: fast-path decisions and status (section 11, docs/rules.md).

use crate::command::{NumberStatus, RestrictionType};
use crate::decision::{Decision, Reason, ScopeKey};
use crate::engine::tier_of;
use crate::ids::{NumberId, PortfolioId};
use crate::policy::{Limit, Policy, Quality};
use crate::rate::{Rate, RateDenial};
use crate::rules::{self, Member, Pre, Tier};
use crate::state::{NumberState, ScopeState, Shared};
use crate::time::{Dur, Ts};
use crate::AdmitRequest;
use admit_sketch::WindowedSketch;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A read handle on an [`crate::Engine`]'s state, usable from any thread while the writer
/// applies commands.
#[derive(Clone, Debug)]
pub struct Reader {
    pub(crate) shared: Arc<Shared>,
}

/// R4: what the account status shows.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AccountStatus {
    Healthy,
    AtRisk,
    Restricted,
}

/// A unique-customer count from a sketch: an estimate unless `exact`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniqueCount {
    pub value: u64,
    pub exact: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberView {
    pub number: NumberId,
    pub portfolio: Option<PortfolioId>,
    pub profile: String,
    pub status: NumberStatus,
    pub quality: Quality,
    pub account_status: AccountStatus,
    pub display_name_approved: bool,
    pub flagged_since: Option<Ts>,
    /// R5.5: when 7 continuous Low days end (a downgrade, if the model is active).
    pub downgrade_at: Option<Ts>,
    /// When 7 recovered days end the Flagged period without a downgrade.
    pub recovery_at: Option<Ts>,
    /// Meta's account restriction on the number or its portfolio: the latest end (or
    /// [`Ts::UNTIL_LIFTED`]), and the active restrictions' types (empty with an
    /// end: a restriction of unknown kind, denying every send).
    pub restricted_until: Option<Ts>,
    pub restriction_types: Vec<RestrictionType>,
    pub spam_hold_until: Option<Ts>,
    pub quality_risks: u32,
    pub throughput_mps: u32,
}

/// The status of a limit scope (a number under the seeds profile, a portfolio under meta).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeStatus {
    pub scope: ScopeKey,
    pub profile: String,
    pub limit: Limit,
    /// Conversations counted in the rolling 24 h window (exact).
    pub used: u32,
    pub headroom: Option<u32>,
    /// R4.1: the limit is used up; lifts by itself at `restricted_until`.
    pub restricted: bool,
    pub restricted_until: Option<Ts>,
    /// When the oldest counted conversation ends (one unit of room comes back).
    pub next_release: Option<Ts>,
    pub account_status: AccountStatus,
    pub quality: Quality,
    /// Every upgrade condition holds now.
    pub upgrade_eligible: bool,
    /// Unique customers the upgrade rule counts now (exact) and its threshold.
    pub upgrade_count: u32,
    pub upgrade_threshold: Option<u32>,
    /// When a pending upgrade takes effect (conditions are checked again then).
    pub upgrade_at: Option<Ts>,
    pub next_limit: Option<Limit>,
    /// The local model's limit when the profile is observe-only (R5.6).
    pub predicted_limit: Option<Limit>,
    pub downgrade_at: Option<Ts>,
    /// Sketch estimates (labelled so) of unique customers in the last 7 and 30 days.
    pub unique_7d: UniqueCount,
    pub unique_30d: UniqueCount,
    pub opt_outs: u32,
    pub upgrades: u32,
    pub downgrades: u32,
    pub numbers: Vec<NumberView>,
}

/// A portfolio's view: its numbers' scopes (seeds) or its own scope (meta).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortfolioStatus {
    pub portfolio: PortfolioId,
    pub profile: String,
    pub restricted_until: Option<Ts>,
    /// The types of the portfolio's own active restriction.
    pub restriction_types: Vec<RestrictionType>,
    pub scopes: Vec<ScopeStatus>,
    /// Unique customers over all the portfolio's numbers (sketch union: an estimate).
    pub unique_7d: UniqueCount,
    pub unique_30d: UniqueCount,
}

/// A portfolio's numbers' scopes added up (seeds profile: each number has its own limit).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeSum {
    /// The sum of the limits (unlimited if any is); `None` without any scope: a
    /// portfolio without numbers has no limit to show.
    pub limit: Option<Limit>,
    pub used: u32,
    pub headroom: Option<u32>,
    /// The earliest of the scopes' next releases.
    pub next_release: Option<Ts>,
    /// R4.1: restricted while any number's limit is used up, until the last of those
    /// lifts.
    pub restricted: bool,
    pub restricted_until: Option<Ts>,
    /// The lowest known rating; Unknown only when no number has a known one (R6.1).
    pub quality: Quality,
    pub account_status: AccountStatus,
    pub opt_outs: u64,
}

impl PortfolioStatus {
    /// One portfolio's status from the parts every shard holds (under the seeds
    /// profile its numbers live on many): `(home, part)`, `home` for the part of the
    /// shard that owns the portfolio's registration, whose profile wins. Restrictions
    /// take the latest end and every type; a scope reported twice counts once; unique
    /// customers are the sum of the shards' estimates, exact only when one shard holds
    /// every scope and counts exactly (a customer reached from two shards counts
    /// twice). `None` when no shard knows the portfolio.
    pub fn merge(
        id: &PortfolioId,
        parts: impl IntoIterator<Item = (bool, PortfolioStatus)>,
    ) -> Option<PortfolioStatus> {
        let mut found = false;
        let mut profile: Option<String> = None;
        let mut restricted_until: Option<Ts> = None;
        let mut restriction_types: Vec<RestrictionType> = Vec::new();
        let mut scopes: Vec<ScopeStatus> = Vec::new();
        let mut unique: Vec<(UniqueCount, UniqueCount)> = Vec::new();
        for (home, p) in parts {
            found = true;
            if !p.scopes.is_empty() {
                unique.push((p.unique_7d, p.unique_30d));
            }
            if (home || profile.is_none()) && !p.profile.is_empty() {
                profile = Some(p.profile);
            }
            restricted_until = restricted_until.max(p.restricted_until);
            for t in p.restriction_types {
                if !restriction_types.contains(&t) {
                    restriction_types.push(t);
                }
            }
            for s in p.scopes {
                if !scopes.iter().any(|x| x.scope == s.scope) {
                    scopes.push(s);
                }
            }
        }
        if !found {
            return None;
        }
        let exact = unique.len() <= 1 && unique.iter().all(|(a, b)| a.exact && b.exact);
        let sum = |f: fn(&(UniqueCount, UniqueCount)) -> u64| UniqueCount {
            value: unique.iter().map(f).sum(),
            exact,
        };
        Some(PortfolioStatus {
            portfolio: id.clone(),
            profile: profile.unwrap_or_else(|| Policy::DEFAULT_PROFILE.into()),
            restricted_until,
            restriction_types,
            unique_7d: sum(|(a, _)| a.value),
            unique_30d: sum(|(_, b)| b.value),
            scopes,
        })
    }

    /// The portfolio's own limit scope (a profile whose limit is the portfolio's).
    pub fn own_scope(&self) -> Option<&ScopeStatus> {
        self.scopes
            .iter()
            .find(|s| s.scope == ScopeKey::Portfolio(self.portfolio.clone()))
    }

    /// The scopes added up, for a portfolio without a scope of its own.
    pub fn sum_of_scopes(&self) -> ScopeSum {
        let scopes = &self.scopes;
        let mut limit: Option<u64> = Some(0);
        let mut used = 0u32;
        let mut opt_outs = 0u64;
        for s in scopes {
            used = used.saturating_add(s.used);
            opt_outs += u64::from(s.opt_outs);
            limit = match (limit, s.limit.cap()) {
                (Some(a), Some(c)) => Some(a + u64::from(c)),
                _ => None,
            };
        }
        let limit = limit.map_or(Limit::Unlimited, |l| {
            Limit::Capped(u32::try_from(l).unwrap_or(u32::MAX))
        });
        let restricted = scopes.iter().any(|s| s.restricted);
        let restricted_until = scopes
            .iter()
            .filter(|s| s.restricted)
            .filter_map(|s| s.restricted_until)
            .max();
        // as within a shared scope: Unknown ratings say nothing
        let quality = scopes
            .iter()
            .map(|s| s.quality)
            .filter(|q| *q != Quality::Unknown)
            .min()
            .unwrap_or(Quality::Unknown);
        ScopeSum {
            limit: (!scopes.is_empty()).then_some(limit),
            used,
            headroom: limit.headroom(used),
            next_release: scopes.iter().filter_map(|s| s.next_release).min(),
            restricted,
            restricted_until,
            quality,
            account_status: account_status(restricted, quality),
            opt_outs,
        }
    }
}

/// A scope with its delayed effects due by some time run (see [`Reader::settled`]).
pub(crate) struct Settled<'a> {
    pub tier: Tier,
    pub policy: Arc<Policy>,
    pub numbers: Vec<NumberState>,
    pub members: Vec<Member>,
    pub sc: dashmap::mapref::one::Ref<'a, u32, Box<ScopeState>>,
    /// Conversations counted in the rolling 24 h window (exact).
    pub used: u32,
    pub restricted: bool,
    pub quality: Quality,
    pub account_status: AccountStatus,
}

fn active(t: Option<Ts>, now: Ts) -> Option<Ts> {
    t.filter(|t| *t > now)
}

fn due(t: Option<Ts>, now: Ts) -> bool {
    t.is_some_and(|t| t <= now)
}

pub(crate) fn account_status(restricted: bool, q: Quality) -> AccountStatus {
    if restricted {
        AccountStatus::Restricted
    } else if q == Quality::Low {
        AccountStatus::AtRisk
    } else {
        AccountStatus::Healthy
    }
}

impl Reader {
    /// The engine's time: the latest command time it applied (0 before any). A caller
    /// deciding from memory takes `max(its clock, this)`, so a window already closed in
    /// the log's time never reads as open on a node whose clock is behind.
    pub fn engine_now(&self) -> Ts {
        Ts(self
            .shared
            .engine_now
            .load(std::sync::atomic::Ordering::Acquire))
    }

    /// Decides a send from memory when no count is involved: a denial by a check before
    /// counting, a send inside an open window, or a retry of a recorded decision.
    /// `None` means the send may open a conversation and must go through the log.
    ///
    /// Only valid on a replica that is certainly the leader and has applied every
    /// committed command (the server guarantees that with its lease).
    pub fn try_fast(&self, req: &AdmitRequest, now: Ts) -> Option<Decision> {
        let sh = &self.shared;
        if let Some(key) = &req.idempotency_key {
            if let Some(e) = sh.idempotency.get(key) {
                if e.expires > now {
                    // a conflicting reuse is reported by the writer
                    return (e.request == *req).then(|| e.decision.replay());
                }
            }
        }
        let ns = sh.numbers.get(&req.number)?;
        let pre = rules::precheck(sh, &ns, req, now);
        let scope = ns.scope;
        // a Flagged deadline of this number due by now (R5.5)
        let own_due = due(ns.downgrade_at(), now) || due(ns.recovery_at(), now);
        drop(ns);
        let Pre::Final(mut d) = pre else {
            return None;
        };
        d.decided_at = now;
        let members = {
            let sc = sh.scopes.get(&scope)?;
            // A delayed effect due by now (an upgrade, a Flagged deadline) changes the
            // limit this decision reports; only the writer runs it (`advance_scope`), so
            // such a send goes through the log rather than report a stale limit.
            if own_due || due(sc.pending_upgrade, now) {
                return None;
            }
            d.limit = Some(sc.limit);
            d.used = sc.log.day_unique_at(now);
            // the other numbers' deadlines matter only in a shared (portfolio) scope
            (sc.members.len() > 1 && sc.policy.flagged_downgrade).then(|| sc.members.clone())
        };
        for id in members.iter().flatten() {
            if let Some(n) = sh.numbers.get(id) {
                if due(n.downgrade_at(), now) || due(n.recovery_at(), now) {
                    return None;
                }
            }
        }
        Some(d)
    }

    /// R8: the decision for a send the leader's token buckets refused, carrying the
    /// scope's limit and usage like every other decision (as the scope holds them now).
    /// Without them for an unknown number, which the buckets never see.
    pub fn rate_denial(&self, number: &NumberId, denial: RateDenial, now: Ts) -> Decision {
        let (reason, retry_at) = match denial {
            RateDenial::Throughput { retry_at } => (Reason::ThroughputLimited, retry_at),
            RateDenial::Pair { retry_at } => (Reason::PairRateLimited, retry_at),
        };
        let mut d = Decision::deny(reason, Some(retry_at));
        d.decided_at = now;
        let scope = self.shared.numbers.get(number).map(|n| n.scope);
        if let Some(sc) = scope.and_then(|s| self.shared.scopes.get(&s)) {
            d.limit = Some(sc.limit);
            d.used = sc.log.day_unique_at(now);
        }
        d
    }

    /// R8.1: the number's throughput (messages per second), for the leader's token bucket.
    pub fn throughput_mps(&self, number: &NumberId) -> Option<u32> {
        self.shared
            .numbers
            .get(number)
            .map(|n| n.throughput_mps.unwrap_or(n.policy.throughput_mps))
    }

    /// R8.1 and R8.2 together, as the token buckets take them (one lookup of
    /// the number for both): its throughput and its pair rate.
    pub fn rates(&self, number: &NumberId) -> Option<(Rate, Rate)> {
        self.shared.numbers.get(number).map(|n| {
            (
                Rate::per_second(n.throughput_mps.unwrap_or(n.policy.throughput_mps)),
                Rate::every(n.policy.pair_interval, n.policy.pair_burst),
            )
        })
    }

    /// R8.2: the pair rate of the number's profile: (interval, burst).
    pub fn pair_rate(&self, number: &NumberId) -> Option<(Dur, u32)> {
        self.shared
            .numbers
            .get(number)
            .map(|n| (n.policy.pair_interval, n.policy.pair_burst))
    }

    /// The number of this shard registered with these display digits
    /// (`RegisterNumber.display_phone_number`), and when, for events that carry only
    /// that form.
    pub fn number_by_display(&self, digits: &str) -> Option<(NumberId, Ts)> {
        self.shared.displays.get(digits).map(|n| *n)
    }

    /// The limit scope a number's sends count against (for routing).
    pub fn scope_of(&self, number: &NumberId) -> Option<ScopeKey> {
        self.shared.numbers.get(number).map(|n| n.scope_key.clone())
    }

    /// The limit scope claimed for a number on this shard (its home shard), if any:
    /// always right once made, registered yet or not ([`crate::Command::ClaimScope`]).
    pub fn claim_of(&self, number: &NumberId) -> Option<ScopeKey> {
        self.shared.claims.get(number).map(|s| s.clone())
    }

    pub fn numbers(&self) -> Vec<NumberId> {
        let mut v: Vec<NumberId> = self.shared.numbers.iter().map(|n| *n.key()).collect();
        v.sort();
        v
    }

    pub fn portfolios(&self) -> Vec<PortfolioId> {
        let mut v: Vec<PortfolioId> = self
            .shared
            .portfolios
            .iter()
            .map(|p| p.key().clone())
            .collect();
        v.sort();
        v
    }

    fn number_view(&self, n: &NumberState, restricted: bool, now: Ts) -> NumberView {
        let portfolio = n.portfolio.as_ref().and_then(|p| {
            self.shared
                .portfolios
                .get(p)
                .map(|p| (p.restricted_until, p.restriction_types))
        });
        // the same restrictions the decisions read (rules::precheck): the latest end
        // wins, `Ts::UNTIL_LIFTED` over any timed one
        let mut restricted_until = None;
        let mut types = Vec::new();
        let mut messaging = false;
        for (until, set) in [Some((n.restricted_until, n.restriction_types)), portfolio]
            .into_iter()
            .flatten()
        {
            if let Some(u) = active(until, now) {
                restricted_until = restricted_until.max(Some(u));
                types.extend(set.types());
                messaging |= set.affects_messaging();
            }
        }
        types.sort_unstable();
        types.dedup();
        NumberView {
            number: n.id,
            portfolio: n.portfolio.clone(),
            profile: n.profile.clone(),
            status: n.status,
            quality: n.quality,
            // RESTRICTED_ADD_PHONE_NUMBER_ACTION alone does not restrict messaging
            account_status: account_status(restricted || messaging, n.quality),
            display_name_approved: n.display_name_approved,
            flagged_since: n.flagged_since,
            downgrade_at: n.downgrade_at(),
            recovery_at: n.recovery_at(),
            restricted_until,
            restriction_types: types,
            spam_hold_until: active(n.spam_hold_until, now),
            quality_risks: n.quality_risks,
            throughput_mps: n.throughput_mps.unwrap_or(n.policy.throughput_mps),
        }
    }

    /// A scope as it stands at `now`: delayed effects due by then are shown as they
    /// are, applied or not yet (the writer applies them before its next command).
    ///
    /// `numbers`: also copy the numbers' states (status views need them; a
    /// metrics scrape over every scope does not, and is much cheaper without).
    pub(crate) fn settled(&self, idx: u32, now: Ts, numbers: bool) -> Option<Settled<'_>> {
        let sh = &self.shared;
        let (mut tier, ids, policy) = {
            let sc = sh.scopes.get(&idx)?;
            (tier_of(&sc), sc.members.clone(), sc.policy.clone())
        };
        let (mut numbers, mut members): (Vec<NumberState>, Vec<Member>) = if numbers {
            let n: Vec<NumberState> = ids
                .iter()
                .filter_map(|id| sh.numbers.get(id).map(|n| NumberState::clone(&n)))
                .collect();
            let m = n.iter().map(Member::of).collect();
            (n, m)
        } else {
            let m = ids
                .iter()
                .filter_map(|id| sh.numbers.get(id).map(|n| Member::of(&n)))
                .collect();
            (Vec::new(), m)
        };
        let sc = sh.scopes.get(&idx)?;
        rules::run_due(&policy, &mut tier, &mut members, &sc.log, now);
        for (n, m) in numbers.iter_mut().zip(&members) {
            m.store(n);
        }
        let used = sc.log.day_unique_at(now);
        let restricted = tier.limit.cap().is_some_and(|c| used >= c);
        let quality = rules::scope_quality(&members);
        Some(Settled {
            account_status: account_status(restricted, quality),
            quality,
            restricted,
            used,
            tier,
            policy,
            numbers,
            members,
            sc,
        })
    }

    fn scope_status(&self, idx: u32, now: Ts) -> Option<ScopeStatus> {
        let Settled {
            tier,
            policy,
            numbers,
            members,
            sc,
            used,
            restricted,
            quality,
            account_status,
        } = self.settled(idx, now, true)?;
        let next_release = sc.log.next_release(now);
        // used >= limit lifts once used < limit: when the (used - limit + 1)-th counted
        // customer (oldest first) has aged out, not the first when used > limit
        let restricted_until = match tier.limit.cap() {
            Some(cap) if used >= cap => sc.log.nth_release(now, used - cap + 1),
            _ => None,
        };
        let rule = policy.rule_for(tier.model_limit);
        let upgrade_count = rule.map_or(0, |r| match &sc.log.long {
            Some(l) if l.len == r.window => sc.log.long_unique_at(now).unwrap_or(0),
            _ => sc.log.unique_between(now.minus(r.window), now),
        });
        let sketch: &WindowedSketch = &sc.sketch;
        let est = |d: Dur| {
            let e = sketch.estimate(d.ms(), now.ms());
            UniqueCount {
                value: e.value,
                exact: e.exact,
            }
        };
        let views = numbers
            .iter()
            .map(|n| self.number_view(n, restricted, now))
            .collect::<Vec<_>>();
        Some(ScopeStatus {
            scope: sc.key.clone(),
            profile: sc.profile.to_string(),
            limit: tier.limit,
            used,
            headroom: tier.limit.headroom(used),
            restricted,
            restricted_until,
            next_release,
            account_status,
            quality,
            upgrade_eligible: rules::upgrade_conditions(&policy, &tier, &members, upgrade_count),
            upgrade_count,
            upgrade_threshold: rule.and_then(|r| r.threshold_for(tier.model_limit)),
            upgrade_at: tier.pending_upgrade,
            next_limit: policy.next_tier(tier.model_limit),
            predicted_limit: policy.observe_only.then_some(tier.model_limit),
            downgrade_at: numbers.iter().filter_map(|n| n.downgrade_at()).min(),
            unique_7d: est(Dur::days(7)),
            unique_30d: est(Dur::days(30)),
            opt_outs: sc.opt_outs,
            upgrades: tier.upgrades,
            downgrades: tier.downgrades,
            numbers: views,
        })
    }

    /// Status of a number's limit scope, with this number's view first.
    pub fn number_status(&self, number: &NumberId, now: Ts) -> Option<ScopeStatus> {
        let idx = self.shared.numbers.get(number)?.scope;
        let mut s = self.scope_status(idx, now)?;
        if let Some(i) = s.numbers.iter().position(|v| v.number == *number) {
            s.numbers.swap(0, i);
        }
        Some(s)
    }

    pub fn portfolio_status(&self, id: &PortfolioId, now: Ts) -> Option<PortfolioStatus> {
        let sh = &self.shared;
        let (profile, restricted_until, types, members) = {
            let p = sh.portfolios.get(id)?;
            (
                p.profile.clone(),
                p.restricted_until,
                p.restriction_types,
                p.members.clone(),
            )
        };
        let restricted_until = active(restricted_until, now);
        let mut idxs: Vec<u32> = members
            .iter()
            .filter_map(|n| sh.numbers.get(n).map(|n| n.scope))
            .collect();
        if let Some(s) = sh.scope_ids.get(&ScopeKey::Portfolio(id.clone())) {
            idxs.push(*s);
        }
        idxs.sort_unstable();
        idxs.dedup();
        let scopes: Vec<ScopeStatus> = idxs
            .iter()
            .filter_map(|i| self.scope_status(*i, now))
            .collect();
        let sketches: Vec<_> = idxs.iter().filter_map(|i| sh.scopes.get(i)).collect();
        let refs: Vec<&WindowedSketch> = sketches.iter().map(|s| &s.sketch).collect();
        let est = |d: Dur| {
            let e = WindowedSketch::union_estimate(&refs, d.ms(), now.ms());
            UniqueCount {
                value: e.value,
                exact: e.exact,
            }
        };
        let (unique_7d, unique_30d) = (est(Dur::days(7)), est(Dur::days(30)));
        drop(refs);
        drop(sketches);
        Some(PortfolioStatus {
            portfolio: id.clone(),
            profile,
            restricted_until,
            restriction_types: if restricted_until.is_some() {
                types.types()
            } else {
                Vec::new()
            },
            scopes,
            unique_7d,
            unique_30d,
        })
    }

    /// Every scope's status, lowest headroom first (unlimited last).
    pub fn list_by_headroom(&self, now: Ts) -> Vec<ScopeStatus> {
        let mut idxs: Vec<u32> = self.shared.scopes.iter().map(|s| *s.key()).collect();
        idxs.sort_unstable();
        let mut v: Vec<ScopeStatus> = idxs
            .iter()
            .filter_map(|i| self.scope_status(*i, now))
            .collect();
        v.sort_by(|a, b| {
            let h = |s: &ScopeStatus| s.headroom.map_or(u64::MAX, u64::from);
            h(a).cmp(&h(b)).then_with(|| a.scope.cmp(&b.scope))
        });
        v
    }

    /// Entries in the per-customer window table (for memory accounting and metrics).
    pub fn window_entries(&self) -> usize {
        self.shared.pairs.len()
    }
}
