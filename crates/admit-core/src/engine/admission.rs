//! Admission (R3): sends decided and counted, due effects brought to time, releases
//! (R3.5), and the crossing that starts an upgrade's wait (R5.2-R5.4).

use super::*;

impl Engine {
    pub(super) fn admit(&mut self, req: &AdmitRequest, now: Ts) -> Result<Decision, CoreError> {
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

    pub(super) fn decide(&mut self, req: &AdmitRequest, now: Ts) -> Decision {
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
                        .set_bic(Some(now));
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
    pub(super) fn check_crossing(&mut self, scope: u32, now: Ts) {
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

    pub(super) fn members(&self, ids: &[NumberId]) -> Vec<Member> {
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
    pub(super) fn release(&mut self, id: &AdmissionId, now: Ts) -> bool {
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
            if w.bic() == Some(e.ts) {
                w.set_bic(None);
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
    pub(super) fn delivered(&self, id: &AdmissionId) -> bool {
        let scope = self.shared.scope_ids.get(&id.scope).map(|s| *s);
        scope
            .and_then(|s| self.shared.scopes.get(&s))
            .is_some_and(|sc| sc.log.delivered(id.seq))
    }

    pub(super) fn mark_delivered(&self, id: &AdmissionId) {
        let scope = self.shared.scope_ids.get(&id.scope).map(|s| *s);
        if let Some(mut sc) = scope.and_then(|s| self.shared.scopes.get_mut(&s)) {
            sc.log.mark_delivered(id.seq);
        }
    }
}
