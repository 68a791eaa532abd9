//! The Rust client for Cairn: connect to a cluster, produce, consume and administer it.
//!
//! Every example below is a doc test (compiled by `cargo test --doc`; they need a broker to
//! run, so they are `no_run`).
//!
//! # Produce and read back
//!
//! ```no_run
//! use cairn_client::{Client, ConsumerConfig, NewTopic, ProducerConfig, ProducerRecord, SeekTo};
//! use futures::StreamExt;
//!
//! # async fn demo() -> cairn_client::Result<()> {
//! // `host:port`; a bare host gets Kafka's port 9092.
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
//! # Seek by time, and know when a partition is read to its end
//!
//! A timestamp seek lands on the first record at or after the time, as Kafka's does, even
//! inside a batch. With [`ConsumerConfig::partition_eof`] the stream reports each partition's
//! end as [`Error::PartitionEof`] (rdkafka's `enable.partition.eof`) and goes on.
//!
//! ```no_run
//! use cairn_client::{Client, ConsumerConfig, Error, SeekTo};
//! use futures::StreamExt;
//!
//! # async fn demo(client: Client) -> cairn_client::Result<()> {
//! let mut consumer = client.consumer(ConsumerConfig::default().partition_eof(true));
//! let an_hour_ago = 1_700_000_000_000;
//! consumer.seek("orders", 0, SeekTo::Timestamp(an_hour_ago)).await?;
//! while let Some(item) = consumer.next().await {
//!     match item {
//!         Ok(record) => println!("{}: {:?}", record.offset, record.value),
//!         Err(Error::PartitionEof { topic, partition, offset }) => {
//!             println!("read all of {topic}-{partition} (up to {offset})");
//!             break;
//!         }
//!         // Every partition error names its topic and partition.
//!         Err(Error::OffsetOutOfRange { topic, partition, start, .. }) => {
//!             consumer.seek(&topic, partition, SeekTo::Offset(start)).await?;
//!         }
//!         Err(e) => return Err(e),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # A group member that commits what other tasks finished
//!
//! ```no_run
//! use cairn_client::{Client, GroupConsumerConfig, GroupEvent, OffsetReset, TopicPartition};
//! use futures::StreamExt;
//!
//! # async fn demo(client: Client) -> cairn_client::Result<()> {
//! let mut member = client.group_consumer(
//!     GroupConsumerConfig::new("billing")
//!         .offset_reset(OffsetReset::Earliest)
//!         .auto_store(false), // only what is stored below is committed
//! );
//! member.subscribe(["orders"]);
//! while let Some(event) = member.next().await {
//!     if let GroupEvent::Record(r) = event? {
//!         // ... hand `r` to a worker; when it is done:
//!         let done = TopicPartition::new(r.topic.as_ref(), r.partition);
//!         member.store_offsets([(done, r.offset + 1)])?; // auto-commit sends it
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Connecting, and what errors say
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use cairn_client::{Client, Error};
//!
//! # async fn demo() {
//! let connected = Client::builder()
//!     .brokers(["broker-1:9092", "broker-2"]) // broker-2 means broker-2:9092
//!     .connect_timeout(Duration::from_secs(2))
//!     .build()
//!     .await;
//! match connected {
//!     Ok(_client) => {}
//!     // Within the connect timeout: "cannot reach broker broker-1:9092: ... Connection refused".
//!     Err(e @ Error::Transport { .. }) => eprintln!("{e}"),
//!     Err(e) => eprintln!("{e}"),
//! }
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
//! - [`error`](Error): [`Error`], parsed from the broker's `google.rpc.ErrorInfo` reasons;
//!   partition errors carry topic and partition, `Display` is a sentence, and the broker's
//!   status is kept as a [`BrokerStatus`] (its `Debug` without encoded details). [`Code`],
//!   [`GrpcStatus`] and [`BatchError`] are re-exported so callers need no `tonic` or
//!   `cairn-batch` of their own.
//! - [`producer`](Producer): [`Producer`], [`ProducerConfig`], [`ProducerRecord`],
//!   [`RecordMetadata`]. Batches per partition by `linger` and `batch_bytes`; one dispatcher
//!   task, and one sender task per partition pipelining batches on a `ProduceStream`.
//!   - `accumulator`: one partition's open batch (sync, tested without a broker).
//!   - `sender`: one partition's stream, in-flight window, retries and sequences.
//!   - [`partitioner`](Partitioning): Kafka-compatible murmur2 for keys; without one, sticky
//!     (moving on after [`ProducerConfig::sticky_bytes`], 16 KiB) or round-robin. Records over
//!     [`ProducerConfig::max_record_bytes`] fail locally ([`Error::RecordTooLarge`]).
//! - [`consumer`](Consumer): the simple [`Consumer`] (assign + seek), a `Stream` of
//!   [`ConsumerRecord`]s fed by long-poll fetches of stored batches; [`ConsumerConfig`] and the
//!   [`OffsetReset`] policy both consumers share.
//! - [`group`]: the [`GroupConsumer`], a member of a consumer group (KIP-848): a background
//!   heartbeat task, assignments applied revoke-first, committed offsets; a `Stream` of
//!   [`GroupEvent`]s (records, assigned, revoked, lost partitions).
//! - [`admin`](Admin): [`Admin`] for topics, partitions, the cluster and consumer groups
//!   ([`ResetOffsets`]). Answers are the `cairn.v1` messages, re-exported here
//!   ([`TopicDescription`], [`TopicSummary`], [`ClusterDescription`], [`PartitionOffset`],
//!   [`TopicConfig`], [`FsyncPolicy`], [`GroupSummary`], [`GroupDescription`],
//!   [`CommittedOffset`], and [`MetadataResponse`] for [`Client::metadata`]).
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
//!   auto-commit; or what the application stored or gave with
//!   [`GroupConsumer::store_offsets`] and [`GroupConsumer::commit_offsets`]), so after a crash or a lost partition the next owner reads again what was
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
pub use group::{CommitFailure, GroupConsumer, GroupConsumerConfig, GroupEvent, TopicPartition};
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
