//! Platform and template events (R5.6, R6.2, R6.3, section 10), applied at most once by
//! their delivery key.

use super::*;

impl Engine {
    /// Whether a delivery with this key was applied already (and is still remembered).
    pub(super) fn seen(&self, key: Option<&str>, now: Ts) -> bool {
        key.is_some_and(|k| self.w.seen_events.get(k).is_some_and(|exp| *exp > now))
    }

    /// Remembers an applied delivery's key; a refused one can be delivered again.
    pub(super) fn remember(
        &mut self,
        key: Option<String>,
        out: &Result<Output, CoreError>,
        now: Ts,
    ) {
        if let (Some(k), Ok(_)) = (key, out) {
            let exp = now.plus(EVENT_KEY_TTL);
            self.w.seen_events.insert(k.clone(), exp);
            self.w.seen_expiry.push_back((exp, k));
        }
    }

    pub(super) fn platform(
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

    pub(super) fn with_member(
        &mut self,
        id: &NumberId,
        now: Ts,
        f: impl FnOnce(&mut Member, &Policy),
    ) -> Result<(), CoreError> {
        let NumberRef { scope, policy, .. } = self.number(id)?;
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

    pub(super) fn platform_event(
        &mut self,
        ev: PlatformEvent,
        now: Ts,
    ) -> Result<Output, CoreError> {
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
                let scope = self.number(&number)?.scope;
                let o = if stop {
                    OptChange::OptedOut
                } else {
                    OptChange::OptedIn
                };
                self.set_opt(scope, customer.get(), o);
                applied(None)
            }
            PlatformEvent::FreeEntryPoint { number, customer } => {
                let NumberRef { idx, policy: p, .. } = self.number(&number)?;
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

    pub(super) fn template_entry(
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
    pub(super) fn template_event(
        &mut self,
        t: &crate::ids::TemplateId,
        ev: TemplateEvent,
        now: Ts,
    ) -> bool {
        let longest = |nth: u8| {
            self.w
                .policies
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
    pub(super) fn target_scopes(&self, t: &Target) -> Result<Vec<u32>, CoreError> {
        match t {
            Target::Number(n) => Ok(vec![self.number(n)?.scope]),
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
    pub(super) fn set_limit(&mut self, scope: u32, limit: Limit, now: Ts) {
        self.advance_scope(scope, now);
        if let Some(mut sc) = self.shared.scopes.get_mut(&scope) {
            sc.limit = limit;
            sc.model_limit = limit;
            sc.pending_upgrade = None;
        }
        self.advance_scope(scope, now);
    }
}
