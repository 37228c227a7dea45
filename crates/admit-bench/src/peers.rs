//! The peer systems admit is compared with, driven by the same callers as
//! admit itself (`drive`): etcd's `KV/Put` and Redis running the admission
//! rule as a Lua script.
//!
//! May import tonic, `tonic-prost`, prost and the `redis` client; nothing of
//! admit. etcd is spoken to through its public gRPC method with a request
//! message written here (two bytes fields), so no etcd crate is needed.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use tonic::codegen::http::uri::PathAndQuery;

use crate::conn::Chan;
use crate::{drive, Args, Report};

/// etcd's `PutRequest`: only the two fields a Put needs (key, value).
#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// etcd's `PutResponse`, its fields left undecoded (the header is all it
/// carries when `prev_kv` is not asked for).
#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {}

const PUT: &str = "/etcdserverpb.KV/Put";

/// A value about the size of an admit send (number, customer, template).
const VALUE: [u8; 64] = [b'v'; 64];

/// Puts with a unique key per call over `chans` (the members given by
/// `--etcd`, round-robin). etcd answers a Put once the entry is committed
/// on a quorum with fsync, as admit answers a new conversation.
pub async fn etcd_put(
    name: &str,
    args: &Args,
    dur: Duration,
    chans: Vec<Chan>,
    run: u64,
) -> Report {
    let chans = Arc::new(chans);
    drive(name, args, dur, None, move |w, i| {
        let chan = chans[w % chans.len()].clone();
        async move {
            let mut grpc = tonic::client::Grpc::new(chan);
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let req = PutRequest {
                key: format!("bench/{run}/{i}").into_bytes(),
                value: VALUE.to_vec(),
            };
            let codec = tonic_prost::ProstCodec::<PutRequest, PutResponse>::default();
            grpc.unary(
                tonic::Request::new(req),
                PathAndQuery::from_static(PUT),
                codec,
            )
            .await
            .map(|_| 1)
        }
    })
    .await
}

/// The window-and-limit rule as a provider would run it in Redis: one sorted
/// set per number (member: customer, score: when its conversation opened).
/// Drop the conversations older than the window; a customer still in the
/// window is free (1); else count a new one if the number is under its
/// limit (2), or deny (0).
const RULE: &str = r"
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then return 1 end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  return 2
end
return 0
";

/// 24 hours, the conversation window.
const WINDOW_MS: u64 = 86_400_000;

/// New conversations through the Lua rule: a fresh customer per call, spread
/// over `--numbers` sorted sets, `--connections` multiplexed connections to
/// `--redis`. A call counts as an error unless it counted a new conversation.
pub async fn redis_lua(name: &str, args: &Args, dur: Duration, run: u64) -> Result<Report> {
    let url = if args.redis.contains("://") {
        args.redis.clone()
    } else {
        format!("redis://{}", args.redis)
    };
    let client = redis::Client::open(url.as_str()).with_context(|| format!("--redis {url}"))?;
    let mut conns = Vec::with_capacity(args.connections.max(1));
    for _ in 0..args.connections.max(1) {
        conns.push(
            client
                .get_multiplexed_async_connection()
                .await
                .with_context(|| format!("connecting to {url}"))?,
        );
    }
    let script = Arc::new(redis::Script::new(RULE));
    // load it once, so the timed calls are EVALSHA
    script
        .prepare_invoke()
        .load_async(&mut conns[0].clone())
        .await
        .context("loading the Lua rule")?;
    let conns = Arc::new(conns);
    let numbers = args.numbers as u64;
    Ok(drive(name, args, dur, None, move |w, i| {
        let mut conn = conns[w % conns.len()].clone();
        let script = script.clone();
        async move {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let r: i64 = script
                .key(format!("admit:{run}:{}", i % numbers))
                .arg(now)
                .arg(WINDOW_MS)
                .arg(1_000_000_000u64)
                .arg(format!("c{i}"))
                .invoke_async(&mut conn)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            if r == 2 {
                Ok(1)
            } else {
                Err(tonic::Status::internal(
                    "expected a new counted conversation",
                ))
            }
        }
    })
    .await)
}
