//! What nodes say to each other: the requests one node relays to another
//! ([`NodeReq`]), their answers ([`NodeResp`] in an [`Envelope`]) and their
//! byte form (postcard in an `admit.internal.node.NodeRpc/Call` frame).
//!
//! Plain data over core types: nothing here routes, decides or reads.

use admit_core::{
    AdmitRequest, Command, Decision, NumberId, Output, Policy, PortfolioId, PortfolioStatus,
    Reader, ScopeKey, ScopeStatus, Ts,
};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Generated types of `admit.internal.node` (compiled in `admit-proto`).
pub use admit_proto::internal::node as pb;

/// A decided send: the decision, the scope it was decided in (`None` for an
/// unknown number) and whether it is a recorded decision returned again for
/// its idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decided {
    pub decision: Decision,
    pub scope: Option<ScopeKey>,
    pub replayed: bool,
}

/// A node as others reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    pub id: u64,
    pub addr: String,
}

/// A request relayed to another node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeReq {
    /// Propose a command to the shard (the receiver stamps its clock).
    Write { shard: u32, cmd: Box<Command> },
    /// Decide sends (fast path, rate limits, log) on the shards' leader.
    Admit { reqs: Vec<AdmitRequest> },
    /// A read from the shard leader's applied state.
    Read { shard: u32, read: ReadReq },
    /// A read answered for every shard the receiver leads with a lease
    /// (never relayed).
    Sweep { sweep: SweepReq },
    /// Test mode: move the receiver's clock to at least this time (the
    /// TestClock service sets every node's clock, never relayed).
    SetClock { now: Ts },
    /// [`NodeReq::Write`] of an audited change, with its authenticated
    /// caller (checked by the entry node; peers are members, see
    /// docs/security.md), which the command carries into the log.
    WriteFor {
        shard: u32,
        cmd: Box<Command>,
        by: String,
    },
    /// The receiver's service clock, for the bound on stamping
    /// (`crate::skew`); answered with `NodeResp::Clock`, never relayed.
    ReadClock,
    /// Requests of many callers relayed to one node in one frame (issue 14):
    /// each with its own deadline and hop count, each answered by its own
    /// envelope, in order ([`NodeResp::Batch`]). Never nested.
    Batch { items: Vec<BatchItem> },
}

/// One request of a [`NodeReq::Batch`]: its bytes (a [`NodeReq`]), what is
/// left of its deadline when sent, and its hop count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchItem {
    pub body: Vec<u8>,
    pub deadline_ms: u64,
    pub hops: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReadReq {
    NumberStatus { number: NumberId, now: Ts },
    PortfolioStatus { id: PortfolioId, now: Ts },
    Policy { name: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SweepReq {
    /// Where is this number registered.
    Lookup { number: NumberId },
    /// A portfolio's status on each shard.
    Portfolio { id: PortfolioId, now: Ts },
    /// Every scope's status (ListNumbers).
    Scopes { now: Ts },
    /// The number registered with these display digits (webhook events
    /// that carry only that form).
    Display { digits: String },
}

impl SweepReq {
    /// One shard's answer, from its reader.
    pub fn answer(&self, r: &Reader) -> SweepItem {
        match self {
            // a claim is as right as a registration (issue 11, item 9)
            SweepReq::Lookup { number } => {
                SweepItem::Lookup(r.scope_of(number).or_else(|| r.claim_of(number)))
            }
            SweepReq::Portfolio { id, now } => SweepItem::Portfolio(r.portfolio_status(id, *now)),
            SweepReq::Scopes { now } => SweepItem::Scopes(r.list_by_headroom(*now)),
            SweepReq::Display { digits } => SweepItem::Display(r.number_by_display(digits)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SweepItem {
    Lookup(Option<ScopeKey>),
    Portfolio(Option<PortfolioStatus>),
    Scopes(Vec<ScopeStatus>),
    /// The number and when it was registered with the digits.
    Display(Option<(NumberId, Ts)>),
}

/// One shard's answer to a sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardItem {
    pub shard: u32,
    pub item: SweepItem,
}

/// A sweep answer: the shards the node leads with a lease and an item per shard.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SweepResp {
    pub led: Vec<u32>,
    pub items: Vec<ShardItem>,
    /// Lookup only: the scope as found on any local replica.
    pub any: Option<ScopeKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum NodeResp {
    Output(Output),
    /// The receiver's clock after a `SetClock`, or as a `ReadClock` read it.
    Clock(Ts),
    Admitted(Vec<Result<Decided, ApiError>>),
    NumberStatus(Option<ScopeStatus>),
    PortfolioStatus(Option<PortfolioStatus>),
    Policy(Option<Policy>),
    Sweep(SweepResp),
    /// The answers of a [`NodeReq::Batch`], one per request, in order.
    Batch(Vec<Envelope>),
}

/// The body of a response frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub result: Result<NodeResp, ApiError>,
    /// The node that finally served the request (the shard's leader), if
    /// the request was shard-bound.
    pub served_by: Option<NodeRef>,
}

impl Envelope {
    /// A request refused before it was served (nothing applied).
    pub fn refused(e: ApiError) -> Envelope {
        Envelope {
            result: Err(e),
            served_by: None,
        }
    }
}

/// An answer of the wrong kind (a bug, or nodes of different versions).
pub fn unexpected(r: NodeResp) -> ApiError {
    ApiError::Internal(format!("unexpected answer {r:?}"))
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    postcard::to_allocvec(v).map_err(|e| ApiError::Internal(format!("encode: {e}")))
}

pub fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, ApiError> {
    postcard::from_bytes(b).map_err(|e| ApiError::Internal(format!("decode: {e}")))
}

/// Whether request bytes that did not decode name a kind of request this
/// build does not know (a newer node's, during a rolling upgrade): the
/// request's own kind, or the kind of the read or sweep it carries. Read from
/// the variant indexes postcard writes first, against the variants this
/// build's types list, so damaged bytes of a known kind are not taken for it.
/// A write whose command is of a kind this build does not know is such a
/// request too.
pub fn unknown_kind(b: &[u8]) -> bool {
    fn tag(b: &[u8]) -> Option<(u32, &[u8])> {
        postcard::take_from_bytes::<u32>(b).ok()
    }
    let first = |r: &NodeReq| {
        let b = encode(r).ok()?;
        tag(&b).map(|(t, _)| t)
    };
    let Some((kind, rest)) = tag(b) else {
        return false;
    };
    if kind as usize >= variant_count::<NodeReq>() {
        return true;
    }
    let sweep = NodeReq::Sweep {
        sweep: SweepReq::Scopes { now: Ts(0) },
    };
    let read = NodeReq::Read {
        shard: 0,
        read: ReadReq::Policy {
            name: String::new(),
        },
    };
    let write = NodeReq::Write {
        shard: 0,
        cmd: Box::new(Command::Tick),
    };
    let write_for = NodeReq::WriteFor {
        shard: 0,
        cmd: Box::new(Command::Tick),
        by: String::new(),
    };
    if Some(kind) == first(&write) || Some(kind) == first(&write_for) {
        // the command's kind, after the shard (a u32): a command added after
        // this build (a scope claim to a build before claims, say)
        tag(rest)
            .and_then(|(_, rest)| tag(rest))
            .is_some_and(|(k, _)| k as usize >= variant_count::<Command>())
    } else if Some(kind) == first(&sweep) {
        tag(rest).is_some_and(|(k, _)| k as usize >= variant_count::<SweepReq>())
    } else if Some(kind) == first(&read) {
        // after the shard (a u32)
        tag(rest)
            .and_then(|(_, rest)| tag(rest))
            .is_some_and(|(k, _)| k as usize >= variant_count::<ReadReq>())
    } else {
        false
    }
}

/// The answer of a node that does not know the kind of a request sent to it:
/// [`ApiError::UnknownKind`] as UNIMPLEMENTED (from this build on), or what
/// builds before it answered any request they could not decode (INTERNAL with
/// postcard's text for an unknown variant; they fail on nothing else between
/// admit nodes). Either way nothing was done there.
pub fn unknown_kind_answer(s: &tonic::Status) -> bool {
    const BEFORE: &str = "internal error: decode: Serde Deserialization Error";
    s.code() == tonic::Code::Unimplemented
        || (s.code() == tonic::Code::Internal && s.message() == BEFORE)
}

/// How many variants serde's derive lists for the enum `T` (read through a
/// deserializer that only records them).
fn variant_count<T: serde::de::DeserializeOwned>() -> usize {
    use serde::de::{Error, Visitor};
    type E = serde::de::value::Error;
    struct Probe(usize);
    impl<'de> serde::Deserializer<'de> for &mut Probe {
        type Error = E;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, E> {
            Err(E::custom("not an enum"))
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, E> {
            self.0 = variants.len();
            Err(E::custom("counted"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct identifier ignored_any
        }
    }
    let mut p = Probe(0);
    let _ = T::deserialize(&mut p);
    p.0
}

/// Whether proposing `cmd` twice has the effect of proposing it once (so an
/// unknown outcome may be retried automatically).
pub fn idempotent(cmd: &Command) -> bool {
    match cmd {
        Command::Admit(r) => r.idempotency_key.is_some(),
        Command::Inbound(i) => i.event_key.is_some(),
        Command::Outcome(o) => o.event_key.is_some(),
        Command::Platform { event_key, .. } => event_key.is_some(),
        // a repeat after an unknown outcome could land after a newer
        // policy and overwrite it (issue 11, item 9)
        Command::SetPolicy(_) => false,
        Command::Release(_)
        | Command::RegisterNumber(_)
        | Command::RegisterPortfolio(_)
        | Command::Tick => true,
        // the first claim holds: a repeat answers the same scope
        Command::ClaimScope { .. } => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11, item 9: a policy write is never repeated after an unknown
    /// outcome (a late repeat could overwrite a newer policy); a tick is.
    /// A request of a kind added after this build (a newer node's request,
    /// or a read or sweep kind it carries) is told apart from damaged bytes of
    /// a known kind, and both from requests that decode.
    #[test]
    fn an_unknown_request_kind_is_recognised() {
        let known = [
            NodeReq::ReadClock,
            NodeReq::Sweep {
                sweep: SweepReq::Display {
                    digits: "15550001234".into(),
                },
            },
            NodeReq::Read {
                shard: 300,
                read: ReadReq::Policy { name: "p".into() },
            },
        ];
        for r in &known {
            let b = encode(r).unwrap();
            assert!(decode::<NodeReq>(&b).is_ok());
            assert!(!unknown_kind(&b), "{r:?}");
        }
        // a write of a command this build does not know (a newer build's)
        for w in [
            NodeReq::Write {
                shard: 300,
                cmd: Box::new(Command::Tick),
            },
            NodeReq::WriteFor {
                shard: 300,
                cmd: Box::new(Command::Tick),
                by: "ops".into(),
            },
        ] {
            let mut b = encode(&w).unwrap();
            assert!(!unknown_kind(&b));
            // after the kind and the two-byte shard 300
            b[3] = variant_count::<Command>() as u8;
            assert!(decode::<NodeReq>(&b).is_err());
            assert!(unknown_kind(&b), "{w:?}");
        }
        // one past the last kind of each: the next build's first new kind
        let mut newer = vec![variant_count::<NodeReq>() as u8];
        let mut sweep = encode(&known[1]).unwrap();
        sweep[1] = variant_count::<SweepReq>() as u8;
        let mut read = encode(&known[2]).unwrap();
        // the shard 300 is two bytes
        read[3] = variant_count::<ReadReq>() as u8;
        newer.push(0);
        for b in [&newer, &sweep, &read] {
            assert!(decode::<NodeReq>(b).is_err());
            assert!(unknown_kind(b), "{b:?}");
        }
        // a known kind cut short, and nothing at all
        let cut = &encode(&known[1]).unwrap()[..3];
        assert!(decode::<NodeReq>(cut).is_err());
        assert!(!unknown_kind(cut));
        assert!(!unknown_kind(&[]));
        // the answer: this build's, and the one builds before it gave
        let s = ApiError::UnknownKind("x".into()).into_status();
        assert!(unknown_kind_answer(&s));
        let before = ApiError::Internal(format!("decode: {}", postcard::Error::SerdeDeCustom));
        assert!(unknown_kind_answer(&before.into_status()));
        let damaged = ApiError::Internal(format!(
            "decode: {}",
            postcard::Error::DeserializeUnexpectedEnd
        ));
        assert!(!unknown_kind_answer(&damaged.into_status()));
    }

    /// A scope claim repeated after an unknown outcome answers the same scope
    /// (the first claim holds), so it is retried like a registration.
    #[test]
    fn a_scope_claim_is_idempotent() {
        let n = NumberId::parse("n", "1").unwrap();
        let claim = Command::ClaimScope {
            number: n,
            scope: ScopeKey::Number(n),
        };
        assert!(idempotent(&claim));
    }

    #[test]
    fn a_policy_write_is_not_retried_as_idempotent() {
        let set = Command::SetPolicy(Policy::meta());
        assert!(!idempotent(&set));
        assert!(idempotent(&Command::Tick));
    }
}
