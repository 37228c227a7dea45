//! `admitctl`: a thin command-line client for an admit cluster. Any node
//! answers; cluster-wide views are gathered by the node asked.
//!
//! ```sh
//! admitctl --addr 127.0.0.1:50051 nodes
//! admitctl shards            # leader, replicas (lag), target per shard
//! admitctl shards --check    # exit 1 unless every shard has a leader
//! admitctl add-node 4 10.0.0.4:50051
//! admitctl remove-node 1
//! admitctl status 100200300
//! ```
//!
//! ## Layering
//!
//! A client of the public API and nothing more: it imports `admit-proto`'s
//! generated `Cluster` and `Admin` clients (with tonic to connect) and prints
//! their answers. It must not import `admit-core`, `admit-server` or
//! `admit-raft`, nor compute a view or decide a change itself: every answer
//! is the node's, so admitctl shows what any other caller would see and works
//! with any node that speaks `admit.v1`.

mod certs;

use std::time::Duration;

use admit_proto::v1 as pb;
use admit_proto::v1::admin_client::AdminClient;
use admit_proto::v1::cluster_client::ClusterClient;
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Debug)]
#[command(
    name = "admitctl",
    version,
    about = "Inspect and change an admit cluster"
)]
struct Args {
    /// Any node's gRPC address.
    #[arg(
        long,
        env = "ADMIT_ADDR",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    addr: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The nodes: state, role, liveness, replicas held, shards led.
    Nodes,
    /// The shards: leader, term, replicas with lag, placement target.
    Shards {
        /// Exit with status 1 unless every shard has a leader.
        #[arg(long)]
        check: bool,
        /// Only the asked node's own view (no calls to other nodes).
        #[arg(long)]
        local: bool,
    },
    /// Register a new node (started with --join or --no-bootstrap).
    AddNode {
        /// The new node's id (never used before).
        id: u64,
        /// Its gRPC address as the other nodes reach it.
        address: String,
    },
    /// Drain a node: its replicas move away, then it is REMOVED.
    RemoveNode {
        /// The node to remove.
        id: u64,
    },
    /// A number's status (limit, usage, tier, quality) and its shard leader.
    Status {
        /// The business number (phone_number_id).
        number: String,
    },
    /// Write a development CA, node and caller certificates (no node is
    /// contacted).
    Certs(certs::CertsArgs),
}

async fn channel(addr: &str) -> Result<Channel> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Endpoint::from_shared(uri)?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

fn state(n: &pb::Node) -> &'static str {
    match n.state() {
        pb::NodeState::Active => "active",
        pb::NodeState::Leaving => "leaving",
        pb::NodeState::Removed => "removed",
        pb::NodeState::Unspecified => "?",
    }
}

fn print_nodes(nodes: &[pb::Node]) {
    println!(
        "{:>4}  {:<28} {:<8} {:<7} {:>8} {:>5}  leads",
        "id", "address", "state", "alive", "replicas", "self"
    );
    for n in nodes {
        println!(
            "{:>4}  {:<28} {:<8} {:<7} {:>8} {:>5}  {}",
            n.node_id,
            n.address,
            state(n),
            if n.alive { "yes" } else { "no" },
            n.replica_count,
            if n.is_self { "*" } else { "" },
            n.leading_shard_ids.len()
        );
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Cmd::Certs(a) = &args.cmd {
        return certs::run(a);
    }
    let ch = channel(&args.addr).await?;
    let mut cluster = ClusterClient::new(ch.clone());
    match args.cmd {
        Cmd::Nodes => {
            let r = cluster
                .list_nodes(pb::ListNodesRequest {})
                .await?
                .into_inner();
            print_nodes(&r.nodes);
        }
        Cmd::Shards { check, local } => {
            let r = cluster
                .list_shards(pb::ListShardsRequest { local_only: local })
                .await?
                .into_inner();
            println!(
                "{:>5} {:>6} {:>6} {:>10} {:>8}  {:<34} target",
                "shard", "leader", "term", "applied", "reporter", "replicas (node:lag, ~learner)"
            );
            let mut leaderless = 0;
            for s in &r.shards {
                let reps: Vec<String> = s
                    .replicas
                    .iter()
                    .map(|p| {
                        format!(
                            "{}{}:{}",
                            if p.voter { "" } else { "~" },
                            p.node_id,
                            p.lag.map_or("?".to_string(), |l| l.to_string())
                        )
                    })
                    .collect();
                let leader = s.leader_node_id.map_or("-".into(), |l| l.to_string());
                if s.leader_node_id.is_none() {
                    leaderless += 1;
                }
                println!(
                    "{:>5} {:>6} {:>6} {:>10} {:>8}  {:<34} {:?}{}",
                    s.shard_id,
                    leader,
                    s.term,
                    s.last_applied_index,
                    s.reporter_node_id,
                    reps.join(" "),
                    s.target_node_ids,
                    if s.changing { " (changing)" } else { "" }
                );
            }
            if check && leaderless > 0 {
                bail!("{leaderless} shard(s) without a leader");
            }
        }
        Cmd::AddNode { id, address } => {
            let r = cluster
                .add_node(pb::AddNodeRequest {
                    node_id: id,
                    address,
                    // empty: the API port + 1 (set by the client branch's flag)
                    peer_address: String::new(),
                })
                .await?
                .into_inner();
            print_nodes(&r.nodes);
        }
        Cmd::RemoveNode { id } => {
            let r = cluster
                .remove_node(pb::RemoveNodeRequest { node_id: id })
                .await?
                .into_inner();
            print_nodes(&r.nodes);
            println!("node {id} is leaving; it is removed once it holds no replica (see `admitctl nodes`)");
        }
        Cmd::Status { number } => {
            let r = AdminClient::new(ch)
                .get_status(pb::GetStatusRequest {
                    target: Some(pb::Target {
                        target: Some(pb::target::Target::NumberId(number)),
                    }),
                })
                .await?
                .into_inner();
            if let Some(h) = r.leader_hint {
                println!("shard leader: node {} at {}", h.node_id, h.address);
            }
            println!("{:#?}", r.status);
        }
        Cmd::Certs(_) => unreachable!("handled before connecting"),
    }
    Ok(())
}
