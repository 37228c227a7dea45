//! Self-protection (R8.4, docs/rules.md): a bound on requests in flight (UNAVAILABLE
//! when exceeded, nothing queues) and an optional per-caller request-rate
//! quota (RESOURCE_EXHAUSTED). Both carry a `retry-after-ms` hint.
//!
//! These protect the process, so they run on the monotonic wall clock, not
//! on the service clock that the rules use.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// The metadata key naming the caller for quotas when auth is off (with
/// auth on, the authenticated caller's name is the key and this header is
/// ignored).
pub const CALLER_HEADER: &str = "x-admit-caller";

/// A per-caller quota: `rate` requests per second sustained, bursts of `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quota {
    pub rate: f64,
    pub burst: f64,
}

#[derive(Debug)]
pub struct Protect {
    in_flight: Arc<Semaphore>,
    retry_ms: u64,
    quota: Option<Quota>,
    /// caller -> (tokens, last refill)
    buckets: DashMap<String, (f64, Instant)>,
}

/// Held for the life of one request.
#[derive(Debug)]
pub struct Permit {
    _permit: OwnedSemaphorePermit,
}

impl Protect {
    pub fn new(max_in_flight: usize, quota: Option<Quota>) -> Protect {
        Protect {
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            retry_ms: 50,
            quota,
            buckets: DashMap::new(),
        }
    }

    /// Admits one request into the server, or refuses it at once. The
    /// quota is charged to `authenticated` when auth named the caller, else
    /// to the caller the header names.
    pub fn enter<T>(
        &self,
        req: &tonic::Request<T>,
        authenticated: Option<&str>,
    ) -> Result<Permit, ApiError> {
        if let Some(q) = self.quota {
            let caller = authenticated.unwrap_or_else(|| {
                req.metadata()
                    .get(CALLER_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("anonymous")
            });
            self.charge(caller, q)
                .inspect_err(|_| crate::telemetry::shed("caller_quota"))?;
        }
        self.in_flight()
    }

    /// Admits one request another node relayed here into the same in-flight
    /// bound as the API's (the entry node charged the caller's quota): a
    /// leader's load is bounded whichever node its requests entered by.
    pub fn enter_relayed(&self) -> Result<Permit, ApiError> {
        self.in_flight()
    }

    /// Test helper: takes every free in-flight permit (the node is then
    /// as loaded as its bound allows) until the permit is dropped.
    #[doc(hidden)]
    pub fn hold_all(&self) -> Option<Permit> {
        let n = u32::try_from(self.in_flight.available_permits()).ok()?;
        let permit = self.in_flight.clone().try_acquire_many_owned(n).ok()?;
        Some(Permit { _permit: permit })
    }

    fn in_flight(&self) -> Result<Permit, ApiError> {
        let permit = self.in_flight.clone().try_acquire_owned().map_err(|_| {
            crate::telemetry::shed("in_flight");
            ApiError::unavailable(
                "overloaded: too many requests in flight, retry later",
                self.retry_ms,
            )
        })?;
        Ok(Permit { _permit: permit })
    }

    fn charge(&self, caller: &str, q: Quota) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut b = self
            .buckets
            .entry(caller.to_owned())
            .or_insert((q.burst, now));
        let (tokens, last) = *b;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * q.rate).min(q.burst);
        if tokens >= 1.0 {
            *b = (tokens - 1.0, now);
            return Ok(());
        }
        *b = (tokens, now);
        let wait = Duration::from_secs_f64((1.0 - tokens) / q.rate.max(1e-9));
        Err(ApiError::ResourceExhausted {
            message: format!("caller {caller:?} is over its request-rate quota"),
            retry_after_ms: (wait.as_millis() as u64).max(1),
        })
    }

    /// Forgets callers whose bucket is full again.
    pub fn sweep(&self) {
        if let Some(q) = self.quota {
            let now = Instant::now();
            self.buckets.retain(|_, (t, last)| {
                *t + now.duration_since(*last).as_secs_f64() * q.rate < q.burst
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_bound_refuses_instead_of_queueing() {
        let p = Protect::new(2, None);
        let r = tonic::Request::new(());
        let a = p.enter(&r, None).unwrap();
        let _b = p.enter(&r, None).unwrap();
        let e = p.enter(&r, None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        drop(a);
        assert!(p.enter(&r, None).is_ok());
    }

    #[test]
    fn quota_per_caller() {
        let p = Protect::new(
            100,
            Some(Quota {
                rate: 1.0,
                burst: 2.0,
            }),
        );
        let mut r = tonic::Request::new(());
        r.metadata_mut().insert(CALLER_HEADER, "a".parse().unwrap());
        assert!(p.enter(&r, None).is_ok());
        assert!(p.enter(&r, None).is_ok());
        let e = p.enter(&r, None).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        let mut other = tonic::Request::new(());
        other
            .metadata_mut()
            .insert(CALLER_HEADER, "b".parse().unwrap());
        assert!(p.enter(&other, None).is_ok());
    }
}
