//! Compiles `proto/admit/v1/*.proto` (at the workspace root) with `protox`, a
//! pure-Rust protobuf compiler, so no system `protoc` is needed. Generates the
//! prost messages and tonic clients/servers into `OUT_DIR/admit.v1.rs`, and
//! writes the encoded `FileDescriptorSet` (with source info, so reflection
//! clients see the comments) to `OUT_DIR/admit_v1_descriptor.bin`.
//!
//! It also compiles the node-to-node protos of `proto/admit/internal/`
//! (`admit.internal.raft`, the Raft transport, and `admit.internal.node`, the
//! relay between nodes), so every protobuf of the workspace is compiled once,
//! here. They are not part of the public descriptor set: reflection never
//! shows them.

use std::path::PathBuf;

/// The proto files of the `admit.v1` package, relative to the include root.
const PROTOS: &[&str] = &[
    "admit/v1/types.proto",
    "admit/v1/admit.proto",
    "admit/v1/admin.proto",
    "admit/v1/cluster.proto",
];

/// Node-to-node protos: the Raft transport and the relay between nodes.
const INTERNAL: &[&str] = &["admit/internal/raft.proto", "admit/internal/node.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    for dir in ["admit/v1", "admit/internal"] {
        println!("cargo:rerun-if-changed={}", proto_root.join(dir).display());
    }
    for proto in PROTOS.iter().chain(INTERNAL) {
        println!(
            "cargo:rerun-if-changed={}",
            proto_root.join(proto).display()
        );
    }

    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler.include_source_info(true).include_imports(true);
    for proto in PROTOS {
        // A parse or type error names the file and span; build fails with it.
        compiler.open_file(proto)?;
    }

    std::fs::write(
        out_dir.join("admit_v1_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    // every service decodes with `admit_proto::codec::Codec`: a request that
    // does not decode is INVALID_ARGUMENT, not INTERNAL
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::Codec")
        .compile_fds(compiler.file_descriptor_set())?;

    // The internal packages: their own descriptor set, so the public one (and
    // reflection) stays free of them.
    let internal = protox::compile(INTERNAL, [&proto_root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::Codec")
        .compile_fds(internal)?;
    Ok(())
}
