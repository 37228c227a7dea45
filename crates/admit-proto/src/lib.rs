//! The `admit.v1` gRPC API of the admit service.
//!
//! The protobuf sources live in `proto/admit/v1/` at the workspace root:
//! `admit.proto` (service `AdmitSend`), `admin.proto` (services `Admin` and
//! `TestClock`), `cluster.proto` (service `Cluster`) and `types.proto`
//! (shared messages). They are compiled at build time with `protox` (no
//! system `protoc`), and this crate owns the generated code:
//!
//! - messages and enums: `admit_proto::v1::Decision`, `admit_proto::v1::Reason`, ...
//! - clients: `admit_proto::v1::admit_send_client::AdmitSendClient`, ...
//! - servers: `admit_proto::v1::admit_send_server::{AdmitSend, AdmitSendServer}`, ...
//! - [`FILE_DESCRIPTOR_SET`] for `tonic-reflection`.
//!
//! The node-to-node protos (`proto/admit/internal/`) are compiled here too,
//! once, as [`internal`].
//!
//! **Layering.** Generated code only: this crate imports prost and tonic and
//! nothing of the workspace. It holds no domain logic and no conversion; the
//! crates above it (`admit-raft` for `internal::raft`, `admit-server` for
//! the rest) convert between these messages and their own types at their
//! edges.

/// Generated code of the protobuf package `admit.v1`.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    rustdoc::all
)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/admit.v1.rs"));
}

/// Node-to-node protocols, generated from `proto/admit/internal/`. They are
/// served only between the nodes of one cluster and are not part of the
/// public API (reflection does not list them).
pub mod codec;

pub mod internal {
    /// `admit.internal.raft`: the Raft transport of `admit-raft`.
    #[allow(missing_docs, clippy::all, missing_debug_implementations)]
    pub mod raft {
        include!(concat!(env!("OUT_DIR"), "/admit.internal.raft.rs"));
    }

    /// `admit.internal.node`: commands and reads relayed between nodes.
    #[allow(missing_docs, clippy::all, missing_debug_implementations)]
    pub mod node {
        include!(concat!(env!("OUT_DIR"), "/admit.internal.node.rs"));
    }
}

/// The protobuf package name of this API version.
pub const PACKAGE: &str = "admit.v1";

/// Fully qualified names of the services of `admit.v1`, as used by gRPC
/// reflection and health checking.
pub const SERVICE_NAMES: &[&str] = &[
    "admit.v1.AdmitSend",
    "admit.v1.Admin",
    "admit.v1.TestClock",
    "admit.v1.Cluster",
];

/// The encoded `google.protobuf.FileDescriptorSet` of all `admit.v1` proto
/// files (imports and source info, i.e. comments, included), for
/// `tonic_reflection::server::Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/admit_v1_descriptor.bin"));
