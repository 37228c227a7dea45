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
//! A second rule bounds the calls under way by what the node answers: a
//! call arrives to find `busy` calls handed over and not yet answered; at
//! the best rate the node answered lately (calls per second, decaying
//! slowly), they take `busy / rate` to clear. Past the limit's worth
//! (never below [`MIN_BUDGET`], so a burst after a quiet time is served),
//! the call is refused on arrival. This catches what the first rule
//! misses: the runtime polls the task it spawned last first, so under a
//! long queue the newest calls look prompt while older ones starve.
//!
//! **Calls parked for a leader are not busy.** A call that waits in
//! routing for a shard's leader (the backoff between attempts while a
//! shard fails over, `routing::retry`) uses no CPU here; counted
//! as under way, a failover under heavy load would fill the budget with
//! such calls and refuse sends to healthy shards. The shed layer runs each
//! call with its [`Lateness`] as a task-local, and [`parked`] takes the
//! call out of the count used by both rules while it waits (the call
//! itself is still answered, and counted in the rate, as before).
//!
//! Only the `AdmitSend` service is shed: health checks, reflection, the
//! admin and cluster services must get through an overload (a probe that
//! fails under load gets the pod restarted; an operator must still act).
//!
//! Runs on the monotonic clock (it protects the process), with no state
//! but a few atomics. May import: http, tower, tonic (the status), std's
//! `Instant`, tokio's task-locals (the call being served).

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

/// The bound on calls under way is never below this many.
pub const MIN_BUDGET: u64 = 256;

/// How often the answer rate is measured.
const RATE_EVERY_US: u64 = 100_000;

/// The calls under way allowed when the node answers `peak` calls a second
/// at best lately: what it answers within the limit.
fn budget_for(peak_per_s: u64, limit_us: u64) -> u64 {
    (peak_per_s.saturating_mul(limit_us) / 1_000_000).max(MIN_BUDGET)
}

/// The best recent rate after a measurement of `rate`: a higher rate at
/// once, a lower one by 1/64 per measurement (half in about 4.5 s), so a
/// lull does not shrink the bound before the next burst.
fn next_peak(peak: u64, rate: u64) -> u64 {
    rate.max(peak - peak / 64)
}

/// The node's lateness, shared by every connection of the API port.
#[derive(Debug)]
pub struct Lateness {
    limit_us: u64,
    /// Calls answered by the service (not refused here).
    answered: AtomicU64,
    /// When the rate was last measured, and `answered` then.
    rate_at_us: AtomicU64,
    answered_then: AtomicU64,
    peak_per_s: AtomicU64,
    /// The bound on calls under way: [`budget_for`] the peak rate.
    budget: AtomicU64,
    /// Calls of the shed service handed to it and not yet answered.
    busy: AtomicU64,
    /// Those of them parked waiting for a shard's leader ([`parked`]).
    parked: AtomicU64,
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
            parked: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            rate_at_us: AtomicU64::new(0),
            answered_then: AtomicU64::new(0),
            peak_per_s: AtomicU64::new(0),
            budget: AtomicU64::new(MIN_BUDGET),
            late_until_us: AtomicU64::new(0),
            // the queue that made the node late drains in about one limit
            retry_ms: (limit_us / 1_000).clamp(5, 1_000),
        })
    }

    /// Measures the answer rate if it is due (one caller does; the others
    /// go on) and sets the bound on calls under way from it.
    fn measure(&self, now_us: u64) {
        let at = self.rate_at_us.load(Ordering::Relaxed);
        if now_us < at.saturating_add(RATE_EVERY_US) {
            return;
        }
        if self
            .rate_at_us
            .compare_exchange(at, now_us, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let done = self.answered.load(Ordering::Relaxed);
        let then = self.answered_then.swap(done, Ordering::Relaxed);
        let rate = done.saturating_sub(then).saturating_mul(1_000_000) / (now_us - at).max(1);
        let peak = next_peak(self.peak_per_s.load(Ordering::Relaxed), rate);
        self.peak_per_s.store(peak, Ordering::Relaxed);
        self.budget
            .store(budget_for(peak, self.limit_us), Ordering::Relaxed);
    }

    /// Whether the calls under way are already more than the node answers
    /// within the limit.
    fn over_budget(&self) -> bool {
        self.working() >= self.budget.load(Ordering::Relaxed)
    }

    /// Calls under way that are not parked waiting for a leader. The two
    /// counts are read apart, so the difference may be off by a call or
    /// two for a moment (never below zero).
    fn working(&self) -> u64 {
        let parked = self.parked.load(Ordering::Relaxed);
        self.busy.load(Ordering::Relaxed).saturating_sub(parked)
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

    /// A refusal with its retry hint, counted under `cause` (`late`: the
    /// sojourn rule, `busy`: the bound on calls under way).
    fn refusal<RB: Default>(&self, why: &'static str, cause: &'static str) -> http::Response<RB> {
        crate::telemetry::shed(cause);
        ApiError::unavailable(why, self.retry_ms)
            .into_status()
            .into_http()
    }
}

/// One call under way: counted in [`Lateness::busy`] until dropped.
struct Busy(Arc<Lateness>);

impl Busy {
    /// Counts a call in; also returns the calls now under way and not
    /// parked (this one included).
    fn enter(l: &Arc<Lateness>) -> (Busy, u64) {
        l.busy.fetch_add(1, Ordering::Relaxed);
        (Busy(l.clone()), l.working())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

tokio::task_local! {
    /// The lateness of the shed call this task serves (absent outside one:
    /// other services, relayed calls, background work).
    static CALL: Arc<Lateness>;
}

/// A shed call parked waiting for a shard's leader: out of the busy count
/// that the budget and sojourn rules read until dropped.
struct Parked(Arc<Lateness>);

impl Parked {
    fn enter() -> Option<Parked> {
        let l = CALL.try_with(Arc::clone).ok()?;
        l.parked.fetch_add(1, Ordering::Relaxed);
        Some(Parked(l))
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs `wait`, a wait for a shard's leader (no CPU used here), with the
/// shed call it belongs to (if any) out of the busy count: a failover must
/// not fill the budget and refuse sends to healthy shards.
pub(crate) async fn parked<F: Future>(wait: F) -> F::Output {
    let _parked = Parked::enter();
    wait.await
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
        late.measure(micros(arrived));
        let cause = if late.late_at(arrived) {
            Some("late")
        } else if late.over_budget() {
            Some("busy")
        } else {
            None
        };
        if let Some(cause) = cause {
            let r = late.refusal(LATE, cause);
            return Box::pin(async move { Ok(r) });
        }
        // Created now, polled (and so decoded) only if the call did not
        // wait too long in the run queue.
        let (busy, n) = Busy::enter(&late);
        // the handler may park the call while it waits for a leader
        let fut = CALL.scope(late.clone(), self.inner.call(req));
        Box::pin(async move {
            if late.waited_too_long(arrived, Instant::now(), n) {
                drop(fut);
                return Ok(late.refusal(LATE, "late"));
            }
            let r = fut.await;
            late.answered.fetch_add(1, Ordering::Relaxed);
            drop(busy);
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

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
    fn the_bound_on_calls_under_way_is_what_the_node_answers_within_the_limit() {
        // 20,000 answers/s and a 50 ms limit: 1,000 calls
        assert_eq!(budget_for(20_000, 50_000), 1_000);
        // never below the floor
        assert_eq!(budget_for(4_000, 50_000), MIN_BUDGET);
        assert_eq!(budget_for(0, 50_000), MIN_BUDGET);
        // the peak follows a rise at once and a fall slowly
        assert_eq!(next_peak(1_000, 5_000), 5_000);
        assert_eq!(next_peak(6_400, 0), 6_300);
    }

    #[test]
    fn the_rate_is_measured_every_100_ms_from_the_answers() {
        let l = Lateness::new(Duration::from_millis(50));
        l.measure(RATE_EVERY_US);
        l.answered.store(4_000, Ordering::Relaxed);
        // 99.999 ms later: not yet
        l.measure(2 * RATE_EVERY_US - 1);
        assert_eq!(l.peak_per_s.load(Ordering::Relaxed), 0);
        // 100 ms later: 4,000 answers in 0.1 s
        l.measure(2 * RATE_EVERY_US);
        assert_eq!(l.peak_per_s.load(Ordering::Relaxed), 40_000);
        assert_eq!(l.budget.load(Ordering::Relaxed), 2_000);
        l.busy.store(1_999, Ordering::Relaxed);
        assert!(!l.over_budget());
        l.busy.store(2_000, Ordering::Relaxed);
        assert!(l.over_budget());
    }

    #[test]
    fn a_refusal_is_unavailable_with_a_retry_hint() {
        let l = Lateness::new(Duration::from_millis(20));
        let r: http::Response<()> = l.refusal(LATE, "late");
        let h = r.headers();
        assert_eq!(h.get("grpc-status").unwrap(), "14");
        assert_eq!(h.get(crate::error::RETRY_AFTER_MS).unwrap(), "20");
    }

    type Answer = Pin<Box<dyn Future<Output = Result<http::Response<()>, Infallible>> + Send>>;

    /// A test service: each call runs `F` (which returns its answer).
    #[derive(Clone)]
    struct Fake<F>(F);

    impl<F: FnMut() -> Answer> tower::Service<http::Request<()>> for Fake<F> {
        type Response = http::Response<()>;
        type Error = Infallible;
        type Future = Answer;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<()>) -> Answer {
            (self.0)()
        }
    }

    /// Counts the calls made to a [`Fake`] and the futures polled.
    #[derive(Clone, Default)]
    struct Counting {
        calls: Arc<AtomicU64>,
        polled: Arc<AtomicU64>,
    }

    impl Counting {
        fn service(&self) -> Fake<impl FnMut() -> Answer + Clone> {
            let c = self.clone();
            Fake(move || -> Answer {
                c.calls.fetch_add(1, Ordering::Relaxed);
                let polled = c.polled.clone();
                Box::pin(async move {
                    polled.fetch_add(1, Ordering::Relaxed);
                    Ok(http::Response::new(()))
                })
            })
        }
    }

    fn req(path: &str) -> http::Request<()> {
        http::Request::builder().uri(path).body(()).unwrap()
    }

    fn status(r: &http::Response<()>) -> Option<&str> {
        r.headers().get("grpc-status").and_then(|v| v.to_str().ok())
    }

    /// Refusals counted under each cause while `f` runs on this thread (a
    /// current-thread test runtime keeps every poll here).
    async fn shed_causes<F: Future>(f: F) -> (F::Output, Vec<(String, u64)>) {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        let rec = DebuggingRecorder::new();
        let snap = rec.snapshotter();
        let out = {
            let _guard = metrics::set_default_local_recorder(&rec);
            f.await
        };
        let mut causes: Vec<(String, u64)> = snap
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(k, ..)| k.key().name() == "admit_shed_total")
            .filter_map(|(k, _, _, v)| match v {
                DebugValue::Counter(n) => {
                    let cause = k.key().labels().find(|l| l.key() == "cause")?;
                    Some((cause.value().to_string(), n))
                }
                _ => None,
            })
            .collect();
        causes.sort();
        (out, causes)
    }

    const SEND: &str = "/admit.v1.AdmitSend/Admit";
    const HEALTH: &str = "/grpc.health.v1.Health/Check";

    #[tokio::test]
    async fn a_busy_node_refuses_a_late_send_undecoded_then_new_sends_at_once_but_never_health() {
        let ((), causes) = shed_causes(late_send_then_new_sends()).await;
        // both refusals are the sojourn rule's
        assert_eq!(causes, [("late".to_string(), 2)]);
    }

    async fn late_send_then_new_sends() {
        use tower::{Layer, Service};
        let limit = Duration::from_millis(200);
        let inner = Counting::default();
        let mut svc = ShedLayer::new(Some(Lateness::new(limit))).layer(inner.service());
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
    async fn a_send_arriving_with_the_budget_under_way_is_refused_uncalled() {
        let ((), causes) = shed_causes(budget_under_way_then_one_more()).await;
        // counted apart from lateness: an operator sees which rule refuses
        assert_eq!(causes, [("busy".to_string(), 1)]);
    }

    async fn budget_under_way_then_one_more() {
        use tower::{Layer, Service};
        let inner = Counting::default();
        // a limit no call reaches here: only the budget refuses
        let mut svc =
            ShedLayer::new(Some(Lateness::new(Duration::from_secs(3_600)))).layer(inner.service());
        let waiting: Vec<_> = (0..MIN_BUDGET).map(|_| svc.call(req(SEND))).collect();
        assert_eq!(inner.calls.load(Ordering::Relaxed), MIN_BUDGET);
        let r = svc.call(req(SEND)).await.unwrap();
        assert_eq!(status(&r), Some("14"));
        assert_eq!(inner.calls.load(Ordering::Relaxed), MIN_BUDGET);
        // health is never refused; once answered, sends are served again
        assert_eq!(status(&svc.call(req(HEALTH)).await.unwrap()), None);
        for f in waiting {
            assert_eq!(status(&f.await.unwrap()), None);
        }
        assert_eq!(status(&svc.call(req(SEND)).await.unwrap()), None);
    }

    /// Calls that park (as routing does while it waits for a shard's
    /// leader) until the leader is back, and count themselves once parked;
    /// once it is back, calls are answered at once.
    #[derive(Clone)]
    struct Parking {
        parked: Arc<AtomicU64>,
        back: tokio::sync::watch::Sender<bool>,
    }

    impl Parking {
        fn service(&self) -> Fake<impl FnMut() -> Answer + Clone> {
            let p = self.clone();
            Fake(move || -> Answer {
                let (count, mut back) = (p.parked.clone(), p.back.subscribe());
                Box::pin(async move {
                    if !*back.borrow() {
                        parked(async {
                            count.fetch_add(1, Ordering::SeqCst);
                            back.wait_for(|b| *b).await.map(drop)
                        })
                        .await
                        .unwrap();
                    }
                    Ok(http::Response::new(()))
                })
            })
        }
    }

    /// Calls parked waiting for a shard's leader (a failover) use no CPU:
    /// with the whole budget of them parked, a new send is still served,
    /// and every one of them is answered once the leader is back.
    #[tokio::test]
    async fn sends_parked_for_a_leader_leave_the_budget_to_new_sends() {
        use tower::{Layer, Service};
        let late = Lateness::new(Duration::from_secs(3_600));
        let inner = Parking {
            parked: Arc::default(),
            back: tokio::sync::watch::channel(false).0,
        };
        let mut svc = ShedLayer::new(Some(late.clone())).layer(inner.service());
        let waiting: Vec<_> = (0..MIN_BUDGET)
            .map(|_| tokio::spawn(svc.call(req(SEND))))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while inner.parked.load(Ordering::SeqCst) < MIN_BUDGET {
            assert!(Instant::now() < deadline, "the calls never parked");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // a new send (to a healthy shard: it does not park) is served
        let healthy = svc.call(req(SEND));
        inner.back.send_replace(true);
        assert_eq!(
            status(&healthy.await.unwrap()),
            None,
            "a send refused while {MIN_BUDGET} calls were parked for a leader"
        );
        assert_eq!(late.parked.load(Ordering::SeqCst), MIN_BUDGET);
        // every parked call is answered, none refused
        for f in waiting {
            assert_eq!(status(&f.await.unwrap().unwrap()), None);
        }
        assert_eq!(late.busy.load(Ordering::SeqCst), 0);
        assert_eq!(late.parked.load(Ordering::SeqCst), 0);
    }

    /// Outside a shed call (another service, a relayed call) parking is a
    /// plain wait, and a parked call that is dropped leaves no count.
    #[tokio::test]
    async fn parking_outside_a_shed_call_or_dropped_leaves_the_counts_as_they_were() {
        assert_eq!(parked(async { 7 }).await, 7);
        let late = Lateness::new(Duration::from_secs(3_600));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let counted = late.clone();
        let call = CALL.scope(late.clone(), async move {
            let _busy = Busy::enter(&counted);
            parked(rx).await
        });
        let task = tokio::spawn(call);
        while late.parked.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!((late.busy.load(Ordering::SeqCst), late.working()), (1, 0));
        task.abort();
        let _ = task.await;
        drop(tx);
        assert_eq!(late.busy.load(Ordering::SeqCst), 0);
        assert_eq!(late.parked.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_late_send_with_few_under_way_or_shedding_off_is_served() {
        use tower::{Layer, Service};
        let limit = Duration::from_millis(50);
        for late in [Some(Lateness::new(limit)), None] {
            let inner = Counting::default();
            let mut svc = ShedLayer::new(late).layer(inner.service());
            let waiting: Vec<_> = (0..MIN_BUSY - 1).map(|_| svc.call(req(SEND))).collect();
            tokio::time::sleep(limit * 2).await;
            for f in waiting {
                assert_eq!(status(&f.await.unwrap()), None);
            }
            assert_eq!(inner.polled.load(Ordering::Relaxed), MIN_BUSY - 1);
        }
    }
}
