//! Registration of numbers and portfolios, limit scopes, and policy profiles (R5.1).

use super::*;

impl Engine {
    pub(super) fn profile(&self, name: &str) -> Result<Arc<Policy>, CoreError> {
        self.w
            .policies
            .get(name)
            .cloned()
            .ok_or_else(|| CoreError::UnknownProfile(name.to_owned()))
    }

    pub(super) fn ensure_scope(
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
            Box::new(ScopeState {
                key: key.clone(),
                profile: policy.name.as_str().into(),
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
            }),
        );
        self.shared.scope_ids.insert(key, idx);
        idx
    }

    pub(super) fn register_portfolio(
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

    pub(super) fn register_number(
        &mut self,
        r: NumberRegistration,
        now: Ts,
    ) -> Result<Output, CoreError> {
        let id = r
            .number
            .ok_or_else(|| CoreError::invalid("number", "is required"))?;
        if let Some(mps) = r.throughput_mps {
            if mps == 0 {
                return Err(CoreError::invalid("throughput_mps", "must be at least 1"));
            }
        }
        if let Some(d) = &r.display_phone_number {
            if d.is_empty() || d.len() > 32 || !d.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CoreError::invalid(
                    "display_phone_number",
                    "must be 1 to 32 digits",
                ));
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
                    sc.profile = new_profile.into();
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
                // on the number's home shard: its claim, if made, decides the scope
                self.check_claim(&id, &key)?;
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
                    Box::new(NumberState {
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
                        display: None,
                    }),
                );
                // Registered here, the number answers a claim itself (`claim_scope`
                // falls back to its record), so a claim on this shard says nothing
                // more: dropped, it stops costing a table entry a number. Removed
                // after the insert, so a reader never finds neither.
                self.shared.claims.remove(&id);
                let mut s = self.shared.scopes.get_mut(&scope).expect("scope");
                // most scopes are one number's: no room for four (push's first growth)
                s.members.reserve_exact(1);
                s.members.push(id);
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
        if let Some(d) = r.display_phone_number {
            self.set_display(id, d, now);
        }
        if let Some(l) = r.limit {
            self.set_limit(scope, l, now);
        }
        self.advance_scope(scope, now);
        Ok(Output::Registered)
    }

    /// The number as displayed: the latest registration wins, also over another number
    /// of this shard that had the same digits (Meta moved the display number).
    fn set_display(&mut self, id: NumberId, d: String, now: Ts) {
        let sh = &self.shared;
        let old = sh.numbers.get(&id).and_then(|n| n.display.clone());
        if old.as_deref() == Some(d.as_str()) {
            return;
        }
        if let Some(old) = old {
            sh.displays.remove_if(&old, |_, (n, _)| *n == id);
        }
        if let Some((other, _)) = sh
            .displays
            .insert(d.clone(), (id, now))
            .filter(|o| o.0 != id)
        {
            if let Some(mut n) = sh.numbers.get_mut(&other) {
                n.display = None;
            }
        }
        sh.numbers.get_mut(&id).expect("known").display = Some(d);
    }

    /// A number without a portfolio joins one (created with the number's profile if
    /// this shard does not know it yet, as on registration).
    pub(super) fn join_portfolio(&mut self, id: &NumberId, to: &PortfolioId, profile: &str) {
        let mut p = self.shared.portfolios.entry(to.clone()).or_default();
        if p.profile.is_empty() {
            p.profile = profile.to_owned();
        }
        p.members.push(*id);
    }

    pub(super) fn set_policy(&mut self, p: Policy, now: Ts) -> Result<Output, CoreError> {
        p.validate()?;
        // every shard holds every profile, but only some of a profile's numbers: a rule
        // that looked at this shard's numbers would accept the change on some shards and
        // refuse it on others. "An existing profile keeps its scope" decides alike on all.
        if let Some(old) = self.w.policies.get(&p.name) {
            if old.scope != p.scope {
                return Err(CoreError::Conflict(
                    "policy.scope: an existing profile keeps its limit scope; create a new profile"
                        .into(),
                ));
            }
        }
        let arc = Arc::new(p.clone());
        self.w.policies.insert(p.name.clone(), arc.clone());
        for mut n in self.shared.numbers.iter_mut() {
            if n.profile == p.name {
                n.policy = arc.clone();
            }
        }
        let scopes: Vec<u32> = self
            .shared
            .scopes
            .iter_mut()
            .filter(|s| *s.profile == *p.name)
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
}
