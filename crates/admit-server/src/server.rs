//! Starting, running and stopping one admit node.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use admit_core::{Command, Ts};
use admit_proto::v1::admin_server::AdminServer;
use admit_proto::v1::admit_send_server::AdmitSendServer;
use admit_proto::v1::cluster_server::ClusterServer;
use admit_proto::v1::test_clock_server::TestClockServer;
use admit_raft::{NodeConfig, RaftNode};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::{ReaderSlot, ShardApp};
use crate::clock::Clock;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::protect::{Protect, Quota};
use crate::routing::peers::Peers;
use crate::routing::{Membership, Router, Routing};
use crate::service::admin::AdminService;
use crate::service::admit::AdmitService;
use crate::service::clock::ClockService;
use crate::service::cluster::ClusterService;
use crate::service::node::NodeService;
use crate::transport::dial::{PeerDialer, CONN_WINDOW, STREAM_WINDOW};
use crate::transport::listen::{incoming, ConnInfo, TrackLayer};
use crate::transport::tls::{Reloading, Role};
use crate::transport::{check_plaintext, split_peer_entry, Limits, Transport};

/// Shards (Raft groups) of a new data dir unless configured. Every group has
/// fixed costs (openraft's preallocated queues, about 2 MiB; its heartbeats;
/// a log entry's work is paid per group) and concurrent writes share a log
/// entry only within a group, so fewer groups carry more per entry: 16 gave
/// one node about twice the new conversations of 64, a 3-node cluster 1.5-2x,
/// and 40 B less per open window (docs/benchmarks.md, "How many shards by
/// default"). 16 still spreads leaders over clusters of up to about 8 nodes;
/// a cluster meant to grow further is created with more.
pub const DEFAULT_SHARDS: u32 = 16;

/// Everything a node needs to start. [`ServerConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Raft node id (never 0).
    pub node_id: u64,
    /// The API port's address (port 0: any free port).
    pub listen: SocketAddr,
    /// The API address callers reach this node at; defaults to the bound
    /// address.
    pub advertise: Option<String>,
    /// Where the journal lives.
    pub data_dir: PathBuf,
    /// Raft groups (shards); fixed for the life of the data dir.
    pub shards: u32,
    /// `shards` applies to a new data dir only: an existing one keeps the count
    /// it was created with (admitd sets this when the operator gave no count).
    pub shards_from_data_dir: bool,
    /// Start with the controllable test clock (TestClock RPCs accepted).
    pub test_clock: bool,
    /// Where the test clock starts (default: the system time).
    pub test_clock_start: Option<Ts>,
    /// How often each shard's leader logs a `Tick` (reclaims expired state).
    pub tick_interval: Duration,
    /// Requests served at once; beyond it UNAVAILABLE (R8.4).
    pub max_in_flight: usize,
    /// Optional per-caller quota (requests/s, burst); `None`: off.
    pub caller_quota: Option<Quota>,
    /// fsync the journal before acknowledging (turn off only in tests).
    pub fsync: bool,
    /// Raft timing: heartbeat and election timeout range.
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// Snapshot a shard after this many entries.
    pub snapshot_every: u64,
    /// The initial cluster: node id -> `API` or `API/PEER` addresses
    /// (`host:port`, a DNS name is fine; without `/PEER` the peer port is
    /// the API port + 1), this node included. Empty (the default): a single
    /// node.
    pub peers: BTreeMap<u64, String>,
    /// Replicas (voters) per shard in a cluster.
    pub replicas: usize,
    /// Initialize never-initialized shards from `peers` (or as a single
    /// node). Off for a node that joins an existing cluster.
    pub bootstrap: bool,
    /// Join an existing cluster through this node (`host:port`): start with
    /// `bootstrap` off and register with `Cluster.AddNode` there.
    pub join: Option<String>,
    /// Period of the cluster reconcile loop (replica moves, leader balance).
    pub reconcile_interval: Duration,
    /// How long shutdown waits for led shards to hand leadership over.
    pub handoff_timeout: Duration,
    // --- quiescent groups (issue 14) ---
    /// An idle shard group stops heartbeating after this long (admit-raft's
    /// `NodeConfig::quiesce_after`, 300 ms by default); `None`: never.
    pub quiesce_after: Option<Duration>,

    // --- metrics (docs/metrics.md) ---
    /// Where `/metrics` is served over HTTP; `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Per-scope series only for this many scopes nearest their limit.
    pub metrics_top_scopes: usize,
    // --- the peer port and transport security (docs/security.md) ---
    /// The peer port's address (Raft and node-to-node calls only). `None`:
    /// in a cluster the API address with the port + 1 (0 stays 0); a single
    /// node 127.0.0.1:0.
    pub peer_listen: Option<SocketAddr>,
    /// The peer address other nodes reach this node at; default: this
    /// node's peers entry, else the bound peer address.
    pub peer_advertise: Option<String>,
    /// TLS, mutual TLS and connection limits of both ports.
    pub transport: Transport,
    // ---- caller authentication (issue 12, docs/security.md) ----
    /// Callers, scopes and grants. `None`: every request is let in, as
    /// suits the embedded single node on loopback.
    pub auth: Option<crate::Auth>,
    /// The bearer token `join` sends with `Cluster.AddNode` (a caller with
    /// the `cluster` scope on the cluster joined).
    pub join_token: Option<crate::auth::Token>,
    /// In-process test clusters only: run a multi-node cluster on the test
    /// clock, which [`crate::clock::test_clock_allowed`] refuses otherwise.
    #[doc(hidden)]
    pub test_clock_in_cluster: bool,
    // ---- the service clock's bound (issue 11, item 2; docs/design.md) ----
    /// How far this node's clock may run ahead of the other nodes' before it
    /// stamps no command (its writes answer UNAVAILABLE).
    pub max_clock_offset: Duration,
    // ---- early refusal under overload (issue 11; crate::shed) ----
    /// Refuse sends before decoding them once calls wait this long to be
    /// first polled (the node is behind). `None`: never. admitd turns it on
    /// ([`crate::shed::DEFAULT_SHED_WHEN_LATE`]); library users and tests
    /// choose.
    pub shed_when_late: Option<Duration>,
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            node_id: 1,
            listen,
            advertise: None,
            data_dir: data_dir.into(),
            shards: DEFAULT_SHARDS,
            shards_from_data_dir: false,
            test_clock: false,
            test_clock_start: None,
            tick_interval: Duration::from_secs(10),
            max_in_flight: 4_096,
            caller_quota: None,
            fsync: true,
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(500), Duration::from_millis(1_000)),
            snapshot_every: 10_000,
            peers: BTreeMap::new(),
            replicas: 3,
            bootstrap: true,
            join: None,
            reconcile_interval: Duration::from_secs(1),
            handoff_timeout: Duration::from_secs(3),
            quiesce_after: Some(admit_raft::DEFAULT_QUIESCE_AFTER),
            // off unless asked for: many test nodes share one machine
            metrics_listen: None,
            metrics_top_scopes: crate::scrape::DEFAULT_TOP_SCOPES,
            peer_listen: None,
            peer_advertise: None,
            transport: Transport::default(),
            auth: None,
            join_token: None,
            test_clock_in_cluster: false,
            max_clock_offset: crate::skew::DEFAULT_MAX_CLOCK_OFFSET,
            shed_when_late: None,
        }
    }

    /// Part of a cluster (static peers or joining one).
    pub fn clustered(&self) -> bool {
        !self.peers.is_empty() || self.join.is_some()
    }
}

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Config(String),
    #[error(transparent)]
    Raft(#[from] admit_raft::StartError),
}

/// A running node. Dropping it does not stop it: call [`Running::shutdown`].
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    peer_addr: SocketAddr,
    ctx: Arc<Ctx>,
    stop: watch::Sender<bool>,
    peer_stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    peer_server: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Accept loops and certificate watchers (aborted at the end).
    tasks: Vec<JoinHandle<()>>,
    ticker: JoinHandle<()>,
    metrics: Option<crate::scrape::Endpoint>,
}

/// Starts a node: opens (or recovers) the journal, starts the Raft groups,
/// binds the API port (AdmitSend, Admin, TestClock, Cluster, health,
/// reflection) and the peer port (Raft transport and node-to-node calls,
/// only from nodes of the membership).
pub async fn start(cfg: ServerConfig) -> Result<Running, StartError> {
    if cfg.node_id == 0 {
        return Err(StartError::Config("node_id must not be 0".into()));
    }
    if cfg.shards == 0 || cfg.shards > 4_096 {
        return Err(StartError::Config("shards must be 1 to 4096".into()));
    }
    if cfg.replicas == 0 {
        return Err(StartError::Config("replicas must be at least 1".into()));
    }
    if !cfg.peers.is_empty() && cfg.join.is_none() && !cfg.peers.contains_key(&cfg.node_id) {
        return Err(StartError::Config(format!(
            "peers must include this node ({}) unless it joins",
            cfg.node_id
        )));
    }
    if !cfg.test_clock_in_cluster {
        crate::clock::test_clock_allowed(
            cfg.test_clock,
            cfg.clustered(),
            cfg.transport.api_tls.is_some() || cfg.transport.peer_tls.is_some(),
        )
        .map_err(StartError::Config)?;
    }
    let access = crate::ctx::access(cfg.auth.clone(), cfg.clustered(), &cfg.data_dir)
        .map_err(StartError::Config)?;
    let t = &cfg.transport;
    let peer_listen = cfg.peer_listen.unwrap_or_else(|| default_peer_listen(&cfg));
    check_plaintext("api", cfg.listen, t.api_tls.is_some(), t.insecure)
        .map_err(StartError::Config)?;
    check_plaintext("peer", peer_listen, t.peer_tls.is_some(), t.insecure)
        .map_err(StartError::Config)?;
    let load = |files: &Option<crate::transport::TlsFiles>, role| {
        files
            .clone()
            .map(|f| Reloading::new(f, role))
            .transpose()
            .map_err(StartError::Config)
    };
    let api_tls = load(&t.api_tls, Role::Api)?;
    let peer_tls = load(&t.peer_tls, Role::Peer)?;
    let mut static_apis = BTreeMap::new();
    let mut static_peers = BTreeMap::new();
    for (id, entry) in &cfg.peers {
        let (api, peer) =
            split_peer_entry(entry).map_err(|e| StartError::Config(format!("peers: {e}")))?;
        static_apis.insert(*id, api);
        static_peers.insert(*id, peer);
    }
    let (listener, addr) = bind(cfg.listen).await?;
    let (peer_listener, peer_addr) = bind(peer_listen).await?;
    let advertise = cfg.advertise.clone().unwrap_or_else(|| addr.to_string());
    let peer_advertise = cfg
        .peer_advertise
        .clone()
        .or_else(|| static_peers.get(&cfg.node_id).cloned())
        .unwrap_or_else(|| peer_addr.to_string());
    static_apis.insert(cfg.node_id, advertise.clone());
    let dialer = PeerDialer {
        tls: peer_tls.clone(),
    };

    // TLS to the member's API port when this node's API port has TLS (a
    // cluster's nodes are alike), with the node certificate
    let join_channel = match &cfg.join {
        Some(via) => Some(
            crate::transport::dial::api_channel(via, api_tls.as_ref().and(peer_tls.as_ref()))
                .map_err(StartError::Config)?,
        ),
        None => None,
    };
    let mut shards = cfg.shards;
    let new_dir = admit_raft::is_new_data_dir(&cfg.data_dir);
    if let (Some(ch), true) = (&join_channel, cfg.shards_from_data_dir && new_dir) {
        // a joining node given no count takes the cluster's (a data dir that
        // exists keeps its own: not asked, so a restart never waits on it)
        if let Some(n) = cluster_shards(ch.clone(), cfg.join_token.as_ref()).await {
            shards = n;
        }
    }
    let mut nc = NodeConfig::new(cfg.node_id, &cfg.data_dir, shards);
    nc.shards_from_data_dir = cfg.shards_from_data_dir;
    nc.advertise_addr = peer_advertise.clone();
    nc.listen_addr = None;
    nc.api_addr = advertise.clone();
    nc.api_addrs = static_apis.clone();
    nc.dialer = Some(Arc::new(dialer.clone()));
    nc.max_message_bytes = Some(t.raft_max_message_bytes);
    nc.fsync = cfg.fsync;
    nc.heartbeat = cfg.heartbeat;
    nc.election_timeout = cfg.election_timeout;
    nc.snapshot_every = cfg.snapshot_every;
    nc.peers = static_peers.clone();
    if let Some(me) = nc.peers.get_mut(&cfg.node_id) {
        // this node's entry is its advertised peer address
        me.clone_from(&peer_advertise);
    }
    nc.replicas = cfg.replicas;
    nc.bootstrap = cfg.bootstrap && cfg.join.is_none();
    nc.reconcile_interval = cfg.reconcile_interval;
    nc.handoff_timeout = cfg.handoff_timeout;
    nc.quiesce_after = cfg.quiesce_after;
    if cfg.clustered() {
        // an isolated leader must not hold a request forever; the request's
        // own deadline is usually shorter
        nc.write_timeout = Some(Duration::from_secs(10));
    }
    // sized as the groups are built: the data dir may hold another count
    // than `cfg.shards` (`shards_from_data_dir`)
    let slots: Mutex<Vec<Option<ReaderSlot>>> = Mutex::new(Vec::new());
    let raft = RaftNode::start(nc, |shard| {
        let (app, slot) = ShardApp::new();
        let mut slots = slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() <= shard as usize {
            slots.resize(shard as usize + 1, None);
        }
        slots[shard as usize] = Some(slot);
        app
    })
    .await?;
    let shards = raft.shards();
    let slots: Vec<ReaderSlot> = slots
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .collect::<Option<_>>()
        .ok_or_else(|| StartError::Config("a shard was not created".into()))?;

    let clock = if cfg.test_clock {
        Clock::test(cfg.test_clock_start)
    } else {
        Clock::system()
    };
    let routing = Routing::new(
        raft.clone(),
        slots,
        Router::new(shards),
        clock,
        Membership {
            peer_advertise: peer_advertise.clone(),
            advertise: advertise.clone(),
            static_apis,
            peers: Peers::new(dialer, t.peer_limits.max_message_bytes, Some(raft.clone())),
            clustered: cfg.clustered(),
            static_peers,
            replicas: cfg.replicas,
            max_clock_offset: cfg.max_clock_offset,
        },
    );
    let ctx = Arc::new(Ctx::new(
        routing,
        Protect::new(cfg.max_in_flight, cfg.caller_quota),
        access,
    ));

    let (stop, stop_rx) = watch::channel(false);
    let (health, health_svc) = tonic_health::server::health_reporter();
    for name in admit_proto::SERVICE_NAMES {
        health
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(admit_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Config(format!("reflection: {e}")))?;

    let api_max = t.api_limits.max_message_bytes;
    let router = server_builder(&t.api_limits)
        // ahead of auth: a node that is behind refuses before any other work
        .layer(crate::shed::ShedLayer::new(
            cfg.shed_when_late.map(crate::shed::Lateness::new),
        ))
        .layer(crate::auth::layer::AuthLayer::new(cfg.auth.clone()))
        .add_service(health_svc)
        .add_service(reflection)
        .add_service(
            AdmitSendServer::new(AdmitService { ctx: ctx.clone() })
                .max_decoding_message_size(api_max)
                .max_encoding_message_size(api_max),
        )
        .add_service(
            AdminServer::new(AdminService { ctx: ctx.clone() })
                .max_decoding_message_size(api_max)
                .max_encoding_message_size(api_max),
        )
        // the test clock is served only in test mode (issue 12)
        .add_optional_service(
            cfg.test_clock
                .then(|| TestClockServer::new(ClockService { ctx: ctx.clone() })),
        )
        .add_service(
            ClusterServer::new(ClusterService { ctx: ctx.clone() })
                .max_decoding_message_size(api_max)
                .max_encoding_message_size(api_max),
        );
    // The peer port: every request must come from a node of the membership
    // (its certificate names it) when the port runs mutual TLS.
    let guard = {
        let ctx = Arc::downgrade(&ctx);
        let mtls = peer_tls.is_some();
        move |req: tonic::Request<()>| peer_guard(&ctx, mtls, req)
    };
    // relayed requests may also come on the node-pair streams
    raft.serve_app_frames(Arc::new(crate::service::node::StreamRelays {
        ctx: Arc::downgrade(&ctx),
    }));
    let node_max = t.peer_limits.max_message_bytes;
    let peer_router = server_builder(&t.peer_limits)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            crate::wire::pb::node_rpc_server::NodeRpcServer::new(NodeService { ctx: ctx.clone() })
                .max_decoding_message_size(node_max)
                .max_encoding_message_size(node_max),
            guard.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            raft.grpc_service(),
            guard,
        ));
    let (conns, api_accept) = incoming(listener, "api", api_tls.clone(), &t.api_limits);
    let (peer_conns, peer_accept) =
        incoming(peer_listener, "peer", peer_tls.clone(), &t.peer_limits);
    let mut tasks = vec![api_accept, peer_accept];
    for tls in [&api_tls, &peer_tls].into_iter().flatten() {
        tasks.push(tls.watch(t.reload_interval, stop_rx.clone()));
    }
    let mut rx = stop_rx.clone();
    let server = tokio::spawn(async move {
        let stopping = async move {
            let _ = rx.wait_for(|s| *s).await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        };
        router.serve_with_incoming_shutdown(conns, stopping).await
    });
    // the peer port closes after Raft stopped (leadership hand-off uses it)
    let (peer_stop, mut rx) = watch::channel(false);
    let peer_server = tokio::spawn(async move {
        peer_router
            .serve_with_incoming_shutdown(peer_conns, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
    });
    let metrics = match cfg.metrics_listen {
        Some(at) => Some(
            crate::scrape::Endpoint::start(
                at,
                cfg.metrics_top_scopes,
                ctx.clone(),
                stop_rx.clone(),
            )
            .await
            .map_err(|source| StartError::Listen { addr: at, source })?,
        ),
        None => None,
    };
    // issue 14: clock samples ride on the Raft layer's liveness answers
    crate::relay::carry_clocks(&ctx);
    let clocks = tokio::spawn(crate::relay::watch_clocks(ctx.clone(), stop_rx.clone()));
    let ticker = tokio::spawn(tick_loop(ctx.clone(), cfg.tick_interval, stop_rx));
    tracing::info!(%addr, %peer_addr, node_id = cfg.node_id, shards, test_clock = cfg.test_clock, peers = cfg.peers.len(), api_tls = api_tls.is_some(), peer_tls = peer_tls.is_some(), "admit node serving");
    if let (Some(via), Some(ch)) = (&cfg.join, join_channel) {
        let members = join(
            ch,
            via,
            cfg.node_id,
            (&advertise, &peer_advertise),
            shards,
            cfg.join_token.as_ref(),
        )
        .await;
        // until the registry arrives, the peer port serves these only
        if let Some(m) = members {
            ctx.routing.learned_members(m);
        }
    }
    tasks.push(clocks);
    Ok(Running {
        addr,
        peer_addr,
        ctx,
        stop,
        peer_stop,
        server,
        peer_server,
        tasks,
        ticker,
        metrics,
    })
}

/// Every `every`, each shard this node leads logs a `Tick`, so expired state
/// is reclaimed through the log (alike on every replica). Also sweeps the
/// leader-local token buckets and quota buckets.
///
/// A shard whose log has not grown since its last tick here, and whose last
/// tick reclaimed nothing, is skipped for up to [`IDLE_TICK_EVERY`]: a tick
/// is a write, and a write wakes a quiescent group (heartbeats, an fsync on
/// every replica), which was most of an idle cluster's CPU. Skipping changes
/// no decision: expired state decides like absent state (`admit-core`'s
/// `Engine::tick`), so reclaiming it later only holds memory a little longer.
async fn tick_loop(ctx: Arc<Ctx>, every: Duration, mut stop: watch::Receiver<bool>) {
    if every.is_zero() {
        return;
    }
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    let mut last: HashMap<u32, IdleTick> = HashMap::new();
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let routing = &ctx.routing;
        let raft = &routing.raft;
        for shard in 0..routing.shards() {
            if *stop.borrow() {
                return;
            }
            if raft.leader(shard) != Some(raft.node_id()) {
                last.remove(&shard);
                continue;
            }
            let log = raft.last_log_index(shard);
            if last.get(&shard).is_some_and(|l| l.skips(log, ctx.now())) {
                continue;
            }
            let reclaimed = match tick_once(routing, shard).await {
                Ok(admit_core::Output::Ticked { reclaimed }) => {
                    if reclaimed > 0 {
                        tracing::debug!(shard, reclaimed, "tick reclaimed expired state");
                    }
                    reclaimed
                }
                Ok(_) => 0,
                Err(e) => {
                    tracing::debug!(shard, error = %e, "tick not applied");
                    last.remove(&shard);
                    continue;
                }
            };
            last.insert(
                shard,
                IdleTick {
                    log: raft.last_log_index(shard),
                    at: ctx.now(),
                    reclaimed,
                },
            );
        }
        ctx.admission.rates.sweep(ctx.now());
        ctx.protect.sweep();
    }
}

/// Logs one `Tick` to `shard`. A group that was quiescent takes it like any
/// proposal: admit-raft renews a lease that ran out while the group idled
/// before it proposes (openraft refuses entries from a leader without one),
/// so the tick needs no retry of its own.
async fn tick_once(routing: &Routing, shard: u32) -> Result<admit_core::Output, ApiError> {
    routing.write_here(shard, Command::Tick).await
}

/// The longest a led shard goes without a tick when nothing is written to it.
pub(crate) const IDLE_TICK_EVERY: Duration = Duration::from_secs(600);

/// What the tick loop saw right after its last tick of a shard.
#[derive(Debug, Clone, Copy)]
struct IdleTick {
    /// The shard's last log index just after the tick.
    log: Option<u64>,
    /// The service time of the tick (the test clock can jump: a jump past the
    /// idle bound ticks at once).
    at: admit_core::Ts,
    reclaimed: u64,
}

impl IdleTick {
    /// Whether the next tick may be skipped: nothing was reclaimed (so nothing
    /// was left half done), the log has not grown since, and the idle bound has
    /// not passed.
    fn skips(&self, log: Option<u64>, now: admit_core::Ts) -> bool {
        let idle = Duration::from_millis(now.0.saturating_sub(self.at.0));
        self.reclaimed == 0 && self.log == log && idle < IDLE_TICK_EVERY
    }
}

/// Binds one port.
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    let bound = l
        .local_addr()
        .map_err(|source| StartError::Listen { addr, source })?;
    Ok((l, bound))
}

/// The peer port when none is configured: in a cluster the API port + 1 on
/// the same address (0 stays 0), for a single node any loopback port
/// (nobody dials it).
fn default_peer_listen(cfg: &ServerConfig) -> SocketAddr {
    if !cfg.clustered() {
        return SocketAddr::from(([127, 0, 0, 1], 0));
    }
    let port = match cfg.listen.port() {
        0 => 0,
        p => p.saturating_add(1),
    };
    SocketAddr::new(cfg.listen.ip(), port)
}

/// A tonic server with one listener's connection limits.
fn server_builder(
    l: &Limits,
) -> tonic::transport::Server<tower::layer::util::Stack<TrackLayer, tower::layer::util::Identity>> {
    tonic::transport::Server::builder()
        .initial_connection_window_size(CONN_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW)
        .max_concurrent_streams(l.max_concurrent_streams)
        .http2_keepalive_interval(Some(l.keepalive_interval))
        .http2_keepalive_timeout(Some(l.keepalive_timeout))
        .timeout(l.request_timeout)
        .layer(TrackLayer)
}

/// The peer port's check of every request: with mutual TLS, the
/// certificate must name a node of the membership (PERMISSION_DENIED
/// otherwise, with the reason), and the request carries that node
/// (`admit_raft::PeerNode`): its Raft messages speak only for it.
#[allow(clippy::result_large_err)]
fn peer_guard(
    ctx: &std::sync::Weak<Ctx>,
    mtls: bool,
    req: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    if !mtls {
        return Ok(req);
    }
    let ctx = ctx
        .upgrade()
        .ok_or_else(|| tonic::Status::unavailable("node stopping"))?;
    let id = req
        .extensions()
        .get::<ConnInfo>()
        .and_then(|c| c.leaf())
        .and_then(crate::transport::node_id_of)
        .ok_or_else(|| {
            tonic::Status::permission_denied(
                "the peer port serves only nodes: the client certificate names no node",
            )
        })?;
    let allowed = move |ctx: &Ctx| {
        if ctx.routing.peer_allowed(id) {
            Ok(())
        } else {
            Err(tonic::Status::permission_denied(format!(
                "node {id} is not a member of this cluster"
            )))
        }
    };
    allowed(&ctx)?;
    // a long-lived Raft stream is checked again for every batch (issue 14)
    let mut req = req;
    // its Raft messages may speak only for the node the certificate names
    req.extensions_mut().insert(admit_raft::PeerNode(id));
    let weak = Arc::downgrade(&ctx);
    req.extensions_mut()
        .insert(admit_raft::PeerCheck::new(move || match weak.upgrade() {
            Some(ctx) => allowed(&ctx),
            None => Err(tonic::Status::unavailable("node stopping")),
        }));
    Ok(req)
}

/// The cluster's shard count as the member behind `ch` holds it
/// (`Cluster.ListShards`, this node's view), retrying for up to 30 s while
/// it cannot be reached; `None` if it could not tell (then `Cluster.AddNode`
/// still refuses a node with another count).
async fn cluster_shards(
    ch: tonic::transport::Channel,
    token: Option<&crate::auth::Token>,
) -> Option<u32> {
    use admit_proto::v1::cluster_client::ClusterClient;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut req = tonic::Request::new(admit_proto::v1::ListShardsRequest { local_only: true });
        if let Some(t) = token {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {}", t.0).parse().ok()?);
        }
        req.set_timeout(Duration::from_secs(2));
        match ClusterClient::new(ch.clone()).list_shards(req).await {
            Ok(r) => {
                let n = u32::try_from(r.into_inner().shards.len()).ok()?;
                return (n > 0).then_some(n);
            }
            Err(s)
                if s.code() == tonic::Code::Unavailable && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(s) => {
                tracing::warn!(error = %s.message(), "join: could not learn the cluster's shard count");
                return None;
            }
        }
    }
}

/// Registers this node with the cluster through `via` (`Cluster.AddNode`),
/// retrying for up to 60 s; the cluster's non-removed members the answer
/// names. Failure is logged, not fatal: a restarted node that joined before
/// is registered already.
async fn join(
    ch: tonic::transport::Channel,
    via: &str,
    node_id: u64,
    (advertise, peer_advertise): (&str, &str),
    shards: u32,
    token: Option<&crate::auth::Token>,
) -> Option<std::collections::BTreeSet<u64>> {
    use admit_proto::v1::cluster_client::ClusterClient;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = async {
            let mut c = ClusterClient::new(ch.clone());
            let mut req = tonic::Request::new(admit_proto::v1::AddNodeRequest {
                node_id,
                address: advertise.to_string(),
                peer_address: peer_advertise.to_string(),
                shards,
            });
            if let Some(t) = token {
                let v = format!("Bearer {}", t.0)
                    .parse()
                    .map_err(|_| tonic::Status::invalid_argument("join token: not ASCII"))?;
                req.metadata_mut().insert("authorization", v);
            }
            c.add_node(req).await
        }
        .await;
        match r {
            Ok(r) => {
                tracing::info!(via, node_id, "joined the cluster");
                let removed = admit_proto::v1::NodeState::Removed as i32;
                return Some(
                    r.into_inner()
                        .nodes
                        .iter()
                        .filter(|n| n.state != removed)
                        .map(|n| n.node_id)
                        .collect(),
                );
            }
            // refused for good: retrying cannot help (bad credentials too)
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::FailedPrecondition
                        | tonic::Code::Unauthenticated
                        | tonic::Code::PermissionDenied
                ) =>
            {
                tracing::error!(via, node_id, error = %s.message(), "join refused");
                return None;
            }
            Err(s) if std::time::Instant::now() > deadline => {
                tracing::error!(via, node_id, error = %s.message(), "could not join the cluster");
                return None;
            }
            Err(s) => {
                tracing::info!(via, error = %s.message(), "join: retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

impl Running {
    /// The public API in process (the webhook receiver's way in).
    pub fn in_process(&self) -> crate::InProcess {
        crate::InProcess::new(self.ctx.clone())
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.ctx.routing.raft.node_id()
    }

    /// The API address callers reach this one at.
    pub fn advertise(&self) -> &str {
        &self.ctx.routing.advertise
    }

    /// The peer-port address other nodes reach this one at.
    pub fn peer_advertise(&self) -> &str {
        &self.ctx.routing.peer_advertise
    }

    /// The bound peer-port address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Test switch: drop every Raft message to and from this node (a network
    /// partition for Raft; the public API and forwarding still work).
    #[doc(hidden)]
    pub fn set_isolated(&self, isolated: bool) {
        self.ctx.routing.raft.set_isolated(isolated);
    }

    /// Test switch: refuse relayed requests on the node-pair streams from
    /// now on, as a build from before they rode there does (a rolling
    /// upgrade); peers then relay to this node with calls.
    #[doc(hidden)]
    pub fn set_refuse_relays_on_stream(&self, refuse: bool) {
        self.ctx.routing.raft.set_refuse_app_frames(refuse);
    }

    /// Test helper: stop like a crash: Raft is cut and stopped at once (no
    /// leadership handoff), requests in flight fail, the port closes.
    #[doc(hidden)]
    pub async fn crash(self) {
        let _ = self.stop.send(true);
        let _ = self.peer_stop.send(true);
        self.ctx.routing.raft.crash().await;
        for t in &self.tasks {
            t.abort();
        }
        for server in [self.server, self.peer_server] {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.ticker.abort();
        if let Some(m) = self.metrics {
            m.stop().await;
        }
    }

    // --- issue 11: storage faults ---
    /// Test switch: every journal write from now on fails as on a full disk
    /// (ENOSPC); writes answer UNAVAILABLE until the node restarts.
    #[doc(hidden)]
    pub fn fail_journal_writes(&self) {
        self.ctx.routing.raft.fail_journal_writes();
    }

    /// Test helper: set this node's test clock alone (the `TestClock`
    /// service sets every node's), to give it a clock the others lack.
    #[doc(hidden)]
    pub fn set_own_clock(&self, to: Ts) -> Result<Ts, crate::clock::ClockError> {
        self.ctx.routing.clock.set(to)
    }

    /// Test helper: hold every free in-flight permit of this node until the
    /// returned permit is dropped (requests beyond it are refused).
    #[doc(hidden)]
    pub fn hold_in_flight(&self) -> Option<crate::protect::Permit> {
        self.ctx.protect.hold_all()
    }

    /// Test helper: this node's clock minus the quorum clock in ms, and how
    /// many other nodes' clocks it has a fresh sample of.
    #[doc(hidden)]
    pub fn clock_skew(&self) -> (i64, usize) {
        let m = self.ctx.routing.skew.measure(self.ctx.routing.clock_now());
        (m.skew_ms, m.peers.len())
    }

    // --- issue 14: what an idle node does ---
    /// Test helper: counters of an idle node's own traffic so far: the
    /// quiescence loop's liveness rounds, liveness messages sent, clock samples they
    /// brought, unary clock calls, node-pair stream batches and frames.
    #[doc(hidden)]
    pub fn idle_counters(&self) -> Vec<(&'static str, u64)> {
        let raft = &self.ctx.routing.raft;
        let q = raft.idle_counters();
        let (batches, frames) = raft.stream_counters();
        let w = &self.ctx.routing.wakeups;
        let unary = self
            .ctx
            .routing
            .skew
            .unary_calls
            .load(std::sync::atomic::Ordering::Relaxed);
        vec![
            ("liveness_rounds", q.liveness_rounds),
            ("liveness_sent", q.liveness_sent),
            ("liveness_clock_samples", q.clock_samples),
            ("unary_clock_calls", unary),
            ("stream_batches", batches),
            ("stream_frames", frames),
            // wake-ups of the periodic loops
            (
                "leader_scans",
                w.leaders.load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "clock_rounds",
                w.clocks.load(std::sync::atomic::Ordering::Relaxed),
            ),
            ("reconcile_passes", q.reconcile_passes),
        ]
    }

    /// Test helper: how many of this node's Raft groups are quiesced.
    #[doc(hidden)]
    pub fn quiesced_groups(&self) -> usize {
        self.ctx.routing.raft.quiesced_groups()
    }

    /// The bound address of `/metrics`, if served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|m| m.addr)
    }

    /// The bound gRPC address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the node runs on the test clock.
    pub fn test_clock(&self) -> bool {
        self.ctx.routing.clock.is_test()
    }

    /// Stops accepting, lets requests in flight finish, then stops the Raft
    /// groups and flushes the journal.
    pub async fn shutdown(self) -> Result<(), std::io::Error> {
        let _ = self.stop.send(true);
        // the API port first: stop taking requests
        self.tasks[0].abort();
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "grpc server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "grpc server task failed"),
        }
        let _ = self.ticker.await;
        if let Some(m) = self.metrics {
            m.stop().await;
        }
        // Raft hands leadership over through the peer port, so it closes last
        let r = self.ctx.routing.raft.shutdown().await;
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.peer_stop.send(true);
        let _ = self.peer_server.await;
        tracing::info!("admit node stopped");
        r
    }
}
