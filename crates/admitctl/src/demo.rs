//! `admitctl demo`: replays the two worked upgrade examples of the second
//! seed (R5.3, docs/rules.md) against a server on the test clock, step by
//! step, printing after each step the tier, limit, usage and pending
//! upgrade, so one watches the tier rise 24 h after the crossing and the
//! 24 h window age out. It only calls the public API (registration,
//! AdmitBatch, status, the test clock); the server decides everything.

use std::time::Duration;

use admit_client::proto as pb;
use admit_client::{Category, Client, Error, SendSpec};
use serde::Serialize;

use crate::ctl::{number_status, Res};
use crate::output::{json, opt_time, OK, REFUSED};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// One step as printed.
#[derive(Debug, Serialize)]
struct Step {
    example: u8,
    at: String,
    at_unix_ms: i64,
    what: String,
    sent: usize,
    tier: String,
    limit: Option<u32>,
    used: u32,
    unique_7d: u64,
    upgrade_at: Option<String>,
    note: String,
}

struct Demo<'a> {
    client: &'a Client,
    json: bool,
    pause: Duration,
    steps: Vec<Step>,
    /// Day 1, 00:00 of the example being played.
    day1: i64,
    next_customer: u64,
}

impl Demo<'_> {
    /// The clock at `hour`:`min` of `day` (1-based) of the current example.
    fn at(&self, day: i64, hour: i64, min: i64) -> i64 {
        self.day1 + (day - 1) * DAY + hour * HOUR + min * 60_000
    }

    async fn clock_to(&self, t: i64) -> Result<(), Error> {
        self.client.set_clock(t).await.map(|_| ())
    }

    /// `n` new conversations from `number` to customers never reached.
    async fn open(&mut self, number: &str, n: usize) -> Result<usize, Error> {
        let mut sent = 0;
        let mut left = n;
        while left > 0 {
            let chunk = left.min(1000);
            let sends: Vec<SendSpec> = (0..chunk)
                .map(|i| {
                    let c = (491_500_000_000 + self.next_customer + i as u64).to_string();
                    SendSpec::template(number, &c, "demo-utility", Category::Utility)
                })
                .collect();
            self.next_customer += chunk as u64;
            for r in self.client.admit_batch(&sends).await? {
                if r?.counted {
                    sent += 1;
                }
            }
            left -= chunk;
        }
        Ok(sent)
    }

    async fn step(
        &mut self,
        example: u8,
        number: &str,
        (day, hour, min): (i64, i64, i64),
        sends: usize,
        note: &str,
    ) -> Result<(), Error> {
        let t = self.at(day, hour, min);
        self.clock_to(t).await?;
        let sent = if sends > 0 {
            self.open(number, sends).await?
        } else {
            0
        };
        let s = number_status(self.client, number).await?;
        let u = s.usage.clone();
        let tier = u.as_ref().and_then(|u| u.tier.clone());
        let step = Step {
            example,
            at: format!("day {day} {hour:02}:{min:02}"),
            at_unix_ms: t,
            what: if sends > 0 {
                format!("{sent} new conversation(s)")
            } else {
                "look".into()
            },
            sent,
            tier: tier.as_ref().map_or("-".into(), |t| t.name.clone()),
            limit: tier.and_then(|t| t.limit),
            used: u.map_or(0, |u| u.used),
            unique_7d: s.unique_7d,
            upgrade_at: s.upgrade_at_unix_ms.map(|t| opt_time(Some(t))),
            note: note.to_owned(),
        };
        if !self.json {
            outln!(
                "  {:<13} {:<26} tier {:<9} limit {:>6}  used {:>4}  7-day uniques {:>4}  upgrade {}",
                step.at,
                step.what,
                step.tier,
                step.limit.map_or("-".into(), |l| l.to_string()),
                step.used,
                step.unique_7d,
                step.upgrade_at.as_deref().unwrap_or("-"),
            );
            if !note.is_empty() {
                outln!("  {:<13} -> {note}", "");
            }
            tokio::time::sleep(self.pause).await;
        }
        self.steps.push(step);
        Ok(())
    }

    async fn register(&self, number: &str) -> Result<(), Error> {
        self.client
            .register_number(pb::RegisterNumberRequest {
                number_id: number.to_owned(),
                portfolio_id: format!("demo-{number}"),
                initial_tier: Some(pb::TierValue {
                    tier: Some(pb::tier_value::Tier::TierName("TIER_1K".into())),
                }),
                quality: Some(pb::NumberQuality::High as i32),
                display_name_approved: Some(true),
                throughput_mps: Some(10_000),
                ..Default::default()
            })
            .await
            .map(|_| ())
    }
}

pub async fn run(client: &Client, json_out: bool, pause_ms: u64) -> Res {
    let (now, test_mode) = client.clock().await?;
    if !test_mode {
        eprintln!(
            "admitctl: the demo moves the service clock: start the server with `admitd --test-clock`"
        );
        return Ok(REFUSED);
    }
    // the examples start at a midnight after the current clock (time never
    // goes back); numbers named after it, so each run has fresh ones
    let day1 = (now / DAY + 1) * DAY;
    let tag = (day1 / DAY) % 100_000;
    let (a, b) = (format!("7{tag:05}01"), format!("7{tag:05}02"));
    let mut d = Demo {
        client,
        json: json_out,
        pause: Duration::from_millis(pause_ms),
        steps: Vec::new(),
        day1,
        next_customer: 0,
    };

    if !json_out {
        outln!("Example 1 (R5.3): number {a} at 1K; 500 new conversations on day 1, the 500th at 15:00.");
        outln!("  Expected: the limit is 10K from 15:00 on day 2.\n");
    }
    d.register(&a).await?;
    d.step(1, &a, (1, 9, 0), 499, "").await?;
    d.step(
        1,
        &a,
        (1, 15, 0),
        1,
        "500 of 1K in 7 days: half the limit; the 24 h wait starts",
    )
    .await?;
    d.step(
        1,
        &a,
        (2, 9, 0),
        0,
        "the 499 conversations of 09:00 yesterday aged out of the 24 h window",
    )
    .await?;
    d.step(
        1,
        &a,
        (2, 14, 59),
        0,
        "one minute before the upgrade: still 1K",
    )
    .await?;
    d.step(
        1,
        &a,
        (2, 15, 0),
        0,
        "upgraded to 10K; the last conversation aged out too",
    )
    .await?;

    // example 2 on its own calendar, three days later
    d.day1 += 3 * DAY;
    if !json_out {
        outln!("\nExample 2 (R5.3): number {b} at 1K; 100, 200 and 200 new conversations on days 1 to 3, the 500th at 19:00 on day 3.");
        outln!("  Expected: the limit is 10K from 19:00 on day 4.\n");
    }
    d.register(&b).await?;
    d.step(2, &b, (1, 10, 0), 100, "").await?;
    d.step(
        2,
        &b,
        (2, 10, 0),
        200,
        "day 1's 100 aged out of the 24 h window",
    )
    .await?;
    d.step(2, &b, (3, 12, 0), 199, "").await?;
    d.step(
        2,
        &b,
        (3, 18, 0),
        0,
        "499 in 7 days: no upgrade pending yet",
    )
    .await?;
    d.step(2, &b, (3, 19, 0), 1, "the 500th: the 24 h wait starts")
        .await?;
    d.step(2, &b, (4, 9, 0), 100, "").await?;
    d.step(2, &b, (4, 18, 59), 0, "one minute before: still 1K")
        .await?;
    d.step(
        2,
        &b,
        (4, 19, 0),
        1,
        "10K from 19:00; the send at 19:00 is admitted under 10K",
    )
    .await?;
    if json_out {
        json(&d.steps);
    }
    Ok(OK)
}
