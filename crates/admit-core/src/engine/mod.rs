//! The single writer: applies commands in log order, deterministically. One file per
//! job: admission, inbound and outcomes, platform and template events, registration and
//! policies, number scope claims, and reclaiming (tick).

mod admission;
mod claims;
mod events;
mod outcomes;
mod registry;
mod tick;

#[cfg(test)]
mod sent_tests;

use crate::command::*;
use crate::decision::{AdmissionId, Decision, Reason, ScopeKey};
use crate::error::CoreError;
use crate::ids::{NumberId, PortfolioId};
use crate::log::EventLog;
use crate::meta_error::MetaError;
use crate::policy::{Limit, Policy, ScopeKind, TierMeaning};
use crate::rules::{self, Member, Pre, Tier};
use crate::state::*;
use crate::time::{Dur, Ts};
use crate::Reader;
use admit_sketch::{SketchConfig, WindowedSketch};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

use std::sync::Arc;

/// State only the writer touches (it is in snapshots too). Generic over the policy type
/// only so that snapshots can write the profiles and read older formats of them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct WriterState<P = Arc<Policy>> {
    pub last_now: Ts,
    pub applied: u64,
    pub next_number: u32,
    pub next_scope: u32,
    /// Every policy profile by name (every shard holds every one). Numbers and scopes
    /// share these `Arc`s; a changed profile replaces the `Arc` in each.
    pub policies: BTreeMap<String, P>,
    /// Idempotency keys in expiry order (time only moves forward).
    pub idem_expiry: VecDeque<(Ts, crate::ids::IdempotencyKey)>,
    /// Platform deliveries already applied, by event key (at most once).
    pub seen_events: BTreeMap<String, Ts>,
    pub seen_expiry: VecDeque<(Ts, String)>,
    /// Tier values that could not be understood (kept the limit: fail safe).
    pub tier_errors: u64,
    /// Admissions by Meta's message id, reported with the send (R3.5 for statuses
    /// that name only the message). Not in the V1 snapshot body: the V5 section.
    #[serde(skip)]
    pub sent: BTreeMap<String, SentMessage>,
    /// `sent`'s keys in expiry order (derived; rebuilt on restore).
    #[serde(skip)]
    pub sent_expiry: std::collections::BTreeSet<(Ts, String)>,
    /// FAILED statuses by a message id not known yet, waiting for the send's report
    /// (R3.5). Not in the V1 snapshot body: the V6 section.
    #[serde(skip)]
    pub early_failures: BTreeMap<String, EarlyFailure>,
    /// `early_failures`' keys in expiry order, by scope (derived; rebuilt on restore):
    /// at most [`EARLY_FAILURES_PER_SCOPE`] each.
    #[serde(skip)]
    pub early_expiry: BTreeMap<u32, std::collections::BTreeSet<(Ts, String)>>,
}

/// How many failures naming a message not reported yet one scope remembers; the oldest
/// is forgotten first. The race they cover (Meta's status before the sender's report)
/// lasts seconds, so a scope that reaches this many holds failures of messages whose
/// sender never reports message ids; forgetting one keeps a conversation counted,
/// which is the safe side.
pub(crate) const EARLY_FAILURES_PER_SCOPE: usize = 1024;

/// How long a platform delivery's key is remembered: Meta retries deliveries for days.
const EVENT_KEY_TTL: crate::Dur = crate::Dur::days(7);

/// The rule engine of one shard: commands in, outputs out.
///
/// Cheap to read from other threads through [`Engine::reader`]; only `apply` changes it.
#[derive(Debug)]
pub struct Engine {
    pub(crate) shared: Arc<Shared>,
    pub(crate) w: WriterState,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    /// An empty engine with the built-in profiles `seeds` (default) and `meta`.
    pub fn new() -> Self {
        let mut e = Engine {
            shared: Arc::new(Shared::new()),
            w: WriterState::default(),
        };
        for p in [Policy::seeds(), Policy::meta()] {
            e.w.policies.insert(p.name.clone(), Arc::new(p));
        }
        e
    }

    /// A handle for concurrent reads (fast-path decisions, status).
    pub fn reader(&self) -> Reader {
        Reader {
            shared: self.shared.clone(),
        }
    }

    pub fn policy(&self, name: &str) -> Option<Arc<Policy>> {
        self.w.policies.get(name).cloned()
    }

    /// Commands applied so far.
    pub fn applied(&self) -> u64 {
        self.w.applied
    }

    /// The time of the latest command: the engine's clock never goes back.
    pub fn now(&self) -> Ts {
        self.w.last_now
    }

    /// Lets readers see the engine's time (after an apply or a restore).
    pub(crate) fn publish_now(&self) {
        self.shared
            .engine_now
            .store(self.w.last_now.ms(), std::sync::atomic::Ordering::Release);
    }

    /// Tier values from the platform that were not understood (and ignored).
    pub fn tier_errors(&self) -> u64 {
        self.w.tier_errors
    }

    /// Applies one command at `now`. Deterministic: the same commands at the same times
    /// give the same outputs and state on every replica. A `now` earlier than a previous
    /// command's is taken as that previous time.
    pub fn apply(&mut self, cmd: Command, now: Ts) -> Result<Output, CoreError> {
        let now = self.begin(now);
        match cmd {
            Command::Admit(req) => self.admit(&req, now).map(Output::Decision),
            Command::Release(id) => Ok(Output::Released {
                released: self.release(&id, now),
            }),
            Command::Inbound(i) => {
                if self.seen(i.event_key.as_deref(), now) {
                    return self.number(&i.number).map(|n| {
                        let csw = self
                            .shared
                            .pairs
                            .get(&PairKey::new(n.idx, i.customer.get()))
                            .and_then(|w| w.csw());
                        Output::Inbound {
                            window_end: csw.map_or(now, |t| t.plus(n.policy.service_window)),
                            opt: None,
                            duplicate: true,
                        }
                    });
                }
                let out = self.inbound(&i, now);
                self.remember(i.event_key, &out, now);
                out
            }
            Command::Outcome(o) => {
                if self.seen(o.event_key.as_deref(), now) {
                    return Ok(Output::Outcome {
                        released: false,
                        hold_until: None,
                        duplicate: true,
                    });
                }
                let out = self.outcome(&o, now);
                self.remember(o.event_key, &out, now);
                out
            }
            Command::Platform { event, event_key } => self.platform(event, event_key, now),
            Command::RegisterNumber(r) => self.register_number(r, now),
            Command::RegisterPortfolio(r) => self.register_portfolio(r, now),
            Command::SetPolicy(p) => self.set_policy(p, now),
            Command::Tick => Ok(Output::Ticked {
                reclaimed: self.tick(now),
            }),
            Command::ClaimScope { number, scope } => self.claim_scope(number, scope),
        }
    }

    /// [`Engine::apply`] of a command the caller keeps (a log entry that its
    /// cache and replication still share): a send, most of the log, is decided
    /// from the reference; the other commands are applied as copies.
    pub fn apply_ref(&mut self, cmd: &Command, now: Ts) -> Result<Output, CoreError> {
        match cmd {
            Command::Admit(req) => {
                let now = self.begin(now);
                self.admit(req, now).map(Output::Decision)
            }
            other => self.apply(other.clone(), now),
        }
    }

    /// What every command does first: the engine's time never goes back.
    fn begin(&mut self, now: Ts) -> Ts {
        let now = now.max(self.w.last_now);
        self.w.last_now = now;
        self.publish_now();
        self.w.applied += 1;
        now
    }

    /// A registered number, as the writer's jobs need it.
    fn number(&self, id: &NumberId) -> Result<NumberRef, CoreError> {
        self.shared
            .numbers
            .get(id)
            .map(|n| NumberRef {
                idx: n.idx,
                scope: n.scope,
                policy: n.policy.clone(),
            })
            .ok_or_else(|| CoreError::UnknownNumber(id.to_string()))
    }
}

/// A registered number: its dense index (pair keys), its limit scope, its profile.
struct NumberRef {
    idx: u32,
    scope: u32,
    policy: Arc<Policy>,
}

pub(crate) fn tier_of(sc: &ScopeState) -> Tier {
    Tier {
        limit: sc.limit,
        model_limit: sc.model_limit,
        pending_upgrade: sc.pending_upgrade,
        upgrades: sc.upgrades,
        downgrades: sc.downgrades,
    }
}

fn set_tier(sc: &mut ScopeState, t: &Tier) {
    sc.limit = t.limit;
    sc.model_limit = t.model_limit;
    sc.pending_upgrade = t.pending_upgrade;
    sc.upgrades = t.upgrades;
    sc.downgrades = t.downgrades;
}
