//! Inbound messages (R2.1, R7.1 keywords) and send outcomes (R3.5 releases, section 9
//! reactions to Meta's error codes).

use super::*;

impl Engine {
    pub(super) fn inbound(&mut self, i: &Inbound, now: Ts) -> Result<Output, CoreError> {
        let NumberRef { idx, scope, policy } = self.number(&i.number)?;
        let customer = i.customer.get();
        self.shared
            .pairs
            .entry(PairKey::new(idx, customer))
            .or_default()
            .set_csw(Some(now));
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

    pub(super) fn set_opt(&mut self, scope: u32, customer: u64, o: OptChange) {
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

    pub(super) fn outcome(&mut self, o: &Outcome, now: Ts) -> Result<Output, CoreError> {
        let NumberRef {
            idx,
            scope,
            policy: p,
        } = self.number(&o.number)?;
        let customer = o.customer.get();
        let pair = PairKey::new(idx, customer);
        let mut released = false;
        let mut hold_until = None;
        // the admission named, or the one the sender reported for Meta's message id
        let admission = match (&o.admission, &o.message_id) {
            (Some(a), Some(m)) => {
                self.remember_sent(m, o.number, a, now.plus(p.conversation_window));
                // R3.5 for a failure Meta reported before this report named the
                // message: applied now, as if it had come after
                if let Some(f) = self.take_early_failure(m, &o.number, now) {
                    if f.delivered {
                        self.mark_delivered(a);
                    } else if !self.delivered(a) {
                        released = self.release(a, now);
                    }
                }
                Some(a.clone())
            }
            (None, Some(m)) => {
                let found = self.sent_admission(m, &o.number, now);
                if found.is_none() {
                    let expires = now.plus(p.conversation_window);
                    self.note_early_status(m, o.number, scope, o.status, now, expires);
                }
                found
            }
            (a, None) => a.clone(),
        };
        if o.status == DeliveryStatus::Failed {
            // R3.5: a send that failed before delivery gives its conversation back; one
            // reported delivered already was delivered, whatever is reported after
            if let Some(a) = admission.as_ref().filter(|a| !self.delivered(a)) {
                released |= self.release(a, now);
            }
        } else {
            if let (Some(a), DeliveryStatus::Delivered | DeliveryStatus::Read) =
                (&admission, o.status)
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
                    w.set_csw(None);
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
}

impl Engine {
    /// Remembers the admission of a sent message until `expires`; a message id
    /// reported again takes the latest report.
    fn remember_sent(&mut self, message: &str, number: NumberId, a: &AdmissionId, expires: Ts) {
        let entry = SentMessage {
            number,
            admission: a.clone(),
            expires,
        };
        if let Some(old) = self.w.sent.insert(message.to_owned(), entry) {
            self.w
                .sent_expiry
                .remove(&(old.expires, message.to_owned()));
        }
        self.w.sent_expiry.insert((expires, message.to_owned()));
    }

    /// A status naming only a message no report has named yet: a FAILED one is
    /// remembered until `expires` (the oldest of the scope's is forgotten at the
    /// bound); a DELIVERED or READ one after it cancels its release. A DELIVERED before
    /// the FAILED is not remembered: that would hold every status of senders that do not
    /// report message ids, and Meta reports no failure after a delivery.
    fn note_early_status(
        &mut self,
        message: &str,
        number: NumberId,
        scope: u32,
        status: DeliveryStatus,
        now: Ts,
        expires: Ts,
    ) {
        let live = self
            .w
            .early_failures
            .get_mut(message)
            .filter(|f| f.number == number && f.expires > now);
        match (status, live) {
            (DeliveryStatus::Delivered | DeliveryStatus::Read, Some(f)) => f.delivered = true,
            (DeliveryStatus::Failed, None) => {
                if let Some(old) = self.w.early_failures.remove(message) {
                    self.forget_early_expiry(old.scope, old.expires, message);
                }
                let queue = self.w.early_expiry.entry(scope).or_default();
                if queue.len() >= EARLY_FAILURES_PER_SCOPE {
                    if let Some((_, oldest)) = queue.pop_first() {
                        self.w.early_failures.remove(&oldest);
                    }
                }
                let queue = self.w.early_expiry.entry(scope).or_default();
                queue.insert((expires, message.to_owned()));
                self.w.early_failures.insert(
                    message.to_owned(),
                    EarlyFailure {
                        number,
                        scope,
                        expires,
                        delivered: false,
                    },
                );
            }
            _ => {}
        }
    }

    /// The failure remembered for a message of `number`, taken out, while it lasts.
    fn take_early_failure(
        &mut self,
        message: &str,
        number: &NumberId,
        now: Ts,
    ) -> Option<EarlyFailure> {
        let f = self.w.early_failures.get(message)?;
        if f.number != *number || f.expires <= now {
            return None;
        }
        let f = self.w.early_failures.remove(message)?;
        self.forget_early_expiry(f.scope, f.expires, message);
        Some(f)
    }

    fn forget_early_expiry(&mut self, scope: u32, expires: Ts, message: &str) {
        if let Some(q) = self.w.early_expiry.get_mut(&scope) {
            q.remove(&(expires, message.to_owned()));
            if q.is_empty() {
                self.w.early_expiry.remove(&scope);
            }
        }
    }

    /// The admission remembered for a message of `number`, while its window lasts (an
    /// expired entry that `tick` has not reclaimed yet decides as an absent one).
    fn sent_admission(&self, message: &str, number: &NumberId, now: Ts) -> Option<AdmissionId> {
        self.w
            .sent
            .get(message)
            .filter(|s| s.number == *number && s.expires > now)
            .map(|s| s.admission.clone())
    }
}

/// R7.1: a whole message that is an opt-out or opt-in keyword, ignoring case and spaces.
fn keyword(p: &Policy, text: &str) -> Option<OptChange> {
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
