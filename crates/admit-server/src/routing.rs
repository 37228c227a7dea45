//! Routing: which shard owns a request.
//!
//! A send counts against its limit scope (the number under the seeds profile,
//! the portfolio under meta, see `Policy.scope`); the scope's stable hash
//! modulo the shard count names the shard whose Raft group holds it. A
//! node-local directory maps numbers to scopes; it is filled at registration
//! and, on a miss, by asking the local shards' readers.

use admit_core::{NumberId, ScopeKey};
use dashmap::DashMap;

use crate::app::ReaderSlot;

#[derive(Debug)]
pub struct Router {
    shards: u32,
    directory: DashMap<NumberId, ScopeKey>,
}

impl Router {
    pub fn new(shards: u32) -> Router {
        Router {
            shards: shards.max(1),
            directory: DashMap::new(),
        }
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The shard owning `scope`.
    pub fn shard_of(&self, scope: &ScopeKey) -> u32 {
        (scope.stable_hash() % u64::from(self.shards)) as u32
    }

    /// Records a number's scope (at registration).
    pub fn remember(&self, number: NumberId, scope: ScopeKey) {
        self.directory.insert(number, scope);
    }

    /// The scope of a registered number: the directory, else the readers of
    /// the local shards (then remembered). `None`: not registered here.
    pub fn scope_of(&self, number: &NumberId, slots: &[ReaderSlot]) -> Option<ScopeKey> {
        if let Some(s) = self.directory.get(number) {
            return Some(s.clone());
        }
        // try the shard a number-scoped registration would be in first
        let home = self.shard_of(&ScopeKey::Number(*number)) as usize;
        let order = std::iter::once(home).chain((0..slots.len()).filter(|i| *i != home));
        for i in order {
            if let Some(s) = slots.get(i).and_then(|slot| slot.get().scope_of(number)) {
                self.directory.insert(*number, s.clone());
                return Some(s);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use admit_core::PortfolioId;

    #[test]
    fn scopes_spread_over_shards_and_stay_put() {
        let r = Router::new(64);
        let mut hit = std::collections::BTreeSet::new();
        for i in 0..2_000u32 {
            let n = NumberId::parse("n", &(1_000_000 + i).to_string()).unwrap();
            let s = r.shard_of(&ScopeKey::Number(n));
            assert!(s < 64);
            assert_eq!(s, r.shard_of(&ScopeKey::Number(n)));
            hit.insert(s);
        }
        assert_eq!(hit.len(), 64);
        let p = ScopeKey::Portfolio(PortfolioId::parse("p", "waba-1").unwrap());
        assert_eq!(r.shard_of(&p), r.shard_of(&p.clone()));
    }
}
