//! Metrics recorded as things happen (docs/metrics.md): the process-wide
//! Prometheus recorder behind the `metrics` macros, the bucket layout of its
//! histograms, the help texts, and one helper per event the server counts.
//!
//! It may import `metrics`, `metrics-exporter-prometheus`, `tonic` (status
//! codes) and admit-core's decision type; nothing else of this crate. The
//! series computed from the engine at scrape time are in `scrape`.

use std::sync::OnceLock;

use admit_core::{Decision, Reason};
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds) of every `_seconds` histogram: 0.5 ms to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const FSYNC_ENTRIES_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];
const BYTES_BUCKETS: &[f64] = &[1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// The process's recorder handle, installed on first use. Several nodes in
/// one process (tests) share it: counters are per process, which is per node
/// in production. If another recorder was installed first, the handle is of
/// a recorder nobody feeds (it renders nothing) and a warning is logged.
pub(crate) fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = || -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
                .set_buckets_for_metric(
                    Matcher::Full("admit_journal_entries_per_fsync".into()),
                    FSYNC_ENTRIES_BUCKETS,
                )?
                .set_buckets_for_metric(
                    Matcher::Full("admit_raft_commands_per_entry".into()),
                    FSYNC_ENTRIES_BUCKETS,
                )?
                .set_buckets_for_metric(
                    Matcher::Full("admit_snapshot_size_bytes".into()),
                    BYTES_BUCKETS,
                )
        };
        let handle = match builder().and_then(|b| b.install_recorder()) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; counters stay empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        };
        describe();
        handle
    })
}

fn describe() {
    describe_counter!(
        "admit_decisions_total",
        "Send decisions answered by this node, by allowed/denied and reason."
    );
    describe_histogram!(
        "admit_rpc_duration_seconds",
        Unit::Seconds,
        "Latency of public gRPC calls taken by this node, by method and status code."
    );
    describe_counter!(
        "admit_forwarded_total",
        "Requests this node relayed to another node (the shard's leader)."
    );
    describe_counter!(
        "admit_forward_relays_total",
        "Requests this node relayed to another node, by way: stream (on the node-pair stream) or call."
    );
    describe_counter!(
        "admit_forward_retries_total",
        "Retries of routed requests (no leader yet, leader moved)."
    );
    describe_counter!(
        "admit_shed_total",
        "Requests refused by self-protection (R8.4), by cause."
    );
    describe_counter!(
        "admit_idempotent_replays_total",
        "Sends answered with the decision recorded for their idempotency key."
    );
    describe_counter!(
        "admit_leader_changes_total",
        "Shard leader changes this node observed."
    );
    describe_histogram!(
        "admit_journal_fsync_duration_seconds",
        Unit::Seconds,
        "Duration of one journal group commit (fsync)."
    );
    describe_histogram!(
        "admit_journal_entries_per_fsync",
        "Storage operations covered by one journal fsync (group commit size)."
    );
    describe_histogram!(
        "admit_raft_proposal_wait_seconds",
        Unit::Seconds,
        "A write's wait in its shard's proposer on the leader, until it joined a log entry."
    );
    describe_histogram!(
        "admit_raft_commands_per_entry",
        "Commands in one log entry a shard leader on this node formed."
    );
    describe_histogram!(
        "admit_raft_entry_round_seconds",
        Unit::Seconds,
        "A log entry from its hand-over to the shard's Raft group to its answer (committed and applied here)."
    );
    describe_histogram!(
        "admit_raft_append_round_trip_seconds",
        Unit::Seconds,
        "A pipelined append carrying entries, from queued for a follower to its answer."
    );
    describe_histogram!(
        "admit_raft_append_service_seconds",
        Unit::Seconds,
        "A pipelined append carrying entries, on the follower: from received to answered by the shard's group (its log write included)."
    );
    describe_histogram!(
        "admit_forward_duration_seconds",
        Unit::Seconds,
        "A request this node relayed to another node, from sent to answered."
    );
    describe_histogram!(
        "admit_snapshot_duration_seconds",
        Unit::Seconds,
        "Time to build one shard snapshot."
    );
    describe_histogram!(
        "admit_snapshot_size_bytes",
        Unit::Bytes,
        "Size of one built shard snapshot."
    );
    describe_gauge!("admit_shards_led", "Shards this node leads.");
    describe_gauge!(
        "admit_clock_skew_seconds",
        Unit::Seconds,
        "This node's service clock minus the clock a majority of the nodes has reached (positive: ahead)."
    );
    describe_gauge!(
        "admit_clock_peer_offset_seconds",
        Unit::Seconds,
        "Another node's service clock, as last sampled here, minus this node's (upper estimate)."
    );
}

/// A send decision answered to a caller (on the node that took the call).
pub(crate) fn decided(d: &Decision, replayed: bool) {
    decided_n(d.reason, 1, u64::from(replayed));
}

fn decided_n(reason: Reason, n: u64, replayed: u64) {
    let decision = if reason.allows() { "allowed" } else { "denied" };
    counter!("admit_decisions_total", "decision" => decision, "reason" => reason.as_str())
        .increment(n);
    if replayed > 0 {
        counter!("admit_idempotent_replays_total").increment(replayed);
    }
}

/// A batch's decisions, counted by reason and recorded once: each counter
/// update looks its labelled series up in the recorder's registry, which
/// costs more than the update itself (a campaign's batch is one or two
/// reasons).
#[derive(Default)]
pub(crate) struct Decisions {
    by_reason: Vec<(Reason, u64)>,
    replayed: u64,
}

impl Decisions {
    pub fn add(&mut self, d: &Decision, replayed: bool) {
        self.replayed += u64::from(replayed);
        match self.by_reason.iter_mut().find(|(r, _)| *r == d.reason) {
            Some((_, n)) => *n += 1,
            None => self.by_reason.push((d.reason, 1)),
        }
    }

    pub fn record(self) {
        let mut replayed = self.replayed;
        for (reason, n) in self.by_reason {
            decided_n(reason, n, std::mem::take(&mut replayed));
        }
    }
}

/// A request refused by self-protection: `in_flight` or `caller_quota`.
pub(crate) fn shed(cause: &'static str) {
    counter!("admit_shed_total", "cause" => cause).increment(1);
}

/// The skew of this node's clock and each sampled peer's offset (ms).
pub(crate) fn clock_skew(skew_ms: i64, peers: &[(u64, i64)]) {
    gauge!("admit_clock_skew_seconds").set(skew_ms as f64 / 1_000.0);
    for (node, off) in peers {
        gauge!("admit_clock_peer_offset_seconds", "node_id" => node.to_string())
            .set(*off as f64 / 1_000.0);
    }
}

pub(crate) fn forwarded() {
    counter!("admit_forwarded_total").increment(1);
}

/// docs/metrics.md: a request relayed to another node, by the way it went
/// (`stream`: on the node-pair stream; `call`: a call of its own).
pub(crate) fn relayed_by(way: &'static str) {
    counter!("admit_forward_relays_total", "way" => way).increment(1);
}

/// docs/metrics.md: how long a relayed request took, lane wait included.
pub(crate) fn forward_took(d: std::time::Duration) {
    histogram!("admit_forward_duration_seconds").record(d.as_secs_f64());
}

pub(crate) fn retried() {
    counter!("admit_forward_retries_total").increment(1);
}

pub(crate) fn leader_changed() {
    counter!("admit_leader_changes_total").increment(1);
}

pub(crate) fn snapshot_built(secs: f64, bytes: usize) {
    histogram!("admit_snapshot_duration_seconds").record(secs);
    histogram!("admit_snapshot_size_bytes").record(bytes as f64);
}

/// One public RPC finished.
pub(crate) fn rpc_done(method: &'static str, code: tonic::Code, secs: f64) {
    histogram!(
        "admit_rpc_duration_seconds",
        "method" => method,
        "code" => code_name(code)
    )
    .record(secs);
}

/// The gRPC name of a status code (`RESOURCE_EXHAUSTED`), as Prometheus
/// labels and the gRPC spec spell them.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use admit_core::Ts;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    /// The counters a batch's tally leaves, by (decision, reason), and the
    /// replays.
    fn counted(tally: Decisions) -> (Vec<(String, String, u64)>, Option<u64>) {
        let rec = DebuggingRecorder::new();
        let snap = rec.snapshotter();
        metrics::with_local_recorder(&rec, || tally.record());
        let mut decisions = Vec::new();
        let mut replays = None;
        for (k, _, _, v) in snap.snapshot().into_vec() {
            let DebugValue::Counter(n) = v else { continue };
            let label = |name: &str| {
                k.key()
                    .labels()
                    .find(|l| l.key() == name)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default()
            };
            match k.key().name() {
                "admit_decisions_total" => decisions.push((label("decision"), label("reason"), n)),
                "admit_idempotent_replays_total" => replays = Some(n),
                _ => {}
            }
        }
        decisions.sort();
        (decisions, replays)
    }

    #[test]
    fn a_batch_counts_every_decision_under_its_reason_and_each_replay_once() {
        let denied = Decision::deny(Reason::LimitReached, Some(Ts(5)));
        let mut allowed = denied.clone();
        allowed.allowed = true;
        allowed.reason = Reason::NewConversation;
        let mut tally = Decisions::default();
        for (d, replayed) in [
            (&allowed, false),
            (&denied, false),
            (&allowed, true),
            (&allowed, false),
            (&denied, true),
        ] {
            tally.add(d, replayed);
        }
        let (decisions, replays) = counted(tally);
        let row = |d: &str, r: &str, n| (d.to_owned(), r.to_owned(), n);
        assert_eq!(
            decisions,
            [
                row("allowed", "NEW_CONVERSATION", 3),
                row("denied", "LIMIT_REACHED", 2)
            ]
        );
        assert_eq!(replays, Some(2));
        // nothing decided, nothing counted
        assert_eq!(counted(Decisions::default()), (vec![], None));
    }
}
