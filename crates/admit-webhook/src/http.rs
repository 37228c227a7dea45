//! The HTTP side (axum over hyper, already in the tree through tonic): the
//! subscription handshake on GET and deliveries on POST, on a port of its
//! own. A POST is checked in this order, and each refusal changes nothing:
//! a missing signature (401), the size limit (413), a body that cannot be
//! read (400) or is slow (408), the signature over the raw bytes (401), the
//! JSON and the shapes of the known fields (400 with the reason). Then the
//! actions are applied and the delivery is acknowledged (200) only once all
//! of them are committed; a failure a retry may cure answers 503 so that
//! Meta delivers again. Any path is served, so the callback URL may name
//! one. With TLS configured the port speaks HTTPS only ([`crate::tls`]).
//! Imports the other modules of this crate, axum and tokio.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::apply::{self, Sink};
use crate::numbers::Numbers;
use crate::signature::{self, BadSignature, Secret};
use crate::translate;

/// The default body limit: Meta's deliveries are a few KB; batches stay
/// well under this.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// How long a POST may take to send its body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The receiver's settings. `Debug` shows neither the token nor the secret.
#[derive(Clone)]
pub struct Config {
    /// Where to listen (port 0: any free port).
    pub listen: SocketAddr,
    /// `hub.verify_token` of the subscription handshake.
    pub verify_token: String,
    /// The Meta app's secret: the key of `X-Hub-Signature-256`.
    pub app_secret: Secret,
    /// Larger bodies are refused with 413.
    pub max_body_bytes: usize,
    /// Known (display phone number, phone_number_id) pairs.
    pub display_numbers: Vec<(String, String)>,
    /// Where the pairs learned from deliveries are kept across restarts
    /// (`None`: in memory only).
    pub display_numbers_file: Option<std::path::PathBuf>,
    /// TLS on the port (`None`: plain HTTP, for a proxy that ends TLS).
    pub tls: Option<crate::tls::Tls>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("verify_token", &"<redacted>")
            .field("app_secret", &self.app_secret)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("display_numbers", &self.display_numbers.len())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A running receiver. Stop it with [`Webhook::shutdown`].
#[derive(Debug)]
pub struct Webhook {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Webhook {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and lets deliveries in flight finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "webhook server ended with an error"),
            Err(e) => tracing::warn!(error = %e, "webhook server task failed"),
        }
    }
}

struct Shared<S> {
    sink: S,
    verify_token: String,
    secret: Secret,
    max_body: usize,
    numbers: Numbers,
}

/// Binds `cfg.listen` and serves the receiver, applying deliveries to `sink`.
pub async fn serve<S: Sink>(cfg: Config, sink: S) -> std::io::Result<Webhook> {
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        sink,
        verify_token: cfg.verify_token,
        secret: cfg.app_secret,
        max_body: cfg.max_body_bytes,
        numbers: Numbers::open(cfg.display_numbers, cfg.display_numbers_file),
    });
    let app = Router::new().fallback(handle::<S>).with_state(shared);
    let (stop, rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let task = match cfg.tls {
        None => tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped(rx))
                .into_future(),
        ),
        Some(tls) => {
            let listener = crate::tls::listen(listener, tls, rx.clone())?;
            tokio::spawn(
                axum::serve(listener, app)
                    .with_graceful_shutdown(stopped(rx))
                    .into_future(),
            )
        }
    };
    tracing::info!(%addr, "webhook receiver serving");
    Ok(Webhook { addr, stop, task })
}

async fn handle<S: Sink>(State(sh): State<Arc<Shared<S>>>, req: Request) -> Response {
    match *req.method() {
        Method::GET => handshake(&sh, &req),
        Method::POST => {
            let started = std::time::Instant::now();
            let (result, resp) = deliver(sh, req).await;
            metrics::counter!("admit_webhook_deliveries_total", "result" => result).increment(1);
            metrics::histogram!("admit_webhook_delivery_seconds", "result" => result)
                .record(started.elapsed().as_secs_f64());
            resp
        }
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, POST")],
            "GET (subscription handshake) or POST (deliveries)\n",
        )
            .into_response(),
    }
}

/// `GET ?hub.mode=subscribe&hub.verify_token=...&hub.challenge=...`.
fn handshake<S>(sh: &Shared<S>, req: &Request) -> Response {
    let q: HashMap<String, String> = Query::try_from_uri(req.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    let mode = q.get("hub.mode").map(String::as_str);
    let token = q.get("hub.verify_token").map(String::as_str).unwrap_or("");
    if mode != Some("subscribe")
        || sh.verify_token.is_empty()
        || !signature::same(token.as_bytes(), sh.verify_token.as_bytes())
    {
        tracing::warn!(mode = ?mode, "webhook subscription handshake refused");
        return (StatusCode::FORBIDDEN, "verification failed\n").into_response();
    }
    match q.get("hub.challenge") {
        Some(c) => {
            tracing::info!("webhook subscription verified");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                c.clone(),
            )
                .into_response()
        }
        None => (StatusCode::BAD_REQUEST, "hub.challenge is required\n").into_response(),
    }
}

fn refuse(code: StatusCode, reason: impl Into<String>) -> Response {
    let mut reason = reason.into();
    reason.push('\n');
    (code, [(header::CONTENT_TYPE, "text/plain")], reason).into_response()
}

/// A POST; the label of its result (for the metrics) and the answer.
async fn deliver<S: Sink>(sh: Arc<Shared<S>>, req: Request) -> (&'static str, Response) {
    let (parts, body) = req.into_parts();
    let sig = parts
        .headers
        .get(signature::HEADER)
        .map(|v| v.as_bytes().to_vec());
    if sig.is_none() {
        let r = BadSignature::Missing.reason();
        tracing::warn!(reason = r, "webhook delivery refused");
        return ("bad_signature", refuse(StatusCode::UNAUTHORIZED, r));
    }
    let body = match read_body(&parts.headers, body, sh.max_body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if let Err(bad) = sh.secret.verify(sig.as_deref(), &body) {
        tracing::warn!(reason = bad.reason(), "webhook delivery refused");
        return (
            "bad_signature",
            refuse(StatusCode::UNAUTHORIZED, bad.reason()),
        );
    }
    let env = match translate::parse(&body) {
        Ok(e) => e,
        Err(why) => return ("malformed", refuse(StatusCode::BAD_REQUEST, why)),
    };
    // display numbers first found unknown are looked up (replicated state,
    // then this node's index), and the delivery translated again with them
    let mut t = match translate::translate(&env, &|_| None) {
        Ok(t) => t,
        Err(why) => return ("malformed", refuse(StatusCode::BAD_REQUEST, why)),
    };
    if !t.unresolved.is_empty() {
        let wanted: Vec<String> = t.unresolved.iter().map(|(_, d)| d.clone()).collect();
        let found = match apply::resolve_displays(&sh.sink, &sh.numbers, wanted).await {
            Ok(f) => f,
            Err(u) => {
                tracing::warn!(at = %u.at, code = ?u.status.code(), reason = %u.status.message(), "webhook display number not looked up; Meta will retry");
                return (
                    "unavailable",
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [(header::RETRY_AFTER, "1")],
                        format!("{} not looked up: {}\n", u.at, u.status.message()),
                    )
                        .into_response(),
                );
            }
        };
        t = match translate::translate(&env, &|d| found.get(d).cloned()) {
            Ok(t) => t,
            Err(why) => return ("malformed", refuse(StatusCode::BAD_REQUEST, why)),
        };
    }
    for (d, id) in &t.learned {
        sh.numbers.learn(d, id);
    }
    // in a task of its own: a sender that hangs up mid-delivery does not cut
    // the writes short (its retry then finds them done, by their keys)
    let applying = {
        let sh = sh.clone();
        tokio::spawn(async move { apply::apply(&sh.sink, t).await })
    };
    let applied = match applying.await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "webhook delivery task failed");
            return (
                "unavailable",
                refuse(StatusCode::SERVICE_UNAVAILABLE, "delivery not applied"),
            );
        }
    };
    match applied {
        Ok(report) => (
            "ok",
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_string(&report).unwrap_or_default(),
            )
                .into_response(),
        ),
        Err(u) => {
            tracing::warn!(at = %u.at, code = ?u.status.code(), reason = %u.status.message(), "webhook delivery not committed; Meta will retry");
            (
                "unavailable",
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    format!("not committed at {}: {}\n", u.at, u.status.message()),
                )
                    .into_response(),
            )
        }
    }
}

/// The raw body, at most `max` bytes.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<Vec<u8>, (&'static str, Response)> {
    let too_large = || {
        (
            "too_large",
            refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body over the limit of {max} bytes"),
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(max as u64) as usize);
    let mut stream = body.into_data_stream();
    let deadline = tokio::time::Instant::now() + BODY_READ_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                return Err((
                    "malformed",
                    refuse(StatusCode::REQUEST_TIMEOUT, "body not received in time"),
                ))
            }
            Ok(None) => return Ok(buf),
            Ok(Some(Err(e))) => {
                return Err((
                    "malformed",
                    refuse(
                        StatusCode::BAD_REQUEST,
                        format!("body could not be read (truncated?): {e}"),
                    ),
                ))
            }
            Ok(Some(Ok(chunk))) => {
                if buf.len() + chunk.len() > max {
                    return Err(too_large());
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
}
