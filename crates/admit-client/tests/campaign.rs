//! The campaign helper against a real node: allowed items are handed over,
//! items denied for good and invalid items are reported, and items denied
//! for a while (throughput, R8.1) are re-submitted with a new key once their
//! `retry_after` has passed, until all are allowed.

mod common;

use std::time::Duration;

use admit_client::{CampaignOptions, Category, Inbound, SendSpec};
use admit_proto::v1 as pb;
use common::*;

const N: &str = "100200300";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_paces_denied_items_and_reports_the_rest() {
    bounded(90, async {
        let (srv, mut direct) = InProcess::start(at(1, 9)).await;
        // one message per second: a batch of three lets one through
        direct
            .admin
            .register_number(pb::RegisterNumberRequest {
                number_id: N.into(),
                throughput_mps: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        let c = client(options(&[srv.addr]));
        // customer 9 opts out: marketing to them is denied for good
        c.record_inbound(&Inbound::message(N, &cust(9), Some("STOP")))
            .await
            .unwrap();
        // the service clock moves 1 s for every 100 ms of wall time meanwhile
        let mut clock = direct.clone();
        let ticker = tokio::spawn(async move {
            for i in 1..=600 {
                clock.set_clock(at(1, 9) + i * 1000).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });

        let mut sends: Vec<SendSpec> = (1..=3)
            .map(|i| SendSpec::template(N, &cust(i), "promo", Category::Marketing))
            .collect();
        sends.push(SendSpec::template(
            N,
            &cust(9),
            "promo",
            Category::Marketing,
        ));
        sends.push(SendSpec::template(N, "12", "promo", Category::Marketing));
        let mut handed = Vec::new();
        let r = c
            .campaign(
                sends,
                &CampaignOptions {
                    batch_size: 10,
                    give_up_after: Duration::from_secs(60),
                },
                |i, _, d| {
                    assert!(d.allowed);
                    handed.push(i);
                },
            )
            .await
            .expect("campaign");
        ticker.abort();
        handed.sort();
        assert_eq!(handed, vec![0, 1, 2], "{r:?}");
        assert_eq!(r.allowed, 3);
        assert_eq!(r.denied.len(), 1, "{r:?}");
        assert_eq!(r.denied[0].0, 3);
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert_eq!(r.errors[0].0, 4);
        assert!(r.errors[0].1.contains("customer_id"), "{r:?}");
        assert!(
            !r.resubmitted.is_empty(),
            "throughput denials re-submitted: {r:?}"
        );
        assert!(r.batches >= 2, "{r:?}");
        assert!(r.deferred.is_empty(), "{r:?}");
        assert_eq!(direct.used(N).await, 3);
        srv.stop().await;
    })
    .await
}
