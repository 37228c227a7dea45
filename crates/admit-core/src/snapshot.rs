//! Snapshots: the whole state as deterministic bytes with a format version.
//!
//! Maps are written as vectors sorted by key, and counts that can be derived from the
//! events are recomputed on restore, so two replicas that applied the same commands
//! produce byte-identical snapshots.

use crate::engine::{Engine, WriterState};
use crate::ids::{IdempotencyKey, NumberId, PortfolioId, TemplateId};
use crate::state::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The snapshot format; bumped on any change, and old versions keep a reader.
///
/// * 1: [`SnapshotV1`].
/// * 2: [`SnapshotV2`]: V1's body, then account restriction types and template pause
///   starts. A V1 snapshot restores with neither: restrictions deny every send (as V1
///   did) and pauses keep the end V1 stored.
/// * 3: [`SnapshotV3`]: V2, then the admissions reported delivered (R3.5). A V1 or V2
///   snapshot restores with none known delivered, as those versions treated them.
pub const SNAPSHOT_VERSION: u8 = 3;

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

/// Version 2: the V1 body (whose types stay V1's: the fields V2 added to them are not
/// serialized there), then what V2 added.
#[derive(Serialize, Deserialize)]
struct SnapshotV2 {
    body: SnapshotV1,
    added: AddedV2,
}

#[derive(Default, Serialize, Deserialize)]
struct AddedV2 {
    /// Non-empty restriction types, by number and by portfolio, sorted.
    number_restrictions: Vec<(NumberId, RestrictionSet)>,
    portfolio_restrictions: Vec<(PortfolioId, RestrictionSet)>,
    /// Pauses of profile length, by template, sorted.
    template_pauses: Vec<(TemplateId, PauseStart)>,
}

/// Version 3: V2, then what V3 added.
#[derive(Serialize, Deserialize)]
struct SnapshotV3 {
    v2: SnapshotV2,
    added: AddedV3,
}

#[derive(Default, Serialize, Deserialize)]
struct AddedV3 {
    /// Delivered admissions by scope index and sequence number, sorted.
    delivered: Vec<(u32, u64)>,
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
        let portfolios = sorted(&sh.portfolios);
        let templates = sorted(&sh.templates);
        let added = AddedV2 {
            number_restrictions: numbers
                .iter()
                .filter(|n| n.restriction_types != RestrictionSet::default())
                .map(|n| (n.id, n.restriction_types))
                .collect(),
            portfolio_restrictions: portfolios
                .iter()
                .filter(|(_, p)| p.restriction_types != RestrictionSet::default())
                .map(|(id, p)| (id.clone(), p.restriction_types))
                .collect(),
            template_pauses: templates
                .iter()
                .filter_map(|(id, t)| t.pause.map(|p| (id.clone(), p)))
                .collect(),
        };
        let scopes = sorted(&sh.scopes);
        let added_v3 = AddedV3 {
            delivered: scopes
                .iter()
                .flat_map(|(idx, s)| s.log.delivered_seqs().map(move |seq| (*idx, seq)))
                .collect(),
        };
        let v2 = SnapshotV2 {
            body: SnapshotV1 {
                writer: self.w.clone(),
                numbers,
                portfolios,
                scopes,
                pairs: sorted(&sh.pairs),
                fep: sorted(&sh.fep),
                optouts: sorted(&sh.optouts).into_iter().map(|(k, _)| k).collect(),
                marketing_holds: sorted(&sh.marketing_holds),
                pair_backoff: sorted(&sh.pair_backoff),
                templates,
                idempotency: sorted(&sh.idempotency),
            },
            added,
        };
        let snap = SnapshotV3 {
            v2,
            added: added_v3,
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
        move_map(&sh.idem_by_admission, new.idem_by_admission);
        self.w = w;
        self.policies = policies;
        Ok(())
    }

    /// Rebuilds an engine from [`Engine::snapshot`]'s bytes.
    pub fn restore(bytes: &[u8]) -> Result<Engine, SnapshotError> {
        let (&v, rest) = bytes.split_first().ok_or(SnapshotError::Empty)?;
        let decode = |e: postcard::Error| SnapshotError::Decode(e.to_string());
        let SnapshotV3 {
            v2: SnapshotV2 { body: snap, added },
            added: added_v3,
        } = match v {
            1 => SnapshotV3 {
                v2: SnapshotV2 {
                    body: postcard::from_bytes(rest).map_err(decode)?,
                    added: AddedV2::default(),
                },
                added: AddedV3::default(),
            },
            2 => SnapshotV3 {
                v2: postcard::from_bytes(rest).map_err(decode)?,
                added: AddedV3::default(),
            },
            3 => postcard::from_bytes(rest).map_err(decode)?,
            _ => return Err(SnapshotError::Version(v)),
        };
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
        for (id, set) in added.number_restrictions {
            if let Some(mut n) = sh.numbers.get_mut(&id) {
                n.restriction_types = set;
            }
        }
        for (id, set) in added.portfolio_restrictions {
            if let Some(mut p) = sh.portfolios.get_mut(&id) {
                p.restriction_types = set;
            }
        }
        for (id, pause) in added.template_pauses {
            if let Some(mut t) = sh.templates.get_mut(&id) {
                t.pause = Some(pause);
            }
        }
        for (idx, seq) in added_v3.delivered {
            if let Some(mut s) = sh.scopes.get_mut(&idx) {
                s.log.mark_delivered(seq);
            }
        }
        // derived: which key recorded each admission (the release path drops it)
        for e in sh.idempotency.iter() {
            if let Some(a) = &e.decision.admission {
                sh.idem_by_admission.insert(a.clone(), e.key().clone());
            }
        }
        Ok(Engine {
            shared: Arc::new(sh),
            w: snap.writer,
            policies,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::*;
    use crate::ids::{NumberId, WaId};
    use crate::time::Ts;

    fn engine_with_number() -> (Engine, NumberId) {
        let mut e = Engine::new();
        let n = NumberId::parse("n", "1").unwrap();
        e.apply(
            Command::RegisterNumber(NumberRegistration {
                number: Some(n),
                ..Default::default()
            }),
            Ts(1),
        )
        .unwrap();
        (e, n)
    }

    /// A version 1 snapshot (no restriction types, no pause starts) still restores.
    #[test]
    fn a_v1_snapshot_still_restores() {
        let (mut e, n) = engine_with_number();
        e.apply(
            Command::Platform {
                event: PlatformEvent::AccountRestriction {
                    target: Target::Number(n),
                    until: None,
                    lifted: false,
                    types: vec![RestrictionType::AddPhoneNumber],
                },
                event_key: None,
            },
            Ts(2),
        )
        .unwrap();
        let v3 = e.snapshot();
        assert_eq!(v3[0], 3);
        let SnapshotV3 { v2, .. } = postcard::from_bytes(&v3[1..]).unwrap();
        let SnapshotV2 { body, added } = v2;
        assert_eq!(added.number_restrictions.len(), 1);
        let mut v1 = vec![1];
        v1.extend(postcard::to_stdvec(&body).unwrap());
        let old = Engine::restore(&v1).unwrap();
        let req = AdmitRequest {
            number: n,
            customer: WaId::parse("c", "4915000000001").unwrap(),
            kind: SendKind::FreeForm,
            idempotency_key: None,
        };
        // V1 knew no types: its restriction denies every send, as V1 did
        assert_eq!(
            old.reader().try_fast(&req, Ts(3)).unwrap().reason,
            crate::Reason::NumberRestricted
        );
        let new = Engine::restore(&v3).unwrap();
        assert_eq!(new.snapshot(), v3);
        assert_eq!(
            new.reader().try_fast(&req, Ts(3)).unwrap().reason,
            crate::Reason::OutsideServiceWindow
        );
    }

    /// A version 2 snapshot (no delivered admissions) still restores: a failure
    /// reported after delivery then releases, as V2 did (R3.5).
    #[test]
    fn a_v2_snapshot_still_restores() {
        let (mut e, n) = engine_with_number();
        let customer = WaId::parse("c", "4915000000001").unwrap();
        let req = AdmitRequest {
            number: n,
            customer,
            kind: SendKind::Template {
                id: crate::TemplateId::parse("t", "t").unwrap(),
                category: crate::Category::Utility,
            },
            idempotency_key: None,
        };
        let Ok(Output::Decision(d)) = e.apply(Command::Admit(req), Ts(2)) else {
            panic!("a decision")
        };
        let outcome = |status| {
            Command::Outcome(Outcome {
                number: n,
                customer,
                admission: d.admission.clone(),
                status,
                error_code: None,
                template: None,
                event_key: None,
            })
        };
        e.apply(outcome(DeliveryStatus::Delivered), Ts(3)).unwrap();
        let v3 = e.snapshot();
        let SnapshotV3 { v2, added } = postcard::from_bytes(&v3[1..]).unwrap();
        assert_eq!(added.delivered, vec![(0, 0)]);
        let mut bytes = vec![2];
        bytes.extend(postcard::to_stdvec(&v2).unwrap());
        let released = |mut e: Engine| match e.apply(outcome(DeliveryStatus::Failed), Ts(4)) {
            Ok(Output::Outcome { released, .. }) => released,
            other => panic!("{other:?}"),
        };
        assert!(released(Engine::restore(&bytes).unwrap()));
        assert!(!released(Engine::restore(&v3).unwrap()));
    }
}
