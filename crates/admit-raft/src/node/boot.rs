//! Boot: open the journal, check the data dir, start every group (and the
//! metadata group), initialize fresh groups from the static config, serve
//! the transport, and wait until the groups this node can commit alone are
//! back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, so that a simulation with paused time drives these too
use tokio::time::Instant;

use openraft::impls::BasicNode;
use openraft::Raft;

use super::{Inner, RaftNode, ServerHandle, META_KEY};
use crate::cluster::Registry;
use crate::config::NodeConfig;
use crate::journal::{io_err, Journal, Ks, Mutation};
use crate::network::{GrpcRouter, NetFactory};
use crate::placement::{placement_table, rendezvous};
use crate::propose::{BatchConfig, Proposer};
use crate::sm::{Applied, GroupRaft, StateMachine};
use crate::snapfile::SnapDir;
use crate::store::{decode, encode, LogStore};
use crate::{App, StartError};

const NODE_INFO_KEY: &[u8] = b"admit-node-info";

impl<A: App> RaftNode<A> {
    /// Open (or create) the journal in `config.data_dir` and start one Raft
    /// group per shard, each with the App `app_factory(shard)` (restored from
    /// the group's snapshot, then brought up to date by replaying the log).
    ///
    /// With `config.bootstrap`, never-initialized groups are initialized with
    /// this node as their only voter. Returns once every group whose only
    /// voter is this node has recovered its pre-restart committed state and
    /// elected itself leader (groups shared with peers recover in the
    /// background; guard reads with [`Self::ensure_linearizable`]).
    pub async fn start(
        mut config: NodeConfig,
        app_factory: impl Fn(u32) -> A,
    ) -> Result<Self, StartError> {
        if config.shards == 0 {
            return Err(StartError::Config("shards must be > 0".into()));
        }
        let raft_config = Arc::new(config.raft_config()?);
        let lease = Duration::from_millis(raft_config.election_timeout_max);
        let journal = Journal::open(
            &config.data_dir,
            config.fsync,
            config.group_commit_linger,
            config.journal_poll,
            config.simulate_power_loss,
            config.inline_journal,
        )
        .map_err(StartError::Storage)?;
        check_node_info(&journal, &mut config).await?;
        // a log with a hole is refused before any group reads it
        crate::integrity::check::<A>(&journal, config.shards + 1, &config.data_dir)
            .map_err(StartError::Storage)?;
        let dir_identity = super::identity::load(&journal).await?;

        let router = GrpcRouter::<A>::new(
            config.dialer.clone(),
            config.max_message(),
            config.heartbeat,
            config.election_timeout.0,
        );
        for (id, addr) in &config.peers {
            router
                .set_addr(*id, addr)
                .map_err(|e| StartError::Config(format!("peer {id} address {addr}: {e}")))?;
        }
        let me = config.node_id;
        if config.bootstrap && !config.peers.is_empty() && !config.peers.contains_key(&me) {
            return Err(StartError::Config(format!(
                "peers must include this node ({me}) to bootstrap"
            )));
        }
        let snap_dir = Arc::new(
            SnapDir::open(
                &config.data_dir,
                config.fsync,
                config.snapshot_write_hook.clone().map(|h| h.0),
            )
            .map_err(StartError::Storage)?,
        );
        let mut groups = Vec::with_capacity(config.shards as usize);
        let applied: Vec<Arc<Applied>> = (0..config.shards)
            .map(|_| Arc::new(Applied::default()))
            .collect();
        for shard in 0..config.shards {
            let log = LogStore::<A>::open(shard, journal.clone()).map_err(StartError::Storage)?;
            let sm = StateMachine::open(
                shard,
                app_factory(shard),
                journal.clone(),
                snap_dir.clone(),
                applied[shard as usize].clone(),
            )
            .map_err(StartError::Storage)?;
            let net = NetFactory {
                router: router.clone(),
                group: shard,
            };
            let raft = Raft::new(me, raft_config.clone(), net, log, sm)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
            groups.push(raft);
        }
        let meta_id = config.shards;
        let registry = Registry::with_cluster_cell(router.cluster());
        let meta = {
            let log = LogStore::<Registry>::open(meta_id, journal.clone())
                .map_err(StartError::Storage)?;
            let sm = StateMachine::open(
                meta_id,
                registry.clone(),
                journal.clone(),
                snap_dir.clone(),
                Arc::new(Applied::default()),
            )
            .map_err(StartError::Storage)?;
            let net = NetFactory {
                router: router.retype::<Registry>(),
                group: meta_id,
            };
            Raft::new(me, raft_config.clone(), net, log, sm)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?
        };

        let mut fresh = vec![false; groups.len()];
        let mut meta_fresh = false;
        if config.bootstrap {
            // Voters of every fresh group: this node alone, or the group's
            // placement over the static peers.
            let (table, meta_voters) = if config.peers.is_empty() {
                (vec![vec![me]; groups.len()], vec![me])
            } else {
                let ids: BTreeSet<u64> = config.peers.keys().copied().collect();
                (
                    placement_table(config.shards, &ids, config.replicas),
                    rendezvous(META_KEY, &ids, config.replicas),
                )
            };
            let members = |voters: &[u64]| -> BTreeMap<u64, BasicNode> {
                voters
                    .iter()
                    .map(|id| {
                        let addr = config
                            .peers
                            .get(id)
                            .cloned()
                            .unwrap_or_else(|| config.advertise_addr.clone());
                        (*id, BasicNode::new(addr))
                    })
                    .collect()
            };
            for ((raft, fresh), voters) in groups.iter().zip(fresh.iter_mut()).zip(&table) {
                if voters.contains(&me) && init_if_fresh(raft, members(voters)).await? {
                    *fresh = voters.len() == 1;
                }
            }
            if meta_voters.contains(&me) && init_if_fresh(&meta, members(&meta_voters)).await? {
                meta_fresh = meta_voters.len() == 1;
            }
        }

        let batching = BatchConfig {
            max_commands: config.batch_max_commands.max(1),
            inflight: config.batch_inflight.max(1),
            queue: config.proposal_queue.max(1),
        };
        let proposers = groups
            .iter()
            .map(|g| Proposer::spawn(me, g.clone(), batching))
            .collect();
        let shard_count = groups.len();
        let registered = dir_identity.registered.is_some();
        let no_peers = config.peers.keys().all(|id| *id == me);
        let node = Self {
            inner: Arc::new(Inner {
                groups: Arc::new(groups),
                proposers,
                applied,
                meta,
                registry,
                journal,
                router,
                lease,
                server: Mutex::new(None),
                reconciler: Mutex::new(None),
                transfers: Mutex::new(HashMap::new()),
                fences: super::fence::Fences::new(shard_count),
                // A new dir with peers takes no Raft message until a peer
                // answered whether its data dir was lost (the probe in
                // `start`, repeated while none answers); then only a
                // refusal closes it.
                gate: if registered || no_peers {
                    super::identity::Gate::open_all(true)
                } else {
                    super::identity::Gate::default()
                },
                incarnation: dir_identity.incarnation,
                quiet: super::quiesce::Quiet::new(shard_count + 1, config.quiesce_after),
                quiescer: Mutex::new(None),
                halt: tokio::sync::watch::Sender::new(false),
                installs: crate::checks::Installs::new(shard_count + 1),
                app_frames: std::sync::OnceLock::new(),
                config,
            }),
        };
        if let Some(addr) = node.inner.config.listen_addr {
            node.serve(addr).await?;
        }
        if !no_peers {
            if let Err(e) = node.check_peers(registered).await {
                let _ = node.shutdown().await;
                return Err(e);
            }
        }
        if let Err(e) = node.wait_ready(&fresh, meta_fresh).await {
            let _ = node.shutdown().await;
            return Err(e);
        }
        node.spawn_reconciler();
        node.spawn_quiescer();
        Ok(node)
    }

    async fn wait_ready(&self, fresh: &[bool], meta_fresh: bool) -> Result<(), StartError> {
        let deadline = Instant::now() + self.inner.config.startup_timeout;
        let me = self.inner.config.node_id;
        for (raft, fresh) in self.inner.groups.iter().zip(fresh) {
            wait_sole_voter(raft, me, *fresh, deadline).await?;
        }
        wait_sole_voter(&self.inner.meta, me, meta_fresh, deadline).await
    }

    async fn serve(&self, addr: SocketAddr) -> Result<(), StartError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(StartError::Storage)?;
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let svc = self.grpc_service();
        let task = tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "raft transport server failed");
            }
        });
        *self.inner.server.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(ServerHandle { stop, task });
        Ok(())
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct DirInfo {
    node_id: u64,
    shards: u32,
}

/// Check that the data dir belongs to this node (or claim a new one). With
/// `shards_from_data_dir`, an existing dir's shard count replaces the
/// configured default: a node created under an older default keeps working.
async fn check_node_info(journal: &Journal, config: &mut NodeConfig) -> Result<(), StartError> {
    let existing = journal
        .meta
        .get(NODE_INFO_KEY)
        .map_err(|e| StartError::Storage(io_err(e)))?;
    match existing {
        Some(b) => {
            let info: DirInfo = decode(&b).map_err(StartError::Storage)?;
            if config.shards_from_data_dir && info.shards != 0 {
                config.shards = info.shards;
            }
            if info.node_id != config.node_id || info.shards != config.shards {
                return Err(StartError::Config(format!(
                    "data dir belongs to node {} with {} shards, config says node {} with {} shards",
                    info.node_id, info.shards, config.node_id, config.shards
                )));
            }
            Ok(())
        }
        None => {
            let info = DirInfo {
                node_id: config.node_id,
                shards: config.shards,
            };
            let bytes = encode(&info).map_err(StartError::Storage)?;
            journal
                .submit_wait(vec![Mutation::Put(Ks::Meta, NODE_INFO_KEY.to_vec(), bytes)])
                .await
                .map_err(StartError::Storage)
        }
    }
}

/// Initialize `raft` with `members` unless it already is. Returns whether it
/// was initialized now.
async fn init_if_fresh<X: App>(
    raft: &GroupRaft<X>,
    members: BTreeMap<u64, BasicNode>,
) -> Result<bool, StartError> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    if initialized {
        return Ok(false);
    }
    raft.initialize(members)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    Ok(true)
}

/// Wait until a group this node can commit alone has recovered and elected
/// itself. Groups shared with peers recover in the background (their reads
/// are guarded by the lease anyway).
async fn wait_sole_voter<X: App>(
    raft: &GroupRaft<X>,
    me: u64,
    fresh: bool,
    deadline: Instant,
) -> Result<(), StartError> {
    let sole_voter = fresh || raft.voter_ids().eq([me]);
    if !sole_voter {
        return Ok(());
    }
    let left = deadline.saturating_duration_since(Instant::now());
    raft.wait_for_recovery(Some(left))
        .await
        .map_err(|e| StartError::Raft(format!("recovery: {e}")))?;
    let left = deadline.saturating_duration_since(Instant::now());
    raft.wait(Some(left))
        .metrics(
            |m| m.current_leader == Some(me) && m.last_applied >= m.local_committed,
            "leader of own group",
        )
        .await
        .map_err(|e| StartError::Raft(format!("election: {e}")))?;
    Ok(())
}
