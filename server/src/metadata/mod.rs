//! The cluster metadata store: the replicated state every broker agrees on through Raft
//! (openraft), as KRaft does in Kafka (DESIGN.md §4).
//!
//! This module owns the metadata as data ([`ClusterState`] and its synchronous
//! [`ClusterState::apply`]), replica placement ([`assign_replicas`]), and the two storage halves
//! openraft drives: the persisted Raft log and vote ([`LogStore`]) and the state machine with its
//! snapshots ([`StateMachine`]), both under one directory (`<data-dir>/metadata/`).
//!
//! The client half of the Raft transport lives here too ([`RaftNetworkClient`], one cached
//! channel per peer, and the pre-vote client); the serving half is `service::raft`, the gRPC
//! edge. Besides those clients and the broker's lease client, this module knows nothing of the
//! network, gRPC or the partition log.
//!
//! # Layout
//!
//! - `state`: [`ClusterState`], [`MetadataCommand`], [`MetadataResponse`], [`ApplyError`].
//! - `assign`: [`assign_replicas`], Kafka's round-robin placement.
//! - `log_store`: [`LogStore`], the Raft log and vote in append-only, CRC-framed files.
//! - `state_machine`: [`StateMachine`], applying entries and building/installing snapshots.
//! - `network`: [`RaftNetworkClient`] and [`PeerClient`], openraft's network over the internal
//!   `cairn.v1.Raft` gRPC service, and the pre-vote client.
//! - `quorum`: [`Quorum`], this broker's Raft member (start, voters check, who is controller,
//!   check-quorum, whether this run registered).
//! - `election`: pre-vote elections (openraft's own timer is off): pure grant and timing
//!   rules, the driver, the leader's quorum acknowledgements.
//! - `leases`: the controller's pure lease table on its active clock (fencing on evidence).
//! - `controller`: [`Controller`], what the Raft leader does: registration, leases, fencing,
//!   topic commands, ISR changes, producer ids, leader balancing, migration.
//! - `lease`: the broker's registration and heartbeats.

mod assign;
pub mod controller;
pub mod election;
mod fs;
pub mod lease;
mod leases;
mod log_store;
pub mod network;
mod quorum;
mod state;
mod state_machine;

#[cfg(test)]
mod conformance;

pub use assign::{AssignError, assign_replicas};
pub use controller::{Committed, Controller, ControllerError, LegacyTopic};
pub use fs::StoreError;
pub use log_store::LogStore;
pub use network::{PeerClient, RaftNetworkClient};
pub use quorum::{METADATA_DIR, Quorum, QuorumError};
pub use state::{
    ApplyError, BrokerId, BrokerRecord, ClusterState, MetadataCommand, MetadataResponse,
    PartitionRecord, TopicRecord,
};
pub use state_machine::{MetadataView, SnapshotBuilder, StateMachine};

/// What applying one Raft entry produced: the command's response, or why it was refused. A
/// refusal is still an applied entry (every replica refuses it alike).
pub type ApplyOutcome = Result<MetadataResponse, ApplyError>;

openraft::declare_raft_types!(
    /// openraft's type configuration for the metadata Raft group: commands are
    /// [`MetadataCommand`]s, node ids are broker ids widened to `u64`, and a node's data is the
    /// address peers reach it at.
    pub TypeConfig:
        D = MetadataCommand,
        R = ApplyOutcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
