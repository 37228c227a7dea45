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
/// loses to a meta claim joins it. Retries UNAVAILABLE (a leader change on
/// a loaded machine), a bounded number of times.
async fn register_portfolio(c: &mut Clients) {
    let req = pb::RegisterPortfolioRequest {
        portfolio_id: PORTFOLIO.into(),
        profile: "meta".into(),
        ..Default::default()
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

/// Runs the rounds: the seeds registration through `a`, the meta one through
/// `b`, the listing through `list`.
async fn race(a: &Clients, b: &Clients, list: &mut Clients, numbers: &[String]) {
    let mut scopes = [0u32; 2];
    for n in numbers {
        let round = std::time::Instant::now();
        let (mut a, mut b) = (a.clone(), b.clone());
        let (seeds, meta) = tokio::join!(
            register_number(&mut a, seeds_registration(n)),
            register_number(&mut b, meta_registration(n)),
        );
        let ok = [check_answer("seeds", seeds), check_answer("meta", meta)];
        assert!(ok.iter().any(|o| *o), "{n}: one registration is taken");
        let rows = rows_of(list, n).await;
        assert_eq!(
            rows.len(),
            1,
            "number {n} is registered in exactly one scope: {rows:?}"
        );
        let status = register_number(list, seeds_registration(n))
            .await
            .map(|r| r.into_inner().status.expect("a status"));
        // a seeds registration of the number again is taken, or refused
        // because its scope is the portfolio's; never a second scope
        if let Ok(status) = status {
            assert_eq!(status.profile, rows[0].profile, "{n}");
        }
        assert_eq!(rows_of(list, n).await.len(), 1, "{n}");
        eprintln!("round {n}: {:?}", round.elapsed());
        scopes[usize::from(rows[0].profile == "meta")] += 1;
    }
    eprintln!("scopes won: seeds {}, meta {}", scopes[0], scopes[1]);
}

/// One node: the two registrations race between the directory lookup and
/// the write on one node, 50 rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_registrations_on_one_node_give_one_scope() {
    // in turn with the cluster test: their timers need the cores
    one_at_a_time(120, async {
        serve(DAY1, async |mut c: Clients| {
            register_portfolio(&mut c).await;
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
        register_portfolio(&mut c).await;
        let numbers = fresh_numbers(320_000_000, 10);
        race(&a, &b, &mut c, &numbers).await;
        cluster.stop_all().await;
    })
    .await;
}
