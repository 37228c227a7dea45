//! Connections and routing: the client's options, one lazily connected
//! channel per node address, the leader learned per number, and the retry
//! loop every call goes through ([`Conn::call`]). Imports tonic, the
//! crate's error and retry modules; no generated service code.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::{connect_failure, leader_addr, not_applied, retry_after, Error};
use crate::retry::{Budget, RetryPolicy};

/// Metadata key the server reads to forbid forwarding (`admit-hops`).
const HOPS_HEADER: &str = "admit-hops";
/// Metadata key naming the caller for the server's request-rate quota.
const CALLER_HEADER: &str = "x-admit-caller";
/// How many numbers' leaders are remembered before the cache starts over.
const LEADER_CACHE_MAX: usize = 100_000;

/// TLS to the nodes (needs the crate feature `tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA that signed the nodes' certificates; the system's
    /// roots are not used.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key, for servers that ask for one.
    pub cert: Option<PathBuf>,
    /// See `cert`.
    pub key: Option<PathBuf>,
    /// The name to check the server certificate against; defaults to the
    /// host of each address.
    pub domain: Option<String>,
}

/// How a [`Client`](crate::Client) connects and retries.
#[derive(Debug, Clone)]
pub struct Options {
    /// The nodes to start from ("host:port" or a URI); any node serves any
    /// request, so one is enough, more survive its loss.
    pub nodes: Vec<String>,
    /// Bound on establishing a connection to one node.
    pub connect_timeout: Duration,
    /// Deadline of one attempt (sent as `grpc-timeout`).
    pub attempt_timeout: Duration,
    /// Deadline of a whole call, its retries and waits included.
    pub call_deadline: Duration,
    pub retry: RetryPolicy,
    /// Bearer token sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Caller name for the server's per-caller quota (`x-admit-caller`).
    pub caller: Option<String>,
    /// TLS; `None` for plain HTTP/2.
    pub tls: Option<TlsOptions>,
    /// Generate an idempotency / event key when the caller gave none, so
    /// that every write can be retried after an unknown outcome. When off,
    /// an unkeyed write whose outcome is unknown fails with
    /// [`Error::UnknownOutcome`].
    pub generate_keys: bool,
    /// Send each call to the leader learned for its number (from
    /// `leader_hint` and the `admit-leader-*` trailers).
    pub follow_leaders: bool,
    /// Ask nodes not to forward (`admit-hops: 2`): a node that does not lead
    /// the shard answers UNAVAILABLE naming the leader, and the client
    /// retries there. Off: nodes forward, and the client still learns.
    pub route_self: bool,
}

impl Options {
    /// Defaults for the given nodes.
    pub fn new<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> Options {
        Options {
            nodes: nodes.into_iter().map(Into::into).collect(),
            connect_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(5),
            call_deadline: Duration::from_secs(15),
            retry: RetryPolicy::default(),
            token: None,
            caller: None,
            tls: None,
            generate_keys: true,
            follow_leaders: true,
            route_self: false,
        }
    }
}

/// Counters of what the client did, for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Attempts sent, first ones included.
    pub attempts: u64,
    /// Retries that spent a budget token.
    pub retries: u64,
    /// Retries at another node named as the leader (no token spent).
    pub redirects: u64,
    /// Budget tokens left.
    pub budget_left: f64,
    /// The server's `retry-after-ms` before the last retry, and the time
    /// the client then waited.
    pub last_hint: Option<Duration>,
    pub last_wait: Option<Duration>,
}

/// What one attempt sends besides its message: deadline and metadata.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    timeout: Duration,
    token: Option<String>,
    caller: Option<String>,
    route_self: bool,
}

impl Meta {
    /// The request for this attempt.
    pub(crate) fn wrap<M>(&self, msg: M) -> tonic::Request<M> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.timeout);
        let md = r.metadata_mut();
        if let Some(t) = &self.token {
            if let Ok(v) = format!("Bearer {t}").parse() {
                md.insert("authorization", v);
            }
        }
        if let Some(c) = self.caller.as_ref().and_then(|c| c.parse().ok()) {
            md.insert(CALLER_HEADER, c);
        }
        if self.route_self {
            md.insert(HOPS_HEADER, "2".parse().expect("ascii"));
        }
        r
    }
}

/// Whether a call may be repeated after an unknown outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Safety {
    /// Reads, keyed writes, idempotent writes.
    Idempotent,
    /// A write without a key.
    Once,
}

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) opts: Options,
    seeds: Vec<String>,
    next_seed: AtomicUsize,
    channels: Mutex<HashMap<String, Channel>>,
    leaders: Mutex<HashMap<String, String>>,
    budget: Budget,
    attempts: AtomicU64,
    retries: AtomicU64,
    redirects: AtomicU64,
    last: Mutex<(Option<Duration>, Option<Duration>)>,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conn {
    pub(crate) fn new(opts: Options) -> Result<Conn, Error> {
        if opts.nodes.is_empty() {
            return Err(Error::Config("no node address given".into()));
        }
        #[cfg(not(feature = "tls"))]
        if opts.tls.is_some() {
            return Err(Error::Config(
                "TLS options given, but admit-client was built without its `tls` feature".into(),
            ));
        }
        #[cfg(feature = "tls")]
        let tls = opts.tls.as_ref().map(tls_config).transpose()?;
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let seeds = opts
            .nodes
            .iter()
            .map(|a| uri(a, scheme))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Conn {
            budget: Budget::new(&opts.retry),
            seeds,
            next_seed: AtomicUsize::new(0),
            channels: Mutex::new(HashMap::new()),
            leaders: Mutex::new(HashMap::new()),
            attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            redirects: AtomicU64::new(0),
            last: Mutex::new((None, None)),
            #[cfg(feature = "tls")]
            tls,
            opts,
        })
    }

    pub(crate) fn stats(&self) -> Stats {
        let (last_hint, last_wait) = *lock(&self.last);
        Stats {
            attempts: self.attempts.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            redirects: self.redirects.load(Ordering::Relaxed),
            budget_left: self.budget.left(),
            last_hint,
            last_wait,
        }
    }

    /// The leader address learned for `number`, if any.
    pub(crate) fn leader_of(&self, number: &str) -> Option<String> {
        lock(&self.leaders).get(number).cloned()
    }

    fn scheme(&self) -> &'static str {
        if self.opts.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn learn(&self, number: &str, addr: &str) {
        if !self.opts.follow_leaders {
            return;
        }
        let Ok(u) = uri(addr, self.scheme()) else {
            return;
        };
        let mut l = lock(&self.leaders);
        if l.len() >= LEADER_CACHE_MAX {
            l.clear();
        }
        l.insert(number.to_owned(), u);
    }

    fn forget(&self, number: &str, addr: &str) {
        let mut l = lock(&self.leaders);
        if l.get(number).is_some_and(|a| a == addr) {
            l.remove(number);
        }
    }

    fn seed(&self) -> String {
        let i = self.next_seed.load(Ordering::Relaxed);
        self.seeds[i % self.seeds.len()].clone()
    }

    fn rotate(&self, failed: &str) {
        let i = self.next_seed.load(Ordering::Relaxed);
        if self.seeds[i % self.seeds.len()] == failed {
            self.next_seed.store(i.wrapping_add(1), Ordering::Relaxed);
        }
    }

    fn pick(&self, route: Option<&str>) -> String {
        route
            .filter(|_| self.opts.follow_leaders)
            .and_then(|n| self.leader_of(n))
            .unwrap_or_else(|| self.seed())
    }

    fn channel(&self, addr: &str) -> Result<Channel, Error> {
        if let Some(c) = lock(&self.channels).get(addr) {
            return Ok(c.clone());
        }
        let ep = Endpoint::from_shared(addr.to_owned())
            .map_err(|e| Error::Config(format!("node address {addr:?}: {e}")))?
            .connect_timeout(self.opts.connect_timeout)
            .tcp_nodelay(true);
        #[cfg(feature = "tls")]
        let ep = match &self.tls {
            Some(t) => ep
                .tls_config(t.clone())
                .map_err(|e| Error::Config(format!("TLS for {addr}: {e}")))?,
            None => ep,
        };
        let ch = ep.connect_lazy();
        lock(&self.channels).insert(addr.to_owned(), ch.clone());
        Ok(ch)
    }

    /// Runs one call: picks the node (the learned leader of `route`'s
    /// number, else a seed), sets the attempt's deadline and metadata, and
    /// retries what may be retried (see the crate docs) until it succeeds,
    /// the attempts, the budget or the call's deadline run out.
    pub(crate) async fn call<R, F, Fut>(
        &self,
        route: Option<&str>,
        safety: Safety,
        hint_of: impl Fn(&R) -> Option<String>,
        mut attempt: F,
    ) -> Result<R, Error>
    where
        F: FnMut(Channel, Meta) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        let started = Instant::now();
        let deadline = started + self.opts.call_deadline;
        let policy = &self.opts.retry;
        let mut n = 0u32;
        let mut retries = 0u32;
        loop {
            n += 1;
            let addr = self.pick(route);
            let ch = self.channel(&addr)?;
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = self.opts.attempt_timeout.min(left);
            let meta = Meta {
                timeout,
                token: self.opts.token.clone(),
                caller: self.opts.caller.clone(),
                route_self: self.opts.route_self,
            };
            self.attempts.fetch_add(1, Ordering::Relaxed);
            let res = match tokio::time::timeout(timeout, attempt(ch, meta)).await {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded("attempt timed out")),
            };
            let s = match res {
                Ok(resp) => {
                    if let (Some(num), Some(h)) = (route, hint_of(resp.get_ref())) {
                        self.learn(num, &h);
                    }
                    if n == 1 {
                        self.budget.on_success();
                    }
                    return Ok(resp.into_inner());
                }
                Err(s) => s,
            };
            let applied_maybe = match s.code() {
                Code::ResourceExhausted => false,
                Code::Unavailable => !(not_applied(&s) || connect_failure(&s)),
                Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => true,
                _ => return Err(Error::from_status(&s)),
            };
            if applied_maybe && safety == Safety::Once {
                return Err(Error::UnknownOutcome(s.message().to_owned()));
            }
            let leader = leader_addr(&s).and_then(|a| uri(&a, self.scheme()).ok());
            let redirected = match (route, &leader) {
                (Some(num), Some(l)) if self.opts.follow_leaders && *l != addr => {
                    self.learn(num, l);
                    true
                }
                _ => {
                    if let Some(num) = route {
                        self.forget(num, &addr);
                    }
                    self.rotate(&addr);
                    false
                }
            };
            let last = || match s.code() {
                Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => Error::Unavailable {
                    message: s.message().to_owned(),
                    retry_after: None,
                },
                _ => Error::from_status(&s),
            };
            if n >= policy.max_attempts {
                return Err(last());
            }
            let hint = retry_after(&s);
            let wait = if redirected && hint.unwrap_or_default().is_zero() {
                Duration::ZERO
            } else {
                policy.wait(retries + 1, hint)
            };
            if redirected {
                self.redirects.fetch_add(1, Ordering::Relaxed);
            } else {
                if !self.budget.try_spend() {
                    return Err(Error::RetryBudgetExhausted {
                        last: Box::new(last()),
                    });
                }
                retries += 1;
                self.retries.fetch_add(1, Ordering::Relaxed);
            }
            if Instant::now() + wait >= deadline {
                return Err(Error::DeadlineExceeded {
                    attempts: n,
                    last: s.message().to_owned(),
                });
            }
            *lock(&self.last) = (hint, Some(wait));
            tokio::time::sleep(wait).await;
        }
    }
}

/// A node address as a URI: "host:port" gets the scheme.
fn uri(addr: &str, scheme: &str) -> Result<String, Error> {
    let a = addr.trim();
    if a.is_empty() {
        return Err(Error::Config("empty node address".into()));
    }
    let u = if a.contains("://") {
        a.to_owned()
    } else {
        format!("{scheme}://{a}")
    };
    u.parse::<tonic::transport::Uri>()
        .map_err(|e| Error::Config(format!("node address {addr:?}: {e}")))?;
    Ok(u)
}

#[cfg(feature = "tls")]
fn tls_config(t: &TlsOptions) -> Result<tonic::transport::ClientTlsConfig, Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |p: &PathBuf, what: &str| {
        std::fs::read(p).map_err(|e| Error::Config(format!("{what} {}: {e}", p.display())))
    };
    let mut c = ClientTlsConfig::new();
    if let Some(ca) = &t.ca {
        c = c.ca_certificate(Certificate::from_pem(read(ca, "CA file")?));
    }
    match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => {
            c = c.identity(Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ))
        }
        (None, None) => {}
        _ => {
            return Err(Error::Config(
                "a client certificate needs its key (and the other way round)".into(),
            ))
        }
    }
    if let Some(d) = &t.domain {
        c = c.domain_name(d.clone());
    }
    Ok(c)
}
