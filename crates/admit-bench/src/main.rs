//! admit-bench: the project's load generator.
//!
//! Drives an admit server over gRPC with many concurrent callers and reports decisions/s
//! and p50/p99/p999 latency per scenario. In the same run it measures an empty tonic
//! unary service (the standard health `Check`, served in this process on loopback): the
//! floor no gRPC service on this machine can beat. Every figure is also given as a ratio
//! to that floor, because this machine is shared and absolute numbers drift between runs.
//!
//! ```sh
//! cargo run --release -p admitd &                      # or any running admitd
//! cargo run --release -p admit-bench -- --target http://127.0.0.1:50051
//! ```
//!
//! ## Layering
//!
//! admit-bench sees admit as a sender service does, through the public gRPC
//! API only: it imports `admit-proto`'s clients, and `tonic-health` for the
//! floor. It must not link `admit-server`, `admit-core` or `admit-raft`: an
//! in-process call would measure a path no caller takes. Its figures go to
//! `docs/benchmarks.md`, never into test assertions.

use admit_proto::v1 as pb;
use anyhow::{bail, Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use pb::admin_client::AdminClient;
use pb::admit_send_client::AdmitSendClient;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Endpoint;

mod conn;
mod overload;
mod peers;
mod route;
mod split;
mod webhook;
use conn::Chan;
use route::Route;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Routing {
    Spread,
    Leader,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Load generator for admit (gRPC AdmitSend)")]
struct Args {
    /// The admit server's gRPC address; several comma-separated addresses
    /// (the nodes of a cluster) share the connections round-robin.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// The nodes' metrics URLs (`http://host:port/metrics`, comma-separated):
    /// after each closed-loop scenario, the means of their write-path
    /// histograms over the scenario (docs/metrics.md): where the time went.
    #[arg(long, value_delimiter = ',')]
    metrics: Vec<String>,
    /// Concurrent callers (each one request in flight at a time).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds each scenario runs (after a short warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Business numbers registered for the run (spread over the shards).
    #[arg(long, default_value_t = 64)]
    numbers: u32,
    /// Customers with an open service window per number.
    #[arg(long, default_value_t = 100)]
    window_customers: u32,
    /// Sends per AdmitBatch call.
    #[arg(long, default_value_t = 100)]
    batch: u32,
    /// Scenarios to run, in order: floor, batch-floor (an AdmitBatch service
    /// here that decides nothing), open, new, batch (each batch's sends spread
    /// over the numbers), campaign (each batch from one number), mixed, half,
    /// memory, failover; webhook (`--webhook-target`: signed deliveries to
    /// admitd's webhook receiver); overload and overload-new (open-loop
    /// load at `--overload-factor` times the capacity, open-window sends or
    /// new conversations); and the peer systems: etcd-put (`--etcd`),
    /// redis-lua (`--redis`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "floor,open,new,batch,campaign,mixed,half"
    )]
    scenarios: Vec<String>,
    /// `memory`: numbers to register and service windows to open per number; the
    /// server's resident memory is read from /proc before and after.
    #[arg(long, default_value_t = 100_000)]
    memory_numbers: u32,
    #[arg(long, default_value_t = 10)]
    memory_windows_per_number: u32,
    /// `memory`: the server's process id (for its resident memory).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Give every open-window send a fresh idempotency key (a keyed send's
    /// first decision is recorded through the log, R3.4).
    #[arg(long)]
    keyed: bool,
    /// Which node each call goes to: `spread` (the connections round-robin;
    /// in a cluster most calls are forwarded to their shard's leader) or
    /// `leader` (each number's calls to the node its last answer named as
    /// leader, as admit-client routes).
    #[arg(long, value_enum, default_value_t = Routing::Spread)]
    route: Routing,
    // --- transport security ---
    /// CA of the server's certificate: speak TLS (the host of --target is
    /// the name verified).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for TLS, with --key.
    #[arg(long)]
    cert: Option<std::path::PathBuf>,
    /// Client key (PEM).
    #[arg(long)]
    key: Option<std::path::PathBuf>,
    /// Bearer token sent as `authorization: Bearer <token>` on every call.
    #[arg(long, env = "ADMIT_TOKEN")]
    token: Option<String>,
    /// `floor` and `batch-floor`: the floor server's address, as served by
    /// another `admit-bench --serve-floor` process. Without it the floors
    /// are served inside this process, on the load generator's own threads,
    /// where a server in its own process (admitd) can beat them.
    #[arg(long)]
    floor_target: Option<String>,
    /// Serve the floors (the empty unary call and the AdmitBatch service
    /// that decides nothing) on this address until killed; no scenario runs.
    #[arg(long)]
    serve_floor: Option<SocketAddr>,
    // --- peer systems (scripts/bench-peers.sh) ---
    /// `etcd-put`: etcd client URLs, comma-separated (callers spread over them).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    etcd: String,
    /// `redis-lua`: the Redis server (`host:port` or `redis://...`).
    #[arg(long, default_value = "127.0.0.1:6379")]
    redis: String,
    // --- the webhook scenario ---
    /// `webhook`: the receiver's URL, `http://HOST:PORT/PATH` (admitd's
    /// `--webhook-listen` address; any path).
    #[arg(long)]
    webhook_target: Option<String>,
    /// `webhook`: the app secret deliveries are signed with (admitd's
    /// `--webhook-app-secret`).
    #[arg(long, env = "ADMIT_BENCH_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    // --- the overload scenarios ---
    /// `overload`, `overload-new`: the capacity to overload, calls/s. Without
    /// it, measured first (a closed loop of `--concurrency` callers).
    #[arg(long)]
    capacity: Option<f64>,
    /// `overload`, `overload-new`: the offered load as a multiple of the
    /// capacity (the baseline runs at half of it).
    #[arg(long, default_value_t = 2.0)]
    overload_factor: f64,
    /// Also print each scenario as `result<TAB>label<TAB>scenario<TAB>rate`,
    /// for scripts that put several runs side by side.
    #[arg(long)]
    label: Option<String>,
}

/// Resident memory of a process, from /proc (Linux).
fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Fills the server with `memory_numbers` numbers and that many times
/// `memory_windows_per_number` open service windows, and reports its resident memory.
async fn memory(args: &Args, chans: &[Chan], ids: &Ids) -> Result<()> {
    let Some(pid) = args.server_pid else {
        bail!("the memory scenario needs --server-pid");
    };
    let before = rss_bytes(pid).context("reading the server's VmRSS")?;
    let numbers = args.memory_numbers as u64;
    let per = args.memory_windows_per_number as u64;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let (next, chan) = (next.clone(), chans[w % chans.len()].clone());
        let ids = Ids { run: ids.run };
        tasks.push(tokio::spawn(async move {
            let mut admin = AdminClient::new(chan.clone());
            let mut send = AdmitSendClient::new(chan);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= numbers {
                    return Ok::<(), tonic::Status>(());
                }
                let number = format!("8{:06}{:07}", ids.run, n);
                admin
                    .register_number(pb::RegisterNumberRequest {
                        number_id: number.clone(),
                        profile: "seeds".into(),
                        ..Default::default()
                    })
                    .await?;
                for c in 0..per {
                    send.record_inbound(pb::RecordInboundRequest {
                        number_id: number.clone(),
                        customer_id: ids.customer(4, n * per + c),
                        ..Default::default()
                    })
                    .await?;
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("loader task")??;
    }
    let after = rss_bytes(pid).context("reading the server's VmRSS")?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "memory: {numbers} numbers, {} open service windows loaded in {:.0} s; \
         server RSS {:.0} MiB before, {:.0} MiB after",
        numbers * per,
        started.elapsed().as_secs_f64(),
        mib(before),
        mib(after),
    );
    Ok(())
}

/// What one scenario measured.
struct Report {
    name: String,
    decisions: u64,
    calls: u64,
    errors: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
}

impl Report {
    fn per_sec(&self) -> f64 {
        self.decisions as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1_000.0
    }
}

/// `n` connections over `targets` (TLS and token from the flags; the
/// in-process floor servers are plain text).
async fn connect(args: &Args, targets: &str, n: usize, plain: bool) -> Result<Vec<Chan>> {
    let tls = if plain {
        None
    } else {
        conn::TlsFlags {
            ca: args.ca.clone(),
            cert: args.cert.clone(),
            key: args.key.clone(),
        }
        .config()?
    };
    let token = conn::Token::new(args.token.as_deref())?;
    let targets: Vec<&str> = targets.split(',').map(str::trim).collect();
    let mut chans = Vec::with_capacity(n);
    for i in 0..n.max(1) {
        let target = targets[i % targets.len()];
        // windows large enough that batch replies of many streams do not
        // wait for window updates
        let uri = if target.contains("://") {
            target.replace("https://", "http://")
        } else {
            format!("http://{target}")
        };
        let ep = Endpoint::from_shared(uri)?
            .tcp_nodelay(true)
            .initial_connection_window_size(WINDOW_CONN)
            .initial_stream_window_size(WINDOW_STREAM);
        let ch = conn::open(ep, target, tls.clone())
            .await
            .with_context(|| format!("connecting to {target}"))?;
        chans.push(tonic::service::interceptor::InterceptedService::new(
            ch,
            token.clone(),
        ));
    }
    Ok(chans)
}

/// Runs `call` from `concurrency` callers for `dur`; `call` returns how many decisions the
/// call made (a batch makes many). With `rate`, callers pace themselves to that many
/// calls per second in total.
async fn drive<F, Fut>(name: &str, args: &Args, dur: Duration, rate: Option<f64>, call: F) -> Report
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, tonic::Status>> + Send,
{
    let call = Arc::new(call);
    let seq = Arc::new(AtomicU64::new(0));
    let before = split::scrape(&args.metrics).await;
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let (call, seq) = (call.clone(), seq.clone());
        let pace = rate.map(|r| Duration::from_secs_f64(args.concurrency as f64 / r));
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let (mut decisions, mut calls, mut errors) = (0u64, 0u64, 0u64);
            let mut next = Instant::now();
            while Instant::now() < deadline {
                if let Some(p) = pace {
                    next += p;
                    tokio::time::sleep_until(next.into()).await;
                }
                let i = seq.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                match call(w, i).await {
                    Ok(d) => {
                        decisions += d;
                        calls += 1;
                        let _ = hist.record(t.elapsed().as_micros() as u64);
                    }
                    Err(_) => errors += 1,
                }
            }
            (hist, decisions, calls, errors)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut decisions, mut calls, mut errors) = (0, 0, 0);
    for t in tasks {
        let (h, d, c, e) = t.await.expect("caller task");
        hist.add(h).expect("same bounds");
        decisions += d;
        calls += c;
        errors += e;
    }
    let elapsed = start.elapsed();
    if !args.metrics.is_empty() {
        split::print(name, &before, &split::scrape(&args.metrics).await);
    }
    Report {
        name: name.to_owned(),
        decisions,
        calls,
        errors,
        elapsed,
        hist,
    }
}

/// An overload scenario: the capacity (closed loop, unless `--capacity`),
/// then an open loop at half of it (the unloaded latency) and one at
/// `--overload-factor` times it; prints both and the ratio of their p99s,
/// and the server's resident memory around the overload (`--server-pid`).
async fn overload_run<F, Fut>(
    scenario: &str,
    args: &Args,
    dur: Duration,
    call: F,
    reports: &mut Vec<Report>,
    lines: &mut Vec<(String, f64)>,
) -> Result<()>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Result<u64, tonic::Status>> + Send + 'static,
{
    let capacity = match args.capacity {
        Some(c) => c,
        None => {
            let r = drive(
                &format!("{scenario}: capacity (closed loop)"),
                args,
                dur,
                None,
                call.clone(),
            )
            .await;
            let c = r.per_sec();
            reports.push(r);
            c
        }
    };
    let conc = args.concurrency.max(1);
    let open_loop = |rate: f64, name: String| {
        let call = call.clone();
        async move {
            overload::run(&name, rate, dur, move |i| {
                let f = call((i % conc as u64) as usize, i);
                async move { f.await.map(|_| ()) }
            })
            .await
        }
    };
    let base = open_loop(capacity / 2.0, format!("{scenario}: at half the capacity")).await;
    base.print();
    let rss0 = args.server_pid.and_then(rss_bytes);
    let over = open_loop(
        capacity * args.overload_factor,
        format!("{scenario}: at {}x the capacity", args.overload_factor),
    )
    .await;
    over.print();
    let rss1 = args.server_pid.and_then(rss_bytes);
    println!(
        "{scenario}: capacity {capacity:.0}/s; admitted p99 under overload / at half load = {:.2}",
        over.ok_ms(0.99) / base.ok_ms(0.99).max(0.001)
    );
    if let (Some(a), Some(b)) = (rss0, rss1) {
        println!(
            "{scenario}: server resident memory {:.1} MiB before the overload, {:.1} MiB after",
            a as f64 / 1048576.0,
            b as f64 / 1048576.0
        );
    }
    lines.push((
        format!("{scenario} admitted under overload"),
        over.ok_per_sec(),
    ));
    Ok(())
}

/// An empty unary tonic service on loopback: the health service's `Check`.
/// The floor of `AdmitBatch`: an AdmitSend service that decodes each batch
/// and answers every item with a decision of the shape the server gives (a
/// new counted conversation with its usage, window end and admission id),
/// deciding nothing and storing nothing. What it costs is the gRPC and
/// protobuf work that any AdmitBatch server on this machine must do.
#[derive(Debug, Default)]
struct BatchFloor;

#[tonic::async_trait]
impl pb::admit_send_server::AdmitSend for BatchFloor {
    async fn admit(
        &self,
        _: tonic::Request<pb::AdmitRequest>,
    ) -> Result<tonic::Response<pb::AdmitResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("batch floor"))
    }

    async fn admit_batch(
        &self,
        request: tonic::Request<pb::AdmitBatchRequest>,
    ) -> Result<tonic::Response<pb::AdmitBatchResponse>, tonic::Status> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let results = request
            .into_inner()
            .sends
            .into_iter()
            .enumerate()
            .map(|(i, s)| pb::AdmitBatchResult {
                index: i as u32,
                result: Some(pb::admit_batch_result::Result::Decision(pb::Decision {
                    allowed: true,
                    reason: pb::Reason::NewConversation as i32,
                    usage: Some(pb::LimitUsage {
                        scope: pb::LimitScope::Number as i32,
                        scope_id: s.number_id.clone(),
                        tier: Some(pb::Tier {
                            name: "TIER_UNLIMITED".into(),
                            limit: 0,
                            unlimited: true,
                        }),
                        used: i as u32,
                        headroom: 0,
                        next_release_unix_ms: Some(now + 86_400_000),
                    }),
                    window_end_unix_ms: Some(now + 86_400_000),
                    admission_id: format!("{}.{now}.{i}", s.number_id),
                    counted: true,
                    decided_at_unix_ms: now,
                    ..Default::default()
                })),
            })
            .collect();
        Ok(tonic::Response::new(pb::AdmitBatchResponse {
            results,
            leader_hint: None,
        }))
    }

    async fn release(
        &self,
        _: tonic::Request<pb::ReleaseRequest>,
    ) -> Result<tonic::Response<pb::ReleaseResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("batch floor"))
    }

    async fn record_inbound(
        &self,
        _: tonic::Request<pb::RecordInboundRequest>,
    ) -> Result<tonic::Response<pb::RecordInboundResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("batch floor"))
    }

    async fn report_outcome(
        &self,
        _: tonic::Request<pb::ReportOutcomeRequest>,
    ) -> Result<tonic::Response<pb::ReportOutcomeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("batch floor"))
    }
}

/// Drives AdmitBatch calls of `--batch` new conversations each (spread over
/// the numbers, or all from one number); a call counts as an error unless
/// every item opened a counted conversation.
async fn batches(
    name: &str,
    args: &Args,
    dur: Duration,
    route: Arc<Route>,
    ids: Arc<Ids>,
    fresh: Arc<AtomicU64>,
    spread: bool,
) -> Report {
    let size = args.batch as u64;
    let numbers = args.numbers as u64;
    drive(name, args, dur, None, move |w, i| {
        // a spread batch names many shards: no one leader to route to
        let first = (i % numbers) as usize;
        let mut c = if spread {
            route.any(w)
        } else {
            route.client(w, first)
        };
        let route = route.clone();
        let base = fresh.fetch_add(size, Ordering::Relaxed);
        let sends = (0..size)
            .map(|j| pb::Send {
                number_id: ids.number(((i + if spread { j } else { 0 }) % numbers) as u32),
                customer_id: ids.customer(2, base + j),
                kind: template(pb::TemplateCategory::Utility),
                ..Default::default()
            })
            .collect();
        async move {
            let resp = c
                .admit_batch(pb::AdmitBatchRequest { sends })
                .await?
                .into_inner();
            if !spread {
                route.learn(first, resp.leader_hint.as_ref());
            }
            let counted = resp
                .results
                .iter()
                .filter(|r| {
                    matches!(&r.result, Some(pb::admit_batch_result::Result::Decision(d)) if d.counted)
                })
                .count() as u64;
            if counted != size {
                return Err(tonic::Status::internal(format!(
                    "{counted} of {size} items opened a counted conversation"
                )));
            }
            Ok(counted)
        }
    })
    .await
}

/// Connection and stream windows, as admitd uses (a batch reply need not
/// wait for window updates).
const WINDOW_CONN: u32 = 8 << 20;
const WINDOW_STREAM: u32 = 1 << 20;

/// The floors' URL: `--floor-target`, or a floor server started in this
/// process.
async fn floor_url(args: &Args) -> Result<String> {
    if let Some(url) = &args.floor_target {
        return Ok(url.clone());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve_floor(listener));
    Ok(format!("http://{addr}"))
}

async fn serve_floor(listener: tokio::net::TcpListener) -> Result<()> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = tokio_stream_incoming(listener);
    tonic::transport::Server::builder()
        .initial_connection_window_size(WINDOW_CONN)
        .initial_stream_window_size(WINDOW_STREAM)
        .add_service(health)
        .add_service(pb::admit_send_server::AdmitSendServer::new(BatchFloor))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

fn tokio_stream_incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream_shim::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream_shim::TcpIncoming(listener)
}

/// A minimal `Stream` of accepted connections, so the bench needs no extra crate.
mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};
    pub use tonic::codegen::tokio_stream::Stream;

    pub struct TcpIncoming(pub tokio::net::TcpListener);

    impl Stream for TcpIncoming {
        type Item = std::io::Result<tokio::net::TcpStream>;
        fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            match self.0.poll_accept(cx) {
                Poll::Ready(Ok((s, _))) => {
                    let _ = s.set_nodelay(true);
                    Poll::Ready(Some(Ok(s)))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

/// Ids unique to this run, so that runs against one server do not collide.
struct Ids {
    run: u64,
}

impl Ids {
    fn number(&self, i: u32) -> String {
        format!("9{:06}{:05}", self.run, i)
    }
    /// Customer ids: 13 digits, never starting with 0.
    fn customer(&self, space: u64, i: u64) -> String {
        format!(
            "{}{:03}{:09}",
            1 + space % 9,
            self.run % 1_000,
            i % 1_000_000_000
        )
    }
}

fn template(category: pb::TemplateCategory) -> Option<pb::send::Kind> {
    Some(pb::send::Kind::Template(pb::Template {
        template_id: "bench_tpl".into(),
        category: category as i32,
        name: "bench".into(),
        language: "en".into(),
    }))
}

fn free_form() -> Option<pb::send::Kind> {
    Some(pb::send::Kind::FreeForm(pb::FreeForm {}))
}

async fn setup(args: &Args, chans: &[Chan], ids: &Ids) -> Result<()> {
    let mut admin = AdminClient::new(chans[0].clone());
    let mut send = AdmitSendClient::new(chans[0].clone());
    for n in 0..args.numbers {
        admin
            .register_number(pb::RegisterNumberRequest {
                number_id: ids.number(n),
                profile: "seeds".into(),
                initial_tier: Some(pb::TierValue {
                    tier: Some(pb::tier_value::Tier::TierValue(-1)),
                }),
                throughput_mps: Some(10_000),
                ..Default::default()
            })
            .await
            .context("registering bench numbers")?;
        for c in 0..args.window_customers {
            send.record_inbound(pb::RecordInboundRequest {
                number_id: ids.number(n),
                customer_id: ids.customer(1, c as u64),
                text: Some("hi".into()),
                ..Default::default()
            })
            .await
            .context("opening service windows")?;
        }
    }
    Ok(())
}

fn print(reports: &[Report], floor: Option<f64>) {
    println!(
        "{:<28} {:>12} {:>10} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "scenario", "decisions/s", "calls", "p50 ms", "p99 ms", "p999 ms", "errors", "vs floor"
    );
    for r in reports {
        let ratio = floor.map_or("-".to_owned(), |f| format!("{:.2}", r.per_sec() / f));
        println!(
            "{:<28} {:>12.0} {:>10} {:>9.3} {:>9.3} {:>9.3} {:>8} {:>9}",
            r.name,
            r.per_sec(),
            r.calls,
            r.pct(0.5),
            r.pct(0.99),
            r.pct(0.999),
            r.errors,
            ratio
        );
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.concurrency == 0 || args.seconds == 0 || args.numbers == 0 || args.batch == 0 {
        bail!("--concurrency, --seconds, --numbers and --batch must be at least 1");
    }
    if let Some(addr) = args.serve_floor {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("serving the floors on {}", listener.local_addr()?);
        return serve_floor(listener).await;
    }
    let dur = Duration::from_secs(args.seconds);
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64 % 1_000_000;
    let ids = Arc::new(Ids { run });
    let wants = |s: &str| args.scenarios.iter().any(|x| x == s);
    let mut reports = Vec::new();
    let mut floor_rate = None;
    let mut overloads: Vec<(String, f64)> = Vec::new();

    if wants("floor") {
        let url = floor_url(&args).await?;
        let chans = connect(&args, &url, args.connections, true).await?;
        let clients: Vec<_> = chans
            .iter()
            .map(|c| tonic_health::pb::health_client::HealthClient::new(c.clone()))
            .collect();
        let clients = Arc::new(clients);
        let r = drive(
            "floor: empty unary (health)",
            &args,
            dur,
            None,
            move |w, _| {
                let mut c = clients[w % clients.len()].clone();
                async move {
                    c.check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|_| 1)
                }
            },
        )
        .await;
        floor_rate = Some(r.per_sec());
        reports.push(r);
    }

    if wants("batch-floor") {
        // campaign-shaped batches against an AdmitBatch service that decides
        // nothing: the most any AdmitBatch server can do here
        let url = floor_url(&args).await?;
        let chans = connect(&args, &url, args.connections, true).await?;
        let route = Arc::new(Route::new(&chans, &url, 0));
        let name = format!("batch floor: {} per call", args.batch);
        let fresh = Arc::new(AtomicU64::new(0));
        let r = batches(&name, &args, dur, route, ids.clone(), fresh, false).await;
        reports.push(r);
    }

    if wants("etcd-put") {
        let chans = connect(&args, &args.etcd, args.connections, true).await?;
        reports.push(peers::etcd_put("etcd Put (unique keys)", &args, dur, chans, run).await);
    }
    if wants("redis-lua") {
        reports.push(peers::redis_lua("Redis+Lua new conversations", &args, dur, run).await?);
    }

    if wants("memory") {
        let chans = connect(&args, &args.target, args.connections, false).await?;
        memory(&args, &chans, &ids).await?;
    }
    let needs_server = args.scenarios.iter().any(|s| {
        !["floor", "batch-floor", "memory", "etcd-put", "redis-lua"].contains(&s.as_str())
    });
    if needs_server {
        let chans = connect(&args, &args.target, args.connections, false).await?;
        setup(&args, &chans, &ids).await?;
        let numbers = args.numbers as u64;
        let routed = if args.route == Routing::Leader {
            args.numbers as usize
        } else {
            0
        };
        let clients = Arc::new(Route::new(&chans, &args.target, routed));
        let wc = args.window_customers as u64;

        let open = {
            let (clients, ids) = (clients.clone(), ids.clone());
            let keyed = args.keyed;
            move |w: usize, i: u64| {
                let n = (i % numbers) as usize;
                let mut c = clients.client(w, n);
                let route = clients.clone();
                let req = pb::AdmitRequest {
                    send: Some(pb::Send {
                        number_id: ids.number(n as u32),
                        customer_id: ids.customer(1, (i / numbers) % wc),
                        kind: free_form(),
                        idempotency_key: if keyed {
                            format!("k{}-{i}", ids.run)
                        } else {
                            String::new()
                        },
                    }),
                };
                async move {
                    let d = c.admit(req).await?.into_inner();
                    route.learn(n, d.leader_hint.as_ref());
                    Ok(1)
                }
            }
        };
        let mut open_rate = None;
        if wants("open") {
            let r = drive("open-window admits", &args, dur, None, open.clone()).await;
            open_rate = Some(r.per_sec());
            reports.push(r);
        }
        let fresh = Arc::new(AtomicU64::new(0));
        if wants("new") {
            let (clients, ids, fresh) = (clients.clone(), ids.clone(), fresh.clone());
            let r = drive("new-conversation admits", &args, dur, None, move |w, i| {
                let n = (i % numbers) as usize;
                let mut c = clients.client(w, n);
                let route = clients.clone();
                let k = fresh.fetch_add(1, Ordering::Relaxed);
                let req = pb::AdmitRequest {
                    send: Some(pb::Send {
                        number_id: ids.number(n as u32),
                        customer_id: ids.customer(2, k),
                        kind: template(pb::TemplateCategory::Utility),
                        ..Default::default()
                    }),
                };
                async move {
                    let d = c.admit(req).await?.into_inner();
                    route.learn(n, d.leader_hint.as_ref());
                    match d.decision {
                        Some(d) if d.counted => Ok(1),
                        _ => Err(tonic::Status::internal(
                            "expected a new counted conversation",
                        )),
                    }
                }
            })
            .await;
            reports.push(r);
        }
        // "batch": each batch's sends spread over the numbers (many shards);
        // "campaign": every send of a batch from one number (one shard, one
        // log entry), as a campaign sender sends
        for (scenario, spread) in [("batch", true), ("campaign", false)] {
            if !wants(scenario) {
                continue;
            }
            let size = args.batch;
            let name = if spread {
                format!("AdmitBatch of {size} (new)")
            } else {
                format!("AdmitBatch of {size}, 1 number")
            };
            let r = batches(
                &name,
                &args,
                dur,
                clients.clone(),
                ids.clone(),
                fresh.clone(),
                spread,
            )
            .await;
            reports.push(r);
        }
        if wants("failover") {
            // One caller, keyed new conversations on one number, each retried
            // with its key through the next connection until answered; kill
            // the number's shard leader meanwhile. Reports the longest time
            // without an answer (kill -> first successful admit on the shard).
            let (clients, ids, fresh) = (clients.clone(), ids.clone(), fresh.clone());
            println!("failover watch: number {}", ids.number(0));
            let start = Instant::now();
            let (mut longest, mut last_ok, mut errors, mut answered) =
                (Duration::ZERO, Instant::now(), 0u64, 0u64);
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut attempt = 0usize;
            while start.elapsed() < dur {
                let k = fresh.fetch_add(1, Ordering::Relaxed);
                loop {
                    let mut c = clients.any(attempt);
                    let mut req = tonic::Request::new(pb::AdmitRequest {
                        send: Some(pb::Send {
                            number_id: ids.number(0),
                            customer_id: ids.customer(3, k),
                            kind: template(pb::TemplateCategory::Utility),
                            idempotency_key: format!("failover-{}-{k}", ids.run),
                        }),
                    });
                    req.set_timeout(Duration::from_secs(2));
                    let t = Instant::now();
                    match c.admit(req).await {
                        Ok(_) => {
                            let _ = hist.record(t.elapsed().as_micros() as u64);
                            longest = longest.max(last_ok.elapsed());
                            last_ok = Instant::now();
                            answered += 1;
                            break;
                        }
                        Err(_) => {
                            errors += 1;
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            println!(
                "failover watch: {answered} admits answered, {errors} failed attempts (retried), longest time without an answer {:.0} ms",
                longest.as_secs_f64() * 1_000.0
            );
            reports.push(Report {
                name: "failover watch (1 caller)".into(),
                decisions: answered,
                calls: answered,
                errors,
                elapsed: start.elapsed(),
                hist,
            });
        }
        if wants("mixed") {
            let (clients, ids, fresh) = (clients.clone(), ids.clone(), fresh.clone());
            let r = drive("mixed 80/15/5", &args, dur, None, move |w, i| {
                let n = (i % numbers) as usize;
                let mut c = clients.client(w, n);
                let route = clients.clone();
                let number = ids.number(n as u32);
                let ids = ids.clone();
                let k = fresh.fetch_add(1, Ordering::Relaxed);
                async move {
                    match i % 20 {
                        0 => {
                            c.record_inbound(pb::RecordInboundRequest {
                                number_id: number,
                                customer_id: ids.customer(3, k),
                                text: Some("hello".into()),
                                ..Default::default()
                            })
                            .await?;
                        }
                        1..=3 => {
                            let d = c
                                .admit(pb::AdmitRequest {
                                    send: Some(pb::Send {
                                        number_id: number,
                                        customer_id: ids.customer(2, k),
                                        kind: template(pb::TemplateCategory::Marketing),
                                        ..Default::default()
                                    }),
                                })
                                .await?;
                            route.learn(n, d.get_ref().leader_hint.as_ref());
                        }
                        _ => {
                            let d = c
                                .admit(pb::AdmitRequest {
                                    send: Some(pb::Send {
                                        number_id: number,
                                        customer_id: ids.customer(1, (i / numbers) % wc),
                                        kind: free_form(),
                                        ..Default::default()
                                    }),
                                })
                                .await?;
                            route.learn(n, d.get_ref().leader_hint.as_ref());
                        }
                    }
                    Ok(1)
                }
            })
            .await;
            reports.push(r);
        }
        if wants("webhook") {
            reports.push(webhook::run(&args, dur, ids.clone()).await?);
        }
        for (scenario, fresh_customers) in [("overload", false), ("overload-new", true)] {
            if !wants(scenario) {
                continue;
            }
            let (clients, ids, fresh) = (clients.clone(), ids.clone(), fresh.clone());
            let open = open.clone();
            // one call: an open-window send, or a new conversation
            let call = move |w: usize, i: u64| {
                let req = if fresh_customers {
                    let k = fresh.fetch_add(1, Ordering::Relaxed);
                    Some(pb::AdmitRequest {
                        send: Some(pb::Send {
                            number_id: ids.number((i % numbers) as u32),
                            customer_id: ids.customer(3, k),
                            kind: template(pb::TemplateCategory::Utility),
                            ..Default::default()
                        }),
                    })
                } else {
                    None
                };
                let n = (i % numbers) as usize;
                let mut c = clients.client(w, n);
                let route = clients.clone();
                let open = open(w, i);
                async move {
                    match req {
                        Some(req) => {
                            let d = c.admit(req).await?;
                            route.learn(n, d.get_ref().leader_hint.as_ref());
                            Ok(1)
                        }
                        None => open.await,
                    }
                }
            };
            let report =
                overload_run(scenario, &args, dur, call, &mut reports, &mut overloads).await;
            report?;
        }
        if wants("half") {
            let max = match open_rate {
                Some(r) => r,
                None => drive(
                    "open-window (max, for half)",
                    &args,
                    dur,
                    None,
                    open.clone(),
                )
                .await
                .per_sec(),
            };
            let r = drive(
                "open-window at half max load",
                &args,
                dur,
                Some(max / 2.0),
                open,
            )
            .await;
            reports.push(r);
        }
    }
    print(&reports, floor_rate);
    for (line, rate) in &overloads {
        if let Some(label) = &args.label {
            println!("result\t{label}\t{line}\t{rate:.0}");
        }
    }
    if let Some(label) = &args.label {
        for r in &reports {
            println!("result\t{label}\t{}\t{:.0}", r.name, r.per_sec());
        }
    }
    Ok(())
}
