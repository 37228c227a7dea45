//! The usual flows built on [`Client`]: admit, send and report the outcome
//! (releasing the admission when the send failed), and a campaign that
//! feeds `AdmitBatch` and paces the denied items by their `retry_after`.
//! Imports the crate's client and types only.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::types::{Decision, Delivery, Outcome, OutcomeResult, SendSpec};
use crate::{Client, Error};

/// How a delivery attempt ended, as the sender's WhatsApp call saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// Meta accepted the message.
    Sent,
    /// Meta accepted the message and answered with its id (`messages[0].id`,
    /// the wamid): reported with the admission, so that a failed status that
    /// names only the wamid (Meta's webhook, through admit's receiver) still
    /// releases the admission (R3.5).
    SentAs(String),
    /// Meta refused it, with its error code (`errors[].code`) if known.
    Failed(Option<u32>),
}

/// What [`Client::send_with`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// Denied: nothing was sent.
    Denied(Decision),
    /// Allowed and handed to `deliver`; `report` is the service's reaction
    /// to the outcome (a failure before delivery released the admission).
    Attempted {
        decision: Decision,
        delivered: Delivered,
        report: OutcomeResult,
    },
}

impl Client {
    /// Admits `send`; if allowed, runs `deliver` (the caller's call to
    /// WhatsApp) and reports its outcome, so that a send that failed before
    /// delivery gives its conversation back (R3.5).
    pub async fn send_with<F, Fut>(&self, send: &SendSpec, deliver: F) -> Result<SendResult, Error>
    where
        F: FnOnce(&Decision) -> Fut,
        Fut: Future<Output = Delivered>,
    {
        let decision = self.admit(send).await?;
        if !decision.allowed {
            return Ok(SendResult::Denied(decision));
        }
        let delivered = deliver(&decision).await;
        let report = self
            .report_outcome(&Outcome {
                number: send.number.clone(),
                customer: send.customer.clone(),
                admission_id: decision.admission_id.clone(),
                delivery: match delivered {
                    Delivered::Sent | Delivered::SentAs(_) => Delivery::Sent,
                    Delivered::Failed(c) => Delivery::Failed(c),
                },
                template_id: Client::template_of(send),
                event_key: None,
                message_id: match &delivered {
                    Delivered::SentAs(id) => Some(id.clone()),
                    _ => None,
                },
            })
            .await?;
        Ok(SendResult::Attempted {
            decision,
            delivered,
            report,
        })
    }

    /// Runs a campaign: admits `sends` in batches, hands each allowed item to
    /// `on_allowed` (which sends it), and re-submits the denied items whose
    /// denial may lift when their `retry_after` has passed, with a new key
    /// (the old one would replay the denial). Items that cannot succeed
    /// (opted out, disabled template, ...) and items still denied when
    /// `opts.give_up_after` would pass are returned in the report.
    pub async fn campaign<F>(
        &self,
        sends: Vec<SendSpec>,
        opts: &CampaignOptions,
        mut on_allowed: F,
    ) -> Result<CampaignReport, Error>
    where
        F: FnMut(usize, &SendSpec, &Decision),
    {
        let start = Instant::now();
        let give_up = start + opts.give_up_after;
        let mut report = CampaignReport::default();
        // (due time, item index) -> the item waits until then
        let mut queue: BTreeMap<(Instant, usize), ()> = BTreeMap::new();
        for i in 0..sends.len() {
            queue.insert((start, i), ());
        }
        let batch = opts.batch_size.clamp(1, 1000);
        // bounded: each round decides at least one item or sleeps until one
        // is due; every re-submission is bounded by give_up_after
        while let Some((&(due, _), _)) = queue.first_key_value() {
            let now = Instant::now();
            if due > now {
                tokio::time::sleep_until(due).await;
                continue;
            }
            let ready: Vec<usize> = queue
                .range(..=(now, usize::MAX))
                .map(|(&(_, i), _)| i)
                .take(batch)
                .collect();
            queue.retain(|&(_, i), _| !ready.contains(&i));
            let items: Vec<SendSpec> = ready
                .iter()
                .map(|&i| {
                    // a re-submission needs a fresh key: the first one
                    // replays its denial
                    let mut s = sends[i].clone();
                    if report.resubmitted.contains_key(&i) {
                        s.idempotency_key = None;
                    }
                    s
                })
                .collect();
            report.batches += 1;
            let results = self.admit_batch(&items).await?;
            for (&i, r) in ready.iter().zip(results) {
                match r {
                    Err(e) => report.errors.push((i, e.to_string())),
                    Ok(d) if d.allowed => {
                        report.allowed += 1;
                        on_allowed(i, &sends[i], &d);
                    }
                    Ok(d) => match d.retry_after {
                        Some(wait) if Instant::now() + wait < give_up => {
                            *report.resubmitted.entry(i).or_default() += 1;
                            queue.insert((Instant::now() + wait, i), ());
                        }
                        Some(_) => report.deferred.push((i, d)),
                        None => report.denied.push((i, d)),
                    },
                }
            }
        }
        Ok(report)
    }
}

/// Settings of [`Client::campaign`].
#[derive(Debug, Clone)]
pub struct CampaignOptions {
    /// Items per `AdmitBatch` call (1..=1000).
    pub batch_size: usize,
    /// Denied items are re-submitted only while their retry time falls
    /// within this time from the start; later ones are returned deferred.
    pub give_up_after: Duration,
}

impl Default for CampaignOptions {
    fn default() -> Self {
        CampaignOptions {
            batch_size: 500,
            give_up_after: Duration::from_secs(60),
        }
    }
}

/// What a campaign did; items are named by their index in the input.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CampaignReport {
    /// Items allowed (and handed to the callback).
    pub allowed: usize,
    /// Denied for good (no retry time).
    pub denied: Vec<(usize, Decision)>,
    /// Still denied; their retry time is past `give_up_after`.
    pub deferred: Vec<(usize, Decision)>,
    /// Items refused as invalid, with the reason.
    pub errors: Vec<(usize, String)>,
    /// How often each re-submitted item was re-submitted.
    pub resubmitted: BTreeMap<usize, u32>,
    /// `AdmitBatch` calls made.
    pub batches: usize,
}
