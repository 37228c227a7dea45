//! The process that `single_node::kill_9_keeps_acknowledged_writes` kills:
//! a single node on the data dir given as first argument, writing from 16
//! tasks without pause and printing `ACK <shard> <key> <id> <total>` for each
//! acknowledged write, until it is killed. The second argument (a round
//! number) keeps the ids of successive runs apart.

#[path = "../common/mod.rs"]
mod common;

use std::io::Write;

use admit_raft::RaftNode;
use common::{kill_writer_config, Add, Counters};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(round)) = (args.next(), args.next()) else {
        eprintln!("usage: admit-raft-kill-writer <data dir> <round>");
        std::process::exit(2);
    };
    let round: u64 = round.parse().expect("round: a number");
    let cfg = kill_writer_config(std::path::Path::new(&dir));
    let node = RaftNode::start(cfg, |_| Counters::default())
        .await
        .expect("start");
    println!("READY");
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let id = round * 1_000_000_000 + t * 1_000_000 + i;
                let shard = ((t + i) % 8) as u32;
                let key = format!("k{}", i % 3);
                let total = node
                    .write(
                        shard,
                        Add {
                            key: key.clone(),
                            id,
                            by: 1,
                        },
                    )
                    .await
                    .expect("write");
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {shard} {key} {id} {total}").expect("stdout");
                out.flush().expect("stdout");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
}
