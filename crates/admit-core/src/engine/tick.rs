//! Reclaiming: what has expired leaves memory, without changing any decision.

use super::*;

impl Engine {
    /// Drops everything that has expired by `now`, so memory returns to its baseline once
    /// every window has ended. Expired and absent entries decide alike, so this changes
    /// no decision; it runs as a logged command so that replicas stay byte-identical.
    pub(super) fn tick(&mut self, now: Ts) -> u64 {
        let mut reclaimed = 0u64;
        let scopes: Vec<u32> = self.shared.scopes.iter().map(|s| *s.key()).collect();
        for s in scopes {
            self.advance_scope(s, now);
        }
        let longest = self
            .w
            .policies
            .values()
            .map(|p| p.service_window.max(p.conversation_window))
            .max()
            .unwrap_or_default();
        let ended = |t: Option<Ts>| t.is_none_or(|t| t.plus(longest) <= now);
        let sh = &self.shared;
        let before = sh.pairs.len();
        sh.pairs.retain(|_, w| !(ended(w.csw()) && ended(w.bic())));
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
            .w
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
        while let Some((exp, _)) = self.w.sent_expiry.first() {
            if *exp > now {
                break;
            }
            let (_, key) = self.w.sent_expiry.pop_first().expect("first");
            self.w.sent.remove(&key);
            reclaimed += 1;
        }
        let w = &mut self.w;
        w.early_expiry.retain(|_, q| {
            while q.first().is_some_and(|(exp, _)| *exp <= now) {
                let (_, key) = q.pop_first().expect("first");
                w.early_failures.remove(&key);
                reclaimed += 1;
            }
            !q.is_empty()
        });
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
