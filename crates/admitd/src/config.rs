//! admitd's configuration: a TOML file (optional), then flags and environment
//! variables over it, then one validation step that names the bad field.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use admit_server::{Quota, ServerConfig};
use serde::Deserialize;

/// The TOML file. Every field is optional; unknown fields are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub node_id: Option<u64>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub shards: Option<u32>,
    pub test_clock: Option<bool>,
    pub test_clock_start_ms: Option<u64>,
    pub tick_interval_ms: Option<u64>,
    pub max_in_flight: Option<usize>,
    pub fsync: Option<bool>,
    pub snapshot_every: Option<u64>,
    pub caller_quota: Option<QuotaConfig>,
    /// The initial cluster, `"<id>=<host:port>"` each (this node included).
    pub peers: Option<Vec<String>>,
    pub replicas: Option<usize>,
    pub bootstrap: Option<bool>,
    pub join: Option<String>,
    pub heartbeat_ms: Option<u64>,
    pub election_timeout_ms: Option<[u64; 2]>,
    pub reconcile_interval_ms: Option<u64>,
    pub handoff_timeout_ms: Option<u64>,
    // ---- the service clock's bound (issue 11; docs/design.md) ----
    /// How far this node's clock may run ahead of the others' (ms) before
    /// it stamps no command; default 500.
    pub max_clock_offset_ms: Option<u64>,
    // --- quiescent groups (issue 14) ---
    /// An idle shard stops heartbeating after this many ms (default 300);
    /// 0: never.
    pub quiesce_after_ms: Option<u64>,
    // --- early refusal under overload (issue 11) ---
    /// Refuse sends before decoding them once calls wait this many ms to be
    /// served (the node is behind; default 50); 0: never.
    pub shed_when_late_ms: Option<u64>,

    // --- metrics and logs (docs/metrics.md) ---
    /// `host:port` of `/metrics`, or `"off"`.
    pub metrics_listen: Option<String>,
    pub metrics_top_scopes: Option<usize>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    // ---- webhook receiver (crate::webhook) ----
    /// The `[webhook]` table: Meta's webhook receiver.
    pub webhook: Option<crate::webhook::WebhookFile>,
    // --- the peer port and transport security ---
    pub transport: Option<crate::transport::TransportFile>,
    // ---- caller authentication (issue 12, docs/security.md) ----
    /// `[auth]`: callers (token hashes, certificate names), scopes, grants.
    /// Absent: no checks (the embedded single node on loopback).
    pub auth: Option<admit_server::AuthConfig>,
    /// The config file's folder: relative paths in `[auth]` start there.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests per second per caller (metadata `x-admit-caller`).
    pub rate: f64,
    /// Burst size.
    pub burst: f64,
}

/// Command-line flags (each also readable from an `ADMIT_*` variable).
#[derive(Debug, Default, clap::Parser)]
#[command(
    name = "admitd",
    version,
    about = "admit: WhatsApp messaging-limit admission server"
)]
pub struct Flags {
    /// TOML config file; flags and environment variables override it.
    #[arg(long, env = "ADMIT_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "ADMIT_LISTEN")]
    pub listen: Option<String>,
    /// Address other nodes reach this one at [default: the bound address].
    #[arg(long, env = "ADMIT_ADVERTISE")]
    pub advertise: Option<String>,
    /// Data directory [default: ./admit-data].
    #[arg(long, env = "ADMIT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Raft node id [default: 1].
    #[arg(long, env = "ADMIT_NODE_ID")]
    pub node_id: Option<u64>,
    /// Number of shards (Raft groups) of a new data dir [default: 16]; an
    /// existing data dir keeps its own count unless one is given here or in
    /// the config file (then a different count is refused).
    #[arg(long, env = "ADMIT_SHARDS")]
    pub shards: Option<u32>,
    /// Run on the controllable test clock (TestClock RPCs accepted).
    #[arg(long, env = "ADMIT_TEST_CLOCK")]
    pub test_clock: bool,
    /// Where the test clock starts (Unix ms) [default: now].
    #[arg(long, env = "ADMIT_TEST_CLOCK_START_MS")]
    pub test_clock_start_ms: Option<u64>,
    /// The initial cluster, this node included: `1=host:port,2=host:port,...`
    /// (host may be a DNS name) [default: none, a single node].
    #[arg(long, env = "ADMIT_PEERS")]
    pub peers: Option<String>,
    /// Replicas (voters) per shard in a cluster [default: 3].
    #[arg(long, env = "ADMIT_REPLICAS")]
    pub replicas: Option<usize>,
    /// Join an existing cluster through this node (`host:port`): no
    /// bootstrap; the node registers itself with Cluster.AddNode there.
    #[arg(long, env = "ADMIT_JOIN")]
    pub join: Option<String>,
    /// Do not initialize shards from `peers` (the node waits to be added
    /// with Cluster.AddNode on any member).
    #[arg(long, env = "ADMIT_NO_BOOTSTRAP")]
    pub no_bootstrap: bool,

    // --- metrics and logs (docs/metrics.md) ---
    /// Serve Prometheus metrics at http://ADDR/metrics, or `off`
    /// [default: 127.0.0.1:9464].
    #[arg(long, env = "ADMIT_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Per-scope metric series only for this many scopes nearest their
    /// limit; the rest are counted in aggregates [default: 100].
    #[arg(long, env = "ADMIT_METRICS_TOP_SCOPES")]
    pub metrics_top_scopes: Option<usize>,
    /// Log format on stderr: `text` (colours only on a terminal) or `json`
    /// (one object per line) [default: text].
    #[arg(long, env = "ADMIT_LOG_FORMAT")]
    pub log_format: Option<String>,
    // ---- webhook receiver (crate::webhook) ----
    #[command(flatten)]
    pub webhook: crate::webhook::WebhookFlags,
    // --- the peer port and transport security ---
    #[command(flatten)]
    pub transport: crate::transport::TransportFlags,
    // ---- caller authentication (issue 12) ----
    /// With `--join` on a cluster with auth: a token of a caller with the
    /// `cluster` scope, sent with Cluster.AddNode (prefer the variable:
    /// flags show in `ps`).
    #[arg(long, env = "ADMIT_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Where `/metrics` is served unless configured (docs/metrics.md).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The log format from the flags, else the file (read before anything else
/// so that start-up is logged in it).
pub fn log_format(flags: &Flags) -> Result<LogFormat, String> {
    let from_file = match &flags.config {
        Some(path) if flags.log_format.is_none() => std::fs::read_to_string(path)
            .ok()
            .and_then(|t| parse(&t).ok())
            .and_then(|f| f.log_format),
        _ => None,
    };
    match flags.log_format.clone().or(from_file).as_deref() {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(_) => Err("invalid log_format: must be text or json".into()),
    }
}

/// Reads the file (if any), applies the flags and validates.
pub fn load(flags: &Flags) -> Result<ServerConfig, String> {
    resolve(read_file(flags)?, flags)
}

/// The TOML file named by `--config`, or an empty one.
pub fn read_file(flags: &Flags) -> Result<FileConfig, String> {
    Ok(match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
            let mut f = parse(&text).map_err(|e| format!("config file {}: {e}", path.display()))?;
            f.base_dir = path.parent().map(PathBuf::from).unwrap_or_default();
            f
        }
        None => FileConfig::default(),
    })
}

/// Parses the TOML text.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// Merges file and flags into a validated server config.
pub fn resolve(file: FileConfig, flags: &Flags) -> Result<ServerConfig, String> {
    let bad = |field: &str, why: &str| format!("invalid {field}: {why}");
    let listen_text = flags
        .listen
        .clone()
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen: SocketAddr = listen_text
        .parse()
        .map_err(|_| bad("listen", "must be an address like 127.0.0.1:50051"))?;
    let data_dir = flags
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("./admit-data"));
    if data_dir.as_os_str().is_empty() {
        return Err(bad("data_dir", "must not be empty"));
    }
    let mut c = ServerConfig::new(listen, data_dir);
    c.node_id = flags.node_id.or(file.node_id).unwrap_or(1);
    if c.node_id == 0 {
        return Err(bad("node_id", "must be at least 1"));
    }
    let shards = flags.shards.or(file.shards);
    c.shards = shards.unwrap_or(admit_server::DEFAULT_SHARDS);
    c.shards_from_data_dir = shards.is_none();
    if !(1..=4_096).contains(&c.shards) {
        return Err(bad("shards", "must be 1 to 4096"));
    }
    c.advertise = flags.advertise.clone().or(file.advertise);
    if let Some(a) = &c.advertise {
        if !a.contains(':') {
            return Err(bad("advertise", "must be host:port"));
        }
    }
    c.test_clock = flags.test_clock || file.test_clock.unwrap_or(false);
    c.test_clock_start = flags
        .test_clock_start_ms
        .or(file.test_clock_start_ms)
        .map(admit_core::Ts);
    if c.test_clock_start.is_some() && !c.test_clock {
        return Err(bad("test_clock_start_ms", "needs test_clock = true"));
    }
    if let Some(ms) = file.tick_interval_ms {
        if ms == 0 {
            return Err(bad("tick_interval_ms", "must be at least 1"));
        }
        c.tick_interval = Duration::from_millis(ms);
    }
    if let Some(n) = file.max_in_flight {
        if n == 0 {
            return Err(bad("max_in_flight", "must be at least 1"));
        }
        c.max_in_flight = n;
    }
    if let Some(f) = file.fsync {
        c.fsync = f;
    }
    if let Some(n) = file.snapshot_every {
        if n == 0 {
            return Err(bad("snapshot_every", "must be at least 1"));
        }
        c.snapshot_every = n;
    }
    // ---- cluster ----
    let peers_text: Option<Vec<String>> = match &flags.peers {
        Some(t) => Some(
            t.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        None => file.peers,
    };
    if let Some(list) = peers_text {
        c.peers = parse_peers(&list).map_err(|e| bad("peers", &e))?;
        if !c.peers.is_empty()
            && !c.peers.contains_key(&c.node_id)
            && flags.join.is_none()
            && file.join.is_none()
        {
            return Err(bad(
                "peers",
                &format!(
                    "must include this node's id ({}) unless it joins",
                    c.node_id
                ),
            ));
        }
    }
    c.replicas = flags.replicas.or(file.replicas).unwrap_or(3);
    if !(1..=7).contains(&c.replicas) {
        return Err(bad("replicas", "must be 1 to 7"));
    }
    c.join = flags.join.clone().or(file.join);
    if let Some(j) = &c.join {
        if !j.contains(':') {
            return Err(bad("join", "must be host:port of a cluster member"));
        }
        if c.advertise.is_none() && listen.ip().is_unspecified() {
            return Err(bad(
                "advertise",
                "is required to join when listening on an unspecified address",
            ));
        }
    }
    c.bootstrap = !flags.no_bootstrap && file.bootstrap.unwrap_or(true);
    if c.clustered() {
        // defaults for clusters (see docs/design.md, "Raft timing")
        c.heartbeat = Duration::from_millis(CLUSTER_HEARTBEAT_MS);
        c.election_timeout = (
            Duration::from_millis(CLUSTER_ELECTION_MS[0]),
            Duration::from_millis(CLUSTER_ELECTION_MS[1]),
        );
        if let Some((id, entry)) = c.peers.iter().find(|(id, _)| **id == c.node_id) {
            // an entry is API or API/PEER: the API part is the advertise
            let addr = admit_server::transport::split_peer_entry(entry)
                .map(|(api, _)| api)
                .map_err(|e| bad("peers", &e))?;
            if c.advertise.is_none() {
                // the peers entry names how the others reach this node
                c.advertise = Some(addr.clone());
            } else if c.advertise.as_deref() != Some(addr.as_str()) {
                let addr = entry;
                return Err(bad(
                    "advertise",
                    &format!("differs from this node's peers entry {id}={addr}"),
                ));
            }
        }
    }
    if let Some(ms) = file.heartbeat_ms {
        if ms == 0 {
            return Err(bad("heartbeat_ms", "must be at least 1"));
        }
        c.heartbeat = Duration::from_millis(ms);
    }
    if let Some([lo, hi]) = file.election_timeout_ms {
        if lo == 0 || lo >= hi {
            return Err(bad(
                "election_timeout_ms",
                "must be [min, max] with 0 < min < max",
            ));
        }
        c.election_timeout = (Duration::from_millis(lo), Duration::from_millis(hi));
    }
    if c.heartbeat >= c.election_timeout.0 {
        return Err(bad(
            "heartbeat_ms",
            "must be below the election timeout's minimum",
        ));
    }
    if let Some(ms) = file.reconcile_interval_ms {
        c.reconcile_interval = Duration::from_millis(ms);
    }
    if let Some(ms) = file.handoff_timeout_ms {
        c.handoff_timeout = Duration::from_millis(ms);
    }
    // ---- the service clock's bound ----
    if let Some(ms) = file.max_clock_offset_ms {
        if ms == 0 {
            return Err(bad("max_clock_offset_ms", "must be above 0"));
        }
        c.max_clock_offset = Duration::from_millis(ms);
    }
    // ---- quiescent groups ----
    if let Some(ms) = file.quiesce_after_ms {
        c.quiesce_after = (ms > 0).then_some(Duration::from_millis(ms));
    }
    // ---- early refusal under overload ----
    c.shed_when_late = match file.shed_when_late_ms {
        None => Some(admit_server::shed::DEFAULT_SHED_WHEN_LATE),
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
    };
    // ---- metrics and logs ----
    let metrics = flags
        .metrics_listen
        .clone()
        .or(file.metrics_listen)
        .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.into());
    c.metrics_listen = match metrics.trim() {
        "off" => None,
        a => Some(a.parse().map_err(|_| {
            bad(
                "metrics_listen",
                "must be an address like 127.0.0.1:9464, or off",
            )
        })?),
    };
    if let Some(n) = flags.metrics_top_scopes.or(file.metrics_top_scopes) {
        c.metrics_top_scopes = n;
    }
    if let Some(f) = &file.log_format {
        if f != "text" && f != "json" {
            return Err(bad("log_format", "must be text or json"));
        }
    }
    if let Some(q) = file.caller_quota {
        if !(q.rate.is_finite() && q.rate > 0.0) {
            return Err(bad("caller_quota.rate", "must be above zero"));
        }
        if !(q.burst.is_finite() && q.burst >= 1.0) {
            return Err(bad("caller_quota.burst", "must be at least 1"));
        }
        c.caller_quota = Some(Quota {
            rate: q.rate,
            burst: q.burst,
        });
    }
    crate::transport::apply(&mut c, &flags.transport, file.transport.unwrap_or_default())?;
    // ---- caller authentication and the test clock (issue 12) ----
    if let Some(a) = &file.auth {
        c.auth = Some(a.load(&file.base_dir)?);
    }
    c.join_token = flags.join_token.clone().map(admit_server::auth::Token);
    if c.join_token.is_some() && c.join.is_none() {
        return Err(bad("join_token", "is only sent with join"));
    }
    admit_server::clock::test_clock_allowed(
        c.test_clock,
        c.clustered(),
        c.transport.api_tls.is_some() || c.transport.peer_tls.is_some(),
    )?;
    Ok(c)
}

/// Raft heartbeat in a cluster (ms).
pub const CLUSTER_HEARTBEAT_MS: u64 = 100;
/// Raft election timeout range in a cluster (ms).
pub const CLUSTER_ELECTION_MS: [u64; 2] = [500, 1_000];

/// `["1=host:port", ...]` -> id -> address.
pub fn parse_peers(list: &[String]) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for p in list {
        let (id, addr) = p
            .split_once('=')
            .ok_or_else(|| format!("{p:?} is not <id>=<host:port>"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{p:?}: the id must be a number"))?;
        if id == 0 {
            return Err(format!("{p:?}: ids start at 1"));
        }
        let addr = addr.trim();
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!("{p:?}: the address must be host:port"));
        }
        admit_server::transport::split_peer_entry(addr).map_err(|e| format!("{p:?}: {e}"))?;
        if peers.insert(id, addr.to_owned()).is_some() {
            return Err(format!("node id {id} is listed twice"));
        }
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_file_or_flags() {
        let c = resolve(FileConfig::default(), &Flags::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.data_dir, PathBuf::from("./admit-data"));
        assert_eq!(c.shards, 16);
        assert!(
            c.shards_from_data_dir,
            "no count given: a data dir keeps its own"
        );
        assert!(!c.test_clock);
        assert_eq!(
            c.shed_when_late,
            Some(admit_server::shed::DEFAULT_SHED_WHEN_LATE)
        );
    }

    #[test]
    fn shedding_when_late_is_set_in_ms_and_zero_turns_it_off() {
        let c = resolve(parse("shed_when_late_ms = 15").unwrap(), &Flags::default()).unwrap();
        assert_eq!(c.shed_when_late, Some(Duration::from_millis(15)));
        let c = resolve(parse("shed_when_late_ms = 0").unwrap(), &Flags::default()).unwrap();
        assert_eq!(c.shed_when_late, None);
    }

    #[test]
    fn unknown_and_bad_fields_are_named() {
        let e = parse("shardz = 3").unwrap_err();
        assert!(e.contains("shardz"), "{e}");
        let f = parse("shards = 0").unwrap();
        let e = resolve(f, &Flags::default()).unwrap_err();
        assert!(e.contains("shards"), "{e}");
        let f = parse("listen = \"nope\"").unwrap();
        assert!(resolve(f, &Flags::default())
            .unwrap_err()
            .contains("listen"));
        let f = parse("[caller_quota]\nrate = 0\nburst = 1").unwrap();
        assert!(resolve(f, &Flags::default())
            .unwrap_err()
            .contains("caller_quota.rate"));
    }

    #[test]
    fn cluster_config_from_file_and_flags() {
        let f = parse(
            "node_id = 2\npeers = [\"1=admit-0.admit.default.svc:50051\", \"2=admit-1.admit.default.svc:50051\", \"3=admit-2.admit.default.svc:50051\"]\nlisten = \"0.0.0.0:50051\"\nreplicas = 3",
        )
        .unwrap();
        let c = resolve(f, &Flags::default()).unwrap();
        assert_eq!(c.peers.len(), 3);
        assert_eq!(
            c.advertise.as_deref(),
            Some("admit-1.admit.default.svc:50051")
        );
        assert!(c.bootstrap);
        assert_eq!(c.heartbeat, Duration::from_millis(CLUSTER_HEARTBEAT_MS));
        let flags = Flags {
            node_id: Some(4),
            join: Some("127.0.0.1:50051".into()),
            listen: Some("127.0.0.1:50054".into()),
            ..Flags::default()
        };
        let c = resolve(FileConfig::default(), &flags).unwrap();
        assert_eq!(c.join.as_deref(), Some("127.0.0.1:50051"));
        for (bad_peers, field) in [
            ("1=a:1,1=b:2", "peers"),
            ("1=nope", "peers"),
            ("x=a:1", "peers"),
            ("2=a:1,3=b:1", "peers"),
        ] {
            let flags = Flags {
                peers: Some(bad_peers.into()),
                ..Flags::default()
            };
            let e = resolve(FileConfig::default(), &flags).unwrap_err();
            assert!(e.contains(field), "{bad_peers}: {e}");
        }
        let f = parse("replicas = 0").unwrap();
        assert!(resolve(f, &Flags::default())
            .unwrap_err()
            .contains("replicas"));
    }

    #[test]
    fn single_node_default_is_unchanged() {
        let c = resolve(FileConfig::default(), &Flags::default()).unwrap();
        assert!(c.peers.is_empty() && c.join.is_none() && c.bootstrap);
        assert_eq!(c.heartbeat, Duration::from_millis(100));
        assert!(!c.clustered());
    }

    #[test]
    fn metrics_on_by_default_off_on_request() {
        let c = resolve(FileConfig::default(), &Flags::default()).unwrap();
        assert_eq!(
            c.metrics_listen.map(|a| a.to_string()).as_deref(),
            Some(DEFAULT_METRICS_LISTEN)
        );
        assert_eq!(c.metrics_top_scopes, admit_server::DEFAULT_TOP_SCOPES);
        let f = parse("metrics_listen = \"off\"\nmetrics_top_scopes = 7").unwrap();
        let c = resolve(f, &Flags::default()).unwrap();
        assert!(c.metrics_listen.is_none());
        assert_eq!(c.metrics_top_scopes, 7);
        let flags = Flags {
            metrics_listen: Some("nope".into()),
            ..Flags::default()
        };
        let e = resolve(FileConfig::default(), &flags).unwrap_err();
        assert!(e.contains("metrics_listen"), "{e}");
        let f = parse("log_format = \"xml\"").unwrap();
        let e = resolve(f, &Flags::default()).unwrap_err();
        assert!(e.contains("log_format"), "{e}");
        let flags = Flags {
            log_format: Some("xml".into()),
            ..Flags::default()
        };
        assert!(log_format(&flags).unwrap_err().contains("log_format"));
    }

    #[test]
    fn auth_block_is_read_and_checked() {
        let h = admit_server::auth::hash_token("s3cret");
        let f = parse(&format!(
            "[auth]\n[[auth.callers]]\nname = \"billing\"\ntoken_sha256 = \"{h}\"\nscopes = [\"send\"]\nnumbers = [\"15550001\"]"
        ))
        .unwrap();
        let c = resolve(f, &Flags::default()).unwrap();
        let auth = c.auth.expect("auth on");
        assert!(auth.required());
        let who = auth
            .identify(Some(b"Bearer s3cret"), None)
            .unwrap()
            .unwrap();
        assert_eq!(who.name, "billing");
        let f = parse(
            "[auth]\n[[auth.callers]]\nname = \"x\"\ntoken_sha256 = \"zz\"\nscopes = [\"send\"]",
        )
        .unwrap();
        let e = resolve(f, &Flags::default()).unwrap_err();
        assert!(e.contains("auth.callers[0].token_sha256"), "{e}");
        let e = parse("[auth]\n[[auth.callers]]\nname = \"x\"\nscopes = [\"root\"]").unwrap_err();
        assert!(e.contains("root"), "{e}");
        // a callers file next to the config
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("callers.toml"),
            format!("[[callers]]\nname = \"ops\"\ntoken_sha256 = \"{h}\"\nscopes = [\"admin\"]"),
        )
        .unwrap();
        let mut f = parse("[auth]\ncallers_file = \"callers.toml\"").unwrap();
        f.base_dir = dir.path().to_path_buf();
        let auth = resolve(f, &Flags::default()).unwrap().auth.unwrap();
        let who = auth
            .identify(Some(b"Bearer s3cret"), None)
            .unwrap()
            .unwrap();
        assert_eq!(who.name, "ops");
    }

    #[test]
    fn test_clock_is_refused_in_a_cluster() {
        let flags = Flags {
            test_clock: true,
            peers: Some("1=127.0.0.1:1,2=127.0.0.1:2".into()),
            ..Flags::default()
        };
        let e = resolve(FileConfig::default(), &flags).unwrap_err();
        assert!(e.contains("test_clock"), "{e}");
    }

    #[test]
    fn flags_override_the_file() {
        let f = parse("shards = 8\nlisten = \"127.0.0.1:1\"").unwrap();
        let flags = Flags {
            shards: Some(4),
            test_clock: true,
            ..Flags::default()
        };
        let c = resolve(f, &flags).unwrap();
        assert_eq!(c.shards, 4);
        assert!(
            !c.shards_from_data_dir,
            "a count given is checked against the data dir"
        );
        assert_eq!(c.listen.port(), 1);
        assert!(c.test_clock);
    }
}
