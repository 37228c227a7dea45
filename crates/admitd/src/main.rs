//! `admitd`: runs one admit node. With no arguments: a single-node cluster on
//! 127.0.0.1:50051 with its data in `./admit-data`. See `admitd --help`.
//!
//! ## Layering
//!
//! The binary only wires a node together: `config` reads the TOML file, then
//! flags and `ADMIT_*` variables over it, and validates once (naming the bad
//! field); `main` sets up logging, hands the resulting `ServerConfig` to
//! `admit_server::start`, and turns SIGTERM/SIGINT into a graceful shutdown.
//! It may import `admit-server` (its start-up API and configuration types),
//! `admit-webhook` (the receiver's `Config` and `serve`, started when
//! `webhook` says so) and `admit-core` for plain values in the configuration
//! (`Ts`). It must not
//! hold rule logic (every rule is in `admit-core`), build services, routes or
//! Raft groups itself (that is `admit-server` and `admit-raft`), or see
//! protobuf types: anything a node does beyond reading its settings belongs
//! in a library crate where tests can reach it.
//!
//! The process's allocator is jemalloc (`tikv-jemallocator`): set here, in
//! the binary, so libraries and their tests keep the system's. glibc's
//! malloc cost a node 15 % of its samples; jemalloc served 25-35 % more new
//! conversations at the same resident memory (docs/benchmarks.md).

mod config;
mod transport;
mod webhook;

use anyhow::Context;
use clap::Parser;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once when it starts (before `main`, so they cannot come
/// from admitd's configuration; `_RJEM_MALLOC_CONF` in the environment overrides
/// them). Its defaults give every thread of a node its own arena (four per core),
/// each keeping its own part-filled pages, and hold freed pages for 10 s. Two arenas
/// and freed pages returned after 1 s held 35-40 MiB less with 1M open windows (about
/// 15 % of the node's memory) at the same throughput on the 2 cores the Kubernetes
/// example gives a node (docs/benchmarks.md, "jemalloc's arenas").
// exporting the symbol jemalloc looks for is `unsafe` only as a name that must not
// clash; nothing else touches it
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 47] = b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `admitd hash-token`: the SHA-256 of a token read from stdin, for
    // `token_sha256` (the token stays out of argv and shell history)
    if std::env::args().nth(1).as_deref() == Some("hash-token") {
        let mut token = String::new();
        std::io::stdin().read_line(&mut token)?;
        println!(
            "{}",
            admit_server::auth::hash_token(token.trim_end_matches(['\r', '\n']))
        );
        return Ok(());
    }
    let flags = config::Flags::parse();
    init_logs(&flags);
    // before anything is opened, so that no signal meets the default action
    // (the end of the process, with no shutdown)
    let stop = shutdown_signal().context("admitd: installing the signal handlers")?;
    tokio::pin!(stop);
    let cfg = match config::load(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("admitd: {e}");
            std::process::exit(2);
        }
    };
    let data_dir = cfg.data_dir.clone();
    // ---- webhook receiver: settings checked before anything starts ----
    let webhook_cfg = match webhook::load(&flags, &data_dir, cfg.transport.reload_interval) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("admitd: {e}");
            std::process::exit(2);
        }
    };
    // a start can wait without end (`--join` through a node that never
    // answers), so a signal stops it; what it had written is as safe as
    // after a crash (every write is synced before it is acknowledged)
    let running = tokio::select! {
        r = admit_server::start(cfg) => r.context("admitd failed to start")?,
        _ = &mut stop => {
            tracing::info!("shutdown requested during start-up; stopping");
            return Ok(());
        }
    };
    let receiver = match webhook_cfg {
        Some(c) => match admit_webhook::serve(c, running.in_process()).await {
            Ok(r) => {
                println!("admitd webhook receiver on {}", r.local_addr());
                Some(r)
            }
            Err(e) => {
                running.shutdown().await.context("flushing the journal")?;
                return Err(e).context("admitd: the webhook receiver failed to start");
            }
        },
        None => None,
    };
    println!(
        "admitd listening on {} (gRPC: admit.v1 AdmitSend, Admin, TestClock, Cluster; grpc.health.v1; reflection){}",
        running.local_addr(),
        if running.test_clock() { " [test clock]" } else { "" }
    );
    println!("admitd peer port {}", running.peer_addr());
    println!("admitd data dir {}", data_dir.display());
    if let Some(m) = running.metrics_addr() {
        println!("admitd metrics on http://{m}/metrics");
    }
    stop.await;
    tracing::info!("shutdown requested; draining");
    if let Some(r) = receiver {
        r.shutdown().await;
    }
    running.shutdown().await.context("flushing the journal")?;
    Ok(())
}

/// Logs to stderr, as text (colour codes only when stderr is a terminal,
/// so files and collectors get plain lines) or as JSON lines.
fn init_logs(flags: &config::Flags) {
    use std::io::IsTerminal;
    let format = match config::log_format(flags) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("admitd: {e}");
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,openraft=error,fjall=warn,lsm_tree=warn".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        config::LogFormat::Json => b.json().init(),
        config::LogFormat::Text => b.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// SIGINT (Ctrl-C) or SIGTERM. The handlers are installed by this call,
/// not by the first poll of what it returns, so a signal that comes before
/// the node awaits it is kept, not left to its default action (the end of
/// the process).
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Ctrl-C, where there are no Unix signals.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
