//! Applying a translated delivery through admit's public API in process
//! ([`Sink`], implemented by `admit_server::InProcess`): the same validation
//! and Raft writes as the gRPC calls. Each action carries its key, so a
//! repeated delivery (after a restart too, or at another node) is answered
//! `duplicate` from replicated state. An action the API refuses for good
//! (an unknown number: NOT_FOUND; a value it cannot take: INVALID_ARGUMENT)
//! is skipped and counted: Meta's retry would not cure it. Anything else
//! (no leader, a deadline) stops the delivery unacknowledged, so Meta
//! retries it. Imports the translation, the node-local display index,
//! admit-proto, tonic's `Status`.

use std::collections::HashMap;
use std::future::Future;

use admit_proto::v1 as pb;
use serde::Serialize;
use tonic::{Code, Status};

use crate::numbers::Numbers;
use crate::translate::{Action, Planned, Translation};

/// Where actions go: admit's public API.
pub trait Sink: Send + Sync + 'static {
    fn apply_event(
        &self,
        r: pb::ApplyEventRequest,
    ) -> impl Future<Output = Result<pb::ApplyEventResponse, Status>> + Send;
    fn record_inbound(
        &self,
        r: pb::RecordInboundRequest,
    ) -> impl Future<Output = Result<pb::RecordInboundResponse, Status>> + Send;
    fn report_outcome(
        &self,
        r: pb::ReportOutcomeRequest,
    ) -> impl Future<Output = Result<pb::ReportOutcomeResponse, Status>> + Send;
    fn register_number(
        &self,
        r: pb::RegisterNumberRequest,
    ) -> impl Future<Output = Result<pb::RegisterNumberResponse, Status>> + Send;
    /// The `phone_number_id` registered with these display digits
    /// (`RegisterNumber.display_phone_number`), from replicated state. A sink
    /// without such an index knows none.
    fn number_by_display(
        &self,
        digits: &str,
    ) -> impl Future<Output = Result<Option<String>, Status>> + Send {
        let _ = digits;
        async { Ok(None) }
    }
}

impl Sink for admit_server::InProcess {
    fn apply_event(
        &self,
        r: pb::ApplyEventRequest,
    ) -> impl Future<Output = Result<pb::ApplyEventResponse, Status>> + Send {
        admit_server::InProcess::apply_event(self, r)
    }
    fn record_inbound(
        &self,
        r: pb::RecordInboundRequest,
    ) -> impl Future<Output = Result<pb::RecordInboundResponse, Status>> + Send {
        admit_server::InProcess::record_inbound(self, r)
    }
    fn report_outcome(
        &self,
        r: pb::ReportOutcomeRequest,
    ) -> impl Future<Output = Result<pb::ReportOutcomeResponse, Status>> + Send {
        admit_server::InProcess::report_outcome(self, r)
    }
    fn register_number(
        &self,
        r: pb::RegisterNumberRequest,
    ) -> impl Future<Output = Result<pb::RegisterNumberResponse, Status>> + Send {
        admit_server::InProcess::register_number(self, r)
    }
    fn number_by_display(
        &self,
        digits: &str,
    ) -> impl Future<Output = Result<Option<String>, Status>> + Send {
        admit_server::InProcess::number_by_display(self, digits)
    }
}

/// What a delivery did; the body of the 200 answer.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Actions applied now.
    pub applied: u32,
    /// Actions whose key was applied before (a repeated delivery).
    pub duplicate: u32,
    /// Events the server took but did not act on (e.g. an unknown tier
    /// value, fail safe).
    pub not_applied: u32,
    /// Actions naming a number (or portfolio) admit does not know, display
    /// numbers it cannot map included.
    pub unknown_number: u32,
    /// Actions the API refused as invalid (logged with the reason).
    pub rejected: u32,
    /// Changes of a `field` (or an `object`) admit does not know.
    pub unknown_field: u32,
    /// Changes of a known field whose event admit does not act on.
    pub ignored: u32,
}

/// Why a delivery was not acknowledged: a failure that a retry may cure;
/// the actions before it were applied and are keyed.
#[derive(Debug)]
pub struct Unavailable {
    pub at: String,
    pub status: Status,
}

/// The `phone_number_id` of each display number a delivery names without
/// one: the number registered with it in admit's replicated state (the same
/// answer on every node), else the node-local index (configured pairs, and
/// pairs learned from deliveries that carry both forms), for numbers
/// registered without a display number. A failed lookup leaves the delivery
/// unacknowledged (Meta retries it): applying it without the number would
/// count the change as unknown for good.
pub async fn resolve_displays<S: Sink>(
    sink: &S,
    local: &Numbers,
    displays: impl IntoIterator<Item = String>,
) -> Result<HashMap<String, String>, Unavailable> {
    let mut found = HashMap::new();
    for d in displays {
        if found.contains_key(&d) {
            continue;
        }
        let id = match sink.number_by_display(&d).await {
            Ok(Some(id)) => Some(id),
            Ok(None) => local.get(&d),
            // a node of an older build does not know the lookup (mid-upgrade):
            // not found there, so the node-local index answers
            Err(status) if status.code() == Code::Unimplemented => {
                older_peers(&status);
                local.get(&d)
            }
            Err(status) => {
                return Err(Unavailable {
                    at: format!("display_phone_number {d}"),
                    status,
                })
            }
        };
        if let Some(id) = id {
            found.insert(d, id);
        }
    }
    Ok(found)
}

/// Whether this process already said that some nodes cannot answer the
/// display-number lookup (said once: it lasts the whole upgrade).
static OLDER_PEERS_TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Counts a lookup that some nodes could not answer, and says so in the log
/// the first time; true then.
fn older_peers(status: &Status) -> bool {
    metrics::counter!("admit_webhook_display_lookup_partial_total").increment(1);
    let first = !OLDER_PEERS_TOLD.swap(true, std::sync::atomic::Ordering::Relaxed);
    if first {
        tracing::warn!(reason = %status.message(), "display number lookup: some nodes run an older build that cannot answer it; their shards count as not holding the number and the node-local index is used (logged once)");
    }
    first
}

/// Counts what the translation found, then applies its actions in order.
pub async fn apply<S: Sink>(sink: &S, t: Translation) -> Result<Report, Unavailable> {
    let mut r = Report::default();
    for f in &t.unknown {
        metrics::counter!("admit_webhook_unknown_total", "field" => label(f)).increment(1);
        tracing::debug!(field = %f, "webhook field not known; accepted");
        r.unknown_field += 1;
    }
    for (f, what) in &t.ignored {
        metrics::counter!("admit_webhook_ignored_total", "field" => label(f)).increment(1);
        tracing::debug!(field = %f, %what, "webhook change not acted on");
        r.ignored += 1;
    }
    for (f, shown) in &t.unresolved {
        metrics::counter!("admit_webhook_unknown_number_total", "field" => label(f)).increment(1);
        tracing::warn!(field = %f, display_phone_number = %shown, "webhook names a display number admit cannot map to a phone_number_id; skipped");
        r.unknown_number += 1;
    }
    for p in t.planned {
        one(sink, p, &mut r).await?;
    }
    Ok(r)
}

async fn one<S: Sink>(sink: &S, p: Planned, r: &mut Report) -> Result<(), Unavailable> {
    let res = match p.action {
        Action::Event(e) => sink.apply_event(e).await.map(|a| {
            if a.duplicate {
                Done::Duplicate
            } else if a.applied {
                Done::Applied
            } else {
                tracing::info!(field = %p.field, at = %p.at, reason = %a.ignored_reason, "webhook event not applied");
                Done::NotApplied
            }
        }),
        Action::Inbound(i) => sink.record_inbound(i).await.map(|a| Done::of(a.duplicate)),
        Action::Outcome(o) => outcome(sink, o).await.map(|a| Done::of(a.duplicate)),
        Action::Throughput(n) => sink.register_number(n).await.map(|_| Done::Applied),
    };
    let kind = match res {
        Ok(Done::Applied) => {
            r.applied += 1;
            "applied"
        }
        Ok(Done::Duplicate) => {
            r.duplicate += 1;
            "duplicate"
        }
        Ok(Done::NotApplied) => {
            r.not_applied += 1;
            "not_applied"
        }
        Err(s) if s.code() == Code::NotFound => {
            tracing::warn!(field = %p.field, at = %p.at, reason = %s.message(), "webhook names what admit does not know; skipped");
            metrics::counter!("admit_webhook_unknown_number_total", "field" => label(&p.field))
                .increment(1);
            r.unknown_number += 1;
            "unknown_number"
        }
        Err(s) if permanent(s.code()) => {
            tracing::warn!(field = %p.field, at = %p.at, reason = %s.message(), "webhook change refused; skipped");
            r.rejected += 1;
            "rejected"
        }
        Err(status) => return Err(Unavailable { at: p.at, status }),
    };
    metrics::counter!("admit_webhook_actions_total", "field" => label(&p.field), "result" => kind)
        .increment(1);
    Ok(())
}

/// A status's outcome. An admission id echoed back that the server refuses
/// (of another number's scope, say) must not cost the error code's reaction:
/// the outcome is then reported without it.
async fn outcome<S: Sink>(
    sink: &S,
    o: pb::ReportOutcomeRequest,
) -> Result<pb::ReportOutcomeResponse, Status> {
    if o.admission_id.is_empty() {
        return sink.report_outcome(o).await;
    }
    let without = pb::ReportOutcomeRequest {
        admission_id: String::new(),
        ..o.clone()
    };
    match sink.report_outcome(o).await {
        // malformed, unknown (a wrong or missing seal), or another caller's
        Err(s)
            if matches!(
                s.code(),
                Code::InvalidArgument | Code::NotFound | Code::PermissionDenied
            ) && s.message().contains("admission") =>
        {
            tracing::warn!(reason = %s.message(), "webhook status names an admission admit refuses; reported without it");
            sink.report_outcome(without).await
        }
        other => other,
    }
}

enum Done {
    Applied,
    Duplicate,
    NotApplied,
}

impl Done {
    fn of(duplicate: bool) -> Done {
        if duplicate {
            Done::Duplicate
        } else {
            Done::Applied
        }
    }
}

/// Refusals a retry of the same payload cannot cure.
fn permanent(c: Code) -> bool {
    matches!(
        c,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange | Code::AlreadyExists
    )
}

/// A metric label from payload text: bounded in length.
fn label(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit,
    };

    use super::*;
    use crate::translate;

    /// Counters by name and labels (`name{k=v}`), as a recorder sees them.
    #[derive(Debug, Default, Clone)]
    struct Counts(Arc<Mutex<BTreeMap<String, u64>>>);

    struct One(Counts, String);

    impl CounterFn for One {
        fn increment(&self, v: u64) {
            *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() += v;
        }
        fn absolute(&self, v: u64) {
            self.0 .0.lock().unwrap().insert(self.1.clone(), v);
        }
    }

    impl metrics::Recorder for Counts {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            Counter::from_arc(Arc::new(One(self.clone(), name)))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    /// Answers every call "applied"; a number other than 1001 is unknown.
    struct Fake;

    fn known(n: &str) -> Result<(), Status> {
        if n == "1001" {
            Ok(())
        } else {
            Err(Status::not_found(format!("unknown number {n}")))
        }
    }

    impl Sink for Fake {
        async fn apply_event(
            &self,
            _: pb::ApplyEventRequest,
        ) -> Result<pb::ApplyEventResponse, Status> {
            Ok(pb::ApplyEventResponse {
                applied: true,
                ..Default::default()
            })
        }
        async fn record_inbound(
            &self,
            r: pb::RecordInboundRequest,
        ) -> Result<pb::RecordInboundResponse, Status> {
            known(&r.number_id).map(|_| Default::default())
        }
        async fn report_outcome(
            &self,
            r: pb::ReportOutcomeRequest,
        ) -> Result<pb::ReportOutcomeResponse, Status> {
            known(&r.number_id).map(|_| Default::default())
        }
        async fn register_number(
            &self,
            r: pb::RegisterNumberRequest,
        ) -> Result<pb::RegisterNumberResponse, Status> {
            known(&r.number_id).map(|_| Default::default())
        }
    }

    /// A sink whose display lookup answers as a cluster with a node of an
    /// older build does: UNIMPLEMENTED (or, `down`, a failure a retry cures).
    struct Mixed {
        down: bool,
    }

    impl Sink for Mixed {
        async fn apply_event(
            &self,
            r: pb::ApplyEventRequest,
        ) -> Result<pb::ApplyEventResponse, Status> {
            Fake.apply_event(r).await
        }
        async fn record_inbound(
            &self,
            r: pb::RecordInboundRequest,
        ) -> Result<pb::RecordInboundResponse, Status> {
            Fake.record_inbound(r).await
        }
        async fn report_outcome(
            &self,
            r: pb::ReportOutcomeRequest,
        ) -> Result<pb::ReportOutcomeResponse, Status> {
            Fake.report_outcome(r).await
        }
        async fn register_number(
            &self,
            r: pb::RegisterNumberRequest,
        ) -> Result<pb::RegisterNumberResponse, Status> {
            Fake.register_number(r).await
        }
        async fn number_by_display(&self, _: &str) -> Result<Option<String>, Status> {
            if self.down {
                return Err(Status::unavailable("no leader"));
            }
            // what `Reads::number_by_display` answers when a node did not
            // know the question and no other shard holds the digits
            Err(Status::unimplemented(
                "unknown request kind: display number lookup: nodes [3] run a build without it",
            ))
        }
    }

    /// Mid-upgrade, a node that does not know the display lookup counts as
    /// not holding the number: the node-local index answers (and the log
    /// says so once); a failure a retry cures still leaves the delivery
    /// unacknowledged.
    #[tokio::test]
    async fn a_lookup_older_nodes_cannot_answer_falls_back_to_the_local_index() {
        let counts = Counts::default();
        let _guard = metrics::set_default_local_recorder(&counts);
        let local = Numbers::new([("15550001234".to_owned(), "1001".to_owned())]);
        let asked = || ["15550001234".to_owned(), "15559999999".to_owned()];
        let found = resolve_displays(&Mixed { down: false }, &local, asked())
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found["15550001234"], "1001");
        assert!(resolve_displays(&Mixed { down: false }, &local, asked())
            .await
            .is_ok());
        let c = counts.0.lock().unwrap().clone();
        assert_eq!(
            c.get("admit_webhook_display_lookup_partial_total{}"),
            Some(&4),
            "{c:?}"
        );
        // told once for the process
        assert!(!older_peers(&Status::unimplemented("again")));
        let err = resolve_displays(&Mixed { down: true }, &local, asked())
            .await
            .unwrap_err();
        assert_eq!(err.status.code(), Code::Unavailable);
    }

    #[tokio::test]
    async fn unknown_fields_and_numbers_are_counted_by_field() {
        let counts = Counts::default();
        let _guard = metrics::set_default_local_recorder(&counts);
        let body = br#"{"object":"whatsapp_business_account","entry":[{"id":"waba","time":1,"changes":[
            {"field":"security","value":{}},
            {"field":"security","value":{"event":"PIN_CHANGED"}},
            {"field":"message_template_components_update","value":{}},
            {"field":"messages","value":{"metadata":{"phone_number_id":"2002"},
              "messages":[{"from":"447700900123","id":"wamid.1","type":"text","text":{"body":"hi"}}]}},
            {"field":"phone_number_quality_update","value":{"display_phone_number":"15550000000","event":"FLAGGED"}},
            {"field":"message_template_quality_update","value":{"new_quality_score":"GREEN","message_template_id":7}}]}]}"#;
        let env = translate::parse(body).unwrap();
        let t = translate::translate(&env, &|_| None).unwrap();
        let r = apply(&Fake, t).await.unwrap();
        assert_eq!(
            (r.unknown_field, r.unknown_number, r.applied),
            (3, 2, 1),
            "{r:?}"
        );
        let c = counts.0.lock().unwrap().clone();
        let get = |k: &str| c.get(k).copied().unwrap_or(0);
        assert_eq!(
            get("admit_webhook_unknown_total{field=security}"),
            2,
            "{c:?}"
        );
        assert_eq!(
            get("admit_webhook_unknown_total{field=message_template_components_update}"),
            1,
            "{c:?}"
        );
        assert_eq!(
            get("admit_webhook_unknown_number_total{field=messages}"),
            1,
            "{c:?}"
        );
        assert_eq!(
            get("admit_webhook_unknown_number_total{field=phone_number_quality_update}"),
            1,
            "{c:?}"
        );
        assert_eq!(
            get(
                "admit_webhook_actions_total{field=message_template_quality_update,result=applied}"
            ),
            1,
            "{c:?}"
        );
    }
}
