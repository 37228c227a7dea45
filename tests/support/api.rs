//! Short request builders and calls shared by the end-to-end topics.

use std::collections::BTreeSet;

use admit_proto::v1 as pb;

use super::{cust, shard_of, template, Clients};

/// The number under test.
pub const N: &str = "100200300";

pub fn batch_decisions(r: pb::AdmitBatchResponse) -> Vec<pb::Decision> {
    r.results
        .into_iter()
        .map(|x| match x.result.unwrap() {
            pb::admit_batch_result::Result::Decision(d) => d,
            pb::admit_batch_result::Result::Error(e) => panic!("item {}: {e:?}", x.index),
        })
        .collect()
}

/// A second number, outside the one under test.
pub const OTHER: &str = "100200301";

pub fn outcome(
    number: &str,
    customer: u64,
    status: pb::DeliveryStatus,
    code: Option<u32>,
) -> pb::ReportOutcomeRequest {
    pb::ReportOutcomeRequest {
        number_id: number.into(),
        customer_id: cust(customer),
        status: status as i32,
        meta_error_code: code,
        ..Default::default()
    }
}

/// A send that failed with Meta error `code`.
pub fn failed(number: &str, customer: u64, code: u32) -> pb::ReportOutcomeRequest {
    outcome(number, customer, pb::DeliveryStatus::Failed, Some(code))
}

pub async fn report(c: &mut Clients, r: pb::ReportOutcomeRequest) -> pb::ReportOutcomeResponse {
    c.admit
        .report_outcome(r)
        .await
        .expect("report outcome")
        .into_inner()
}

pub fn effects(r: &pb::ReportOutcomeResponse) -> Vec<pb::OutcomeEffect> {
    r.effects
        .iter()
        .map(|e| pb::OutcomeEffect::try_from(*e).expect("a known effect"))
        .collect()
}

/// The decision for `send`, as (reason, retry_after_ms, retry_at_unix_ms).
pub async fn decide(c: &mut Clients, send: pb::Send) -> (pb::Reason, Option<i64>, Option<i64>) {
    let d = c.admit(send).await.expect("decided");
    (d.reason(), d.retry_after_ms, d.retry_at_unix_ms)
}

pub fn mkt(number: &str, customer: u64) -> pb::Send {
    template(number, customer, "t-mkt", pb::TemplateCategory::Marketing)
}

pub fn util(number: &str, customer: u64) -> pb::Send {
    template(number, customer, "t-util", pb::TemplateCategory::Utility)
}

pub async fn release(c: &mut Clients, id: &str) -> pb::ReleaseResponse {
    c.admit
        .release(pb::ReleaseRequest {
            admission_id: id.into(),
        })
        .await
        .expect("release")
        .into_inner()
}

pub fn number_target(n: &str) -> pb::Target {
    pb::Target {
        target: Some(pb::target::Target::NumberId(n.into())),
    }
}

pub fn portfolio_target(p: &str) -> pb::Target {
    pb::Target {
        target: Some(pb::target::Target::PortfolioId(p.into())),
    }
}

pub fn by_name(s: &str) -> pb::tier_value::Tier {
    pb::tier_value::Tier::TierName(s.into())
}

pub fn by_value(v: i64) -> pb::tier_value::Tier {
    pb::tier_value::Tier::TierValue(v)
}

pub async fn set_tier(
    c: &mut Clients,
    target: pb::Target,
    tier: pb::tier_value::Tier,
    key: &str,
) -> Result<pb::ApplyEventResponse, tonic::Status> {
    c.admin
        .apply_event(pb::ApplyEventRequest {
            event_key: key.into(),
            event: Some(pb::apply_event_request::Event::Tier(pb::TierChanged {
                target: Some(target),
                tier: Some(pb::TierValue { tier: Some(tier) }),
                ..Default::default()
            })),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// The tier as status shows it: (name, limit, unlimited).
pub async fn tier_of(c: &mut Clients, n: &str) -> (String, u32, bool) {
    let t = c.status(n).await.usage.unwrap().tier.unwrap();
    (t.name, t.limit, t.unlimited)
}

pub async fn get_policy(c: &mut Clients, name: &str) -> pb::Policy {
    c.admin
        .get_policy(pb::GetPolicyRequest { name: name.into() })
        .await
        .expect("get policy")
        .into_inner()
        .policy
        .expect("a policy")
}

pub async fn set_policy(
    c: &mut Clients,
    policy: pb::Policy,
) -> Result<pb::SetPolicyResponse, tonic::Status> {
    c.admin
        .set_policy(pb::SetPolicyRequest {
            policy: Some(policy),
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn portfolio_status(c: &mut Clients, p: &str) -> Result<pb::StatusView, tonic::Status> {
    c.admin
        .get_status(pb::GetStatusRequest {
            target: Some(portfolio_target(p)),
        })
        .await
        .map(|r| r.into_inner().status.expect("a status"))
}

/// `k` numbers `<prefix>00`, `<prefix>01`, ... whose scopes live on `k`
/// different shards.
pub fn numbers_on_distinct_shards(prefix: &str, k: usize) -> Vec<String> {
    let mut seen = BTreeSet::new();
    (0..100)
        .map(|i| format!("{prefix}{i:02}"))
        .filter(|n| seen.insert(shard_of(n)))
        .take(k)
        .collect()
}

pub async fn restrict_portfolio(
    c: &mut Clients,
    p: &str,
    lifted: bool,
) -> Result<pb::ApplyEventResponse, tonic::Status> {
    c.admin
        .apply_event(pb::ApplyEventRequest {
            event: Some(pb::apply_event_request::Event::AccountRestriction(
                pb::AccountRestriction {
                    target: Some(portfolio_target(p)),
                    lifted,
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}
