//! The openraft type configuration, generic over the [`App`].

use std::cmp::Ordering;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::App;

/// A log entry's payload: commands proposed together (see `propose.rs`),
/// applied in order as one entry. Batching many callers' commands into one
/// entry is what lets a group's cost per command fall as load rises: one
/// append, one journal op, one replication message and one apply call per
/// batch instead of per command. Written with the App's command layout in
/// front (see `codec.rs`, which holds its serde impls).
///
/// Shared, not copied: the log's cache, the apply and every follower's
/// replication read the same entry, and a clone is a count, not a copy of
/// its commands.
pub struct CmdData<A: App>(pub Arc<Vec<A::Command>>);

impl<A: App> CmdData<A> {
    pub fn new(cmds: Vec<A::Command>) -> Self {
        Self(Arc::new(cmds))
    }
}

impl<A: App> Clone for CmdData<A> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<A: App> fmt::Debug for CmdData<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<A: App> fmt::Display for CmdData<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} command(s)", self.0.len())
    }
}

/// The responses to one entry's commands, in order (empty for Raft's own
/// blank and membership entries).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RespData<R>(pub Vec<R>);

/// Delivers a write's result by calling a function where openraft completes
/// it (on the group's state-machine task, right after the apply), so that
/// answering the batch's callers needs no task of its own.
pub struct CallbackResponder<T>(Box<dyn FnOnce(T) + Send>);

impl<T> fmt::Debug for CallbackResponder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallbackResponder")
    }
}

impl<T> CallbackResponder<T> {
    pub(crate) fn new(f: impl FnOnce(T) + Send + 'static) -> Self {
        Self(Box::new(f))
    }
}

impl<C, T> openraft::raft::responder::Responder<C, T> for CallbackResponder<T>
where
    C: openraft::RaftTypeConfig,
    T: openraft::OptionalSend + 'static,
{
    fn on_complete(self, result: T) {
        (self.0)(result)
    }
}

/// openraft type configuration for an [`App`]. Zero-sized.
pub struct TypeConfig<A>(PhantomData<fn() -> A>);

impl<A> fmt::Debug for TypeConfig<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TypeConfig")
    }
}
impl<A> Clone for TypeConfig<A> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A> Copy for TypeConfig<A> {}
impl<A> Default for TypeConfig<A> {
    fn default() -> Self {
        Self(PhantomData)
    }
}
impl<A> PartialEq for TypeConfig<A> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<A> Eq for TypeConfig<A> {}
impl<A> PartialOrd for TypeConfig<A> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<A> Ord for TypeConfig<A> {
    fn cmp(&self, _: &Self) -> Ordering {
        Ordering::Equal
    }
}

type LeaderIdT = openraft::impls::leader_id_adv::LeaderId<u64, u64>;

impl<A: App> openraft::RaftTypeConfig for TypeConfig<A> {
    type D = CmdData<A>;
    type R = RespData<A::Response>;
    type NodeId = u64;
    type Node = openraft::impls::BasicNode;
    type Term = u64;
    type LeaderId = LeaderIdT;
    type Vote = openraft::impls::Vote<LeaderIdT>;
    type Payload = openraft::EntryPayload<Self::D, u64, openraft::impls::BasicNode>;
    type Entry = openraft::Entry<
        <LeaderIdT as openraft::vote::RaftLeaderId>::Committed,
        openraft::EntryPayload<Self::D, u64, openraft::impls::BasicNode>,
    >;
    type AsyncRuntime = crate::rt::Runtime;
    type Responder<T>
        = CallbackResponder<T>
    where
        T: openraft::OptionalSend + 'static;
    type Batch<T>
        = openraft::impls::InlineBatch<T>
    where
        T: openraft::OptionalSend + 'static;
    type ErrorSource = openraft::impls::BoxedErrorSource;
}

pub(crate) type C<A> = TypeConfig<A>;
pub(crate) type LogIdT<A> = openraft::type_config::alias::LogIdOf<C<A>>;
pub(crate) type EntryT<A> = openraft::type_config::alias::EntryOf<C<A>>;
pub(crate) type VoteT<A> = openraft::type_config::alias::VoteOf<C<A>>;
pub(crate) type SnapshotMetaT<A> = openraft::type_config::alias::SnapshotMetaOf<C<A>>;
pub(crate) type StoredMembershipT<A> = openraft::type_config::alias::StoredMembershipOf<C<A>>;
pub(crate) type SnapshotT<A> = openraft::type_config::alias::SnapshotOf<C<A>, Vec<u8>>;
