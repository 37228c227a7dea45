//! Issue 11, item 9: concurrent first registrations of one number with
//! different limit scopes (the seeds profile: the number itself; "meta": its
//! portfolio) must register it in exactly one scope, so its conversations
//! count against one limit (R3.4, docs/rules.md). The number's home shard
//! decides by a scope claim (docs/design.md, "Routing in a cluster").
//!
//! Each round registers a fresh number twice at once, once per profile, then
//! lists every number: the fresh one must be listed once. A lost
//! registration is either taken in the winner's scope (an update) or refused
//! FAILED_PRECONDITION naming `profile`; never both scopes.

mod support;

use admit_proto::v1 as pb;
use support::cluster::{one_at_a_time, TestCluster};
use support::*;
use tonic::Code;

const PORTFOLIO: &str = "claims-p";

/// The shard of the portfolio's scope.
fn portfolio_shard() -> u32 {
    let p = admit_core::PortfolioId::parse("p", PORTFOLIO).unwrap();
    (admit_core::ScopeKey::Portfolio(p).stable_hash() % u64::from(SHARDS)) as u32
}

/// `rounds` fresh numbers whose own scope is on another shard than the
/// portfolio's (on the same shard, the shard's engine alone would refuse
/// the second registration: no race to show).
fn fresh_numbers(prefix: u64, rounds: usize) -> Vec<String> {
    (0..)
        .map(|i| (prefix + i).to_string())
        .filter(|n| shard_of(n) != portfolio_shard())
        .take(rounds)
        .collect()
}

fn seeds_registration(number: &str) -> pb::RegisterNumberRequest {
    pb::RegisterNumberRequest {
        number_id: number.into(),
        ..Default::default()
    }
}

fn meta_registration(number: &str) -> pb::RegisterNumberRequest {
    pb::RegisterNumberRequest {
        number_id: number.into(),
        portfolio_id: PORTFOLIO.into(),
        profile: "meta".into(),
        ..Default::default()
    }
}

/// The portfolio under the meta profile, so that a seeds registration that
/// loses to a meta claim joins it.
async fn register_portfolio(c: &mut Clients) {
    c.admin
        .register_portfolio(pb::RegisterPortfolioRequest {
            portfolio_id: PORTFOLIO.into(),
            profile: "meta".into(),
            ..Default::default()
        })
        .await
        .expect("register the portfolio");
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
    let list = c
        .admin
        .list_numbers(pb::ListNumbersRequest {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list numbers")
        .into_inner();
    assert!(list.next_page_token.is_empty(), "one page holds them all");
    list.numbers
        .into_iter()
        .filter(|v| v.number_id == number)
        .collect()
}

/// Runs the rounds: the seeds registration through `a`, the meta one through
/// `b`, the listing through `list`.
async fn race(a: &Clients, b: &Clients, list: &mut Clients, numbers: &[String]) {
    let mut scopes = [0u32; 2];
    for n in numbers {
        let (mut a, mut b) = (a.clone(), b.clone());
        let (seeds, meta) = tokio::join!(
            a.admin.register_number(seeds_registration(n)),
            b.admin.register_number(meta_registration(n)),
        );
        let ok = [check_answer("seeds", seeds), check_answer("meta", meta)];
        assert!(ok.iter().any(|o| *o), "{n}: one registration is taken");
        let rows = rows_of(list, n).await;
        assert_eq!(
            rows.len(),
            1,
            "number {n} is registered in exactly one scope: {rows:?}"
        );
        let status = list.status(n).await;
        assert_eq!(status.profile, rows[0].profile, "{n}");
        scopes[usize::from(rows[0].profile == "meta")] += 1;
    }
    eprintln!("scopes won: seeds {}, meta {}", scopes[0], scopes[1]);
}

/// One node: the two registrations race between the directory lookup and
/// the write on one node, 50 rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_registrations_on_one_node_give_one_scope() {
    serve(DAY1, async |mut c: Clients| {
        register_portfolio(&mut c).await;
        let numbers = fresh_numbers(310_000_000, 50);
        let (a, b) = (c.clone(), c.clone());
        race(&a, &b, &mut c, &numbers).await;
    })
    .await;
}

/// Three nodes: the two registrations enter through two different nodes
/// (each sweeps the cluster, finds nothing, and registers), 20 rounds; the
/// third node lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_registrations_through_two_nodes_give_one_scope() {
    one_at_a_time(120, async {
        let mut cluster = TestCluster::start(3, 3, DAY1).await;
        let (a, b, mut c) = (
            cluster.client(1).await,
            cluster.client(2).await,
            cluster.client(3).await,
        );
        register_portfolio(&mut c).await;
        let numbers = fresh_numbers(320_000_000, 20);
        race(&a, &b, &mut c, &numbers).await;
        cluster.stop_all().await;
    })
    .await;
}
