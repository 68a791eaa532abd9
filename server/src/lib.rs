//! The Cairn broker: a partitioned, replicated commit log in the spirit of Kafka.
//!
//! # Layout
//!
//! Dependencies point inward: `service` → `node` → `log`.
//!
//! - [`log`]: the partition log — segments, indexes, recovery, retention, group commit. Knows
//!   nothing of gRPC, topics or the network.
//! - [`topic`]: topic names (validated on construction) and per-topic configuration.
//! - [`config`]: the broker's configuration file and its defaults.
//! - [`metadata`]: the cluster metadata replicated through Raft (openraft): `ClusterState` and
//!   its deterministic `apply`, replica placement, the persisted Raft log store and state
//!   machine, this broker's quorum member, the controller and the broker's lease.
//! - [`replication`]: partition replication — the pure core (leader-epoch cache, high
//!   watermark, ISR shrink and expand, truncation point), the follower fetcher and ISR changes.
//! - [`group`]: consumer groups' pure core (KIP-848) — the range and uniform (sticky)
//!   assignors and one group's reconciliation state machine: epochs, revoke-before-assign,
//!   fencing, session timeouts, static membership. No I/O, no tokio, no gRPC.
//! - [`node`]: the partitions a broker hosts, following the metadata; leader-side replica
//!   progress, producer state, long-poll wake-ups and background upkeep (retention, flushes).
//! - [`peers`]: lazily connected gRPC channels to other brokers, one per address.
//! - [`service`]: the gRPC edge (tonic): `cairn.v1.Broker`, `cairn.v1.Admin`, the internal
//!   `Raft`, `Controller` and `Replication` services, health and reflection; the only place that
//!   turns domain errors into `tonic::Status`.
//! - [`cli`]: the `cairn` command line (serve, topic, cluster, bench); `main.rs` only calls it.

pub mod cli;
pub mod config;
pub mod coordinator;
pub mod group;
pub mod log;
pub mod metadata;
pub mod node;
pub mod peers;
pub mod replication;
pub mod service;
pub mod topic;
