//! The `/metrics` page of one node (docs/metrics.md): the recorder's
//! counters and histograms, then the series computed from this node's state
//! at scrape time: build and node info, per-shard replication, and the
//! per-scope series of the shards it leads (the N scopes nearest their
//! limit; every scope in the aggregates). Computing them at scrape time
//! means a scope that leaves the top N or a shard that changes leader leaves
//! no stale series behind.
//!
//! It may import `ctx` (routing: Raft views, readers, the clock), the
//! `telemetry` recorder and admit-core's summaries; which scopes are nearest
//! their limit and what their figures are is decided in admit-core
//! (`ScopeRollup`, `Reader::roll_up`, `Reader::scope_summaries`). `http` serves the page.

pub(crate) mod http;
mod text;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use admit_core::{
    AccountStatus, Limit, Quality, RatioHistogram, ScopeKey, ScopeRollup, ScopeSummary, Ts,
    HEADROOM_RATIO_BOUNDS,
};
use tokio::sync::watch;

use crate::ctx::Ctx;
use text::Page;

/// Default of `--metrics-top-scopes`.
pub const DEFAULT_TOP_SCOPES: usize = 100;

/// The whole page: the recorder's part, then this node's state.
pub(crate) fn render(ctx: &Ctx, top: usize) -> String {
    let rec = crate::telemetry::recorder();
    rec.run_upkeep();
    let mut out = rec.render();
    let mut page = Page::default();
    node(ctx, &mut page);
    scopes(ctx, top, &mut page);
    out.push_str(&page.finish());
    out
}

fn node(ctx: &Ctx, p: &mut Page) {
    let raft = &ctx.routing.raft;
    let me = raft.node_id();
    let id = me.to_string();
    p.gauge("admit_node_up", "1 while this node serves.")
        .sample(&[("node_id", &id)], 1.0);
    p.gauge("admit_build_info", "Always 1; the labels name the build.")
        .sample(
            &[("version", env!("CARGO_PKG_VERSION")), ("node_id", &id)],
            1.0,
        );
    // frames per batch says how much the node-pair streams gather
    let (batches, frames) = raft.stream_counters();
    p.counter(
        "admit_raft_stream_batches_total",
        "Batches this node sent on its node-pair Raft streams.",
    )
    .sample(&[], batches as f64);
    p.counter(
        "admit_raft_stream_frames_total",
        "Raft messages this node sent on its node-pair Raft streams (all groups).",
    )
    .sample(&[], frames as f64);
    let (pipelined, _) = raft.pipelined_counters();
    p.counter(
        "admit_raft_appends_pipelined_total",
        "Appends this node's shard leaders sent without waiting for the answer to the last.",
    )
    .sample(&[], pipelined as f64);
    p.counter(
        "admit_raft_commit_notes_folded_total",
        "Appends carrying only a new commit index that were not sent: the shard's next append carried it.",
    )
    .sample(&[], raft.commit_notes_folded() as f64);
    // nonzero outside a rolling upgrade: a peer runs an older build
    p.gauge(
        "admit_raft_peers_one_append_at_a_time",
        "Peers this node replicates to one append at a time (they refused pipelined appends).",
    )
    .sample(&[], raft.peers_without_pipelining().len() as f64);
    // nonzero outside a rolling upgrade: a peer runs a build without the
    // node-pair stream
    p.gauge(
        "admit_raft_peers_on_unary_calls",
        "Peers this node sends one unary call a Raft message (they serve no node-pair stream).",
    )
    .sample(&[], raft.peers_on_unary_calls().len() as f64);
    // nonzero outside a rolling upgrade: a peer runs a build that does not
    // take relayed requests on the stream
    p.gauge(
        "admit_raft_peers_refusing_relays",
        "Peers whose open node-pair stream refused a relayed request (they take relays only as calls).",
    )
    .sample(&[], raft.peers_refusing_app_frames().len() as f64);
    let infos = raft.shard_infos();
    let mine: Vec<_> = infos
        .iter()
        .filter(|i| i.voters.contains(&me) || i.learners.contains(&me))
        .collect();
    let led = mine.iter().filter(|i| i.is_leader_view()).count();
    p.gauge("admit_shards_led", "Shards this node leads.")
        .sample(&[], led as f64);
    p.gauge(
        "admit_shards_replicated",
        "Shards this node holds a replica of (voter or learner).",
    )
    .sample(&[], mine.len() as f64);
    type Info = admit_raft::ShardInfo;
    let per_shard =
        |p: &mut Page, name: &'static str, help: &'static str, f: &dyn Fn(&Info) -> Option<u64>| {
            let mut m = p.gauge(name, help);
            for i in &mine {
                if let Some(v) = f(i) {
                    m.sample(&[("shard", &i.shard.to_string())], v as f64);
                }
            }
        };
    per_shard(
        p,
        "admit_shard_has_leader",
        "1 when this node knows a leader for the shard.",
        &|i| Some(u64::from(i.leader.is_some())),
    );
    per_shard(
        p,
        "admit_shard_term",
        "This node's current Raft term of the shard.",
        &|i| Some(i.term),
    );
    per_shard(
        p,
        "admit_shard_commit_lag_entries",
        "Leader only: entries the furthest-behind voter lacks of the leader's log.",
        &|i| {
            let last = i.last_log_index.unwrap_or(0);
            i.is_leader_view().then(|| {
                let lag = i.replicas.iter().filter(|r| r.voter);
                lag.map(|r| r.lag.unwrap_or(last)).max().unwrap_or(0)
            })
        },
    );
    per_shard(
        p,
        "admit_shard_apply_lag_entries",
        "Entries committed but not yet applied on this node.",
        &|i| {
            Some(
                i.committed
                    .unwrap_or(0)
                    .saturating_sub(i.applied.unwrap_or(0)),
            )
        },
    );
    per_shard(
        p,
        "admit_shard_log_entries_since_snapshot",
        "Log entries after this node's last snapshot of the shard.",
        &|i| {
            Some(
                i.last_log_index
                    .unwrap_or(0)
                    .saturating_sub(i.snapshot.unwrap_or(0)),
            )
        },
    );
}

fn kind(s: &ScopeKey) -> (&'static str, String) {
    match s {
        ScopeKey::Number(n) => ("number", n.to_string()),
        ScopeKey::Portfolio(p) => ("portfolio", p.to_string()),
    }
}

fn account(a: AccountStatus) -> &'static str {
    match a {
        AccountStatus::Healthy => "HEALTHY",
        AccountStatus::AtRisk => "AT_RISK",
        AccountStatus::Restricted => "RESTRICTED",
    }
}

fn rating(q: Quality) -> (&'static str, f64) {
    match q {
        Quality::Unknown => ("UNKNOWN", 0.0),
        Quality::Low => ("LOW", 1.0),
        Quality::Medium => ("MEDIUM", 2.0),
        Quality::High => ("HIGH", 3.0),
    }
}

fn tier(l: Limit) -> String {
    l.cap()
        .map_or_else(|| "unlimited".into(), |c| c.to_string())
}

fn seconds_until(t: Ts, now: Ts) -> f64 {
    t.ms().saturating_sub(now.ms()) as f64 / 1000.0
}

/// The scopes of the shards this node leads: aggregates over all of them,
/// per-scope series for the `top` nearest their limit. One pass over the
/// scopes with a bounded selection (admit-core's `ScopeRollup`): no sort and
/// no allocation per scope, so a scrape of 100,000 scopes stays cheap
/// (docs/benchmarks.md).
fn scopes(ctx: &Ctx, top: usize, p: &mut Page) {
    let routing = &ctx.routing;
    let me = routing.raft.node_id();
    let now = ctx.now();
    let led: Vec<u32> = (0..routing.shards())
        .filter(|s| routing.raft.leader(*s) == Some(me))
        .collect();
    let mut roll = ScopeRollup::new(top);
    for s in &led {
        routing.reader(*s).roll_up(*s, now, &mut roll);
    }

    // aggregates over every scope
    let mut m = p.gauge(
        "admit_scopes",
        "Scopes this node exports (the leader of their shard), by kind, account status and tier.",
    );
    for (g, n) in &roll.groups {
        let k = if g.portfolio { "portfolio" } else { "number" };
        m.sample(
            &[
                ("kind", k),
                ("status", account(g.account_status)),
                ("tier", &tier(g.limit)),
            ],
            *n as f64,
        );
    }
    let ratios: Vec<(&str, &RatioHistogram)> =
        [("number", &roll.ratios[0]), ("portfolio", &roll.ratios[1])]
            .into_iter()
            .filter(|(_, h)| h.count > 0)
            .collect();
    p.histogram(
        "admit_scopes_headroom_ratio",
        "Headroom as a share of the limit, over every capped scope this node exports.",
        &HEADROOM_RATIO_BOUNDS,
        &ratios,
    );
    let total = roll.scopes as usize;
    let tops = roll.into_top();
    p.gauge(
        "admit_scopes_exported",
        "Scopes with per-scope series on this node (the nearest their limit).",
    )
    .sample(&[], tops.len() as f64);
    p.gauge(
        "admit_scopes_folded",
        "Scopes only counted in the aggregates on this node.",
    )
    .sample(&[], (total - tops.len()) as f64);

    // the top N, in the order chosen above
    let mut by_shard: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (s, b) in &tops {
        by_shard.entry(*s).or_default().push(b.id);
    }
    let mut found: BTreeMap<(u32, u32), ScopeSummary> = BTreeMap::new();
    for (s, ids) in &by_shard {
        for sum in routing.reader(*s).scope_summaries(ids, now) {
            found.insert((*s, sum.brief.id), sum);
        }
    }
    let tops: Vec<&ScopeSummary> = tops
        .iter()
        .filter_map(|(s, b)| found.get(&(*s, b.id)))
        .collect();
    per_scope(&tops, now, p);

    if led.contains(&0) {
        let t = routing.reader(0).template_counts(now);
        let mut m = p.gauge(
            "admit_templates",
            "Templates by status (exported by the leader of shard 0).",
        );
        m.sample(&[("status", "PAUSED")], f64::from(t.paused));
        m.sample(&[("status", "DISABLED")], f64::from(t.disabled));
    }
}

fn per_scope(tops: &[&ScopeSummary], now: Ts, p: &mut Page) {
    let labels: Vec<(String, &'static str)> = tops
        .iter()
        .map(|s| {
            let (k, id) = kind(&s.brief.scope);
            (id, k)
        })
        .collect();
    let each = |p: &mut Page,
                name: &'static str,
                help: &'static str,
                f: &dyn Fn(&ScopeSummary) -> Option<f64>| {
        let mut m = p.gauge(name, help);
        for (s, (id, k)) in tops.iter().zip(&labels) {
            if let Some(v) = f(s) {
                m.sample(&[("scope", id), ("kind", k)], v);
            }
        }
    };
    each(
        p,
        "admit_scope_tier_limit",
        "The scope's limit in force: conversations per rolling 24 h (absent when unlimited).",
        &|s| s.brief.limit.cap().map(f64::from),
    );
    each(
        p,
        "admit_scope_unique_customers",
        "Conversations counted in the scope's rolling 24 h window (exact).",
        &|s| Some(f64::from(s.brief.used)),
    );
    each(
        p,
        "admit_scope_headroom",
        "Conversations the scope may still open now: limit minus used.",
        &|s| s.brief.headroom().map(f64::from),
    );
    each(
        p,
        "admit_scope_headroom_ratio",
        "Headroom as a share of the limit (0..1).",
        &|s| s.brief.headroom_ratio(),
    );
    let mut m = p.gauge(
        "admit_scope_account_status",
        "Always 1; the status label is the scope's account status.",
    );
    for (s, (id, k)) in tops.iter().zip(&labels) {
        m.sample(
            &[
                ("scope", id),
                ("kind", k),
                ("status", account(s.brief.account_status)),
            ],
            1.0,
        );
    }
    let mut m = p.gauge(
        "admit_scope_quality",
        "The scope's quality rating: 0 unknown, 1 low, 2 medium, 3 high (also as the rating label).",
    );
    for (s, (id, k)) in tops.iter().zip(&labels) {
        let (r, v) = rating(s.quality);
        m.sample(&[("scope", id), ("kind", k), ("rating", r)], v);
    }
    let mut m = p.gauge(
        "admit_scope_number_status",
        "The scope's numbers in each status (Connected, Flagged, Disconnected).",
    );
    for (s, (id, k)) in tops.iter().zip(&labels) {
        for (st, n) in s.numbers_by_status {
            if n > 0 {
                let st = match st {
                    admit_core::NumberStatus::Connected => "CONNECTED",
                    admit_core::NumberStatus::Flagged => "FLAGGED",
                    admit_core::NumberStatus::Disconnected => "DISCONNECTED",
                };
                m.sample(&[("scope", id), ("kind", k), ("status", st)], f64::from(n));
            }
        }
    }
    each(
        p,
        "admit_scope_upgrade_in_seconds",
        "Seconds until a pending upgrade takes effect (absent when none is pending).",
        &|s| s.upgrade_at.map(|t| seconds_until(t, now)),
    );
    each(
        p,
        "admit_scope_downgrade_in_seconds",
        "Seconds until a Flagged number's downgrade (absent when none is due).",
        &|s| s.downgrade_at.map(|t| seconds_until(t, now)),
    );
    each(
        p,
        "admit_scope_unique_customers_7d_estimate",
        "Unique customers in the last 7 days (HyperLogLog estimate).",
        &|s| Some(s.unique_7d.value as f64),
    );
    each(
        p,
        "admit_scope_unique_customers_30d_estimate",
        "Unique customers in the last 30 days (HyperLogLog estimate).",
        &|s| Some(s.unique_30d.value as f64),
    );
    each(
        p,
        "admit_scope_open_service_windows",
        "Customers of the scope's numbers whose 24 h service window is open.",
        &|s| Some(f64::from(s.open_service_windows)),
    );
    each(
        p,
        "admit_scope_opted_out_customers",
        "Customers opted out of the scope's marketing.",
        &|s| Some(f64::from(s.opt_outs)),
    );
    let mut m = p.gauge(
        "admit_scope_templates",
        "Templates that deny the scope's sends now: paused (the pause as the scope's profile measures it) and disabled.",
    );
    for (s, (id, k)) in tops.iter().zip(&labels) {
        for (st, n) in [
            ("PAUSED", s.templates.paused),
            ("DISABLED", s.templates.disabled),
        ] {
            m.sample(&[("scope", id), ("kind", k), ("status", st)], f64::from(n));
        }
    }
}

/// Counts leader changes of every shard, as this node sees them, until
/// `stop` (polling: a change undone within one period is missed). While
/// every group here is quiesced no leader changes without a group waking,
/// so the loop waits for that instead (`crate::quiet`).
/// How often histogram samples are folded into their buckets without a scrape.
const FOLD_EVERY: Duration = Duration::from_secs(5);

/// The recorder keeps each histogram sample (8 bytes) until an upkeep folds it
/// into the histogram's buckets, and only a scrape runs one: a node nobody
/// scrapes, or scrapes rarely, would hold every sample of every call, without
/// bound. Fold them every few seconds. Not paused while the groups are quiet:
/// open-window sends are answered (and timed) without any Raft traffic.
async fn fold_samples(mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(FOLD_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => crate::telemetry::recorder().run_upkeep(),
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

pub(crate) async fn watch_leaders(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let raft = ctx.routing.raft.clone();
    let mut last: Vec<Option<u64>> = vec![None; raft.shards() as usize];
    let mut every = tokio::time::interval(Duration::from_millis(250));
    let mut quiet = raft.quiet();
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        ctx.routing
            .wakeups
            .leaders
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // read before the scan: quiet already, the scan sees every change
        // until a group wakes
        let quiet_now = *quiet.borrow_and_update();
        // each shard's leader from its metrics (shard_infos would also
        // build the placement table: most of an idle node's CPU here)
        for (shard, slot) in (0..raft.shards()).zip(last.iter_mut()) {
            if let Some(l) = raft.leader(shard) {
                if slot.is_some_and(|prev| prev != l) {
                    crate::telemetry::leader_changed();
                }
                *slot = Some(l);
            }
        }
        if quiet_now && !crate::quiet::while_quiet(&mut quiet, None, &mut stop).await {
            return;
        }
    }
}

/// The running metrics endpoint of a node.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub addr: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Endpoint {
    /// Binds `listen` and serves `/metrics` there until `stop`; also starts
    /// counting leader changes. Installs the process's recorder.
    pub async fn start(
        listen: SocketAddr,
        top: usize,
        ctx: Arc<Ctx>,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<Endpoint> {
        crate::telemetry::recorder();
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let tasks = vec![
            tokio::spawn(http::serve(listener, ctx.clone(), top, stop.clone())),
            tokio::spawn(watch_leaders(ctx, stop.clone())),
            tokio::spawn(fold_samples(stop)),
        ];
        tracing::info!(%addr, top_scopes = top, "metrics at http://{addr}/metrics");
        Ok(Endpoint { addr, tasks })
    }

    /// Waits for the tasks (after `stop` was sent), or aborts them.
    pub async fn stop(self) {
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}
