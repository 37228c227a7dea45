//! The Raft state machine of one shard: [`admit_core::Engine`] behind the
//! [`admit_raft::App`] contract.
//!
//! A log entry is a [`Stamped`] command: the core command plus the time the
//! proposing leader read from its clock. Every replica applies it at that time,
//! so they all decide alike; the decision that opens (and counts) a
//! conversation is taken here, when the entry is applied, never on the leader
//! before commit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use admit_core::{Command, CoreError, Engine, Output, Reader, Ts};
use serde::{Deserialize, Serialize};

mod layout;

/// A command as it is stored in the log: the core command, its time and, for
/// an audited change, who made it (layout 4, see `app/layout.rs`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stamped {
    /// The service-clock time the proposer stamped (UTC ms).
    pub at: Ts,
    pub cmd: Command,
    /// The authenticated caller of an admin or cluster change (`None` for
    /// sends, ticks and changes without auth): every replica's audit line
    /// names it.
    pub by: Option<String>,
}

/// What applying a [`Stamped`] command gave.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reply {
    pub out: Result<Output, CoreError>,
    /// The decision is one recorded earlier for the same idempotency key.
    pub replayed: bool,
}

/// A reader handle that survives snapshot installs.
///
/// Snapshots are loaded in place ([`Engine::load_snapshot`]), so readers stay
/// valid; the slot is refreshed on restore anyway, so the server does not
/// depend on that detail. Handlers clone the current reader out of it (one
/// uncontended read lock, a pointer copy).
#[derive(Clone, Debug)]
pub struct ReaderSlot {
    reader: Arc<RwLock<Reader>>,
    applied: Arc<AtomicU64>,
}

impl ReaderSlot {
    /// The current reader of the shard's applied state.
    pub fn get(&self) -> Reader {
        self.reader
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The Raft log index of the last entry applied (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }
}

/// One shard's replicated state machine.
#[derive(Debug)]
pub struct ShardApp {
    engine: Engine,
    slot: ReaderSlot,
}

impl ShardApp {
    /// A fresh, empty shard and the reader slot that follows it.
    pub fn new() -> (ShardApp, ReaderSlot) {
        let engine = Engine::new();
        let slot = ReaderSlot {
            reader: Arc::new(RwLock::new(engine.reader())),
            applied: Arc::new(AtomicU64::new(0)),
        };
        (
            ShardApp {
                engine,
                slot: slot.clone(),
            },
            slot,
        )
    }

    /// The engine (for reads on the state-machine task, e.g. policies).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// After a command's apply: the audit line of a change a caller made,
    /// and the applied index the reader slot reports.
    fn applied(
        &self,
        index: u64,
        by: Option<&str>,
        summary: Option<String>,
        out: Result<Output, CoreError>,
    ) -> Reply {
        if let (Some(by), Some(summary)) = (by, &summary) {
            let result = out.as_ref().map(|_| ()).map_err(|e| e.to_string());
            crate::auth::audit::applied(by, index, summary, result);
        }
        let replayed = matches!(&out, Ok(Output::Decision(d)) if d.replayed);
        self.slot.applied.store(index, Ordering::Release);
        Reply { out, replayed }
    }
}

impl admit_raft::App for ShardApp {
    type Command = Stamped;
    type Response = Reply;

    // older logs still replay: see app/layout.rs
    const COMMAND_LAYOUT: u32 = layout::CURRENT;
    const UNVERSIONED_LAYOUTS: &'static [u32] = layout::UNVERSIONED;

    fn decode_command<'de, D: serde::Deserializer<'de>>(
        layout: u32,
        d: D,
    ) -> Result<Stamped, D::Error> {
        layout::decode(layout, d)
    }

    fn layout_of(cmds: &[Stamped]) -> u32 {
        layout::of(cmds)
    }

    fn apply(&mut self, index: u64, cmd: Stamped) -> Reply {
        let Stamped { at, cmd, by } = cmd;
        let summary = by.as_ref().map(|_| crate::auth::audit::summary(&cmd));
        let out = self.engine.apply(cmd, at);
        self.applied(index, by.as_deref(), summary, out)
    }

    fn apply_ref(&mut self, index: u64, cmd: &Stamped) -> Reply {
        let summary = cmd
            .by
            .as_ref()
            .map(|_| crate::auth::audit::summary(&cmd.cmd));
        let out = self.engine.apply_ref(&cmd.cmd, cmd.at);
        self.applied(index, cmd.by.as_deref(), summary, out)
    }

    fn snapshot(&self) -> Vec<u8> {
        // the applied index is not part of the bytes: admit-raft keeps it in
        // the snapshot's metadata, and replicas must produce identical bytes
        let started = std::time::Instant::now();
        let bytes = self.engine.snapshot();
        crate::telemetry::snapshot_built(started.elapsed().as_secs_f64(), bytes.len());
        bytes
    }

    fn snapshot_job(&self) -> admit_raft::SnapshotJob {
        // the copy here, on the state-machine task; sorting and encoding,
        // most of the work, on the job's thread while applies go on
        let started = std::time::Instant::now();
        let frozen = self.engine.freeze();
        let copied = started.elapsed();
        Box::new(move || {
            let started = std::time::Instant::now();
            let bytes = frozen.encode();
            let secs = (copied + started.elapsed()).as_secs_f64();
            crate::telemetry::snapshot_built(secs, bytes.len());
            bytes
        })
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        // in place: readers handed out before keep seeing the state
        self.engine
            .load_snapshot(bytes)
            .map_err(|e| e.to_string())?;
        // and the slot follows the engine in any case
        *self.slot.reader.write().unwrap_or_else(|p| p.into_inner()) = self.engine.reader();
        Ok(())
    }

    fn check_snapshot(bytes: &[u8]) -> Result<(), String> {
        // a whole decode: a snapshot crosses the network rarely (a replica
        // far behind), and one restore would fail on is refused before it
        admit_core::Engine::restore(bytes)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
