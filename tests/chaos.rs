//! The process-level chaos run (issue 11): three `admitd` processes (the
//! binary cargo built next to this test, debug or release) on loopback,
//! 8 shards, 3 replicas, the default cluster Raft timings (heartbeat 100 ms,
//! election 500-1,000 ms), fsync on, the real clock. Callers send keyed
//! template admits through every node to a few numbers at small tiers
//! (TIER_50: the limit is reached early; TIER_1K: new conversations all run
//! long), retrying an unanswered call with the same key through the next
//! node, and re-sending some keys on purpose. Meanwhile, in turn: kill -9 of
//! a shard's leader and its restart, SIGSTOP of a shard's leader for 3 s
//! (three times the election timeout) then SIGCONT, and once a wiped data
//! dir: the node restarted on an empty dir with the same flags must refuse
//! to start ("data dir lost"), and it rejoins as the design says
//! (docs/design.md, "A lost data dir"): a new node id with `--join`, the
//! old id removed (`Cluster.RemoveNode`).
//!
//! Every request is recorded (key, number, customer, entry node, attempts,
//! times, answer). Checked afterwards from that history and the cluster:
//! no rolling 24 h window of any number holds more acknowledged counted
//! admissions than its limit (the run lasts minutes, so one window holds
//! them all); each key's answers agree (a keyed retry is counted once); no
//! customer is counted twice by one number; every acknowledged counted
//! admission is still there (its conversation is open: a new send to that
//! customer is OPEN_CONVERSATION, and `used` from GetStatus matches); every
//! request got an answer. The longest time one caller waited for an answer
//! is printed.
//!
//! Run (ignored by default: minutes of three processes):
//!
//! ```sh
//! cargo test -p admit-it --test chaos -- --ignored --nocapture
//! ```
//!
//! `ADMIT_CHAOS_SECS` (default 90) is how long the load and faults run,
//! `ADMIT_CHAOS_REQUESTS` (default 20,000) caps the requests,
//! `ADMIT_CHAOS_SEED` fixes the callers' choices, and
//! `ADMIT_CHAOS_HISTORY=FILE` writes the history as JSON lines.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use admit_proto::v1 as pb;
use admit_proto::v1::admin_client::AdminClient;
use admit_proto::v1::admit_send_client::AdmitSendClient;
use admit_proto::v1::cluster_client::ClusterClient;
use tonic::transport::Channel;

const SHARDS: u32 = support::SHARDS;
/// One attempt's bound: a frozen node never answers, so the caller gives up
/// on it and retries (same key) through the next node.
const ATTEMPT: Duration = Duration::from_secs(3);
/// How long one request is retried before it counts as unanswered: far
/// beyond a failover (a few election timeouts of at most 1 s).
const ANSWER_BOUND: Duration = Duration::from_secs(60);
/// How long a fault lasts: a killed node stays down, a stopped one stays
/// frozen, for three maximal election timeouts.
const FAULT_HOLD: Duration = Duration::from_secs(3);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

use support::ports::free_addr;

use support::seeded::Rng;

// ---- the processes -------------------------------------------------------------------

struct Node {
    id: u64,
    api: SocketAddr,
    peer: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill {sig} {}", self.pid());
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill -9");
            c.wait().expect("reap");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // a failed run must not leave processes behind (SIGKILL also ends
        // a stopped process)
        self.kill9();
    }
}

struct Procs {
    bin: PathBuf,
    root: tempfile::TempDir,
    /// `--peers` of the initial three nodes.
    peers: String,
    nodes: BTreeMap<u64, Node>,
}

impl Procs {
    fn new(bin: PathBuf) -> Procs {
        let root = tempfile::tempdir().unwrap();
        let mut nodes = BTreeMap::new();
        for id in 1..=3 {
            nodes.insert(id, Procs::node(root.path(), id));
        }
        let peers = nodes
            .values()
            .map(|n| format!("{}={}/{}", n.id, n.api, n.peer))
            .collect::<Vec<_>>()
            .join(",");
        Procs {
            bin,
            root,
            peers,
            nodes,
        }
    }

    fn node(root: &Path, id: u64) -> Node {
        let dir = root.join(format!("node{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        Node {
            id,
            api: free_addr(),
            peer: free_addr(),
            dir,
            log: root.join(format!("node{id}.log")),
            child: None,
        }
    }

    fn command(&self, id: u64) -> Command {
        let n = &self.nodes[&id];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--node-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(n.api.to_string())
            .arg("--peer-listen")
            .arg(n.peer.to_string())
            .arg("--data-dir")
            .arg(&n.dir)
            .arg("--shards")
            .arg(SHARDS.to_string())
            .args(["--replicas", "3"])
            .args(["--metrics-listen", "off"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        cmd
    }

    /// Starts node `id` with the bootstrap flags (a restart ignores them).
    fn start(&mut self, id: u64) {
        let mut cmd = self.command(id);
        cmd.arg("--peers").arg(&self.peers);
        let child = cmd.spawn().expect("spawn admitd");
        self.nodes.get_mut(&id).unwrap().child = Some(child);
    }

    /// Adds node `id` that joins through node `via`.
    fn join(&mut self, id: u64, via: u64) {
        let n = Procs::node(self.root.path(), id);
        self.nodes.insert(id, n);
        let mut cmd = self.command(id);
        cmd.arg("--join").arg(self.nodes[&via].api.to_string());
        let child = cmd.spawn().expect("spawn admitd");
        self.nodes.get_mut(&id).unwrap().child = Some(child);
    }

    fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn log_tail(&self, id: u64) -> String {
        let s = std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy()
}

/// The cluster's shards as some running node reports them (each shard's
/// row from its leader when reachable), None when no node answered.
async fn shards(addrs: &[SocketAddr]) -> Option<Vec<pb::Shard>> {
    for a in addrs {
        let mut c = ClusterClient::new(channel(*a));
        let call = c.list_shards(pb::ListShardsRequest { local_only: false });
        if let Ok(Ok(r)) = tokio::time::timeout(ATTEMPT, call).await {
            return Some(r.into_inner().shards);
        }
    }
    None
}

/// Waits until every shard reports a leader among `running`.
async fn wait_led(procs: &Procs, within: Duration) -> Duration {
    let t0 = Instant::now();
    let running = procs.running();
    let addrs: Vec<SocketAddr> = running.iter().map(|i| procs.nodes[i].api).collect();
    loop {
        if let Some(s) = shards(&addrs).await {
            let led = s.len() == SHARDS as usize
                && s.iter().all(|s| {
                    s.leader_node_id == Some(s.reporter_node_id)
                        && running.contains(&s.reporter_node_id)
                });
            if led {
                return t0.elapsed();
            }
        }
        assert!(
            t0.elapsed() < within,
            "not every shard had a leader within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The leader of `shard` now, among the running nodes.
async fn leader_of(procs: &Procs, shard: u32) -> Option<u64> {
    let running = procs.running();
    let addrs: Vec<SocketAddr> = running.iter().map(|i| procs.nodes[i].api).collect();
    let s = shards(&addrs).await?;
    let s = s.get(shard as usize)?;
    (s.leader_node_id == Some(s.reporter_node_id) && running.contains(&s.reporter_node_id))
        .then_some(s.reporter_node_id)
}

// ---- the history ---------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct Answer {
    allowed: bool,
    reason: pb::Reason,
    counted: bool,
    admission_id: String,
}

#[derive(Clone, Debug)]
struct Record {
    key: String,
    number: String,
    customer: u64,
    /// Entry node of each attempt.
    nodes: Vec<u64>,
    /// Since the run's start.
    start: Duration,
    end: Duration,
    /// None: no node answered within ANSWER_BOUND (outcome unknown).
    answer: Option<Answer>,
    last_error: Option<String>,
}

impl Record {
    fn json(&self) -> String {
        serde_json::json!({
            "key": self.key,
            "number": self.number,
            "customer": self.customer,
            "nodes": self.nodes,
            "start_ms": self.start.as_millis() as u64,
            "end_ms": self.end.as_millis() as u64,
            "allowed": self.answer.as_ref().map(|a| a.allowed),
            "reason": self.answer.as_ref().map(|a| a.reason.as_str_name()),
            "counted": self.answer.as_ref().map(|a| a.counted),
            "admission_id": self.answer.as_ref().map(|a| a.admission_id.clone()),
            "error": self.last_error,
        })
        .to_string()
    }
}

#[derive(Clone, Debug)]
struct Fault {
    at: Duration,
    what: String,
}

/// The entry nodes callers use: (id, client), changed when a node is
/// replaced.
type Entries = Arc<RwLock<Vec<(u64, AdmitSendClient<Channel>)>>>;

fn template(number: &str, customer: u64, key: &str) -> pb::Send {
    let mut s = support::template(number, customer, "t-util", pb::TemplateCategory::Utility);
    s.idempotency_key = key.into();
    s
}

/// One keyed admit, retried with the same key through the entry nodes in
/// turn (starting at `first`) until one answers or ANSWER_BOUND passes.
async fn admit(entries: &Entries, send: pb::Send, first: usize, t0: Instant) -> Record {
    let start = t0.elapsed();
    let mut nodes = Vec::new();
    let mut last_error = None;
    let mut attempt = 0usize;
    let answer = loop {
        if t0.elapsed() - start > ANSWER_BOUND {
            break None;
        }
        let (id, mut client) = {
            let e = entries.read().unwrap();
            e[(first + attempt) % e.len()].clone()
        };
        attempt += 1;
        nodes.push(id);
        let mut req = tonic::Request::new(pb::AdmitRequest {
            send: Some(send.clone()),
        });
        req.set_timeout(ATTEMPT);
        match tokio::time::timeout(ATTEMPT + Duration::from_millis(500), client.admit(req)).await {
            Ok(Ok(r)) => {
                let d = r.into_inner().decision.expect("a decision");
                // a replayed NEW_CONVERSATION says counted: false (not
                // counted again); the conversation it opened is counted
                let counted = d.reason() == pb::Reason::NewConversation;
                break Some(Answer {
                    allowed: d.allowed,
                    reason: d.reason(),
                    counted,
                    admission_id: d.admission_id,
                });
            }
            Ok(Err(e)) => {
                assert_ne!(
                    e.code(),
                    tonic::Code::InvalidArgument,
                    "{}: {e:?}",
                    send.idempotency_key
                );
                last_error = Some(format!("node {id}: {:?} {}", e.code(), e.message()));
            }
            Err(_) => last_error = Some(format!("node {id}: no answer within {ATTEMPT:?}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Record {
        key: send.idempotency_key.clone(),
        number: send.number_id.clone(),
        customer: 0,
        nodes,
        start,
        end: t0.elapsed(),
        answer,
        last_error,
    }
}

/// The numbers of the run and their tier limits.
const NUMBERS: [(&str, &str, u32); 6] = [
    ("100300401", "TIER_50", 50),
    ("100300402", "TIER_50", 50),
    ("100300403", "TIER_50", 50),
    ("100300404", "TIER_50", 50),
    ("100300405", "TIER_1K", 1_000),
    ("100300406", "TIER_1K", 1_000),
];

/// A caller: keyed template sends to random numbers and customers (a pool
/// of 3x the limit per number, so customers repeat: an open conversation,
/// not counted again), and every 10th request re-sends an earlier key of
/// its own unchanged.
#[allow(clippy::too_many_arguments)]
async fn caller(
    w: u64,
    seed: u64,
    entries: Entries,
    t0: Instant,
    until: Instant,
    budget: Arc<AtomicU64>,
    max: u64,
    history: Arc<Mutex<Vec<Record>>>,
) {
    let mut rng = Rng((seed ^ (w + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
    let mut mine: Vec<(pb::Send, u64)> = Vec::new();
    let mut seq = 0u64;
    while Instant::now() < until && budget.fetch_add(1, Ordering::Relaxed) < max {
        let (send, customer) = if !mine.is_empty() && rng.below(10) == 0 {
            mine[rng.below(mine.len() as u64) as usize].clone()
        } else {
            let (number, _, limit) = NUMBERS[rng.below(NUMBERS.len() as u64) as usize];
            let customer = rng.below(3 * u64::from(limit));
            seq += 1;
            let s = template(number, customer, &format!("w{w}-{seq}"));
            mine.push((s.clone(), customer));
            (s, customer)
        };
        let mut r = admit(&entries, send, w as usize, t0).await;
        r.customer = customer;
        history.lock().unwrap().push(r);
    }
}

// ---- the faults ----------------------------------------------------------------------

/// kill -9 of `shard`'s leader, FAULT_HOLD down, restart from its data dir.
async fn kill_leader(procs: &mut Procs, shard: u32, t0: Instant, faults: &mut Vec<Fault>) {
    let Some(id) = leader_of(procs, shard).await else {
        return;
    };
    procs.nodes.get_mut(&id).unwrap().kill9();
    faults.push(Fault {
        at: t0.elapsed(),
        what: format!("kill -9 node {id} (leader of shard {shard})"),
    });
    tokio::time::sleep(FAULT_HOLD).await;
    procs.start(id);
    faults.push(Fault {
        at: t0.elapsed(),
        what: format!("restart node {id}"),
    });
}

/// SIGSTOP of `shard`'s leader for FAULT_HOLD, then SIGCONT.
async fn freeze_leader(procs: &mut Procs, shard: u32, t0: Instant, faults: &mut Vec<Fault>) {
    let Some(id) = leader_of(procs, shard).await else {
        return;
    };
    procs.nodes[&id].signal("-STOP");
    faults.push(Fault {
        at: t0.elapsed(),
        what: format!("SIGSTOP node {id} (leader of shard {shard})"),
    });
    tokio::time::sleep(FAULT_HOLD).await;
    procs.nodes[&id].signal("-CONT");
    faults.push(Fault {
        at: t0.elapsed(),
        what: format!("SIGCONT node {id}"),
    });
}

/// Node `id`'s data dir is lost: kill -9, empty dir, same flags: it must
/// refuse to start. Then the design's way back: node `new` joins through a
/// live node, and `id` is removed (its replicas move to the others).
async fn wipe(
    procs: &mut Procs,
    id: u64,
    new: u64,
    entries: &Entries,
    t0: Instant,
    faults: &mut Vec<Fault>,
) {
    procs.nodes.get_mut(&id).unwrap().kill9();
    let dir = procs.nodes[&id].dir.clone();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    faults.push(Fault {
        at: t0.elapsed(),
        what: format!("kill -9 node {id}, data dir wiped"),
    });
    procs.start(id);
    let mut child = procs.nodes.get_mut(&id).unwrap().child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "node {id} started on a wiped data dir (not refused within 60 s):\n{}",
                procs.log_tail(id)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = std::fs::read_to_string(&procs.nodes[&id].log).unwrap_or_default();
    assert!(
        !status.success() && log.contains("data dir lost"),
        "node {id} on a wiped dir: {status}, log:\n{}",
        procs.log_tail(id)
    );
    faults.push(Fault {
        at: t0.elapsed(),
        what: format!("node {id} refused to start on the wiped dir ({status})"),
    });

    let via = *procs.running().first().unwrap();
    procs.join(new, via);
    faults.push(Fault {
        at: t0.elapsed(),
        what: format!("node {new} joins through node {via}"),
    });
    let mut cc = ClusterClient::new(channel(procs.nodes[&via].api));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = cc.remove_node(pb::RemoveNodeRequest { node_id: id }).await;
        if r.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "remove node {id}: {r:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    faults.push(Fault {
        at: t0.elapsed(),
        what: format!("Cluster.RemoveNode {id}"),
    });
    // callers now enter through the new node instead of the lost one
    {
        let mut e = entries.write().unwrap();
        for entry in e.iter_mut() {
            if entry.0 == id {
                *entry = (new, AdmitSendClient::new(channel(procs.nodes[&new].api)));
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let r = cc.list_nodes(pb::ListNodesRequest {}).await;
        let removed = r.as_ref().is_ok_and(|r| {
            r.get_ref()
                .nodes
                .iter()
                .any(|n| n.node_id == id && n.state() == pb::NodeState::Removed)
        });
        if removed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} was not removed within 180 s: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    faults.push(Fault {
        at: t0.elapsed(),
        what: format!("node {id} REMOVED, its replicas moved"),
    });
    procs.nodes.remove(&id);
}

/// `used` of `number`'s status, asked until a node answers.
async fn used(admin: &mut AdminClient<Channel>, number: &str) -> u32 {
    let deadline = Instant::now() + ANSWER_BOUND;
    loop {
        let r = admin
            .get_status(pb::GetStatusRequest {
                target: Some(pb::Target {
                    target: Some(pb::target::Target::NumberId(number.into())),
                }),
            })
            .await;
        match r {
            Ok(r) => return r.into_inner().status.unwrap().usage.unwrap().used,
            Err(e) => assert!(Instant::now() < deadline, "status of {number}: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---- the run -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "minutes of three admitd processes: cargo test -p admit-it --test chaos -- --ignored --nocapture"]
async fn chaos_run() {
    let secs = env_u64("ADMIT_CHAOS_SECS", 90);
    let max = env_u64("ADMIT_CHAOS_REQUESTS", 20_000);
    let seed = support::seeded::seed("ADMIT_CHAOS_SEED");
    let bin = support::admitd_path();
    println!(
        "chaos run: {} for {secs} s (at most {max} requests), seed {seed}",
        bin.display()
    );
    let mut procs = Procs::new(bin);
    for id in 1..=3 {
        procs.start(id);
    }
    let took = wait_led(&procs, Duration::from_secs(120)).await;
    println!("3 nodes up, every shard led after {took:?}");

    let mut admin = AdminClient::new(channel(procs.nodes[&1].api));
    for (number, tier, _) in NUMBERS {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = admin
                .register_number(support::plain_number(number, "waba-chaos", tier))
                .await;
            if r.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "register {number}: {r:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    let entries: Entries = Arc::new(RwLock::new(
        procs
            .nodes
            .values()
            .map(|n| (n.id, AdmitSendClient::new(channel(n.api))))
            .collect(),
    ));
    let history: Arc<Mutex<Vec<Record>>> = Arc::default();
    let budget = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(secs);
    const CALLERS: u64 = 6;
    let callers: Vec<_> = (0..CALLERS)
        .map(|w| {
            tokio::spawn(caller(
                w,
                seed,
                entries.clone(),
                t0,
                until,
                budget.clone(),
                max,
                history.clone(),
            ))
        })
        .collect();

    // the faults, one after the other with a pause between, while the
    // callers run: kill, freeze, the wiped dir (once), then kill and
    // freeze in turn
    let mut faults = Vec::new();
    let pause = Duration::from_secs(5);
    let mut step = 0u32;
    let mut next_id = 4;
    tokio::time::sleep(pause).await;
    while Instant::now() + FAULT_HOLD + pause < until {
        let shard = support::shard_of(NUMBERS[step as usize % NUMBERS.len()].0);
        match step {
            2 => {
                let victim = *procs.running().last().unwrap();
                wipe(&mut procs, victim, next_id, &entries, t0, &mut faults).await;
                next_id += 1;
            }
            s if s % 2 == 0 => kill_leader(&mut procs, shard, t0, &mut faults).await,
            _ => freeze_leader(&mut procs, shard, t0, &mut faults).await,
        }
        step += 1;
        tokio::time::sleep(pause).await;
    }
    for c in callers {
        c.await.unwrap();
    }
    let load_ended = t0.elapsed();
    let healed = wait_led(&procs, Duration::from_secs(120)).await;

    // ---- checks ----
    let history = history.lock().unwrap().clone();
    if let Ok(path) = std::env::var("ADMIT_CHAOS_HISTORY") {
        let lines: Vec<String> = history.iter().map(Record::json).collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        println!("history written to {path}");
    }
    let unanswered: Vec<&Record> = history.iter().filter(|r| r.answer.is_none()).collect();
    let longest = history
        .iter()
        .filter(|r| r.answer.is_some())
        .max_by_key(|r| r.end - r.start)
        .unwrap();
    let retried = history.iter().filter(|r| r.nodes.len() > 1).count();

    // a key's answers agree (R8 throttling denials are not recorded under
    // the key, so they may differ)
    let throttled = |a: &Answer| {
        matches!(
            a.reason,
            pb::Reason::ThroughputLimited | pb::Reason::PairRateLimited
        )
    };
    let mut by_key: BTreeMap<&str, Vec<&Answer>> = BTreeMap::new();
    for r in &history {
        if let Some(a) = r.answer.as_ref().filter(|a| !throttled(a)) {
            by_key.entry(&r.key).or_default().push(a);
        }
    }
    let replays = history.len() - by_key.len();
    let inconsistent: Vec<_> = by_key
        .iter()
        .filter(|(_, v)| v.iter().any(|a| a != &v[0]))
        .collect();

    // per number: counted keys, customers counted twice, over the limit
    let mut over = 0u64;
    let mut double = Vec::new();
    let mut counted: BTreeMap<&str, BTreeMap<u64, &str>> = BTreeMap::new();
    let mut limit_reached: BTreeSet<&str> = BTreeSet::new();
    for r in &history {
        let Some(a) = &r.answer else { continue };
        if a.reason == pb::Reason::LimitReached {
            limit_reached.insert(&r.number);
        }
        if a.counted {
            let m = counted.entry(&r.number).or_default();
            if let Some(k) = m.insert(r.customer, &r.key) {
                if k != r.key {
                    double.push((r.number.clone(), r.customer, k.to_owned(), r.key.clone()));
                }
            }
        }
    }
    for (number, _, limit) in NUMBERS {
        let n = counted.get(number).map_or(0, |m| m.len()) as u64;
        over += n.saturating_sub(u64::from(limit));
    }

    // every acknowledged counted admission is still there: a new send to
    // its customer finds the conversation open, and `used` agrees
    let mut lost = Vec::new();
    let mut used_mismatch = Vec::new();
    let check_t0 = Instant::now();
    let mut check_admin = AdminClient::new(channel(procs.nodes[&procs.running()[0]].api));
    for (number, tier, limit) in NUMBERS {
        let Some(m) = counted.get(number) else {
            continue;
        };
        for (customer, key) in m {
            let send = template(number, *customer, &format!("check-{key}"));
            let r = admit(&entries, send, *customer as usize, check_t0).await;
            match &r.answer {
                Some(a) if a.reason == pb::Reason::OpenConversation && !a.counted => {}
                other => lost.push((number, *customer, key.to_string(), other.clone())),
            }
        }
        let unknown = unanswered.iter().filter(|r| r.number == number).count() as u64;
        let used = used(&mut check_admin, number).await;
        let acked = m.len() as u64;
        println!(
            "{number} ({tier}): {acked} acknowledged counted admissions, used {used}, limit {limit}{}",
            if limit_reached.contains(number) {
                ", limit reached"
            } else {
                ""
            }
        );
        if u64::from(used) < acked || u64::from(used) > acked + unknown || used > limit {
            used_mismatch.push((number, acked, used));
        }
    }

    println!("faults ({}):", faults.len());
    for f in &faults {
        println!("  {:>7.1} s  {}", f.at.as_secs_f64(), f.what);
    }
    let counted_total: usize = counted.values().map(|m| m.len()).sum();
    println!(
        "requests: {} in {:.1} s ({} re-sent keys, {} retried through another node), \
         {} counted admissions; every shard led {:?} after the load ended",
        history.len(),
        load_ended.as_secs_f64(),
        replays,
        retried,
        counted_total,
        healed
    );
    println!(
        "over-admissions: {over}; lost acknowledged admissions: {}; customers counted twice: {}; \
         keys with disagreeing answers: {}; unanswered: {}; status mismatches: {}",
        lost.len(),
        double.len(),
        inconsistent.len(),
        unanswered.len(),
        used_mismatch.len()
    );
    println!(
        "longest wait for an answer: {:?} (key {}, started at {:.1} s, through nodes {:?})",
        longest.end - longest.start,
        longest.key,
        longest.start.as_secs_f64(),
        longest.nodes
    );

    assert_eq!(over, 0, "over-admissions");
    assert!(lost.is_empty(), "lost acknowledged admissions: {lost:?}");
    assert!(double.is_empty(), "customers counted twice: {double:?}");
    assert!(
        inconsistent.is_empty(),
        "disagreeing answers: {inconsistent:?}"
    );
    assert!(
        used_mismatch.is_empty(),
        "used vs acknowledged: {used_mismatch:?}"
    );
    assert!(
        unanswered.is_empty(),
        "unanswered within {ANSWER_BOUND:?}: {:?}",
        unanswered.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        faults.iter().any(|f| f.what.contains("REMOVED")),
        "the run was too short for the wiped-dir step: {faults:?}"
    );
    assert!(
        !limit_reached.is_empty(),
        "no number reached its limit: the run did not test it"
    );
    for id in procs.running() {
        procs.nodes.get_mut(&id).unwrap().kill9();
    }
}
