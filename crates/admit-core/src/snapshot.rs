//! Snapshots: the whole state as deterministic bytes with a format version.
//!
//! Maps are written as vectors sorted by key, and counts that can be derived from the
//! events are recomputed on restore, so two replicas that applied the same commands
//! produce byte-identical snapshots.

use crate::engine::{Engine, WriterState};
use crate::ids::{IdempotencyKey, NumberId, PortfolioId, TemplateId};
use crate::state::*;
use crate::time::Dur;
use crate::Policy;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The snapshot format; bumped on any change, and old versions keep a reader.
///
/// * 1: `SnapshotV1`.
/// * 2: `SnapshotV2`: V1's body, then account restriction types and template pause
///   starts. A V1 snapshot restores with neither: restrictions deny every send (as V1
///   did) and pauses keep the end V1 stored.
/// * 3: `SnapshotV3`: V2, then the admissions reported delivered (R3.5). A V1 or V2
///   snapshot restores with none known delivered, as those versions treated them.
/// * 4: V3's layout, with policies that hold the back-offs' reset periods (section 9).
///   Policies of V1 to V3 (`PolicyV3`) restore with the built-in period (24 h).
/// * 5: `SnapshotV5`: V4, then the numbers' display digits and the admissions
///   remembered by Meta's message id. A V1 to V4 snapshot restores with neither (as
///   those versions had neither).
/// * 6: `SnapshotV6`: V5, then the failures Meta reported for messages no send report
///   had named yet (R3.5). A V1 to V5 snapshot restores with none (as those versions
///   kept none).
/// * 7: `SnapshotV7`: V6, then the numbers' scope claims (`Command::ClaimScope`). A V1
///   to V6 snapshot restores with none: its numbers were registered without claims,
///   and a claim for one of them answers the scope it is registered in.
pub const SNAPSHOT_VERSION: u8 = 7;

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
struct SnapshotV1<P = Policy> {
    writer: WriterState<P>,
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
struct SnapshotV2<P = Policy> {
    body: SnapshotV1<P>,
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
struct SnapshotV3<P = Policy> {
    v2: SnapshotV2<P>,
    added: AddedV3,
}

#[derive(Default, Serialize, Deserialize)]
struct AddedV3 {
    /// Delivered admissions by scope index and sequence number, sorted.
    delivered: Vec<(u32, u64)>,
}

/// Version 5: V4 (V3's layout), then what V5 added.
#[derive(Serialize, Deserialize)]
struct SnapshotV5<P = Policy> {
    v3: SnapshotV3<P>,
    added: AddedV5,
}

#[derive(Default, Serialize, Deserialize)]
struct AddedV5 {
    /// Numbers and their registration time by display digits, sorted.
    displays: Vec<(String, (NumberId, crate::Ts))>,
    /// Admissions by message id, sorted by message id.
    sent: Vec<(String, SentMessage)>,
}

/// Version 6: V5, then what V6 added.
#[derive(Serialize, Deserialize)]
struct SnapshotV6<P = Policy> {
    v5: SnapshotV5<P>,
    added: AddedV6,
}

#[derive(Default, Serialize, Deserialize)]
struct AddedV6 {
    /// Failures by message id not reported yet, sorted by message id.
    early_failures: Vec<(String, EarlyFailure)>,
}

/// Version 7: V6, then what V7 added.
#[derive(Serialize, Deserialize)]
struct SnapshotV7<P = Policy> {
    v6: SnapshotV6<P>,
    added: AddedV7,
}

#[derive(Default, Serialize, Deserialize)]
struct AddedV7 {
    /// Scope claims by number, sorted.
    claims: Vec<(NumberId, crate::ScopeKey)>,
}

/// A policy as snapshots of versions 1 to 3 hold it: without the back-offs' reset
/// periods (today's last fields), which it takes from the built-in profiles.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyV3 {
    name: String,
    ladder: Vec<crate::Limit>,
    initial_limit: crate::Limit,
    initial_quality: crate::Quality,
    scope: crate::ScopeKind,
    first_upgrade: Option<crate::UpgradeRule>,
    upgrade: Option<crate::UpgradeRule>,
    flagged_downgrade: bool,
    flag_period: Dur,
    observe_only: bool,
    conversation_window: Dur,
    service_window: Dur,
    free_entry_window: Dur,
    opt_out_keywords: Vec<String>,
    opt_in_keywords: Vec<String>,
    opt_out_blocks: Vec<crate::Category>,
    throughput_mps: u32,
    pair_interval: Dur,
    pair_burst: u32,
    spam_cooldown: Dur,
    marketing_hold: Dur,
    pair_backoff_base: Dur,
    pair_backoff_max: Dur,
    throughput_backoff_base: Dur,
    throughput_backoff_max: Dur,
    first_pause: Dur,
    second_pause: Dur,
    idempotency_ttl: Dur,
}

impl From<PolicyV3> for Policy {
    fn from(p: PolicyV3) -> Policy {
        let built_in = Policy::seeds();
        Policy {
            name: p.name,
            ladder: p.ladder,
            initial_limit: p.initial_limit,
            initial_quality: p.initial_quality,
            scope: p.scope,
            first_upgrade: p.first_upgrade,
            upgrade: p.upgrade,
            flagged_downgrade: p.flagged_downgrade,
            flag_period: p.flag_period,
            observe_only: p.observe_only,
            conversation_window: p.conversation_window,
            service_window: p.service_window,
            free_entry_window: p.free_entry_window,
            opt_out_keywords: p.opt_out_keywords,
            opt_in_keywords: p.opt_in_keywords,
            opt_out_blocks: p.opt_out_blocks,
            throughput_mps: p.throughput_mps,
            pair_interval: p.pair_interval,
            pair_burst: p.pair_burst,
            spam_cooldown: p.spam_cooldown,
            marketing_hold: p.marketing_hold,
            pair_backoff_base: p.pair_backoff_base,
            pair_backoff_max: p.pair_backoff_max,
            throughput_backoff_base: p.throughput_backoff_base,
            throughput_backoff_max: p.throughput_backoff_max,
            first_pause: p.first_pause,
            second_pause: p.second_pause,
            idempotency_ttl: p.idempotency_ttl,
            pair_backoff_reset_after: built_in.pair_backoff_reset_after,
            throughput_backoff_reset_after: built_in.throughput_backoff_reset_after,
        }
    }
}

impl<P> WriterState<P> {
    fn map_policies<Q>(self, f: impl Fn(P) -> Q) -> WriterState<Q> {
        WriterState {
            last_now: self.last_now,
            applied: self.applied,
            next_number: self.next_number,
            next_scope: self.next_scope,
            policies: self.policies.into_iter().map(|(k, p)| (k, f(p))).collect(),
            idem_expiry: self.idem_expiry,
            seen_events: self.seen_events,
            seen_expiry: self.seen_expiry,
            tier_errors: self.tier_errors,
            sent: self.sent,
            sent_expiry: self.sent_expiry,
            early_failures: self.early_failures,
            early_expiry: self.early_expiry,
        }
    }
}

impl<P> SnapshotV3<P> {
    fn map_policies<Q>(self, f: impl Fn(P) -> Q) -> SnapshotV3<Q> {
        let SnapshotV3 {
            v2: SnapshotV2 { body, added },
            added: added_v3,
        } = self;
        SnapshotV3 {
            v2: SnapshotV2 {
                body: SnapshotV1 {
                    writer: body.writer.map_policies(f),
                    numbers: body.numbers,
                    portfolios: body.portfolios,
                    scopes: body.scopes,
                    pairs: body.pairs,
                    fep: body.fep,
                    optouts: body.optouts,
                    marketing_holds: body.marketing_holds,
                    pair_backoff: body.pair_backoff,
                    templates: body.templates,
                    idempotency: body.idempotency,
                },
                added,
            },
            added: added_v3,
        }
    }
}

/// A map's entries, cloned, in the map's own (arbitrary) order: the cheap part of a
/// snapshot ([`Engine::freeze`]); [`Frozen::encode`] sorts them.
fn entries<K: Eq + std::hash::Hash + Clone, V: Clone>(m: &Map<K, V>) -> Vec<(K, V)> {
    m.iter()
        .map(|e| (e.key().clone(), e.value().clone()))
        .collect()
}

fn sorted<K: Ord, V>(mut v: Vec<(K, V)>) -> Vec<(K, V)> {
    // keys of a map are unique, so the order is total and the same on every replica
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

/// A copy of an engine's whole state, taken by [`Engine::freeze`] and not yet
/// encoded: the maps' entries in no particular order. [`Frozen::encode`] turns it into
/// exactly the bytes [`Engine::snapshot`] gives for that state.
///
/// The split lets the state machine's owner take the copy between two commands (the
/// engine must not change while it is taken) and do the sorting and encoding, the
/// larger part of the work, elsewhere while the engine goes on.
pub struct Frozen {
    w: WriterState,
    numbers: Vec<NumberState>,
    portfolios: Vec<(PortfolioId, PortfolioState)>,
    scopes: Vec<(u32, ScopeState)>,
    pairs: Vec<(PairKey, PairWindows)>,
    fep: Vec<(PairKey, crate::Ts)>,
    optouts: Vec<(PairKey, ())>,
    marketing_holds: Vec<(PairKey, crate::Ts)>,
    pair_backoff: Vec<(PairKey, Backoff)>,
    templates: Vec<(TemplateId, TemplateState)>,
    idempotency: Vec<(IdempotencyKey, IdemEntry)>,
    displays: Vec<(String, (NumberId, crate::Ts))>,
    claims: Vec<(NumberId, crate::ScopeKey)>,
}

impl std::fmt::Debug for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frozen")
            .field("numbers", &self.numbers.len())
            .field("pairs", &self.pairs.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// The whole state as bytes: a version byte, then the postcard encoding.
    pub fn snapshot(&self) -> Vec<u8> {
        self.freeze().encode()
    }

    /// A copy of the whole state to encode later ([`Frozen::encode`]): clones of the
    /// entries, neither sorted nor encoded.
    pub fn freeze(&self) -> Frozen {
        let sh = &self.shared;
        Frozen {
            w: self.w.clone(),
            numbers: sh.numbers.iter().map(|n| NumberState::clone(&n)).collect(),
            portfolios: entries(&sh.portfolios),
            scopes: sh
                .scopes
                .iter()
                .map(|e| (*e.key(), ScopeState::clone(&e)))
                .collect(),
            pairs: entries(&sh.pairs),
            fep: entries(&sh.fep),
            optouts: entries(&sh.optouts),
            marketing_holds: entries(&sh.marketing_holds),
            pair_backoff: entries(&sh.pair_backoff),
            templates: entries(&sh.templates),
            idempotency: entries(&sh.idempotency),
            displays: entries(&sh.displays),
            claims: entries(&sh.claims),
        }
    }
}

impl Frozen {
    /// The snapshot bytes of the frozen state: maps as vectors sorted by key, so the
    /// bytes do not depend on the order the entries were copied in.
    pub fn encode(self) -> Vec<u8> {
        let Frozen {
            mut w,
            mut numbers,
            portfolios,
            scopes,
            pairs,
            fep,
            optouts,
            marketing_holds,
            pair_backoff,
            templates,
            idempotency,
            displays,
            claims,
        } = self;
        numbers.sort_by_key(|n| n.id);
        let portfolios = sorted(portfolios);
        let templates = sorted(templates);
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
        let scopes = sorted(scopes);
        let added_v3 = AddedV3 {
            delivered: scopes
                .iter()
                .flat_map(|(idx, s)| s.log.delivered_seqs().map(move |seq| (*idx, seq)))
                .collect(),
        };
        // the writer's V5 and V6 sections are not in its own encoding (serde(skip))
        let sent = std::mem::take(&mut w.sent).into_iter().collect();
        let early_failures = std::mem::take(&mut w.early_failures).into_iter().collect();
        let v2 = SnapshotV2 {
            body: SnapshotV1 {
                writer: w.map_policies(|p| Policy::clone(&p)),
                numbers,
                portfolios,
                scopes,
                pairs: sorted(pairs),
                fep: sorted(fep),
                optouts: sorted(optouts).into_iter().map(|(k, _)| k).collect(),
                marketing_holds: sorted(marketing_holds),
                pair_backoff: sorted(pair_backoff),
                templates,
                idempotency: sorted(idempotency),
            },
            added,
        };
        let snap = SnapshotV7 {
            v6: SnapshotV6 {
                v5: SnapshotV5 {
                    v3: SnapshotV3 {
                        v2,
                        added: added_v3,
                    },
                    added: AddedV5 {
                        displays: sorted(displays),
                        sent,
                    },
                },
                added: AddedV6 { early_failures },
            },
            added: AddedV7 {
                claims: sorted(claims),
            },
        };
        let mut out = vec![SNAPSHOT_VERSION];
        out.extend(postcard::to_stdvec(&snap).expect("state encodes"));
        out
    }
}

impl Engine {
    /// Replaces this engine's state with a snapshot's, in place: [`crate::Reader`]s taken
    /// before stay valid and see the new state (a replica installing a snapshot from its
    /// leader, or a restart, keeps the handles the server already holds). On error the
    /// state is unchanged.
    pub fn load_snapshot(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let fresh = Engine::restore(bytes)?;
        let Engine { shared, w } = fresh;
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
        move_map(&sh.displays, new.displays);
        move_map(&sh.claims, new.claims);
        self.w = w;
        self.publish_now();
        Ok(())
    }

    /// The body of a snapshot of versions 1 to 4, as V4's layout.
    fn restore_v4(v: u8, rest: &[u8]) -> Result<SnapshotV3, SnapshotError> {
        let decode = |e: postcard::Error| SnapshotError::Decode(e.to_string());
        Ok(match v {
            1 => SnapshotV3::<PolicyV3> {
                v2: SnapshotV2 {
                    body: postcard::from_bytes(rest).map_err(decode)?,
                    added: AddedV2::default(),
                },
                added: AddedV3::default(),
            }
            .map_policies(Policy::from),
            2 => SnapshotV3::<PolicyV3> {
                v2: postcard::from_bytes(rest).map_err(decode)?,
                added: AddedV3::default(),
            }
            .map_policies(Policy::from),
            3 => postcard::from_bytes::<SnapshotV3<PolicyV3>>(rest)
                .map_err(decode)?
                .map_policies(Policy::from),
            4 => postcard::from_bytes(rest).map_err(decode)?,
            _ => return Err(SnapshotError::Version(v)),
        })
    }

    /// Rebuilds an engine from [`Engine::snapshot`]'s bytes.
    pub fn restore(bytes: &[u8]) -> Result<Engine, SnapshotError> {
        let (&v, rest) = bytes.split_first().ok_or(SnapshotError::Empty)?;
        let decode = |e: postcard::Error| SnapshotError::Decode(e.to_string());
        let (v3, added_v5, added_v6, added_v7) = match v {
            1..=4 => (
                Self::restore_v4(v, rest)?,
                AddedV5::default(),
                AddedV6::default(),
                AddedV7::default(),
            ),
            5 => {
                let s: SnapshotV5 = postcard::from_bytes(rest).map_err(decode)?;
                (s.v3, s.added, AddedV6::default(), AddedV7::default())
            }
            6 => {
                let s: SnapshotV6 = postcard::from_bytes(rest).map_err(decode)?;
                (s.v5.v3, s.v5.added, s.added, AddedV7::default())
            }
            7 => {
                let s: SnapshotV7 = postcard::from_bytes(rest).map_err(decode)?;
                (s.v6.v5.v3, s.v6.v5.added, s.v6.added, s.added)
            }
            _ => return Err(SnapshotError::Version(v)),
        };
        let SnapshotV3 {
            v2: SnapshotV2 { body: snap, added },
            added: added_v3,
        } = v3;
        let mut writer = snap.writer.map_policies(Arc::new);
        let link = |name: &str| {
            writer
                .policies
                .get(name)
                .cloned()
                .ok_or_else(|| SnapshotError::Decode(format!("unknown profile {name}")))
        };
        let sh = Shared::new();
        for mut n in snap.numbers {
            n.policy = link(&n.profile)?;
            sh.numbers.insert(n.id, Box::new(n));
        }
        fill(&sh.portfolios, snap.portfolios);
        for (idx, mut s) in snap.scopes {
            s.policy = link(&s.profile)?;
            if !s.log.is_consistent() {
                return Err(SnapshotError::Decode(format!(
                    "scope {idx}: a limit window starts outside the events kept"
                )));
            }
            s.log.rebuild();
            sh.scope_ids.insert(s.key.clone(), idx);
            sh.scopes.insert(idx, Box::new(s));
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
        for (d, (id, at)) in added_v5.displays {
            if let Some(mut n) = sh.numbers.get_mut(&id) {
                n.display = Some(d.clone());
                sh.displays.insert(d, (id, at));
            }
        }
        for (k, sent) in added_v5.sent {
            writer.sent_expiry.insert((sent.expires, k.clone()));
            writer.sent.insert(k, sent);
        }
        for (k, f) in added_v6.early_failures {
            let queue = writer.early_expiry.entry(f.scope).or_default();
            queue.insert((f.expires, k.clone()));
            writer.early_failures.insert(k, f);
        }
        fill(&sh.claims, added_v7.claims);
        // derived: which key recorded each admission (the release path drops it)
        for e in sh.idempotency.iter() {
            if let Some(a) = &e.decision.admission {
                sh.idem_by_admission.insert(a.clone(), e.key().clone());
            }
        }
        let e = Engine {
            shared: Arc::new(sh),
            w: writer,
        };
        e.publish_now();
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::*;
    use crate::ids::{NumberId, WaId};
    use crate::time::Ts;

    /// Today's snapshot in the layout of version 3 and older: policies without the
    /// reset periods (a prefix of today's encoding).
    fn older(snapshot: &[u8]) -> SnapshotV3<PolicyV3> {
        assert_eq!(snapshot[0], SNAPSHOT_VERSION);
        let now: SnapshotV3 = postcard::from_bytes(&snapshot[1..]).unwrap();
        now.map_policies(|p| {
            let bytes = postcard::to_stdvec(&p).unwrap();
            postcard::take_from_bytes(&bytes).unwrap().0
        })
    }

    fn with_version(v: u8, body: &impl Serialize) -> Vec<u8> {
        let mut bytes = vec![v];
        bytes.extend(postcard::to_stdvec(body).unwrap());
        bytes
    }

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

    /// A template send of `n` to `customer` admitted at `at`.
    fn admit_template(e: &mut Engine, n: NumberId, customer: WaId, at: Ts) -> crate::Decision {
        let req = AdmitRequest {
            number: n,
            customer,
            kind: SendKind::Template {
                id: crate::TemplateId::parse("t", "t").unwrap(),
                category: crate::Category::Utility,
            },
            idempotency_key: None,
        };
        let Ok(Output::Decision(d)) = e.apply(Command::Admit(req), at) else {
            panic!("a decision")
        };
        d
    }

    /// A frozen copy encodes the state at the time it was taken, whatever the engine
    /// applies afterwards, into the same bytes as `snapshot` at that time.
    #[test]
    fn a_frozen_copy_encodes_the_state_it_was_taken_from() {
        let (mut e, n) = engine_with_number();
        for c in 1..=20u64 {
            let customer = WaId::parse("c", &format!("49150000000{c:02}")).unwrap();
            admit_template(&mut e, n, customer, Ts(1 + c));
        }
        let at_freeze = e.snapshot();
        let frozen = e.freeze();
        let later = WaId::parse("c", "4915000000099").unwrap();
        admit_template(&mut e, n, later, Ts(100));
        let now = e.snapshot();
        assert_ne!(now, at_freeze, "the engine went on");
        assert_eq!(frozen.encode(), at_freeze);
        // the entries' order in the maps does not matter: a restored engine (other
        // hashers, other order) freezes into the same bytes
        let restored = Engine::restore(&now).unwrap();
        assert_eq!(restored.freeze().encode(), now);
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
        let now = e.snapshot();
        let SnapshotV3 { v2, .. } = older(&now);
        let SnapshotV2 { body, added } = v2;
        assert_eq!(added.number_restrictions.len(), 1);
        let old = Engine::restore(&with_version(1, &body)).unwrap();
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
        let new = Engine::restore(&now).unwrap();
        assert_eq!(new.snapshot(), now);
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
        let d = admit_template(&mut e, n, customer, Ts(2));
        let outcome = |status| {
            Command::Outcome(Outcome {
                number: n,
                customer,
                admission: d.admission.clone(),
                status,
                error_code: None,
                template: None,
                event_key: None,
                message_id: None,
            })
        };
        e.apply(outcome(DeliveryStatus::Delivered), Ts(3)).unwrap();
        let now = e.snapshot();
        let v3 = older(&now);
        assert_eq!(v3.added.delivered, vec![(0, 0)]);
        let released = |mut e: Engine| match e.apply(outcome(DeliveryStatus::Failed), Ts(4)) {
            Ok(Output::Outcome { released, .. }) => released,
            other => panic!("{other:?}"),
        };
        assert!(released(Engine::restore(&with_version(2, &v3.v2)).unwrap()));
        assert!(!released(Engine::restore(&with_version(3, &v3)).unwrap()));
        assert!(!released(Engine::restore(&now).unwrap()));
    }

    /// A version 5 snapshot (no failures remembered for messages not reported yet)
    /// still restores: the send's later report then releases nothing, as V5 did; today's
    /// snapshot keeps the failure, and the report releases (R3.5).
    #[test]
    fn a_v5_snapshot_still_restores() {
        let (mut e, n) = engine_with_number();
        let customer = WaId::parse("c", "4915000000001").unwrap();
        let report = |admission, status| {
            Command::Outcome(Outcome {
                number: n,
                customer,
                admission,
                status,
                error_code: None,
                template: None,
                event_key: None,
                message_id: Some("wamid.1".into()),
            })
        };
        e.apply(report(None, DeliveryStatus::Failed), Ts(2))
            .unwrap();
        let d = admit_template(&mut e, n, customer, Ts(3));
        let now = e.snapshot();
        let v7: SnapshotV7 = postcard::from_bytes(&now[1..]).unwrap();
        let v6 = v7.v6;
        assert_eq!(v6.added.early_failures.len(), 1);
        let released = |mut e: Engine| match e
            .apply(report(d.admission.clone(), DeliveryStatus::Sent), Ts(4))
        {
            Ok(Output::Outcome { released, .. }) => released,
            other => panic!("{other:?}"),
        };
        let old = Engine::restore(&with_version(5, &v6.v5)).unwrap();
        assert!(old.w.early_failures.is_empty());
        assert!(!released(old));
        let new = Engine::restore(&now).unwrap();
        assert_eq!(new.snapshot(), now);
        assert!(released(new));
    }

    /// A version 3 snapshot (policies without the back-offs' reset periods) still
    /// restores: its policies take the built-in periods (section 9).
    #[test]
    fn a_v3_snapshot_still_restores() {
        let (mut e, _) = engine_with_number();
        let mut p = Policy::seeds();
        p.name = "slow".into();
        p.throughput_backoff_max = Dur::hours(2);
        p.pair_backoff_reset_after = Dur::hours(1);
        e.apply(Command::SetPolicy(p.clone()), Ts(2)).unwrap();
        let now = e.snapshot();
        let restored = Engine::restore(&with_version(3, &older(&now))).unwrap();
        let got = restored.policy("slow").unwrap();
        assert_eq!(got.throughput_backoff_max, Dur::hours(2));
        assert_eq!(got.pair_backoff_reset_after, Dur::hours(24));
        assert_eq!(
            got.as_ref(),
            &Policy {
                pair_backoff_reset_after: Dur::hours(24),
                ..p
            }
        );
        assert_eq!(Engine::restore(&now).unwrap().snapshot(), now);
    }

    fn claim(e: &mut Engine, number: NumberId, scope: crate::ScopeKey) -> crate::ScopeKey {
        match e.apply(Command::ClaimScope { number, scope }, Ts(5)) {
            Ok(Output::Claimed { scope }) => scope,
            other => panic!("{other:?}"),
        }
    }

    /// Scope claims survive a snapshot (version 7), byte for byte; a version 6
    /// snapshot (no claims) still restores, and a claim for one of its numbers
    /// answers the scope it is registered in.
    #[test]
    fn claims_round_trip_and_a_v6_snapshot_still_restores() {
        use crate::ScopeKey;
        let (mut e, n) = engine_with_number();
        let fresh = NumberId::parse("n", "2").unwrap();
        let p = PortfolioId::parse("p", "acme").unwrap();
        assert_eq!(
            claim(&mut e, fresh, ScopeKey::Portfolio(p.clone())),
            ScopeKey::Portfolio(p.clone())
        );
        let now = e.snapshot();
        assert_eq!(now[0], 7);
        let v7: SnapshotV7 = postcard::from_bytes(&now[1..]).unwrap();
        assert_eq!(
            v7.added.claims,
            vec![(fresh, ScopeKey::Portfolio(p.clone()))]
        );
        let mut new = Engine::restore(&now).unwrap();
        assert_eq!(new.snapshot(), now);
        assert_eq!(
            new.reader().claim_of(&fresh),
            Some(ScopeKey::Portfolio(p.clone()))
        );
        // the restored claim still holds against a rival
        assert_eq!(
            claim(&mut new, fresh, ScopeKey::Number(fresh)),
            ScopeKey::Portfolio(p.clone())
        );
        // loaded in place too
        let mut other = Engine::new();
        other.load_snapshot(&now).unwrap();
        assert_eq!(other.snapshot(), now);

        let mut old = Engine::restore(&with_version(6, &v7.v6)).unwrap();
        assert_eq!(old.reader().claim_of(&fresh), None);
        assert_eq!(old.reader().scope_of(&n), Some(ScopeKey::Number(n)));
        assert_eq!(
            claim(&mut old, n, ScopeKey::Portfolio(p)),
            ScopeKey::Number(n)
        );
    }
}
