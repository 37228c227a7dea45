//! Issue 11, item 9: concurrent first registrations of one number with
//! different limit scopes (a per-number profile: the number itself; a
//! portfolio profile: its portfolio) must register it in exactly one scope,
//! so its conversations count against one limit (R3.4, docs/rules.md). The
//! number's home shard decides by a scope claim (docs/design.md, "Routing in
//! a cluster").
//!
//! Each round registers a fresh number twice at once, once per profile (both
//! with a limit of [`LIMIT`] customers), then sends [`LIMIT`] + [`EXTRA`] new
//! conversations to distinct customers, alternately through the node of each
//! registration (each routes by the scope its own registration answered):
//! exactly [`LIMIT`] are admitted. Had both registrations been taken, each
//! node would count against its own scope's limit and admit them all. Then
//! every number is listed: the fresh one must be listed once. A lost
//! registration is refused FAILED_PRECONDITION naming `profile`.

mod support;

use admit_proto::v1 as pb;
use support::api::{self, util};
use support::cluster::{one_at_a_time, TestCluster};
use support::*;
use tonic::Code;

/// Each round's own portfolio (a fresh limit: the portfolio counts all its
/// numbers' customers).
fn portfolio_of(number: &str) -> String {
    format!("claims-{number}")
}

/// The shard of a portfolio's scope.
fn portfolio_shard(portfolio: &str) -> u32 {
    let p = admit_core::PortfolioId::parse("p", portfolio).unwrap();
    (admit_core::ScopeKey::Portfolio(p).stable_hash() % u64::from(SHARDS)) as u32
}

/// `rounds` fresh numbers whose own scope is on another shard than their
/// portfolio's (on the same shard, the shard's engine alone would refuse
/// the second registration: no race to show).
fn fresh_numbers(prefix: u64, rounds: usize) -> Vec<String> {
    (0..)
        .map(|i| (prefix + i).to_string())
        .filter(|n| shard_of(n) != portfolio_shard(&portfolio_of(n)))
        .take(rounds)
        .collect()
}

/// Both scopes' limit (customers per rolling 24 h), small so that a round's
/// sends are few; and how many new conversations a round sends beyond it.
const LIMIT: u32 = 5;
const EXTRA: u32 = 3;
/// The profiles of the race: the seeds' and the meta profile's rules, each
/// with [`LIMIT`] as its lowest and initial tier.
const BY_NUMBER: &str = "claims-number";
const BY_PORTFOLIO: &str = "claims-portfolio";

/// A number-scoped registration (its limit is the number's own).
fn seeds_registration(number: &str) -> pb::RegisterNumberRequest {
    pb::RegisterNumberRequest {
        number_id: number.into(),
        profile: BY_NUMBER.into(),
        ..Default::default()
    }
}

/// A portfolio-scoped registration (its limit is the portfolio's).
fn meta_registration(number: &str) -> pb::RegisterNumberRequest {
    pb::RegisterNumberRequest {
        number_id: number.into(),
        portfolio_id: portfolio_of(number),
        profile: BY_PORTFOLIO.into(),
        ..Default::default()
    }
}

/// The race's two profiles: `from`'s rules with a first tier of [`LIMIT`]
/// and no upgrades.
async fn small_profiles(c: &mut Clients) {
    for (from, name) in [("seeds", BY_NUMBER), ("meta", BY_PORTFOLIO)] {
        let mut p = api::get_policy(c, from).await;
        p.name = name.into();
        p.ladder.insert(
            0,
            pb::Tier {
                name: format!("TIER_{LIMIT}"),
                limit: LIMIT,
                unlimited: false,
            },
        );
        // no tier upgrades: the limit stays LIMIT
        p.upgrade_rules.clear();
        p.initial_tier = Some(pb::TierValue {
            tier: Some(api::by_value(LIMIT.into())),
        });
        // the same profile again after UNAVAILABLE (outcome unknown) sets
        // the same: retried, a bounded number of times
        let mut tries = 0;
        while let Err(s) = api::set_policy(c, p.clone()).await {
            tries += 1;
            assert!(
                s.code() == Code::Unavailable && tries < 50,
                "set profile {name}: {s:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

/// A round's portfolio under the portfolio profile. Retries UNAVAILABLE (a
/// leader change on a loaded machine), a bounded number of times.
async fn register_portfolio(c: &mut Clients, portfolio: String) {
    let req = pb::RegisterPortfolioRequest {
        portfolio_id: portfolio,
        profile: BY_PORTFOLIO.into(),
        tier: Some(pb::TierValue {
            tier: Some(api::by_value(LIMIT.into())),
        }),
    };
    for _ in 0..50 {
        match c.admin.register_portfolio(req.clone()).await {
            Ok(_) => return,
            Err(s) if s.code() == Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            Err(s) => panic!("register the portfolio: {s:?}"),
        }
    }
    panic!("register the portfolio: UNAVAILABLE for 50 tries");
}

/// A registration, retried on UNAVAILABLE (a leader change under way; a
/// registration is idempotent), a bounded number of times.
async fn register_number(
    c: &mut Clients,
    req: pb::RegisterNumberRequest,
) -> Result<tonic::Response<pb::RegisterNumberResponse>, tonic::Status> {
    for _ in 0..50 {
        match c.admin.register_number(req.clone()).await {
            Err(s) if s.code() == Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            other => return other,
        }
    }
    panic!("register {}: UNAVAILABLE for 50 tries", req.number_id);
}

/// One registration's answer: registered, or refused because the other
/// scope holds.
fn check_answer(
    what: &str,
    r: Result<tonic::Response<pb::RegisterNumberResponse>, tonic::Status>,
) -> bool {
    match r {
        Ok(_) => true,
        Err(s) if s.code() == Code::FailedPrecondition && s.message().contains("profile") => false,
        Err(s) => panic!("{what}: {s:?}"),
    }
}

/// Every listed row of `number` (one per scope it is registered in).
async fn rows_of(c: &mut Clients, number: &str) -> Vec<pb::StatusView> {
    let req = pb::ListNumbersRequest {
        limit: 1000,
        ..Default::default()
    };
    let mut tries = 0;
    let list = loop {
        match c.admin.list_numbers(req.clone()).await {
            Ok(r) => break r.into_inner(),
            // a sweep needs every shard's leader: retried through a leader change
            Err(s) if s.code() == Code::Unavailable && tries < 50 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            Err(s) => panic!("list numbers: {s:?}"),
        }
    };
    assert!(list.next_page_token.is_empty(), "one page holds them all");
    list.numbers
        .into_iter()
        .filter(|v| v.number_id == number)
        .collect()
}

/// One keyed new conversation through `c`, retried with the same key on
/// UNAVAILABLE (counted once however often it is sent), a bounded number
/// of times: whether it was admitted.
async fn admitted(c: &mut Clients, number: &str, customer: u64) -> bool {
    let send = keyed(
        util(number, customer),
        &format!("claims-{number}-{customer}"),
    );
    for _ in 0..50 {
        match c.admit(send.clone()).await {
            Ok(d) => {
                assert!(
                    d.reason() == pb::Reason::NewConversation
                        || d.reason() == pb::Reason::LimitReached,
                    "{number} to {customer}: {d:?}"
                );
                return d.allowed;
            }
            Err(s) if s.code() == Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            Err(s) => panic!("admit {number} to {customer}: {s:?}"),
        }
    }
    panic!("admit {number} to {customer}: UNAVAILABLE for 50 tries");
}

/// Runs the rounds: the number-scoped registration through `a`, the
/// portfolio one through `b`, then the sends alternately through `a` and
/// `b`, the listing through `list`.
async fn race(a: &Clients, b: &Clients, list: &mut Clients, numbers: &[String]) {
    let mut scopes = [0u32; 2];
    small_profiles(list).await;
    for n in numbers {
        let round = std::time::Instant::now();
        register_portfolio(list, portfolio_of(n)).await;
        let (mut a, mut b) = (a.clone(), b.clone());
        let (seeds, meta) = tokio::join!(
            register_number(&mut a, seeds_registration(n)),
            register_number(&mut b, meta_registration(n)),
        );
        let ok = [check_answer("seeds", seeds), check_answer("meta", meta)];
        assert!(ok.iter().any(|o| *o), "{n}: one registration is taken");
        // what the rule protects: one limit for the number, whichever node
        // (and so whichever registration's answer) routes the send
        let mut allowed = 0;
        for customer in 0..u64::from(LIMIT + EXTRA) {
            let via = if customer % 2 == 0 { &mut a } else { &mut b };
            allowed += u32::from(admitted(via, n, customer).await);
        }
        assert_eq!(
            allowed,
            LIMIT,
            "{n}: {} new conversations through both registrations' nodes, \
             one limit of {LIMIT} (registrations taken: {ok:?})",
            LIMIT + EXTRA
        );
        let rows = rows_of(list, n).await;
        assert_eq!(
            rows.len(),
            1,
            "number {n} is registered in exactly one scope: {rows:?}"
        );
        assert_eq!(rows[0].usage.as_ref().map(|u| u.used), Some(LIMIT), "{n}");
        let plain = pb::RegisterNumberRequest {
            number_id: n.clone(),
            ..Default::default()
        };
        let status = register_number(list, plain)
            .await
            .map(|r| r.into_inner().status.expect("a status"));
        // a registration of the number again naming no profile is taken
        // in the scope that holds; never a second scope
        if let Ok(status) = status {
            assert_eq!(status.profile, rows[0].profile, "{n}");
        }
        assert_eq!(rows_of(list, n).await.len(), 1, "{n}");
        eprintln!("round {n}: {:?}", round.elapsed());
        scopes[usize::from(rows[0].profile == BY_PORTFOLIO)] += 1;
    }
    eprintln!(
        "scopes won: the number's {}, the portfolio's {}",
        scopes[0], scopes[1]
    );
}

/// One node: the two registrations race between the directory lookup and
/// the write on one node, 50 rounds. (Its one directory routes every send
/// to one scope, so here the listing is what would show a second scope.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_registrations_on_one_node_give_one_scope() {
    // in turn with the cluster test: their timers need the cores
    one_at_a_time(120, async {
        serve(DAY1, async |mut c: Clients| {
            let numbers = fresh_numbers(310_000_000, 50);
            let (a, b) = (c.clone(), c.clone());
            race(&a, &b, &mut c, &numbers).await;
        })
        .await
    })
    .await;
}

/// Three nodes: the two registrations enter through two different nodes
/// (each sweeps the cluster, finds nothing, and registers), 10 rounds; the
/// third node lists. Rounds take about a second each on a loaded 2-core
/// machine (measured 1.4 s); the bound allows for a slow start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_registrations_through_two_nodes_give_one_scope() {
    one_at_a_time(240, async {
        let mut cluster = TestCluster::start(3, 3, DAY1).await;
        let (a, b, mut c) = (
            cluster.client(1).await,
            cluster.client(2).await,
            cluster.client(3).await,
        );
        let numbers = fresh_numbers(320_000_000, 10);
        race(&a, &b, &mut c, &numbers).await;
        cluster.stop_all().await;
    })
    .await;
}
