//! The start-time check of every group's stored log, run before openraft
//! sees it: the entries of each group are one run without a gap, the run
//! starts right after the purge point (or at the start of the log), and no
//! group's committed marker names an entry beyond what is stored (the log,
//! the purge point or the snapshot). A journal that lost writes in the
//! middle (an older journal file cut short by damage: fjall stops reading a
//! file at the first record it cannot read) fails one of these, and the
//! node refuses to start with the group and the missing indexes instead of
//! serving a log with a hole. Reading every entry also checks the
//! checksums of every table block they live in.
//!
//! The journal's high-water mark ([`crate::watermark`]) catches what this
//! cannot: a whole suffix of the journal lost, markers included.
//!
//! Imports the journal, the store's and the snapshot files' keys.

use std::io;
use std::path::Path;

use crate::journal::{io_err, Journal, REBUILD};
use crate::snapfile::{file_key, inline_key};
use crate::store::{decode, meta_key, TAG_COMMITTED, TAG_PURGED};
use crate::types::LogIdT;
use crate::App;

/// The first field of a stored snapshot record, inline or of a file
/// (postcard reads fields in order, so the rest is not decoded).
#[derive(serde::Deserialize)]
#[serde(bound = "")]
struct SnapHead<A: App> {
    last_log_id: Option<LogIdT<A>>,
}

/// Checks the logs of groups `0..groups` in the journal of data dir `dir`.
pub(crate) fn check<A: App>(journal: &Journal, groups: u32, dir: &Path) -> io::Result<()> {
    let refuse = |what: String| io_err(format!("data dir {}: {what}; {REBUILD}", dir.display()));
    // (first, last) index of each group's entries; keys sort by group, then
    // index, so each group's keys come as one ascending run
    let mut runs: Vec<Option<(u64, u64)>> = vec![None; groups as usize];
    for guard in journal.logs.iter() {
        let (k, _) = guard
            .into_inner()
            .map_err(|e| refuse(format!("the Raft log cannot be read ({e})")))?;
        let (Some(g), Some(i)) = (k.get(..4), k.get(4..12)) else {
            return Err(refuse(format!("a Raft log key of {} bytes", k.len())));
        };
        let g = u32::from_be_bytes(g.try_into().unwrap_or_default());
        let i = u64::from_be_bytes(i.try_into().unwrap_or_default());
        let Some(run) = runs.get_mut(g as usize) else {
            return Err(refuse(format!(
                "a Raft log entry of group {g}, which is not one of this node's {groups}"
            )));
        };
        *run = match *run {
            None => Some((i, i)),
            Some((first, last)) if i == last + 1 => Some((first, i)),
            Some((_, last)) => {
                return Err(refuse(format!(
                    "group {g}: Raft log entries {}..={} are missing",
                    last + 1,
                    i - 1
                )))
            }
        };
    }
    for (g, run) in (0..groups).zip(runs) {
        let marker = |tag| -> io::Result<Option<u64>> {
            let stored = journal
                .meta
                .get(meta_key(g, tag))
                .map_err(|e| refuse(format!("group {g}: a marker cannot be read ({e})")))?;
            let Some(b) = stored else { return Ok(None) };
            let id: Option<LogIdT<A>> =
                decode(&b).map_err(|e| refuse(format!("group {g}: a marker is damaged ({e})")))?;
            Ok(id.map(|l| l.index))
        };
        let purged = marker(TAG_PURGED)?;
        let committed = marker(TAG_COMMITTED)?;
        let read = |key| {
            journal
                .snaps
                .get(key)
                .map_err(|e| refuse(format!("group {g}: the snapshot cannot be read ({e})")))
        };
        // the record of a snapshot file, or the inline one of an older dir
        let stored = match read(file_key(g))? {
            Some(b) => Some(b),
            None => read(inline_key(g))?,
        };
        let snapshot = match stored {
            None => None,
            Some(b) => Some(
                decode::<SnapHead<A>>(&b)
                    .map_err(|e| refuse(format!("group {g}: the snapshot is damaged ({e})")))?
                    .last_log_id
                    .map(|l| l.index),
            ),
        };
        // where the stored entries must begin: after the purge point, or
        // at the log's start (index 0 or 1) when nothing was ever purged;
        // a snapshot installed but not yet purged up to sets no start
        let start = match (purged, &snapshot) {
            (Some(p), _) => Some(p + 1),
            (None, None) => Some(1),
            (None, Some(_)) => None,
        };
        if let (Some(start), Some((first, _))) = (start, run) {
            if first > start {
                return Err(refuse(format!(
                    "group {g}: Raft log entries {start}..={} are missing",
                    first - 1
                )));
            }
        }
        let held = [run.map(|r| r.1), purged, snapshot.flatten()]
            .into_iter()
            .flatten()
            .max();
        if let Some(c) = committed.filter(|c| held.is_none_or(|h| *c > h)) {
            return Err(refuse(format!(
                "group {g}: entry {c} was committed, but the stored log ends at {}",
                held.map_or("nothing".into(), |h| h.to_string())
            )));
        }
    }
    Ok(())
}
