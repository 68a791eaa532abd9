//! [`GroupConsumer`]: a member of a consumer group (the KIP-848 model). The group's coordinator
//! assigns it partitions of the topics it subscribes to; it reads them from the group's
//! committed offsets and commits how far it got.
//!
//! ```no_run
//! use cairn_client::{Client, GroupConsumerConfig, GroupEvent, OffsetReset};
//! use futures::StreamExt;
//!
//! # async fn demo() -> cairn_client::Result<()> {
//! let client = Client::connect(["127.0.0.1:9092"]).await?;
//! let mut consumer = client.group_consumer(
//!     GroupConsumerConfig::new("billing").offset_reset(OffsetReset::Latest),
//! );
//! consumer.subscribe(["orders"]);
//! while let Some(event) = consumer.next().await {
//!     match event? {
//!         GroupEvent::Record(r) => println!("{}-{}@{}: {:?}", r.topic, r.partition, r.offset, r.value),
//!         GroupEvent::Assigned(p) => println!("assigned {p:?}"),
//!         // Finish what you do with these partitions now: they are released (and, with
//!         // auto-commit, committed) when the stream is polled again.
//!         GroupEvent::Revoked(p) => println!("revoked {p:?}"),
//!         // Another member may own these already: do not commit them.
//!         GroupEvent::Lost(p) => println!("lost {p:?}"),
//!         _ => {}
//!     }
//! }
//! consumer.close().await?; // commits (with auto-commit) and leaves the group
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! A background task (`heartbeat`) keeps the member's heartbeat stream to the group's
//! coordinator: it joins, heartbeats every interval the coordinator asks for, and passes each
//! new assignment on. The consumer applies assignments when its stream is polled: owned
//! partitions missing from the assignment are *revoked* (no more records from them, then
//! [`GroupEvent::Revoked`]; at the next poll their positions are committed with auto-commit and
//! they are released, which the next heartbeat reports at once); new ones are *assigned* (their
//! committed offsets fetched, or the [`OffsetReset`] policy applied, then [`GroupEvent::Assigned`]).
//! Records come from the simple [`Consumer`](crate::Consumer)'s long-poll fetches.
//!
//! # Guarantees and their limits
//!
//! - **At least once.** A commit stores, per partition, the offset after the last record the
//!   stream handed out ([`GroupConsumer::commit`]; auto-commit does the same every
//!   [`GroupConsumerConfig::auto_commit`] interval, before a revoked partition is released, and
//!   on [`GroupConsumer::close`]). Auto-commit counts a record as processed once the stream is
//!   polled again: an application that hands records to other tasks sets
//!   [`GroupConsumerConfig::auto_store`] to false and stores what those tasks finished with
//!   [`GroupConsumer::store_offsets`] (auto-commit then commits that), or commits it itself
//!   with [`GroupConsumer::commit_offsets`]. After a crash, a lost partition or a failed commit, the
//!   next owner starts at the last commit and sees again what was handed out after it.
//! - **One owner per partition.** The coordinator gives a partition to a member only after its
//!   previous owner reported releasing it, and the consumer releases a revoked partition only
//!   once the application polled after [`GroupEvent::Revoked`]. A member the coordinator
//!   removed (its session expired) loses its partitions without being asked:
//!   [`GroupEvent::Lost`] comes when it learns so, and those partitions are never committed.
//! - **Order.** Records of one partition come in offset order, none skipped; nothing orders
//!   records of different partitions.
//! - **Coordinator failures.** A dead, stopped or cut-off coordinator is left within about a
//!   heartbeat interval for the new one, found with `FindCoordinator`; the member keeps its id,
//!   epoch and partitions, and records keep flowing meanwhile (commits run in the background;
//!   one that fails is [`GroupEvent::CommitFailed`]).
//! - **Slow applications.** Heartbeats do not wait for the application, so a slow one keeps its
//!   partitions; but a revocation waits until it polls again, at most the group's
//!   `rebalance_timeout_ms` (default 5 minutes), after which the coordinator removes it.
//! - **Leaving.** [`GroupConsumer::close`] commits and leaves, so its partitions move at once. A
//!   consumer dropped without `close` leaves without committing; a killed process's partitions
//!   move after the session timeout (the group's `session_timeout_ms`, 45 s by default).
//!
//! # Layout
//!
//! - `consumer`: [`GroupConsumer`], the application-facing stream, commits and close.
//! - `committer`: the commit running in the background while records keep flowing.
//! - `heartbeat`: the background task holding the heartbeat stream.
//! - `member`: the heartbeat state machine (sync, tested without a broker).
//! - `progress`: owned partitions, positions and committed offsets, and the assignment diff
//!   (sync, tested).
//! - `coordinator`: finding the coordinator and retrying calls to it.

mod committer;
mod consumer;
mod coordinator;
mod heartbeat;
mod member;
mod progress;

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use cairn_proto::v1::TopicPartitions;

pub use committer::CommitFailure;
pub use consumer::GroupConsumer;
pub(crate) use coordinator::Coordinator;

use crate::consumer::{ConsumerRecord, OffsetReset};

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
}

impl TopicPartition {
    /// `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

/// `topic-partition`, as Kafka tools print it.
impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// How a [`GroupConsumer`] joins its group, commits and fetches. Every field documents its
/// default.
#[derive(Debug, Clone)]
pub struct GroupConsumerConfig {
    /// The group to join: 1 to 249 of `[A-Za-z0-9._-]`.
    pub group_id: String,
    /// Static membership: a stable id for this consumer across restarts. A static member's
    /// `close` leaves *temporarily*: its partitions wait for it (up to the session timeout)
    /// instead of moving. Default `None`.
    pub instance_id: Option<String>,
    /// Where partitions without a committed offset start, and where reading jumps when the
    /// committed offset is no longer stored. Default [`OffsetReset::Earliest`], as the simple
    /// [`Consumer`](crate::Consumer) (Kafka defaults to `latest`).
    pub offset_reset: OffsetReset,
    /// Commit the stream's positions this often, before a revoked partition is released, and
    /// on close; `None` leaves every commit to [`GroupConsumer::commit`]. Default 5 s.
    pub auto_commit: Option<Duration>,
    /// The group's session timeout until the coordinator's first answer says what it is. It
    /// bounds how long a call to the coordinator may take (a third of it at most), so that a
    /// failing coordinator is left for the new one well within a session. The member loses
    /// its partitions only when a coordinator says it removed it (KIP-848), not by counting
    /// silence itself. Default 45 s (the broker's default).
    pub session_timeout: Duration,
    /// How long a fetch waits on the broker for records. Default 500 ms.
    pub max_wait: Duration,
    /// Upper bound on the bytes one fetch returns per partition. Default 1 MiB.
    pub max_bytes: u32,
    /// Whether handing a record out moves the offset a commit stores (Kafka's
    /// `enable.auto.offset.store`). Default true. Set false when records go to other tasks:
    /// then only [`GroupConsumer::store_offsets`] (what those tasks finished) and
    /// [`GroupConsumer::commit_offsets`] move it, and auto-commit commits what was stored.
    pub auto_store: bool,
    /// Yield [`GroupEvent::PartitionEof`] each time an owned partition's position reaches its
    /// high watermark (rdkafka's `enable.partition.eof`). Default false.
    pub partition_eof: bool,
}

impl GroupConsumerConfig {
    /// Defaults for a member of `group_id`.
    pub fn new(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            instance_id: None,
            offset_reset: OffsetReset::default(),
            auto_commit: Some(Duration::from_secs(5)),
            session_timeout: Duration::from_secs(45),
            max_wait: Duration::from_millis(500),
            max_bytes: 1 << 20,
            auto_store: true,
            partition_eof: false,
        }
    }

    /// Sets [`GroupConsumerConfig::instance_id`].
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Sets [`GroupConsumerConfig::offset_reset`].
    pub fn offset_reset(mut self, policy: OffsetReset) -> Self {
        self.offset_reset = policy;
        self
    }

    /// Sets [`GroupConsumerConfig::auto_commit`]; `None` turns auto-commit off.
    pub fn auto_commit(mut self, interval: Option<Duration>) -> Self {
        self.auto_commit = interval;
        self
    }

    /// Sets [`GroupConsumerConfig::session_timeout`].
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Sets [`GroupConsumerConfig::max_wait`].
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Sets [`GroupConsumerConfig::max_bytes`].
    pub fn max_bytes(mut self, bytes: u32) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Sets [`GroupConsumerConfig::auto_store`].
    pub fn auto_store(mut self, on: bool) -> Self {
        self.auto_store = on;
        self
    }

    /// Sets [`GroupConsumerConfig::partition_eof`].
    pub fn partition_eof(mut self, on: bool) -> Self {
        self.partition_eof = on;
        self
    }
}

/// What a [`GroupConsumer`]'s stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupEvent {
    /// A record from an owned partition.
    Record(ConsumerRecord),
    /// These partitions are now this member's; their records follow.
    Assigned(Vec<TopicPartition>),
    /// These partitions are being taken away: no more of their records come. Finish with
    /// what was handed out and, if you commit by hand, [`GroupConsumer::commit`] now; at the
    /// next poll they are committed (with auto-commit) and released.
    Revoked(Vec<TopicPartition>),
    /// These partitions were lost without a revocation (the coordinator removed this member:
    /// its session expired, or it was fenced). Another member may own them already; they were
    /// not committed and must not be.
    Lost(Vec<TopicPartition>),
    /// A commit (auto-commit, or [`GroupConsumer::commit_in_background`]) failed after the
    /// client's retries. Nothing of it was stored; the positions go with the next commit.
    CommitFailed(CommitFailure),
    /// Every record of this partition up to `offset` (its high watermark) was handed out.
    /// Only with [`GroupConsumerConfig::partition_eof`]; once each time the end is reached.
    PartitionEof {
        /// The partition.
        partition: TopicPartition,
        /// Its high watermark: the offset the next record will get.
        offset: i64,
    },
}

/// `set` grouped by topic, as the wire carries partitions.
pub(crate) fn by_topic(set: &BTreeSet<TopicPartition>) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for tp in set {
        match out.last_mut() {
            Some(last) if last.topic == tp.topic => last.partitions.push(tp.partition),
            _ => out.push(TopicPartitions {
                topic: tp.topic.clone(),
                partitions: vec![tp.partition],
            }),
        }
    }
    out
}

/// The wire's partitions by topic, as a set.
pub(crate) fn from_wire(topics: &[TopicPartitions]) -> BTreeSet<TopicPartition> {
    topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|&p| TopicPartition::new(t.topic.clone(), p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_travel_grouped_by_topic_and_back() {
        let set: BTreeSet<TopicPartition> = [("b", 0), ("a", 2), ("a", 0), ("b", 7)]
            .into_iter()
            .map(|(t, p)| TopicPartition::new(t, p))
            .collect();
        let wire = by_topic(&set);
        assert_eq!(wire.len(), 2);
        assert_eq!(
            (wire[0].topic.as_str(), &wire[0].partitions[..]),
            ("a", &[0, 2][..])
        );
        assert_eq!(
            (wire[1].topic.as_str(), &wire[1].partitions[..]),
            ("b", &[0, 7][..])
        );
        assert_eq!(from_wire(&wire), set);
        assert!(by_topic(&BTreeSet::new()).is_empty());
        assert_eq!(TopicPartition::new("orders", 3).to_string(), "orders-3");
    }
}
