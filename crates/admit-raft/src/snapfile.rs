//! Snapshot files: each group's latest snapshot bytes live in a file of
//! their own (`<data_dir>/snapshots/<group>-<index>-<checksum>.snap`); the
//! journal keeps only a small record of it ([`SnapRecord`]: the snapshot's
//! meta, the file's name, length and checksum). So a snapshot of any size is
//! written on a blocking thread, beside the journal's single writer, and the
//! appends of the other groups never wait behind it.
//!
//! **Order of a store** (`store` then the record, then `remove_other`):
//! the bytes go to `<name>.tmp`, which is fsynced, renamed to `<name>`, and
//! the directory fsynced; only then is the record submitted to the journal,
//! and only once the record is durable is the group's previous file removed
//! (and only then does openraft learn the snapshot is stored, and may purge
//! the log below it). A crash at any point leaves the journal with the old
//! record and its file (untouched) or the new record and its file (durable
//! before the record was written). Files no record names (a `.tmp`, a file
//! whose record was lost, an old file whose removal was lost) are removed
//! when the group opens. A store older than the group's stored snapshot (a
//! build that an install from the leader overtook) is skipped: its record
//! would name a state behind the purged log.
//!
//! **Power-cut simulation** ([`crate::NodeConfig::simulate_power_loss`]):
//! it undoes the journal writes not yet fsynced. The files need no undoing
//! of their own: a file is fsynced, and its name in the directory too,
//! before any journal record names it, so no state after a cut refers to a
//! file write that the cut could lose; what the cut could lose (a `.tmp`, a
//! rename whose record is lost with it, a removal) is only ever a file no
//! durable record names, which the next open removes anyway.
//!
//! **Names.** A name carries the group, the snapshot's last index and the
//! checksum of its bytes, so two snapshots of one group get one name only
//! when their bytes are equal (the same state): rewriting it is harmless,
//! and the old file of a store is never the new one.
//!
//! Records written before this module (the bytes inline in the journal, key
//! `group`) are still read; the first new record of the group deletes it in
//! the same atomic batch.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::journal::{io_err, REBUILD};
use crate::types::SnapshotMetaT;
use crate::App;

/// The journal record of a snapshot stored in a file. Its first field is
/// the meta, like the inline record's (the start-time check reads only
/// that).
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct SnapRecord<A: App> {
    pub(crate) meta: SnapshotMetaT<A>,
    pub(crate) file: String,
    pub(crate) len: u64,
    pub(crate) sum: u64,
}

/// Key of a group's inline snapshot record (the layout before snapshot
/// files; read, never written).
pub(crate) fn inline_key(shard: u32) -> Vec<u8> {
    shard.to_be_bytes().to_vec()
}

/// Key of a group's file record.
pub(crate) fn file_key(shard: u32) -> Vec<u8> {
    let mut k = inline_key(shard);
    k.push(b'f');
    k
}

/// Exclusive upper bound of [`inline_key`] alone (the file key sorts after it).
pub(crate) fn inline_key_end(shard: u32) -> Vec<u8> {
    let mut k = inline_key(shard);
    k.push(0);
    k
}

/// 64-bit FNV-1a: catches a damaged or swapped file (not an adversary).
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Called with the group before a snapshot's bytes are written (a test's
/// gate; see [`crate::NodeConfig::snapshot_write_hook`]).
pub(crate) type WriteHook = std::sync::Arc<dyn Fn(u32) + Send + Sync>;

/// The snapshot directory of one data dir.
pub(crate) struct SnapDir {
    dir: PathBuf,
    fsync: bool,
    hook: Option<WriteHook>,
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl SnapDir {
    /// `<data_dir>/snapshots`, created (and made durable) if missing.
    pub(crate) fn open(data_dir: &Path, fsync: bool, hook: Option<WriteHook>) -> io::Result<Self> {
        let dir = data_dir.join("snapshots");
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir)?;
            if fsync {
                sync_dir(data_dir)?;
            }
        }
        Ok(Self { dir, fsync, hook })
    }

    /// The file name of group `shard`'s snapshot at `index` with bytes of
    /// checksum `sum`.
    pub(crate) fn name(shard: u32, index: u64, sum: u64) -> String {
        format!("{shard}-{index}-{sum:016x}.snap")
    }

    /// Write `bytes` of group `shard` durably as `name` (blocking): temp
    /// file, fsync, rename, fsync of the directory.
    pub(crate) fn store(&self, shard: u32, name: &str, bytes: &[u8]) -> io::Result<()> {
        if let Some(hook) = &self.hook {
            hook(shard);
        }
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        if self.fsync {
            f.sync_all()?;
        }
        drop(f);
        std::fs::rename(&tmp, self.dir.join(name))?;
        if self.fsync {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The bytes of the file a record names, checked against it.
    pub(crate) fn load<A: App>(&self, shard: u32, rec: &SnapRecord<A>) -> io::Result<Vec<u8>> {
        let path = self.dir.join(&rec.file);
        let refuse = |what: String| {
            io_err(format!(
                "group {shard}: snapshot file {}: {what}; {REBUILD}",
                path.display()
            ))
        };
        let bytes = std::fs::read(&path).map_err(|e| refuse(format!("cannot be read ({e})")))?;
        if bytes.len() as u64 != rec.len || checksum(&bytes) != rec.sum {
            return Err(refuse(format!(
                "{} bytes, checksum {:016x}; the journal recorded {} bytes, {:016x}",
                bytes.len(),
                checksum(&bytes),
                rec.len,
                rec.sum
            )));
        }
        Ok(bytes)
    }

    /// Remove every file of group `shard` but `keep` (blocking). Failures
    /// are only logged: a file left over is removed at the next open.
    pub(crate) fn remove_other(&self, shard: u32, keep: Option<&str>) {
        let prefix = format!("{shard}-");
        let Ok(list) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in list.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(&prefix) && Some(name) != keep {
                if let Err(err) = std::fs::remove_file(e.path()) {
                    tracing::warn!(file = %e.path().display(), error = %err, "an old snapshot file was not removed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        assert_eq!(SnapDir::name(3, 42, 0xab), "3-42-00000000000000ab.snap");
        // group 1's files are not group 12's
        assert!(!SnapDir::name(12, 1, 1).starts_with("1-"));
        assert!(inline_key(7) < inline_key_end(7));
        assert!(inline_key_end(7) <= file_key(7));
        assert_ne!(checksum(b"ab"), checksum(b"ba"));
    }
}
