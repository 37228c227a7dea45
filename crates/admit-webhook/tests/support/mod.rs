//! What the receiver's loopback tests share: the fixtures' ids and
//! secrets, the fixtures themselves, and a raw HTTP/1.1 client (raw, so a
//! test can cut a body short or send it chunked).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use admit_proto::v1 as pb;
use admit_webhook::{Config, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const NUMBER: &str = "109900112233445";
pub const DISPLAY: &str = "15550101234";
pub const WABA: &str = "880011223344556";
pub const SECRET: &str = "test-app-secret";
pub const TOKEN: &str = "test-verify-token";
/// 2025-12-01 08:00 UTC, before every time in the fixtures.
pub const START_MS: u64 = 1_764_576_000_000;
pub const MAX_BODY: usize = 16 * 1024;

pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An HTTP answer: status code and body.
#[derive(Debug)]
pub struct Answer {
    pub code: u16,
    pub body: String,
}

impl Answer {
    /// A field of the JSON report of a 200.
    pub fn count(&self, field: &str) -> u64 {
        assert_eq!(self.code, 200, "{self:?}");
        let v: serde_json::Value = serde_json::from_str(&self.body).expect("a JSON report");
        v[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field} in {}", self.body))
    }
}

/// Writes `head` and `body` on a fresh connection and reads the answer
/// (bounded in time).
pub async fn exchange(addr: SocketAddr, head: String, body: &[u8]) -> Answer {
    exchange_closing(addr, head, body, false).await
}

/// [`exchange`], closing the writing side after the body when `close` (a
/// body cut short in transit).
pub async fn exchange_closing(addr: SocketAddr, head: String, body: &[u8], close: bool) -> Answer {
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        s.write_all(head.as_bytes()).await.expect("head written");
        // the server may answer (and close) before reading a refused body
        let _ = s.write_all(body).await;
        if close {
            let _ = s.shutdown().await;
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        answer(&out).unwrap_or_else(|e| panic!("{e}"))
    })
    .await
    .expect("answered in time")
}

/// The status code and body of an HTTP/1.1 answer read to its end.
pub fn answer(out: &[u8]) -> Result<Answer, String> {
    let text = String::from_utf8_lossy(out).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok(Answer { code, body })
}

pub fn post_head(len: usize, signature: Option<&str>) -> String {
    let mut h = format!(
        "POST /webhook HTTP/1.1\r\nHost: admit.test\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n"
    );
    if let Some(s) = signature {
        h.push_str(&format!("X-Hub-Signature-256: {s}\r\n"));
    }
    h.push_str("\r\n");
    h
}

/// A delivery signed with the app secret.
pub async fn deliver(addr: SocketAddr, body: &[u8]) -> Answer {
    let sig = Secret::new(SECRET).sign(body);
    exchange(addr, post_head(body.len(), Some(&sig)), body).await
}

pub async fn get(addr: SocketAddr, query: &str) -> Answer {
    exchange(
        addr,
        format!("GET /webhook?{query} HTTP/1.1\r\nHost: admit.test\r\nConnection: close\r\n\r\n"),
        b"",
    )
    .await
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

/// The receiver's settings of the tests, on any free loopback port.
pub fn hook_config(display_numbers: Vec<(String, String)>) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        verify_token: TOKEN.into(),
        app_secret: Secret::new(SECRET),
        max_body_bytes: MAX_BODY,
        display_numbers,
        display_numbers_file: None,
        tls: None,
    }
}

/// A sink that refuses with UNAVAILABLE while `down`, else answers
/// "applied"; counts the calls it answered.
#[derive(Default, Clone)]
pub struct Flaky {
    pub down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub applied: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Flaky {
    pub fn answer<T: Default>(&self) -> Result<T, tonic::Status> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.down.load(SeqCst) {
            return Err(tonic::Status::unavailable("no leader"));
        }
        self.applied.fetch_add(1, SeqCst);
        Ok(T::default())
    }
}

impl admit_webhook::Sink for Flaky {
    async fn apply_event(
        &self,
        _: pb::ApplyEventRequest,
    ) -> Result<pb::ApplyEventResponse, tonic::Status> {
        self.answer().map(|_: ()| pb::ApplyEventResponse {
            applied: true,
            ..Default::default()
        })
    }
    async fn record_inbound(
        &self,
        _: pb::RecordInboundRequest,
    ) -> Result<pb::RecordInboundResponse, tonic::Status> {
        self.answer()
    }
    async fn report_outcome(
        &self,
        _: pb::ReportOutcomeRequest,
    ) -> Result<pb::ReportOutcomeResponse, tonic::Status> {
        self.answer()
    }
    async fn register_number(
        &self,
        _: pb::RegisterNumberRequest,
    ) -> Result<pb::RegisterNumberResponse, tonic::Status> {
        self.answer()
    }
}
