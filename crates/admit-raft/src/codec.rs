//! The command codec: how the commands of a normal log entry ([`CmdData`]) are
//! written to the log and the wire, and read back whichever build wrote them.
//!
//! May import serde, postcard and openraft's entry types; does no I/O.
//!
//! A normal entry's payload is written (postcard varints) as
//!
//! * versioned, from this build on: `0`, the App's layout
//!   ([`App::layout_of`] the commands: at most [`App::COMMAND_LAYOUT`]), the
//!   command count, the commands;
//! * unversioned, by older builds: the command count, the commands.
//!
//! No unversioned payload starts with `0`: the proposer never proposes an
//! empty batch. An unversioned payload does not say its layout, and postcard
//! does not describe itself, so a stored one is read with each of
//! [`App::UNVERSIONED_LAYOUTS`] in turn, newest first; the first that reads
//! the whole payload wins ([`decode_entry`], used by the log store). A payload
//! of a newer layout than this build knows is refused with a clear error.
//!
//! The wire (AppendEntries) reads a payload in one pass, without trying: a
//! versioned one exactly, an unversioned one (a node of an older build) in
//! the newest unversioned layout.

use std::fmt;
use std::io;
use std::marker::PhantomData;

use openraft::EntryPayload;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::journal::io_err;
use crate::types::{CmdData, EntryT, LogIdT};
use crate::App;

/// What a versioned payload starts with, where an unversioned one has its
/// (never zero) command count.
const VERSIONED: u64 = 0;

impl<A: App> Serialize for CmdData<A> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (VERSIONED, A::layout_of(&self.0), self.0.as_slice()).serialize(s)
    }
}

impl<'de, A: App> Deserialize<'de> for CmdData<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // a tuple of unknown length: postcard reads its elements in turn
        d.deserialize_tuple(usize::MAX, WireVisitor::<A>(PhantomData))
            .map(CmdData::new)
    }
}

struct WireVisitor<A>(PhantomData<fn() -> A>);

impl<'de, A: App> Visitor<'de> for WireVisitor<A> {
    type Value = Vec<A::Command>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a log entry's commands")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        let missing = || <S::Error as de::Error>::custom("log entry payload ends early");
        let head: u64 = seq.next_element()?.ok_or_else(missing)?;
        if head == VERSIONED {
            let layout: u32 = seq.next_element()?.ok_or_else(missing)?;
            known::<A>(layout).map_err(<S::Error as de::Error>::custom)?;
            return seq
                .next_element_seed(CommandsSeed::<A>::new(layout))?
                .ok_or_else(missing);
        }
        let layout = newest_unversioned::<A>();
        let mut cmds = Vec::new();
        for _ in 0..head {
            cmds.push(
                seq.next_element_seed(CommandSeed::<A>::new(layout))?
                    .ok_or_else(missing)?,
            );
        }
        Ok(cmds)
    }
}

fn newest_unversioned<A: App>() -> u32 {
    A::UNVERSIONED_LAYOUTS.first().copied().unwrap_or(0)
}

fn known<A: App>(layout: u32) -> Result<(), String> {
    if layout > A::COMMAND_LAYOUT {
        return Err(format!(
            "log entry of command layout {layout}, written by a newer build \
             (this one reads layouts up to {})",
            A::COMMAND_LAYOUT
        ));
    }
    Ok(())
}

/// One command in a given layout.
struct CommandSeed<A> {
    layout: u32,
    app: PhantomData<fn() -> A>,
}

impl<A> CommandSeed<A> {
    fn new(layout: u32) -> Self {
        Self {
            layout,
            app: PhantomData,
        }
    }
}

impl<'de, A: App> DeserializeSeed<'de> for CommandSeed<A> {
    type Value = A::Command;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<A::Command, D::Error> {
        A::decode_command(self.layout, d)
    }
}

/// A sequence of commands (count, then each) in a given layout.
struct CommandsSeed<A>(CommandSeed<A>);

impl<A> CommandsSeed<A> {
    fn new(layout: u32) -> Self {
        Self(CommandSeed::new(layout))
    }
}

impl<'de, A: App> DeserializeSeed<'de> for CommandsSeed<A> {
    type Value = Vec<A::Command>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, A: App> Visitor<'de> for CommandsSeed<A> {
    type Value = Vec<A::Command>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of commands")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        let mut cmds = Vec::new();
        while let Some(c) = seq.next_element_seed(CommandSeed::<A>::new(self.0.layout))? {
            cmds.push(c);
        }
        Ok(cmds)
    }
}

/// `seed` over all of `bytes`: trailing bytes are an error (they mean the
/// layout guessed was not the one written).
fn read_all<'de, T: DeserializeSeed<'de>>(bytes: &'de [u8], seed: T) -> Result<T::Value, String> {
    let mut d = postcard::Deserializer::from_bytes(bytes);
    let v = seed.deserialize(&mut d).map_err(|e| e.to_string())?;
    let rest = d.finalize().map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes left over", rest.len()));
    }
    Ok(v)
}

/// The commands of a stored normal entry's payload, in whichever layout it
/// was written (see the module doc).
pub(crate) fn decode_payload<A: App>(bytes: &[u8]) -> Result<Vec<A::Command>, String> {
    let mut tried = Vec::new();
    if let Ok((VERSIONED, rest)) = postcard::take_from_bytes::<u64>(bytes) {
        if let Ok((layout, rest)) = postcard::take_from_bytes::<u32>(rest) {
            known::<A>(layout)?;
            match read_all(rest, CommandsSeed::<A>::new(layout)) {
                Ok(cmds) => return Ok(cmds),
                Err(e) => tried.push(format!("layout {layout}: {e}")),
            }
        }
    }
    for &layout in A::UNVERSIONED_LAYOUTS {
        match read_all(bytes, CommandsSeed::<A>::new(layout)) {
            Ok(cmds) => return Ok(cmds),
            Err(e) => tried.push(format!("unversioned layout {layout}: {e}")),
        }
    }
    Err(format!(
        "log entry payload does not decode ({})",
        tried.join("; ")
    ))
}

/// A stored log entry (postcard of openraft's `Entry`: the log id, the
/// payload's variant, the payload), its normal payload read by
/// [`decode_payload`].
pub(crate) fn decode_entry<A: App>(bytes: &[u8]) -> io::Result<EntryT<A>> {
    let (log_id, rest) = postcard::take_from_bytes::<LogIdT<A>>(bytes).map_err(io_err)?;
    // postcard writes an enum's variant index as a varint, like a u32
    let (variant, rest) = postcard::take_from_bytes::<u32>(rest).map_err(io_err)?;
    let payload = match variant {
        0 => EntryPayload::Blank,
        1 => EntryPayload::Normal(CmdData::new(decode_payload::<A>(rest).map_err(io_err)?)),
        2 => EntryPayload::Membership(postcard::from_bytes(rest).map_err(io_err)?),
        v => return Err(io_err(format!("log entry payload of unknown kind {v}"))),
    };
    Ok(openraft::Entry { log_id, payload })
}

/// The commands of a stored log entry (a value of the `raft_logs` keyspace),
/// whichever build wrote it; empty for Raft's own entries. For tests that pin
/// old logs, and tools.
pub fn decode_log_entry<A: App>(bytes: &[u8]) -> Result<Vec<A::Command>, String> {
    match decode_entry::<A>(bytes).map_err(|e| e.to_string())?.payload {
        EntryPayload::Normal(c) => Ok(std::sync::Arc::unwrap_or_clone(c.0)),
        _ => Ok(Vec::new()),
    }
}

/// A stored log entry as this build writes it: `cmds` at `index` in `term`.
/// Its counterpart, for the same tests and tools.
pub fn encode_log_entry<A: App>(term: u64, index: u64, cmds: Vec<A::Command>) -> Vec<u8> {
    let log_id = openraft::LogId::new(
        openraft::impls::leader_id_adv::LeaderId { term, node_id: 0 },
        index,
    );
    let e: EntryT<A> = openraft::Entry {
        log_id,
        payload: EntryPayload::Normal(CmdData::new(cmds)),
    };
    postcard::to_allocvec(&e).unwrap_or_default()
}
