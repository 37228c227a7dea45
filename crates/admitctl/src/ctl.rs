//! The commands of admitctl that talk to a cluster: each one calls
//! admit-client and prints the answer as text or, with `--json`, as JSON.
//! Each returns the exit code of its outcome (see [`crate::output`]).
//! Imports admit-client and the printing helpers; no rules of its own.

use admit_client::proto as pb;
use admit_client::{
    Category, Client, Delivery, Error, Event, Inbound, Outcome, SendSpec, Status, Target,
};
use serde::Serialize;

use crate::output::{self, json, opt_time, time, DENIED, OK, USAGE};
use crate::policy::PolicyFile;

/// What every command gets: the client and how to print.
#[derive(Debug)]
pub struct Ctx {
    pub client: Client,
    pub json: bool,
}

pub type Res = Result<u8, Error>;

#[derive(Serialize)]
struct NodeJson<'a> {
    id: u64,
    address: &'a str,
    state: &'static str,
    alive: bool,
    replicas: u32,
    is_self: bool,
    leading_shards: &'a [u32],
}

fn state(n: &pb::Node) -> &'static str {
    match n.state() {
        pb::NodeState::Active => "active",
        pb::NodeState::Leaving => "leaving",
        pb::NodeState::Removed => "removed",
        pb::NodeState::Unspecified => "?",
    }
}

fn print_nodes(ctx: &Ctx, nodes: &[pb::Node]) {
    if ctx.json {
        let v: Vec<NodeJson> = nodes
            .iter()
            .map(|n| NodeJson {
                id: n.node_id,
                address: &n.address,
                state: state(n),
                alive: n.alive,
                replicas: n.replica_count,
                is_self: n.is_self,
                leading_shards: &n.leading_shard_ids,
            })
            .collect();
        return json(&v);
    }
    outln!(
        "{:>4}  {:<28} {:<8} {:<7} {:>8} {:>5}  leads",
        "id",
        "address",
        "state",
        "alive",
        "replicas",
        "self"
    );
    for n in nodes {
        outln!(
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

pub async fn nodes(ctx: &Ctx) -> Res {
    print_nodes(ctx, &ctx.client.nodes().await?);
    Ok(OK)
}

pub async fn add_node(ctx: &Ctx, id: u64, address: &str) -> Res {
    print_nodes(ctx, &ctx.client.add_node(id, address).await?);
    Ok(OK)
}

pub async fn remove_node(ctx: &Ctx, id: u64) -> Res {
    print_nodes(ctx, &ctx.client.remove_node(id).await?);
    if !ctx.json {
        outln!(
            "node {id} is leaving; it is removed once it holds no replica (see `admitctl nodes`)"
        );
    }
    Ok(OK)
}

#[derive(Serialize)]
struct ReplicaJson {
    node: u64,
    voter: bool,
    lag: Option<u64>,
}

#[derive(Serialize)]
struct ShardJson {
    shard: u32,
    leader: Option<u64>,
    term: u64,
    applied: u64,
    reporter: u64,
    replicas: Vec<ReplicaJson>,
    target: Vec<u64>,
    changing: bool,
}

pub async fn shards(ctx: &Ctx, check: bool, local: bool) -> Res {
    let shards = ctx.client.shards(local).await?;
    let leaderless = shards.iter().filter(|s| s.leader_node_id.is_none()).count();
    if ctx.json {
        let v: Vec<ShardJson> = shards
            .iter()
            .map(|s| ShardJson {
                shard: s.shard_id,
                leader: s.leader_node_id,
                term: s.term,
                applied: s.last_applied_index,
                reporter: s.reporter_node_id,
                replicas: s
                    .replicas
                    .iter()
                    .map(|r| ReplicaJson {
                        node: r.node_id,
                        voter: r.voter,
                        lag: r.lag,
                    })
                    .collect(),
                target: s.target_node_ids.clone(),
                changing: s.changing,
            })
            .collect();
        json(&v);
    } else {
        outln!(
            "{:>5} {:>6} {:>6} {:>10} {:>8}  {:<34} target",
            "shard",
            "leader",
            "term",
            "applied",
            "reporter",
            "replicas (node:lag, ~learner)"
        );
        for s in &shards {
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
            outln!(
                "{:>5} {:>6} {:>6} {:>10} {:>8}  {:<34} {:?}{}",
                s.shard_id,
                s.leader_node_id.map_or("-".into(), |l| l.to_string()),
                s.term,
                s.last_applied_index,
                s.reporter_node_id,
                reps.join(" "),
                s.target_node_ids,
                if s.changing { " (changing)" } else { "" }
            );
        }
    }
    if check && leaderless > 0 {
        eprintln!("admitctl: {leaderless} shard(s) without a leader");
        return Ok(DENIED);
    }
    Ok(OK)
}

pub async fn status(ctx: &Ctx, number: Option<String>, portfolio: Option<String>) -> Res {
    let target = match (number, portfolio) {
        (Some(n), None) => Target::Number(n),
        (None, Some(p)) => Target::Portfolio(p),
        _ => {
            eprintln!("admitctl: status needs a NUMBER or --portfolio ID (one of them)");
            return Ok(USAGE);
        }
    };
    let s = ctx.client.status(&target).await?;
    if ctx.json {
        json(&s);
    } else {
        output::status_table(&s);
        // learned from the answer's leader_hint
        if let Some(l) = ctx
            .client
            .leader_of(&s.number)
            .filter(|_| !s.number.is_empty())
        {
            outln!("  {:<20} {l}", "shard leader");
        }
    }
    Ok(OK)
}

/// How `numbers` sorts.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SortBy {
    /// Closest to their limit first (unlimited last).
    Headroom,
    /// Most used first.
    Used,
    /// By number id.
    Number,
}

pub async fn numbers(
    ctx: &Ctx,
    sort: SortBy,
    status: Option<String>,
    portfolio: Option<String>,
) -> Res {
    let mut list = ctx.client.list_numbers(portfolio.as_deref()).await?;
    if let Some(want) = status.map(|s| s.to_ascii_lowercase().replace('-', "_")) {
        list.retain(|s| s.account_status == want || s.number_status == want);
    }
    match sort {
        // the server's order: headroom ascending, unlimited last
        SortBy::Headroom => {}
        SortBy::Used => {
            list.sort_by_key(|s| std::cmp::Reverse(s.usage.as_ref().map_or(0, |u| u.used)))
        }
        SortBy::Number => list.sort_by(|a, b| a.number.cmp(&b.number)),
    }
    if ctx.json {
        json(&list);
    } else {
        output::numbers_table(&list);
    }
    Ok(OK)
}

/// Options of `register`.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// The number (phone_number_id).
    pub number: String,
    /// Its portfolio (business account).
    #[arg(long)]
    pub portfolio: Option<String>,
    /// Policy profile: seeds (default) or meta or one made with `policy set`.
    #[arg(long)]
    pub profile: Option<String>,
    /// Initial tier, e.g. TIER_250, TIER_1K, 10000.
    #[arg(long)]
    pub tier: Option<String>,
    /// Quality: high, medium, low, unknown.
    #[arg(long)]
    pub quality: Option<String>,
    /// Whether the display name is approved.
    #[arg(long)]
    pub display_name_approved: Option<bool>,
    /// Throughput in messages per second.
    #[arg(long)]
    pub throughput: Option<u32>,
}

pub async fn register(ctx: &Ctx, a: RegisterArgs) -> Res {
    let quality = match a.quality.as_deref() {
        None => None,
        Some(q) => match admit_client::parse_quality(q) {
            Some(q) => Some(q as i32),
            None => {
                eprintln!(
                    "admitctl: --quality: unknown quality {q:?} (high, medium, low, unknown)"
                );
                return Ok(USAGE);
            }
        },
    };
    let s = ctx
        .client
        .register_number(pb::RegisterNumberRequest {
            number_id: a.number,
            portfolio_id: a.portfolio.unwrap_or_default(),
            profile: a.profile.unwrap_or_default(),
            initial_tier: a.tier.as_deref().map(admit_client::tier_value),
            quality,
            display_name_approved: a.display_name_approved,
            throughput_mps: a.throughput,
            ..Default::default()
        })
        .await?;
    if ctx.json {
        json(&s);
    } else {
        output::status_table(&s);
    }
    Ok(OK)
}

/// Options of `admit`.
#[derive(Debug, clap::Args)]
pub struct AdmitArgs {
    /// The sending number.
    pub number: String,
    /// The customer (wa_id).
    pub customer: String,
    /// Template id; without it the send is free-form.
    #[arg(long)]
    pub template: Option<String>,
    /// The template's category.
    #[arg(long, value_enum, default_value = "utility")]
    pub category: CategoryArg,
    /// Idempotency key (generated when absent).
    #[arg(long)]
    pub key: Option<String>,
}

/// A template category on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CategoryArg {
    Marketing,
    Utility,
    Authentication,
}

pub async fn admit(ctx: &Ctx, a: AdmitArgs) -> Res {
    let category = match a.category {
        CategoryArg::Marketing => Category::Marketing,
        CategoryArg::Utility => Category::Utility,
        CategoryArg::Authentication => Category::Authentication,
    };
    let mut send = match &a.template {
        Some(t) => SendSpec::template(&a.number, &a.customer, t, category),
        None => SendSpec::free_form(&a.number, &a.customer),
    };
    send.idempotency_key = a.key;
    let d = ctx.client.admit(&send).await?;
    if ctx.json {
        json(&d);
    } else {
        outln!(
            "{} ({}){}",
            if d.allowed { "ALLOWED" } else { "DENIED" },
            d.reason,
            if d.replayed { ", replayed" } else { "" }
        );
        if let Some(u) = &d.usage {
            let limit = u
                .tier
                .as_ref()
                .map(|t| t.limit.map_or("unlimited".into(), |l| l.to_string()))
                .unwrap_or_default();
            outln!("  used {} of {limit}, headroom {}", u.used, u.headroom);
        }
        if let Some(w) = d.retry_after {
            outln!(
                "  retry after {} ms (at {})",
                w.as_millis(),
                opt_time(d.retry_at_unix_ms)
            );
        }
        if let Some(w) = d.window_end_unix_ms {
            outln!("  window ends {}", time(w));
        }
        if let Some(id) = &d.admission_id {
            outln!("  admission {id}");
        }
        outln!("  key {}", d.idempotency_key);
    }
    Ok(if d.allowed { OK } else { DENIED })
}

/// Options of `inbound`.
#[derive(Debug, clap::Args)]
pub struct InboundArgs {
    /// The business number contacted.
    pub number: String,
    /// The customer.
    pub customer: String,
    /// The message text (opt-out / opt-in keywords apply).
    #[arg(long)]
    pub text: Option<String>,
    /// A call rather than a message.
    #[arg(long)]
    pub call: bool,
    /// Meta marked it a free entry point.
    #[arg(long)]
    pub free_entry_point: bool,
    /// De-duplication key (e.g. the wamid).
    #[arg(long)]
    pub key: Option<String>,
}

pub async fn inbound(ctx: &Ctx, a: InboundArgs) -> Res {
    let r = ctx
        .client
        .record_inbound(&Inbound {
            number: a.number,
            customer: a.customer,
            call: a.call,
            text: a.text,
            free_entry_point: a.free_entry_point,
            event_key: a.key,
        })
        .await?;
    if ctx.json {
        json(&r);
    } else {
        outln!("service window open until {}", time(r.window_end_unix_ms));
        if let Some(f) = r.free_entry_point_end_unix_ms {
            outln!("free entry point window until {}", time(f));
        }
        if r.opt_change != "none" {
            outln!("customer {}", r.opt_change.replace('_', " "));
        }
        if r.duplicate {
            outln!("(duplicate: already applied)");
        }
    }
    Ok(OK)
}

/// A delivery status on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DeliveryArg {
    Sent,
    Delivered,
    Read,
    Failed,
}

/// Options of `outcome`.
#[derive(Debug, clap::Args)]
pub struct OutcomeArgs {
    /// The sending number.
    pub number: String,
    /// The customer.
    pub customer: String,
    /// Meta's status of the send.
    #[arg(value_enum)]
    pub status: DeliveryArg,
    /// Meta's error code for a failed send (e.g. 131056).
    #[arg(long)]
    pub code: Option<u32>,
    /// The admission the send was made under (to release on failure).
    #[arg(long)]
    pub admission: Option<String>,
    /// The template sent.
    #[arg(long)]
    pub template: Option<String>,
    /// De-duplication key.
    #[arg(long)]
    pub key: Option<String>,
    /// Meta's message id (wamid) of the send: with --admission, a later status
    /// naming only the wamid finds the admission.
    #[arg(long)]
    pub message_id: Option<String>,
}

pub async fn outcome(ctx: &Ctx, a: OutcomeArgs) -> Res {
    let delivery = match a.status {
        DeliveryArg::Sent => Delivery::Sent,
        DeliveryArg::Delivered => Delivery::Delivered,
        DeliveryArg::Read => Delivery::Read,
        DeliveryArg::Failed => Delivery::Failed(a.code),
    };
    if a.code.is_some() && !matches!(a.status, DeliveryArg::Failed) {
        eprintln!("admitctl: --code goes with status failed only");
        return Ok(USAGE);
    }
    let r = ctx
        .client
        .report_outcome(&Outcome {
            number: a.number,
            customer: a.customer,
            admission_id: a.admission,
            delivery,
            template_id: a.template,
            event_key: a.key,
            message_id: a.message_id,
        })
        .await?;
    if ctx.json {
        json(&r);
    } else {
        if r.effects.is_empty() {
            outln!("recorded; no reaction");
        } else {
            outln!("effects: {}", r.effects.join(", "));
        }
        if let Some(h) = r.hold_until_unix_ms {
            outln!("hold until {}", time(h));
        }
        if r.duplicate {
            outln!("(duplicate: already applied)");
        }
    }
    Ok(OK)
}

/// The events `admitctl event` applies.
#[derive(Debug, clap::Subcommand)]
pub enum EventCmd {
    /// A tier change of a number (or of a portfolio with --portfolio).
    Tier {
        /// The number, or the portfolio with --portfolio.
        target: String,
        /// The new tier: TIER_250, TIER_1K, TIER_2K, TIER_10K, TIER_100K,
        /// TIER_UNLIMITED, or Meta's integer form.
        tier: String,
        #[arg(long)]
        portfolio: bool,
    },
    /// A number's quality rating: high, medium, low, unknown (or
    /// green, yellow, red).
    Quality { number: String, quality: String },
    /// A template's status: approved, paused, unpaused, disabled.
    Template { template_id: String, status: String },
    /// A template's quality: high, medium, low, pending.
    TemplateQuality {
        template_id: String,
        quality: String,
    },
}

pub async fn event(ctx: &Ctx, e: EventCmd, key: Option<String>) -> Res {
    let ev = match e {
        EventCmd::Tier {
            target,
            tier,
            portfolio,
        } => Event::Tier {
            target: if portfolio {
                Target::Portfolio(target)
            } else {
                Target::Number(target)
            },
            tier,
        },
        EventCmd::Quality { number, quality } => Event::NumberQuality { number, quality },
        EventCmd::Template {
            template_id,
            status,
        } => Event::TemplateStatus {
            template_id,
            status,
        },
        EventCmd::TemplateQuality {
            template_id,
            quality,
        } => Event::TemplateQuality {
            template_id,
            quality,
        },
    };
    let r = ctx.client.apply_event(&ev, key.as_deref()).await?;
    if ctx.json {
        json(&r);
    } else if r.applied {
        outln!("applied");
    } else if r.duplicate {
        outln!("duplicate: already applied");
    } else {
        outln!(
            "not applied: {}",
            r.ignored_reason.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(OK)
}

/// `policy get|set`.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCmd {
    /// Print a profile (TOML, or JSON with --json) to edit and set back.
    Get {
        /// The profile name (seeds, meta, ...).
        name: String,
    },
    /// Replace (or create) a profile from a TOML or JSON (.json) file.
    Set {
        /// The file, in the form `policy get` prints.
        file: std::path::PathBuf,
    },
}

pub async fn policy(ctx: &Ctx, cmd: PolicyCmd) -> Res {
    match cmd {
        PolicyCmd::Get { name } => {
            let p = PolicyFile::from_pb(&ctx.client.get_policy(&name).await?);
            print_policy(ctx, &p);
        }
        PolicyCmd::Set { file } => {
            let p = match PolicyFile::read(&file).and_then(|f| f.to_pb()) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("admitctl: policy file {e}");
                    return Ok(USAGE);
                }
            };
            let (created, stored) = ctx.client.set_policy(p).await?;
            if !ctx.json {
                outln!(
                    "# profile {} {}",
                    stored.name,
                    if created { "created" } else { "replaced" }
                );
            }
            print_policy(ctx, &PolicyFile::from_pb(&stored));
        }
    }
    Ok(OK)
}

fn print_policy(ctx: &Ctx, p: &PolicyFile) {
    if ctx.json {
        json(p);
    } else {
        match toml::to_string(p) {
            Ok(t) => out!("{t}"),
            Err(e) => eprintln!("admitctl: cannot encode TOML: {e}"),
        }
    }
}

/// `clock`: read, or in test mode move, the service clock.
pub async fn clock(ctx: &Ctx, advance_ms: Option<i64>, set_ms: Option<i64>) -> Res {
    let now = match (advance_ms, set_ms) {
        (Some(by), None) => ctx.client.advance_clock(by).await?,
        (None, Some(t)) => ctx.client.set_clock(t).await?,
        (None, None) => ctx.client.clock().await?.0,
        _ => {
            eprintln!("admitctl: --advance and --set exclude each other");
            return Ok(USAGE);
        }
    };
    let (_, test_mode) = ctx.client.clock().await?;
    if ctx.json {
        #[derive(Serialize)]
        struct C {
            now_unix_ms: i64,
            test_mode: bool,
        }
        json(&C {
            now_unix_ms: now,
            test_mode,
        });
    } else {
        outln!(
            "{} ({now}){}",
            time(now),
            if test_mode { ", test clock" } else { "" }
        );
    }
    Ok(OK)
}

/// The status of one number, for the demo.
pub async fn number_status(client: &Client, number: &str) -> Result<Status, Error> {
    client.status(&Target::Number(number.to_owned())).await
}
