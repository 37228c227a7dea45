//! Retrying until the request's deadline: the one backoff schedule every
//! retry loop of the server follows (see [`crate::routing`]: only the entry
//! node retries, and only failures that applied nothing, or unknown outcomes
//! of idempotent requests).

use std::time::Duration;

use super::request::ReqInfo;

/// The backoff before retry `attempt` (1-based): 20 ms doubling to a 250 ms cap.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((10u64 << attempt.min(5)).min(250))
}

/// The attempts of one request, until its deadline.
#[derive(Debug)]
pub struct Retry {
    info: ReqInfo,
    attempt: u32,
}

impl Retry {
    pub fn new(info: ReqInfo) -> Retry {
        Retry { info, attempt: 0 }
    }

    /// Attempts made so far (0 during the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// After a failed attempt: waits the backoff and says `true`, or says
    /// `false` at once when the deadline leaves no room for the wait.
    pub async fn again(&mut self) -> bool {
        self.attempt += 1;
        let wait = backoff(self.attempt);
        if self.info.left() <= wait {
            return false;
        }
        // waiting for a leader (or a reachable one) costs no CPU: not
        // counted as busy by the overload rules (crate::shed)
        crate::shed::parked(tokio::time::sleep(wait)).await;
        crate::telemetry::retried();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) < backoff(3));
        assert_eq!(backoff(30), Duration::from_millis(250));
    }
}
