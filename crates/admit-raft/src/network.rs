//! Raft transport over gRPC (tonic): one HTTP/2 channel per destination node,
//! shared by every Raft group; each call names its group. Raft messages are
//! postcard-encoded openraft structures inside `proto/admit/internal/raft.proto`
//! frames.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::impls::BasicNode;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::OptionalSend;
use openraft_multi::{GroupNetworkAdapter, GroupRouter};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::cluster::{meta_write_local, Identity, MetaCmd, MetaFwd, Registry, ShardInfo};
use crate::journal::io_err;
use crate::pb::raft_transport_client::RaftTransportClient;
use crate::pb::raft_transport_server::RaftTransport;
use crate::pb::{RaftReply, RaftRequest, RaftRpcKind};
use crate::sm::GroupRaft;
use crate::store::{decode, encode};
use crate::types::{SnapshotMetaT, SnapshotT, VoteT, C};
use crate::App;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a node opens a channel to another node's peer port (node id and its
/// peer address). The server supplies one that speaks mutual TLS; without
/// one, channels are plain HTTP/2.
pub trait Dialer: std::fmt::Debug + Send + Sync + 'static {
    /// A lazily connecting channel to `node` at `addr` (`host:port`).
    fn channel(&self, node: u64, addr: &str) -> Result<Channel, String>;
}

/// Plain HTTP/2, connected on first use.
fn plain_channel(addr: &str) -> Result<Channel, String> {
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .connect_lazy())
}

#[derive(Default)]
struct RouterInner {
    /// node id -> (address, lazily connected channel)
    peers: Mutex<HashMap<u64, (String, RaftTransportClient<Channel>)>>,
    /// Test switch: drop every outgoing and incoming RPC of this node.
    isolated: Arc<AtomicBool>,
    /// Opens channels to peers (mutual TLS); `None`: plain.
    dialer: Option<Arc<dyn Dialer>>,
    /// Largest message sent or received.
    max_message: usize,
    /// This node's cluster id (0: not known yet), stamped on every request.
    cluster: Arc<AtomicU64>,
}

/// Connection pool shared by all groups of a node.
pub(crate) struct GrpcRouter<A> {
    inner: Arc<RouterInner>,
    _app: PhantomData<fn() -> A>,
}

impl<A> Clone for GrpcRouter<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _app: PhantomData,
        }
    }
}

impl<A> std::fmt::Debug for GrpcRouter<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcRouter").finish_non_exhaustive()
    }
}

impl<A: App> GrpcRouter<A> {
    pub(crate) fn new(dialer: Option<Arc<dyn Dialer>>, max_message: usize) -> Self {
        Self {
            inner: Arc::new(RouterInner {
                dialer,
                max_message,
                ..RouterInner::default()
            }),
            _app: PhantomData,
        }
    }

    /// The same connection pool, typed for another App (the metadata group).
    pub(crate) fn retype<B>(&self) -> GrpcRouter<B> {
        GrpcRouter {
            inner: self.inner.clone(),
            _app: PhantomData,
        }
    }

    /// The isolation switch shared with the gRPC service.
    pub(crate) fn isolated(&self) -> Arc<AtomicBool> {
        self.inner.isolated.clone()
    }

    /// The cluster id cell stamped on outgoing requests.
    pub(crate) fn cluster(&self) -> Arc<AtomicU64> {
        self.inner.cluster.clone()
    }

    /// Known address of `node`.
    pub(crate) fn addr(&self, node: u64) -> Option<String> {
        lock(&self.inner.peers).get(&node).map(|(a, _)| a.clone())
    }

    /// Register (or update) the address of `node`. A changed address replaces the channel.
    pub(crate) fn set_addr(&self, node: u64, addr: &str) -> Result<(), String> {
        let mut peers = lock(&self.inner.peers);
        if peers.get(&node).is_some_and(|(a, _)| a == addr) {
            return Ok(());
        }
        let channel = match &self.inner.dialer {
            Some(d) => d.channel(node, addr)?,
            None => plain_channel(addr)?,
        };
        let client = RaftTransportClient::new(channel)
            .max_decoding_message_size(self.inner.max_message)
            .max_encoding_message_size(self.inner.max_message);
        peers.insert(node, (addr.to_string(), client));
        Ok(())
    }

    fn client(&self, node: u64) -> Result<RaftTransportClient<Channel>, RPCError<C<A>>> {
        lock(&self.inner.peers)
            .get(&node)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| {
                RPCError::Unreachable(Unreachable::new(&io_err(format!(
                    "no address for node {node}"
                ))))
            })
    }

    pub(crate) async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        target: u64,
        group: u32,
        kind: RaftRpcKind,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<C<A>>> {
        if self.inner.isolated.load(Ordering::Relaxed) {
            return Err(RPCError::Unreachable(Unreachable::new(&io_err(
                "node isolated (test switch)",
            ))));
        }
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self.client(target)?;
        let request = RaftRequest {
            group,
            kind: kind as i32,
            payload,
            cluster: self.inner.cluster.load(Ordering::Acquire),
        };
        let reply = match tokio::time::timeout(ttl, client.call(request)).await {
            Err(_) => {
                return Err(RPCError::Unreachable(Unreachable::new(&io_err(format!(
                    "rpc to node {target} timed out after {ttl:?}"
                )))))
            }
            Ok(Err(status)) => return Err(RPCError::Unreachable(Unreachable::new(&status))),
            Ok(Ok(r)) => r.into_inner(),
        };
        let res: Result<Resp, String> =
            decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        res.map_err(|e| RPCError::Network(NetworkError::new(&io_err(e))))
    }
}

impl<A: App> GroupRouter<C<A>, u32> for GrpcRouter<A> {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &self,
        target: u64,
        group_id: u32,
        rpc: AppendEntriesRequest<C<A>>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C<A>>, RPCError<C<A>>> {
        self.call(
            target,
            group_id,
            RaftRpcKind::AppendEntries,
            &rpc,
            option.hard_ttl(),
        )
        .await
    }

    async fn vote(
        &self,
        target: u64,
        group_id: u32,
        rpc: VoteRequest<C<A>>,
        option: RPCOption,
    ) -> Result<VoteResponse<C<A>>, RPCError<C<A>>> {
        self.call(target, group_id, RaftRpcKind::Vote, &rpc, option.hard_ttl())
            .await
    }

    async fn pre_vote(
        &self,
        target: u64,
        group_id: u32,
        rpc: VoteRequest<C<A>>,
        option: RPCOption,
    ) -> Result<VoteResponse<C<A>>, RPCError<C<A>>> {
        self.call(
            target,
            group_id,
            RaftRpcKind::PreVote,
            &rpc,
            option.hard_ttl(),
        )
        .await
    }

    async fn full_snapshot(
        &self,
        target: u64,
        group_id: u32,
        vote: VoteT<A>,
        snapshot: SnapshotT<A>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C<A>>, StreamingError<C<A>>> {
        let req = (vote, snapshot.meta, snapshot.snapshot);
        // Snapshots may be large: allow a generous multiple of the soft TTL.
        let ttl = option.hard_ttl().max(Duration::from_secs(30));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = self.call(target, group_id, RaftRpcKind::FullSnapshot, &req, ttl) => r.map_err(StreamingError::from),
        }
    }

    async fn transfer_leader(
        &self,
        target: u64,
        group_id: u32,
        req: TransferLeaderRequest<C<A>>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<C<A>>, RPCError<C<A>>> {
        self.call(
            target,
            group_id,
            RaftRpcKind::TransferLeader,
            &req,
            option.hard_ttl(),
        )
        .await
    }
}

/// Per-group network factory handed to openraft.
pub(crate) struct NetFactory<A> {
    pub(crate) router: GrpcRouter<A>,
    pub(crate) group: u32,
}

impl<A: App> RaftNetworkFactory<C<A>> for NetFactory<A> {
    type Network = GroupNetworkAdapter<C<A>, u32, GrpcRouter<A>>;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        if let Err(e) = self.router.set_addr(target, &node.addr) {
            tracing::warn!(target, addr = %node.addr, error = %e, "bad raft peer address");
        }
        GroupNetworkAdapter::new(self.router.clone(), target, self.group)
    }
}

/// What the transport asks of the node it serves, beyond its groups. The
/// node implements it, so this module does not import the node's.
pub(crate) trait LocalNode: Send + Sync + 'static {
    /// This node's views of its groups, the metadata group last.
    fn infos(&self) -> Vec<ShardInfo>;
    /// Whether a Raft message for `group`, stamped with the sender's
    /// `cluster` id, may reach the group (another cluster's messages, and
    /// messages to groups this node may not serve yet, are refused).
    fn admit_message(&self, group: u32, cluster: u64) -> Result<(), tonic::Status>;
    /// What this node knows of the cluster and of node `asker`.
    fn identity(&self, asker: u64) -> Identity;
    /// A node liveness message (`LIVENESS`; see `node/quiesce.rs`).
    fn liveness(&self, payload: &[u8]) -> Result<(), String>;
    /// A message for `group` was handled (or a metadata write arrived): a
    /// quiesced group wakes.
    fn stirred(&self, group: u32);
}

/// gRPC service that receives Raft RPCs for every group of this node.
///
/// Mount it on a tonic server with [`RaftNode::grpc_service`](crate::RaftNode::grpc_service),
/// or let the node serve it on [`NodeConfig::listen_addr`](crate::NodeConfig::listen_addr).
pub struct RaftGrpcService<A: App> {
    pub(crate) groups: Arc<Vec<GroupRaft<A>>>,
    pub(crate) meta: GroupRaft<Registry>,
    pub(crate) node: Weak<dyn LocalNode>,
    pub(crate) isolated: Arc<AtomicBool>,
}

impl<A: App> std::fmt::Debug for RaftGrpcService<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftGrpcService")
            .field("groups", &self.groups.len())
            .finish()
    }
}

fn reply<T: Serialize>(r: Result<T, String>) -> Result<tonic::Response<RaftReply>, tonic::Status> {
    let payload = encode(&r).map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok(tonic::Response::new(RaftReply { payload }))
}

fn req<T: DeserializeOwned>(b: &[u8]) -> Result<T, tonic::Status> {
    decode(b).map_err(|e| tonic::Status::invalid_argument(e.to_string()))
}

#[tonic::async_trait]
impl<A: App> RaftTransport for RaftGrpcService<A> {
    async fn call(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        if self.isolated.load(Ordering::Relaxed) {
            return Err(tonic::Status::unavailable("node isolated (test switch)"));
        }
        let r = request.into_inner();
        let kind = RaftRpcKind::try_from(r.kind)
            .map_err(|_| tonic::Status::invalid_argument("unknown raft rpc kind"))?;
        match kind {
            RaftRpcKind::MetaWrite => {
                let cmd: MetaCmd = req(&r.payload)?;
                let Some(node) = self.node.upgrade() else {
                    return Err(tonic::Status::unavailable("node stopped"));
                };
                node.stirred(self.groups.len() as u32);
                return reply::<MetaFwd>(Ok(meta_write_local(&self.meta, cmd).await));
            }
            RaftRpcKind::Status => {
                let node = self
                    .node
                    .upgrade()
                    .ok_or_else(|| tonic::Status::unavailable("node stopped"))?;
                return reply::<Vec<ShardInfo>>(Ok(node.infos()));
            }
            RaftRpcKind::Identity => {
                let asker: u64 = req(&r.payload)?;
                let node = self
                    .node
                    .upgrade()
                    .ok_or_else(|| tonic::Status::unavailable("node stopped"))?;
                return reply::<Identity>(Ok(node.identity(asker)));
            }
            RaftRpcKind::Liveness => {
                let node = self
                    .node
                    .upgrade()
                    .ok_or_else(|| tonic::Status::unavailable("node stopped"))?;
                node.admit_message(0, r.cluster)?;
                return reply::<()>(node.liveness(&r.payload));
            }
            _ => {}
        }
        let node = self
            .node
            .upgrade()
            .ok_or_else(|| tonic::Status::unavailable("node stopped"))?;
        node.admit_message(r.group, r.cluster)?;
        let out = if r.group as usize == self.groups.len() {
            dispatch(&self.meta, kind, &r.payload).await
        } else {
            let raft = self
                .groups
                .get(r.group as usize)
                .ok_or_else(|| tonic::Status::not_found(format!("no raft group {}", r.group)))?;
            dispatch(raft, kind, &r.payload).await
        };
        // after the message is handled: a quiesced follower's election
        // timer then starts from this contact with its leader
        node.stirred(r.group);
        out
    }
}

async fn dispatch<X: App>(
    raft: &GroupRaft<X>,
    kind: RaftRpcKind,
    payload: &[u8],
) -> Result<tonic::Response<RaftReply>, tonic::Status> {
    {
        match kind {
            RaftRpcKind::AppendEntries => {
                let rpc: AppendEntriesRequest<C<X>> = req(payload)?;
                reply(raft.append_entries(rpc).await.map_err(|e| e.to_string()))
            }
            RaftRpcKind::Vote => {
                let rpc: VoteRequest<C<X>> = req(payload)?;
                reply(raft.vote(rpc).await.map_err(|e| e.to_string()))
            }
            RaftRpcKind::PreVote => {
                let rpc: VoteRequest<C<X>> = req(payload)?;
                reply(raft.pre_vote(rpc).await.map_err(|e| e.to_string()))
            }
            RaftRpcKind::FullSnapshot => {
                let (vote, meta, data): (VoteT<X>, SnapshotMetaT<X>, Vec<u8>) = req(payload)?;
                let snapshot = openraft::storage::Snapshot {
                    meta,
                    snapshot: data,
                };
                reply(
                    raft.install_full_snapshot(vote, snapshot)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            RaftRpcKind::TransferLeader => {
                let rpc: TransferLeaderRequest<C<X>> = req(payload)?;
                reply(
                    raft.handle_transfer_leader(rpc)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            RaftRpcKind::Unspecified
            | RaftRpcKind::MetaWrite
            | RaftRpcKind::Status
            | RaftRpcKind::Identity
            | RaftRpcKind::Liveness => Err(tonic::Status::invalid_argument("unexpected rpc kind")),
        }
    }
}
