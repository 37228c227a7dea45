//! The journal's high-water mark, kept outside the journal.
//!
//! Every batch the journal's writer commits carries the next number of a
//! per-node write sequence (key [`SEQ_KEY`] in the metadata keyspace), so
//! the journal recovered at start says how far it got. After each fsync the
//! writer records the number it covered in a small file of its own
//! ([`FILE`], next to the journal). When the journal recovers fewer writes
//! than the file names, writes that were fsynced (and so possibly
//! acknowledged) are gone: fjall ends its recovery at the first record it
//! cannot read and cuts the file there, silently, so a damaged byte in the
//! middle of the newest journal file loses every batch after it. The node
//! then refuses to start instead of serving without them.
//!
//! The mark costs one 16-byte `pwrite` per fsync and is not fsynced itself
//! (it is synced when the journal closes): after `kill -9` the page cache
//! keeps it; after a power cut it may be older than the journal, which only
//! weakens the check (it never refuses a journal that is whole). Written
//! only with fsync on: without it a power cut may lose journal writes that
//! the OS had not written back, which the operator accepted.
//!
//! Imports std only.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The key of the write sequence in the metadata keyspace.
pub(crate) const SEQ_KEY: &[u8] = b"admit-journal-seq";
/// The mark's file name, in the data dir.
pub(crate) const FILE: &str = "journal.hwm";

/// Mixed into the check word, so that zeros are not a valid record.
const MAGIC: u64 = 0x6164_6d69_742d_6877;

/// The 16 bytes of a record: the number, then a check word.
fn encode(seq: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b[8..].copy_from_slice(&check(seq).to_le_bytes());
    b
}

fn check(seq: u64) -> u64 {
    (seq ^ MAGIC)
        .rotate_left(23)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The write sequence stored with a batch.
pub(crate) fn seq_value(seq: u64) -> Vec<u8> {
    seq.to_be_bytes().to_vec()
}

/// The write sequence read back from the journal (0: never written).
pub(crate) fn parse_seq(v: Option<&[u8]>) -> io::Result<u64> {
    match v {
        None => Ok(0),
        Some(b) => <[u8; 8]>::try_from(b)
            .map(u64::from_be_bytes)
            .map_err(|_| io::Error::other(format!("the write sequence has {} bytes", b.len()))),
    }
}

/// The open mark file.
pub(crate) struct Mark {
    file: File,
    path: PathBuf,
}

impl Mark {
    /// Opens (or creates) the mark in `dir`; the number it holds, if any.
    /// A file shorter than a record was never completely written (a crash
    /// right after its creation) and counts as absent; a whole record that
    /// fails its check is damage, refused with the file's name.
    pub(crate) fn open(dir: &Path) -> io::Result<(Self, Option<u64>)> {
        let path = dir.join(FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut b = [0u8; 16];
        let held = if file.metadata()?.len() < 16 {
            None
        } else {
            file.read_exact_at(&mut b, 0)?;
            let seq = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
            let word = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
            if word != check(seq) {
                return Err(io::Error::other(format!(
                    "the high-water mark {} is damaged (if the journal is known to be \
                     whole, delete that file to start without the check)",
                    path.display()
                )));
            }
            Some(seq)
        };
        Ok((Self { file, path }, held))
    }

    /// Records that the journal holds every write up to `seq` on disk.
    pub(crate) fn record(&self, seq: u64) -> io::Result<()> {
        self.file.write_all_at(&encode(seq), 0)
    }

    /// Makes the last record durable (at a clean close).
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (m, held) = Mark::open(dir.path()).unwrap();
        assert_eq!(held, None);
        m.record(41).unwrap();
        m.record(42).unwrap();
        drop(m);
        let (_, held) = Mark::open(dir.path()).unwrap();
        assert_eq!(held, Some(42));
        let path = dir.path().join(FILE);
        let mut b = std::fs::read(&path).unwrap();
        b[3] ^= 0x10;
        std::fs::write(&path, &b).unwrap();
        let e = Mark::open(dir.path()).err().expect("damage refused");
        assert!(e.to_string().contains(FILE), "{e}");
        // a record never completely written counts as absent
        std::fs::write(&path, &b[..7]).unwrap();
        assert_eq!(Mark::open(dir.path()).unwrap().1, None);
    }
}
