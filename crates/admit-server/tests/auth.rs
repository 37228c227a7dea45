//! Caller authentication on real loopback listeners (issue 12,
//! docs/security.md): anonymous and wrong-token calls are UNAUTHENTICATED on
//! every API method; scopes and grants are PERMISSION_DENIED; admission ids
//! cannot be guessed; the quota keys on the authenticated caller; admin
//! changes leave audit lines; a cluster checks at the entry node.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod common;
/// The workspace's test servers (`tests/support` at the workspace root):
/// the shared cluster harness.
#[path = "../../../tests/support/mod.rs"]
mod harness;

use admit_proto::v1 as pb;
use admit_proto::v1::admin_client::AdminClient;
use admit_proto::v1::admit_send_client::AdmitSendClient;
use admit_proto::v1::cluster_client::ClusterClient;
use admit_server::auth::{CallerConfig, Scope};
use admit_server::{Auth, Quota, Running, ServerConfig};
use common::utility as send;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// 2030-01-01T00:00:00Z on the (never advanced) test clock.
const START_MS: u64 = 1_893_456_000_000;

const OPS: &str = "ops-token-7f3a";
const ALICE: &str = "alice-token-91c2";
const BOB: &str = "bob-token-55d0";
const READER: &str = "reader-token-0e4b";

/// alice's number (portfolio waba-a, granted to her by number) and bob's
/// (portfolio waba-b, granted to him by portfolio).
const N_ALICE: &str = "15550001";
const N_BOB: &str = "15550002";

fn caller(
    name: &str,
    token: &str,
    scopes: &[Scope],
    numbers: &[&str],
    pfs: &[&str],
) -> CallerConfig {
    CallerConfig {
        name: name.into(),
        token_sha256: Some(admit_server::auth::hash_token(token)),
        cert_name: None,
        scopes: scopes.to_vec(),
        numbers: numbers.iter().map(|s| s.to_string()).collect(),
        portfolios: pfs.iter().map(|s| s.to_string()).collect(),
    }
}

fn callers(key: Option<Vec<u8>>) -> Auth {
    let list = vec![
        caller(
            "ops",
            OPS,
            &[Scope::Admin, Scope::Read, Scope::Cluster],
            &[],
            &[],
        ),
        caller("alice", ALICE, &[Scope::Send], &[N_ALICE], &[]),
        caller("bob", BOB, &[Scope::Send], &[], &["waba-b"]),
        caller("reader", READER, &[Scope::Read], &[], &[]),
    ];
    Auth::new(
        true,
        list.into_iter().map(|c| (c.name.clone(), c)).collect(),
        key,
    )
    .unwrap()
}

fn node_config(dir: &std::path::Path) -> ServerConfig {
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir);
    cfg.shards = 4;
    cfg.test_clock = true;
    cfg.test_clock_start = Some(admit_core::Ts(START_MS));
    cfg.fsync = false;
    cfg.tick_interval = Duration::from_secs(3_600);
    cfg.auth = Some(callers(None));
    cfg
}

struct Node {
    running: Option<Running>,
    _dir: tempfile::TempDir,
    ch: Channel,
}

impl Node {
    async fn start(quota: Option<Quota>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = node_config(dir.path());
        cfg.caller_quota = quota;
        let running = admit_server::start(cfg).await.expect("server starts");
        let ch = connect(running.local_addr().to_string()).await;
        Node {
            running: Some(running),
            _dir: dir,
            ch,
        }
    }

    fn admit(&self) -> AdmitSendClient<Channel> {
        AdmitSendClient::new(self.ch.clone())
    }

    fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.ch.clone())
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.unwrap();
        }
    }
}

async fn connect(addr: String) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("connect")
}

/// `msg` with `authorization: Bearer <token>` when a token is given.
fn req<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("test finished within 120 s")
}

fn registration(number: &str, portfolio: &str) -> pb::RegisterNumberRequest {
    pb::RegisterNumberRequest {
        number_id: number.into(),
        portfolio_id: portfolio.into(),
        initial_tier: Some(pb::TierValue {
            tier: Some(pb::tier_value::Tier::TierName("TIER_1K".into())),
        }),
        quality: Some(pb::NumberQuality::High as i32),
        display_name_approved: Some(true),
        throughput_mps: Some(10_000),
        ..Default::default()
    }
}

async fn register_both(admin: &mut AdminClient<Channel>) {
    for (n, p) in [(N_ALICE, "waba-a"), (N_BOB, "waba-b")] {
        admin
            .register_number(req(registration(n, p), Some(OPS)))
            .await
            .expect("ops registers");
    }
}

async fn admit(
    c: &mut AdmitSendClient<Channel>,
    token: &str,
    number: &str,
    customer: u64,
) -> Result<pb::Decision, tonic::Status> {
    c.admit(req(
        pb::AdmitRequest {
            send: Some(send(number, customer)),
        },
        Some(token),
    ))
    .await
    .map(|r| r.into_inner().decision.expect("a decision"))
}

async fn used(admin: &mut AdminClient<Channel>, number: &str) -> u32 {
    admin
        .get_status(req(
            pb::GetStatusRequest {
                target: Some(pb::Target {
                    target: Some(pb::target::Target::NumberId(number.into())),
                }),
            },
            Some(READER),
        ))
        .await
        .expect("status")
        .into_inner()
        .status
        .unwrap()
        .usage
        .unwrap()
        .used
}

fn assert_code<T: std::fmt::Debug>(
    r: Result<T, tonic::Status>,
    code: Code,
    what: &str,
) -> tonic::Status {
    let s = r.expect_err(what);
    assert_eq!(s.code(), code, "{what}: {}", s.message());
    s
}

/// Every method of every `admit.v1` service, from the descriptor set the
/// server is built from (a method added later is covered too).
fn api_methods() -> Vec<String> {
    let fds = prost_types::FileDescriptorSet::decode(admit_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for f in fds.file.iter().filter(|f| f.package() == "admit.v1") {
        for s in &f.service {
            for m in &s.method {
                out.push(format!("/admit.v1.{}/{}", s.name(), m.name()));
            }
        }
    }
    out
}

/// Calls `path` with an empty message (every field at its default).
async fn raw_call(ch: &Channel, path: &str, token: Option<&str>) -> Result<(), tonic::Status> {
    let mut g = tonic::client::Grpc::new(ch.clone());
    g.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = http::uri::PathAndQuery::try_from(path.to_string()).unwrap();
    g.unary(req((), token), path, codec).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_and_wrong_token_calls_to_every_method_are_unauthenticated() {
    bounded(async {
        let node = Node::start(None).await;
        let methods = api_methods();
        assert!(methods.len() >= 19, "{methods:?}");
        for m in &methods {
            let s = assert_code(raw_call(&node.ch, m, None).await, Code::Unauthenticated, m);
            assert!(s.message().contains("credentials"), "{m}: {}", s.message());
            let s = assert_code(
                raw_call(&node.ch, m, Some("not-a-token")).await,
                Code::Unauthenticated,
                m,
            );
            assert!(
                !s.message().contains("not-a-token"),
                "token echoed: {}",
                s.message()
            );
        }
        // a known caller gets past the authentication on every method
        for m in &methods {
            if let Err(s) = raw_call(&node.ch, m, Some(OPS)).await {
                assert_ne!(s.code(), Code::Unauthenticated, "{m}");
            }
        }
        // the health service stays open for probes
        let mut h = tonic_health::pb::health_client::HealthClient::new(node.ch.clone());
        h.check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health without credentials");
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_stay_inside_their_scopes_and_grants() {
    bounded(async {
        let node = Node::start(None).await;
        let (mut admin, mut sender) = (node.admin(), node.admit());
        let mut cluster = ClusterClient::new(node.ch.clone());

        // send and read callers cannot register, set policies or change
        // membership
        for who in [ALICE, READER] {
            let r = admin
                .register_number(req(registration("15559990", "waba-a"), Some(who)))
                .await;
            let s = assert_code(r, Code::PermissionDenied, "register");
            assert!(s.message().contains("admin"), "{}", s.message());
            let r = admin
                .set_policy(req(pb::SetPolicyRequest::default(), Some(who)))
                .await;
            assert_code(r, Code::PermissionDenied, "set policy");
            let r = cluster
                .add_node(req(
                    pb::AddNodeRequest {
                        node_id: 9,
                        address: "10.0.0.9:50051".into(),
                        peer_address: String::new(),
                        shards: 0,
                    },
                    Some(who),
                ))
                .await;
            let s = assert_code(r, Code::PermissionDenied, "add node");
            assert!(s.message().contains("cluster"), "{}", s.message());
        }
        // alice has no read scope; the reader has no send scope
        let r = cluster
            .list_nodes(req(pb::ListNodesRequest {}, Some(ALICE)))
            .await;
        assert_code(r, Code::PermissionDenied, "alice lists nodes");
        register_both(&mut admin).await;
        let r = admit(&mut sender, READER, N_ALICE, 1).await;
        assert_code(r, Code::PermissionDenied, "reader admits");

        // each sender on its own number (alice by number, bob by portfolio)
        let a = admit(&mut sender, ALICE, N_ALICE, 1).await.unwrap();
        assert_eq!(a.reason(), pb::Reason::NewConversation);
        let b = admit(&mut sender, BOB, N_BOB, 1).await.unwrap();
        assert_eq!(b.reason(), pb::Reason::NewConversation);
        // ... and not on the other's
        let s = assert_code(
            admit(&mut sender, ALICE, N_BOB, 2).await,
            Code::PermissionDenied,
            "alice admits on bob's number",
        );
        assert!(s.message().contains(N_BOB), "{}", s.message());
        assert_code(
            admit(&mut sender, BOB, N_ALICE, 2).await,
            Code::PermissionDenied,
            "bob admits on alice's number",
        );
        // an unregistered number is refused alike (no probing)
        assert_code(
            admit(&mut sender, ALICE, "15559999", 2).await,
            Code::PermissionDenied,
            "unregistered number",
        );
        // a batch with one item outside the grant is refused whole, wherever
        // it sits among the granted number's items
        let r = sender
            .admit_batch(req(
                pb::AdmitBatchRequest {
                    sends: vec![
                        send(N_ALICE, 3),
                        send(N_ALICE, 4),
                        send(N_BOB, 3),
                        send(N_ALICE, 5),
                    ],
                },
                Some(ALICE),
            ))
            .await;
        assert_code(r, Code::PermissionDenied, "mixed batch");
        assert_eq!(
            used(&mut admin, N_ALICE).await,
            1,
            "nothing of the batch counted"
        );
        let r = sender
            .record_inbound(req(
                pb::RecordInboundRequest {
                    number_id: N_BOB.into(),
                    customer_id: "491500000007".into(),
                    ..Default::default()
                },
                Some(ALICE),
            ))
            .await;
        assert_code(r, Code::PermissionDenied, "inbound on bob's number");

        // alice cannot release or report on bob's admission
        let r = sender
            .release(req(
                pb::ReleaseRequest {
                    admission_id: b.admission_id.clone(),
                },
                Some(ALICE),
            ))
            .await;
        assert_code(r, Code::PermissionDenied, "release bob's admission");
        for number in [N_ALICE, N_BOB] {
            let r = sender
                .report_outcome(req(
                    pb::ReportOutcomeRequest {
                        number_id: number.into(),
                        customer_id: "491500000001".into(),
                        admission_id: b.admission_id.clone(),
                        status: pb::DeliveryStatus::Failed as i32,
                        meta_error_code: Some(131049),
                        ..Default::default()
                    },
                    Some(ALICE),
                ))
                .await;
            assert_code(r, Code::PermissionDenied, "outcome on bob's admission");
        }
        assert_eq!(used(&mut admin, N_BOB).await, 1, "bob's admission stands");
        // bob releases his own
        let r = sender
            .release(req(
                pb::ReleaseRequest {
                    admission_id: b.admission_id.clone(),
                },
                Some(BOB),
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(r.released);
        assert_eq!(used(&mut admin, N_BOB).await, 0);
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessed_admission_ids_release_nothing() {
    bounded(async {
        let node = Node::start(None).await;
        let (mut admin, mut sender) = (node.admin(), node.admit());
        register_both(&mut admin).await;
        let a = admit(&mut sender, ALICE, N_ALICE, 1).await.unwrap();
        let a2 = admit(&mut sender, ALICE, N_ALICE, 2).await.unwrap();
        let id = a.admission_id.clone();
        let (name, tag) = id.rsplit_once('.').expect("a sealed id");
        let (scope, seq) = name.rsplit_once('-').unwrap();
        let seq: u64 = seq.parse().unwrap();
        assert!(tag.len() >= 32, "at least 128 bits of tag: {id}");
        let mut flipped = id.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == 'a' { 'b' } else { 'a' });
        let guesses = [
            name.to_string(),                            // the old, unsealed form
            format!("{scope}-{}.{tag}", seq + 1),        // the neighbour with this tag
            format!("{scope}-{}", seq + 1),              // the neighbour unsealed
            flipped,                                     // a wrong tag
            format!("{name}.{}", "0".repeat(tag.len())), // a zero tag
        ];
        for g in &guesses {
            let r = sender
                .release(req(
                    pb::ReleaseRequest {
                        admission_id: g.clone(),
                    },
                    Some(ALICE),
                ))
                .await;
            assert_code(r, Code::NotFound, g);
            let r = sender
                .report_outcome(req(
                    pb::ReportOutcomeRequest {
                        number_id: N_ALICE.into(),
                        customer_id: "491500000001".into(),
                        admission_id: g.clone(),
                        status: pb::DeliveryStatus::Failed as i32,
                        meta_error_code: Some(131049),
                        ..Default::default()
                    },
                    Some(ALICE),
                ))
                .await;
            assert_code(r, Code::NotFound, g);
        }
        assert_eq!(used(&mut admin, N_ALICE).await, 2, "nothing was released");
        // the real ids still work
        for id in [&a.admission_id, &a2.admission_id] {
            let r = sender
                .release(req(
                    pb::ReleaseRequest {
                        admission_id: id.clone(),
                    },
                    Some(ALICE),
                ))
                .await
                .unwrap()
                .into_inner();
            assert!(r.released, "{id}");
        }
        assert_eq!(used(&mut admin, N_ALICE).await, 0);
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_keys_on_the_authenticated_caller() {
    bounded(async {
        // a burst of 3 and a refill far too slow to matter in the test
        let node = Node::start(Some(Quota {
            rate: 0.001,
            burst: 3.0,
        }))
        .await;
        let (mut admin, mut sender) = (node.admin(), node.admit());
        register_both(&mut admin).await;
        let with_header = |token: &str, header: &str, customer: u64, number: &str| {
            let mut r = req(
                pb::AdmitRequest {
                    send: Some(send(number, customer)),
                },
                Some(token),
            );
            r.metadata_mut()
                .insert("x-admit-caller", header.parse().unwrap());
            r
        };
        // alice names herself differently on each call: one bucket still
        for (i, h) in ["a1", "a2", "a3"].iter().enumerate() {
            sender
                .admit(with_header(ALICE, h, i as u64, N_ALICE))
                .await
                .expect("within alice's burst");
        }
        for h in ["a4", "bob", "anonymous"] {
            let s = assert_code(
                sender.admit(with_header(ALICE, h, 9, N_ALICE)).await,
                Code::ResourceExhausted,
                "alice over her quota",
            );
            assert!(s.message().contains("alice"), "{}", s.message());
        }
        // bob, even naming himself "alice", has his own bucket
        for i in 0..3 {
            sender
                .admit(with_header(BOB, "alice", i, N_BOB))
                .await
                .expect("bob is unaffected");
        }
        node.stop().await;
    })
    .await;
}

/// Collects what the tracing subscriber writes (audit target only).
#[derive(Clone)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn audit_log() -> Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let c = Captured(Arc::new(Mutex::new(Vec::new())));
        let w = c.clone();
        tracing_subscriber::fmt()
            .with_env_filter("admit::audit=info")
            .with_ansi(false)
            .with_writer(move || w.clone())
            .init();
        c
    })
    .clone()
}

fn audit_lines(c: &Captured, needle: &str) -> Vec<String> {
    let text = String::from_utf8(c.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_are_audited_without_tokens() {
    let log = audit_log();
    bounded(async {
        let node = Node::start(None).await;
        let mut admin = node.admin();
        admin
            .register_number(req(registration("15557771", "waba-audit"), Some(OPS)))
            .await
            .unwrap();
        let r = admin
            .register_number(req(registration("15557772", "waba-audit"), Some(ALICE)))
            .await;
        assert_code(r, Code::PermissionDenied, "alice registers");
        let r = admin
            .register_number(req(registration("15557773", "waba-audit"), Some("stolen?")))
            .await;
        assert_code(r, Code::Unauthenticated, "bad token");
        // reads are not audited
        used(&mut admin, "15557771").await;

        let ok: Vec<String> = audit_lines(&log, "15557771")
            .into_iter()
            .filter(|l| l.contains("method="))
            .collect();
        assert_eq!(ok.len(), 1, "{ok:?}");
        // and the replica that applied it names the caller too: the
        // registration, and the scope claim written for it on the number's
        // home shard (issue 11, item 9), both in the caller's name
        let applied = applied_lines(&log, "15557771", "ops");
        let registered = applied.iter().filter(|l| l.contains("RegisterNumber"));
        assert_eq!(registered.count(), 1, "{applied:?}");
        let claimed = applied.iter().filter(|l| l.contains("ClaimScope"));
        assert_eq!(claimed.count(), 1, "{applied:?}");
        assert_eq!(applied.len(), 2, "{applied:?}");
        for part in ["caller=\"ops\"", "Admin.RegisterNumber", "result=\"ok\""] {
            assert!(ok[0].contains(part), "{part} in {}", ok[0]);
        }
        let denied = audit_lines(&log, "15557772");
        assert_eq!(denied.len(), 1, "{denied:?}");
        assert!(denied[0].contains("caller=\"alice\""), "{}", denied[0]);
        assert!(denied[0].contains("PermissionDenied"), "{}", denied[0]);
        let refused = audit_lines(&log, "Unauthenticated");
        assert!(
            refused
                .iter()
                .any(|l| l.contains("/admit.v1.Admin/RegisterNumber")),
            "{refused:?}"
        );
        let all = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        for secret in [OPS, ALICE, "stolen?"] {
            assert!(!all.contains(secret), "a token reached the log");
        }
        node.stop().await;
    })
    .await;
}

/// The replicas' audit lines (`audit: applied`) naming `caller` that hold
/// `needle`.
fn applied_lines(c: &Captured, needle: &str, caller: &str) -> Vec<String> {
    let by = format!("caller=\"{caller}\"");
    audit_lines(c, needle)
        .into_iter()
        .filter(|l| l.contains("audit: applied") && l.contains(&by))
        .collect()
}

/// Waits (a minute at most) until `n` replica audit lines name `caller`
/// and hold `needle`.
async fn wait_for_applied(c: &Captured, needle: &str, caller: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while applied_lines(c, needle, caller).len() < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} replica audit lines name {caller}: {:?}",
            audit_lines(c, needle)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three nodes, auth on, one admission key: a check at the entry node holds
/// for requests it forwards to the shard's leader elsewhere, and an id
/// sealed by one node opens on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_checks_callers_at_the_entry_node() {
    use harness::cluster::{one_at_a_time, ClusterOptions, TestCluster};
    let log = audit_log();
    one_at_a_time(120, async {
        // every shard led by its preferred leader (leader balance settled)
        let mut c = TestCluster::start_opts(
            ClusterOptions::new(3, 3, START_MS as i64)
                .shards(4)
                .token(OPS)
                .configure(Arc::new(|_, cfg: &mut ServerConfig| {
                    cfg.auth = Some(callers(Some(
                        b"the cluster's shared admission key".to_vec(),
                    )));
                })),
        )
        .await;
        let mut chans = Vec::new();
        for a in c.addrs.values() {
            chans.push(connect(a.to_string()).await);
        }
        let mut admin = AdminClient::new(chans[0].clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        for (n, p) in [(N_ALICE, "waba-a"), (N_BOB, "waba-b")] {
            while let Err(e) = admin
                .register_number(req(registration(n, p), Some(OPS)))
                .await
            {
                assert!(Instant::now() < deadline, "register: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // a policy goes to every shard, led here and elsewhere (forwarded):
        // each replica of each shard writes an audit line naming the caller
        let mut policy = admin
            .get_policy(req(
                pb::GetPolicyRequest {
                    name: "seeds".into(),
                },
                Some(OPS),
            ))
            .await
            .expect("get policy")
            .into_inner()
            .policy
            .expect("a policy");
        policy.name = "audited-profile".into();
        // retried like the registrations (a loaded machine may miss the
        // deadline); setting the same policy again changes nothing
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Err(e) = admin
            .set_policy(req(
                pb::SetPolicyRequest {
                    policy: Some(policy.clone()),
                },
                Some(OPS),
            ))
            .await
        {
            assert!(Instant::now() < deadline, "set policy: {e:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_for_applied(&log, "audited-profile", "ops", 4 * 3).await;
        let applied = applied_lines(&log, "audited-profile", "ops");
        // (a retried set may add lines: at least one per shard and replica)
        assert!(applied.len() >= 12, "{applied:?}");
        // through every node (so through followers of each number's shard)
        let mut bob_ids = Vec::new();
        for (i, ch) in chans.iter().enumerate() {
            let mut c = AdmitSendClient::new(ch.clone());
            let d = admit(&mut c, ALICE, N_ALICE, i as u64)
                .await
                .expect("alice on her number");
            assert!(d.allowed);
            assert_code(
                admit(&mut c, ALICE, N_BOB, i as u64).await,
                Code::PermissionDenied,
                "alice on bob's number via a peer",
            );
            let r = c
                .admit_batch(req(
                    pb::AdmitBatchRequest {
                        sends: vec![send(N_BOB, 50 + i as u64)],
                    },
                    Some(ALICE),
                ))
                .await;
            assert_code(r, Code::PermissionDenied, "alice batch on bob's number");
            bob_ids.push(
                admit(&mut c, BOB, N_BOB, i as u64)
                    .await
                    .unwrap()
                    .admission_id,
            );
        }
        // alice cannot release bob's admissions through any node; bob
        // releases each through another node than the one that issued it
        for (i, id) in bob_ids.iter().enumerate() {
            for ch in &chans {
                let r = AdmitSendClient::new(ch.clone())
                    .release(req(
                        pb::ReleaseRequest {
                            admission_id: id.clone(),
                        },
                        Some(ALICE),
                    ))
                    .await;
                assert_code(r, Code::PermissionDenied, "alice releases bob's");
            }
            let r = AdmitSendClient::new(chans[(i + 1) % 3].clone())
                .release(req(
                    pb::ReleaseRequest {
                        admission_id: id.clone(),
                    },
                    Some(BOB),
                ))
                .await
                .expect("bob releases")
                .into_inner();
            assert!(r.released, "{id}");
        }
        c.stop_all().await;
    })
    .await;
}

/// A node joins a cluster with auth by sending a `cluster` caller's token
/// with Cluster.AddNode; a token without that scope is refused for good
/// (the node is not added, and its start does not hang on retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_takes_a_cluster_token() {
    let log = audit_log();
    bounded(async {
        let key = b"the cluster's shared admission key".to_vec();
        let first_dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), first_dir.path());
        cfg.shards = 2;
        cfg.fsync = false;
        cfg.tick_interval = Duration::from_secs(3_600);
        cfg.heartbeat = Duration::from_millis(50);
        cfg.election_timeout = (Duration::from_millis(200), Duration::from_millis(400));
        cfg.auth = Some(callers(Some(key.clone())));
        let first = admit_server::start(cfg.clone()).await.expect("first node");
        let via = first.local_addr().to_string();
        let ch = connect(via.clone()).await;
        let mut joined = Vec::new();
        let mut dirs = Vec::new();
        for (id, token) in [(2u64, ALICE), (3, OPS)] {
            let dir = tempfile::tempdir().unwrap();
            let mut c = cfg.clone();
            c.data_dir = dir.path().to_path_buf();
            c.node_id = id;
            c.join = Some(via.clone());
            c.join_token = Some(admit_server::auth::Token(token.into()));
            joined.push(admit_server::start(c).await.expect("joining node starts"));
            dirs.push(dir);
        }
        let ids = || async {
            let r = ClusterClient::new(ch.clone())
                .list_nodes(req(pb::ListNodesRequest {}, Some(OPS)))
                .await
                .expect("list nodes")
                .into_inner();
            r.nodes.iter().map(|n| n.node_id).collect::<Vec<_>>()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ids().await.contains(&3) {
            assert!(Instant::now() < deadline, "node 3 never joined");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!ids().await.contains(&2), "alice's token added a node");
        // the registry change names ops on node 1 and on node 3 (its copy)
        wait_for_applied(&log, "Add { id: 3", "ops", 2).await;
        for n in joined {
            n.crash().await;
        }
        first.crash().await;
    })
    .await;
}
