//! `admit.v1.Cluster`: this node's view of the nodes and the Raft shards.

use std::collections::BTreeSet;
use std::sync::Arc;

use admit_proto::v1 as pb;
use admit_proto::v1::cluster_server::Cluster;
use tonic::{Request, Response, Status};

use crate::convert::ms;
use crate::ctx::Ctx;

#[derive(Debug, Clone)]
pub struct ClusterService {
    pub(crate) ctx: Arc<Ctx>,
}

impl ClusterService {
    fn hint(&self) -> Option<pb::NodeRef> {
        let id = self.ctx.raft.leader(0)?;
        Some(pb::NodeRef {
            node_id: id,
            address: if id == self.ctx.raft.node_id() {
                self.ctx.advertise.clone()
            } else {
                self.ctx.raft.leader_addr(0).unwrap_or_default()
            },
        })
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn list_nodes(
        &self,
        _request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let raft = &self.ctx.raft;
        let me = raft.node_id();
        let mut ids = BTreeSet::from([me]);
        for shard in 0..raft.shards() {
            ids.extend(raft.voters(shard));
        }
        let nodes = ids
            .into_iter()
            .map(|id| {
                let leading: Vec<u32> = (0..raft.shards())
                    .filter(|s| raft.leader(*s) == Some(id))
                    .collect();
                let address = if id == me {
                    self.ctx.advertise.clone()
                } else {
                    (0..raft.shards())
                        .find(|s| raft.leader(*s) == Some(id))
                        .and_then(|s| raft.leader_addr(s))
                        .unwrap_or_default()
                };
                pb::Node {
                    node_id: id,
                    address,
                    role: pb::NodeRole::Voter as i32,
                    alive: id == me || !leading.is_empty(),
                    leading_shard_ids: leading,
                    last_seen_unix_ms: (id == me).then(|| ms(self.ctx.now())),
                    is_self: id == me,
                }
            })
            .collect();
        Ok(Response::new(pb::ListNodesResponse {
            nodes,
            leader_hint: self.hint(),
        }))
    }

    async fn list_shards(
        &self,
        _request: Request<pb::ListShardsRequest>,
    ) -> Result<Response<pb::ListShardsResponse>, Status> {
        let raft = &self.ctx.raft;
        let shards = (0..raft.shards())
            .map(|s| {
                let applied = self.ctx.slots[s as usize].applied_index();
                pb::Shard {
                    shard_id: s,
                    leader_node_id: raft.leader(s),
                    replicas: raft
                        .voters(s)
                        .into_iter()
                        .map(|id| pb::Replica {
                            node_id: id,
                            voter: true,
                            matched_index: None,
                            lag: None,
                        })
                        .collect(),
                    last_applied_index: applied,
                    // admit-raft exposes neither the last log index nor the
                    // term; the applied index is the best local bound
                    last_log_index: applied,
                    term: 0,
                }
            })
            .collect();
        Ok(Response::new(pb::ListShardsResponse {
            shards,
            leader_hint: self.hint(),
        }))
    }
}
