//! A sender's first admit: ask before sending one template, send it only if
//! allowed, and report the outcome so a failed send gives its conversation
//! back.
//!
//! ```sh
//! admitd --test-clock &                       # a local node on 127.0.0.1:50051
//! admitctl register 100200300 --tier TIER_250  # or Admin.RegisterNumber
//! cargo run -p admit-client --example first_admit -- 127.0.0.1:50051
//! ```

use admit_client::{Category, Client, Delivered, SendResult, SendSpec};

#[tokio::main]
async fn main() -> Result<(), admit_client::Error> {
    let node = std::env::args().nth(1).unwrap_or("127.0.0.1:50051".into());
    let client = Client::connect(&node)?;

    let send = SendSpec::template("100200300", "491500000001", "welcome", Category::Utility);
    let result = client
        .send_with(&send, |_decision| async {
            // here: the call to the WhatsApp Cloud API
            Delivered::Sent
        })
        .await?;
    match result {
        SendResult::Attempted { decision, .. } => println!(
            "sent ({}); used {} of the limit",
            decision.reason,
            decision.usage.map(|u| u.used).unwrap_or(0)
        ),
        SendResult::Denied(d) => println!("denied: {} (retry after {:?})", d.reason, d.retry_after),
    }
    Ok(())
}
