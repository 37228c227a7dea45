//! The openraft type configuration, generic over the [`App`].

use std::cmp::Ordering;
use std::fmt;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::App;

/// Wrapper that gives an application command the `Display` openraft wants.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CmdData<C>(pub C);

impl<C: fmt::Debug> fmt::Debug for CmdData<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<C: fmt::Debug> fmt::Display for CmdData<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
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
    type D = CmdData<A::Command>;
    type R = A::Response;
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
    type AsyncRuntime = openraft::impls::TokioRuntime;
    type Responder<T>
        = openraft::impls::ProgressResponder<Self, T>
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
