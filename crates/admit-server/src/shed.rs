//! Early refusal under overload (R8.4, docs/rules.md; issue 11): when the
//! node runs late, new sends are refused before their body is decoded.
//!
//! Why lateness and not a count: on a node short of CPU the queue forms
//! ahead of admit's handlers (in HTTP/2 connections, socket buffers and
//! tasks polled late), so the in-flight bound of [`crate::protect`] never
//! sees it; measured, fewer than 64 calls were ever inside the handlers
//! while callers waited seconds. What the queue does show is delay: a call
//! handed over by its connection waits in the runtime's run queue before
//! it is first polled. That wait (the call's *sojourn*) is measured on
//! every call; when it passes the limit, the node is behind.
//!
//! The rule, close to CoDel's: a call whose sojourn passed the limit, while
//! at least [`MIN_BUSY`] calls are under way, is refused at its first poll
//! (its body never decoded) and marks the node late for one limit's time; a
//! call arriving while the node is marked late is refused at once, in the
//! connection task. The busy floor keeps a node that the OS merely paused
//! (a loaded host, a CPU-limited pod between quota periods) from refusing
//! the few calls of a quiet moment. Refused calls get
//! UNAVAILABLE with a `retry-after-ms` hint, and nothing was applied, so
//! any retry is safe. A refusal costs a small part of an answered call, so
//! a node offered twice what it can answer clears its queue by refusing
//! and answers the rest at the latency of a short queue.
//!
//! Only the `AdmitSend` service is shed: health checks, reflection, the
//! admin and cluster services must get through an overload (a probe that
//! fails under load gets the pod restarted; an operator must still act).
//!
//! Runs on the monotonic clock (it protects the process), with no state
//! but two atomics. May import: http, tower, tonic (the status), tokio's
//! `Instant` via std.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::ApiError;

/// admitd's default limit: a send waits far less than this to be polled on
/// a node that keeps up, even a CPU-limited one between quota periods.
pub const DEFAULT_SHED_WHEN_LATE: Duration = Duration::from_millis(50);

/// The paths that may be shed: the hot path's service.
const SHED_PREFIX: &str = "/admit.v1.AdmitSend/";

/// Calls under way (handed to the service, not yet answered) below which
/// nothing is refused: a handful of late calls is a pause, not a queue.
pub const MIN_BUSY: u64 = 16;

/// The node's lateness, shared by every connection of the API port.
#[derive(Debug)]
pub struct Lateness {
    limit_us: u64,
    /// Calls of the shed service handed to it and not yet answered.
    busy: AtomicU64,
    /// Microseconds since [`epoch`] until which the node counts as late.
    late_until_us: AtomicU64,
    /// The retry hint given with a refusal.
    retry_ms: u64,
}

/// The process's reference instant for the atomics above.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn micros(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_micros() as u64
}

impl Lateness {
    /// A node counts as late once a call waited `limit` before its first
    /// poll (zero: every call while busy, for tests).
    pub fn new(limit: Duration) -> Arc<Lateness> {
        let _ = epoch();
        let limit_us = limit.as_micros() as u64;
        Arc::new(Lateness {
            limit_us,
            busy: AtomicU64::new(0),
            late_until_us: AtomicU64::new(0),
            // the queue that made the node late drains in about one limit
            retry_ms: (limit_us / 1_000).clamp(5, 1_000),
        })
    }

    /// Whether a call arriving at `now` is refused at once.
    fn late_at(&self, now: Instant) -> bool {
        micros(now) < self.late_until_us.load(Ordering::Relaxed)
    }

    /// A call handed over at `arrived` is first polled at `now`: whether it
    /// is refused (it waited past the limit; the node is then marked late
    /// for one limit's time).
    fn waited_too_long(&self, arrived: Instant, now: Instant, busy: u64) -> bool {
        let waited = micros(now).saturating_sub(micros(arrived));
        if waited < self.limit_us || busy < MIN_BUSY {
            return false;
        }
        self.late_until_us
            .fetch_max(micros(now) + self.limit_us, Ordering::Relaxed);
        true
    }

    fn refusal<RB: Default>(&self, why: &'static str) -> http::Response<RB> {
        crate::telemetry::shed("late");
        ApiError::unavailable(why, self.retry_ms)
            .into_status()
            .into_http()
    }
}

/// One call under way: counted in [`Lateness::busy`] until dropped.
struct Busy(Arc<Lateness>);

impl Busy {
    fn enter(l: &Arc<Lateness>) -> (Busy, u64) {
        let n = l.busy.fetch_add(1, Ordering::Relaxed) + 1;
        (Busy(l.clone()), n)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

const LATE: &str = "overloaded: this node is running behind, retry later";

/// The tower layer of the API port (absent when shedding is off).
#[derive(Clone, Debug)]
pub struct ShedLayer {
    late: Option<Arc<Lateness>>,
}

impl ShedLayer {
    pub fn new(late: Option<Arc<Lateness>>) -> ShedLayer {
        ShedLayer { late }
    }
}

impl<S> tower::Layer<S> for ShedLayer {
    type Service = Shed<S>;
    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            late: self.late.clone(),
            inner,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Shed<S> {
    late: Option<Arc<Lateness>>,
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Shed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let late = match &self.late {
            Some(l) if req.uri().path().starts_with(SHED_PREFIX) => l.clone(),
            _ => return Box::pin(self.inner.call(req)),
        };
        let arrived = Instant::now();
        if late.late_at(arrived) {
            let r = late.refusal(LATE);
            return Box::pin(async move { Ok(r) });
        }
        // Created now, polled (and so decoded) only if the call did not
        // wait too long in the run queue.
        let (busy, n) = Busy::enter(&late);
        let fut = self.inner.call(req);
        Box::pin(async move {
            if late.waited_too_long(arrived, Instant::now(), n) {
                drop(fut);
                return Ok(late.refusal(LATE));
            }
            let r = fut.await;
            drop(busy);
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_call_that_waited_up_to_the_limit_is_served_and_one_past_it_is_refused() {
        let l = Lateness::new(Duration::from_millis(20));
        let t = Instant::now();
        // 1 ms under the limit: served, and the node is not marked late
        assert!(!l.waited_too_long(t, at(t, 19), MIN_BUSY));
        assert!(!l.late_at(at(t, 19)));
        // at the limit: refused
        assert!(l.waited_too_long(t, at(t, 20), MIN_BUSY));
    }

    #[test]
    fn a_late_call_among_fewer_than_the_busy_floor_is_a_pause_and_served() {
        let l = Lateness::new(Duration::from_millis(20));
        let t = Instant::now();
        assert!(!l.waited_too_long(t, at(t, 500), MIN_BUSY - 1));
        assert!(!l.late_at(at(t, 500)));
        assert!(l.waited_too_long(t, at(t, 500), MIN_BUSY));
    }

    #[test]
    fn a_late_call_marks_the_node_late_for_one_limit() {
        let l = Lateness::new(Duration::from_millis(20));
        let t = Instant::now();
        assert!(l.waited_too_long(t, at(t, 30), MIN_BUSY));
        // refused on arrival until 30 + 20 ms, served from then on
        assert!(l.late_at(at(t, 30)));
        assert!(l.late_at(at(t, 49)));
        assert!(!l.late_at(at(t, 50)));
        // a later lateness extends the mark, an earlier one never shortens it
        assert!(l.waited_too_long(at(t, 40), at(t, 70), MIN_BUSY));
        assert!(l.late_at(at(t, 89)));
        assert!(l.waited_too_long(t, at(t, 25), MIN_BUSY));
        assert!(l.late_at(at(t, 89)));
        assert!(!l.late_at(at(t, 90)));
    }

    #[test]
    fn a_refusal_is_unavailable_with_a_retry_hint() {
        let l = Lateness::new(Duration::from_millis(20));
        let r: http::Response<()> = l.refusal(LATE);
        let h = r.headers();
        assert_eq!(h.get("grpc-status").unwrap(), "14");
        assert_eq!(h.get(crate::error::RETRY_AFTER_MS).unwrap(), "20");
    }

    /// A service that counts the calls made to it and the futures polled.
    #[derive(Clone, Default)]
    struct Counting {
        calls: Arc<AtomicU64>,
        polled: Arc<AtomicU64>,
    }

    impl tower::Service<http::Request<()>> for Counting {
        type Response = http::Response<()>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<http::Response<()>, Self::Error>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let polled = self.polled.clone();
            Box::pin(async move {
                polled.fetch_add(1, Ordering::Relaxed);
                Ok(http::Response::new(()))
            })
        }
    }

    fn req(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    fn status(r: &http::Response<()>) -> Option<&str> {
        r.headers().get("grpc-status").and_then(|v| v.to_str().ok())
    }

    const SEND: &str = "/admit.v1.AdmitSend/Admit";
    const HEALTH: &str = "/grpc.health.v1.Health/Check";

    #[tokio::test]
    async fn a_busy_node_refuses_a_late_send_undecoded_then_new_sends_at_once_but_never_health() {
        use tower::{Layer, Service};
        let limit = Duration::from_millis(200);
        let inner = Counting::default();
        let mut svc = ShedLayer::new(Some(Lateness::new(limit))).layer(inner.clone());
        // MIN_BUSY sends under way, none polled yet
        let mut waiting: Vec<_> = (0..MIN_BUSY).map(|_| svc.call(req(SEND))).collect();
        tokio::time::sleep(limit + Duration::from_millis(50)).await;
        // the last one waited past the limit with MIN_BUSY under way: refused,
        // and its inner future (the body's decoding) never polled
        let r = waiting.pop().unwrap().await.unwrap();
        assert_eq!(status(&r), Some("14"));
        assert!(r.headers().get(crate::error::RETRY_AFTER_MS).is_some());
        assert_eq!(inner.polled.load(Ordering::Relaxed), 0);
        // the node is now marked late: a new send is refused in `call`,
        // before the service is even called
        let calls = inner.calls.load(Ordering::Relaxed);
        let r = svc.call(req(SEND)).await.unwrap();
        assert_eq!(status(&r), Some("14"));
        assert_eq!(inner.calls.load(Ordering::Relaxed), calls);
        // a health check gets through a late node
        let r = svc.call(req(HEALTH)).await.unwrap();
        assert_eq!(status(&r), None);
        assert_eq!(inner.polled.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_late_send_with_few_under_way_or_shedding_off_is_served() {
        use tower::{Layer, Service};
        let limit = Duration::from_millis(50);
        for late in [Some(Lateness::new(limit)), None] {
            let inner = Counting::default();
            let mut svc = ShedLayer::new(late).layer(inner.clone());
            let waiting: Vec<_> = (0..MIN_BUSY - 1).map(|_| svc.call(req(SEND))).collect();
            tokio::time::sleep(limit * 2).await;
            for f in waiting {
                assert_eq!(status(&f.await.unwrap()), None);
            }
            assert_eq!(inner.polled.load(Ordering::Relaxed), MIN_BUSY - 1);
        }
    }
}
