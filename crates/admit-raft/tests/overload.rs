//! Overload (issue 11, item 6): a group's proposer queue is bounded, and a
//! submission whose caller gave up while it queued is never proposed.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use admit_raft::{App, RaftNode, WriteError};
use common::{config, Add, Counters};

fn add(key: &str, id: u64) -> Add {
    Add {
        key: key.to_string(),
        id,
        by: 1,
    }
}

/// 200 writes submitted at once to a group whose queue holds 4: those
/// beyond the bound fail at once with `Overloaded` and are not applied;
/// every write let in is applied and answered.
///
/// On the single-threaded runtime the spawned tasks all submit, in spawn
/// order, before the proposer task runs, so the queue is certainly full.
#[tokio::test(flavor = "current_thread")]
async fn a_full_proposer_queue_refuses_at_once_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1);
    cfg.proposal_queue = 4;
    let node = RaftNode::start(cfg, |_| Counters::default()).await.unwrap();
    let app = node
        .with_app(0, |a: &Counters| a.state.clone())
        .await
        .unwrap();
    const N: u64 = 200;
    let tasks: Vec<_> = (0..N)
        .map(|id| {
            let node = node.clone();
            tokio::spawn(async move { (id, node.write(0, add(&format!("q{id}"), id)).await) })
        })
        .collect();
    let (mut ok, mut refused) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            (id, Ok(_)) => ok.push(id),
            (id, Err(WriteError::Overloaded { queued })) => {
                assert_eq!(queued, 4);
                refused.push(id);
            }
            (id, Err(e)) => panic!("write {id}: {e:?}"),
        }
    }
    assert!(
        !refused.is_empty(),
        "no write was refused with a queue of 4"
    );
    assert!(ok.len() >= 4, "the queue's writes went through: {ok:?}");
    let s = app.lock().unwrap().clone();
    let applied: Vec<u64> = s
        .counters
        .iter()
        .filter(|(k, _)| k.starts_with('q'))
        .flat_map(|(_, (_, ids))| ids.clone())
        .collect();
    let mut applied_sorted = applied.clone();
    applied_sorted.sort_unstable();
    assert_eq!(
        applied_sorted, ok,
        "exactly the accepted writes were applied"
    );
    println!("{} of {N} writes refused by a queue of 4", refused.len());
    node.shutdown().await.unwrap();
}

/// The counters App, whose `apply` of key "gate" waits until the gate opens
/// (so the group's only in-flight entry stays in flight).
#[derive(Debug, Clone, Default)]
struct Gated {
    inner: Counters,
    open: Arc<AtomicBool>,
    entered: Arc<AtomicBool>,
    applied: Arc<Mutex<Vec<u64>>>,
}

impl App for Gated {
    type Command = Add;
    type Response = u64;

    fn apply(&mut self, index: u64, cmd: Add) -> u64 {
        if cmd.key == "gate" {
            self.entered.store(true, Ordering::SeqCst);
            let until = Instant::now() + Duration::from_secs(20);
            while !self.open.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.applied.lock().unwrap().push(cmd.id);
        self.inner.apply(index, cmd)
    }

    fn snapshot(&self) -> Vec<u8> {
        self.inner.snapshot()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.inner.restore(bytes)
    }

    fn check_snapshot(bytes: &[u8]) -> Result<(), String> {
        Counters::check_snapshot(bytes)
    }
}

async fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A write that queued behind a stalled entry and whose caller gave up
/// (its write timeout passed) is not proposed once the entry completes; a
/// later write is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_caller_gave_up_is_not_proposed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), 1);
    cfg.batch_inflight = 1;
    cfg.write_timeout = Some(Duration::from_millis(300));
    let app = Gated::default();
    let (open, entered, applied) = (app.open.clone(), app.entered.clone(), app.applied.clone());
    let node = RaftNode::start(cfg, move |_| app.clone()).await.unwrap();
    // the gate entry takes the group's only in-flight slot and stalls
    let gate = {
        let node = node.clone();
        tokio::spawn(async move { node.write(0, add("gate", 1)).await })
    };
    wait_for("the gate entry is applied", || {
        entered.load(Ordering::SeqCst)
    })
    .await;
    // this one queues behind it; its caller gives up after 300 ms
    let late = node.write(0, add("late", 2)).await;
    assert!(
        matches!(late, Err(WriteError::Unavailable(ref m)) if m.contains("timed out")),
        "{late:?}"
    );
    open.store(true, Ordering::SeqCst);
    let _ = gate.await.unwrap();
    node.write(0, add("after", 3)).await.expect("a later write");
    let seen = applied.lock().unwrap().clone();
    assert_eq!(seen, [1, 3], "the abandoned write was applied");
    node.shutdown().await.unwrap();
}
