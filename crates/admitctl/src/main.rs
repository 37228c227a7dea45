//! `admitctl`: the command-line client of an admit cluster, on top of
//! `admit-client`. Any node answers; the client follows shard leaders and
//! retries what may be retried.
//!
//! ```sh
//! admitctl --server 127.0.0.1:50051 nodes
//! admitctl shards --check            # exit 1 unless every shard has a leader
//! admitctl register 100200300 --tier TIER_250
//! admitctl admit 100200300 491500000001 --template welcome
//! admitctl status 100200300          # or --portfolio ID
//! admitctl numbers --sort headroom --status restricted
//! admitctl inbound 100200300 491500000001 --text STOP
//! admitctl outcome 100200300 491500000001 failed --code 131056
//! admitctl event tier 100200300 TIER_10K
//! admitctl policy get seeds > seeds.toml; admitctl policy set seeds.toml
//! admitctl demo                      # against `admitd --test-clock`
//! admitctl --json status 100200300   # every command: JSON for scripts
//! ```
//!
//! Exit codes: 0 ok; 1 the send was denied (`admit`) or a check failed
//! (`shards --check`); 2 usage (bad arguments or input file); 3 the cluster
//! could not be reached or could not serve; 4 the server refused the
//! request (bad input, unknown number, not in test mode, ...).
//!
//! ## Layering
//!
//! A client of the public API and nothing more: it calls `admit-client`
//! (which speaks `admit.v1` through `admit-proto`) and prints the answers.
//! It must not import `admit-core`, `admit-server` or `admit-raft`, nor
//! compute a view or decide a change itself: every answer is the node's.
//! Commands live in `ctl` (cluster calls), `demo`, `policy` (the policy file
//! form) and `output` (tables, JSON, times, exit codes).

/// `println!` that ends the process quietly when stdout is closed
/// (`admitctl shards | head`): a reader that stopped reading is not an error.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            crate::stdout_failed(e)
        }
    }};
}

/// `print!` with the same handling as [`outln!`].
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($t)*) {
            crate::stdout_failed(e)
        }
    }};
}

/// Writing to stdout failed: a closed pipe ends the process quietly (exit
/// 0, as `head` expects of its writer); anything else is reported.
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("admitctl: cannot write to stdout: {e}");
    std::process::exit(1)
}

mod certs;
mod ctl;
mod demo;
mod output;
mod policy;

use std::path::PathBuf;
use std::process::ExitCode;

use admit_client::{Client, Options, TlsOptions};
use clap::{Parser, Subcommand};

use ctl::Ctx;

#[derive(Parser, Debug)]
#[command(
    name = "admitctl",
    version,
    about = "Inspect and change an admit cluster, try sends, apply events",
    after_help = "Exit codes: 0 ok, 1 denied (admit) or check failed, 2 usage, \
                  3 cluster unreachable, 4 refused by the server."
)]
struct Args {
    /// Node addresses (host:port), comma-separated; any node answers.
    #[arg(
        long,
        alias = "addr",
        env = "ADMIT_SERVER",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    server: String,
    /// CA certificate (PEM) to verify the nodes with TLS.
    #[arg(long, env = "ADMIT_CA", global = true)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM), for servers that ask for one.
    #[arg(long, env = "ADMIT_CERT", global = true, requires = "key")]
    cert: Option<PathBuf>,
    /// Client key (PEM) of --cert.
    #[arg(long, env = "ADMIT_KEY", global = true, requires = "cert")]
    key: Option<PathBuf>,
    /// Bearer token sent with every call.
    #[arg(long, env = "ADMIT_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
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
    /// A number's or a portfolio's status as a table.
    Status {
        /// The business number (phone_number_id).
        number: Option<String>,
        /// A portfolio instead of a number.
        #[arg(long, conflicts_with = "number")]
        portfolio: Option<String>,
    },
    /// The registered numbers with their usage.
    Numbers {
        /// Order of the list.
        #[arg(long, value_enum, default_value = "headroom")]
        sort: ctl::SortBy,
        /// Only numbers in this account or number status (restricted,
        /// at_risk, healthy, flagged, connected, ...).
        #[arg(long)]
        status: Option<String>,
        /// Only the numbers of this portfolio.
        #[arg(long)]
        portfolio: Option<String>,
    },
    /// Register a number or update its settings.
    Register(ctl::RegisterArgs),
    /// Try one send and print the decision (exit 1 if denied).
    Admit(ctl::AdmitArgs),
    /// Record a message or call from a customer.
    Inbound(ctl::InboundArgs),
    /// Report Meta's outcome of a send.
    Outcome(ctl::OutcomeArgs),
    /// Apply a platform event by hand.
    Event {
        #[command(subcommand)]
        event: ctl::EventCmd,
        /// De-duplication key (generated when absent).
        #[arg(long, global = true)]
        key: Option<String>,
    },
    /// Read or replace a policy profile.
    Policy {
        #[command(subcommand)]
        cmd: ctl::PolicyCmd,
    },
    /// Read the service clock, or move it (test mode only).
    Clock {
        /// Move it forward by this many milliseconds.
        #[arg(long)]
        advance: Option<i64>,
        /// Set it to this Unix time in milliseconds.
        #[arg(long)]
        set: Option<i64>,
    },
    /// Replay the seeds' worked upgrade examples (R5.3) on a test-clock
    /// server (`admitd --test-clock`), step by step.
    Demo {
        /// Pause between steps, in milliseconds.
        #[arg(long, default_value_t = 700)]
        pause_ms: u64,
    },
    /// Write a development CA, node and caller certificates (no node is
    /// contacted).
    Certs(certs::CertsArgs),
}

fn client(args: &Args) -> Result<Client, admit_client::Error> {
    let mut o = Options::new(args.server.split(',').map(str::trim));
    o.token = args.token.clone();
    if args.ca.is_some() || args.cert.is_some() {
        o.tls = Some(TlsOptions {
            ca: args.ca.clone(),
            cert: args.cert.clone(),
            key: args.key.clone(),
            domain: None,
        });
    }
    Client::new(o)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Cmd::Certs(a) = &args.cmd {
        return match certs::run(a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("admitctl certs: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let client = match client(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", output::explain(&e, &args.server));
            return ExitCode::from(output::code_of(&e));
        }
    };
    let ctx = Ctx {
        client,
        json: args.json,
    };
    let res = match args.cmd {
        Cmd::Nodes => ctl::nodes(&ctx).await,
        Cmd::Shards { check, local } => ctl::shards(&ctx, check, local).await,
        Cmd::AddNode { id, address } => ctl::add_node(&ctx, id, &address).await,
        Cmd::RemoveNode { id } => ctl::remove_node(&ctx, id).await,
        Cmd::Status { number, portfolio } => ctl::status(&ctx, number, portfolio).await,
        Cmd::Numbers {
            sort,
            status,
            portfolio,
        } => ctl::numbers(&ctx, sort, status, portfolio).await,
        Cmd::Register(a) => ctl::register(&ctx, a).await,
        Cmd::Admit(a) => ctl::admit(&ctx, a).await,
        Cmd::Inbound(a) => ctl::inbound(&ctx, a).await,
        Cmd::Outcome(a) => ctl::outcome(&ctx, a).await,
        Cmd::Event { event, key } => ctl::event(&ctx, event, key).await,
        Cmd::Policy { cmd } => ctl::policy(&ctx, cmd).await,
        Cmd::Clock { advance, set } => ctl::clock(&ctx, advance, set).await,
        Cmd::Demo { pause_ms } => demo::run(&ctx.client, ctx.json, pause_ms).await,
        Cmd::Certs(_) => unreachable!("handled before connecting"),
    };
    match res {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{}", output::explain(&e, &args.server));
            ExitCode::from(output::code_of(&e))
        }
    }
}
