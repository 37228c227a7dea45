//! Retries against a real node whose per-caller quota refuses calls with
//! RESOURCE_EXHAUSTED and a `retry-after-ms` hint: the client waits at
//! least the hint and succeeds, and when its retry budget is empty it
//! fails with `RetryBudgetExhausted` instead of retrying.

mod common;

use admit_client::{Error, RetryPolicy, Target};
use admit_server::Quota;
use common::*;

const NUMBER: &str = "100200300";

fn register_req() -> admit_client::proto::RegisterNumberRequest {
    admit_client::proto::RegisterNumberRequest {
        number_id: NUMBER.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_is_retried_after_the_servers_retry_after() {
    bounded(60, async {
        // 2 calls/s, no burst: the second call at once is refused for ~500 ms
        let (srv, _) = InProcess::start_with(at(1, 9), |c| {
            c.caller_quota = Some(Quota {
                rate: 2.0,
                burst: 1.0,
            })
        })
        .await;
        let mut o = options(&[srv.addr]);
        o.caller = Some("retry-test".into());
        let c = client(o);
        c.register_number(register_req()).await.expect("register");
        let s = c
            .status(&Target::Number(NUMBER.into()))
            .await
            .expect("status after a retry");
        assert_eq!(s.number, NUMBER);
        let st = c.stats();
        assert!(st.retries >= 1, "{st:?}");
        let hint = st.last_hint.expect("the server sent retry-after-ms");
        assert!(!hint.is_zero(), "{st:?}");
        assert!(
            st.last_wait.unwrap() >= hint,
            "waited less than the hint: {st:?}"
        );
        srv.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_retry_budget_surfaces_an_error() {
    bounded(60, async {
        // one call every 2 s: each call right after another is refused
        let (srv, _) = InProcess::start_with(at(1, 9), |c| {
            c.caller_quota = Some(Quota {
                rate: 0.5,
                burst: 1.0,
            })
        })
        .await;
        let mut o = options(&[srv.addr]);
        o.caller = Some("budget-test".into());
        o.retry = RetryPolicy {
            budget: 1.0,
            refill_per_success: 0.0,
            ..RetryPolicy::default()
        };
        let c = client(o);
        c.register_number(register_req()).await.expect("register");
        // refused, retried with the one token after ~2 s
        c.status(&Target::Number(NUMBER.into()))
            .await
            .expect("the first retry is in the budget");
        assert_eq!(c.stats().retries, 1);
        // refused again, and no token is left
        let e = c
            .status(&Target::Number(NUMBER.into()))
            .await
            .expect_err("no budget left");
        match e {
            Error::RetryBudgetExhausted { last } => {
                assert!(
                    matches!(
                        *last,
                        Error::ResourceExhausted {
                            retry_after: Some(_),
                            ..
                        }
                    ),
                    "{last:?}"
                )
            }
            e => panic!("expected RetryBudgetExhausted, got {e:?}"),
        }
        assert_eq!(c.stats().retries, 1, "no retry without a token");
        srv.stop().await;
    })
    .await
}
