//! [`Client`]: one method per RPC a sender or an operator needs, each
//! converting the crate's types to the `admit.v1` messages and back, and
//! running through the retry loop of [`crate::conn`] with the routing key
//! and retry safety the call has. Imports the generated clients of
//! `admit-proto`.

use std::sync::Arc;

use admit_proto::v1 as pb;
use admit_proto::v1::admin_client::AdminClient;
use admit_proto::v1::admit_send_client::AdmitSendClient;
use admit_proto::v1::cluster_client::ClusterClient;
use admit_proto::v1::test_clock_client::TestClockClient;

use crate::conn::{Conn, Options, Safety, Stats};
use crate::types::{
    Decision, Event, EventResult, Inbound, InboundResult, Outcome, OutcomeResult, SendSpec, Status,
    Target,
};
use crate::Error;

/// A typed client of an admit cluster. Cheap to clone: clones share
/// channels, learned leaders and the retry budget.
#[derive(Debug, Clone)]
pub struct Client {
    conn: Arc<Conn>,
}

fn hint(h: &Option<pb::NodeRef>) -> Option<String> {
    h.as_ref()
        .filter(|h| !h.address.is_empty())
        .map(|h| h.address.clone())
}

fn no_hint<R>(_: &R) -> Option<String> {
    None
}

/// A fresh random key (128 bits, hex) for idempotency and de-duplication.
pub fn new_key() -> String {
    format!("ac-{:032x}", rand::random::<u128>())
}

/// The result of one batch item.
pub type BatchItem = Result<Decision, Error>;

impl Client {
    /// A client of the nodes in `opts`. Connections are made on first use,
    /// so this fails only on unusable options; an unreachable cluster shows
    /// at the first call.
    pub fn new(opts: Options) -> Result<Client, Error> {
        Ok(Client {
            conn: Arc::new(Conn::new(opts)?),
        })
    }

    /// A client of one node with default options.
    pub fn connect(node: &str) -> Result<Client, Error> {
        Client::new(Options::new([node]))
    }

    /// The options the client runs with.
    pub fn options(&self) -> &Options {
        &self.conn.opts
    }

    /// Counters of attempts, retries and the budget.
    pub fn stats(&self) -> Stats {
        self.conn.stats()
    }

    /// The leader address learned for `number`, if any.
    pub fn leader_of(&self, number: &str) -> Option<String> {
        self.conn.leader_of(number)
    }

    fn key(&self, given: Option<&str>) -> (String, Safety) {
        match given.filter(|k| !k.is_empty()) {
            Some(k) => (k.to_owned(), Safety::Idempotent),
            None if self.conn.opts.generate_keys => (new_key(), Safety::Idempotent),
            None => (String::new(), Safety::Once),
        }
    }

    /// Decides one send (R3.2). A denial is a decision, not an error.
    pub async fn admit(&self, send: &SendSpec) -> Result<Decision, Error> {
        let (key, safety) = self.key(send.idempotency_key.as_deref());
        let msg = pb::AdmitRequest {
            send: Some(send.to_pb(key.clone())),
        };
        let r = self
            .conn
            .call(
                Some(&send.number),
                safety,
                |r: &pb::AdmitResponse| hint(&r.leader_hint),
                |ch, m| {
                    let req = m.wrap(msg.clone());
                    async move { AdmitSendClient::new(ch).admit(req).await }
                },
            )
            .await?;
        let d = r.decision.ok_or_else(|| Error::Server {
            code: tonic::Code::Internal,
            message: "answer without a decision".into(),
        })?;
        Ok(Decision::from_pb(d, key))
    }

    /// Decides up to 1,000 sends in order (R3.2, as consecutive Admit
    /// calls). Items without a key get one, so the whole batch may be
    /// retried. Routed by the first item's number.
    pub async fn admit_batch(&self, sends: &[SendSpec]) -> Result<Vec<BatchItem>, Error> {
        let mut safety = Safety::Idempotent;
        let mut keys = Vec::with_capacity(sends.len());
        let items: Vec<pb::Send> = sends
            .iter()
            .map(|s| {
                let (k, sf) = self.key(s.idempotency_key.as_deref());
                if sf == Safety::Once {
                    safety = Safety::Once;
                }
                keys.push(k.clone());
                s.to_pb(k)
            })
            .collect();
        let msg = pb::AdmitBatchRequest { sends: items };
        let r = self
            .conn
            .call(
                sends.first().map(|s| s.number.as_str()),
                safety,
                |r: &pb::AdmitBatchResponse| hint(&r.leader_hint),
                |ch, m| {
                    let req = m.wrap(msg.clone());
                    async move { AdmitSendClient::new(ch).admit_batch(req).await }
                },
            )
            .await?;
        Ok(r.results
            .into_iter()
            .map(|x| {
                let key = keys.get(x.index as usize).cloned().unwrap_or_default();
                match x.result {
                    Some(pb::admit_batch_result::Result::Decision(d)) => {
                        Ok(Decision::from_pb(d, key))
                    }
                    Some(pb::admit_batch_result::Result::Error(e)) => Err(Error::InvalidArgument {
                        field: (!e.field.is_empty()).then_some(e.field),
                        message: e.message,
                    }),
                    None => Err(Error::Server {
                        code: tonic::Code::Internal,
                        message: format!("batch item {} without a result", x.index),
                    }),
                }
            })
            .collect())
    }

    /// Releases an admission whose send failed before delivery (R3.5).
    /// True if a counted conversation was un-counted. Idempotent.
    pub async fn release(&self, admission_id: &str) -> Result<bool, Error> {
        let msg = pb::ReleaseRequest {
            admission_id: admission_id.to_owned(),
        };
        let r = self
            .conn
            .call(None, Safety::Idempotent, no_hint, |ch, m| {
                let req = m.wrap(msg.clone());
                async move { AdmitSendClient::new(ch).release(req).await }
            })
            .await?;
        Ok(r.released)
    }

    /// Records a message or call from a customer (R2.1, R7.1).
    pub async fn record_inbound(&self, i: &Inbound) -> Result<InboundResult, Error> {
        let (key, safety) = self.key(i.event_key.as_deref());
        let msg = pb::RecordInboundRequest {
            number_id: i.number.clone(),
            customer_id: i.customer.clone(),
            kind: if i.call {
                pb::InboundKind::Call
            } else {
                pb::InboundKind::Message
            } as i32,
            text: i.text.clone(),
            free_entry_point: i.free_entry_point,
            event_key: key,
        };
        let r = self
            .conn
            .call(Some(&i.number), safety, no_hint, |ch, m| {
                let req = m.wrap(msg.clone());
                async move { AdmitSendClient::new(ch).record_inbound(req).await }
            })
            .await?;
        Ok(InboundResult::from_pb(r))
    }

    /// Reports Meta's outcome of a send (section 9); a failure before
    /// delivery releases its admission (R3.5).
    pub async fn report_outcome(&self, o: &Outcome) -> Result<OutcomeResult, Error> {
        let (key, safety) = self.key(o.event_key.as_deref());
        let msg = o.to_pb(key);
        let r = self
            .conn
            .call(Some(&o.number), safety, no_hint, |ch, m| {
                let req = m.wrap(msg.clone());
                async move { AdmitSendClient::new(ch).report_outcome(req).await }
            })
            .await?;
        Ok(OutcomeResult::from_pb(r))
    }

    /// Applies one platform event (R5.6), at most once per key.
    pub async fn apply_event(
        &self,
        event: &Event,
        event_key: Option<&str>,
    ) -> Result<EventResult, Error> {
        let (key, safety) = self.key(event_key);
        let msg = pb::ApplyEventRequest {
            event_key: key,
            occurred_at_unix_ms: None,
            event: Some(event.to_pb()?),
        };
        let r = self
            .conn
            .call(None, safety, no_hint, |ch, m| {
                let req = m.wrap(msg.clone());
                async move { AdminClient::new(ch).apply_event(req).await }
            })
            .await?;
        Ok(EventResult {
            applied: r.applied,
            duplicate: r.duplicate,
            ignored_reason: (!r.ignored_reason.is_empty()).then_some(r.ignored_reason),
        })
    }

    /// The status of a number or portfolio (section 11).
    pub async fn status(&self, target: &Target) -> Result<Status, Error> {
        let msg = pb::GetStatusRequest {
            target: Some(target.to_pb()),
        };
        let route = match target {
            Target::Number(n) => Some(n.as_str()),
            Target::Portfolio(_) => None,
        };
        let r = self
            .conn
            .call(
                route,
                Safety::Idempotent,
                |r: &pb::GetStatusResponse| hint(&r.leader_hint),
                |ch, m| {
                    let req = m.wrap(msg.clone());
                    async move { AdminClient::new(ch).get_status(req).await }
                },
            )
            .await?;
        r.status.map(Status::from_pb).ok_or_else(|| Error::Server {
            code: tonic::Code::Internal,
            message: "answer without a status".into(),
        })
    }

    /// Every registered number (of `portfolio`, if given), by headroom
    /// ascending, all pages read.
    pub async fn list_numbers(&self, portfolio: Option<&str>) -> Result<Vec<Status>, Error> {
        let mut out = Vec::new();
        let mut token = String::new();
        // bounded: a page holds up to 1,000 numbers
        for _ in 0..10_000 {
            let msg = pb::ListNumbersRequest {
                limit: 1000,
                page_token: token.clone(),
                portfolio_id: portfolio.unwrap_or_default().to_owned(),
            };
            let r = self
                .conn
                .call(None, Safety::Idempotent, no_hint, |ch, m| {
                    let req = m.wrap(msg.clone());
                    async move { AdminClient::new(ch).list_numbers(req).await }
                })
                .await?;
            out.extend(r.numbers.into_iter().map(Status::from_pb));
            if r.next_page_token.is_empty() {
                break;
            }
            token = r.next_page_token;
        }
        Ok(out)
    }

    /// Registers a number or updates its settings (idempotent).
    pub async fn register_number(&self, req: pb::RegisterNumberRequest) -> Result<Status, Error> {
        let number = req.number_id.clone();
        let r = self
            .conn
            .call(Some(&number), Safety::Idempotent, no_hint, |ch, m| {
                let req = m.wrap(req.clone());
                async move { AdminClient::new(ch).register_number(req).await }
            })
            .await?;
        r.status.map(Status::from_pb).ok_or_else(|| Error::Server {
            code: tonic::Code::Internal,
            message: "answer without a status".into(),
        })
    }

    /// A policy profile, defaults filled in.
    pub async fn get_policy(&self, name: &str) -> Result<pb::Policy, Error> {
        let msg = pb::GetPolicyRequest {
            name: name.to_owned(),
        };
        let r = self
            .conn
            .call(None, Safety::Idempotent, no_hint, |ch, m| {
                let req = m.wrap(msg.clone());
                async move { AdminClient::new(ch).get_policy(req).await }
            })
            .await?;
        r.policy.ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    /// Replaces a policy profile as a whole; true if created. Not retried
    /// after an unknown outcome (only when the server says nothing was
    /// applied): a late repeat could overwrite a newer policy set meanwhile.
    pub async fn set_policy(&self, policy: pb::Policy) -> Result<(bool, pb::Policy), Error> {
        let msg = pb::SetPolicyRequest {
            policy: Some(policy),
        };
        let r = self
            .conn
            .call(None, Safety::Once, no_hint, |ch, m| {
                let req = m.wrap(msg.clone());
                async move { AdminClient::new(ch).set_policy(req).await }
            })
            .await?;
        Ok((r.created, r.policy.unwrap_or_default()))
    }

    /// The service clock (Unix ms) and whether it runs in test mode; a
    /// server not in test mode may not say its time (then 0).
    pub async fn clock(&self) -> Result<(i64, bool), Error> {
        let r = self
            .conn
            .call(None, Safety::Idempotent, no_hint, |ch, m| {
                let req = m.wrap(pb::GetClockRequest {});
                async move { TestClockClient::new(ch).get_clock(req).await }
            })
            .await;
        match r {
            Ok(r) => Ok((r.now_unix_ms, r.test_mode)),
            // a server not in test mode does not serve the TestClock service
            // at all: that is an answer ("not test mode"), not an error
            Err(Error::Server {
                code: tonic::Code::Unimplemented,
                ..
            }) => Ok((0, false)),
            Err(e) => Err(e),
        }
    }

    /// Moves the test clock forward (test mode only); the new time.
    pub async fn advance_clock(&self, by_ms: i64) -> Result<i64, Error> {
        // not idempotent: an unknown outcome must not advance twice
        let r = self
            .conn
            .call(None, Safety::Once, no_hint, |ch, m| {
                let req = m.wrap(pb::AdvanceClockRequest { by_ms });
                async move { TestClockClient::new(ch).advance_clock(req).await }
            })
            .await?;
        Ok(r.now_unix_ms)
    }

    /// Sets the test clock (test mode only; idempotent); the new time.
    pub async fn set_clock(&self, now_unix_ms: i64) -> Result<i64, Error> {
        let r = self
            .conn
            .call(None, Safety::Idempotent, no_hint, |ch, m| {
                let req = m.wrap(pb::SetClockRequest { now_unix_ms });
                async move { TestClockClient::new(ch).set_clock(req).await }
            })
            .await?;
        Ok(r.now_unix_ms)
    }

    /// The cluster's nodes.
    pub async fn nodes(&self) -> Result<Vec<pb::Node>, Error> {
        let r = self
            .conn
            .call(None, Safety::Idempotent, no_hint, |ch, m| {
                let req = m.wrap(pb::ListNodesRequest {});
                async move { ClusterClient::new(ch).list_nodes(req).await }
            })
            .await?;
        Ok(r.nodes)
    }

    /// The cluster's shards (or only the asked node's view).
    pub async fn shards(&self, local_only: bool) -> Result<Vec<pb::Shard>, Error> {
        let r = self
            .conn
            .call(None, Safety::Idempotent, no_hint, |ch, m| {
                let req = m.wrap(pb::ListShardsRequest { local_only });
                async move { ClusterClient::new(ch).list_shards(req).await }
            })
            .await?;
        Ok(r.shards)
    }

    /// Registers a new node by its API address (its peer port is the API
    /// port + 1, the default layout); the nodes after the change.
    pub async fn add_node(&self, node_id: u64, address: &str) -> Result<Vec<pb::Node>, Error> {
        let msg = pb::AddNodeRequest {
            node_id,
            address: address.to_owned(),
            peer_address: String::new(),
            // an operator adding a node by hand: its count is checked when
            // it joins by itself (admitd --join)
            shards: 0,
        };
        let r = self
            .conn
            .call(None, Safety::Idempotent, no_hint, |ch, m| {
                let req = m.wrap(msg.clone());
                async move { ClusterClient::new(ch).add_node(req).await }
            })
            .await?;
        Ok(r.nodes)
    }

    /// Starts draining a node; the nodes after the change.
    pub async fn remove_node(&self, node_id: u64) -> Result<Vec<pb::Node>, Error> {
        let r = self
            .conn
            .call(None, Safety::Idempotent, no_hint, |ch, m| {
                let req = m.wrap(pb::RemoveNodeRequest { node_id });
                async move { ClusterClient::new(ch).remove_node(req).await }
            })
            .await?;
        Ok(r.nodes)
    }

    /// The template of a send, for outcome reports.
    pub(crate) fn template_of(send: &SendSpec) -> Option<String> {
        send.template_id().map(str::to_owned)
    }
}
