//! The rules themselves, as functions of state and time. Both the writer and the
//! concurrent readers call these, so a send decided on the fast path and one decided
//! when its command is applied follow the very same code.

use crate::command::{NumberStatus, SendKind};
use crate::decision::{Decision, Reason};
use crate::log::EventLog;
use crate::policy::{Category, Limit, Policy, Quality};
use crate::state::{NumberState, PairKey, Shared, TemplateStatus};
use crate::time::{window_open, Ts};
use crate::AdmitRequest;

/// What the checks before counting say.
pub(crate) enum Pre {
    /// Decided without counting: a denial, or a send inside an open window.
    Final(Decision),
    /// A template outside every window: a conversation would open and be counted.
    NeedsCount,
}

fn active(until: Option<Ts>, now: Ts) -> Option<Option<Ts>> {
    match until {
        Some(t) if t > now => Some((t != Ts::UNTIL_LIFTED).then_some(t)),
        _ => None,
    }
}

/// R3.2 and R3.6: every check that denies comes before counting, in the spec's order.
pub(crate) fn precheck(sh: &Shared, ns: &NumberState, req: &AdmitRequest, now: Ts) -> Pre {
    use Pre::Final;
    let p = &ns.policy;
    let customer = req.customer.get();
    let pair = PairKey::new(ns.idx, customer);
    // an account restriction reported by Meta, on the number or its portfolio, that
    // denies this kind of send (section 10)
    let portfolio = ns.portfolio.as_ref().and_then(|id| {
        sh.portfolios
            .get(id)
            .map(|ps| (ps.restricted_until, ps.restriction_types))
    });
    let restrictions = [Some((ns.restricted_until, ns.restriction_types)), portfolio];
    let mut replying = None;
    let mut restricted: Option<Ts> = None;
    for (until, types) in restrictions.into_iter().flatten() {
        let Some(until) = until.filter(|u| *u > now) else {
            continue;
        };
        let replying = *replying.get_or_insert_with(|| in_reply_window(sh, p, pair, now));
        if types.blocks(replying) {
            // the latest end wins, so an indefinite (`Ts::UNTIL_LIFTED`)
            // restriction leaves no retry time even when a timed one also applies
            restricted = restricted.max(Some(until));
        }
    }
    if let Some(until) = restricted {
        return Final(Decision::deny(
            Reason::NumberRestricted,
            (until != Ts::UNTIL_LIFTED).then_some(until),
        ));
    }
    // a paused or disabled template (R6.3)
    let category = match &req.kind {
        SendKind::Template { id, category } => {
            if let Some(t) = sh.templates.get(id) {
                match t.status {
                    TemplateStatus::Disabled => {
                        return Final(Decision::deny(Reason::TemplateDisabled, None))
                    }
                    TemplateStatus::Paused { .. } => {
                        // the pause's length is this number's profile's (R6.2)
                        if let Some(end) = t.pause_end(p).filter(|e| *e > now) {
                            return Final(Decision::deny(Reason::TemplatePaused, Some(end)));
                        }
                    }
                    TemplateStatus::Active => {}
                }
            }
            Some(*category)
        }
        SendKind::FreeForm => None,
    };
    // an opt-out for this category (R7.2), also inside a service window
    if let Some(c) = category {
        let blocked = c == Category::Marketing || p.opt_out_blocks.contains(&c);
        if blocked && sh.optouts.contains_key(&PairKey::new(ns.scope, customer)) {
            return Final(Decision::deny(Reason::OptedOut, None));
        }
        // 131049: no marketing to this customer for a while
        if c == Category::Marketing {
            if let Some(until) = sh.marketing_holds.get(&PairKey::new(ns.scope, customer)) {
                if *until > now {
                    return Final(Decision::deny(Reason::MarketingHold, Some(*until)));
                }
            }
        }
    }
    // 131056 / 130429 back-offs (section 9)
    if let Some(b) = sh.pair_backoff.get(&pair) {
        if let Some(until) = active(b.until, now) {
            return Final(Decision::deny(Reason::PairRateLimited, until));
        }
    }
    if let Some(until) = active(ns.throughput.until, now) {
        return Final(Decision::deny(Reason::ThroughputLimited, until));
    }
    // the windows (R3.2 steps 1-2)
    let w = sh.pairs.get(&pair).map(|w| *w).unwrap_or_default();
    if let Some(t) = w.csw() {
        if window_open(t, p.service_window, now) {
            return Final(Decision::allow(
                Reason::ServiceWindow,
                t.plus(p.service_window),
            ));
        }
    }
    if let Some(until) = sh.fep.get(&pair).map(|u| *u) {
        if now < until {
            return Final(Decision::allow(Reason::FreeEntryPoint, until));
        }
    }
    if let Some(t) = w.bic() {
        if window_open(t, p.conversation_window, now) {
            return Final(Decision::allow(
                Reason::OpenConversation,
                t.plus(p.conversation_window),
            ));
        }
    }
    // step 3: free-form needs a window
    if category.is_none() {
        return Final(Decision::deny(Reason::OutsideServiceWindow, None));
    }
    // 131048: new conversations of this number are held
    if let Some(until) = active(ns.spam_hold_until, now) {
        return Final(Decision::deny(Reason::SpamCooldown, until));
    }
    Pre::NeedsCount
}

/// Whether a send to the pair would be a reply: inside an open customer service window
/// or free entry point window (R3.2 step 1, R2.3).
fn in_reply_window(sh: &Shared, p: &Policy, pair: PairKey, now: Ts) -> bool {
    let csw = sh.pairs.get(&pair).and_then(|w| w.csw());
    csw.is_some_and(|t| window_open(t, p.service_window, now))
        || sh.fep.get(&pair).is_some_and(|until| now < *until)
}

/// The per-number facts the tier model reads and changes.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub quality: Quality,
    pub status: NumberStatus,
    pub display_name_approved: bool,
    pub flagged_since: Option<Ts>,
    pub recovering_since: Option<Ts>,
}

impl Member {
    pub fn of(n: &NumberState) -> Self {
        Member {
            quality: n.quality,
            status: n.status,
            display_name_approved: n.display_name_approved,
            flagged_since: n.flagged_since,
            recovering_since: n.recovering_since,
        }
    }
    pub fn store(&self, n: &mut NumberState) {
        n.quality = self.quality;
        n.status = self.status;
        n.display_name_approved = self.display_name_approved;
        n.flagged_since = self.flagged_since;
        n.recovering_since = self.recovering_since;
    }
    fn deadline(&self, p: &Policy) -> Option<(Ts, bool)> {
        if !p.flagged_downgrade {
            return None;
        }
        match (self.flagged_since, self.recovering_since) {
            (_, Some(r)) => Some((r.plus(p.flag_period), false)),
            (Some(f), None) => Some((f.plus(p.flag_period), true)),
            _ => None,
        }
    }

    /// A quality reported for the number (R5.5, R6.1).
    pub fn set_quality(&mut self, q: Quality, p: &Policy, now: Ts) {
        self.quality = q;
        if !p.flagged_downgrade {
            return;
        }
        match q {
            Quality::Low => {
                if self.status != NumberStatus::Flagged {
                    self.status = NumberStatus::Flagged;
                    self.flagged_since = Some(now);
                    self.recovering_since = None;
                } else if self.recovering_since.is_some() {
                    // a fall back to Low restarts the 7 Low days from now
                    self.flagged_since = Some(now);
                    self.recovering_since = None;
                }
            }
            Quality::High | Quality::Medium => {
                if self.status == NumberStatus::Flagged && self.recovering_since.is_none() {
                    self.recovering_since = Some(now);
                }
            }
            Quality::Unknown => {}
        }
    }

    /// A status reported by the platform replaces the model's (R5.6).
    pub fn set_status(&mut self, s: NumberStatus, now: Ts) {
        self.status = s;
        match s {
            NumberStatus::Flagged => {
                if self.flagged_since.is_none() {
                    self.flagged_since = Some(now);
                }
                if self.quality == Quality::Low {
                    self.recovering_since = None;
                }
            }
            _ => {
                self.flagged_since = None;
                self.recovering_since = None;
            }
        }
    }
}

/// The limit-scope facts the tier model reads and changes.
#[derive(Clone, Debug)]
pub(crate) struct Tier {
    pub limit: Limit,
    pub model_limit: Limit,
    pub pending_upgrade: Option<Ts>,
    pub upgrades: u32,
    pub downgrades: u32,
}

impl Tier {
    fn set_model(&mut self, l: Limit, p: &Policy) {
        self.model_limit = l;
        if !p.observe_only {
            self.limit = l;
        }
    }
}

/// The scope's quality: its worst known number quality (Unknown only when none is known).
pub(crate) fn scope_quality(members: &[Member]) -> Quality {
    members
        .iter()
        .map(|m| m.quality)
        .filter(|q| *q != Quality::Unknown)
        .min()
        .unwrap_or(Quality::Unknown)
}

/// R5.2-R5.4: whether every condition of the rule for `tier` holds, given the unique
/// customers counted in the rule's window.
pub(crate) fn upgrade_conditions(p: &Policy, tier: &Tier, members: &[Member], unique: u32) -> bool {
    let Some(rule) = p.rule_for(tier.model_limit) else {
        return false;
    };
    let Some(threshold) = rule.threshold_for(tier.model_limit) else {
        return false;
    };
    // no upgrade while Flagged (R5.5)
    let flagged = members.iter().any(|m| m.status == NumberStatus::Flagged);
    let connected = members.iter().all(|m| m.status == NumberStatus::Connected);
    unique >= threshold
        && !flagged
        && rule.quality_ok(scope_quality(members))
        && (!rule.require_connected || connected)
        && (!rule.require_display_name || members.iter().all(|m| m.display_name_approved))
}

/// A change the tier model made, for status and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    Upgraded { at: Ts, to: Limit },
    UpgradeFailed { at: Ts },
    Downgraded { at: Ts, to: Limit },
    Recovered { at: Ts },
}

/// Runs every delayed effect due by `now`, each at exactly its own time and in time order
/// (section 12, docs/rules.md): pending upgrades (checked again at their time) and the 7-day
/// Flagged deadlines (R5.5). Reads the log, never changes it.
pub(crate) fn run_due(
    p: &Policy,
    tier: &mut Tier,
    members: &mut [Member],
    log: &EventLog,
    now: Ts,
) -> Vec<Transition> {
    let mut out = Vec::new();
    loop {
        let flag = members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.deadline(p).map(|(t, down)| (t, i, down)))
            .min();
        let upgrade = tier.pending_upgrade;
        // at equal times a Flagged deadline goes first: an upgrade needs the number unflagged
        let next = match (flag, upgrade) {
            (Some(f), Some(u)) if u < f.0 => Err(u),
            (Some(f), _) => Ok(f),
            (None, Some(u)) => Err(u),
            (None, None) => break,
        };
        match next {
            Ok((t, _, _)) | Err(t) if t > now => break,
            Ok((t, i, true)) => {
                let to = p.prev_tier(tier.model_limit);
                tier.set_model(to, p);
                tier.downgrades += 1;
                // quality is still Low: a new Flagged period starts at once
                let m = &mut members[i];
                m.flagged_since = Some(t);
                m.status = NumberStatus::Flagged;
                out.push(Transition::Downgraded { at: t, to });
            }
            Ok((t, i, false)) => {
                let m = &mut members[i];
                m.status = NumberStatus::Connected;
                m.flagged_since = None;
                m.recovering_since = None;
                out.push(Transition::Recovered { at: t });
            }
            Err(t) => {
                tier.pending_upgrade = None;
                let window = p.rule_for(tier.model_limit).map(|r| r.window);
                let unique = window.map_or(0, |w| log.unique_between(t.minus(w), t));
                match p.next_tier(tier.model_limit) {
                    Some(to) if upgrade_conditions(p, tier, members, unique) => {
                        tier.set_model(to, p);
                        tier.upgrades += 1;
                        out.push(Transition::Upgraded { at: t, to });
                    }
                    _ => out.push(Transition::UpgradeFailed { at: t }),
                }
            }
        }
    }
    out
}
