//! The floors served by a process of their own (`--serve-floor`) and measured
//! from another (`--floor-target`), as `scripts/bench-peers.sh` runs them.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BENCH: &str = env!("CARGO_BIN_EXE_admit-bench");

/// Kills the floor server however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

fn measure(url: &str) -> Output {
    Command::new(BENCH)
        .args(["--seconds", "1", "--concurrency", "4", "--connections", "1"])
        .args(["--scenarios", "floor,batch-floor", "--label", "t"])
        .args(["--floor-target", url])
        .output()
        .expect("admit-bench runs")
}

#[test]
fn the_floors_are_measured_against_the_server_named() {
    let addr = free_addr();
    let server = Server(
        Command::new(BENCH)
            .args(["--serve-floor", &addr.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .expect("admit-bench --serve-floor starts"),
    );
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the floor server never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("http://{addr}");
    let out = measure(&url);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rates: Vec<(&str, f64)> = stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 4 && f[0] == "result").then(|| (f[2], f[3].parse().unwrap_or(0.0)))
        })
        .collect();
    assert_eq!(rates.len(), 2, "{stdout}");
    assert!(
        rates[0].0.starts_with("floor:") && rates[0].1 > 0.0,
        "{rates:?}"
    );
    assert!(
        rates[1].0.starts_with("batch floor") && rates[1].1 > 0.0,
        "{rates:?}"
    );
    // with the server gone the same measurement fails: it used that server,
    // not one of its own
    drop(server);
    let out = measure(&url);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
