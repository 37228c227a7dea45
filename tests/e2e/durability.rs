//! Durability through the admitd binary: kill -9 mid-stream and restart on the same data dir.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use admit_proto::v1 as pb;

use crate::support::api::*;
use crate::support::*;

/// kill -9 during a stream of admits, restart on the same data dir: every
/// acknowledged admission is still counted, retries return the same ids,
/// nothing is admitted twice; a clean restart keeps the status identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_admission() {
    let bin = tokio::task::spawn_blocking(admitd_path).await.unwrap();
    bounded(240, async move {
        let dir = tempfile::tempdir().unwrap();
        let t0 = at(1, 8);
        let (d, mut c) = Daemon::connected(&bin, dir.path(), t0).await;
        c.register(N, "TIER_10K").await;

        // 4 writers stream keyed admits of distinct customers
        let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let sent: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let mut c = c.clone();
            let acked = acked.clone();
            let sent = sent.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..500u64 {
                    let customer = w * 1_000 + i;
                    sent.lock().unwrap().insert(customer);
                    let s = keyed(
                        template(N, customer, "t", pb::TemplateCategory::Utility),
                        &format!("k-{customer}"),
                    );
                    match c.admit(s).await {
                        Ok(d) => {
                            assert_eq!(d.reason(), pb::Reason::NewConversation);
                            acked
                                .lock()
                                .unwrap()
                                .insert(format!("k-{customer}"), d.admission_id);
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        // kill once a good number are acknowledged
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            if acked.lock().unwrap().len() >= 150 {
                break;
            }
        }
        d.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        let sent = sent.lock().unwrap().clone();
        assert!(acked.len() >= 150);

        let (d, mut c) = Daemon::connected(&bin, dir.path(), t0).await;
        let used = c.used(N).await as usize;
        assert!(
            used >= acked.len(),
            "used {used} < acknowledged {}",
            acked.len()
        );
        assert!(used <= sent.len(), "used {used} > sent {}", sent.len());
        // acknowledged keys replay their first decision
        for (key, id) in &acked {
            let customer: u64 = key.trim_start_matches("k-").parse().unwrap();
            let s = keyed(
                template(N, customer, "t", pb::TemplateCategory::Utility),
                key,
            );
            let d = c.admit(s).await.unwrap();
            assert_eq!(&d.admission_id, id, "{key}");
            assert!(d.replayed);
        }
        assert_eq!(c.used(N).await as usize, used, "replays count nothing");
        // the unacknowledged ones: committed before the crash or not, each is
        // counted exactly once after its retry
        let mut ids: BTreeSet<String> = acked.values().cloned().collect();
        for customer in &sent {
            let key = format!("k-{customer}");
            if acked.contains_key(&key) {
                continue;
            }
            let s = keyed(
                template(N, *customer, "t", pb::TemplateCategory::Utility),
                &key,
            );
            let d = c.admit(s).await.unwrap();
            assert_eq!(d.reason(), pb::Reason::NewConversation);
            assert!(ids.insert(d.admission_id), "admitted twice");
        }
        assert_eq!(c.used(N).await as usize, sent.len());
        assert_eq!(ids.len(), sent.len());

        // clean shutdown and restart: identical status
        let before = c.status(N).await;
        drop(c);
        d.terminate();
        let (d, mut c) = Daemon::connected(&bin, dir.path(), t0).await;
        assert_eq!(c.status(N).await, before);
        drop(c);
        d.terminate();
    })
    .await;
}

/// R4.2 and R3.4 across kill -9 at the limit: 4 callers stream keyed admits
/// of 1,000 distinct customers at a TIER_250 number through `admitd`, which
/// is killed once 200 are admitted, then restarted on the same data dir.
/// Usage never exceeds the limit (watched while the stream runs, and after
/// the restart); every acknowledged answer is still there (its key replays
/// the first decision); retrying the unanswered keys and then new customers
/// fills the scope to exactly L, each admission counted once: used == the
/// number of distinct admissions acknowledged == 250.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_the_limit_keeps_every_acknowledged_admission_and_at_most_l() {
    const LIMIT: u32 = 250;
    let bin = tokio::task::spawn_blocking(admitd_path).await.unwrap();
    bounded(240, async move {
        let dir = tempfile::tempdir().unwrap();
        let t0 = at(1, 8);
        let (d, mut c) = Daemon::connected(&bin, dir.path(), t0).await;
        c.register(N, "TIER_250").await;
        let key = |customer: u64| format!("k-{customer}");
        let send = move |customer: u64| keyed(util(N, customer), &key(customer));

        // customer -> the first decision answered for its key
        let answered: Arc<Mutex<BTreeMap<u64, pb::Decision>>> = Arc::default();
        let sent: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let (mut c, answered, sent) = (c.clone(), answered.clone(), sent.clone());
            tasks.push(tokio::spawn(async move {
                for customer in (w * 1_000)..(w * 1_000 + 250) {
                    sent.lock().unwrap().insert(customer);
                    match c.admit(send(customer)).await {
                        Ok(d) => {
                            answered.lock().unwrap().insert(customer, d);
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        // usage as the stream sees it, until the daemon is gone
        let watcher = {
            let mut c = c.clone();
            tokio::spawn(async move {
                let mut most = 0;
                while let Ok(r) = c
                    .admin
                    .get_status(pb::GetStatusRequest {
                        target: Some(number_target(N)),
                    })
                    .await
                {
                    most = most.max(r.into_inner().status.unwrap().usage.unwrap().used);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                most
            })
        };
        let admitted = |a: &BTreeMap<u64, pb::Decision>| {
            a.values()
                .filter(|d| d.reason() == pb::Reason::NewConversation)
                .count()
        };
        while admitted(&answered.lock().unwrap()) < 200 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        d.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        let most_seen = watcher.await.unwrap();
        let answered = answered.lock().unwrap().clone();
        let sent = sent.lock().unwrap().clone();
        let acked = admitted(&answered);
        println!(
            "kill -9 at {acked} acknowledged admissions ({} answers, {} sent)",
            answered.len(),
            sent.len()
        );
        assert!(most_seen <= LIMIT, "used {most_seen} > L during the stream");
        for d in answered.values() {
            assert!(
                matches!(
                    d.reason(),
                    pb::Reason::NewConversation | pb::Reason::LimitReached
                ),
                "{d:?}"
            );
        }
        assert!((200..=LIMIT as usize).contains(&acked), "{acked}");

        let (d, mut c) = Daemon::connected(&bin, dir.path(), t0).await;
        let used = c.used(N).await;
        assert!(used <= LIMIT, "used {used} > L after the restart");
        assert!(used as usize >= acked, "used {used} < acknowledged {acked}");
        // every answered key: its first decision again
        let mut ids = BTreeSet::new();
        for (customer, first) in &answered {
            let again = c.admit(send(*customer)).await.unwrap();
            assert_eq!(again.reason, first.reason, "customer {customer}");
            if first.reason() == pb::Reason::NewConversation {
                assert!(again.replayed, "customer {customer}");
                assert_eq!(again.admission_id, first.admission_id);
                assert!(ids.insert(again.admission_id));
            }
        }
        assert_eq!(c.used(N).await, used, "replays count nothing");
        // the unanswered keys, then new customers until the limit refuses
        let unanswered = sent.iter().filter(|c| !answered.contains_key(c));
        let mut refused = false;
        for customer in unanswered.copied().chain(10_000..10_000 + u64::from(LIMIT)) {
            let d = c.admit(send(customer)).await.unwrap();
            match d.reason() {
                pb::Reason::NewConversation => {
                    assert!(ids.insert(d.admission_id), "admitted twice");
                }
                pb::Reason::LimitReached => refused = true,
                other => panic!("customer {customer}: {other:?}"),
            }
            assert!(c.used(N).await <= LIMIT);
        }
        assert!(refused, "the scope was filled to its limit");
        assert_eq!(c.used(N).await, LIMIT);
        assert_eq!(ids.len(), LIMIT as usize, "each admission counted once");
        drop(c);
        d.terminate();
    })
    .await;
}

/// The data dir written by release 0.1's format (kept in the repository,
/// made by `write_the_release_data_dir`), and when it was written.
const RELEASE_DATA_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/data-dir-0.1"
);
const RELEASE_AT: i64 = at(1, 8);
/// Its numbers: (number, tier, limit, customers with a counted conversation).
const RELEASE_NUMBERS: [(&str, &str, u32, u64); 3] = [
    ("100200300", "TIER_250", 250, 3),
    ("100200301", "TIER_1K", 1_000, 5),
    ("100200302", "TIER_10K", 10_000, 0),
];

/// What the stored data dir holds: RELEASE_NUMBERS with their
/// conversations (customers 0..k), customer 1 of the first opted out by
/// STOP, and customer 100 of the second in a service window.
async fn fill_the_release_data_dir(c: &mut Clients) {
    for (n, tier, _, opened) in RELEASE_NUMBERS {
        c.register(n, tier).await;
        if opened > 0 {
            c.open_batch(n, 0, opened).await;
        }
    }
    let r = c
        .inbound(RELEASE_NUMBERS[0].0, &cust(1), Some("STOP"))
        .await;
    assert_eq!(r.opt_change(), pb::OptChange::OptedOut);
    c.inbound(RELEASE_NUMBERS[1].0, &cust(100), Some("hello"))
        .await;
}

/// Writes tests/fixtures/data-dir-0.1 anew (fsync on, clean shutdown). Run
/// it by hand only when the stored format changes on purpose:
/// `cargo test -p admit-it --test e2e -- --ignored write_the_release_data_dir`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the stored data dir under tests/fixtures"]
async fn write_the_release_data_dir() {
    bounded(120, async {
        let (srv, mut c) = InProcess::start_with(RELEASE_AT, |cfg| cfg.fsync = true).await;
        fill_the_release_data_dir(&mut c).await;
        let dir = srv.stop_keeping_dir().await;
        let target = std::path::Path::new(RELEASE_DATA_DIR);
        if target.exists() {
            std::fs::remove_dir_all(target).unwrap();
        }
        copy_dir(dir.path(), target);
        trim_journals(target);
    })
    .await;
}

/// Cuts the zeros off the end of the preallocated journal files (64 MiB,
/// a few KB used), so that the stored data dir stays small; recovery reads
/// a journal up to its last entry either way.
fn trim_journals(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            trim_journals(&path);
        } else if path.extension().is_some_and(|e| e == "jnl") {
            let bytes = std::fs::read(&path).unwrap();
            let used = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(used.next_multiple_of(4_096) as u64).unwrap();
        }
    }
}

/// A data dir of release 0.1 (tests/fixtures/data-dir-0.1), opened by this
/// build on a copy: every number is found where it was routed (its shard
/// of 8), with its tier, usage, opt-out and open windows. A change of the
/// shard hash or of the stored format fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_0_1_data_dir_opens_with_its_state() {
    open_the_release_data_dir(|_| {}).await;
}

/// The same data dir opened as `admitd` opens it when no shard count is
/// configured: the default (16) is for new data dirs, this one keeps its 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_keeps_its_shard_count_when_none_is_configured() {
    assert_ne!(admit_server::DEFAULT_SHARDS, 8);
    open_the_release_data_dir(|cfg| {
        cfg.shards = admit_server::DEFAULT_SHARDS;
        cfg.shards_from_data_dir = true;
    })
    .await;
}

async fn open_the_release_data_dir(tweak: impl FnOnce(&mut admit_server::ServerConfig)) {
    bounded(120, async {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(std::path::Path::new(RELEASE_DATA_DIR), copy.path());
        let (srv, mut c) = InProcess::open(copy, RELEASE_AT + HOUR, tweak).await;
        for (i, (n, tier, limit, opened)) in RELEASE_NUMBERS.into_iter().enumerate() {
            let s = c.status(n).await;
            let usage = s.usage.unwrap();
            let t = usage.tier.unwrap();
            assert_eq!((t.name.as_str(), t.limit), (tier, limit), "{n}");
            assert_eq!(u64::from(usage.used), opened, "{n}");
            assert_eq!(s.opt_out_count, u64::from(i == 0), "{n}");
        }
        let (first, second) = (RELEASE_NUMBERS[0].0, RELEASE_NUMBERS[1].0);
        let d = c.admit(mkt(first, 1)).await.unwrap();
        assert_eq!(d.reason(), pb::Reason::OptedOut);
        let d = c.admit(util(first, 2)).await.unwrap();
        assert_eq!(d.reason(), pb::Reason::OpenConversation);
        let d = c.admit(free_form(second, 100)).await.unwrap();
        assert_eq!(d.reason(), pb::Reason::ServiceWindow);
        let d = c.admit(util(first, 3)).await.unwrap();
        assert_eq!(d.reason(), pb::Reason::NewConversation);
        assert_eq!(c.used(first).await, 4);
        srv.stop().await;
    })
    .await;
}

/// Waits until start-up has begun writing `data` (the child still running).
fn wait_for_data_dir(child: &mut std::process::Child, data: &std::path::Path) {
    let begun = std::time::Instant::now();
    while std::fs::read_dir(data).map_or(true, |mut d| d.next().is_none()) {
        assert!(child.try_wait().unwrap().is_none(), "admitd exited early");
        assert!(
            begun.elapsed() < std::time::Duration::from_secs(60),
            "no data dir"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// SIGTERM while the node is still starting stops it with status 0, not by
/// the signal's default action (death by signal 15): the handlers are in
/// place before the data dir is opened. The node then restarts on that dir
/// and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_start_up_shuts_down_cleanly() {
    let bin = tokio::task::spawn_blocking(admitd_path).await.unwrap();
    bounded(120, async move {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let t0 = at(1, 8);
        let mut child = Daemon::spawn(&bin, &data, t0);
        wait_for_data_dir(&mut child, &data);
        terminate(&mut child);
        let (d, mut c) = Daemon::connected(&bin, &data, t0).await;
        c.register(N, "TIER_1K").await;
        drop(c);
        d.terminate();
    })
    .await;
}

/// A node told to join through an address where nothing answers waits in
/// its start; SIGTERM still stops it (status 0, within `terminate`'s 30 s).
#[test]
fn sigterm_stops_a_node_still_waiting_to_join() {
    let bin = admitd_path();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // a port bound here and closed: nothing listens on it
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = std::process::Command::new(&bin)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .arg("--join")
        .arg(nobody.to_string())
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn admitd");
    wait_for_data_dir(&mut child, &data);
    // well into the wait for the join's answer
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(child.try_wait().unwrap().is_none(), "admitd exited early");
    terminate(&mut child);
}
