//! The state the rules depend on, split by who touches it.
//!
//! Everything lives in [`Shared`], a set of sharded concurrent maps (dashmap) behind one
//! `Arc`: the single writer ([`crate::Engine::apply`], driven by the replicated log) mutates
//! it entry by entry, and any number of readers ([`crate::Reader`]) decide open-window sends
//! and compute status concurrently, each taking only the read lock of the one map shard
//! that holds the entry it needs. No lock spans numbers, and the writer never holds one
//! entry while it asks for another, so readers and writer cannot deadlock.

use crate::command::{NumberStatus, RestrictionType};
use crate::decision::{AdmissionId, Decision, ScopeKey};
use crate::ids::{IdempotencyKey, NumberId, PortfolioId, TemplateId};
use crate::log::EventLog;
use crate::policy::{Limit, Policy, Quality};
use crate::time::Ts;
use admit_sketch::WindowedSketch;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub(crate) type Map<K, V> = DashMap<K, V, ahash::RandomState>;

pub(crate) fn new_map<K: Eq + std::hash::Hash, V>() -> Map<K, V> {
    DashMap::with_hasher(ahash::RandomState::new())
}

/// Key of per-customer entries: a dense number (or scope) index and the customer.
/// Three `u32`s keep it 12 bytes with 4-byte alignment, so a window entry is 24 bytes.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub(crate) struct PairKey {
    owner: u32,
    hi: u32,
    lo: u32,
}

impl PairKey {
    pub fn new(owner: u32, customer: u64) -> Self {
        PairKey {
            owner,
            hi: (customer >> 32) as u32,
            lo: customer as u32,
        }
    }
    /// The number (or scope) index the entry belongs to.
    pub fn owner(self) -> u32 {
        self.owner
    }
}

/// The windows of one (number, customer) pair: the customer's latest inbound message
/// (the service window runs 24 h from it, R2.1) and the open business-initiated
/// conversation (24 h from its first message, R2.2).
///
/// Each time is kept in 48 bits (milliseconds to the year 10889; a later time is kept
/// as the last one that fits) as a low `u32` and a high `u16`, so the pair is 12 bytes
/// with 4-byte alignment and an entry with its key 24, not 28: a tenth less memory for
/// the largest table. Zero means "none": no real event happens at the epoch. Stored as
/// two `[u32; 2]` (high, low) as before, so snapshots are unchanged.
#[derive(Copy, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PairWindowsRepr", into = "PairWindowsRepr")]
pub(crate) struct PairWindows {
    lo: [u32; 2],
    hi: [u16; 2],
}

const CSW: usize = 0;
const BIC: usize = 1;
/// The latest time a window keeps exactly.
const LAST_PACKED_MS: u64 = (1 << 48) - 1;

impl PairWindows {
    fn get(&self, i: usize) -> Option<Ts> {
        let v = ((self.hi[i] as u64) << 32) | self.lo[i] as u64;
        (v != 0).then_some(Ts(v))
    }
    fn set(&mut self, i: usize, t: Option<Ts>) {
        let v = t.map_or(0, |t| t.0.min(LAST_PACKED_MS));
        self.hi[i] = (v >> 32) as u16;
        self.lo[i] = v as u32;
    }
    /// The customer's latest inbound message.
    pub fn csw(&self) -> Option<Ts> {
        self.get(CSW)
    }
    /// The first message of the open business-initiated conversation.
    pub fn bic(&self) -> Option<Ts> {
        self.get(BIC)
    }
    pub fn set_csw(&mut self, t: Option<Ts>) {
        self.set(CSW, t)
    }
    pub fn set_bic(&mut self, t: Option<Ts>) {
        self.set(BIC, t)
    }
}

impl std::fmt::Debug for PairWindows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairWindows")
            .field("csw", &self.csw())
            .field("bic", &self.bic())
            .finish()
    }
}

/// The stored form: each time as `[high u32, low u32]`, zero for none.
#[derive(Copy, Clone, Serialize, Deserialize)]
struct PairWindowsRepr {
    csw: [u32; 2],
    bic: [u32; 2],
}

impl From<PairWindowsRepr> for PairWindows {
    fn from(r: PairWindowsRepr) -> Self {
        let ts = |[hi, lo]: [u32; 2]| {
            let v = ((hi as u64) << 32) | lo as u64;
            (v != 0).then_some(Ts(v))
        };
        let mut w = PairWindows::default();
        w.set_csw(ts(r.csw));
        w.set_bic(ts(r.bic));
        w
    }
}

impl From<PairWindows> for PairWindowsRepr {
    fn from(w: PairWindows) -> Self {
        let parts = |t: Option<Ts>| {
            let v = t.map_or(0, |t| t.0);
            [(v >> 32) as u32, v as u32]
        };
        PairWindowsRepr {
            csw: parts(w.csw()),
            bic: parts(w.bic()),
        }
    }
}

/// The types of an account restriction (section 10), as bits. Empty means a restriction
/// of unknown kind, which denies every send (fail safe).
#[derive(Copy, Clone, Default, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub(crate) struct RestrictionSet(u8);

impl RestrictionSet {
    fn bit(t: RestrictionType) -> u8 {
        match t {
            RestrictionType::BizInitiated => 1,
            RestrictionType::CustomerInitiated => 2,
            RestrictionType::AddPhoneNumber => 4,
        }
    }
    pub fn of(types: &[RestrictionType]) -> Self {
        RestrictionSet(types.iter().fold(0, |b, t| b | Self::bit(*t)))
    }
    pub fn types(self) -> Vec<RestrictionType> {
        [
            RestrictionType::BizInitiated,
            RestrictionType::CustomerInitiated,
            RestrictionType::AddPhoneNumber,
        ]
        .into_iter()
        .filter(|t| self.0 & Self::bit(*t) != 0)
        .collect()
    }
    /// Whether a send is denied: `replying` is a send inside an open customer service or
    /// free entry point window (R3.2 step 1); every other send is business-initiated.
    pub fn blocks(self, replying: bool) -> bool {
        let has = |t| self.0 & Self::bit(t) != 0;
        self.0 == 0
            || (has(RestrictionType::BizInitiated) && !replying)
            || (has(RestrictionType::CustomerInitiated) && replying)
    }
    /// Whether it can deny any send at all (RESTRICTED_ADD_PHONE_NUMBER_ACTION alone cannot).
    pub fn affects_messaging(self) -> bool {
        self.blocks(true) || self.blocks(false)
    }
}

#[derive(Copy, Clone, Default, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub(crate) struct Backoff {
    pub until: Option<Ts>,
    pub strikes: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct NumberState {
    pub id: NumberId,
    pub idx: u32,
    pub portfolio: Option<PortfolioId>,
    pub profile: String,
    #[serde(skip)]
    pub policy: Arc<Policy>,
    pub scope: u32,
    pub scope_key: ScopeKey,
    pub quality: Quality,
    pub status: NumberStatus,
    pub display_name_approved: bool,
    /// R5.5: the start of the current Flagged period, and of a recovery within it.
    pub flagged_since: Option<Ts>,
    pub recovering_since: Option<Ts>,
    /// Account restriction reported by Meta on the number itself (`Ts::UNTIL_LIFTED`: until
    /// lifted), and its types.
    pub restricted_until: Option<Ts>,
    /// Not in the V1 snapshot body: the snapshot writes it in its V2 section.
    #[serde(skip)]
    pub restriction_types: RestrictionSet,
    /// Section 9 holds.
    pub spam_hold_until: Option<Ts>,
    pub quality_risks: u32,
    pub throughput: Backoff,
    pub throughput_mps: Option<u32>,
    pub registered_at: Ts,
    /// The number as displayed (digits), if registered with it. Not in the V1
    /// snapshot body: restored from `Shared::displays` (the V5 section).
    #[serde(skip)]
    pub display: Option<String>,
}

impl NumberState {
    /// When the 7 continuous Low days end (R5.5), if they are running.
    pub fn downgrade_at(&self) -> Option<Ts> {
        if !self.policy.flagged_downgrade || self.recovering_since.is_some() {
            return None;
        }
        self.flagged_since.map(|t| t.plus(self.policy.flag_period))
    }
    /// When 7 days of recovered quality end a Flagged period without a downgrade.
    pub fn recovery_at(&self) -> Option<Ts> {
        if !self.policy.flagged_downgrade {
            return None;
        }
        self.recovering_since
            .map(|t| t.plus(self.policy.flag_period))
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct PortfolioState {
    pub profile: String,
    pub restricted_until: Option<Ts>,
    /// Not in the V1 snapshot body: the snapshot writes it in its V2 section.
    #[serde(skip)]
    pub restriction_types: RestrictionSet,
    pub members: Vec<NumberId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ScopeState {
    pub key: ScopeKey,
    /// A `Box<str>`, 8 bytes less than a `String`: that keeps the boxed record
    /// within 256 bytes (an allocator size class) instead of 320. Stored as a string.
    pub profile: Box<str>,
    #[serde(skip)]
    pub policy: Arc<Policy>,
    /// The limit in force.
    pub limit: Limit,
    /// The local tier model's limit: equal to `limit` unless the policy is observe-only,
    /// when it only predicts (R5.6).
    pub model_limit: Limit,
    pub pending_upgrade: Option<Ts>,
    pub log: EventLog,
    pub members: Vec<NumberId>,
    pub opt_outs: u32,
    pub sketch: WindowedSketch,
    pub upgrades: u32,
    pub downgrades: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum TemplateStatus {
    Active,
    /// `until`: the end Meta gave; or, for a pause whose length comes from the
    /// profiles (`TemplateState::pause` set), the latest end under any profile.
    Paused {
        until: Ts,
    },
    Disabled,
}

/// A pause whose length is the profile's (R6.2): each number reads its own profile's
/// length for pause `nth` (1: first, else second), since templates are shared by
/// numbers of different profiles.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PauseStart {
    pub since: Ts,
    pub nth: u8,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TemplateState {
    pub status: TemplateStatus,
    pub quality: Quality,
    pub pauses: u8,
    /// Set while `status` is a pause of profile length. Not in the V1 snapshot body:
    /// the snapshot writes it in its V2 section.
    #[serde(skip)]
    pub pause: Option<PauseStart>,
}

impl TemplateState {
    /// When the pause ends for a number of profile `p`, if the template is paused.
    pub fn pause_end(&self, p: &Policy) -> Option<Ts> {
        match (&self.status, self.pause) {
            (TemplateStatus::Paused { .. }, Some(s)) => Some(s.since.plus(p.pause_len(s.nth))),
            (TemplateStatus::Paused { until }, None) => Some(*until),
            _ => None,
        }
    }
}

/// What a retried request is checked against (R3.4).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct IdemEntry {
    pub request: crate::AdmitRequest,
    pub decision: Decision,
    pub expires: Ts,
}

#[derive(Debug)]
pub(crate) struct Shared {
    /// Numbers and scopes are boxed: their records are a few hundred bytes, and a
    /// table holds room for more entries than it has (up to twice as many), so
    /// inline they would cost that room too.
    pub numbers: Map<NumberId, Box<NumberState>>,
    pub portfolios: Map<PortfolioId, PortfolioState>,
    pub scope_ids: Map<ScopeKey, u32>,
    pub scopes: Map<u32, Box<ScopeState>>,
    pub pairs: Map<PairKey, PairWindows>,
    /// R2.3 free entry point windows: end time by (number, customer).
    pub fep: Map<PairKey, Ts>,
    /// R7 opt-outs by (scope, customer).
    pub optouts: Map<PairKey, ()>,
    /// 131049 marketing holds by (scope, customer).
    pub marketing_holds: Map<PairKey, Ts>,
    /// 131056 pair back-off by (number, customer).
    pub pair_backoff: Map<PairKey, Backoff>,
    pub templates: Map<TemplateId, TemplateState>,
    pub idempotency: Map<IdempotencyKey, IdemEntry>,
    /// Writer only, derived from `idempotency` (rebuilt on restore, not in snapshots):
    /// the key that recorded each admission, so that releasing the admission drops the
    /// record (R3.5) and a retry is decided anew.
    pub idem_by_admission: Map<AdmissionId, IdempotencyKey>,
    /// Display digits -> the number registered with them, and when (numbers of
    /// different shards may claim the same digits: the latest registration wins).
    /// Each number's `display` is derived from it on restore.
    pub displays: Map<String, (NumberId, Ts)>,
    /// Numbers' limit scopes as claimed on this shard, their home shard, before a
    /// first registration (`Command::ClaimScope`). Removed when the number
    /// registers on this shard (its record then answers claims); kept for a number
    /// registered on another shard (a portfolio's), so the table stays at most as
    /// large as the number list (numbers are never deleted).
    pub claims: Map<NumberId, ScopeKey>,
    /// The engine's time (the latest command time applied, UTC ms), published for
    /// readers: a decision from memory must not run on a clock behind it.
    pub engine_now: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn new() -> Self {
        Shared {
            numbers: new_map(),
            portfolios: new_map(),
            scope_ids: new_map(),
            scopes: new_map(),
            pairs: new_map(),
            fep: new_map(),
            optouts: new_map(),
            marketing_holds: new_map(),
            pair_backoff: new_map(),
            templates: new_map(),
            idempotency: new_map(),
            idem_by_admission: new_map(),
            displays: new_map(),
            claims: new_map(),
            engine_now: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

/// A sent message's admission, remembered by Meta's message id until `expires` (the
/// end of the conversation window it opened: a release after it changes nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SentMessage {
    pub number: NumberId,
    pub admission: AdmissionId,
    pub expires: Ts,
}

/// A FAILED status that named a message id no send report had named yet (Meta's
/// webhook beat the sender's report): the report that names the message later releases
/// its admission then (R3.5), until `expires`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EarlyFailure {
    pub number: NumberId,
    /// The number's limit scope when the status came: the memory bound is per scope.
    pub scope: u32,
    pub expires: Ts,
    /// DELIVERED or READ was reported for the message after the failure: the message
    /// reached the customer, so nothing is released.
    pub delivered: bool,
}
#[cfg(test)]
mod tests {
    /// The records every number and scope keeps are boxed: 256 bytes is an allocator
    /// size class (jemalloc's), the next is 320, so a field more costs 64 bytes a number.
    #[test]
    fn number_and_scope_records_fit_256_bytes() {
        assert!(std::mem::size_of::<super::NumberState>() <= 256);
        assert!(std::mem::size_of::<super::ScopeState>() <= 256);
    }

    /// The window table's entry is 24 bytes (a hash table of 1M of them holds room
    /// for twice as many), and its times keep their old stored form.
    #[test]
    fn window_entries_are_24_bytes_and_keep_their_stored_form() {
        use super::{PairKey, PairWindows};
        use crate::time::Ts;
        assert_eq!(std::mem::size_of::<(PairKey, PairWindows)>(), 24);

        /// The form before the times were packed in 48 bits.
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Old {
            csw: [u32; 2],
            bic: [u32; 2],
        }
        let old = |t: u64| [(t >> 32) as u32, t as u32];
        let last = (1u64 << 48) - 1;
        for (csw, bic) in [
            (0, 0),
            (1, 0),
            (1_764_806_400_000, 0),
            (0, 1_764_806_400_001),
            (1_764_806_400_000, 1_764_892_799_999),
            (u32::MAX as u64, u32::MAX as u64 + 1),
            (last, last - 1),
        ] {
            let mut w = PairWindows::default();
            w.set_csw((csw != 0).then_some(Ts(csw)));
            w.set_bic((bic != 0).then_some(Ts(bic)));
            assert_eq!(w.csw(), (csw != 0).then_some(Ts(csw)));
            assert_eq!(w.bic(), (bic != 0).then_some(Ts(bic)));
            let was = Old {
                csw: old(csw),
                bic: old(bic),
            };
            let bytes = postcard::to_allocvec(&w).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&was).unwrap(), "{csw} {bic}");
            let back: PairWindows = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, w);
        }
        // past the year 10889 a time is kept as the last one that fits
        let mut w = PairWindows::default();
        w.set_csw(Some(Ts(last + 1)));
        w.set_bic(Some(Ts(u64::MAX)));
        assert_eq!((w.csw(), w.bic()), (Some(Ts(last)), Some(Ts(last))));
    }
}
