//! The `webhook` scenario: Meta's deliveries, as Meta sends them, to admit's
//! webhook receiver (`admitd --webhook-listen`), each signed with the app
//! secret (`X-Hub-Signature-256`) and posted over HTTP/1.1 keep-alive
//! connections, one per caller. Deliveries alternate between a `messages`
//! change with one inbound text message (a `RecordInbound` write) and one
//! with a `delivered` status (a `ReportOutcome` write), each with a wamid of
//! its own, so none is a repeat. A delivery counts when answered 200, which
//! the receiver gives only once its changes are committed; the latency is
//! Meta's view: from the request's first byte to the answer.
//!
//! Imports hyper's client connection, hmac/sha2 and the bench's `drive`.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::sync::Mutex;

use crate::{drive, Args, Ids, Report};

/// Where deliveries go: the receiver's address and the path Meta posts to.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`, for the connection and the `Host` header.
    authority: String,
    path: String,
}

impl Target {
    /// `http://HOST:PORT/PATH` (plain HTTP: TLS is ended in front of the
    /// receiver, or measured apart).
    pub fn parse(url: &str) -> Result<Target> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("--webhook-target must be http://HOST:PORT/PATH, got {url}");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || !authority.contains(':') {
            bail!("--webhook-target must name HOST:PORT, got {url}");
        }
        Ok(Target {
            authority: authority.to_owned(),
            path: path.to_owned(),
        })
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`, as Meta signs.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    let mut s = String::from("sha256=");
    for b in mac.finalize().into_bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Delivery `i` of the run: even ones carry an inbound message, odd ones a
/// delivered status; `number` is a registered `phone_number_id`.
pub fn delivery(ids: &Ids, number: &str, i: u64) -> String {
    let customer = ids.customer(5, i);
    let wamid = format!("wamid.bench{}x{i}", ids.run);
    let ts = 1_764_576_000 + i % 86_400;
    let value = if i.is_multiple_of(2) {
        format!(
            r#""contacts":[{{"wa_id":"{customer}","profile":{{"name":"Sam"}}}}],
              "messages":[{{"from":"{customer}","id":"{wamid}","timestamp":"{ts}",
                "type":"text","text":{{"body":"Do you still have the blue one in stock?"}}}}]"#
        )
    } else {
        format!(
            r#""statuses":[{{"id":"{wamid}","status":"delivered","timestamp":"{ts}",
                "recipient_id":"{customer}",
                "conversation":{{"id":"c0ffee{i:026}","origin":{{"type":"utility"}}}},
                "pricing":{{"billable":true,"pricing_model":"PMP","category":"utility"}}}}]"#
        )
    };
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"880011223344556","changes":[
          {{"field":"messages","value":{{"messaging_product":"whatsapp",
            "metadata":{{"display_phone_number":"15550101234","phone_number_id":"{number}"}},
            {value}}}}}]}}]}}"#
    )
}

type Conn = SendRequest<Full<Bytes>>;

async fn connect(t: &Target) -> Result<Conn, String> {
    let tcp = tokio::net::TcpStream::connect(&t.authority)
        .await
        .map_err(|e| format!("connecting to {}: {e}", t.authority))?;
    let _ = tcp.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(send)
}

/// One signed POST on the caller's connection (opened again after a
/// failure); 200 or an error naming the status and the answer.
async fn post(
    slot: &Mutex<Option<Conn>>,
    t: &Target,
    secret: &[u8],
    body: String,
) -> Result<(), String> {
    let mut slot = slot.lock().await;
    let mut conn = match slot.take() {
        Some(c) if !c.is_closed() => c,
        _ => connect(t).await?,
    };
    let req = hyper::Request::post(t.path.as_str())
        .header(hyper::header::HOST, t.authority.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("x-hub-signature-256", signature(secret, body.as_bytes()))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    conn.ready().await.map_err(|e| e.to_string())?;
    let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let answer = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    *slot = Some(conn);
    if status != hyper::StatusCode::OK {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&answer)));
    }
    Ok(())
}

/// Runs the scenario for `dur` over the numbers the bench registered.
pub async fn run(args: &Args, dur: std::time::Duration, ids: Arc<Ids>) -> Result<Report> {
    let url = args
        .webhook_target
        .as_deref()
        .context("the webhook scenario needs --webhook-target http://HOST:PORT/PATH")?;
    let target = Arc::new(Target::parse(url)?);
    let secret: Arc<[u8]> = args
        .webhook_secret
        .as_deref()
        .context("the webhook scenario needs --webhook-secret (admitd's --webhook-app-secret)")?
        .as_bytes()
        .into();
    // one probe first: a wrong secret or path fails the run, not every call
    let probe = Mutex::new(None);
    post(
        &probe,
        &target,
        &secret,
        delivery(&ids, &ids.number(0), u64::MAX / 2),
    )
    .await
    .map_err(|e| anyhow::anyhow!("webhook probe at {url}: {e}"))?;
    let slots: Arc<Vec<Mutex<Option<Conn>>>> =
        Arc::new((0..args.concurrency).map(|_| Mutex::new(None)).collect());
    let numbers = args.numbers as u64;
    let errors = Arc::new(std::sync::Mutex::new(None::<String>));
    let first_error = errors.clone();
    let r = drive(
        "webhook deliveries (signed)",
        args,
        dur,
        None,
        move |w, i| {
            let (slots, target, secret, ids) =
                (slots.clone(), target.clone(), secret.clone(), ids.clone());
            let errors = errors.clone();
            async move {
                let body = delivery(&ids, &ids.number((i % numbers) as u32), i);
                match post(&slots[w], &target, &secret, body).await {
                    Ok(()) => Ok(1),
                    Err(e) => {
                        errors
                            .lock()
                            .expect("not poisoned")
                            .get_or_insert(e.clone());
                        Err(tonic::Status::unknown(e))
                    }
                }
            }
        },
    )
    .await;
    if let Some(e) = first_error.lock().expect("not poisoned").take() {
        eprintln!("webhook: first failed delivery: {e}");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The deliveries are the JSON Meta sends (both kinds), and the
    /// signature is the HMAC of the exact body.
    #[test]
    fn deliveries_are_well_formed_and_signed() {
        let ids = Ids { run: 42 };
        for i in [0, 1] {
            let body = delivery(&ids, "900004200000", i);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let value = &v["entry"][0]["changes"][0]["value"];
            assert_eq!(value["metadata"]["phone_number_id"], "900004200000");
            let kind = if i == 0 { "messages" } else { "statuses" };
            assert_eq!(value[kind][0]["id"], format!("wamid.bench42x{i}"));
        }
        // RFC 4231 test case 2
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(Target::parse("https://h:1/x").is_err());
        let t = Target::parse("http://127.0.0.1:8080/webhook").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:8080", "/webhook")
        );
    }
}
