//! Helpers for the end-to-end tests: servers (in-process or the admitd
//! binary), clients and short request builders. Each test binary uses a
//! part of them.

#![allow(dead_code)]

pub mod api;
pub mod cluster;
pub mod ports;
pub mod seeded;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use admit_proto::v1 as pb;
use admit_proto::v1::admin_client::AdminClient;
use admit_proto::v1::admit_send_client::AdmitSendClient;
use admit_proto::v1::test_clock_client::TestClockClient;
use tonic::transport::Channel;

/// 2030-01-01T00:00:00Z: day 1, 00:00 of the tests' calendar.
pub const DAY1: i64 = 1_893_456_000_000;
pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 24 * HOUR;

/// The time of `hour`:00 on day `day` (1-based).
pub const fn at(day: i64, hour: i64) -> i64 {
    DAY1 + (day - 1) * DAY + hour * HOUR
}

/// Shards of every test server (single node and cluster alike).
pub const SHARDS: u32 = 8;
/// Raft timing of the test servers: heartbeat 50 ms, election 200-400 ms,
/// so the leader lease is 400 ms (fast path: half of it).
pub const HEARTBEAT_MS: u64 = 50;
pub const ELECTION_MS: (u64, u64) = (200, 400);

/// The shard of a seeds-profile number (scope = the number).
pub fn shard_of(number: &str) -> u32 {
    let n = admit_core::NumberId::parse("n", number).unwrap();
    (admit_core::ScopeKey::Number(n).stable_hash() % u64::from(SHARDS)) as u32
}

/// The configuration every in-process test node starts from: test clock at
/// `start`, no fsync, hourly ticks, short Raft timings.
pub fn node_config(listen: SocketAddr, dir: &Path, start: i64) -> admit_server::ServerConfig {
    let mut cfg = admit_server::ServerConfig::new(listen, dir);
    cfg.shards = SHARDS;
    cfg.test_clock = true;
    cfg.test_clock_start = Some(admit_core::Ts(start as u64));
    cfg.fsync = false;
    // every test node serves /metrics on a port of its own
    cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.tick_interval = Duration::from_secs(3_600);
    cfg.heartbeat = Duration::from_millis(HEARTBEAT_MS);
    cfg.election_timeout = (
        Duration::from_millis(ELECTION_MS.0),
        Duration::from_millis(ELECTION_MS.1),
    );
    cfg
}

/// Runs `test` against a fresh in-process server on the test clock at
/// `start`, within 120 s, and stops the server cleanly afterwards.
pub async fn serve(start: i64, test: impl AsyncFnOnce(Clients)) {
    serve_with(120, start, |_| {}, test).await
}

/// [`serve`] with another time bound.
pub async fn serve_within(secs: u64, start: i64, test: impl AsyncFnOnce(Clients)) {
    serve_with(secs, start, |_| {}, test).await
}

/// [`serve`] with another time bound and `tweak` applied to the server's
/// configuration.
pub async fn serve_with(
    secs: u64,
    start: i64,
    tweak: impl FnOnce(&mut admit_server::ServerConfig),
    test: impl AsyncFnOnce(Clients),
) {
    bounded(secs, async {
        let (srv, c) = InProcess::start_with(start, tweak).await;
        test(c).await;
        srv.stop().await;
    })
    .await
}

/// Gives up on a test that hangs.
pub async fn bounded<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("test exceeded its time bound")
}

#[derive(Clone)]
pub struct Clients {
    pub admit: AdmitSendClient<Channel>,
    pub admin: AdminClient<Channel>,
    pub clock: TestClockClient<Channel>,
}

/// A registration of a seeds number in `portfolio` with `tier`, quality
/// HIGH, display name approved and a throughput high enough that R8.1 never
/// binds: a number whose sends only the tier's limit decides.
pub fn plain_number(number: &str, portfolio: &str, tier: &str) -> pb::RegisterNumberRequest {
    pb::RegisterNumberRequest {
        number_id: number.into(),
        portfolio_id: portfolio.into(),
        initial_tier: Some(pb::TierValue {
            tier: Some(pb::tier_value::Tier::TierName(tier.into())),
        }),
        quality: Some(pb::NumberQuality::High as i32),
        display_name_approved: Some(true),
        throughput_mps: Some(10_000),
        ..Default::default()
    }
}
impl Clients {
    pub async fn connect(addr: SocketAddr) -> Clients {
        let ch = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .expect("connect to the server");
        Clients {
            admit: AdmitSendClient::new(ch.clone()),
            admin: AdminClient::new(ch.clone()),
            clock: TestClockClient::new(ch),
        }
    }

    pub async fn set_clock(&mut self, t: i64) {
        self.clock
            .set_clock(pb::SetClockRequest { now_unix_ms: t })
            .await
            .expect("set clock");
    }

    /// Registers a seeds number with `tier`, quality HIGH, display name
    /// approved and a throughput high enough that R8.1 never binds. Retries
    /// UNAVAILABLE (a leader change under way) a bounded number of times, as
    /// a caller is told to (an earlier try applied after all then answers
    /// ALREADY_EXISTS); any other error fails the test.
    pub async fn register(&mut self, number: &str, tier: &str) -> pb::RegisterNumberResponse {
        self.register_as(plain_number(number, "waba-1", tier)).await
    }

    /// [`Self::register`] with a registration of the caller's own.
    pub async fn register_as(
        &mut self,
        req: pb::RegisterNumberRequest,
    ) -> pb::RegisterNumberResponse {
        let number = req.number_id.clone();
        for attempt in 0..50 {
            match self.admin.register_number(req.clone()).await {
                Ok(r) => return r.into_inner(),
                // an earlier try that answered UNAVAILABLE was applied after all
                Err(s) if attempt > 0 && s.code() == tonic::Code::AlreadyExists => {
                    return pb::RegisterNumberResponse::default();
                }
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    eprintln!("register {number}: {}; retrying", s.message());
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(s) => panic!("register number {number}: {s:?}"),
            }
        }
        panic!("register number {number}: UNAVAILABLE for 50 tries")
    }

    pub async fn admit(&mut self, send: pb::Send) -> Result<pb::Decision, tonic::Status> {
        self.admit
            .admit(pb::AdmitRequest { send: Some(send) })
            .await
            .map(|r| r.into_inner().decision.expect("a decision"))
    }

    pub async fn status(&mut self, number: &str) -> pb::StatusView {
        self.admin
            .get_status(pb::GetStatusRequest {
                target: Some(pb::Target {
                    target: Some(pb::target::Target::NumberId(number.into())),
                }),
            })
            .await
            .expect("status")
            .into_inner()
            .status
            .expect("a status")
    }

    pub async fn limit(&mut self, number: &str) -> u32 {
        let s = self.status(number).await;
        s.usage.unwrap().tier.unwrap().limit
    }

    pub async fn used(&mut self, number: &str) -> u32 {
        self.status(number).await.usage.unwrap().used
    }

    pub async fn inbound(
        &mut self,
        number: &str,
        customer: &str,
        text: Option<&str>,
    ) -> pb::RecordInboundResponse {
        self.admit
            .record_inbound(pb::RecordInboundRequest {
                number_id: number.into(),
                customer_id: customer.into(),
                text: text.map(str::to_owned),
                ..Default::default()
            })
            .await
            .expect("record inbound")
            .into_inner()
    }

    /// Sends `n` new templates to customers `first..first + n` in one batch;
    /// panics unless each one opened a counted conversation.
    pub async fn open_batch(&mut self, number: &str, first: u64, n: u64) {
        let sends = (first..first + n)
            .map(|c| template(number, c, "t-util", pb::TemplateCategory::Utility))
            .collect();
        let r = self
            .admit
            .admit_batch(pb::AdmitBatchRequest { sends })
            .await
            .expect("batch")
            .into_inner();
        assert_eq!(r.results.len() as u64, n);
        for x in r.results {
            match x.result.unwrap() {
                pb::admit_batch_result::Result::Decision(d) => {
                    assert_eq!(d.reason(), pb::Reason::NewConversation, "item {}", x.index);
                    assert!(d.counted);
                }
                pb::admit_batch_result::Result::Error(e) => panic!("item {}: {e:?}", x.index),
            }
        }
    }
}

/// A customer id (`wa_id`) from a small integer.
pub fn cust(i: u64) -> String {
    (491_500_000_000 + i).to_string()
}

pub fn template(number: &str, customer: u64, id: &str, category: pb::TemplateCategory) -> pb::Send {
    pb::Send {
        number_id: number.into(),
        customer_id: cust(customer),
        kind: Some(pb::send::Kind::Template(pb::Template {
            template_id: id.into(),
            category: category as i32,
            ..Default::default()
        })),
        idempotency_key: String::new(),
    }
}

pub fn free_form(number: &str, customer: u64) -> pb::Send {
    pb::Send {
        number_id: number.into(),
        customer_id: cust(customer),
        kind: Some(pb::send::Kind::FreeForm(pb::FreeForm {})),
        idempotency_key: String::new(),
    }
}

pub fn keyed(mut s: pb::Send, key: &str) -> pb::Send {
    s.idempotency_key = key.into();
    s
}

/// An in-process server on an ephemeral loopback port, test clock at `start`.
pub struct InProcess {
    pub running: Option<admit_server::Running>,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl InProcess {
    pub async fn start(start: i64) -> (InProcess, Clients) {
        InProcess::start_with(start, |_| {}).await
    }

    /// [`InProcess::start`] with `tweak` applied to the configuration.
    pub async fn start_with(
        start: i64,
        tweak: impl FnOnce(&mut admit_server::ServerConfig),
    ) -> (InProcess, Clients) {
        InProcess::open(tempfile::tempdir().unwrap(), start, tweak).await
    }

    /// An in-process server on the data dir `dir` (which it removes when
    /// dropped).
    pub async fn open(
        dir: tempfile::TempDir,
        start: i64,
        tweak: impl FnOnce(&mut admit_server::ServerConfig),
    ) -> (InProcess, Clients) {
        let mut cfg = node_config("127.0.0.1:0".parse().unwrap(), dir.path(), start);
        tweak(&mut cfg);
        let running = admit_server::start(cfg).await.expect("server starts");
        let addr = running.local_addr();
        let clients = Clients::connect(addr).await;
        (
            InProcess {
                running: Some(running),
                addr,
                dir,
            },
            clients,
        )
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }

    /// Stops cleanly and hands over the data dir instead of removing it.
    pub async fn stop_keeping_dir(mut self) -> tempfile::TempDir {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
        self.dir
    }
}

/// Copies the directory tree `from` into `to` (created if missing).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

// ---- the admitd binary ---------------------------------------------------------------

/// The `admitd` binary next to this test binary (`target/<profile>/admitd`),
/// built with cargo first if it is not there (a fresh `cargo test`).
pub fn admitd_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/e2e-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let bin = profile_dir.join(format!("admitd{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let target_dir = profile_dir.parent().unwrap();
    // always ask cargo: it is a no-op when the binary is up to date
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "admitd", "--target-dir"])
        .arg(target_dir);
    if release {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo build -p admitd");
    assert!(st.success(), "cargo build -p admitd failed");
    assert!(bin.exists(), "admitd not found at {}", bin.display());
    bin
}

/// A running `admitd` child process.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Daemon {
    /// Spawns `admitd` on `data` (test clock at `clock_start`, ports picked
    /// by the OS) without waiting for it; its stdout is piped.
    pub fn spawn(bin: &Path, data: &Path, clock_start: i64) -> Child {
        Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--shards", "8", "--test-clock"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .arg("--test-clock-start-ms")
            .arg(clock_start.to_string())
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn admitd")
    }

    pub fn start(bin: &Path, data: &Path, clock_start: i64) -> Daemon {
        let mut child = Daemon::spawn(bin, data, clock_start);
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(rest) = line.strip_prefix("admitd listening on ") {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("admitd printed its address")
            .parse()
            .expect("an address");
        Daemon { child, addr }
    }

    /// Starts `admitd` and connects to it.
    pub async fn connected(bin: &Path, data: &Path, clock_start: i64) -> (Daemon, Clients) {
        let d = Daemon::start(bin, data, clock_start);
        let c = Clients::connect(d.addr).await;
        (d, c)
    }

    /// kill -9.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) {
        terminate(&mut self.child);
    }
}

/// SIGTERM to `child`, then wait for a clean exit (status 0 within 30 s).
pub fn terminate(child: &mut Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(st.success());
    for _ in 0..300 {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "admitd exited with {st}");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("admitd did not stop within 30 s of SIGTERM");
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // a failed test must not leave the process behind
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
