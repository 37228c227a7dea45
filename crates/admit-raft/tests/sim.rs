//! A seeded, deterministic fault simulation of a whole cluster in one
//! process (issue 11).
//!
//! Three real [`RaftNode`]s (openraft groups, batching proposers,
//! quiescence, the reconcile loop, the journal on fjall) run on one
//! current-thread tokio runtime with paused time, so the clock only moves
//! when every task waits, and nothing runs beside that thread:
//! * the journal writes inline ([`NodeConfig::inline_journal`]) and
//!   fsyncs from a task a seeded 0.1-2 ms later, so a power cut can fall
//!   between a write and its fsync;
//! * openraft's random draws come from [`admit_raft::seed_draws`];
//! * the nodes talk over in-memory connections ([`Net`]) dialed through the
//!   node's [`Dialer`], so the transport is the real gRPC one and the
//!   faults act on its bytes.
//!
//! One seed fixes the whole run: the fault schedule, the load and every
//! interleaving. Faults: one-way and two-way holds of a link (messages
//! delayed until the hold ends, in order), a node cut off from the others,
//! connection resets (what was in flight is lost), a crash with the disk
//! kept, a power cut (what was not fsynced is lost), an explicit leadership
//! transfer of a shard (`transfer_leader` on its leader, racing the other
//! faults), and at most one lost disk a run: the node's data dir is
//! deleted and it starts again under its id on an empty one, which admit
//! must refuse (`start` fails with "data dir lost"; when no peer answered
//! in time, the node ends `Registration::Refused`); the operator removes it
//! and adds a new node id (`remove_node`, `add_node`), and the reconcile
//! loops move the replicas while the faults go on. Instead of a lost disk
//! a run may have one move (on unless `ADMIT_SIM_MOVES=0`, see
//! [`moves_on`]): the operator starts a new node id, calls
//! `add_node(new)`, then `remove_node(n)` for a running member `n` that
//! keeps its disk and runs on while the reconcile loops move its replicas
//! away under the faults; once a registry says `Removed`, `n` is cut off
//! and shut down (`shutdown`; it leads no group by then) and stays down.
//! The leaving node may itself crash or lose power meanwhile: it comes
//! back on its disk and drains on, or, when the others completed its
//! removal while it was down, it stays down.
//! Clock faults (on unless `ADMIT_SIM_CLOCKS=0`; a generator of their
//! own, so the other faults of a seed stay as drawn without them): every
//! node has a service clock, the true time plus an offset, never going
//! back (a step back reads the latest value until the true time catches
//! up, as admit's system clock does); one node per run, drawn by the seed,
//! gets its clock set ahead beyond the bound, ahead within it, or behind,
//! for 0.1-1.6 s at a time (one node, so a majority keeps the true time,
//! which is what admit assumes). Each command is stamped by the node it
//! is proposed on with admit-server's own code (`admit_server::skew`:
//! raised to a majority's clocks when behind, refused when ahead beyond
//! [`MAX_OFFSET`] or without a majority's samples), fed by the clock
//! samples the nodes' liveness answers carry; scopes 0 and 1 count their
//! admissions in a rolling [`WINDOW_MS`] of the engine's time (the
//! largest stamp applied), as admit counts a conversation in 24 h.
//! At most one node is down at a time; a lost node counts as down until
//! its replacement is added (a leaving node counts only while it is down:
//! its replicas are still voters until they move).
//! The App is admit's own ([`AdmitShard`]: admit-server's shard App over
//! admit-core's engine, one per scope, each scope a number with a small
//! limit): callers send keyed marketing templates to new customers and,
//! one call in six, a new customer's STOP (an opt-out: an inbound message
//! or Meta's user-preference event), one in forty Meta's event disabling
//! one of the two templates, one in forty Meta's restriction of the
//! number's account (every send denied until lifted) and one in forty its
//! lift, one in forty an operator's registration halving the number's
//! limit and one in forty restoring it (R5.6), one in forty a release
//! giving back an admission answered before, one in twenty the
//! sender's report of its message, DELIVERED or FAILED (R3.5: a FAILED
//! report gives the admission back unless DELIVERED came first), one in
//! forty the sender's SENT report naming the admission and Meta's message
//! id and one in forty Meta's status naming only the message id (applied
//! through the message the sender reported, or remembered until that
//! report when it comes first), and later
//! send to customers whose STOP was answered. Scope [`UPGRADING`]'s number
//! climbs a ladder of tiers ([`ladder`]: its limit, twice and four times
//! it) by R5.3's rule: a new conversation that finds the 7-day count at
//! half the limit starts a 24 h wait (1 s of the sim), at whose end the
//! count is taken again and the limit rises one tier if it still holds;
//! an operator's limit cancels a wait (R5.6). One call in ten there is
//! Meta's quality rating of the number, Low or High (R5.5, with a flag
//! period of half a sim day, [`FLAG_PERIOD`]): Low flags it, a tier down
//! when it stays Low the period (and a new period from there), High the
//! period makes it Connected again, and no upgrade while it is Flagged or
//! rated Low. Scope [`PORTFOLIO`] is a
//! portfolio of two numbers under one limit: one call in ten there is
//! the second number's template to a customer of one of the first's last
//! admissions ([`Op::Also`]), which the portfolio counts once while
//! either conversation is in the window (R3.1), so it is admitted at the
//! limit and not counted again; a release of either then gives nothing
//! back until both are gone. One call in twenty is a FAILED report
//! carrying one of Meta's codes of section 9 (131049: no marketing to the
//! customer in the scope for 24 h; 131048: the number's new conversations
//! held for 6 h; 131056: the pair backs off 1 s x 4 per report in a row,
//! capped, forgotten after a quiet period or at the pair's next SENT or
//! DELIVERED; 130429: the number backs off the same way, forgotten at any
//! of its pairs' next SENT or DELIVERED), and one in twenty a template again to the customer of one
//! of the scope's last four admissions ([`Op::Again`]): denied while a
//! hold or back-off covers it, through the open conversation otherwise
//! (even while new ones are held), else a new conversation; the holds'
//! lengths end within a run ([`cooldowns`]). Calls go through any node, following leader
//! hints and retrying an unanswered call (a repeat answers its first
//! decision: admit's idempotency keys and delivery keys). A model of the
//! rules beside the engine (the [`Book`]) says what each decision must be;
//! callers read counts on the fast path (a leader with a lease answers
//! from memory: admit's lock-free reader).
//!
//! Checked on every step: every decision of admit's engine is the rule's
//! (R3.4's count in the window against the limit last set, less what
//! releases gave back, R7.2's opt-out, R6's disabled template, section
//! 10's account restriction; a repeat is a replay of the first decision;
//! a release or a FAILED report gives back exactly an admission still
//! counted and, for a report, not reported DELIVERED, R3.5, and nothing
//! applies a released call again); no replica's scope holds
//! more than the limit;
//! the replicas of a shard agree (one's decisions are a prefix of the
//! other's); no replica's engine time runs more than the bound (plus
//! [`CLOCK_SLACK_MS`]) ahead of the true time. At the end, after healing: every shard has a leader within
//! [`HEAL_BOUND`]; every answered admission is still applied and every
//! answered refusal still a refusal; the order of decisions respects real
//! time (an answer before another's call is decided first); no fast-path
//! read missed an answered admission or saw one not yet asked for; after a
//! lost disk or a move, every group's voters are the members (the new node
//! in, the lost or moved one out), no change is under way, and the old id
//! is `Removed` in every running node's registry; in a windowed scope, no
//! stretch of true time as long as the window, narrowed by the bound and
//! the slack, holds more admissions than the limit (by the true times the
//! commands were stamped, up to the latest stamp applied at each decision,
//! leaving out admissions released before it);
//! every answered STOP, template event, restriction and lift is applied
//! and no send it denies asked after the answer was admitted (for a
//! restriction: unless a lift was decided between them); the leaders'
//! engines count
//! what the rule holds and hold the limit last set. After a move, the moved node restarted on its
//! kept disk is refused at start ("node removed": its peers' registry says
//! so).
//! Fast-path reads count a released admission until its release was
//! certainly applied, and at least until it may have been.
//! Every decision by the windows reports the limit the model holds then
//! (the tier reached, or the limit last set), and the leaders' engines
//! hold it at the end.
//! A hold's denial names its rule and its end; a report answers the end of
//! the hold or back-off it started; no marketing send to a customer under
//! an answered 131049 hold is admitted before the hold ends.
//! Not covered: the rules beyond R3.1's portfolio, R3.4, R3.5's release
//! and delivery reports, R5.3's upgrade, R5.5's Flagged downgrade, R5.6's
//! limit set from outside, R6's disabled template, R7, section 9's holds
//! and back-offs and section 10's account restriction: R8's leader-local
//! buckets (admit-core's own tests cover them on one engine; they are not
//! replicated, so faults change nothing of theirs but who holds them).
//! A run's digest (every event, answer and final state) is the same each
//! time a seed runs; `a_seed_replays_exactly` checks it. The seed also
//! fixes tokio's `select!` order (`Builder::rng_seed`, which needs
//! `--cfg tokio_unstable`, set in `.cargo/config.toml`).
//!
//! ```sh
//! cargo test -p admit-raft --test sim                           # CI's seeds
//! ADMIT_SIM_SEEDS=2000 cargo test --release -p admit-raft --test sim -- --nocapture never_over
//!                                           # (a line each 100 seeds passed)
//! ADMIT_SIM_SEED=1234 cargo test -p admit-raft --test sim -- --nocapture   # replay one
//! ADMIT_SIM_EVENTS=1 ...                    # print each fault and event as it happens
//! ADMIT_SIM_MOVES=0 ...                     # no moves (a kept disk moved out)
//! ADMIT_SIM_CLOCKS=0 ...                    # no clock faults
//! ```

#[cfg(not(tokio_unstable))]
compile_error!(
    "the simulation seeds tokio's select! order (Builder::rng_seed), which needs \
     `--cfg tokio_unstable`: .cargo/config.toml sets it; RUSTFLAGS from the \
     environment replace it, so add `--cfg tokio_unstable` to them"
);

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use admit_core::{
    AdmissionId, AdmitRequest, Category, Command, DeliveryStatus, Dur, IdempotencyKey, Inbound,
    InboundKind, Limit, NumberId, NumberRegistration, OptChange, Output, PlatformEvent, Policy,
    PortfolioId, Quality, Reason, ScopeKind, SendKind, Target, TemplateEvent, TemplateId,
    Threshold, Ts, UpgradeRule, WaId,
};
use admit_raft::{App, Dialer, NodeConfig, RaftNode, WriteError};
use admit_server::app::{ReaderSlot, ShardApp, Stamped};
use admit_server::skew::Skew;
use common::seeded::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint, Uri};

const NODES: u64 = 3;
const SHARDS: u32 = 4;
const SCOPES: u32 = 6;
/// Each scope's limit: the small ones fill early (refusals at the limit),
/// the large ones keep changing all run (so a stale read shows).
fn limit(scope: u32) -> usize {
    4 << scope
}
/// Scopes 0 and 1 count admissions in a rolling window of the service
/// clock (R3.4's 24 h, scaled down); the others count them all run.
fn windowed(scope: u32) -> bool {
    scope < 2
}
const WINDOW_MS: u64 = 1_000;
/// The scope whose number climbs a ladder of tiers by R5.3's rule (with
/// [`Knobs::upgrades`]): a windowed scope, so its rule's 7 days and 24 h
/// wait are 7 and 1 [`WINDOW_MS`] of the sim, and a wait ends in a run.
const UPGRADING: u32 = 1;
/// The scope that is a portfolio of two numbers under one limit (R3.1,
/// with [`Knobs::portfolios`]): [`number_of`] and [`second_number`].
const PORTFOLIO: u32 = 0;
/// The ladder of [`UPGRADING`]: its [`limit`], twice and four times it.
fn ladder(scope: u32) -> [usize; 3] {
    let l = limit(scope);
    [l, 2 * l, 4 * l]
}
/// The first tier of the scope's ladder above `l` (R5.6: a limit set off
/// the ladder upgrades to the tier above it).
fn next_tier(scope: u32, l: usize) -> Option<usize> {
    ladder(scope).into_iter().find(|t| *t > l)
}
/// How far a node's clock may run ahead of the others' before it stamps
/// nothing (admit-server's `--max-clock-offset`, scaled down like the
/// window).
const MAX_OFFSET: Duration = Duration::from_millis(100);
/// What the checks allow beyond [`MAX_OFFSET`] for the clocks' sampling
/// (round trips, samples' age).
const CLOCK_SLACK_MS: u64 = 50;
/// The true time at the start of a run, on the service clocks' scale (UTC
/// ms).
const CLOCK_BASE_MS: u64 = 1_900_000_000_000;
/// Virtual time of load and faults per seed (`ADMIT_SIM_RUN_MS`).
fn run_time() -> Duration {
    Duration::from_millis(
        std::env::var("ADMIT_SIM_RUN_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3_000),
    )
}
/// Whether a run may move a node out (`ADMIT_SIM_MOVES=0` turns it off).
/// On since the stalled appends of seed 1043 were fixed.
fn moves_on() -> bool {
    std::env::var("ADMIT_SIM_MOVES").map_or(true, |v| v != "0")
}

/// What shapes a run beside its seed.
#[derive(Clone, Copy)]
struct Knobs {
    /// Runs may move a node out.
    moves: bool,
    /// When a crash is drawn, the run's one lost disk or move is taken
    /// with these odds (numerator, denominator) instead.
    change_odds: (u64, u64),
    /// Runs have clock faults (`ADMIT_SIM_CLOCKS=0` turns them off).
    clocks: bool,
    /// A node being moved out may crash or lose power while its replicas
    /// move away (off only for seeds that replay a schedule found before).
    crash_leaving: bool,
    /// Callers' calls include Meta's account restrictions and their lifts
    /// (off only for seeds that replay a schedule found before).
    restrictions: bool,
    /// Callers' calls include an operator's limit changes
    /// ([`Op::SetLimit`]; off only for seeds that replay a schedule found
    /// before).
    limits: bool,
    /// Callers' calls include releases, delivery reports and Meta's
    /// statuses (R3.5: [`Op::Release`], [`Op::Report`], [`Op::Sent`],
    /// [`Op::Meta`]; off only for seeds that replay a schedule found
    /// before).
    releases: bool,
    /// Scope [`UPGRADING`] climbs a ladder of tiers by R5.3's rule (off
    /// only for seeds that replay a schedule found before).
    upgrades: bool,
    /// Scope [`PORTFOLIO`] is a portfolio of two numbers sharing one limit
    /// ([`Op::Also`]; off only for seeds that replay a schedule found
    /// before).
    portfolios: bool,
    /// Callers' FAILED reports carry Meta's error codes of section 9
    /// (131049, 131048, 131056, 130429) and callers send again to customers of
    /// earlier admissions ([`Op::Again`]), which the holds and back-offs
    /// those codes start deny (off only for seeds that replay a schedule
    /// found before).
    holds: bool,
    /// Scope [`UPGRADING`]'s number gets Meta's quality ratings
    /// ([`Op::Quality`]) and R5.5's Flagged downgrade, with a flag period
    /// of half a sim day (on with [`Knobs::upgrades`]; off only for seeds
    /// that replay a schedule found before).
    flags: bool,
}

impl Knobs {
    /// CI's and the command line's: moves per `ADMIT_SIM_MOVES`, a change
    /// on one crash in two.
    fn from_env() -> Self {
        Self {
            moves: moves_on(),
            change_odds: (1, 2),
            clocks: std::env::var("ADMIT_SIM_CLOCKS").map_or(true, |v| v != "0"),
            crash_leaving: true,
            restrictions: true,
            limits: true,
            releases: true,
            upgrades: true,
            portfolios: true,
            holds: true,
            flags: true,
        }
    }
}
/// After healing, every shard has a leader within this (virtual) time: a
/// few election timeouts (200-400 ms) and a restart.
const HEAL_BOUND: Duration = Duration::from_secs(10);
/// One attempt of a caller; then it retries through another node.
const ATTEMPT: Duration = Duration::from_millis(1_500);
/// A caller gives up (the answer stays unknown) after this.
const PATIENCE: Duration = Duration::from_secs(6);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------- the App

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Admit {
    scope: u32,
    /// The call's key (a repeat is the same call retried).
    id: u64,
    /// The customer: the call's own id, or one whose STOP was answered.
    customer: u64,
    op: Op,
    /// The proposer's service clock (ms) when it stamped the command.
    at: u64,
    /// The true time then, on the same scale: for the checks only.
    true_ms: u64,
}

/// What a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum Op {
    /// A keyed marketing template to the customer; `alert` is the
    /// template [`Op::DisableAlert`] disables, `promo` the other.
    Send { alert: bool },
    /// The customer opts out (R7.1): its STOP message, or Meta's
    /// user-preference event (`platform`).
    Stop { platform: bool },
    /// Meta's event: the template `alert` is disabled (R6), for good.
    DisableAlert,
    /// Meta restricts the number's account until lifted, of no type it
    /// names (section 10: every send denied).
    Restrict,
    /// Meta lifts the number's restriction.
    Lift,
    /// An operator sets the number's limit (R5.6: it replaces admit's own
    /// at once), to half of [`limit`] (`low`) or back to it, by
    /// registering the number again. A registration carries no key: a
    /// retried one is applied again, in its place in the log, as admit
    /// applies it.
    SetLimit { low: bool },
    /// The sender gives back the admission of call `of` (R3.5: its message
    /// failed before delivery), by the admission id admit answered. A
    /// release carries no key: a retried one is applied again, and answers
    /// `released = false` then. `of` is a send answered admitted on its
    /// one attempt, so no stray copy of it can be applied after the
    /// release (admit would decide such a copy afresh, as R3.4 says).
    Release { of: u64 },
    /// The sender reports how the message of call `of` ended, naming its
    /// admission, keyed by the report: DELIVERED (`delivered`), or FAILED,
    /// which gives the admission back unless DELIVERED was reported first
    /// (R3.5). A FAILED report may carry Meta's error `code` (section 9):
    /// [`MARKETING_LIMIT`] holds marketing to the customer in the scope,
    /// [`SPAM_RATE`] holds the number's new conversations, [`PAIR_RATE`]
    /// backs the pair off and [`THROUGHPUT`] the number, longer at each
    /// report in a row.
    Report {
        of: u64,
        delivered: bool,
        code: Option<u32>,
    },
    /// The sender reports call `of`'s message SENT, naming its admission
    /// and Meta's message id, keyed by the report: admit remembers the
    /// message for the conversation's window, and applies a status Meta
    /// reported for it before (R3.5).
    Sent { of: u64 },
    /// Meta's status of call `of`'s message, naming only the message id,
    /// keyed by the delivery: DELIVERED (`delivered`) or FAILED. For a
    /// message the sender reported, it acts as a report naming the
    /// admission; for one not reported yet, a FAILED is remembered (and a
    /// DELIVERED after it cancels it) until the sender's report.
    Meta { of: u64, delivered: bool },
    /// A keyed marketing template (`promo`) from the portfolio's second
    /// number to the customer of call `of`, an admission of the first
    /// number: the portfolio counts that customer once while either
    /// number's conversation with them is in the window (R3.1, R3.2).
    Also { of: u64 },
    /// A keyed marketing template (`promo`) from the number to the customer
    /// of its admission `of` again: answered through the open conversation
    /// while that is open (even under a [`SPAM_RATE`] hold), denied while
    /// a hold or back-off of [`Op::Report`]'s codes covers the customer,
    /// else a new conversation (section 9, R3.2).
    Again { of: u64 },
    /// Meta rates the number's quality Low (`low`) or High (R5.5, R6.1):
    /// Low flags it (a tier down if it stays Low for the flag period, no
    /// upgrade meanwhile), High for the period makes it Connected again.
    Quality { low: bool },
}

/// R5.5's 7 days in the sim's policy of [`UPGRADING`] ([`Knobs::flags`]):
/// half of its engine's day, so 500 ms of the sim.
const FLAG_PERIOD: Dur = Dur::hours(12);

/// Meta's error codes a FAILED [`Op::Report`] carries (section 9).
const MARKETING_LIMIT: u32 = 131_049;
const SPAM_RATE: u32 = 131_048;
const PAIR_RATE: u32 = 131_056;
const THROUGHPUT: u32 = 130_429;

/// Section 9's lengths in `scope`'s policy, in the engine's ms: a windowed
/// scope keeps the seeds' (its engine's day is one [`WINDOW_MS`], so the
/// spam hold is 250 ms of the sim and the marketing hold 1 s); the others,
/// whose engine runs on the sim's time, get lengths that end in a run.
#[derive(Clone, Copy)]
struct Cooldowns {
    spam: u64,
    marketing: u64,
    pair_base: u64,
    pair_max: u64,
    pair_reset_after: u64,
    throughput_base: u64,
    throughput_max: u64,
    throughput_reset_after: u64,
}

fn cooldowns(scope: u32) -> Cooldowns {
    let seeds = Policy::seeds();
    if windowed(scope) {
        Cooldowns {
            spam: seeds.spam_cooldown.ms(),
            marketing: seeds.marketing_hold.ms(),
            pair_base: seeds.pair_backoff_base.ms(),
            pair_max: seeds.pair_backoff_max.ms(),
            pair_reset_after: seeds.pair_backoff_reset_after.ms(),
            throughput_base: seeds.throughput_backoff_base.ms(),
            throughput_max: seeds.throughput_backoff_max.ms(),
            throughput_reset_after: seeds.throughput_backoff_reset_after.ms(),
        }
    } else {
        Cooldowns {
            spam: 300,
            marketing: 1_000,
            pair_base: seeds.pair_backoff_base.ms(),
            pair_max: 1_500,
            pair_reset_after: 1_000,
            throughput_base: seeds.throughput_backoff_base.ms(),
            throughput_max: 1_500,
            throughput_reset_after: 1_000,
        }
    }
}

/// The sim's time `days` of the engine's days stand for in `scope` (a
/// windowed scope's day is [`WINDOW_MS`]).
fn sim_days(scope: u32, days: u64) -> u64 {
    days * if windowed(scope) { WINDOW_MS } else { DAY_MS }
}

/// Meta's message id of call `of`'s message.
fn message_of(of: u64) -> String {
    format!("w{of}")
}

impl Op {
    fn is_send(self) -> bool {
        matches!(self, Op::Send { .. } | Op::Also { .. } | Op::Again { .. })
    }
}

/// When an id was decided.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct When {
    /// the true time its command was stamped
    true_ms: u64,
    /// the latest true stamp time of the commands applied up to it
    tau_ms: u64,
    /// the engine's time it was decided at (a windowed admission is
    /// dated there, as admit dates a conversation)
    engine_ms: u64,
    /// the scope's limit then
    limit: usize,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Book {
    /// scope -> ids admitted
    admitted: BTreeMap<u32, Vec<u64>>,
    /// id -> its decision (a repeat answers it again)
    decided: BTreeMap<u64, bool>,
    /// scope -> ids in the order they were first decided
    order: BTreeMap<u32, Vec<u64>>,
    /// The engine's time: the latest stamp applied (it never goes back,
    /// as admit's engine clamps a command's time to its own).
    now_ms: u64,
    /// The latest true stamp time applied.
    tau_ms: u64,
    /// id -> when it was decided
    when: BTreeMap<u64, When>,
    /// Where admit's engine decided otherwise than the rule ([`AdmitShard`]).
    disagreements: Vec<String>,
    /// The ids of the calls applied that were not sends (in `decided` as
    /// `true`).
    events: BTreeSet<u64>,
    /// scope -> the customers who opted out
    opted_out: BTreeMap<u32, BTreeSet<u64>>,
    /// The scopes whose template `alert` is disabled.
    disabled: BTreeSet<u32>,
    /// The scopes whose number is restricted now.
    restricted: BTreeSet<u32>,
    /// scope -> the limit set last ([`Op::SetLimit`]; [`limit`] until one is).
    limits: BTreeMap<u32, usize>,
    /// Sends the rule refused only because the limit was lowered (the
    /// scope held fewer than [`limit`]): shows the changes bind.
    refused_lowered: u64,
    /// id -> the admission id admit answered it with (admitted sends)
    admissions: BTreeMap<u64, AdmissionId>,
    /// id of a released admission -> where in its scope's `order` the
    /// release that gave it back was decided (decisions after it no longer
    /// count it)
    released: BTreeMap<u64, usize>,
    /// Releases applied that found nothing to give back (a repeat, or an
    /// admission already out of its window).
    releases_void: u64,
    /// ids whose message was reported DELIVERED
    delivered: BTreeSet<u64>,
    /// call id of a keyed report -> until when (sim ms) admit remembers its key
    seen_until: BTreeMap<u64, u64>,
    /// id -> until when admit remembers its message (the sender's SENT report)
    sent_until: BTreeMap<u64, u64>,
    /// id -> Meta's status of its message before the sender's report: a
    /// FAILED, cancelled (`true`) by a DELIVERED after it, and until when
    early: BTreeMap<u64, (bool, u64)>,
    /// FAILED statuses applied by a later SENT report
    early_applied: u64,
    /// scope -> when (the engine's time) its wait for the next tier ends
    /// (R5.3)
    pending_upgrade: BTreeMap<u32, u64>,
    /// scope -> the highest limit an upgrade gave it
    peak: BTreeMap<u32, usize>,
    /// ids whose conversation a release or FAILED report took out of
    /// admit's log after it left the 24 h window (`released` false): R5.3's
    /// count no longer has them
    taken_out: BTreeSet<u64>,
    /// id -> its customer, for admitted sends to another customer than the
    /// call's own id ([`Op::Also`])
    cust: BTreeMap<u64, u64>,
    /// Admissions that counted no one ([`Op::Also`]: the portfolio
    /// counted the customer already)
    uncounted: BTreeSet<u64>,
    /// Waits that ended in an upgrade, and waits that ended without one.
    upgrades: u64,
    upgrades_failed: u64,
    /// (scope, customer) -> when (the engine's ms) its [`MARKETING_LIMIT`]
    /// hold ends
    holds: BTreeMap<(u32, u64), u64>,
    /// scope -> when (the engine's ms) its number's [`SPAM_RATE`] hold on
    /// new conversations ends
    spam: BTreeMap<u32, u64>,
    /// (scope, customer) -> the number's [`PAIR_RATE`] back-off with the
    /// customer: when it ends (the engine's ms), and the reports in a row
    backoffs: BTreeMap<(u32, u64), (u64, u32)>,
    /// scope -> its number's [`THROUGHPUT`] back-off: when it ends, and
    /// the reports in a row
    throttled: BTreeMap<u32, (u64, u32)>,
    /// ids of the portfolio's second number's admissions ([`Op::Also`])
    second: BTreeSet<u64>,
    /// Sends admitted through their customer's open conversation
    /// ([`Op::Again`]): nothing counted, nothing opened.
    through_open: BTreeSet<u64>,
    /// Sends the rule denied by a hold or back-off of section 9.
    hold_denials: u64,
    /// scope -> its number's R5.5 state ([`Op::Quality`])
    flags: BTreeMap<u32, Flag>,
    /// R5.5's downgrades, and the numbers Connected again
    downgrades: u64,
    recoveries: u64,
}

impl Book {
    /// What `scope` holds now: the customers of the admissions it counts
    /// ([`Book::live`]), each once (R3.1).
    fn held(&self, scope: u32) -> usize {
        self.live(scope)
            .map(|id| self.customer(id))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// The admissions `scope` counts now: in a windowed scope, those dated
    /// within the window that ends at the engine's time.
    fn live(&self, scope: u32) -> impl Iterator<Item = u64> + '_ {
        let ids = self.admitted.get(&scope).map(Vec::as_slice).unwrap_or(&[]);
        ids.iter()
            .filter(move |id| !windowed(scope) || self.when[id].engine_ms + WINDOW_MS > self.now_ms)
            .copied()
    }

    /// Whether the number (the portfolio's first) has a conversation open
    /// with `customer` (R3.2 step 2).
    fn open_with(&self, scope: u32, customer: u64) -> bool {
        self.live(scope)
            .any(|id| self.customer(id) == customer && !self.second.contains(&id))
    }

    /// Section 9's effect of a FAILED report with Meta's `code` naming the
    /// number's conversation with `customer`, applied at the engine's time
    /// `now`: the hold's or back-off's end, as admit answers it.
    fn hold(&mut self, scope: u32, customer: u64, code: u32, now: u64) -> Option<u64> {
        let cd = cooldowns(scope);
        match code {
            MARKETING_LIMIT => {
                self.holds.insert((scope, customer), now + cd.marketing);
                Some(now + cd.marketing)
            }
            SPAM_RATE => {
                self.spam.insert(scope, now + cd.spam);
                Some(now + cd.spam)
            }
            PAIR_RATE | THROUGHPUT => {
                let (b, base, max, reset_after) = if code == PAIR_RATE {
                    let b = self.backoffs.entry((scope, customer)).or_default();
                    (b, cd.pair_base, cd.pair_max, cd.pair_reset_after)
                } else {
                    let b = self.throttled.entry(scope).or_default();
                    (
                        b,
                        cd.throughput_base,
                        cd.throughput_max,
                        cd.throughput_reset_after,
                    )
                };
                // the reports in a row are forgotten after a quiet period
                if b.1 > 0 && b.0 + reset_after <= now {
                    *b = (0, 0);
                }
                let factor = 4u64.saturating_pow(b.1.min(31));
                b.0 = now + base.saturating_mul(factor).min(max);
                b.1 += 1;
                Some(b.0)
            }
            _ => None,
        }
    }

    /// The customer of an admitted send.
    fn customer(&self, id: u64) -> u64 {
        self.cust.get(&id).copied().unwrap_or(id)
    }

    /// Whether `scope` counts `customer` now by an admission other than
    /// `but` (R3.1: a portfolio counts a customer once, while any of its
    /// numbers' conversations with them is in the window).
    fn counts(&self, scope: u32, customer: u64, but: Option<u64>) -> bool {
        self.live(scope)
            .any(|id| Some(id) != but && self.customer(id) == customer)
    }

    /// The limit of `scope` now.
    fn limit(&self, scope: u32) -> usize {
        self.limits.get(&scope).copied().unwrap_or(limit(scope))
    }

    /// The highest limit `scope` ever had: no window may hold more.
    fn cap(&self, scope: u32) -> usize {
        self.peak
            .get(&scope)
            .copied()
            .unwrap_or(0)
            .max(limit(scope))
    }

    /// R5.3's count at `at`: the customers of the admissions still counted
    /// that were dated in the 7 days up to `at`, each once (a customer
    /// written to again after a conversation ended counts once).
    fn unique_7d(&self, scope: u32, at: u64) -> usize {
        let from = at.saturating_sub(sim_days(scope, 7));
        let ids = self.admitted.get(&scope).map(Vec::as_slice).unwrap_or(&[]);
        ids.iter()
            .filter(|id| (from + 1..=at).contains(&self.when[id].engine_ms))
            .filter(|id| !self.taken_out.contains(id))
            .map(|id| self.customer(*id))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// R5.3 at `at` for a scope at limit `l`: the tier above `l` when the
    /// 7 days up to `at` count at least half of `l` and the number is not
    /// Flagged nor rated Low (R5.5; it is Connected and its name approved
    /// otherwise all run).
    fn upgrade_to(&self, scope: u32, l: usize, at: u64) -> Option<usize> {
        let f = self.flags.get(&scope).copied().unwrap_or_default();
        next_tier(scope, l).filter(|_| {
            self.unique_7d(scope, at) >= l.div_ceil(2) && f.flagged_since.is_none() && !f.low
        })
    }

    /// The limit of `scope` at the engine's time `now`, with every delayed
    /// effect due by then run at its own time ([`Book::settle`]).
    fn limit_at(&self, scope: u32, now: u64) -> usize {
        let mut b = self.clone();
        b.settle(scope, now);
        b.limit(scope)
    }

    /// Ends `scope`'s delayed effects due at the engine's time: before a
    /// command is decided, as admit runs them.
    fn run_due(&mut self, scope: u32) {
        self.settle(scope, self.now_ms);
    }

    /// Runs `scope`'s delayed effects due by `now`, each at its own time,
    /// in time order, a Flagged deadline first at equal times (R5.5 before
    /// R5.3: an upgrade needs the number unflagged).
    fn settle(&mut self, scope: u32, now: u64) {
        loop {
            let f = self.flags.get(&scope).copied().unwrap_or_default();
            let flag = f.deadline();
            let up = self.pending_upgrade.get(&scope).copied();
            let next = match (flag, up) {
                (Some(d), Some(u)) if u < d.0 => Err(u),
                (Some(d), _) => Ok(d),
                (None, Some(u)) => Err(u),
                (None, None) => return,
            };
            match next {
                Ok((t, _)) | Err(t) if t > now => return,
                Ok((t, true)) => {
                    // Low all the period: a tier down, a new period from here
                    let l = self.limit(scope);
                    let to = ladder(scope)
                        .into_iter()
                        .rev()
                        .find(|x| *x < l)
                        .unwrap_or(l);
                    self.limits.insert(scope, to);
                    self.downgrades += 1;
                    self.flags.entry(scope).or_default().flagged_since = Some(t);
                }
                Ok((_, false)) => {
                    // High all the period: Connected again
                    let f = self.flags.entry(scope).or_default();
                    (f.flagged_since, f.recovering_since) = (None, None);
                    self.recoveries += 1;
                }
                Err(t) => {
                    self.pending_upgrade.remove(&scope);
                    let l = self.limit(scope);
                    match self.upgrade_to(scope, l, t) {
                        Some(to) => {
                            self.upgrades += 1;
                            self.limits.insert(scope, to);
                            let peak = self.peak.entry(scope).or_default();
                            *peak = (*peak).max(to);
                        }
                        None => self.upgrades_failed += 1,
                    }
                }
            }
        }
    }
}

/// A number's R5.5 state in the model (the sim's ms).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Flag {
    /// rated Low last
    low: bool,
    /// Flagged since (the period of Low days runs from here)
    flagged_since: Option<u64>,
    /// Flagged and rated High or Medium since
    recovering_since: Option<u64>,
}

impl Flag {
    /// The next deadline of R5.5 and whether it is a downgrade.
    fn deadline(&self) -> Option<(u64, bool)> {
        // (a windowed scope's engine day is one WINDOW_MS)
        let period = FLAG_PERIOD.ms() * WINDOW_MS / DAY_MS;
        match (self.flagged_since, self.recovering_since) {
            (_, Some(r)) => Some((r + period, false)),
            (Some(f), None) => Some((f + period, true)),
            _ => None,
        }
    }

    /// A rating from Meta at `now`.
    fn rate(&mut self, low: bool, now: u64) {
        self.low = low;
        match (low, self.flagged_since, self.recovering_since) {
            // flagged, or its Low days start again after a rise
            (true, None, _) | (true, Some(_), Some(_)) => {
                (self.flagged_since, self.recovering_since) = (Some(now), None)
            }
            (false, Some(_), None) => self.recovering_since = Some(now),
            _ => {}
        }
    }
}

/// The limit [`Op::SetLimit`] sets.
fn set_limit_to(scope: u32, low: bool) -> usize {
    if low {
        limit(scope) / 2
    } else {
        limit(scope)
    }
}

/// The sim's App: admit's own shard App ([`ShardApp`], admit-core's
/// engine) decides, one per scope, and a [`Book`] beside it keeps what
/// the checks need and what the rule says the decision must be.
///
/// Each scope is a phone number registered with its [`limit`] under a
/// policy of one tier and no upgrades; an admission is a keyed marketing
/// template to a new customer, so the engine opens (and counts) a
/// conversation exactly when R3.4 allows one. A windowed scope's engine
/// runs on a scaled clock ([`engine_ts`]): one [`WINDOW_MS`] of the sim is
/// its 24 h, so its conversations age out during a run. The engine sees
/// the time the Book does (the latest stamp applied in the shard), as
/// admit's engine clamps a command's time to its own.
///
/// Where the engine's decision is not the rule's (the Book's count in the
/// window against the limit), or a repeated key is not answered as a
/// replay of the first decision, the Book records a disagreement, which
/// every step's check fails on.
#[derive(Clone)]
struct AdmitShard {
    book: Arc<Mutex<Book>>,
    /// scope -> admit's App for its number (the shard's scopes only)
    engines: Arc<Mutex<BTreeMap<u32, ShardApp>>>,
    /// scope -> the lock-free reader of its engine (the fast path's)
    readers: Arc<BTreeMap<u32, ReaderSlot>>,
    /// Scope [`UPGRADING`] climbs its [`ladder`] ([`Knobs::upgrades`]).
    upgrades: bool,
    /// Scope [`PORTFOLIO`] is a portfolio of two numbers
    /// ([`Knobs::portfolios`]).
    portfolios: bool,
}

const DAY_MS: u64 = 86_400_000;

/// The engine's time for the sim's time `ms` in `scope`: in a windowed
/// scope one [`WINDOW_MS`] is 24 h (the origin a minute before the run, so
/// a clock behind stays after it), elsewhere the same.
fn engine_ts(scope: u32, ms: u64) -> Ts {
    if windowed(scope) {
        let from = CLOCK_BASE_MS - 60_000;
        Ts(CLOCK_BASE_MS + ms.saturating_sub(from) * (DAY_MS / WINDOW_MS))
    } else {
        Ts(ms)
    }
}

fn number_of(scope: u32) -> NumberId {
    NumberId::parse("number", &(1_000 + scope).to_string()).unwrap()
}

/// The second number of scope [`PORTFOLIO`]'s portfolio.
fn second_number(scope: u32) -> NumberId {
    NumberId::parse("number", &(2_000 + scope).to_string()).unwrap()
}

fn portfolio_of(scope: u32) -> PortfolioId {
    PortfolioId::parse("portfolio", &format!("p{scope}")).unwrap()
}

fn customer_of(id: u64) -> WaId {
    WaId::parse("customer", &(491_500_000_000 + id).to_string()).unwrap()
}

/// The command of a call (a message or event keyed by the call's id);
/// `portfolio`: the scope is a portfolio ([`Knobs::portfolios`]).
fn engine_cmd(c: &Admit, portfolio: bool) -> Command {
    let (mut number, customer) = (number_of(c.scope), customer_of(c.customer));
    let event_key = Some(format!("m{}", c.id));
    let alert = || TemplateId::parse("template", "alert").unwrap();
    let template = match c.op {
        Op::Stop { platform: false } => {
            return Command::Inbound(Inbound {
                number,
                customer,
                kind: InboundKind::Message,
                text: Some("STOP".into()),
                event_key,
            })
        }
        Op::Stop { platform: true } => {
            return Command::Platform {
                event: PlatformEvent::UserPreference {
                    number,
                    customer,
                    stop: true,
                },
                event_key,
            }
        }
        Op::DisableAlert => {
            return Command::Platform {
                event: PlatformEvent::TemplateStatus {
                    template: alert(),
                    event: TemplateEvent::Disabled,
                },
                event_key,
            }
        }
        Op::Quality { low } => {
            return Command::Platform {
                event: PlatformEvent::NumberQuality {
                    number,
                    quality: if low { Quality::Low } else { Quality::High },
                },
                event_key,
            }
        }
        Op::Restrict | Op::Lift => {
            return Command::Platform {
                event: PlatformEvent::AccountRestriction {
                    target: Target::Number(number),
                    until: None,
                    lifted: c.op == Op::Lift,
                    types: vec![],
                },
                event_key,
            }
        }
        Op::SetLimit { low } => {
            return Command::RegisterNumber(NumberRegistration {
                number: Some(number),
                // the number's scope is the portfolio's: its limit
                portfolio: portfolio.then(|| portfolio_of(c.scope)),
                limit: Some(Limit::Capped(set_limit_to(c.scope, low) as u32)),
                ..Default::default()
            });
        }
        Op::Release { of } | Op::Report { of, .. } | Op::Sent { of } | Op::Meta { of, .. } => {
            panic!("the release or report of {of} needs its admission id: AdmitShard::apply")
        }
        Op::Send { alert: true } => alert(),
        Op::Send { alert: false } => TemplateId::parse("template", "promo").unwrap(),
        Op::Also { .. } => {
            number = second_number(c.scope);
            TemplateId::parse("template", "promo").unwrap()
        }
        Op::Again { .. } => TemplateId::parse("template", "promo").unwrap(),
    };
    let id = c.id;
    Command::Admit(AdmitRequest {
        number,
        customer,
        kind: SendKind::Template {
            id: template,
            category: Category::Marketing,
        },
        idempotency_key: Some(IdempotencyKey::parse("key", &id.to_string()).unwrap()),
    })
}

impl AdmitShard {
    /// A shard's App: its scopes' numbers registered, before any entry.
    fn new(shard: u32, knobs: Knobs) -> AdmitShard {
        let Knobs {
            upgrades,
            portfolios,
            flags,
            ..
        } = knobs;
        let (mut engines, mut readers) = (BTreeMap::new(), BTreeMap::new());
        for scope in (0..SCOPES).filter(|s| shard_of(*s) == shard) {
            let (mut app, slot) = ShardApp::new();
            let climbs = upgrades && scope == UPGRADING;
            // R5.3 as the `seeds` profile has it, which the Book models,
            // except that it does not ask for Connected status: with
            // flags on, a Flagged number rated High again (recovering)
            // then passes every other condition, so R5.5's own "no
            // upgrade while Flagged" is what keeps it down (the Book asks
            // for the number unflagged either way)
            let rule = Policy::seeds()
                .upgrade
                .filter(|_| climbs)
                .map(|r| UpgradeRule {
                    require_connected: false,
                    ..r
                });
            if let Some(r) = &rule {
                assert_eq!(
                    (r.window, r.threshold, r.delay),
                    (Dur::days(7), Threshold::PercentOfLimit(50), Dur::hours(24)),
                    "the Book's model of R5.3"
                );
            }
            // a portfolio: the limit and the opt-outs are the portfolio's
            let shared = portfolios && scope == PORTFOLIO;
            let cd = cooldowns(scope);
            let policy = Policy {
                name: "sim".into(),
                scope: if shared {
                    ScopeKind::Portfolio
                } else {
                    ScopeKind::Number
                },
                ladder: if climbs {
                    ladder(scope).map(|l| Limit::Capped(l as u32)).to_vec()
                } else {
                    vec![Limit::Capped(limit(scope) as u32)]
                },
                initial_limit: Limit::Capped(limit(scope) as u32),
                first_upgrade: None,
                upgrade: rule,
                // R5.5 on the climbing number, its 7 days half a sim day
                flagged_downgrade: climbs && flags,
                flag_period: FLAG_PERIOD,
                // a retried key is answered as first decided all run long
                idempotency_ttl: Dur::days(3_650),
                // section 9's holds end within a run ([`cooldowns`])
                spam_cooldown: Dur(cd.spam),
                marketing_hold: Dur(cd.marketing),
                pair_backoff_base: Dur(cd.pair_base),
                pair_backoff_max: Dur(cd.pair_max),
                pair_backoff_reset_after: Dur(cd.pair_reset_after),
                throughput_backoff_base: Dur(cd.throughput_base),
                throughput_backoff_max: Dur(cd.throughput_max),
                throughput_backoff_reset_after: Dur(cd.throughput_reset_after),
                ..Policy::seeds()
            };
            let registration = |number| {
                Command::RegisterNumber(NumberRegistration {
                    number: Some(number),
                    portfolio: shared.then(|| portfolio_of(scope)),
                    profile: Some("sim".into()),
                    limit: Some(Limit::Capped(limit(scope) as u32)),
                    ..Default::default()
                })
            };
            let at = Ts(CLOCK_BASE_MS - 10 * DAY_MS);
            let mut cmds = vec![Command::SetPolicy(policy), registration(number_of(scope))];
            if shared {
                cmds.push(registration(second_number(scope)));
            }
            for cmd in cmds {
                let r = app.apply(0, Stamped { at, cmd, by: None });
                assert!(r.out.is_ok(), "scope {scope}'s set-up: {:?}", r.out);
            }
            engines.insert(scope, app);
            readers.insert(scope, slot);
        }
        AdmitShard {
            book: Arc::default(),
            engines: Arc::new(Mutex::new(engines)),
            readers: Arc::new(readers),
            upgrades,
            portfolios,
        }
    }

    /// What the engine counts in `scope` at the shard's time (the latest
    /// stamp applied: a scope's engine has seen only its own commands),
    /// read on the fast path.
    fn engine_used(&self, scope: u32) -> Option<u32> {
        let now = engine_ts(scope, lock(&self.book).now_ms);
        let r = self.readers.get(&scope)?.get();
        r.number_status(&number_of(scope), now.max(r.engine_now()))
            .map(|s| s.used)
    }

    /// The limit the engine holds for `scope`, read on the fast path.
    fn engine_limit(&self, scope: u32) -> Option<Limit> {
        let now = engine_ts(scope, lock(&self.book).now_ms);
        let r = self.readers.get(&scope)?.get();
        r.number_status(&number_of(scope), now.max(r.engine_now()))
            .map(|s| s.limit)
    }
}

#[derive(Serialize, Deserialize)]
struct AdmitShardSnapshot {
    book: Book,
    /// scope -> its engine's snapshot (admit's own bytes)
    engines: Vec<(u32, Vec<u8>)>,
}

impl App for AdmitShard {
    type Command = Admit;
    type Response = bool;

    fn apply(&mut self, index: u64, c: Admit) -> bool {
        let mut b = lock(&self.book);
        b.now_ms = b.now_ms.max(c.at);
        b.tau_ms = b.tau_ms.max(c.true_ms);
        b.run_due(c.scope);
        let at = engine_ts(c.scope, b.now_ms);
        let cmd = match c.op {
            // the admission id the call `of` was answered with: applied
            // here before (the release was asked after that answer)
            Op::Release { of } | Op::Report { of, .. } | Op::Sent { of } | Op::Meta { of, .. } => {
                match b.admissions.get(&of) {
                    Some(a) if matches!(c.op, Op::Release { .. }) => Command::Release(a.clone()),
                    Some(a) => Command::Outcome(admit_core::Outcome {
                        number: number_of(c.scope),
                        // an admitted send's customer is its own id
                        customer: customer_of(of),
                        // Meta's status names only the message
                        admission: (!matches!(c.op, Op::Meta { .. })).then(|| a.clone()),
                        status: match c.op {
                            Op::Report {
                                delivered: true, ..
                            }
                            | Op::Meta {
                                delivered: true, ..
                            } => DeliveryStatus::Delivered,
                            Op::Sent { .. } => DeliveryStatus::Sent,
                            _ => DeliveryStatus::Failed,
                        },
                        error_code: match c.op {
                            Op::Report { code, .. } => code,
                            _ => None,
                        },
                        template: None,
                        event_key: Some(format!("m{}", c.id)),
                        message_id: matches!(c.op, Op::Sent { .. } | Op::Meta { .. })
                            .then(|| message_of(of)),
                    }),
                    None => {
                        b.disagreements
                            .push(format!("release {}: no admission of id {of}", c.id));
                        return true;
                    }
                }
            }
            _ => engine_cmd(&c, self.portfolios && c.scope == PORTFOLIO),
        };
        // as a replica applies an entry its log still shares (the usual case)
        let out = lock(&self.engines)
            .get_mut(&c.scope)
            .map(|e| e.apply_ref(index, &Stamped { at, cmd, by: None }).out);
        let first = b.decided.get(&c.id).copied();
        let when = When {
            true_ms: c.true_ms,
            tau_ms: b.tau_ms,
            engine_ms: b.now_ms,
            limit: b.limit(c.scope),
        };
        if !c.op.is_send() {
            // R3.5: a release gives the admission back while the scope
            // counts it (in a windowed scope: while it is in the window
            // ending now); a repeat, or a release of one already gone,
            // answers false
            // A FAILED report does the same, once (it is keyed: a repeat
            // gives nothing back), and not for an admission reported
            // DELIVERED before.
            let counted_live = |b: &Book, of: u64| {
                let counted = b.admitted.get(&c.scope).is_some_and(|a| a.contains(&of));
                let live = !windowed(c.scope) || b.when[&of].engine_ms + WINDOW_MS > b.now_ms;
                counted && live
            };
            // A keyed report is applied once while admit remembers its key
            // (7 of the engine's days); Meta's status and the sender's
            // SENT report meet through the message id (see [`Op::Meta`]).
            let now_ms = b.now_ms;
            let dup = b.seen_until.get(&c.id).is_some_and(|u| *u > now_ms);
            let window = sim_days(c.scope, 1);
            let mut releases = match c.op {
                Op::Release { of } => counted_live(&b, of),
                Op::Report {
                    of,
                    delivered: false,
                    ..
                } => !dup && counted_live(&b, of) && !b.delivered.contains(&of),
                _ => false,
            };
            // whether admit takes the admission's conversation out of its
            // log: then it no longer counts for R5.3 either, even when it
            // was out of the 24 h window already (`released` is false then)
            let mut takes_out = match c.op {
                Op::Release { .. } => true,
                Op::Report {
                    of,
                    delivered: false,
                    ..
                } => !dup && !b.delivered.contains(&of),
                _ => false,
            };
            let mut delivers = matches!(
                c.op,
                Op::Report {
                    delivered: true,
                    ..
                }
            );
            match c.op {
                Op::Sent { of } if !dup => {
                    b.sent_until.insert(of, now_ms + window);
                    match b.early.remove(&of).filter(|(_, until)| *until > now_ms) {
                        Some((true, _)) => delivers = true,
                        Some((false, _)) => {
                            releases = counted_live(&b, of) && !b.delivered.contains(&of);
                            takes_out = !b.delivered.contains(&of);
                            b.early_applied += 1;
                        }
                        None => {}
                    }
                }
                Op::Meta { of, delivered } if !dup => {
                    let found = b.sent_until.get(&of).is_some_and(|u| *u > now_ms);
                    let early = b.early.get(&of).is_some_and(|(_, u)| *u > now_ms);
                    match (found, delivered, early) {
                        (true, true, _) => delivers = true,
                        (true, false, _) => {
                            releases = counted_live(&b, of) && !b.delivered.contains(&of);
                            takes_out = !b.delivered.contains(&of);
                        }
                        (false, true, true) => {
                            if let Some(e) = b.early.get_mut(&of) {
                                e.0 = true;
                            }
                        }
                        (false, false, false) => {
                            b.early.insert(of, (false, now_ms + window));
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
            // taken out of the count; in a portfolio another number's
            // conversation may still count the customer: then nothing is
            // given back (`released` false)
            let removes = releases;
            if let (
                true,
                Op::Release { of } | Op::Report { of, .. } | Op::Sent { of } | Op::Meta { of, .. },
            ) = (releases, c.op)
            {
                releases = !b.counts(c.scope, b.customer(of), Some(of));
            }
            if matches!(c.op, Op::Report { .. } | Op::Sent { .. } | Op::Meta { .. }) && !dup {
                b.seen_until.insert(c.id, now_ms + sim_days(c.scope, 7));
            }
            // section 9: a FAILED report's code starts a hold or a
            // back-off (a repeat of the report changes nothing); any other
            // outcome of the pair (SENT, DELIVERED) ends its back-off
            let mut hold_until = None;
            if !dup {
                let e_now = engine_ts(c.scope, now_ms).0;
                match c.op {
                    Op::Report {
                        of,
                        delivered: false,
                        code: Some(code),
                    } => hold_until = b.hold(c.scope, of, code, e_now),
                    Op::Report {
                        of,
                        delivered: true,
                        ..
                    }
                    | Op::Sent { of }
                    | Op::Meta {
                        of,
                        delivered: true,
                    } => {
                        b.backoffs.remove(&(c.scope, of));
                        b.throttled.remove(&c.scope);
                    }
                    _ => {}
                }
            }
            // applied once (a repeat of the delivery changes nothing)
            let ok = match (&out, c.op) {
                (Some(Ok(Output::Released { released })), Op::Release { .. }) => {
                    *released == releases
                }
                (
                    Some(Ok(Output::Outcome {
                        released,
                        duplicate,
                        hold_until: until,
                    })),
                    Op::Report { .. } | Op::Sent { .. } | Op::Meta { .. },
                ) => *released == releases && *duplicate == dup && *until == hold_until.map(Ts),
                (
                    Some(Ok(Output::Inbound { opt, duplicate, .. })),
                    Op::Stop { platform: false },
                ) => first.is_some() || (*opt == Some(OptChange::OptedOut) && !duplicate),
                (Some(Ok(Output::Event { applied, .. })), _) => first.is_some() || *applied,
                (Some(Ok(Output::Registered)), Op::SetLimit { .. }) => true,
                _ => false,
            };
            if let Op::SetLimit { low } = c.op {
                // every application, a repeat's too: a registration has no key
                b.limits.insert(c.scope, set_limit_to(c.scope, low));
                // a limit set from outside cancels a wait (R5.6)
                b.pending_upgrade.remove(&c.scope);
            }
            if let (Op::Report { of, .. } | Op::Sent { of } | Op::Meta { of, .. }, true) =
                (c.op, delivers)
            {
                b.delivered.insert(of);
            }
            if let Op::Release { of }
            | Op::Report {
                of,
                delivered: false,
                ..
            }
            | Op::Sent { of }
            | Op::Meta { of, .. } = c.op
            {
                if takes_out && !removes {
                    // out of the window, still in the 7 days (if admitted)
                    b.taken_out.insert(of);
                }
                if removes {
                    // decided here: its own place in the scope's order
                    let at = b.order.get(&c.scope).map_or(0, Vec::len);
                    if let Some(a) = b.admitted.get_mut(&c.scope) {
                        a.retain(|x| *x != of);
                    }
                    b.released.insert(of, at);
                }
                if !releases && matches!(c.op, Op::Release { .. } | Op::Report { .. }) {
                    b.releases_void += 1;
                }
            }
            if !ok {
                b.disagreements
                    .push(format!("{:?} {}: the engine gave {out:?}", c.op, c.id));
            }
            if first.is_none() {
                b.decided.insert(c.id, true);
                b.events.insert(c.id);
                b.order.entry(c.scope).or_default().push(c.id);
                b.when.insert(c.id, when);
                match c.op {
                    Op::DisableAlert => {
                        b.disabled.insert(c.scope);
                    }
                    Op::Restrict => {
                        b.restricted.insert(c.scope);
                    }
                    Op::Lift => {
                        b.restricted.remove(&c.scope);
                    }
                    Op::Quality { low } => {
                        let now = b.now_ms;
                        b.flags.entry(c.scope).or_default().rate(low, now);
                    }
                    Op::SetLimit { .. }
                    | Op::Release { .. }
                    | Op::Report { .. }
                    | Op::Sent { .. }
                    | Op::Meta { .. } => {}
                    _ => {
                        b.opted_out.entry(c.scope).or_default().insert(c.customer);
                    }
                }
            }
            return true;
        }
        if b.released.contains_key(&c.id) {
            // released after one attempt: nothing may apply it again
            b.disagreements.push(format!(
                "id {}: applied again after its release ({out:?}); its one attempt was applied twice",
                c.id
            ));
            return false;
        }
        let decision = match out {
            Some(Ok(Output::Decision(d))) => Some(d),
            other => {
                b.disagreements
                    .push(format!("id {}: the engine gave {other:?}", c.id));
                None
            }
        };
        if let Some(first) = first {
            // a repeat of a key: the first decision again, nothing counted
            if let Some(d) = decision.filter(|d| !(d.replayed && d.allowed == first)) {
                b.disagreements.push(format!(
                    "id {}: a repeat first decided {first} was answered {d:?}",
                    c.id
                ));
            }
            return first;
        }
        // the rules: no marketing to a customer who opted out (R7.2), no
        // send of a disabled template (R6), none while the number's
        // account is restricted (section 10), and a new conversation while
        // the scope holds fewer than its limit as last set (R3.4, R5.6;
        // every admitted customer is a new one)
        let stopped = b
            .opted_out
            .get(&c.scope)
            .is_some_and(|o| o.contains(&c.customer));
        let disabled = c.op == (Op::Send { alert: true }) && b.disabled.contains(&c.scope);
        // the restriction names the first number; the portfolio's second
        // number is not restricted
        let restricted =
            b.restricted.contains(&c.scope) && matches!(c.op, Op::Send { .. } | Op::Again { .. });
        // section 9 in admit's order, after those: the customer's
        // marketing hold in the scope, the pair's back-off (the number's
        // own conversations: reports name them), then the conversation
        // open with the customer (R3.2 step 2), and only a new one is held
        // by the number's spam hold
        let first_number = !matches!(c.op, Op::Also { .. });
        let e_now = engine_ts(c.scope, b.now_ms).0;
        let running = |u: Option<u64>| u.filter(|u| *u > e_now);
        let open = first_number && b.open_with(c.scope, c.customer);
        let held_back = if stopped || disabled || restricted {
            None
        } else {
            let marketing = b.holds.get(&(c.scope, c.customer)).copied();
            let pair = b.backoffs.get(&(c.scope, c.customer)).map(|b| b.0);
            let spam = b.spam.get(&c.scope).copied();
            let throttled = b.throttled.get(&c.scope).map(|b| b.0);
            running(marketing)
                .map(|u| (Reason::MarketingHold, u))
                .or(running(pair)
                    .filter(|_| first_number)
                    .map(|u| (Reason::PairRateLimited, u)))
                .or(running(throttled)
                    .filter(|_| first_number)
                    .map(|u| (Reason::ThroughputLimited, u)))
                .or(running(spam)
                    .filter(|_| first_number && !open)
                    .map(|u| (Reason::SpamCooldown, u)))
        };
        let pre = !stopped && !disabled && !restricted && held_back.is_none();
        if held_back.is_some() {
            b.hold_denials += 1;
        }
        // R3.2: a customer the portfolio counts already opens a
        // conversation at any count, and is not counted again
        let already = b.counts(c.scope, c.customer, None);
        let rule = pre && (open || already || b.held(c.scope) < b.limit(c.scope));
        let ok = decision.as_ref().map_or(rule, |d| d.allowed);
        if pre && !rule && b.held(c.scope) < limit(c.scope) {
            b.refused_lowered += 1;
        }
        b.when.insert(c.id, when);
        if ok && open {
            // nothing counted, no conversation opened
            b.through_open.insert(c.id);
        } else if ok {
            b.admitted.entry(c.scope).or_default().push(c.id);
            if !first_number {
                b.second.insert(c.id);
            }
            if c.customer != c.id {
                b.cust.insert(c.id, c.customer);
            }
            if already {
                b.uncounted.insert(c.id);
            }
            if let Some(a) = decision.as_ref().and_then(|d| d.admission.clone()) {
                b.admissions.insert(c.id, a);
            }
            // R5.3: a new conversation that finds the count at half the
            // limit starts the wait for the next tier, unless one runs
            let (l, now) = (b.limit(c.scope), b.now_ms);
            if self.upgrades
                && c.scope == UPGRADING
                && !b.pending_upgrade.contains_key(&c.scope)
                && b.upgrade_to(c.scope, l, now).is_some()
            {
                b.pending_upgrade
                    .insert(c.scope, now + sim_days(c.scope, 1));
            }
        }
        if let Some(d) = &decision {
            let held = b.held(c.scope) as u32;
            // a decision by the windows reports the limit it was taken at
            let limit_seen = d.limit == Some(Limit::Capped(b.limit(c.scope) as u32));
            // a hold names itself and its end; the open conversation too
            let reason_seen = match held_back {
                Some((r, u)) => d.reason == r && d.retry_at == Some(Ts(u)),
                None => !(open && pre) || d.reason == Reason::OpenConversation,
            };
            if d.allowed != rule
                || d.replayed
                || d.used != held
                || d.counted != (d.allowed && !already)
                || (pre && !limit_seen)
                || !reason_seen
            {
                // the customer's admissions the model holds, for the story
                let with: Vec<(u64, When)> = b
                    .admitted
                    .get(&c.scope)
                    .into_iter()
                    .flatten()
                    .filter(|id| b.customer(**id) == c.customer)
                    .map(|id| (*id, b.when[id]))
                    .collect();
                let story = format!(
                    "id {} ({:?}, customer {}) in scope {} at {} ms: the rule says {rule} \
                     (held back: {held_back:?}, open: {open}) with {held} held after, the \
                     engine {d:?}; the customer's admissions: {with:?}",
                    c.id, c.op, c.customer, c.scope, b.now_ms
                );
                b.disagreements.push(story);
            }
        }
        b.decided.insert(c.id, ok);
        b.order.entry(c.scope).or_default().push(c.id);
        ok
    }

    fn snapshot(&self) -> Vec<u8> {
        let engines = lock(&self.engines)
            .iter()
            .map(|(s, e)| (*s, e.snapshot()))
            .collect();
        let snap = AdmitShardSnapshot {
            book: lock(&self.book).clone(),
            engines,
        };
        postcard::to_allocvec(&snap).unwrap()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let snap: AdmitShardSnapshot = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
        let mut engines = lock(&self.engines);
        for (scope, bytes) in &snap.engines {
            let e = engines
                .get_mut(scope)
                .ok_or_else(|| format!("no scope {scope} in this shard"))?;
            e.restore(bytes)?;
        }
        *lock(&self.book) = snap.book;
        Ok(())
    }

    fn check_snapshot(bytes: &[u8]) -> Result<(), String> {
        postcard::from_bytes::<AdmitShardSnapshot>(bytes)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

fn shard_of(scope: u32) -> u32 {
    scope % SHARDS
}

// ---------------------------------------------------------- the network

/// In-memory connections between the nodes, with faults on their bytes.
#[derive(Default)]
struct Net(Mutex<NetState>);

#[derive(Default)]
struct NetState {
    /// node -> where its server takes new connections (absent: down)
    listeners: BTreeMap<u64, tokio::sync::mpsc::UnboundedSender<io::Result<Pipe>>>,
    /// (from, to): bytes from `from` to `to` wait until the hold ends
    held: BTreeSet<(u64, u64)>,
    /// node pair (low, high) -> generation; older connections are reset
    generation: BTreeMap<(u64, u64), u64>,
    /// pipe -> the waker of its last read, woken on every change
    wakers: BTreeMap<u64, Waker>,
    next_pipe: u64,
}

/// Node `id`'s peer address (the dialer ignores it: it dials by id).
fn addr(id: u64) -> String {
    format!("sim-{id}:1")
}

fn pair(a: u64, b: u64) -> (u64, u64) {
    (a.min(b), a.max(b))
}

impl NetState {
    fn generation(&self, a: u64, b: u64) -> u64 {
        self.generation.get(&pair(a, b)).copied().unwrap_or(0)
    }
}

impl Net {
    fn change(&self, f: impl FnOnce(&mut NetState)) {
        let mut s = lock(&self.0);
        f(&mut s);
        for (_, w) in std::mem::take(&mut s.wakers) {
            w.wake();
        }
    }

    /// Resets every connection between `a` and `b`.
    fn reset(&self, a: u64, b: u64) {
        self.change(|s| *s.generation.entry(pair(a, b)).or_default() += 1);
    }

    fn connect(self: &Arc<Self>, from: u64, to: u64) -> io::Result<Pipe> {
        let mut s = lock(&self.0);
        let Some(listener) = s.listeners.get(&to).cloned() else {
            return Err(io::ErrorKind::ConnectionRefused.into());
        };
        let born = s.generation(from, to);
        let (a, b) = tokio::io::duplex(1 << 16);
        s.next_pipe += 2;
        let id = s.next_pipe;
        let pipe = |io, me, peer, id| Pipe {
            io,
            me,
            peer,
            born,
            id,
            net: self.clone(),
        };
        // unlocked: a refused pipe is dropped, and its drop takes the lock
        drop(s);
        listener
            .send(Ok(pipe(b, to, from, id + 1)))
            .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
        Ok(pipe(a, from, to, id))
    }
}

/// One end of an in-memory connection.
struct Pipe {
    io: DuplexStream,
    me: u64,
    peer: u64,
    born: u64,
    id: u64,
    net: Arc<Net>,
}

impl Pipe {
    fn reset(&self, s: &NetState) -> bool {
        s.generation(self.me, self.peer) != self.born
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        lock(&self.net.0).wakers.remove(&self.id);
    }
}

impl AsyncRead for Pipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        {
            let mut s = lock(&this.net.0);
            if this.reset(&s) {
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            s.wakers.insert(this.id, cx.waker().clone());
            if s.held.contains(&(this.peer, this.me)) {
                return Poll::Pending;
            }
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.reset(&lock(&this.net.0)) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Pipe {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

/// Dials the other nodes over [`Net`].
struct SimDialer {
    net: Arc<Net>,
    me: u64,
}

impl std::fmt::Debug for SimDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimDialer({})", self.me)
    }
}

impl Dialer for SimDialer {
    fn channel(&self, node: u64, _addr: &str) -> Result<Channel, String> {
        let (net, me) = (self.net.clone(), self.me);
        let connector = tower::service_fn(move |_: Uri| {
            let r = net.connect(me, node).map(hyper_util::rt::TokioIo::new);
            async move { r }
        });
        Ok(Endpoint::from_static("http://sim.invalid").connect_with_connector_lazy(connector))
    }
}

// ------------------------------------------------------------ the clocks

/// A node's service clock: the true time plus an offset the faults set,
/// never going back (admit's system clock reads a step back as the latest
/// value it saw). It outlives the node's restarts, like a machine's clock.
struct NodeClock {
    epoch: Instant,
    offset_ms: std::sync::atomic::AtomicI64,
    last: AtomicU64,
}

impl NodeClock {
    fn now_ms(&self) -> u64 {
        let t = true_ms(self.epoch) as i64 + self.offset_ms.load(Ordering::Relaxed);
        let t = t.max(0) as u64;
        self.last.fetch_max(t, Ordering::Relaxed).max(t)
    }
}

/// The true time (ms, on the service clocks' scale) of a run whose clocks
/// started at `epoch`.
fn true_ms(epoch: Instant) -> u64 {
    CLOCK_BASE_MS + epoch.elapsed().as_millis() as u64
}

/// What a running node stamps with: its clock and its view of the other
/// nodes' (admit-server's [`Skew`], fed by the samples its liveness
/// answers carry). A restart starts with no samples, as a new process.
#[derive(Clone)]
struct Stamper {
    clock: Arc<NodeClock>,
    skew: Arc<Skew>,
    /// stamps refused in the run
    refused: Arc<AtomicU64>,
}

impl admit_raft::ServiceClock for Stamper {
    fn now_ms(&self) -> Option<u64> {
        Some(self.clock.now_ms())
    }

    fn sampled(&self, node: u64, clock_ms: u64, rtt: Duration, at: std::time::Instant) {
        self.skew.record_carried(node, Ts(clock_ms), rtt, at.into());
    }
}

impl Stamper {
    /// The time this node stamps a command with, as admit's proposer
    /// takes it (its clock, raised when behind a majority's), or `None`
    /// when its clock runs beyond the bound (admit answers UNAVAILABLE).
    fn stamp(&self) -> Option<u64> {
        let at = self.skew.raise(Ts(self.clock.now_ms()));
        let ok = self.skew.check(at).is_ok();
        if !ok {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        ok.then_some(at.ms())
    }
}

type Stampers = Arc<Mutex<BTreeMap<u64, Stamper>>>;

// ------------------------------------------------------------ the cluster

type Node = RaftNode<AdmitShard>;

/// The running nodes, shared with the callers (who look a node up for each
/// attempt and hold it only for that attempt).
type Live = Arc<Mutex<BTreeMap<u64, Node>>>;

struct Sim {
    net: Arc<Net>,
    root: tempfile::TempDir,
    live: Live,
    servers: BTreeMap<u64, JoinHandle<()>>,
    /// (node, shard) -> the App of the node's current run
    books: Arc<Mutex<BTreeMap<(u64, u32), AdmitShard>>>,
    /// The nodes of the cluster (up or down), the targets of faults, load
    /// and reads; a replacement joins once the operator added it.
    members: Vec<u64>,
    /// node -> its data dir (a new one after its disk was lost); every node
    /// ever started has one
    dirs: BTreeMap<u64, PathBuf>,
    /// The id of the next node the operator adds.
    next_node: u64,
    /// Where the true time of the run starts (the clocks' epoch).
    clock_epoch: Instant,
    /// node -> its clock (kept across restarts)
    clocks: BTreeMap<u64, Arc<NodeClock>>,
    /// the running nodes' stampers
    stampers: Stampers,
    refused_stamps: Arc<AtomicU64>,
    /// Nodes moved out whose removal completed while they were down.
    removed_while_down: usize,
    /// What shapes the Apps ([`AdmitShard::new`]).
    knobs: Knobs,
}

fn scratch() -> tempfile::TempDir {
    // tmpfs where there is one: a fsync costs nothing there
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(&shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

impl Sim {
    fn config(&self, id: u64) -> NodeConfig {
        let mut c = NodeConfig::new(id, self.dirs[&id].clone(), SHARDS);
        c.heartbeat = Duration::from_millis(50);
        c.election_timeout = (Duration::from_millis(200), Duration::from_millis(400));
        c.fsync = true;
        c.simulate_power_loss = true;
        c.inline_journal = true;
        c.advertise_addr = addr(id);
        if id <= NODES {
            c.peers = (1..=NODES).map(|i| (i, addr(i))).collect();
            c.bootstrap = true;
        } else {
            // added later: joins through the members, never bootstraps
            c.peers = self
                .members
                .iter()
                .chain([&id])
                .map(|i| (*i, addr(*i)))
                .collect();
            c.bootstrap = false;
        }
        c.replicas = NODES as usize;
        c.dialer = Some(Arc::new(SimDialer {
            net: self.net.clone(),
            me: id,
        }));
        c.reconcile_interval = Duration::from_millis(150);
        c.handoff_timeout = Duration::from_secs(1);
        c.write_timeout = Some(Duration::from_secs(2));
        c.startup_timeout = Duration::from_secs(10);
        c.snapshot_every = 40;
        c.keep_logs_after_snapshot = 8;
        c.purge_batch_size = 8;
        c
    }

    async fn new(knobs: Knobs) -> Sim {
        let mut sim = Sim {
            net: Arc::default(),
            root: scratch(),
            live: Arc::default(),
            servers: BTreeMap::new(),
            books: Arc::default(),
            members: (1..=NODES).collect(),
            dirs: BTreeMap::new(),
            next_node: NODES + 1,
            clock_epoch: Instant::now(),
            clocks: BTreeMap::new(),
            stampers: Arc::default(),
            refused_stamps: Arc::default(),
            removed_while_down: 0,
            knobs,
        };
        for id in 1..=NODES {
            sim.start(id).await;
        }
        sim
    }

    async fn start(&mut self, id: u64) {
        if let Err(e) = self.try_start(id).await {
            panic!("node {id} did not start: {e}");
        }
    }

    /// Starts `id` on its data dir; on a refusal nothing of the attempt
    /// stays (no listener, no replica state).
    async fn try_start(&mut self, id: u64) -> Result<(), String> {
        let root = self.root.path().to_path_buf();
        self.dirs
            .entry(id)
            .or_insert_with(|| root.join(format!("n{id}")));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.net.change(|s| {
            s.listeners.insert(id, tx);
        });
        let books = self.books.clone();
        let knobs = self.knobs;
        let factory = move |shard| {
            let app = AdmitShard::new(shard, knobs);
            lock(&books).insert((id, shard), app.clone());
            app
        };
        // A stopped node lets go of its journal by the time `crash`
        // returns: a restart that finds it in use is a failure (a task of
        // the last run still held the node; see `RaftNode::stop`).
        let node = match RaftNode::start(self.config(id), factory).await {
            Ok(n) => n,
            Err(e) if e.to_string().contains("in use") => {
                panic!("node {id} did not start: {e}")
            }
            Err(e) => {
                self.net.change(|s| {
                    s.listeners.remove(&id);
                });
                lock(&self.books).retain(|(n, _), _| *n != id);
                return Err(e.to_string());
            }
        };
        let svc = node.grpc_service();
        let server = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await;
        });
        self.servers.insert(id, server);
        let epoch = self.clock_epoch;
        let clock = self.clocks.entry(id).or_insert_with(|| {
            Arc::new(NodeClock {
                epoch,
                offset_ms: Default::default(),
                last: AtomicU64::new(0),
            })
        });
        let stamper = Stamper {
            clock: clock.clone(),
            skew: Arc::new(Skew::new(MAX_OFFSET, false)),
            refused: self.refused_stamps.clone(),
        };
        // admit learns the other nodes at its first clock round, one
        // round trip after start, long before it may win an election
        let others: Vec<u64> = self.members.iter().copied().filter(|m| *m != id).collect();
        stamper.skew.set_peers(&others);
        node.set_service_clock(Arc::new(stamper.clone()));
        lock(&self.stampers).insert(id, stamper);
        lock(&self.live).insert(id, node);
        Ok(())
    }

    /// The disk of `id` (down) is lost: its data dir is deleted, and it
    /// comes back on an empty one. (A new path: the crashed run may still
    /// hold files of the old one, see `try_start`.)
    fn wipe(&mut self, id: u64) {
        let old = self.dirs[&id].clone();
        let _ = std::fs::remove_dir_all(&old);
        let k = self.dirs.len();
        self.dirs
            .insert(id, self.root.path().join(format!("n{id}-wiped{k}")));
    }

    /// Takes `id` down: unreachable at once, then stopped without a
    /// hand-off; `power_cut` also loses what its journal did not fsync.
    async fn down(&mut self, id: u64, power_cut: bool) {
        let node = lock(&self.live).remove(&id).expect("node is up");
        lock(&self.stampers).remove(&id);
        self.net.change(|s| {
            s.listeners.remove(&id);
            for other in self.dirs.keys() {
                *s.generation.entry(pair(id, *other)).or_default() += 1;
            }
        });
        if power_cut {
            node.crash_unsynced().await.expect("power cut");
        } else {
            node.crash().await;
        }
        if let Some(s) = self.servers.remove(&id) {
            s.abort();
            let _ = s.await;
        }
        lock(&self.books).retain(|(n, _), _| *n != id);
    }

    /// Stops `id` for good with `shutdown` (its journal synced and closed),
    /// once the registry removed it; its data dir stays. Cut off first, as
    /// in [`Self::down`]: a removed node leads no group, so there is nothing
    /// to hand off, and a shutdown with its peers still connected took a
    /// varying time (a seed did not replay).
    async fn retire(&mut self, id: u64, seed: u64) {
        let node = lock(&self.live).remove(&id).expect("node is up");
        lock(&self.stampers).remove(&id);
        self.net.change(|s| {
            s.listeners.remove(&id);
            for other in self.dirs.keys() {
                *s.generation.entry(pair(id, *other)).or_default() += 1;
            }
        });
        if let Err(e) = node.shutdown().await {
            panic!("seed {seed}: node {id} did not shut down: {e}");
        }
        if let Some(s) = self.servers.remove(&id) {
            s.abort();
            let _ = s.await;
        }
        lock(&self.books).retain(|(n, _), _| *n != id);
    }

    /// What every running node sees of the registry and of each group, for
    /// a failure's message.
    fn views(&self) -> String {
        let nodes: Vec<Node> = lock(&self.live).values().cloned().collect();
        let mut out = String::new();
        for n in nodes {
            let reg: Vec<String> = n
                .nodes()
                .iter()
                .map(|c| format!("{}:{:?}", c.id, c.state))
                .collect();
            out += &format!("node {} registry [{}]\n", n.node_id(), reg.join(" "));
            for i in n.shard_infos().into_iter().chain([n.meta_info()]) {
                out += &format!(
                    "  group {} leader {:?} term {} voters {:?} learners {:?} changing {} \
                     log {:?} committed {:?} applied {:?} target {:?} replicas {:?}\n",
                    i.shard,
                    i.leader,
                    i.term,
                    i.voters,
                    i.learners,
                    i.changing,
                    i.last_log_index,
                    i.committed,
                    i.applied,
                    i.target,
                    i.replicas
                );
            }
        }
        out
    }

    /// The true time now, on the clocks' scale.
    fn true_ms(&self) -> u64 {
        true_ms(self.clock_epoch)
    }

    fn up(&self) -> Vec<u64> {
        lock(&self.live).keys().copied().collect()
    }

    /// Every replica's state now: (node, shard, book).
    fn books(&self) -> Vec<(u64, u32, Book)> {
        lock(&self.books)
            .iter()
            .map(|((n, s), app)| (*n, *s, lock(&app.book).clone()))
            .collect()
    }

    async fn stop(mut self) {
        let ids = self.up();
        for id in ids {
            let node = lock(&self.live).remove(&id).unwrap();
            let _ = node.shutdown().await;
            if let Some(s) = self.servers.remove(&id) {
                s.abort();
            }
        }
    }
}

// -------------------------------------------------------------- history

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Answer {
    Admitted(bool),
    /// The caller gave up: the id may or may not have been decided.
    Unknown,
}

#[derive(Debug, Clone, Hash)]
struct Call {
    id: u64,
    scope: u32,
    /// (an event is answered `Admitted(true)` once applied)
    op: Op,
    customer: u64,
    asked_ms: u64,
    answered_ms: u64,
    answer: Answer,
    /// Writes tried (a node asked to propose it); more than one may leave
    /// a copy that is applied after the answer.
    attempts: u32,
}

#[derive(Debug, Clone, Hash)]
struct Read {
    node: u64,
    scope: u32,
    at_ms: u64,
    admitted: usize,
}

#[derive(Default)]
struct History {
    calls: Vec<Call>,
    reads: Vec<Read>,
    /// faults and other events, with their virtual time
    events: Vec<String>,
}

/// Admits `id` through `entry`, following leader hints and retrying
/// through the other nodes until answered or [`PATIENCE`] runs out.
async fn call(
    (live, stampers): (Live, Stampers),
    (epoch, clock_epoch): (Instant, Instant),
    mut entry: u64,
    scope: u32,
    (id, customer, op): (u64, u64, Op),
) -> Call {
    let asked = Instant::now();
    let ms = |t: Instant| t.duration_since(epoch).as_millis() as u64;
    let mut answer = Answer::Unknown;
    let mut attempts = 0;
    while asked.elapsed() < PATIENCE {
        let (node, next) = {
            let l = lock(&live);
            // the next running node after `entry`, round the ring
            let next = l.range(entry + 1..).chain(l.iter()).next();
            (l.get(&entry).cloned(), next.map_or(entry, |(id, _)| *id))
        };
        let Some(node) = node else {
            entry = next;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shard = shard_of(scope);
        // stamped by the node it is proposed on (a follower's stamp goes
        // nowhere: it answers with the leader's id)
        let stamper = lock(&stampers).get(&entry).cloned();
        let Some(at) = stamper.and_then(|s| s.stamp()) else {
            // its clock is beyond the bound: admit answers UNAVAILABLE
            drop(node);
            entry = next;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let cmd = Admit {
            scope,
            id,
            customer,
            op,
            at,
            true_ms: true_ms(clock_epoch),
        };
        attempts += 1;
        let r = tokio::time::timeout(ATTEMPT, node.write(shard, cmd)).await;
        drop(node);
        match r {
            Ok(Ok(ok)) => {
                answer = Answer::Admitted(ok);
                break;
            }
            Ok(Err(WriteError::ForwardToLeader {
                leader_id: Some(l), ..
            })) if l != entry => {
                // two stale hints may point at each other: a hop costs no
                // virtual time, so pause or the clock never moves
                entry = l;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(Err(_)) | Err(_) => {
                entry = next;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Call {
        id,
        scope,
        op,
        customer,
        asked_ms: ms(asked),
        answered_ms: ms(Instant::now()),
        answer,
        attempts,
    }
}

// ------------------------------------------------------------------ a run

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// bytes from .0 to .1 held
    Hold(u64, u64),
    /// both ways between two nodes
    Split(u64, u64),
    /// a node cut off from every other member
    Isolate(u64),
    Reset(u64, u64),
    Crash(u64),
    PowerCut(u64),
    /// the leader of shard .0 hands its leadership to .1 (at once, racing
    /// the other faults)
    Transfer(u32, u64),
    /// a crash that loses the data dir: when it ends the node starts again
    /// on an empty one under its id, which admit must refuse, and the
    /// operator replaces it by a new node ([`Replacing`])
    LoseDisk(u64),
    /// a running member moves out with its disk kept: the operator adds a
    /// new node, then removes this one, which runs until the registry says
    /// `Removed` and is then stopped for good ([`Moving`])
    Move(u64),
}

struct Outcome {
    digest: u64,
    calls: usize,
    answered: usize,
    faults: usize,
    transfers: usize,
    lost_disks: usize,
    moves: usize,
    /// crashes and power cuts of a node while it was being moved out
    leaving_stops: usize,
    /// nodes moved out that were removed while down (a crash while leaving)
    removed_while_down: usize,
    clock_faults: usize,
    refused_stamps: u64,
    /// STOP messages asked, and sends to customers whose STOP was answered
    stops: usize,
    to_stopped: usize,
    /// events disabling a template
    disables: usize,
    /// account restrictions and lifts
    restrictions: usize,
    lifts: usize,
    /// limit changes (halved, restored), and sends refused only because
    /// the limit was lowered
    limit_changes: usize,
    refused_lowered: u64,
    /// releases asked (and reports, DELIVERED or FAILED); admissions given
    /// back; releases and FAILED reports that found none
    releases: usize,
    reports: usize,
    /// Meta's FAILED statuses applied by the sender's later SENT report
    early_applied: u64,
    released: usize,
    releases_void: u64,
    /// waits for the next tier that ended in an upgrade, and without one
    /// (R5.3)
    upgrades: u64,
    upgrades_failed: u64,
    /// the portfolio's second number's sends ([`Op::Also`]), and those
    /// admitted without counting (the customer was counted already)
    also: usize,
    also_uncounted: usize,
    /// FAILED reports with a code of section 9, sends again to a customer
    /// ([`Op::Again`]), sends a hold or back-off denied, and sends admitted
    /// through an open conversation
    coded: usize,
    again: usize,
    hold_denials: u64,
    through_open: usize,
    /// Meta's quality ratings, R5.5's downgrades and recoveries
    ratings: usize,
    downgrades: u64,
    recoveries: u64,
}

fn links_of(f: Fault, members: &[u64]) -> Vec<(u64, u64)> {
    match f {
        Fault::Hold(a, b) => vec![(a, b)],
        Fault::Split(a, b) => vec![(a, b), (b, a)],
        Fault::Isolate(n) => members
            .iter()
            .filter(|o| **o != n)
            .flat_map(|o| [(n, *o), (*o, n)])
            .collect(),
        _ => vec![],
    }
}

/// A fault in force: (ends at, the fault, the links it holds).
type Active = (Instant, Fault, Vec<(u64, u64)>);

/// A node whose disk was lost, from its restart on an empty data dir until
/// the operator's replacement is in the registry; it counts as down.
enum Replacing {
    /// The wiped node started (no peer answered its probe in time): it
    /// must end refused (asked again, or by the registry); then it is taken
    /// down.
    Refusing { lost: u64, since: Instant },
    /// The operator removes `lost` and adds `joining` (which runs).
    Operator {
        lost: u64,
        joining: u64,
        op: JoinHandle<Result<(), String>>,
    },
}

/// A member moving out (it keeps its disk and runs meanwhile, unless a
/// crash or power cut takes it down for a while).
enum Moving {
    /// The operator adds `joining` (which runs), then removes `leaving`.
    Operator {
        leaving: u64,
        joining: u64,
        op: JoinHandle<Result<(), String>>,
    },
    /// Both done: the reconcile loops move `leaving`'s replicas away; once a
    /// registry says it is `Removed`, it is stopped (cleanly) for good.
    Draining { leaving: u64, since: Instant },
}

impl Moving {
    fn leaving(&self) -> u64 {
        match self {
            Moving::Operator { leaving, .. } | Moving::Draining { leaving, .. } => *leaving,
        }
    }
}

/// How long a wiped node that started may take to end refused.
const REFUSE_BOUND: Duration = Duration::from_secs(30);
/// How long the operator's remove and add may take (each retried).
const OPERATOR_PATIENCE: Duration = Duration::from_secs(60);
/// How long a leaving node's replicas may take to move away (from the end
/// of the operator's calls until a registry says `Removed`).
const DRAIN_BOUND: Duration = Duration::from_secs(60);
/// The refusal of a node whose data dir was lost starts with this
/// (`admit_raft::cluster::LOST_DIR`).
const LOST_DIR: &str = "data dir lost";

impl Sim {
    /// Ends fault `f` (holding `links`): a node down comes back; a lost
    /// disk's replacement starts.
    async fn end(
        &mut self,
        f: Fault,
        links: Vec<(u64, u64)>,
        seed: u64,
    ) -> Option<(Replacing, String)> {
        match f {
            // a node moved out while it was down stays down (its restart
            // on the kept disk is refused: checked at the end of the run)
            Fault::Crash(n) | Fault::PowerCut(n) if !self.members.contains(&n) => {}
            Fault::Crash(n) | Fault::PowerCut(n) => self.start(n).await,
            Fault::LoseDisk(n) => return Some(self.restart_wiped(n, seed).await),
            _ => self.net.change(|s| {
                for l in links {
                    s.held.remove(&l);
                }
            }),
        }
        None
    }

    /// `n`'s disk was lost: start it on an empty data dir under its old id.
    /// admit must refuse it: at once when a peer answers the probe, else
    /// later ([`Replacing::Refusing`]).
    async fn restart_wiped(&mut self, n: u64, seed: u64) -> (Replacing, String) {
        self.wipe(n);
        match self.try_start(n).await {
            Err(e) => {
                assert!(
                    e.contains(LOST_DIR),
                    "seed {seed}: node {n} on a wiped data dir failed to start, but not as lost: {e}"
                );
                let r = self.replace(n).await;
                (r, format!("node {n} on a wiped dir: refused at start"))
            }
            Ok(()) => (
                Replacing::Refusing {
                    lost: n,
                    since: Instant::now(),
                },
                format!("node {n} on a wiped dir: started, not registered"),
            ),
        }
    }

    /// The operator's remedy: a new node on a new data dir, then (in a
    /// task) `remove_node(lost)` and `add_node(new)`.
    async fn replace(&mut self, lost: u64) -> Replacing {
        let joining = self.next_node;
        self.next_node += 1;
        self.start(joining).await;
        let steps = vec![Step::Remove(lost), Step::Add(joining)];
        let op = tokio::spawn(operator(self.live.clone(), steps, [lost, joining]));
        Replacing::Operator { lost, joining, op }
    }

    /// The operator moves `leaving` (running, its disk kept) out: a new node
    /// on a new data dir, then (in a task) `add_node(new)` and
    /// `remove_node(leaving)`.
    async fn start_move(&mut self, leaving: u64) -> (Moving, u64) {
        let joining = self.next_node;
        self.next_node += 1;
        self.start(joining).await;
        let steps = vec![Step::Add(joining), Step::Remove(leaving)];
        let op = tokio::spawn(operator(self.live.clone(), steps, [leaving, joining]));
        let m = Moving::Operator {
            leaving,
            joining,
            op,
        };
        (m, joining)
    }

    /// One step of a move: the next state and what happened.
    async fn advance_move(&mut self, m: Moving, seed: u64) -> (Option<Moving>, Option<String>) {
        match m {
            Moving::Operator {
                leaving,
                joining,
                op,
            } if op.is_finished() => {
                if let Err(e) = op.await.expect("operator task") {
                    panic!("seed {seed}: {e}");
                }
                // the new node is a target of faults and load from now on
                self.members.push(joining);
                self.members.sort_unstable();
                let m = Moving::Draining {
                    leaving,
                    since: Instant::now(),
                };
                let ev = format!("node {joining} added, node {leaving} leaving");
                (Some(m), Some(ev))
            }
            m @ Moving::Operator { .. } => (Some(m), None),
            Moving::Draining { leaving, since } => {
                let removed = lock(&self.live)
                    .iter()
                    .filter(|(id, _)| **id != leaving)
                    .any(|(_, n)| {
                        n.nodes()
                            .iter()
                            .any(|c| c.id == leaving && c.state == admit_raft::NodeState::Removed)
                    });
                if !removed {
                    assert!(
                        since.elapsed() <= DRAIN_BOUND,
                        "seed {seed}: node {leaving} leaving, not removed within {} s\n{}",
                        DRAIN_BOUND.as_secs(),
                        self.views()
                    );
                    return (Some(Moving::Draining { leaving, since }), None);
                }
                self.members.retain(|m| *m != leaving);
                if !lock(&self.live).contains_key(&leaving) {
                    // it crashed while leaving and is still down
                    self.removed_while_down += 1;
                    return (None, Some(format!("node {leaving} removed while down")));
                }
                self.retire(leaving, seed).await;
                (None, Some(format!("node {leaving} removed: stopping")))
            }
        }
    }

    /// One step of the run's lost-disk replacement and of its move, each
    /// event handed to `log` with its time.
    async fn advance_changes(
        &mut self,
        replacing: &mut Option<Replacing>,
        moving: &mut Option<Moving>,
        seed: u64,
        log: impl Fn(Instant, String),
    ) {
        if let Some(r) = replacing.take() {
            let (r, what) = self.advance(r, seed).await;
            *replacing = r;
            if let Some(what) = what {
                log(Instant::now(), what);
            }
        }
        if let Some(m) = moving.take() {
            let at = Instant::now();
            let (m, what) = self.advance_move(m, seed).await;
            *moving = m;
            if let Some(what) = what {
                // when it began: the length of a shutdown varies by a few
                // ms of virtual time from run to run
                log(at, what);
            }
        }
    }

    /// One step of a replacement: the next state and what happened.
    async fn advance(&mut self, r: Replacing, seed: u64) -> (Option<Replacing>, Option<String>) {
        match r {
            Replacing::Refusing { lost, since } => {
                let node = lock(&self.live)
                    .get(&lost)
                    .cloned()
                    .expect("wiped node runs");
                match node.registration() {
                    admit_raft::Registration::Refused(why) => {
                        assert!(why.contains(LOST_DIR), "seed {seed}: refused as {why}");
                        drop(node);
                        self.down(lost, false).await;
                        let r = self.replace(lost).await;
                        let ev = format!("node {lost} on a wiped dir: refused by the registry");
                        (Some(r), Some(ev))
                    }
                    admit_raft::Registration::Done => panic!(
                        "seed {seed}: node {lost} on a wiped data dir registered under its old id"
                    ),
                    admit_raft::Registration::Pending => {
                        assert!(
                            since.elapsed() <= REFUSE_BOUND,
                            "seed {seed}: node {lost} on a wiped data dir not refused within {} s",
                            REFUSE_BOUND.as_secs()
                        );
                        (Some(Replacing::Refusing { lost, since }), None)
                    }
                }
            }
            Replacing::Operator { lost, joining, op } if op.is_finished() => {
                if let Err(e) = op.await.expect("operator task") {
                    panic!("seed {seed}: {e}");
                }
                self.members.retain(|m| *m != lost);
                self.members.push(joining);
                self.members.sort_unstable();
                (None, Some(format!("node {joining} replaces node {lost}")))
            }
            r @ Replacing::Operator { .. } => (Some(r), None),
        }
    }
}

/// One call of the operator.
#[derive(Debug, Clone, Copy)]
enum Step {
    Add(u64),
    Remove(u64),
}

/// The operator carries out `steps` in order (`add_node`, `remove_node`)
/// through the running nodes but `avoid` in turn, each retried until done.
async fn operator(live: Live, steps: Vec<Step>, avoid: [u64; 2]) -> Result<(), String> {
    let deadline = Instant::now() + OPERATOR_PATIENCE;
    let mut done = 0;
    for attempt in 0usize.. {
        let Some(step) = steps.get(done).copied() else {
            return Ok(());
        };
        let via = {
            let l = lock(&live);
            let c: Vec<&Node> = l
                .iter()
                .filter(|(id, _)| !avoid.contains(id))
                .map(|(_, n)| n)
                .collect();
            (!c.is_empty()).then(|| c[attempt % c.len()].clone())
        };
        let r = match (via, step) {
            (None, _) => Err("no node runs".to_string()),
            (Some(via), Step::Add(id)) => {
                via.add_node(id, &addr(id)).await.map_err(|e| e.to_string())
            }
            (Some(via), Step::Remove(id)) => via.remove_node(id).await.map_err(|e| e.to_string()),
        };
        match r {
            Ok(()) => done += 1,
            Err(e) if Instant::now() > deadline => {
                return Err(format!(
                    "operator: {step:?} (of {steps:?}) failed until the end: {e}"
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    unreachable!()
}

/// The invariants that hold at every step: no replica holds more than the
/// limit in a scope, and two replicas of a shard never disagree (one's
/// decisions are a prefix of the other's).
fn check_step(books: &[(u64, u32, Book)], at_ms: u64, true_ms: u64, seed: u64) {
    for (n, s, b) in books {
        assert!(
            b.disagreements.is_empty(),
            "seed {seed}, {at_ms} ms: node {n} shard {s}: admit's engine decided otherwise than the rule: {:?}",
            b.disagreements
        );
        for scope in b.admitted.keys() {
            assert!(
                b.held(*scope) <= b.cap(*scope),
                "seed {seed}, {at_ms} ms: node {n} shard {s} scope {scope} holds {} > {}",
                b.held(*scope),
                b.cap(*scope)
            );
        }
        // no stamp ran the engine's time further ahead of the true time
        // than the bound on the clocks allows (issue 11, item 2)
        let ahead = b.now_ms.saturating_sub(true_ms);
        assert!(
            ahead <= MAX_OFFSET.as_millis() as u64 + CLOCK_SLACK_MS,
            "seed {seed}, {at_ms} ms: node {n} shard {s}'s engine time runs {ahead} ms ahead of the true time"
        );
    }
    for (i, (n1, s1, b1)) in books.iter().enumerate() {
        for (n2, s2, b2) in &books[i + 1..] {
            if s1 != s2 {
                continue;
            }
            for (scope, o1) in &b1.order {
                let o2 = b2.order.get(scope).map(Vec::as_slice).unwrap_or(&[]);
                let k = o1.len().min(o2.len());
                assert_eq!(
                    &o1[..k],
                    &o2[..k],
                    "seed {seed}, {at_ms} ms: nodes {n1} and {n2} decided scope {scope} differently"
                );
            }
        }
    }
}

async fn run(seed: u64, knobs: Knobs) -> Outcome {
    admit_raft::seed_draws(seed);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut sim = Sim::new(knobs).await;
    let epoch = Instant::now();
    let ms = |t: Instant| t.duration_since(epoch).as_millis() as u64;
    let history = Arc::new(Mutex::new(History::default()));
    let next_id = AtomicU64::new(1);
    // the opt-outs' draws, and scope -> the customers whose STOP was answered
    let mut orng = Rng(seed.wrapping_mul(0x1656_67b1_9e37_79f9) | 1);
    let stopped: Arc<Mutex<BTreeMap<u32, Vec<u64>>>> = Arc::default();
    // scope -> sends answered admitted on their one attempt (what a
    // release may name)
    let once: Arc<Mutex<BTreeMap<u32, Vec<u64>>>> = Arc::default();
    // the admissions an [`Op::Also`] named
    let also_used: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let mut callers: Vec<JoinHandle<()>> = Vec::new();
    let mut active: Vec<Active> = Vec::new();
    let mut next_fault = epoch + Duration::from_millis(300 + rng.below(500));
    let (mut faults, mut transfers, mut leaving_stops) = (0, 0, 0);
    // a lost disk or a move is slow (replicas move, a new node catches
    // up): at most one of them a run
    let mut changes_left = 1;
    let moves_on = knobs.moves;
    let mut lost: Vec<u64> = Vec::new();
    let mut replacing: Option<Replacing> = None;
    let mut moved: Vec<u64> = Vec::new();
    let mut moving: Option<Moving> = None;
    // clock faults draw from a generator of their own, so the other
    // faults of a seed are drawn as without them
    let mut crng = Rng(seed.wrapping_mul(0xc2b2_ae3d_27d4_eb4f) | 1);
    let mut next_clock = epoch + Duration::from_millis(200 + crng.below(800));
    let mut clock_fault: Option<(Instant, u64)> = None;
    let mut clock_faults = 0;
    let bad_clock = 1 + crng.below(NODES);
    let mut t = epoch;
    let verbose = std::env::var("ADMIT_SIM_EVENTS").is_ok();
    let log = |h: &Arc<Mutex<History>>, at: Instant, what: String| {
        let line = format!("{} {what}", ms(at));
        if verbose {
            println!("seed {seed}: {line}");
        }
        lock(h).events.push(line);
    };

    let run_for = run_time();
    while t.duration_since(epoch) < run_for {
        t += Duration::from_millis(5);
        tokio::time::sleep_until(t).await;
        let now = Instant::now();

        // faults that end now
        let mut i = 0;
        while i < active.len() {
            if active[i].0 > now {
                i += 1;
                continue;
            }
            let (_, f, links) = active.remove(i);
            log(&history, now, format!("end {f:?}"));
            if let Some((r, what)) = sim.end(f, links, seed).await {
                log(&history, Instant::now(), what);
                replacing = Some(r);
            }
        }
        // a lost disk's replacement, a move
        sim.advance_changes(&mut replacing, &mut moving, seed, |at, what| {
            log(&history, at, what)
        })
        .await;

        // a new fault
        if now >= next_fault {
            let k = sim.members.len() as u64;
            let i = rng.below(k);
            let a = sim.members[i as usize];
            let b = sim.members[((i + 1 + rng.below(k - 1)) % k) as usize];
            let lasts = Duration::from_millis(100 + rng.below(1_500));
            let someone_down = replacing.is_some()
                || active.iter().any(|(_, f, _)| {
                    matches!(f, Fault::Crash(_) | Fault::PowerCut(_) | Fault::LoseDisk(_))
                });
            // a leaving node may crash or lose power (then it is the one
            // node down); it comes back on its disk and drains on, or,
            // removed meanwhile, stays down
            let may_stop = !someone_down
                && (knobs.crash_leaving || moving.as_ref().map(Moving::leaving) != Some(a));
            let f = match rng.below(9) {
                0 => Fault::Hold(a, b),
                1 => Fault::Split(a, b),
                2 => Fault::Isolate(a),
                3 => Fault::Reset(a, b),
                4 | 5 if may_stop => {
                    let (num, den) = knobs.change_odds;
                    if changes_left > 0 && rng.below(den) < num {
                        changes_left -= 1;
                        // without moves, no draw here: the schedules of
                        // the seeds stay as they were
                        if moves_on && rng.below(2) == 1 {
                            Fault::Move(a)
                        } else {
                            Fault::LoseDisk(a)
                        }
                    } else {
                        Fault::Crash(a)
                    }
                }
                6 if may_stop => Fault::PowerCut(a),
                // to `b`, or `a` if `b` leads
                7 | 8 => Fault::Transfer(rng.below(SHARDS as u64) as u32, b),
                _ => Fault::Hold(b, a),
            };
            faults += 1;
            if let Fault::Crash(n) | Fault::PowerCut(n) = f {
                if moving.as_ref().map(Moving::leaving) == Some(n) {
                    leaving_stops += 1;
                }
            }
            let links = links_of(f, &sim.members);
            match f {
                Fault::Reset(a, b) => sim.net.reset(a, b),
                Fault::Crash(n) => sim.down(n, false).await,
                Fault::PowerCut(n) | Fault::LoseDisk(n) => sim.down(n, true).await,
                Fault::Transfer(shard, to) => {
                    // whoever leads the shard now hands it to another member
                    let nodes: Vec<Node> = lock(&sim.live).values().cloned().collect();
                    let leader = nodes
                        .into_iter()
                        .find(|n| n.leader(shard) == Some(n.node_id()));
                    let what = match leader {
                        None => format!("{f:?}: no leader"),
                        Some(l) => {
                            let to = if to == l.node_id() { a } else { to };
                            transfers += 1;
                            let r = tokio::time::timeout(
                                Duration::from_secs(1),
                                l.transfer_leader(shard, to),
                            )
                            .await;
                            let r = match r {
                                Ok(Ok(())) => "asked",
                                Ok(Err(_)) => "refused",
                                Err(_) => "no answer",
                            };
                            format!("Transfer({shard}, {to}) from {}: {r}", l.node_id())
                        }
                    };
                    log(&history, now, what);
                }
                Fault::Move(n) => {
                    let (m, joining) = sim.start_move(n).await;
                    moving = Some(m);
                    moved.push(n);
                    log(&history, now, format!("{f:?}: node {joining} started"));
                }
                _ => sim.net.change(|s| s.held.extend(links.iter().copied())),
            }
            if !matches!(f, Fault::Transfer(..) | Fault::Move(..)) {
                log(&history, now, format!("{f:?} for {} ms", lasts.as_millis()));
            }
            if let Fault::LoseDisk(n) = f {
                lost.push(n);
            }
            if !matches!(f, Fault::Reset(..) | Fault::Transfer(..) | Fault::Move(..)) {
                active.push((now + lasts, f, links));
            }
            next_fault = now + Duration::from_millis(200 + rng.below(900));
        }

        // a clock off: ahead beyond the bound, ahead within it, or behind;
        // always the same node's, so a majority keeps the true time (a
        // sample of a clock that was off stays in the others' views for
        // a while: two nodes taking turns would make two wrong clocks)
        if let Some((end, n)) = clock_fault.filter(|(end, _)| now >= *end) {
            let _ = end;
            sim.clocks[&n].offset_ms.store(0, Ordering::Relaxed);
            log(&history, now, format!("end Clock({n})"));
            clock_fault = None;
        }
        // (a clock set back reads its latest value until the true time
        // catches up: until then it is off too)
        let clocks_true = sim.clocks.values().all(|c| c.now_ms() <= sim.true_ms());
        if knobs.clocks
            && clock_fault.is_none()
            && clocks_true
            && now >= next_clock
            && sim.members.contains(&bad_clock)
        {
            let n = bad_clock;
            let max = MAX_OFFSET.as_millis() as u64;
            let far = (max * 3 / 2 + crng.below(3_000)) as i64;
            let offset = match crng.below(3) {
                0 => far,
                1 => 1 + crng.below(max / 2) as i64,
                _ => -far,
            };
            let lasts = Duration::from_millis(100 + crng.below(1_500));
            if let Some(c) = sim.clocks.get(&n) {
                c.offset_ms.store(offset, Ordering::Relaxed);
                log(
                    &history,
                    now,
                    format!("Clock({n}, {offset:+} ms) for {} ms", lasts.as_millis()),
                );
                clock_fault = Some((now + lasts, n));
                clock_faults += 1;
            }
            next_clock = now + Duration::from_millis(300 + crng.below(1_200));
        }

        // load: an admission every fourth step (50/s), a fast-path read
        // every third
        let k = sim.members.len() as u64;
        if rng.below(4) == 0 {
            let scope = rng.below(SCOPES as u64) as u32;
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let entry = sim.members[rng.below(k) as usize];
            // one call in six is a new customer's STOP (half of them by
            // Meta's event), one in forty disables the template `alert`;
            // one send in three is of `alert`, one in four goes to a
            // customer whose STOP was answered before (from a generator of
            // their own, so the rest of a seed is as drawn before)
            let op = match orng.below(120) {
                0..20 => Op::Stop {
                    platform: orng.below(2) == 0,
                },
                20..23 => Op::DisableAlert,
                // one in forty restricts the number, one in forty lifts it
                23..26 if knobs.restrictions => Op::Restrict,
                26..29 if knobs.restrictions => Op::Lift,
                // one in forty halves the limit, one in forty restores it
                29..32 if knobs.limits => Op::SetLimit { low: true },
                32..35 if knobs.limits => Op::SetLimit { low: false },
                // one in forty gives back an admission answered before, one
                // in twenty reports how one's message ended (DELIVERED or
                // FAILED); all of one of the scope's last four admissions,
                // so that they meet
                // (and one in forty the sender's SENT report naming the
                // message id, one in forty Meta's status naming only it)
                r @ 35..50 if knobs.releases => match lock(&once).get(&scope) {
                    Some(ids) => {
                        let of = ids[ids.len() - 1 - orng.below(ids.len().min(4) as u64) as usize];
                        match r {
                            35..38 => Op::Release { of },
                            38..44 => Op::Report {
                                of,
                                delivered: orng.below(2) == 0,
                                code: None,
                            },
                            44..47 => Op::Sent { of },
                            _ => Op::Meta {
                                of,
                                delivered: orng.below(2) == 0,
                            },
                        }
                    }
                    None => Op::Send {
                        alert: orng.below(3) == 0,
                    },
                },
                // in the portfolio, one in ten: the second number writes to
                // a customer of one of the first's last four admissions
                // (once each, so that it opens a conversation)
                50..62 if knobs.portfolios && scope == PORTFOLIO => {
                    let ids = lock(&once).get(&scope).cloned().unwrap_or_default();
                    let mut used = lock(&also_used);
                    match ids.iter().rev().take(4).find(|of| !used.contains(*of)) {
                        Some(of) => {
                            used.insert(*of);
                            Op::Also { of: *of }
                        }
                        None => Op::Send {
                            alert: orng.below(3) == 0,
                        },
                    }
                }
                // one in twenty: a FAILED report with one of section 9's
                // codes; one in twenty: a send again to the customer of one
                // of the scope's last four admissions
                // on the climbing number, one in ten: Meta's quality
                // rating, Low or High (R5.5)
                74..86 if knobs.flags && knobs.upgrades && scope == UPGRADING => Op::Quality {
                    low: orng.below(2) == 0,
                },
                r @ 62..74 if knobs.holds => match lock(&once).get(&scope) {
                    Some(ids) => {
                        let of = ids[ids.len() - 1 - orng.below(ids.len().min(4) as u64) as usize];
                        if r < 68 {
                            let codes = [MARKETING_LIMIT, SPAM_RATE, PAIR_RATE, THROUGHPUT];
                            Op::Report {
                                of,
                                delivered: false,
                                code: Some(codes[orng.below(4) as usize]),
                            }
                        } else {
                            Op::Again { of }
                        }
                    }
                    None => Op::Send {
                        alert: orng.below(3) == 0,
                    },
                },
                _ => Op::Send {
                    alert: orng.below(3) == 0,
                },
            };
            let customer = match (op, lock(&stopped).get(&scope)) {
                (Op::Also { of } | Op::Again { of }, _) => of,
                (Op::Send { .. }, Some(c)) if orng.below(4) == 0 => {
                    c[orng.below(c.len() as u64) as usize]
                }
                _ => id,
            };
            let nodes = (sim.live.clone(), sim.stampers.clone());
            let (epochs, h) = ((epoch, sim.clock_epoch), history.clone());
            let (stopped, once) = (stopped.clone(), once.clone());
            callers.push(tokio::spawn(async move {
                let c = call(nodes, epochs, entry, scope, (id, customer, op)).await;
                if matches!(op, Op::Stop { .. }) && c.answer != Answer::Unknown {
                    lock(&stopped).entry(scope).or_default().push(customer);
                }
                // (the first number's: releases and reports name them)
                if matches!(op, Op::Send { .. })
                    && c.answer == Answer::Admitted(true)
                    && c.attempts == 1
                {
                    lock(&once).entry(scope).or_default().push(id);
                }
                lock(&h).calls.push(c);
            }));
        }
        if rng.below(3) == 0 {
            let scope = rng.below(SCOPES as u64) as u32;
            let n = sim.members[rng.below(k) as usize];
            let node = lock(&sim.live).get(&n).cloned();
            if let Some(node) = node {
                if node.is_leader_with_lease(shard_of(scope)) {
                    let book = lock(&sim.books).get(&(n, shard_of(scope))).cloned();
                    if let Some(book) = book {
                        // admit's lock-free reader where the engine counts
                        // all run, the Book where admissions age out
                        let admitted = match book.engine_used(scope) {
                            Some(used) if !windowed(scope) => used as usize,
                            _ => lock(&book.book).admitted.get(&scope).map_or(0, Vec::len),
                        };
                        lock(&history).reads.push(Read {
                            node: n,
                            scope,
                            at_ms: ms(now),
                            admitted,
                        });
                    }
                }
            }
        }
        check_step(&sim.books(), ms(now), sim.true_ms(), seed);
    }

    // heal: end every fault, bring every node back, finish a replacement
    // or a move
    sim.net.change(|s| s.held.clear());
    for c in sim.clocks.values() {
        c.offset_ms.store(0, Ordering::Relaxed);
    }
    for (_, f, links) in std::mem::take(&mut active) {
        if let Some((r, what)) = sim.end(f, links, seed).await {
            log(&history, Instant::now(), what);
            replacing = Some(r);
        }
    }
    while replacing.is_some() || moving.is_some() {
        sim.advance_changes(&mut replacing, &mut moving, seed, |at, what| {
            log(&history, at, what)
        })
        .await;
        if replacing.is_some() || moving.is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        check_step(&sim.books(), ms(Instant::now()), sim.true_ms(), seed);
    }
    let healed = Instant::now();
    log(&history, healed, "healed".into());
    for c in callers {
        c.await.unwrap();
    }
    // every shard led, with a lease, within the bound after healing
    loop {
        let nodes: Vec<Node> = lock(&sim.live).values().cloned().collect();
        let led = (0..SHARDS).all(|s| nodes.iter().any(|n| n.is_leader_with_lease(s)));
        if led {
            break;
        }
        assert!(
            healed.elapsed() <= HEAL_BOUND,
            "seed {seed}: a shard has no leader {} ms after healing",
            HEAL_BOUND.as_millis()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // the membership follows the registry: every group's voters are the
    // members, the id of a lost or moved node is retired
    let members: BTreeSet<u64> = sim.members.iter().copied().collect();
    let gone: Vec<u64> = lost.iter().chain(&moved).copied().collect();
    loop {
        let nodes: Vec<Node> = lock(&sim.live).values().cloned().collect();
        let placed = |g: u32, n: &Node| {
            let i = if g == SHARDS {
                n.meta_info()
            } else {
                n.shard_infos().swap_remove(g as usize)
            };
            i.is_leader_view() && !i.changing && i.voters == members && i.learners.is_empty()
        };
        let settled = (0..=SHARDS).all(|g| nodes.iter().any(|n| placed(g, n)))
            && nodes.iter().all(|n| {
                let reg = n.nodes();
                gone.iter().all(|l| {
                    reg.iter()
                        .any(|c| c.id == *l && c.state == admit_raft::NodeState::Removed)
                })
            });
        if settled {
            break;
        }
        assert!(
            healed.elapsed() <= HEAL_BOUND * 3,
            "seed {seed}: membership not settled on {members:?} (lost: {lost:?}, moved: {moved:?}) {} ms after healing",
            (HEAL_BOUND * 3).as_millis()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // a moved node restarted on its kept disk is refused: its id is
    // `Removed` in the registry, and its groups' logs are stale
    for n in &moved {
        match sim.try_start(*n).await {
            Err(e) if e.contains("node removed") => log(
                &history,
                Instant::now(),
                format!("node {n} restarted on its kept disk: refused"),
            ),
            Err(e) => panic!("seed {seed}: node {n}, moved out, restarted on its kept disk: {e}"),
            Ok(()) => {
                panic!("seed {seed}: node {n}, moved out, restarted on its kept disk and runs")
            }
        }
    }
    // the leaders' state, once each has applied all it committed
    let mut finals: BTreeMap<u32, Book> = BTreeMap::new();
    for s in 0..SHARDS {
        loop {
            let nodes: Vec<Node> = lock(&sim.live).values().cloned().collect();
            let mut got = None;
            for n in &nodes {
                if n.ensure_linearizable(s).await.is_ok() {
                    let app = lock(&sim.books).get(&(n.node_id(), s)).cloned();
                    if let Some(app) = &app {
                        // admit's state, however it got there (snapshots,
                        // restarts), counts what the rule holds
                        let b = lock(&app.book).clone();
                        for scope in (0..SCOPES).filter(|c| shard_of(*c) == s) {
                            assert_eq!(
                                app.engine_used(scope),
                                Some(b.held(scope) as u32),
                                "seed {seed}: node {}'s engine counts otherwise than the rule in scope {scope}",
                                n.node_id()
                            );
                            // (a wait due by the shard's time ended there:
                            // the reader settles it as the writer will)
                            assert_eq!(
                                app.engine_limit(scope),
                                Some(Limit::Capped(b.limit_at(scope, b.now_ms) as u32)),
                                "seed {seed}: node {}'s engine holds another limit than the last set in scope {scope}",
                                n.node_id()
                            );
                        }
                        got = Some(b);
                    }
                    break;
                }
            }
            if let Some(b) = got {
                finals.insert(s, b);
                break;
            }
            assert!(
                healed.elapsed() <= HEAL_BOUND * 4,
                "seed {seed}: shard {s} gives no linearizable read after healing"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    check_step(&sim.books(), ms(Instant::now()), sim.true_ms(), seed);

    let h = std::mem::take(&mut *lock(&history));
    check_history(&h, &finals, seed);
    let mut digest = DefaultHasher::new();
    let mut calls = h.calls.clone();
    calls.sort_by_key(|c| c.id);
    calls.hash(&mut digest);
    h.reads.hash(&mut digest);
    h.events.hash(&mut digest);
    finals.hash(&mut digest);
    let refused_stamps = sim.refused_stamps.load(Ordering::Relaxed);
    refused_stamps.hash(&mut digest);
    let removed_while_down = sim.removed_while_down;
    sim.stop().await;
    Outcome {
        digest: digest.finish(),
        calls: calls.len(),
        answered: calls.iter().filter(|c| c.answer != Answer::Unknown).count(),
        faults,
        transfers,
        lost_disks: lost.len(),
        moves: moved.len(),
        leaving_stops,
        removed_while_down,
        clock_faults,
        refused_stamps,
        stops: calls
            .iter()
            .filter(|c| matches!(c.op, Op::Stop { .. }))
            .count(),
        disables: calls.iter().filter(|c| c.op == Op::DisableAlert).count(),
        restrictions: calls.iter().filter(|c| c.op == Op::Restrict).count(),
        lifts: calls.iter().filter(|c| c.op == Op::Lift).count(),
        limit_changes: calls
            .iter()
            .filter(|c| matches!(c.op, Op::SetLimit { .. }))
            .count(),
        refused_lowered: finals.values().map(|b| b.refused_lowered).sum(),
        releases: calls
            .iter()
            .filter(|c| matches!(c.op, Op::Release { .. }))
            .count(),
        reports: calls
            .iter()
            .filter(|c| matches!(c.op, Op::Report { .. } | Op::Sent { .. } | Op::Meta { .. }))
            .count(),
        early_applied: finals.values().map(|b| b.early_applied).sum(),
        released: finals.values().map(|b| b.released.len()).sum(),
        upgrades: finals.values().map(|b| b.upgrades).sum(),
        upgrades_failed: finals.values().map(|b| b.upgrades_failed).sum(),
        also: calls
            .iter()
            .filter(|c| matches!(c.op, Op::Also { .. }))
            .count(),
        also_uncounted: finals.values().map(|b| b.uncounted.len()).sum(),
        coded: calls
            .iter()
            .filter(|c| matches!(c.op, Op::Report { code: Some(_), .. }))
            .count(),
        again: calls
            .iter()
            .filter(|c| matches!(c.op, Op::Again { .. }))
            .count(),
        hold_denials: finals.values().map(|b| b.hold_denials).sum(),
        through_open: finals.values().map(|b| b.through_open.len()).sum(),
        ratings: calls
            .iter()
            .filter(|c| matches!(c.op, Op::Quality { .. }))
            .count(),
        downgrades: finals.values().map(|b| b.downgrades).sum(),
        recoveries: finals.values().map(|b| b.recoveries).sum(),
        releases_void: finals.values().map(|b| b.releases_void).sum(),
        to_stopped: calls
            .iter()
            .filter(|c| matches!(c.op, Op::Send { .. }) && c.customer != c.id)
            .count(),
    }
}

/// The end-of-run checks against the final state of every shard.
fn check_history(h: &History, finals: &BTreeMap<u32, Book>, seed: u64) {
    let book = |scope: u32| &finals[&shard_of(scope)];
    let pos = |scope: u32, id: u64| {
        book(scope)
            .order
            .get(&scope)
            .and_then(|o| o.iter().position(|x| *x == id))
    };
    for c in &h.calls {
        let b = book(c.scope);
        if let Answer::Admitted(ok) = c.answer {
            // an answer is never lost nor changed
            assert_eq!(
                b.decided.get(&c.id),
                Some(&ok),
                "seed {seed}: id {} answered {ok} at {} ms, but the final state says {:?}",
                c.id,
                c.answered_ms,
                b.decided.get(&c.id)
            );
        }
    }
    for b in finals.values() {
        for scope in b.admitted.keys() {
            assert!(
                b.held(*scope) <= b.cap(*scope),
                "seed {seed}: scope {scope} ends over its limit"
            );
        }
    }
    // an answered event is applied for good: a STOP (R7.1; no send to its
    // customer asked after the answer is admitted, R7.2), the event
    // disabling `alert` (R6; no send of `alert` asked after it is
    // admitted), an account restriction (no send asked after it is
    // admitted, unless a lift was decided between them) or its lift
    let op_of: BTreeMap<u64, Op> = h.calls.iter().map(|c| (c.id, c.op)).collect();
    for e in h
        .calls
        .iter()
        .filter(|c| !c.op.is_send() && c.answer != Answer::Unknown)
    {
        let b = book(e.scope);
        let applied = match e.op {
            Op::DisableAlert => b.disabled.contains(&e.scope),
            Op::Restrict | Op::Lift | Op::Quality { .. } => true,
            // applied: in `events`, checked below; what it set is in the
            // decisions after it, each checked against the Book's limit
            // (a release's outcome: against the rule where it was applied)
            Op::SetLimit { .. }
            | Op::Release { .. }
            | Op::Report { .. }
            | Op::Sent { .. }
            | Op::Meta { .. } => true,
            _ => b
                .opted_out
                .get(&e.scope)
                .is_some_and(|o| o.contains(&e.customer)),
        };
        // where the restriction ends in the scope's order of decisions:
        // the first lift decided after it
        let lifted_at = match e.op {
            Op::Restrict => {
                let order = b.order.get(&e.scope).map(Vec::as_slice).unwrap_or(&[]);
                let from = pos(e.scope, e.id).unwrap_or(order.len());
                order
                    .iter()
                    .enumerate()
                    .skip(from)
                    .find(|(_, id)| op_of.get(id) == Some(&Op::Lift))
                    .map_or(usize::MAX, |(i, _)| i)
            }
            _ => usize::MAX,
        };
        let denies = |c: &Call| match e.op {
            Op::DisableAlert => c.op == (Op::Send { alert: true }),
            // (the restriction names the portfolio's first number)
            Op::Restrict => {
                matches!(c.op, Op::Send { .. } | Op::Again { .. })
                    && pos(c.scope, c.id).is_none_or(|p| p < lifted_at)
            }
            // a marketing hold: no marketing send to the customer in the
            // scope decided before it ends (section 9)
            Op::Report {
                of,
                code: Some(MARKETING_LIMIT),
                ..
            } => {
                let end =
                    engine_ts(e.scope, b.when[&e.id].engine_ms).0 + cooldowns(e.scope).marketing;
                c.op.is_send()
                    && c.customer == of
                    && b.when
                        .get(&c.id)
                        .is_some_and(|w| engine_ts(c.scope, w.engine_ms).0 < end)
            }
            Op::Lift
            | Op::Quality { .. }
            | Op::SetLimit { .. }
            | Op::Release { .. }
            | Op::Report { .. }
            | Op::Sent { .. }
            | Op::Meta { .. } => false,
            _ => c.op.is_send() && c.customer == e.customer,
        };
        assert!(
            b.events.contains(&e.id) && applied,
            "seed {seed}: {:?} {} (customer {}) in scope {} answered at {} ms is not applied",
            e.op,
            e.id,
            e.customer,
            e.scope,
            e.answered_ms
        );
        for c in h
            .calls
            .iter()
            .filter(|c| c.scope == e.scope && c.asked_ms > e.answered_ms && denies(c))
        {
            assert!(
                c.answer != Answer::Admitted(true) && b.decided.get(&c.id) != Some(&true),
                "seed {seed}: id {} ({:?}, customer {}) in scope {} was admitted after {:?} {} was answered",
                c.id,
                c.op,
                c.customer,
                c.scope,
                e.op,
                e.id
            );
        }
    }
    // the windows in true time (issue 11, item 2): a decision dates an
    // admission at the engine's time, which no stamp moves more than the
    // bound (plus slack) ahead of the true time, and no clock behind moves
    // more than the slack back; so every admission stamped (true time)
    // within the window, narrowed by both, before the latest stamp applied
    // at a later admission is counted by it, and no such stretch of true
    // time holds more than the limit that admission was decided under
    let reach = WINDOW_MS - MAX_OFFSET.as_millis() as u64 - 2 * CLOCK_SLACK_MS;
    for b in finals.values() {
        for (scope, order) in b.order.iter().filter(|(s, _)| windowed(**s)) {
            // (id, when, its place in the order)
            let admitted: Vec<(u64, When, usize)> = order
                .iter()
                .enumerate()
                .filter(|(_, id)| b.decided[id] && !b.events.contains(id))
                // (admitted through an open conversation: nothing counted)
                .filter(|(_, id)| !b.through_open.contains(id))
                .map(|(at, id)| (*id, b.when[id], at))
                .collect();
            for (k, (id, w, at)) in admitted.iter().enumerate() {
                if b.uncounted.contains(id) {
                    // admitted at any count: its customer was counted
                    continue;
                }
                let from = w.tau_ms.saturating_sub(reach);
                // an admission given back before this decision no longer
                // counts; a portfolio counts a customer once (R3.1)
                let held = admitted[..=k]
                    .iter()
                    .filter(|(x, ..)| b.released.get(x).is_none_or(|r| r > at))
                    .filter(|(_, x, _)| x.true_ms > from)
                    .map(|(x, ..)| b.customer(*x))
                    .collect::<BTreeSet<_>>()
                    .len();
                assert!(
                    held <= w.limit,
                    "seed {seed}: scope {scope} admitted {held} > {} stamped within {reach} ms {admitted:?}\
                     of true time up to id {id} ({w:?})",
                    w.limit
                );
            }
        }
    }
    // real time: an answer given before another call was made is decided first
    let mut answered: Vec<&Call> = h
        .calls
        .iter()
        .filter(|c| c.answer != Answer::Unknown)
        .collect();
    answered.sort_by_key(|c| c.answered_ms);
    for x in &answered {
        for y in &answered {
            if x.scope == y.scope && x.answered_ms < y.asked_ms {
                let (px, py) = (pos(x.scope, x.id), pos(y.scope, y.id));
                assert!(
                    px < py,
                    "seed {seed}: id {} answered at {} ms is decided after id {} asked at {} ms",
                    x.id,
                    x.answered_ms,
                    y.id,
                    y.asked_ms
                );
            }
        }
    }
    // fast-path reads: never stale, never ahead of the callers. An
    // admission given back counts until its release may have been applied
    // (asked before the read) at the least, and until the release was
    // certainly applied (answered before the read) at the most.
    let by_id: BTreeMap<u64, &Call> = h.calls.iter().map(|c| (c.id, c)).collect();
    let release_of = |c: &Call| -> Option<&Call> {
        let b = book(c.scope);
        let at = *b.released.get(&c.id)?;
        by_id.get(b.order.get(&c.scope)?.get(at)?).copied()
    };
    for r in &h.reads {
        let must = h
            .calls
            .iter()
            .filter(|c| {
                c.scope == r.scope
                    && c.op.is_send()
                    && !book(c.scope).through_open.contains(&c.id)
                    && c.answer == Answer::Admitted(true)
                    && c.answered_ms < r.at_ms
                    && release_of(c).is_none_or(|x| x.asked_ms > r.at_ms)
            })
            .count();
        let may = h
            .calls
            .iter()
            .filter(|c| {
                c.scope == r.scope
                    && c.op.is_send()
                    && !book(c.scope).through_open.contains(&c.id)
                    && c.asked_ms <= r.at_ms
                    && book(c.scope).decided.get(&c.id) == Some(&true)
                    && release_of(c)
                        .is_none_or(|x| x.answer == Answer::Unknown || x.answered_ms >= r.at_ms)
            })
            .count();
        assert!(
            must <= r.admitted && r.admitted <= may,
            "seed {seed}: node {} read {} admitted in scope {} at {} ms; between {must} and {may} were possible",
            r.node,
            r.admitted,
            r.scope,
            r.at_ms
        );
    }
}

/// Real time one seed may take. Virtual time moves only when every task
/// waits, so a task that never waits (a loop without a pause) would hang
/// the run instead of failing it.
const WATCHDOG: Duration = Duration::from_secs(300);

fn run_seed(seed: u64) -> Outcome {
    run_seed_with(seed, Knobs::from_env())
}

fn run_seed_with(seed: u64, knobs: Knobs) -> Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // the seed also fixes the order in which `tokio::select!` polls
        // its branches (in tonic, hyper and here): unseeded, two runs of
        // one seed diverged
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()))
            .build()
            .unwrap();
        let _ = tx.send(rt.block_on(run(seed, knobs)));
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(o) => o,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
            "seed {seed}: no end after {} s of real time (a task spins without letting the clock move)",
            WATCHDOG.as_secs()
        ),
        // the run panicked: its message is above
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("seed {seed} failed"),
    }
}

/// The seeds to run: `ADMIT_SIM_SEED` alone, or `ADMIT_SIM_SEEDS` of them
/// from `ADMIT_SIM_FIRST` (default: CI's, `default_count` from `first`).
fn seeds(first: u64, default_count: u64) -> Vec<u64> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse::<u64>().expect(name))
    };
    if let Some(s) = var("ADMIT_SIM_SEED") {
        return vec![s];
    }
    let n = var("ADMIT_SIM_SEEDS").unwrap_or(default_count);
    let first = var("ADMIT_SIM_FIRST").unwrap_or(first);
    (first..first + n).collect()
}

fn run_seeds(seeds: &[u64]) {
    let t0 = std::time::Instant::now();
    let (mut calls, mut answered, mut faults) = (0, 0, 0);
    let (mut transfers, mut lost, mut moves) = (0, 0, 0);
    let (mut leaving_stops, mut removed_down) = (0, 0);
    let (mut clock_faults, mut refused) = (0, 0);
    let (mut stops, mut to_stopped, mut disables) = (0, 0, 0);
    let (mut restrictions, mut lifts) = (0, 0);
    let (mut limit_changes, mut refused_lowered) = (0, 0);
    let (mut releases, mut released, mut releases_void, mut reports) = (0, 0, 0, 0);
    let (mut early_applied, mut upgrades, mut upgrades_failed) = (0, 0, 0);
    let (mut also, mut also_uncounted) = (0, 0);
    let (mut coded, mut again, mut hold_denials, mut through_open) = (0, 0, 0, 0);
    let (mut ratings, mut downgrades, mut recoveries) = (0, 0, 0);
    for (i, seed) in seeds.iter().enumerate() {
        let o = run_seed(*seed);
        // a long sweep cut short by a timeout still says how far it got
        if (i + 1) % 100 == 0 {
            println!(
                "{} of {} seeds passed (through seed {seed}, {:.0} s)",
                i + 1,
                seeds.len(),
                t0.elapsed().as_secs_f64()
            );
        }
        upgrades += o.upgrades;
        also += o.also;
        also_uncounted += o.also_uncounted;
        coded += o.coded;
        again += o.again;
        hold_denials += o.hold_denials;
        through_open += o.through_open;
        ratings += o.ratings;
        downgrades += o.downgrades;
        recoveries += o.recoveries;
        upgrades_failed += o.upgrades_failed;
        releases += o.releases;
        reports += o.reports;
        early_applied += o.early_applied;
        released += o.released;
        releases_void += o.releases_void;
        limit_changes += o.limit_changes;
        refused_lowered += o.refused_lowered;
        stops += o.stops;
        to_stopped += o.to_stopped;
        disables += o.disables;
        restrictions += o.restrictions;
        lifts += o.lifts;
        clock_faults += o.clock_faults;
        refused += o.refused_stamps;
        calls += o.calls;
        answered += o.answered;
        faults += o.faults;
        transfers += o.transfers;
        lost += o.lost_disks;
        moves += o.moves;
        leaving_stops += o.leaving_stops;
        removed_down += o.removed_while_down;
    }
    println!(
        "{} seeds from {}: {calls} calls ({answered} answered; {stops} STOPs, {to_stopped} \
         sends to customers who had sent one, {disables} templates disabled, {restrictions} \
         accounts restricted, {lifts} lifted, {limit_changes} limits set, {refused_lowered} \
         sends refused at a lowered limit, {releases} releases and {reports} delivery reports: \
         {released} admissions given back, {releases_void} releases and FAILED reports that found \
         none, {early_applied} early FAILED statuses applied; {upgrades} tier upgrades, \
         {upgrades_failed} waits ended without one; {also} sends from a portfolio's second \
         number, {also_uncounted} of them to a customer counted already; {coded} FAILED \
         reports with a code of section 9, {again} sends again to a customer, {hold_denials} \
         sends denied by a hold or back-off, {through_open} admitted through an open \
         conversation; {ratings} quality ratings, {downgrades} Flagged downgrades, {recoveries} \
         numbers Connected again), {faults} faults \
         ({transfers} leadership transfers, {lost} disks lost, {moves} moves, {leaving_stops} \
         crashes of a leaving node, {removed_down} removed while down, {clock_faults} clocks off; {refused} stamps refused), \
         in {:.1} s",
        seeds.len(),
        seeds.first().copied().unwrap_or_default(),
        t0.elapsed().as_secs_f64()
    );
}

// CI's seeds, in two tests so that both cores run them.
#[test]
fn seeded_faults_never_over_admit_nor_lose_an_answer() {
    run_seeds(&seeds(1, 150));
}

#[test]
fn seeded_faults_more_seeds() {
    let chosen = ["ADMIT_SIM_SEED", "ADMIT_SIM_SEEDS", "ADMIT_SIM_FIRST"];
    if chosen.iter().any(|v| std::env::var(v).is_ok()) {
        println!("seeds chosen by the environment: run by the test above");
        return;
    }
    run_seeds(&seeds(1_001, 150));
}

/// A one-way hold (node 3's bytes to node 2, 435-1355 ms) timed out
/// leader 2's appends to node 3; with openraft's default replication
/// backoff (doubling from 200 ms without end) those appends never resumed
/// in two groups while heartbeats went on, so node 3, being moved out,
/// never learned it was leaving ("node 3 leaving, not removed within 60
/// s"). admit-raft now bounds the backoff (`GroupRouter::backoff` in
/// src/network.rs). The seed fails with a constant 800 ms backoff and
/// passes with 400 ms or the bounded series.
#[test]
fn a_follower_whose_answers_timed_out_is_caught_up_again() {
    let o = run_seed_with(
        1043,
        Knobs {
            moves: true,
            change_odds: (3, 4),
            // as when it was found
            clocks: false,
            crash_leaving: false,
            restrictions: false,
            limits: false,
            releases: false,
            upgrades: false,
            portfolios: false,
            holds: false,
            flags: false,
        },
    );
    assert_eq!(o.moves, 1, "seed 1043 no longer moves a node: pick another");
}

/// A split of nodes 2 and 3 (2095-3293 ms) while node 3 was being moved
/// out: node 3 was dropped from the metadata group before it learned it
/// was leaving, and went on leading shard 2 with its old registry, whose
/// target kept its replica there; the other voters followed it and could
/// not move it ("node 3 leaving, not removed within 60 s"; found by the
/// thousands-of-seeds run). A node that has seen no metadata leader for a
/// while now hands its shards over (`registry_may_be_stale` in
/// src/node/reconcile.rs).
#[test]
fn a_node_dropped_from_the_metadata_group_unaware_hands_its_shards_over() {
    let knobs = Knobs {
        moves: true,
        change_odds: (1, 2),
        clocks: true,
        crash_leaving: false,
        restrictions: false,
        limits: false,
        releases: false,
        upgrades: false,
        portfolios: false,
        holds: false,
        flags: false,
    };
    let o = run_seed_with(11197, knobs);
    assert_eq!(
        o.moves, 1,
        "seed 11197 no longer moves a node: pick another"
    );
}

/// Runs `seed`, which must move a node out and crash it once while it
/// leaves, `removed_while_down` times completing the removal while it was
/// down (the run's checks do the rest).
fn crash_while_leaving(seed: u64, removed_while_down: usize) {
    let o = run_seed_with(seed, Knobs::from_env());
    assert_eq!(
        (o.moves, o.leaving_stops, o.removed_while_down),
        (1, 1, removed_while_down),
        "seed {seed} no longer has the crash of a leaving node it was picked for: pick another"
    );
}

/// A node being moved out crashes (seed 474: node 2 leaving, down
/// 1500-2500 ms): it restarts on its kept disk and drains on; nothing
/// acknowledged is lost, no window over-admits, the move completes and
/// the node is then refused on its disk.
#[test]
fn a_node_that_crashes_while_it_moves_out_restarts_and_drains() {
    crash_while_leaving(474, 0);
}

/// A node being moved out crashes and the cluster completes its removal
/// while it is down (seed 308): the others drop its replicas without it,
/// it stays down, and its restart on the kept disk is refused.
#[test]
fn a_node_that_crashes_while_it_moves_out_is_removed_while_down() {
    crash_while_leaving(308, 1);
}

#[test]
fn a_seed_replays_exactly() {
    let seed = seeds(1, 1)[0] ^ 0x5eed;
    let knobs = Knobs::from_env();
    let a = run_seed_with(seed, knobs);
    let b = run_seed_with(seed, knobs);
    assert_eq!(a.digest, b.digest, "seed {seed} ran two different ways");
    assert!(a.faults > 0 && a.answered > 0);
}
