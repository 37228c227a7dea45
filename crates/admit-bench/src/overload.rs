//! Open-loop load: calls started on a fixed schedule whatever the server
//! answers, for the overload scenarios (issue 11, "Overload").
//!
//! A closed loop (each caller waits for its answer before the next call)
//! slows down with the server and so never overloads it; here a dispatcher
//! starts `rate` calls a second, each on its own task. Latency is measured
//! from the time the call was *due*, not when it went out, so a generator
//! falling behind shows up as latency instead of hiding it. Answers are
//! split into admitted (OK) and refused (by code, and whether the refusal
//! carried the server's `retry-after-ms` hint). Calls the generator could
//! not even start (more than [`MAX_OUTSTANDING`] waiting) are counted
//! apart: a run with many of them measured the generator, not the server.
//!
//! May import: tonic's `Status`, hdrhistogram, tokio; nothing of admit but
//! what the caller closure does.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

/// Calls in flight at most; beyond it a due call is not started.
pub const MAX_OUTSTANDING: usize = 20_000;

/// The dispatcher's step: calls due within one step go out together.
const STEP: Duration = Duration::from_millis(1);

/// What an open-loop run saw.
pub struct OpenLoop {
    pub name: String,
    pub offered: u64,
    pub elapsed: Duration,
    pub ok: Histogram<u64>,
    pub refused: Histogram<u64>,
    /// Refusals by gRPC code, and how many of them carried a retry hint.
    pub codes: BTreeMap<String, (u64, u64)>,
    /// Calls not started: the generator had `MAX_OUTSTANDING` waiting.
    pub not_started: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("bounds")
}

impl OpenLoop {
    pub fn ok_per_sec(&self) -> f64 {
        self.ok.len() as f64 / self.elapsed.as_secs_f64()
    }
    /// Latency quantile of admitted calls, ms.
    pub fn ok_ms(&self, q: f64) -> f64 {
        self.ok.value_at_quantile(q) as f64 / 1_000.0
    }
    /// Latency quantile of refused calls, ms.
    pub fn refused_ms(&self, q: f64) -> f64 {
        self.refused.value_at_quantile(q) as f64 / 1_000.0
    }

    pub fn print(&self) {
        let refused: u64 = self.codes.values().map(|c| c.0).sum();
        let hinted: u64 = self.codes.values().map(|c| c.1).sum();
        println!(
            "{}: offered {:.0}/s for {:.1} s; admitted {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms; \
             refused {} (p99 {:.2} ms, {} with a retry hint) {:?}; not started {}",
            self.name,
            self.offered as f64 / self.elapsed.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            self.ok_per_sec(),
            self.ok_ms(0.5),
            self.ok_ms(0.99),
            self.ok_ms(0.999),
            refused,
            self.refused_ms(0.99),
            hinted,
            self.codes,
            self.not_started,
        );
    }
}

/// Starts `rate` calls a second for `dur`; call `i` is `call(i)`. Returns
/// once every started call has answered.
pub async fn run<F, Fut>(name: &str, rate: f64, dur: Duration, call: F) -> OpenLoop
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    struct Seen {
        ok: Histogram<u64>,
        refused: Histogram<u64>,
        codes: BTreeMap<String, (u64, u64)>,
    }
    let seen = Arc::new(Mutex::new(Seen {
        ok: hist(),
        refused: hist(),
        codes: BTreeMap::new(),
    }));
    let slots = Arc::new(Semaphore::new(MAX_OUTSTANDING));
    let call = Arc::new(call);
    let start = Instant::now();
    let rate = rate.max(1.0);
    let (mut i, mut not_started) = (0u64, 0u64);
    let mut tick = tokio::time::interval(STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= start + dur {
            break;
        }
        // every call due by now
        loop {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            if due > now {
                break;
            }
            i += 1;
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                not_started += 1;
                continue;
            };
            let (call, seen) = (call.clone(), seen.clone());
            tokio::spawn(async move {
                let r = call(i).await;
                let us = due.elapsed().as_micros() as u64;
                let mut s = lock(&seen);
                match r {
                    Ok(()) => {
                        let _ = s.ok.record(us.max(1));
                    }
                    Err(e) => {
                        let _ = s.refused.record(us.max(1));
                        let hint = e.metadata().get("retry-after-ms").is_some();
                        let c = s.codes.entry(format!("{:?}", e.code())).or_default();
                        c.0 += 1;
                        c.1 += u64::from(hint);
                    }
                }
                // the slot last: the run's end waits for every slot
                drop(s);
                drop(seen);
                drop(slot);
            });
        }
    }
    let elapsed = start.elapsed();
    // wait for the calls still out
    let _ = slots.acquire_many(MAX_OUTSTANDING as u32).await;
    let s = std::mem::replace(
        &mut *lock(&seen),
        Seen {
            ok: hist(),
            refused: hist(),
            codes: BTreeMap::new(),
        },
    );
    OpenLoop {
        name: name.to_owned(),
        offered: i,
        elapsed,
        ok: s.ok,
        refused: s.refused,
        codes: s.codes,
        not_started,
    }
}
