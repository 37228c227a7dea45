//! A node's recorder holds histogram samples only until it folds them into
//! their buckets, whether or not anyone scrapes `/metrics`: the memory of a
//! node nobody scrapes stays bounded. Measured with a counting allocator, so
//! this file holds one test (nothing else allocates while it measures).
#![allow(unsafe_code)] // a counting global allocator needs `unsafe impl GlobalAlloc`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const SAMPLES: usize = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histogram_samples_are_folded_without_a_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = admit_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path());
    cfg.shards = 1;
    cfg.fsync = false;
    cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let running = admit_server::start(cfg).await.expect("server starts");
    assert!(running.metrics_addr().is_some(), "metrics served");
    // let start-up settle, then measure from here
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = live();

    // the samples a busy node records between two scrapes, or in an hour
    // with no scraper: each call's latency, as the service records it
    let h = metrics::histogram!("admit_rpc_duration_seconds", "method" => "Admit", "code" => "OK");
    for i in 0..SAMPLES {
        h.record(0.000_5 + (i % 100) as f64 * 1e-5);
    }
    let held = live() - base;
    assert!(
        held >= (SAMPLES * 8) as isize / 2,
        "the recorder holds the samples until they are folded ({held} bytes held)"
    );

    // nothing scrapes: within two fold periods (5 s each) and the
    // recorder's deferred frees, the samples are folded and their memory freed
    let deadline = Instant::now() + Duration::from_secs(30);
    let bound = 1 << 20;
    loop {
        let held = live() - base;
        if held < bound {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{held} bytes still held 30 s after {SAMPLES} samples, without a scrape \
             (bound {bound})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.shutdown().await.expect("clean shutdown");
}
