//! Snapshots: the whole state as deterministic bytes with a format version.
//!
//! Maps are written as vectors sorted by key, and counts that can be derived from the
//! events are recomputed on restore, so two replicas that applied the same commands
//! produce byte-identical snapshots.

use crate::engine::{Engine, WriterState};
use crate::ids::{IdempotencyKey, PortfolioId, TemplateId};
use crate::state::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The snapshot format; bumped on any change, and old versions keep a reader.
pub const SNAPSHOT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is empty")]
    Empty,
    #[error("snapshot format version {0} is not known to this build")]
    Version(u8),
    #[error("snapshot does not decode: {0}")]
    Decode(String),
}

#[derive(Serialize, Deserialize)]
struct SnapshotV1 {
    writer: WriterState,
    numbers: Vec<NumberState>,
    portfolios: Vec<(PortfolioId, PortfolioState)>,
    scopes: Vec<(u32, ScopeState)>,
    pairs: Vec<(PairKey, PairWindows)>,
    fep: Vec<(PairKey, crate::Ts)>,
    optouts: Vec<PairKey>,
    marketing_holds: Vec<(PairKey, crate::Ts)>,
    pair_backoff: Vec<(PairKey, Backoff)>,
    templates: Vec<(TemplateId, TemplateState)>,
    idempotency: Vec<(IdempotencyKey, IdemEntry)>,
}

fn sorted<K: Ord + Clone + Eq + std::hash::Hash, V: Clone>(m: &Map<K, V>) -> Vec<(K, V)> {
    let mut v: Vec<(K, V)> = m
        .iter()
        .map(|e| (e.key().clone(), e.value().clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn move_map<K: Eq + std::hash::Hash + Clone, V>(to: &Map<K, V>, from: Map<K, V>) {
    to.clear();
    for (k, v) in from {
        to.insert(k, v);
    }
    to.shrink_to_fit();
}

fn fill<K: Eq + std::hash::Hash, V>(m: &Map<K, V>, v: Vec<(K, V)>) {
    for (k, x) in v {
        m.insert(k, x);
    }
}

impl Engine {
    /// The whole state as bytes: a version byte, then the postcard encoding.
    pub fn snapshot(&self) -> Vec<u8> {
        let sh = &self.shared;
        let mut numbers: Vec<NumberState> = sh.numbers.iter().map(|n| n.clone()).collect();
        numbers.sort_by_key(|n| n.id);
        let snap = SnapshotV1 {
            writer: self.w.clone(),
            numbers,
            portfolios: sorted(&sh.portfolios),
            scopes: sorted(&sh.scopes),
            pairs: sorted(&sh.pairs),
            fep: sorted(&sh.fep),
            optouts: sorted(&sh.optouts).into_iter().map(|(k, _)| k).collect(),
            marketing_holds: sorted(&sh.marketing_holds),
            pair_backoff: sorted(&sh.pair_backoff),
            templates: sorted(&sh.templates),
            idempotency: sorted(&sh.idempotency),
        };
        let mut out = vec![SNAPSHOT_VERSION];
        out.extend(postcard::to_stdvec(&snap).expect("state encodes"));
        out
    }

    /// Replaces this engine's state with a snapshot's, in place: [`crate::Reader`]s taken
    /// before stay valid and see the new state (a replica installing a snapshot from its
    /// leader, or a restart, keeps the handles the server already holds). On error the
    /// state is unchanged.
    pub fn load_snapshot(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let fresh = Engine::restore(bytes)?;
        let Engine {
            shared,
            w,
            policies,
        } = fresh;
        let new = Arc::try_unwrap(shared).expect("a fresh engine has no readers");
        let sh = &self.shared;
        move_map(&sh.numbers, new.numbers);
        move_map(&sh.portfolios, new.portfolios);
        move_map(&sh.scope_ids, new.scope_ids);
        move_map(&sh.scopes, new.scopes);
        move_map(&sh.pairs, new.pairs);
        move_map(&sh.fep, new.fep);
        move_map(&sh.optouts, new.optouts);
        move_map(&sh.marketing_holds, new.marketing_holds);
        move_map(&sh.pair_backoff, new.pair_backoff);
        move_map(&sh.templates, new.templates);
        move_map(&sh.idempotency, new.idempotency);
        self.w = w;
        self.policies = policies;
        Ok(())
    }

    /// Rebuilds an engine from [`Engine::snapshot`]'s bytes.
    pub fn restore(bytes: &[u8]) -> Result<Engine, SnapshotError> {
        let (&v, rest) = bytes.split_first().ok_or(SnapshotError::Empty)?;
        if v != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version(v));
        }
        let snap: SnapshotV1 =
            postcard::from_bytes(rest).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        let policies: BTreeMap<String, Arc<crate::Policy>> = snap
            .writer
            .policies
            .iter()
            .map(|(k, p)| (k.clone(), Arc::new(p.clone())))
            .collect();
        let link = |name: &str| {
            policies
                .get(name)
                .cloned()
                .ok_or_else(|| SnapshotError::Decode(format!("unknown profile {name}")))
        };
        let sh = Shared::new();
        for mut n in snap.numbers {
            n.policy = link(&n.profile)?;
            sh.numbers.insert(n.id, n);
        }
        fill(&sh.portfolios, snap.portfolios);
        for (idx, mut s) in snap.scopes {
            s.policy = link(&s.profile)?;
            s.log.rebuild();
            sh.scope_ids.insert(s.key.clone(), idx);
            sh.scopes.insert(idx, s);
        }
        fill(&sh.pairs, snap.pairs);
        fill(&sh.fep, snap.fep);
        for k in snap.optouts {
            sh.optouts.insert(k, ());
        }
        fill(&sh.marketing_holds, snap.marketing_holds);
        fill(&sh.pair_backoff, snap.pair_backoff);
        fill(&sh.templates, snap.templates);
        fill(&sh.idempotency, snap.idempotency);
        Ok(Engine {
            shared: Arc::new(sh),
            w: snap.writer,
            policies,
        })
    }
}
