//! When to retry and how long to wait: jittered exponential back-off that
//! never undercuts the server's `retry-after-ms`, and a client-wide retry
//! budget. Pure arithmetic plus a mutex; imports nothing of the workspace.

use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

/// Retry settings of a [`Client`](crate::Client).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (leader redirects count too).
    pub max_attempts: u32,
    /// First back-off step; doubled at each retry.
    pub base: Duration,
    /// Largest back-off step (before jitter).
    pub max_backoff: Duration,
    /// Retry tokens the budget holds at most (and starts with). Each retry
    /// spends one; a call that succeeds at its first attempt gives back
    /// `refill_per_success`. 0 turns retries off.
    pub budget: f64,
    /// Tokens a first-attempt success returns to the budget.
    pub refill_per_success: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(25),
            max_backoff: Duration::from_secs(2),
            budget: 20.0,
            refill_per_success: 0.1,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): full jitter over the
    /// exponential step, but never less than the server's hint.
    pub fn wait(&self, retry: u32, server_hint: Option<Duration>) -> Duration {
        let step = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let jitter = rand::rng().random_range(0..=step.as_millis() as u64);
        match server_hint {
            // the hint is a floor; a little jitter on top spreads the herd
            Some(h) => h + Duration::from_millis(jitter / 4),
            None => Duration::from_millis(jitter),
        }
    }
}

/// The client-wide retry budget: a bucket of tokens (see [`RetryPolicy`]).
#[derive(Debug)]
pub(crate) struct Budget {
    tokens: Mutex<f64>,
    max: f64,
    refill: f64,
}

impl Budget {
    pub(crate) fn new(p: &RetryPolicy) -> Budget {
        Budget {
            tokens: Mutex::new(p.budget.max(0.0)),
            max: p.budget.max(0.0),
            refill: p.refill_per_success.max(0.0),
        }
    }

    /// Takes one token for a retry; false when none is left.
    pub(crate) fn try_spend(&self) -> bool {
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if *t >= 1.0 {
            *t -= 1.0;
            true
        } else {
            false
        }
    }

    pub(crate) fn on_success(&self) {
        let mut t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        *t = (*t + self.refill).min(self.max);
    }

    pub(crate) fn left(&self) -> f64 {
        *self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_never_undercuts_the_server_hint() {
        let p = RetryPolicy::default();
        for r in 1..10 {
            let hint = Duration::from_millis(300);
            assert!(p.wait(r, Some(hint)) >= hint);
            assert!(p.wait(r, None) <= p.max_backoff);
        }
    }

    #[test]
    fn the_budget_runs_out_and_refills() {
        let b = Budget::new(&RetryPolicy {
            budget: 1.0,
            refill_per_success: 0.5,
            ..Default::default()
        });
        assert!(b.try_spend());
        assert!(!b.try_spend());
        b.on_success();
        b.on_success();
        assert!(b.try_spend());
    }
}
