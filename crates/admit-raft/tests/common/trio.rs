//! Three nodes on real loopback listeners, for the tests that need a
//! cluster's Raft ports (the node-pair stream, hostile peers).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use admit_raft::{NodeConfig, RaftNode};

use super::ports::free_addr;
use super::{config, Add, Counters};

pub type Node = RaftNode<Counters>;

/// Three nodes on loopback, each serving its own Raft port.
pub struct Trio {
    pub dirs: Vec<tempfile::TempDir>,
    pub addrs: Vec<SocketAddr>,
    pub nodes: Vec<Option<Node>>,
    pub shards: u32,
    pub tweak: fn(&mut NodeConfig),
}

impl Trio {
    pub async fn start(shards: u32, tweak: fn(&mut NodeConfig)) -> Trio {
        let mut t = Trio {
            dirs: (0..3).map(|_| tempfile::tempdir().unwrap()).collect(),
            addrs: (0..3).map(|_| free_addr()).collect(),
            nodes: vec![None, None, None],
            shards,
            tweak,
        };
        for i in 0..3 {
            t.up(i).await;
        }
        t
    }

    pub async fn up(&mut self, i: usize) {
        let mut c = config(self.dirs[i].path(), self.shards);
        c.node_id = i as u64 + 1;
        c.advertise_addr = self.addrs[i].to_string();
        c.listen_addr = Some(self.addrs[i]);
        c.fsync = false;
        c.peers = (0..3)
            .map(|j| (j as u64 + 1, self.addrs[j].to_string()))
            .collect();
        c.write_timeout = Some(Duration::from_secs(3));
        (self.tweak)(&mut c);
        self.nodes[i] = Some(RaftNode::start(c, |_| Counters::default()).await.unwrap());
    }

    pub fn live(&self) -> Vec<Node> {
        self.nodes.iter().flatten().cloned().collect()
    }

    pub fn leader(&self, shard: u32) -> Option<Node> {
        self.live()
            .into_iter()
            .find(|n| n.leader(shard) == Some(n.node_id()) && n.is_leader_with_lease(shard))
    }

    pub async fn write(&self, shard: u32, key: String, id: u64) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if let Some(l) = self.leader(shard) {
                let cmd = Add {
                    key: key.clone(),
                    id,
                    by: 1,
                };
                if l.write(shard, cmd).await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("write {id} to shard {shard} not acknowledged within 20 s");
    }

    pub async fn stop(&mut self) {
        for n in self.nodes.iter_mut().filter_map(Option::take) {
            n.shutdown().await.unwrap();
        }
    }
}
