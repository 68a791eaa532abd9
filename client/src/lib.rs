//! The Rust client for Cairn: connect to a cluster, produce, consume and administer it.
//!
//! ```no_run
//! use cairn_client::{Client, ConsumerConfig, NewTopic, ProducerConfig, ProducerRecord, SeekTo};
//! use futures::StreamExt;
//!
//! # async fn demo() -> cairn_client::Result<()> {
//! let client = Client::connect(["127.0.0.1:9092"]).await?;
//! client.admin().create_topic(NewTopic::new("orders", 3)).await?;
//!
//! let producer = client.producer(ProducerConfig::default());
//! let ack = producer
//!     .send(ProducerRecord::new("orders", "hello").key("customer-7"))
//!     .await?;
//! println!("written to partition {} at offset {}", ack.partition, ack.offset);
//! producer.flush().await?;
//!
//! let mut consumer = client.consumer(ConsumerConfig::default());
//! consumer.seek("orders", ack.partition, SeekTo::Offset(ack.offset)).await?;
//! if let Some(record) = consumer.next().await {
//!     assert_eq!(record?.value, "hello");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`client`](Client): the [`Client`] handle: one cached tonic channel per broker (large
//!   HTTP/2 windows, `TCP_NODELAY`, 64 MiB message limits), the metadata cache (broker id →
//!   address, topic → partition leaders) and the retry loop that routes each request to its
//!   partition's leader.
//!   - `routing`: the retry loop that follows `NOT_LEADER` hints and failovers.
//! - [`config`](ClientConfig): [`ClientConfig`] and [`ClientBuilder`], with every default.
//! - [`error`](Error): [`Error`], parsed from the broker's `google.rpc.ErrorInfo` reasons.
//! - [`producer`](Producer): [`Producer`], [`ProducerConfig`], [`ProducerRecord`],
//!   [`RecordMetadata`]. Batches per partition by `linger` and `batch_bytes`; one dispatcher
//!   task, and one sender task per partition pipelining batches on a `ProduceStream`.
//!   - `accumulator`: one partition's open batch (sync, tested without a broker).
//!   - `sender`: one partition's stream, in-flight window, retries and sequences.
//!   - [`partitioner`](Partitioning): Kafka-compatible murmur2 for keys; sticky or round-robin
//!     without one.
//! - [`consumer`](Consumer): the simple [`Consumer`] (assign + seek), a `Stream` of
//!   [`ConsumerRecord`]s fed by long-poll fetches of stored batches.
//! - [`group`]: the [`GroupConsumer`], a member of a consumer group (KIP-848): a background
//!   heartbeat task, assignments applied revoke-first, committed offsets; a `Stream` of
//!   [`GroupEvent`]s (records, assigned, revoked, lost partitions).
//! - [`admin`](Admin): [`Admin`] for topics, partitions, the cluster and consumer groups
//!   ([`ResetOffsets`]). Answers are the `cairn.v1` messages, re-exported here
//!   ([`TopicDescription`], [`TopicSummary`], [`ClusterDescription`], [`PartitionOffset`],
//!   [`TopicConfig`], [`FsyncPolicy`], [`GroupSummary`], [`GroupDescription`],
//!   [`CommittedOffset`]).
//!
//! # Guarantees and their limits
//!
//! - The producer is idempotent by default ([`ProducerConfig::idempotence`]): each batch
//!   carries a producer id and a per-partition sequence, so a retried batch is written once
//!   (and answered with the offsets it was first written at) and records sent to one
//!   partition are written in the order `send` was called, retries included, with up to 5
//!   batches in flight.
//! - With idempotence off, retries can duplicate a batch whose answer was lost, and a batch
//!   that fails with a retriable error while later batches in flight succeed lands after them;
//!   set [`ProducerConfig::max_in_flight`] to 1 to rule out the reordering.
//! - The simple [`Consumer`]'s position lives in memory; nothing is committed to the broker.
//! - The [`GroupConsumer`] delivers at least once: it commits, per partition, the offset after
//!   the last record its stream handed out (by hand with [`GroupConsumer::commit`], or every
//!   5 s, before a revoked partition is released and on [`GroupConsumer::close`] with
//!   auto-commit), so after a crash or a lost partition the next owner reads again what was
//!   handed out since the last commit. A partition has one owner at a time as long as the
//!   application stops with a revoked partition before it polls again; partitions of a
//!   member the coordinator removed are [lost](GroupEvent::Lost), never committed. Details
//!   and limits in the [`group`] module.

#![warn(missing_docs)]

mod accumulator;
mod admin;
mod client;
mod config;
mod consumer;
mod error;
pub mod group;
mod partitioner;
mod producer;
mod routing;
mod sender;

pub use admin::{Admin, NewTopic, ResetOffsets};
pub use client::{Client, SeekTo};
pub use config::{ClientBuilder, ClientConfig};
#[allow(deprecated)]
pub use consumer::ResetPolicy;
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, OffsetReset};
pub use error::{BrokerStatus, CoordinatorHint, ERROR_DOMAIN, Error, LeaderHint, Result};
pub use group::{GroupConsumer, GroupConsumerConfig, GroupEvent, TopicPartition};
pub use partitioner::{Partitioning, kafka_murmur2, partition_for_key};
pub use producer::{Acks, Producer, ProducerConfig, ProducerRecord, RecordMetadata};

/// The batch format's decoding error, held by [`Error::CorruptBatch`].
pub use cairn_batch::BatchError;
/// The gRPC status code held by [`Error::Status`], and the status a [`BrokerStatus`] wraps:
/// the `tonic` types this crate is built with, so callers need not depend on `tonic`.
pub use tonic::{Code, Status as GrpcStatus};

pub use cairn_proto::v1::{
    BrokerInfo, CommittedOffset, DescribeClusterResponse as ClusterDescription,
    DescribeGroupResponse as GroupDescription, FsyncPolicy, GroupMember, GroupPartition,
    GroupState, GroupSummary, MetadataResponse, PartitionDescription, PartitionMetadata,
    PartitionOffset, TopicConfig, TopicDescription, TopicMetadata, TopicPartitions, TopicSummary,
};
