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
//!   its deterministic `apply`, replica placement, the persisted Raft log store and state machine.
//!   Knows nothing of gRPC or the partition log; networking and the controller come later.
//! - [`replication`]: partition replication's pure core — the leader-epoch cache and its
//!   checkpoint, the high watermark, ISR shrink and expand, the follower's truncation point.
//! - [`group`]: consumer groups' pure core (KIP-848) — the range and uniform (sticky)
//!   assignors and one group's reconciliation state machine: epochs, revoke-before-assign,
//!   fencing, session timeouts, static membership. No I/O, no tokio, no gRPC.
//! - [`node`]: the topics and partitions a broker hosts, the persisted topic registry, long-poll
//!   wake-ups and background upkeep (retention, interval flushes).
//! - [`service`]: the gRPC edge (tonic): `cairn.v1.Broker`, `cairn.v1.Admin`, health and
//!   reflection; the only place that turns domain errors into `tonic::Status`.
//! - [`cli`]: the `cairn` command line (serve, topic, cluster, bench); `main.rs` only calls it.

pub mod cli;
pub mod config;
pub mod group;
pub mod log;
pub mod metadata;
pub mod node;
pub mod replication;
pub mod service;
pub mod topic;
