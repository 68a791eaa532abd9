//! Compiles `cairn/v1/*.proto` with protox (pure Rust: no system `protoc`) and generates the
//! tonic services. The encoded descriptor set is written to `OUT_DIR` for server reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "cairn/v1/common.proto",
    "cairn/v1/broker.proto",
    "cairn/v1/group.proto",
    "cairn/v1/admin.proto",
    "cairn/v1/raft.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("cairn_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
