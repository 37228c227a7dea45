//! `admit.v1.Cluster`: the nodes and Raft shards of the cluster (leaders,
//! replicas, replication lag), and node membership changes.

use std::collections::BTreeSet;
use std::sync::Arc;

use admit_proto::v1 as pb;
use admit_proto::v1::cluster_server::Cluster;
use admit_raft::{AdminError, ClusterNode, NodeState, ShardInfo};
use tonic::{Request, Response, Status};

use super::handle;
use crate::convert::ms;
use crate::ctx::Ctx;
use crate::error::ApiError;

/// Retry hint when a membership change cannot be made now.
const RETRY_MEMBERSHIP_MS: u64 = 500;

#[derive(Debug, Clone)]
pub struct ClusterService {
    pub(crate) ctx: Arc<Ctx>,
}

fn state_out(s: NodeState) -> pb::NodeState {
    match s {
        NodeState::Active => pb::NodeState::Active,
        NodeState::Leaving => pb::NodeState::Leaving,
        NodeState::Removed => pb::NodeState::Removed,
    }
}

fn admin_err(e: AdminError) -> ApiError {
    let m = e.to_string();
    let refused = [
        "removed",
        "leaving",
        "last active",
        "no node",
        "not leaving",
    ]
    .iter()
    .any(|k| m.contains(k));
    if refused {
        ApiError::FailedPrecondition(m)
    } else {
        ApiError::unavailable(m, RETRY_MEMBERSHIP_MS)
    }
}

fn shard_out(i: &ShardInfo) -> pb::Shard {
    let members: BTreeSet<u64> = i.voters.union(&i.learners).copied().collect();
    pb::Shard {
        shard_id: i.shard,
        leader_node_id: i.leader,
        replicas: members
            .iter()
            .map(|n| {
                let r = i.replicas.iter().find(|r| r.node == *n);
                pb::Replica {
                    node_id: *n,
                    voter: i.voters.contains(n),
                    matched_index: r.and_then(|r| r.matched),
                    lag: r.and_then(|r| r.lag),
                    last_ack_ms: r.and_then(|r| r.last_ack_ms),
                }
            })
            .collect(),
        last_applied_index: i.applied.unwrap_or(0),
        last_log_index: i.last_log_index.unwrap_or(0),
        term: i.term,
        target_node_ids: i.target.clone(),
        changing: i.changing,
        reporter_node_id: i.reporter,
    }
}

impl ClusterService {
    /// The leader of the cluster-metadata group (the node registry).
    fn hint(&self) -> Option<pb::NodeRef> {
        let id = self.ctx.routing.raft.meta_info().leader?;
        Some(pb::NodeRef {
            node_id: id,
            address: self.ctx.routing.api_addr(id).unwrap_or_default(),
        })
    }

    /// The registry, or this node alone before it has a copy.
    fn registry(&self) -> Vec<ClusterNode> {
        let nodes = self.ctx.routing.raft.nodes();
        if nodes.is_empty() {
            vec![ClusterNode {
                id: self.ctx.routing.raft.node_id(),
                addr: self.ctx.routing.peer_advertise.clone(),
                api_addr: self.ctx.routing.advertise.clone(),
                state: NodeState::Active,
            }]
        } else {
            nodes
        }
    }

    fn nodes_out(&self, shards: &[ShardInfo]) -> Vec<pb::Node> {
        let me = self.ctx.routing.raft.node_id();
        let now = ms(self.ctx.now());
        self.registry()
            .into_iter()
            .map(|n| {
                let id = n.id;
                let leading: Vec<u32> = shards
                    .iter()
                    .filter(|s| s.leader == Some(id))
                    .map(|s| s.shard)
                    .collect();
                let voter = shards.iter().any(|s| s.voters.contains(&id));
                let learner = shards.iter().any(|s| s.learners.contains(&id));
                let replica_count = shards
                    .iter()
                    .filter(|s| s.voters.contains(&id) || s.learners.contains(&id))
                    .count() as u32;
                let last_ack = shards
                    .iter()
                    .filter(|s| s.is_leader_view())
                    .flat_map(|s| s.replicas.iter())
                    .filter(|r| r.node == id)
                    .filter_map(|r| r.last_ack_ms)
                    .min();
                let reported = shards.iter().any(|s| s.reporter == id);
                let alive = id == me
                    || (n.state != NodeState::Removed
                        && (reported || last_ack.is_some_and(|a| a < 3_000)));
                pb::Node {
                    node_id: id,
                    address: n.api_addr,
                    peer_address: n.addr,
                    role: if voter {
                        pb::NodeRole::Voter as i32
                    } else if learner {
                        pb::NodeRole::Learner as i32
                    } else {
                        pb::NodeRole::Unspecified as i32
                    },
                    alive,
                    leading_shard_ids: leading,
                    last_seen_unix_ms: if id == me {
                        Some(now)
                    } else {
                        last_ack.map(|a| now - a as i64)
                    },
                    is_self: id == me,
                    state: state_out(n.state) as i32,
                    replica_count,
                }
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        handle(&self.ctx, &request, async {
            let shards = self.ctx.routing.raft.cluster_shard_infos().await;
            Ok(pb::ListNodesResponse {
                nodes: self.nodes_out(&shards),
                leader_hint: self.hint(),
            })
        })
        .await
    }

    async fn list_shards(
        &self,
        request: Request<pb::ListShardsRequest>,
    ) -> Result<Response<pb::ListShardsResponse>, Status> {
        handle(&self.ctx, &request, async {
            let infos = if request.get_ref().local_only {
                self.ctx.routing.raft.shard_infos()
            } else {
                self.ctx.routing.raft.cluster_shard_infos().await
            };
            Ok(pb::ListShardsResponse {
                shards: infos.iter().map(shard_out).collect(),
                leader_hint: self.hint(),
            })
        })
        .await
    }

    async fn add_node(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::AddNodeResponse>, Status> {
        handle(&self.ctx, &request, async {
            let r = request.get_ref();
            if r.node_id == 0 {
                return Err(ApiError::invalid("node_id", "must be at least 1"));
            }
            if !valid_address(&r.address) {
                return Err(ApiError::invalid(
                    "address",
                    "must be host:port (a DNS name or IP address, and a port 1-65535)",
                ));
            }
            // without a peer address: the API port + 1 (the default layout)
            let peer = if r.peer_address.is_empty() {
                crate::transport::split_peer_entry(&r.address)
                    .map(|(_, p)| p)
                    .map_err(|e| ApiError::invalid("peer_address", e))?
            } else {
                r.peer_address.clone()
            };
            if !valid_address(&peer) {
                return Err(ApiError::invalid(
                    "peer_address",
                    "must be host:port (the new node's peer port)",
                ));
            }
            let raft = &self.ctx.routing.raft;
            // a node with another count would run groups that share nothing
            // with the cluster's (a shard is hash % count)
            if r.shards != 0 && r.shards != raft.shards() {
                return Err(ApiError::FailedPrecondition(format!(
                    "shards: this cluster has {} shards, the joining node {}; start it \
                     from an empty data dir with --shards {}",
                    raft.shards(),
                    r.shards,
                    raft.shards()
                )));
            }
            raft.add_node(r.node_id, &peer).await.map_err(admin_err)?;
            raft.set_api_addr(r.node_id, &r.address)
                .await
                .map_err(admin_err)?;
            tracing::info!(node = r.node_id, address = %r.address, peer_address = %peer, "node added");
            let shards = self.ctx.routing.raft.shard_infos();
            Ok(pb::AddNodeResponse {
                nodes: self.nodes_out(&shards),
            })
        })
        .await
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        handle(&self.ctx, &request, async {
            let id = request.get_ref().node_id;
            if id == 0 {
                return Err(ApiError::invalid("node_id", "must be at least 1"));
            }
            self.ctx
                .routing
                .raft
                .remove_node(id)
                .await
                .map_err(admin_err)?;
            tracing::info!(node = id, "node leaving");
            let shards = self.ctx.routing.raft.shard_infos();
            Ok(pb::RemoveNodeResponse {
                nodes: self.nodes_out(&shards),
            })
        })
        .await
    }
}

/// `host:port` as peers dial it: a DNS name or an IPv4 address, or an IPv6
/// address in brackets, and a port 1-65535.
fn valid_address(a: &str) -> bool {
    let Some((host, port)) = a.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    port_ok && host_ok
}

#[cfg(test)]
mod tests {
    use super::valid_address;

    #[test]
    fn addresses_are_host_and_port() {
        for ok in [
            "127.0.0.1:50051",
            "admit-0.admit.default.svc.cluster.local:50051",
            "[::1]:50051",
            "node-2:1",
        ] {
            assert!(valid_address(ok), "{ok}");
        }
        for bad in [
            "x:",
            ":",
            "a b:c",
            "host:0",
            "host:65536",
            "host",
            "-a:1",
            "a..b:1",
            "[zz]:1",
        ] {
            assert!(!valid_address(bad), "{bad}");
        }
    }
}
