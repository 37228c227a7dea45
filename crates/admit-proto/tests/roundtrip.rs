//! Messages round-trip through the wire format, field numbers stay what they
//! are, and the generated client and server talk to each other.

use admit_proto::v1::{
    self, admit_batch_result, apply_event_request, send, target, tier_value, AdmitBatchResult,
    AdmitRequest, AdmitResponse, ApplyEventRequest, Decision, LimitScope, LimitUsage, Reason, Send,
    Target, Template, TemplateCategory, Tier, TierChanged, TierValue,
};
use prost::Message;

fn template_send() -> Send {
    Send {
        number_id: "106540352242922".into(),
        customer_id: "4915112345678".into(),
        kind: Some(send::Kind::Template(Template {
            template_id: "1234567890".into(),
            category: TemplateCategory::Marketing as i32,
            name: "spring_sale".into(),
            language: "en_US".into(),
        })),
        idempotency_key: "campaign-7/4915112345678".into(),
    }
}

fn limit_reached() -> Decision {
    Decision {
        allowed: false,
        reason: Reason::LimitReached as i32,
        retry_after_ms: Some(3_600_000),
        retry_at_unix_ms: Some(1_700_003_600_000),
        usage: Some(LimitUsage {
            scope: LimitScope::Number as i32,
            scope_id: "106540352242922".into(),
            tier: Some(Tier {
                name: "TIER_1K".into(),
                limit: 1000,
                unlimited: false,
            }),
            used: 1000,
            headroom: 0,
            next_release_unix_ms: Some(1_700_003_600_000),
        }),
        window_end_unix_ms: None,
        admission_id: String::new(),
        counted: false,
        replayed: false,
        decided_at_unix_ms: 1_700_000_000_000,
    }
}

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
    let bytes = m.encode_to_vec();
    let back = M::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(&back, m);
}

#[test]
fn admit_request_and_response_roundtrip() {
    roundtrip(&AdmitRequest {
        send: Some(template_send()),
    });
    roundtrip(&AdmitResponse {
        decision: Some(limit_reached()),
        leader_hint: Some(v1::NodeRef {
            node_id: 1,
            address: "127.0.0.1:50051".into(),
        }),
    });
    roundtrip(&v1::AdmitBatchResponse {
        results: vec![
            AdmitBatchResult {
                index: 0,
                result: Some(admit_batch_result::Result::Decision(limit_reached())),
            },
            AdmitBatchResult {
                index: 1,
                result: Some(admit_batch_result::Result::Error(v1::ItemError {
                    code: 3,
                    message: "customer_id must be 6-15 digits".into(),
                    field: "customer_id".into(),
                })),
            },
        ],
        leader_hint: None,
    });
}

#[test]
fn tier_event_roundtrips_in_both_forms() {
    for tier in [
        tier_value::Tier::TierName("TIER_2K".into()),
        tier_value::Tier::TierValue(-1),
    ] {
        roundtrip(&ApplyEventRequest {
            event_key: "entry-1/change-0".into(),
            occurred_at_unix_ms: Some(1_700_000_000_000),
            event: Some(apply_event_request::Event::Tier(TierChanged {
                target: Some(Target {
                    target: Some(target::Target::PortfolioId("waba-1".into())),
                }),
                tier: Some(TierValue { tier: Some(tier) }),
                old_tier: None,
            })),
        });
    }
}

#[test]
fn optional_fields_distinguish_unset_from_zero() {
    let mut d = limit_reached();
    d.retry_after_ms = Some(0);
    let back = Decision::decode(d.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back.retry_after_ms, Some(0));
    d.retry_after_ms = None;
    let back = Decision::decode(d.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back.retry_after_ms, None);
}

/// Pins a few field numbers: changing them breaks deployed clients.
#[test]
fn wire_format_is_stable() {
    let d = Decision {
        allowed: true,
        reason: Reason::NewConversation as i32,
        counted: true,
        admission_id: "a".into(),
        ..Default::default()
    };
    // field 1 varint 1, field 2 varint 4, field 7 string "a", field 8 varint 1
    assert_eq!(
        d.encode_to_vec(),
        [0x08, 0x01, 0x10, 0x04, 0x3a, 0x01, b'a', 0x40, 0x01]
    );
    let s = Send {
        number_id: "1".into(),
        customer_id: "2".into(),
        kind: Some(send::Kind::FreeForm(v1::FreeForm {})),
        idempotency_key: "k".into(),
    };
    // fields 1, 2 strings, field 4 empty message, field 5 string
    assert_eq!(
        s.encode_to_vec(),
        [0x0a, 0x01, b'1', 0x12, 0x01, b'2', 0x22, 0x00, 0x2a, 0x01, b'k']
    );
}

#[test]
fn reason_names_match_the_proto() {
    let names = [
        (Reason::Unspecified, "REASON_UNSPECIFIED", 0),
        (Reason::ServiceWindow, "REASON_SERVICE_WINDOW", 1),
        (Reason::FreeEntryPoint, "REASON_FREE_ENTRY_POINT", 2),
        (Reason::OpenConversation, "REASON_OPEN_CONVERSATION", 3),
        (Reason::NewConversation, "REASON_NEW_CONVERSATION", 4),
        (Reason::LimitReached, "REASON_LIMIT_REACHED", 5),
        (
            Reason::OutsideServiceWindow,
            "REASON_OUTSIDE_SERVICE_WINDOW",
            6,
        ),
        (Reason::OptedOut, "REASON_OPTED_OUT", 7),
        (Reason::TemplatePaused, "REASON_TEMPLATE_PAUSED", 8),
        (Reason::TemplateDisabled, "REASON_TEMPLATE_DISABLED", 9),
        (Reason::NumberRestricted, "REASON_NUMBER_RESTRICTED", 10),
        (Reason::ThroughputLimited, "REASON_THROUGHPUT_LIMITED", 11),
        (Reason::PairRateLimited, "REASON_PAIR_RATE_LIMITED", 12),
        (Reason::MarketingHold, "REASON_MARKETING_HOLD", 13),
        (Reason::SpamCooldown, "REASON_SPAM_COOLDOWN", 14),
        (Reason::UnknownNumber, "REASON_UNKNOWN_NUMBER", 15),
    ];
    for (reason, name, number) in names {
        assert_eq!(reason.as_str_name(), name);
        assert_eq!(Reason::from_str_name(name), Some(reason));
        assert_eq!(reason as i32, number);
    }
}

/// A trivial AdmitSend server, to check the generated server and client
/// interoperate over a real (loopback) connection.
#[derive(Debug)]
struct Fixed;

#[tonic::async_trait]
impl v1::admit_send_server::AdmitSend for Fixed {
    async fn admit(
        &self,
        request: tonic::Request<AdmitRequest>,
    ) -> Result<tonic::Response<AdmitResponse>, tonic::Status> {
        let send = request
            .into_inner()
            .send
            .ok_or_else(|| tonic::Status::invalid_argument("send is required"))?;
        let mut decision = limit_reached();
        decision.usage.as_mut().unwrap().scope_id = send.number_id;
        Ok(tonic::Response::new(AdmitResponse {
            decision: Some(decision),
            leader_hint: None,
        }))
    }

    async fn admit_batch(
        &self,
        _: tonic::Request<v1::AdmitBatchRequest>,
    ) -> Result<tonic::Response<v1::AdmitBatchResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test server"))
    }

    async fn release(
        &self,
        _: tonic::Request<v1::ReleaseRequest>,
    ) -> Result<tonic::Response<v1::ReleaseResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test server"))
    }

    async fn record_inbound(
        &self,
        _: tonic::Request<v1::RecordInboundRequest>,
    ) -> Result<tonic::Response<v1::RecordInboundResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test server"))
    }

    async fn report_outcome(
        &self,
        _: tonic::Request<v1::ReportOutcomeRequest>,
    ) -> Result<tonic::Response<v1::ReportOutcomeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test server"))
    }
}

#[tokio::test]
async fn client_and_server_interoperate() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(v1::admit_send_server::AdmitSendServer::new(Fixed))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );

    let mut client = v1::admit_send_client::AdmitSendClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let response = client
        .admit(AdmitRequest {
            send: Some(template_send()),
        })
        .await
        .unwrap()
        .into_inner();
    let decision = response.decision.unwrap();
    assert_eq!(decision.reason(), Reason::LimitReached);
    assert_eq!(decision.usage.unwrap().scope_id, "106540352242922");

    let status = client
        .release(v1::ReleaseRequest {
            admission_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
