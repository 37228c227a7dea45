//! Per-scope summaries for metrics: the facts of status (section 11, docs/rules.md),
//! cheap for every scope ([`ScopeBrief`]) and complete for the few a scrape shows
//! ([`ScopeSummary`]), and which scopes are nearest their limit.
//!
//! It imports only this crate's state, rules and reader; like all of admit-core it
//! never reads a clock (`now` is an argument).

use crate::command::NumberStatus;
use crate::decision::ScopeKey;
use crate::policy::{Limit, Quality};
use crate::reader::{AccountStatus, Reader, Settled, UniqueCount};
use crate::state::TemplateStatus;
use crate::time::{window_open, Dur, Ts};
use std::cmp::Ordering;
use std::collections::HashMap;

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
        let key = |s: &ScopeBrief| (s.headroom_ratio().unwrap_or(f64::INFINITY), s.headroom());
        let (ra, ha) = key(a);
        let (rb, hb) = key(b);
        ra.total_cmp(&rb)
            .then_with(|| {
                ha.map_or(u64::MAX, u64::from)
                    .cmp(&hb.map_or(u64::MAX, u64::from))
            })
            .then_with(|| a.scope.cmp(&b.scope))
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
                if e.value()
                    .csw
                    .get()
                    .is_some_and(|t| window_open(t, *len, now))
                {
                    *count += 1;
                }
            }
        }
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
}
