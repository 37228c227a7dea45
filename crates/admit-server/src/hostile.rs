//! Hostile input (issue 11), fuzz-style on stable with proptest: random and
//! damaged bytes fed to what a node decodes from others or from its disk
//! (the Raft log entry codec with this App's command layouts, the
//! node-to-node relay frames of `crate::wire`), and random protobuf
//! requests fed to the request conversion (`crate::convert`). Never a
//! panic; a conversion error is INVALID_ARGUMENT naming a field of the
//! request.
//!
//! Tests only (`#[cfg(test)]`); may import anything in the crate. Case
//! counts are small so `cargo test` runs them in seconds;
//! `PROPTEST_CASES=100000 cargo test -p admit-server --lib hostile` runs
//! more.

use admit_core::{
    AdmitRequest, Category, Command, IdempotencyKey, NumberId, Policy, SendKind, TemplateId, Ts,
    WaId,
};
use admit_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message;

use crate::app::{ShardApp, Stamped};
use crate::convert;
use crate::error::ApiError;
use crate::wire::{self, Envelope, NodeReq, NodeResp, ReadReq, SweepReq};

/// Case count: `PROPTEST_CASES` when set, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn admit_req(customer: u64, keyed: bool) -> AdmitRequest {
    AdmitRequest {
        number: NumberId::parse("n", "100200300").unwrap(),
        customer: WaId::parse("c", &(491_500_000_000 + customer).to_string()).unwrap(),
        kind: SendKind::Template {
            id: TemplateId::parse("t", "welcome").unwrap(),
            category: Category::Utility,
        },
        idempotency_key: keyed.then(|| IdempotencyKey::parse("k", "key-1").unwrap()),
    }
}

/// Commands of several kinds, as a proposer stamps them.
fn stamped() -> Vec<Stamped> {
    vec![
        Stamped {
            at: Ts(1_893_456_000_000),
            cmd: Command::Admit(admit_req(1, true)),
            by: None,
        },
        Stamped {
            at: Ts(1_893_456_000_001),
            cmd: Command::SetPolicy(Policy::meta()),
            by: Some("ops".into()),
        },
        Stamped {
            at: Ts(1_893_456_000_002),
            cmd: Command::Tick,
            by: None,
        },
    ]
}

fn entry() -> Vec<u8> {
    admit_raft::encode_log_entry::<ShardApp>(7, 42, stamped())
}

fn node_reqs() -> Vec<NodeReq> {
    let n = NumberId::parse("n", "100200300").unwrap();
    vec![
        NodeReq::Admit {
            reqs: vec![admit_req(1, true), admit_req(2, false)],
        },
        NodeReq::Write {
            shard: 3,
            cmd: Box::new(Command::Admit(admit_req(3, true))),
        },
        NodeReq::WriteFor {
            shard: 1,
            cmd: Box::new(Command::SetPolicy(Policy::seeds())),
            by: "ops".into(),
        },
        NodeReq::Read {
            shard: 2,
            read: ReadReq::NumberStatus {
                number: n,
                now: Ts(5),
            },
        },
        NodeReq::Sweep {
            sweep: SweepReq::Lookup { number: n },
        },
        NodeReq::SetClock { now: Ts(9) },
        NodeReq::ReadClock,
    ]
}

fn envelopes() -> Vec<Envelope> {
    vec![
        Envelope {
            result: Ok(NodeResp::Clock(Ts(1))),
            served_by: Some(wire::NodeRef {
                id: 2,
                addr: "127.0.0.1:1".into(),
            }),
        },
        Envelope::refused(ApiError::invalid("send.number_id", "bad")),
        Envelope {
            result: Ok(NodeResp::Policy(Some(Policy::meta()))),
            served_by: None,
        },
    ]
}

/// One damage to a byte string (positions modulo its length).
#[derive(Clone, Debug)]
enum Damage {
    Flip { at: usize, xor: u8 },
    Cut { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, xor)| Damage::Flip { at, xor }),
        any::<usize>().prop_map(|at| Damage::Cut { at }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(at, bytes)| Damage::Insert { at, bytes }),
        (any::<usize>(), 1..16usize).prop_map(|(at, len)| Damage::Remove { at, len }),
    ]
}

fn damaged(mut b: Vec<u8>, ds: &[Damage]) -> Vec<u8> {
    for d in ds {
        let n = b.len().max(1);
        match d {
            Damage::Flip { at, xor } => {
                if !b.is_empty() {
                    b[at % n] ^= xor;
                }
            }
            Damage::Cut { at } => b.truncate(at % n),
            Damage::Insert { at, bytes } => {
                let at = at % (b.len() + 1);
                b.splice(at..at, bytes.iter().copied());
            }
            Damage::Remove { at, len } => {
                let at = at % n;
                let end = (at + len).min(b.len());
                if at < end {
                    b.drain(at..end);
                }
            }
        }
    }
    b
}

/// A conversion's error must be INVALID_ARGUMENT naming a field.
fn named(r: Result<impl Sized, ApiError>) -> Result<(), TestCaseError> {
    match r {
        Ok(_) => Ok(()),
        Err(ApiError::Invalid { field, problem }) => {
            prop_assert!(
                !field.is_empty() && !problem.is_empty(),
                "{field}: {problem}"
            );
            Ok(())
        }
        Err(e) => Err(TestCaseError::fail(format!("not INVALID_ARGUMENT: {e:?}"))),
    }
}

/// Strings a caller may put in an id or key field: empty, digits, long,
/// control characters, non-ASCII.
fn field_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[0-9]{1,20}",
        "[0-9a-zA-Z_.:-]{0,40}",
        ".{0,12}",
        "[0-9]{200,300}",
        any::<String>(),
    ]
}

fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![0..8i32, any::<i32>()]
}

fn send() -> impl Strategy<Value = pb::Send> {
    (
        field_text(),
        field_text(),
        prop::option::of((field_text(), enum_value())),
        any::<bool>(),
        field_text(),
    )
        .prop_map(|(number_id, customer_id, template, free, key)| pb::Send {
            number_id,
            customer_id,
            kind: match template {
                Some((template_id, category)) => Some(pb::send::Kind::Template(pb::Template {
                    template_id,
                    category,
                    ..Default::default()
                })),
                None => free.then_some(pb::send::Kind::FreeForm(pb::FreeForm {})),
            },
            idempotency_key: key,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn log_entries_from_random_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = admit_raft::decode_log_entry::<ShardApp>(&b);
        // behind a valid entry header: term, leader, index, normal, versioned
        let mut h = vec![7, 0, 42, 1, 0];
        h.extend(&b);
        let _ = admit_raft::decode_log_entry::<ShardApp>(&h);
    }

    #[test]
    fn damaged_log_entries_never_panic(ds in prop::collection::vec(damage(), 1..5)) {
        let _ = admit_raft::decode_log_entry::<ShardApp>(&damaged(entry(), &ds));
    }

    #[test]
    fn relay_frames_from_random_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(r) = wire::decode::<NodeReq>(&b) {
            let _ = wire::encode(&r);
        }
        if let Ok(e) = wire::decode::<Envelope>(&b) {
            let _ = wire::encode(&e);
        }
    }

    #[test]
    fn damaged_relay_frames_never_panic(pick in any::<prop::sample::Index>(), ds in prop::collection::vec(damage(), 1..5)) {
        let reqs = node_reqs();
        let r = &reqs[pick.index(reqs.len())];
        let b = damaged(wire::encode(r).unwrap(), &ds);
        if let Ok(r) = wire::decode::<NodeReq>(&b) {
            let _ = format!("{r:?}");
        }
        let envs = envelopes();
        let e = &envs[pick.index(envs.len())];
        let b = damaged(wire::encode(e).unwrap(), &ds);
        if let Ok(e) = wire::decode::<Envelope>(&b) {
            let _ = format!("{e:?}");
        }
    }

    #[test]
    fn random_sends_are_converted_or_refused_by_field(s in send()) {
        named(convert::send_at("send.", Some(&s)))?;
        named(convert::send_at("sends[3].", Some(&s)))?;
    }

    #[test]
    fn requests_from_random_bytes_are_converted_or_refused_by_field(b in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(r) = pb::AdmitRequest::decode(b.as_slice()) {
            named(convert::send_at("send.", r.send.as_ref()))?;
        }
        if let Ok(r) = pb::RecordInboundRequest::decode(b.as_slice()) {
            named(convert::inbound_in(&r))?;
        }
        if let Ok(r) = pb::ReportOutcomeRequest::decode(b.as_slice()) {
            named(convert::outcome_in(&r))?;
        }
        if let Ok(r) = pb::ApplyEventRequest::decode(b.as_slice()) {
            named(convert::platform_event_key(&r.event_key))?;
            named(convert::event_in(r.event.as_ref()))?;
        }
        if let Ok(r) = pb::RegisterNumberRequest::decode(b.as_slice()) {
            named(convert::number_registration_in(&r))?;
        }
        if let Ok(r) = pb::SetPolicyRequest::decode(b.as_slice()) {
            named(convert::policy_name(r.policy.as_ref()))?;
            named(convert::policy_in(r.policy.as_ref(), &Policy::seeds()))?;
        }
        if let Ok(r) = pb::GetStatusRequest::decode(b.as_slice()) {
            named(convert::target("target", r.target.as_ref()))?;
        }
    }

    /// Valid requests with one byte changed: the conversions see values
    /// near the valid ones, where their edges are.
    #[test]
    fn damaged_requests_are_converted_or_refused_by_field(s in send(), ds in prop::collection::vec(damage(), 1..4)) {
        let b = damaged(pb::AdmitRequest { send: Some(s) }.encode_to_vec(), &ds);
        if let Ok(r) = pb::AdmitRequest::decode(b.as_slice()) {
            named(convert::send_at("send.", r.send.as_ref()))?;
        }
        let policy = pb::SetPolicyRequest {
            policy: Some(convert::policy_out(&Policy::meta())),
        };
        let b = damaged(policy.encode_to_vec(), &ds);
        if let Ok(r) = pb::SetPolicyRequest::decode(b.as_slice()) {
            named(convert::policy_name(r.policy.as_ref()))?;
            named(convert::policy_in(r.policy.as_ref(), &Policy::seeds()))?;
        }
    }
}

/// The samples above are valid: the damage starts from frames and entries
/// that decode.
#[test]
fn the_undamaged_samples_decode() {
    assert_eq!(
        admit_raft::decode_log_entry::<ShardApp>(&entry())
            .unwrap()
            .len(),
        3
    );
    for r in node_reqs() {
        wire::decode::<NodeReq>(&wire::encode(&r).unwrap()).unwrap();
    }
    for e in envelopes() {
        wire::decode::<Envelope>(&wire::encode(&e).unwrap()).unwrap();
    }
    let p = pb::SetPolicyRequest {
        policy: Some(convert::policy_out(&Policy::meta())),
    };
    convert::policy_in(p.policy.as_ref(), &Policy::seeds()).unwrap();
}
