//! Channels to the other nodes: one lazily connected tonic channel per peer
//! address, shared by all requests, and the one call that relays a
//! [`NodeReq`] as one more hop of the current request.

use std::collections::HashMap;
use std::sync::Mutex;

use tonic::transport::Channel;

use super::request::ReqInfo;
use crate::error::{ApiError, RETRY_PEER_MS};
use crate::transport::dial::PeerDialer;
use crate::wire::pb::node_rpc_client::NodeRpcClient;
use crate::wire::{self, pb, Envelope, NodeRef, NodeReq};

/// One lazily connected channel per peer (node id and peer address),
/// shared by all requests.
#[derive(Debug)]
pub struct Peers {
    clients: Mutex<HashMap<(u64, String), NodeRpcClient<Channel>>>,
    dialer: PeerDialer,
    /// The largest node-to-node frame (a forwarded batch and its answers).
    max_frame: usize,
}

impl Peers {
    pub(crate) fn new(dialer: PeerDialer, max_frame: usize) -> Peers {
        Peers {
            clients: Mutex::default(),
            dialer,
            max_frame,
        }
    }

    fn client(&self, node: &NodeRef) -> Result<NodeRpcClient<Channel>, ApiError> {
        let mut m = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let key = (node.id, node.addr.clone());
        if let Some(c) = m.get(&key) {
            return Ok(c.clone());
        }
        let ch = self
            .dialer
            .open(node.id, &node.addr)
            .map_err(ApiError::Internal)?;
        let c = NodeRpcClient::new(ch)
            .max_decoding_message_size(self.max_frame)
            .max_encoding_message_size(self.max_frame);
        m.insert(key, c.clone());
        Ok(c)
    }

    /// Sends `req` to the node at `addr` as one more hop of the current
    /// request. Transport failures: a refused connection is
    /// [`ApiError::NotLeader`] (certainly not applied); anything else is an
    /// unknown outcome ([`ApiError::Unavailable`]).
    pub async fn call(
        &self,
        node: &NodeRef,
        req: &NodeReq,
        info: ReqInfo,
    ) -> Result<Envelope, ApiError> {
        let addr = &node.addr;
        let mut client = self.client(node)?;
        let left = info.left();
        if left.is_zero() {
            return Err(ApiError::unavailable(
                "deadline exceeded while forwarding",
                0,
            ));
        }
        let frame = pb::NodeFrame {
            body: wire::encode(req)?,
            hops: info.hops + 1,
            deadline_ms: left.as_millis() as u64,
        };
        let mut r = tonic::Request::new(frame);
        r.set_timeout(left);
        match client.call(r).await {
            Ok(resp) => wire::decode(&resp.get_ref().body),
            Err(s) => Err(failed_call(addr, &s)),
        }
    }
}

/// What a failed relay means. Only a refused connection proves that nothing
/// was sent (so nothing applied): [`ApiError::NotLeader`]. Anything else,
/// whatever its text says, is an unknown outcome.
fn failed_call(addr: &str, s: &tonic::Status) -> ApiError {
    // the peer could not read the request's kind (an older build): nothing done
    if wire::unknown_kind_answer(s) {
        return ApiError::UnknownKind(format!("{addr} answered {}", s.message()));
    }
    if connection_refused(s) {
        return ApiError::NotLeader {
            leader_id: None,
            leader_addr: None,
        };
    }
    ApiError::unavailable(
        format!(
            "forwarding to {addr} failed ({}: {}); outcome unknown, retry with the same idempotency key",
            s.code(),
            s.message()
        ),
        RETRY_PEER_MS,
    )
}

/// A typed signal, not the error's text: an `io::Error` of kind
/// `ConnectionRefused` in the status' source chain (the transport could not
/// connect).
fn connection_refused(s: &tonic::Status) -> bool {
    let mut e: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(err) = e {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        e = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::NodeReq;

    /// A peer that does not know the request's kind (UNIMPLEMENTED, or the
    /// decode failure of builds before that answer) did nothing: not an
    /// unknown outcome; damaged bytes stay one.
    #[test]
    fn an_unknown_kind_is_told_apart_from_a_failed_relay() {
        let older = ApiError::Internal(format!("decode: {}", postcard::Error::SerdeDeCustom));
        for s in [
            tonic::Status::unimplemented("unknown request kind"),
            older.into_status(),
        ] {
            let e = failed_call("h:1", &s);
            assert!(matches!(e, ApiError::UnknownKind(_)), "{e:?}");
        }
        let damaged = ApiError::Internal("decode: Hit the end of buffer".into()).into_status();
        assert!(matches!(
            failed_call("h:1", &damaged),
            ApiError::Unavailable { .. }
        ));
    }

    #[test]
    fn an_answer_that_speaks_of_refusal_is_an_unknown_outcome() {
        for text in [
            "policy refused by the peer",
            "connect error: connection refused",
        ] {
            let s = tonic::Status::unavailable(text);
            assert!(
                matches!(failed_call("h:1", &s), ApiError::Unavailable { .. }),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn a_refused_connection_applied_nothing() {
        // a port nothing listens on any more
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let peers = Peers::new(PeerDialer { tls: None }, 4 << 20);
        let req = NodeReq::SetClock {
            now: admit_core::Ts(0),
        };
        let info = ReqInfo::current().within(std::time::Duration::from_secs(5));
        let node = NodeRef { id: 2, addr };
        let r = peers.call(&node, &req, info).await;
        assert!(
            matches!(r, Err(ApiError::NotLeader { .. })),
            "{:?}",
            r.err()
        );
    }
}
