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
            Err(s) => {
                let text = format!("{s:?}");
                let refused = s.code() == tonic::Code::Unavailable
                    && (text.contains("onnect") || text.contains("refused"))
                    && !text.contains("reset");
                if refused {
                    Err(ApiError::NotLeader {
                        leader_id: None,
                        leader_addr: None,
                    })
                } else {
                    Err(ApiError::unavailable(
                        format!(
                            "forwarding to {addr} failed ({}: {}); outcome unknown, retry with the same idempotency key",
                            s.code(),
                            s.message()
                        ),
                        RETRY_PEER_MS,
                    ))
                }
            }
        }
    }
}
