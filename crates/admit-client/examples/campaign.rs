//! A campaign: 20 utility templates from one number, decided in batches;
//! items denied for a while (limit, throughput) are re-submitted when their
//! `retry_after` has passed, within a minute.
//!
//! ```sh
//! cargo run -p admit-client --example campaign -- 127.0.0.1:50051 100200300
//! ```

use std::time::Duration;

use admit_client::{CampaignOptions, Category, Client, SendSpec};

#[tokio::main]
async fn main() -> Result<(), admit_client::Error> {
    let mut args = std::env::args().skip(1);
    let node = args.next().unwrap_or("127.0.0.1:50051".into());
    let number = args.next().unwrap_or("100200300".into());
    let client = Client::connect(&node)?;

    let sends = (0..20u64)
        .map(|i| {
            let customer = (491_500_000_000 + i).to_string();
            SendSpec::template(&number, &customer, "promo-1", Category::Utility)
        })
        .collect();
    let opts = CampaignOptions {
        batch_size: 10,
        give_up_after: Duration::from_secs(60),
    };
    let report = client
        .campaign(sends, &opts, |i, send, _decision| {
            // here: hand the allowed item to the sending queue
            println!("#{i}: send to {}", send.customer);
        })
        .await?;
    println!(
        "allowed {}, denied {}, deferred {}, invalid {}, in {} batch(es)",
        report.allowed,
        report.denied.len(),
        report.deferred.len(),
        report.errors.len(),
        report.batches
    );
    Ok(())
}
