//! Cairn's gRPC API, package `cairn.v1`: the `.proto` files in `cairn/v1/` and the code prost and
//! tonic generate from them. Nothing else lives here.
//!
//! - [`v1::broker_server`] / [`v1::broker_client`]: the data plane (produce, fetch, tail,
//!   offsets, metadata).
//! - [`v1::admin_server`] / [`v1::admin_client`]: topics, partitions and the cluster.
//! - [`v1::groups_server`] / [`v1::groups_client`]: consumer groups (coordinator lookup, member
//!   heartbeats, committed offsets).
//! - [`v1::raft_server`] / [`v1::raft_client`]: internal, broker to broker: Raft replication
//!   of the cluster metadata.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for server reflection.

/// Generated types and services of package `cairn.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("cairn.v1");
}

/// The encoded `FileDescriptorSet` of every Cairn proto file, comments included, so that
/// `grpcurl describe` shows them.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cairn_descriptor");
