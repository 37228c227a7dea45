//! Per-scope summaries for metrics: the facts of status (section 11, docs/rules.md),
//! cheap for every scope ([`ScopeBrief`]) and complete for the few a scrape shows
//! ([`ScopeSummary`]), and which scopes are nearest their limit.
//!
//! It imports only this crate's state, rules and reader; like all of admit-core it
//! never reads a clock (`now` is an argument).

use crate::command::NumberStatus;
use crate::decision::ScopeKey;
use crate::engine::tier_of;
use crate::policy::{Limit, Policy, Quality};
use crate::reader::{account_status, AccountStatus, Reader, Settled, UniqueCount};
use crate::rules::{self, Member};
use crate::state::{ScopeState, TemplateStatus};
use crate::time::{window_open, Dur, Ts};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

/// What every scope is counted by: its limit, usage and account status at `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeBrief {
    /// The scope's index on its shard (valid for [`Reader::scope_summaries`] on the
    /// same reader, until the writer changes the scope).
    pub id: u32,
    pub scope: ScopeKey,
    pub limit: Limit,
    /// Conversations counted in the rolling 24 h window (exact, R3.1).
    pub used: u32,
    pub account_status: AccountStatus,
}

impl ScopeBrief {
    pub fn headroom(&self) -> Option<u32> {
        self.limit.headroom(self.used)
    }

    /// Headroom as a share of the limit, 0..=1 (`None`: unlimited). A limit of 0 has
    /// no room: 0.
    pub fn headroom_ratio(&self) -> Option<f64> {
        let cap = self.limit.cap()?;
        let room = self.headroom().unwrap_or(0);
        Some(if cap == 0 {
            0.0
        } else {
            f64::from(room) / f64::from(cap)
        })
    }

    /// Order "nearest its limit first": lowest headroom ratio, then lowest headroom,
    /// unlimited scopes last, then by scope (a total order, so a top-N is stable).
    pub fn nearest_limit_first(a: &ScopeBrief, b: &ScopeBrief) -> Ordering {
        Rank::of(a.limit, a.used).order(Rank::of(b.limit, b.used), &a.scope, &b.scope)
    }
}

/// The sort key of "nearest its limit first", computed without the scope's key.
#[derive(Copy, Clone, Debug)]
struct Rank {
    ratio: f64,
    headroom: u64,
}

impl Rank {
    fn of(limit: Limit, used: u32) -> Rank {
        let room = limit.headroom(used);
        let ratio = match limit.cap() {
            None => f64::INFINITY,
            Some(0) => 0.0,
            Some(c) => f64::from(room.unwrap_or(0)) / f64::from(c),
        };
        Rank {
            ratio,
            headroom: room.map_or(u64::MAX, u64::from),
        }
    }
    fn order(self, o: Rank, a: &ScopeKey, b: &ScopeKey) -> Ordering {
        self.ratio
            .total_cmp(&o.ratio)
            .then(self.headroom.cmp(&o.headroom))
            .then_with(|| a.cmp(b))
    }
}

/// Everything the per-scope metrics show about one scope at `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeSummary {
    pub brief: ScopeBrief,
    pub quality: Quality,
    /// The scope's numbers by status: Connected, Flagged, Disconnected.
    pub numbers_by_status: [(NumberStatus, u32); 3],
    /// When a pending upgrade takes effect (R5.2-R5.4).
    pub upgrade_at: Option<Ts>,
    /// The earliest Flagged downgrade among the scope's numbers (R5.5).
    pub downgrade_at: Option<Ts>,
    /// Sketch estimates of unique customers in 7 and 30 days.
    pub unique_7d: UniqueCount,
    pub unique_30d: UniqueCount,
    /// Customers of the scope's numbers whose service window is open (R2.1).
    pub open_service_windows: u32,
    /// Customers opted out of the scope (R7).
    pub opt_outs: u32,
    /// Templates that deny this scope's sends now (R6.3): paused as the scope's
    /// profile measures the pause (R6.2), and disabled. Templates are shared by every
    /// number, so this is what the scope would meet, not templates it owns.
    pub templates: TemplateCounts,
}

/// Templates by status (a template's status is shared by every number, so it is not
/// per scope).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateCounts {
    pub paused: u32,
    pub disabled: u32,
}

fn brief(id: u32, s: &Settled<'_>) -> ScopeBrief {
    ScopeBrief {
        id,
        scope: s.sc.key.clone(),
        limit: s.tier.limit,
        used: s.used,
        account_status: s.account_status,
    }
}

impl Reader {
    /// Every scope of this state, as it stands at `now` (in no particular order).
    pub fn scope_briefs(&self, now: Ts) -> Vec<ScopeBrief> {
        let ids: Vec<u32> = self.shared.scopes.iter().map(|s| *s.key()).collect();
        ids.into_iter()
            .filter_map(|id| self.settled(id, now, false).map(|s| brief(id, &s)))
            .collect()
    }

    /// The full summaries of the scopes `ids` (from [`Reader::scope_briefs`]); a scope
    /// gone meanwhile is left out.
    pub fn scope_summaries(&self, ids: &[u32], now: Ts) -> Vec<ScopeSummary> {
        if ids.is_empty() {
            return Vec::new();
        }
        let sh = &self.shared;
        // one pass over the window table, counting only the wanted scopes' numbers
        let mut windows: HashMap<u32, (u32, Dur)> = HashMap::new();
        for id in ids {
            if let Some(sc) = sh.scopes.get(id) {
                for n in &sc.members {
                    if let Some(ns) = sh.numbers.get(n) {
                        windows.insert(ns.idx, (0, ns.policy.service_window));
                    }
                }
            }
        }
        for e in sh.pairs.iter() {
            if let Some((count, len)) = windows.get_mut(&e.key().owner()) {
                if e.value().csw().is_some_and(|t| window_open(t, *len, now)) {
                    *count += 1;
                }
            }
        }
        let mut seen = Vec::new();
        ids.iter()
            .filter_map(|id| {
                let s = self.settled(*id, now, true)?;
                let by = |st: NumberStatus| {
                    let n = s.members.iter().filter(|m| m.status == st).count();
                    (st, u32::try_from(n).unwrap_or(u32::MAX))
                };
                let est = |d: Dur| {
                    let e = s.sc.sketch.estimate(d.ms(), now.ms());
                    UniqueCount {
                        value: e.value,
                        exact: e.exact,
                    }
                };
                let open = s
                    .numbers
                    .iter()
                    .filter_map(|n| windows.get(&n.idx).map(|w| w.0))
                    .sum();
                Some(ScopeSummary {
                    brief: brief(*id, &s),
                    quality: s.quality,
                    numbers_by_status: [
                        by(NumberStatus::Connected),
                        by(NumberStatus::Flagged),
                        by(NumberStatus::Disconnected),
                    ],
                    upgrade_at: s.tier.pending_upgrade,
                    downgrade_at: s.numbers.iter().filter_map(|n| n.downgrade_at()).min(),
                    unique_7d: est(Dur::days(7)),
                    unique_30d: est(Dur::days(30)),
                    open_service_windows: open,
                    opt_outs: s.sc.opt_outs,
                    templates: per_policy(&s.policy, &mut seen, || {
                        self.templates_for(&s.policy, now)
                    }),
                })
            })
            .collect()
    }

    /// Templates paused (a pause not yet over at `now`) and disabled.
    pub fn template_counts(&self, now: Ts) -> TemplateCounts {
        let mut c = TemplateCounts::default();
        for t in self.shared.templates.iter() {
            match t.status {
                // a pause of profile length ends per number: paused while it is set
                TemplateStatus::Paused { until } if t.pause.is_some() || until > now => {
                    c.paused += 1
                }
                TemplateStatus::Disabled => c.disabled += 1,
                _ => {}
            }
        }
        c
    }

    /// Templates that deny a send under policy `p` at `now` (the checks of R6.3).
    fn templates_for(&self, p: &Policy, now: Ts) -> TemplateCounts {
        let mut c = TemplateCounts::default();
        for t in self.shared.templates.iter() {
            match t.status {
                TemplateStatus::Disabled => c.disabled += 1,
                TemplateStatus::Paused { .. } if t.pause_end(p).is_some_and(|e| e > now) => {
                    c.paused += 1
                }
                _ => {}
            }
        }
        c
    }

    /// Adds every scope of this state, as it stands at `now`, to `into`: the
    /// aggregates, and the scope itself when it is among the `into.top` nearest
    /// their limit so far (tagged with `tag`, e.g. the shard). One pass; a scope
    /// costs no allocation unless it enters the top.
    pub fn roll_up(&self, tag: u32, now: Ts, into: &mut ScopeRollup) {
        // ids first, so no map shard stays read-locked for the whole pass
        let mut ids = std::mem::take(&mut into.ids);
        ids.clear();
        ids.extend(self.shared.scopes.iter().map(|s| *s.key()));
        let mut members = std::mem::take(&mut into.members);
        for id in &ids {
            let Some(sc) = self.shared.scopes.get(id) else {
                continue;
            };
            let (limit, used, status) = self.brief_of(&sc, &mut members, now);
            into.add(tag, *id, &sc.key, limit, used, status);
        }
        into.ids = ids;
        into.members = members;
    }

    /// The limit, usage and account status of `sc` at `now`, as [`Reader::settled`]
    /// gives them, into a reused buffer of members.
    fn brief_of(
        &self,
        sc: &ScopeState,
        members: &mut Vec<Member>,
        now: Ts,
    ) -> (Limit, u32, AccountStatus) {
        members.clear();
        for n in &sc.members {
            if let Some(n) = self.shared.numbers.get(n) {
                members.push(Member::of(&n));
            }
        }
        let mut tier = tier_of(sc);
        rules::run_due(&sc.policy, &mut tier, members, &sc.log, now);
        let used = sc.log.day_unique_at(now);
        let restricted = tier.limit.cap().is_some_and(|c| used >= c);
        let quality = rules::scope_quality(members);
        (tier.limit, used, account_status(restricted, quality))
    }
}

/// A value computed once per distinct policy (scopes of one profile share it).
fn per_policy<T: Copy>(
    p: &Arc<Policy>,
    seen: &mut Vec<(Arc<Policy>, T)>,
    f: impl FnOnce() -> T,
) -> T {
    if let Some((_, v)) = seen.iter().find(|(q, _)| Arc::ptr_eq(q, p)) {
        return *v;
    }
    let v = f();
    seen.push((p.clone(), v));
    v
}

/// Upper bounds of the headroom-ratio histogram's buckets (`+Inf` implied).
pub const HEADROOM_RATIO_BOUNDS: [f64; 8] = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0];

/// A histogram of headroom ratios with [`HEADROOM_RATIO_BOUNDS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RatioHistogram {
    /// Cumulative: scopes with a ratio at most each bound.
    pub le: [u64; HEADROOM_RATIO_BOUNDS.len()],
    pub count: u64,
    pub sum: f64,
}

/// What a scope is grouped by in the aggregates.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeGroup {
    /// `false`: a number scope; `true`: a portfolio scope.
    pub portfolio: bool,
    pub account_status: AccountStatus,
    pub limit: Limit,
}

/// Every scope of one or more states, folded into aggregates, and the `top` nearest
/// their limit kept in full: what a metrics scrape shows, computed in one pass over
/// the scopes with a bounded heap instead of a sort.
#[derive(Debug)]
pub struct ScopeRollup {
    top: usize,
    /// The kept scopes; the one farthest from its limit on top (evicted first).
    heap: BinaryHeap<Kept>,
    /// Scopes by group.
    pub groups: BTreeMap<ScopeGroup, u64>,
    /// Headroom ratios of capped scopes: `[number scopes, portfolio scopes]`.
    pub ratios: [RatioHistogram; 2],
    /// Scopes seen.
    pub scopes: u64,
    // buffers reused across scopes and states
    ids: Vec<u32>,
    members: Vec<Member>,
}

#[derive(Debug)]
struct Kept {
    rank: Rank,
    tag: u32,
    brief: ScopeBrief,
}

impl PartialEq for Kept {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Kept {}
impl PartialOrd for Kept {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Kept {
    fn cmp(&self, o: &Self) -> Ordering {
        self.rank.order(o.rank, &self.brief.scope, &o.brief.scope)
    }
}

impl ScopeRollup {
    /// An empty rollup keeping the `top` scopes nearest their limit.
    pub fn new(top: usize) -> Self {
        ScopeRollup {
            top,
            heap: BinaryHeap::with_capacity(top.saturating_add(1).min(1 << 16)),
            groups: BTreeMap::new(),
            ratios: Default::default(),
            scopes: 0,
            ids: Vec::new(),
            members: Vec::new(),
        }
    }

    fn add(
        &mut self,
        tag: u32,
        id: u32,
        scope: &ScopeKey,
        limit: Limit,
        used: u32,
        status: AccountStatus,
    ) {
        self.scopes += 1;
        let portfolio = matches!(scope, ScopeKey::Portfolio(_));
        *self
            .groups
            .entry(ScopeGroup {
                portfolio,
                account_status: status,
                limit,
            })
            .or_default() += 1;
        let rank = Rank::of(limit, used);
        if rank.ratio.is_finite() {
            let h = &mut self.ratios[usize::from(portfolio)];
            for (n, b) in h.le.iter_mut().zip(HEADROOM_RATIO_BOUNDS) {
                *n += u64::from(rank.ratio <= b);
            }
            h.count += 1;
            h.sum += rank.ratio;
        }
        if self.top == 0 {
            return;
        }
        if self.heap.len() == self.top {
            let worst = self.heap.peek().expect("a full heap");
            if rank.order(worst.rank, scope, &worst.brief.scope) != Ordering::Less {
                return;
            }
            self.heap.pop();
        }
        self.heap.push(Kept {
            rank,
            tag,
            brief: ScopeBrief {
                id,
                scope: scope.clone(),
                limit,
                used,
                account_status: status,
            },
        });
    }

    /// The kept scopes, nearest their limit first, each with its tag.
    pub fn into_top(self) -> Vec<(u32, ScopeBrief)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|k| (k.tag, k.brief))
            .collect()
    }
}
