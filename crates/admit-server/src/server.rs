//! Starting, running and stopping one admit node.

use std::collections::BTreeMap;
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
use crate::protect::{Protect, Quota};
use crate::routing::peers::{CONN_WINDOW, MAX_FRAME, STREAM_WINDOW};
use crate::routing::{Membership, Router, Routing};
use crate::service::admin::AdminService;
use crate::service::admit::AdmitService;
use crate::service::clock::ClockService;
use crate::service::cluster::ClusterService;
use crate::service::node::NodeService;

/// Everything a node needs to start. [`ServerConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Raft node id (never 0).
    pub node_id: u64,
    /// The gRPC address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The address others reach this node at; defaults to the bound address.
    pub advertise: Option<String>,
    /// Where the journal lives.
    pub data_dir: PathBuf,
    /// Raft groups (shards); fixed for the life of the data dir.
    pub shards: u32,
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
    /// The initial cluster: node id -> gRPC address (`host:port`, a DNS name
    /// is fine), this node included. Empty (the default): a single node.
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
}

impl ServerConfig {
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            node_id: 1,
            listen,
            advertise: None,
            data_dir: data_dir.into(),
            shards: 64,
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
            auth: None,
            join_token: None,
            test_clock_in_cluster: false,
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
    ctx: Arc<Ctx>,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    ticker: JoinHandle<()>,
}

/// Starts a node: opens (or recovers) the journal, starts the Raft groups,
/// binds the gRPC port and serves AdmitSend, Admin, TestClock, Cluster,
/// health, reflection and the Raft transport on it.
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
        crate::clock::test_clock_allowed(cfg.test_clock, cfg.clustered(), false)
            .map_err(StartError::Config)?;
    }
    let access = crate::ctx::access(cfg.auth.clone(), cfg.clustered(), &cfg.data_dir)
        .map_err(StartError::Config)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: cfg.listen,
        source,
    })?;
    let advertise = cfg.advertise.clone().unwrap_or_else(|| addr.to_string());

    let mut nc = NodeConfig::new(cfg.node_id, &cfg.data_dir, cfg.shards);
    nc.advertise_addr = advertise.clone();
    nc.listen_addr = None;
    nc.fsync = cfg.fsync;
    nc.heartbeat = cfg.heartbeat;
    nc.election_timeout = cfg.election_timeout;
    nc.snapshot_every = cfg.snapshot_every;
    nc.peers = cfg.peers.clone();
    if let Some(me) = nc.peers.get_mut(&cfg.node_id) {
        // this node's entry is its advertised address
        me.clone_from(&advertise);
    }
    nc.replicas = cfg.replicas;
    nc.bootstrap = cfg.bootstrap && cfg.join.is_none();
    nc.reconcile_interval = cfg.reconcile_interval;
    nc.handoff_timeout = cfg.handoff_timeout;
    if cfg.clustered() {
        // an isolated leader must not hold a request forever; the request's
        // own deadline is usually shorter
        nc.write_timeout = Some(Duration::from_secs(10));
    }
    let slots: Mutex<Vec<Option<ReaderSlot>>> = Mutex::new(vec![None; cfg.shards as usize]);
    let raft = RaftNode::start(nc, |shard| {
        let (app, slot) = ShardApp::new();
        slots.lock().unwrap_or_else(|p| p.into_inner())[shard as usize] = Some(slot);
        app
    })
    .await?;
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
        Router::new(cfg.shards),
        clock,
        Membership {
            advertise: advertise.clone(),
            clustered: cfg.clustered(),
            static_peers: cfg.peers.clone(),
            replicas: cfg.replicas,
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

    let router = tonic::transport::Server::builder()
        .initial_connection_window_size(CONN_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW)
        .layer(crate::auth::layer::AuthLayer::new(cfg.auth.clone()))
        .add_service(health_svc)
        .add_service(reflection)
        .add_service(AdmitSendServer::new(AdmitService { ctx: ctx.clone() }))
        .add_service(AdminServer::new(AdminService { ctx: ctx.clone() }))
        // the test clock is served only in test mode (issue 12)
        .add_optional_service(
            cfg.test_clock
                .then(|| TestClockServer::new(ClockService { ctx: ctx.clone() })),
        )
        .add_service(ClusterServer::new(ClusterService { ctx: ctx.clone() }))
        .add_service(
            crate::wire::pb::node_rpc_server::NodeRpcServer::new(NodeService { ctx: ctx.clone() })
                .max_decoding_message_size(MAX_FRAME)
                .max_encoding_message_size(MAX_FRAME),
        )
        .add_service(raft.grpc_service());
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut rx = stop_rx.clone();
    let server = tokio::spawn(async move {
        let stopping = async move {
            let _ = rx.wait_for(|s| *s).await;
            health
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
        };
        router
            .serve_with_incoming_shutdown(incoming, stopping)
            .await
    });
    let ticker = tokio::spawn(tick_loop(ctx.clone(), cfg.tick_interval, stop_rx));
    tracing::info!(%addr, node_id = cfg.node_id, shards = cfg.shards, test_clock = cfg.test_clock, peers = cfg.peers.len(), "admit node serving");
    if let Some(via) = &cfg.join {
        join(via, cfg.node_id, &advertise, cfg.join_token.as_ref()).await;
    }
    Ok(Running {
        addr,
        ctx,
        stop,
        server,
        ticker,
    })
}

/// Every `every`, each shard this node leads logs a `Tick`, so expired state
/// is reclaimed through the log (alike on every replica). Also sweeps the
/// leader-local token buckets and quota buckets.
async fn tick_loop(ctx: Arc<Ctx>, every: Duration, mut stop: watch::Receiver<bool>) {
    if every.is_zero() {
        return;
    }
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let routing = &ctx.routing;
        for shard in 0..routing.shards() {
            if *stop.borrow() {
                return;
            }
            if routing.raft.leader(shard) != Some(routing.raft.node_id()) {
                continue;
            }
            match routing.write_here(shard, Command::Tick).await {
                Ok(admit_core::Output::Ticked { reclaimed }) if reclaimed > 0 => {
                    tracing::debug!(shard, reclaimed, "tick reclaimed expired state");
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(shard, error = %e, "tick not applied"),
            }
        }
        ctx.admission.rates.sweep(ctx.now());
        ctx.protect.sweep();
    }
}

/// Registers this node with the cluster through `via` (`Cluster.AddNode`),
/// retrying for up to 60 s. Failure is logged, not fatal: a restarted node
/// that joined before is registered already.
async fn join(via: &str, node_id: u64, advertise: &str, token: Option<&crate::auth::Token>) {
    use admit_proto::v1::cluster_client::ClusterClient;
    let uri = if via.contains("://") {
        via.to_string()
    } else {
        format!("http://{via}")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = async {
            let mut c = ClusterClient::connect(uri.clone())
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let mut req = tonic::Request::new(admit_proto::v1::AddNodeRequest {
                node_id,
                address: advertise.to_string(),
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
            Ok(_) => {
                tracing::info!(via, node_id, "joined the cluster");
                return;
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
                return;
            }
            Err(s) if std::time::Instant::now() > deadline => {
                tracing::error!(via, node_id, error = %s.message(), "could not join the cluster");
                return;
            }
            Err(s) => {
                tracing::info!(via, error = %s.message(), "join: retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

impl Running {
    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.ctx.routing.raft.node_id()
    }

    /// The address other nodes reach this one at.
    pub fn advertise(&self) -> &str {
        &self.ctx.routing.advertise
    }

    /// Test switch: drop every Raft message to and from this node (a network
    /// partition for Raft; the public API and forwarding still work).
    #[doc(hidden)]
    pub fn set_isolated(&self, isolated: bool) {
        self.ctx.routing.raft.set_isolated(isolated);
    }

    /// Test helper: stop like a crash: Raft is cut and stopped at once (no
    /// leadership handoff), requests in flight fail, the port closes.
    #[doc(hidden)]
    pub async fn crash(self) {
        let _ = self.stop.send(true);
        self.ctx.routing.raft.crash().await;
        let server = self.server;
        let abort = server.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .is_err()
        {
            abort.abort();
        }
        self.ticker.abort();
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
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "grpc server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "grpc server task failed"),
        }
        let _ = self.ticker.await;
        let r = self.ctx.routing.raft.shutdown().await;
        tracing::info!("admit node stopped");
        r
    }
}
