//! Checks of the journal's files that fjall reads at open without checking
//! them first, where damage would abort the process instead of failing.
//!
//! **Version files.** Each tree's `current` file names its current version file
//! (`v{id}`) and holds that file's checksum (xxh3, 128 bits), but the version is
//! decoded without checking it: a damaged count there is used to reserve memory
//! (up to ~100 GB, an abort). The checksum is checked here first.
//!
//! **Archives.** fjall keeps its tables and version files as archives (the `sfa` format: sections,
//! then a table of contents, then a fixed trailer naming where the table starts).
//! The table of contents begins with its entry count, and the reader reserves room
//! for that many entries before it reads them or checks the table's checksum: a
//! damaged count (a flipped byte on disk) asks for up to ~140 GB and aborts the
//! process, which no `catch_unwind` can turn into a refusal. Each entry takes at
//! least 18 bytes, so a count the file cannot hold is damage: the node refuses the
//! data dir naming the file, as for any other damage ([`crate::journal::REBUILD`]).
//! Everything else about an archive is left to fjall, which checks it.
//!
//! Imports the standard library and `xxhash-rust` only.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// magic 4, version 1, checksum type 1, checksum 16, position of the table 8,
/// its length 8 (unused by the reader).
const TRAILER_BYTES: u64 = 38;
const TRAILER_MAGIC: &[u8; 4] = b"SFA!";
const TOC_MAGIC: &[u8; 4] = b"TOC!";
/// An entry: position 8, length 8, name length 2, then the name.
const MIN_ENTRY_BYTES: u64 = 18;

/// The first version file under `dir` whose checksum is not the one its
/// tree's `current` file holds, and that `current` file. A `current` file
/// too short to hold a checksum, or naming a missing version, is fjall's to
/// refuse.
pub(crate) fn find_damaged_version(dir: &Path) -> io::Result<Option<(PathBuf, PathBuf)>> {
    for current in files_named(dir, "current")? {
        let bytes = std::fs::read(&current)?;
        if bytes.len() < 25 || bytes[24] != 0 {
            continue; // 0: xxh3, the only kind written
        }
        let id = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let expected = u128::from_le_bytes(bytes[8..24].try_into().expect("16 bytes"));
        let version = current.with_file_name(format!("v{id}"));
        let body = match std::fs::read(&version) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if xxhash_rust::xxh3::xxh3_128(&body) != expected {
            return Ok(Some((version, current)));
        }
    }
    Ok(None)
}

/// Every file under `dir` (recursively) called `name`.
fn files_named(dir: &Path, name: &str) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(dir, &mut |p| {
        if p.file_name().is_some_and(|n| n == name) {
            out.push(p.to_path_buf());
        }
        Ok(false)
    })?;
    Ok(out)
}

/// Calls `visit` on every file under `dir` until it returns true.
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path) -> io::Result<bool>) -> io::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() && visit(&entry.path())? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The first archive under `dir` whose table of contents claims more entries
/// than it can hold, and what it claims. Files that are not archives, and
/// archives damaged in other ways, are fjall's to refuse.
pub(crate) fn find_impossible_count(dir: &Path) -> io::Result<Option<(PathBuf, u32)>> {
    let mut found = None;
    walk(dir, &mut |p| {
        found = impossible_count(p)?.map(|count| (p.to_path_buf(), count));
        Ok(found.is_some())
    })?;
    Ok(found)
}

fn impossible_count(path: &Path) -> io::Result<Option<u32>> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    if size < TRAILER_BYTES {
        return Ok(None);
    }
    let mut trailer = [0u8; TRAILER_BYTES as usize];
    f.seek(SeekFrom::Start(size - TRAILER_BYTES))?;
    f.read_exact(&mut trailer)?;
    if &trailer[..4] != TRAILER_MAGIC {
        return Ok(None);
    }
    let toc_at = u64::from_le_bytes(trailer[22..30].try_into().expect("8 bytes"));
    let toc_end = size - TRAILER_BYTES;
    if toc_at
        .checked_add(8)
        .is_none_or(|head_end| head_end > toc_end)
    {
        return Ok(None); // the reader fails to read it, without a large allocation
    }
    let mut head = [0u8; 8];
    f.seek(SeekFrom::Start(toc_at))?;
    f.read_exact(&mut head)?;
    if &head[..4] != TOC_MAGIC {
        return Ok(None);
    }
    let count = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
    let room = toc_end - toc_at - 8;
    Ok((u64::from(count) * MIN_ENTRY_BYTES > room).then_some(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive of `entries` empty-named entries laid out as the reader
    /// expects (checksums are not this check's business).
    fn archive(entries: u32, claimed: u32) -> Vec<u8> {
        let mut b = vec![7u8; 100]; // sections
        let toc_at = b.len() as u64;
        b.extend_from_slice(TOC_MAGIC);
        b.extend_from_slice(&claimed.to_le_bytes());
        for _ in 0..entries {
            b.extend_from_slice(&[0u8; 18]);
        }
        b.extend_from_slice(TRAILER_MAGIC);
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&[0u8; 16]);
        b.extend_from_slice(&toc_at.to_le_bytes());
        b.extend_from_slice(&[0u8; 8]);
        b
    }

    #[test]
    fn a_count_the_file_cannot_hold_is_found_and_a_true_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("keyspaces/0");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::write(nested.join("v0"), archive(3, 3)).unwrap();
        std::fs::write(dir.path().join("not-an-archive"), [1u8; 64]).unwrap();
        assert_eq!(find_impossible_count(dir.path()).unwrap(), None);
        // one more entry than the file holds: the edge
        std::fs::write(nested.join("v1"), archive(3, 4)).unwrap();
        assert_eq!(
            find_impossible_count(dir.path()).unwrap(),
            Some((nested.join("v1"), 4))
        );
        std::fs::write(nested.join("v1"), archive(3, u32::MAX)).unwrap();
        assert_eq!(
            find_impossible_count(dir.path()).unwrap(),
            Some((nested.join("v1"), u32::MAX))
        );
    }

    #[test]
    fn a_missing_dir_holds_no_damage() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent");
        assert_eq!(find_impossible_count(&absent).unwrap(), None);
        assert_eq!(find_damaged_version(&absent).unwrap(), None);
    }

    #[test]
    fn a_version_file_is_checked_against_its_current_file() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("keyspaces/1");
        std::fs::create_dir_all(&tree).unwrap();
        let body = archive(2, 2);
        let mut current = 7u64.to_le_bytes().to_vec();
        current.extend_from_slice(&xxhash_rust::xxh3::xxh3_128(&body).to_le_bytes());
        current.push(0);
        std::fs::write(tree.join("current"), &current).unwrap();
        std::fs::write(tree.join("v7"), &body).unwrap();
        std::fs::write(tree.join("v6"), b"an older version: not read").unwrap();
        assert_eq!(find_damaged_version(dir.path()).unwrap(), None);
        let mut damaged = body.clone();
        damaged[3] ^= 1;
        std::fs::write(tree.join("v7"), &damaged).unwrap();
        assert_eq!(
            find_damaged_version(dir.path()).unwrap(),
            Some((tree.join("v7"), tree.join("current")))
        );
    }
}
