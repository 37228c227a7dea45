//! admitd's configuration: a TOML file (optional), then flags and environment
//! variables over it, then one validation step that names the bad field.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use admit_server::{Quota, ServerConfig};
use serde::Deserialize;

/// The TOML file. Every field is optional; unknown fields are an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub node_id: Option<u64>,
    pub listen: Option<String>,
    pub advertise: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub shards: Option<u32>,
    pub test_clock: Option<bool>,
    pub test_clock_start_ms: Option<u64>,
    pub tick_interval_ms: Option<u64>,
    pub max_in_flight: Option<usize>,
    pub fsync: Option<bool>,
    pub snapshot_every: Option<u64>,
    pub caller_quota: Option<QuotaConfig>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Requests per second per caller (metadata `x-admit-caller`).
    pub rate: f64,
    /// Burst size.
    pub burst: f64,
}

/// Command-line flags (each also readable from an `ADMIT_*` variable).
#[derive(Debug, Default, clap::Parser)]
#[command(
    name = "admitd",
    version,
    about = "admit: WhatsApp messaging-limit admission server"
)]
pub struct Flags {
    /// TOML config file; flags and environment variables override it.
    #[arg(long, env = "ADMIT_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "ADMIT_LISTEN")]
    pub listen: Option<String>,
    /// Address other nodes reach this one at [default: the bound address].
    #[arg(long, env = "ADMIT_ADVERTISE")]
    pub advertise: Option<String>,
    /// Data directory [default: ./admit-data].
    #[arg(long, env = "ADMIT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Raft node id [default: 1].
    #[arg(long, env = "ADMIT_NODE_ID")]
    pub node_id: Option<u64>,
    /// Number of shards (Raft groups), fixed for a data dir [default: 64].
    #[arg(long, env = "ADMIT_SHARDS")]
    pub shards: Option<u32>,
    /// Run on the controllable test clock (TestClock RPCs accepted).
    #[arg(long, env = "ADMIT_TEST_CLOCK")]
    pub test_clock: bool,
    /// Where the test clock starts (Unix ms) [default: now].
    #[arg(long, env = "ADMIT_TEST_CLOCK_START_MS")]
    pub test_clock_start_ms: Option<u64>,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:50051";

/// Reads the file (if any), applies the flags and validates.
pub fn load(flags: &Flags) -> Result<ServerConfig, String> {
    let file = match &flags.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
            parse(&text).map_err(|e| format!("config file {}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    resolve(file, flags)
}

/// Parses the TOML text.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// Merges file and flags into a validated server config.
pub fn resolve(file: FileConfig, flags: &Flags) -> Result<ServerConfig, String> {
    let bad = |field: &str, why: &str| format!("invalid {field}: {why}");
    let listen_text = flags
        .listen
        .clone()
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen: SocketAddr = listen_text
        .parse()
        .map_err(|_| bad("listen", "must be an address like 127.0.0.1:50051"))?;
    let data_dir = flags
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("./admit-data"));
    if data_dir.as_os_str().is_empty() {
        return Err(bad("data_dir", "must not be empty"));
    }
    let mut c = ServerConfig::new(listen, data_dir);
    c.node_id = flags.node_id.or(file.node_id).unwrap_or(1);
    if c.node_id == 0 {
        return Err(bad("node_id", "must be at least 1"));
    }
    c.shards = flags.shards.or(file.shards).unwrap_or(64);
    if !(1..=4_096).contains(&c.shards) {
        return Err(bad("shards", "must be 1 to 4096"));
    }
    c.advertise = flags.advertise.clone().or(file.advertise);
    if let Some(a) = &c.advertise {
        if !a.contains(':') {
            return Err(bad("advertise", "must be host:port"));
        }
    }
    c.test_clock = flags.test_clock || file.test_clock.unwrap_or(false);
    c.test_clock_start = flags
        .test_clock_start_ms
        .or(file.test_clock_start_ms)
        .map(admit_core::Ts);
    if c.test_clock_start.is_some() && !c.test_clock {
        return Err(bad("test_clock_start_ms", "needs test_clock = true"));
    }
    if let Some(ms) = file.tick_interval_ms {
        if ms == 0 {
            return Err(bad("tick_interval_ms", "must be at least 1"));
        }
        c.tick_interval = Duration::from_millis(ms);
    }
    if let Some(n) = file.max_in_flight {
        if n == 0 {
            return Err(bad("max_in_flight", "must be at least 1"));
        }
        c.max_in_flight = n;
    }
    if let Some(f) = file.fsync {
        c.fsync = f;
    }
    if let Some(n) = file.snapshot_every {
        if n == 0 {
            return Err(bad("snapshot_every", "must be at least 1"));
        }
        c.snapshot_every = n;
    }
    if let Some(q) = file.caller_quota {
        if !(q.rate.is_finite() && q.rate > 0.0) {
            return Err(bad("caller_quota.rate", "must be above zero"));
        }
        if !(q.burst.is_finite() && q.burst >= 1.0) {
            return Err(bad("caller_quota.burst", "must be at least 1"));
        }
        c.caller_quota = Some(Quota {
            rate: q.rate,
            burst: q.burst,
        });
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_file_or_flags() {
        let c = resolve(FileConfig::default(), &Flags::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.data_dir, PathBuf::from("./admit-data"));
        assert_eq!(c.shards, 64);
        assert!(!c.test_clock);
    }

    #[test]
    fn unknown_and_bad_fields_are_named() {
        let e = parse("shardz = 3").unwrap_err();
        assert!(e.contains("shardz"), "{e}");
        let f = parse("shards = 0").unwrap();
        let e = resolve(f, &Flags::default()).unwrap_err();
        assert!(e.contains("shards"), "{e}");
        let f = parse("listen = \"nope\"").unwrap();
        assert!(resolve(f, &Flags::default())
            .unwrap_err()
            .contains("listen"));
        let f = parse("[caller_quota]\nrate = 0\nburst = 1").unwrap();
        assert!(resolve(f, &Flags::default())
            .unwrap_err()
            .contains("caller_quota.rate"));
    }

    #[test]
    fn flags_override_the_file() {
        let f = parse("shards = 8\nlisten = \"127.0.0.1:1\"").unwrap();
        let flags = Flags {
            shards: Some(4),
            test_clock: true,
            ..Flags::default()
        };
        let c = resolve(f, &flags).unwrap();
        assert_eq!(c.shards, 4);
        assert_eq!(c.listen.port(), 1);
        assert!(c.test_clock);
    }
}
