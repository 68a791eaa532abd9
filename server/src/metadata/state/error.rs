//! [`ApplyError`]: why [`ClusterState::apply`](super::ClusterState::apply) refused a command.
//!
//! Serialisable, because a refusal is the response of an applied Raft entry and travels back to
//! whoever proposed it.

use serde::{Deserialize, Serialize};

use super::BrokerId;

/// Why a command was refused. The state is unchanged; each variant names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApplyError {
    /// A producer id block must hold between 1 and `MAX_PRODUCER_ID_BLOCK` ids.
    #[error("a producer id block of {0} ids is not allowed")]
    InvalidProducerIdBlock(u32),
    /// Every producer id was handed out (after 2^63 of them).
    #[error("producer ids are exhausted")]
    ProducerIdsExhausted,
    /// A cluster id must be non-empty.
    #[error("the cluster id is empty")]
    EmptyClusterId,
    /// The cluster was named already; its id never changes.
    #[error("the cluster id is already set to {0:?}")]
    ClusterIdSet(String),
    /// Register the broker first.
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
    /// A broker must say where it can be reached.
    #[error("broker {0} registered without an address")]
    EmptyAddress(BrokerId),
    /// The name breaks the topic-name rules.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: String },
    /// Choose another name or delete the existing topic.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// The topic does not exist (create it first).
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    /// The topic id must be non-empty.
    #[error("topic {0:?} has an empty topic id")]
    EmptyTopicId(String),
    /// The topic configuration has a value no partition could run with.
    #[error("invalid config for topic {name:?}: {reason}")]
    InvalidConfig { name: String, reason: String },
    /// At least one partition must be created.
    #[error("the assignment has no partitions")]
    NoPartitions,
    /// Every partition needs at least one replica.
    #[error("partition {partition} has no replicas")]
    EmptyReplicaSet { partition: u32 },
    /// A broker may hold only one copy of a partition.
    #[error("broker {broker} appears twice in partition {partition}")]
    DuplicateReplica { partition: u32, broker: BrokerId },
    /// The partition index is past the topic's partition count.
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition { topic: String, partition: u32 },
    /// Only an in-sync replica can lead without losing acknowledged writes.
    #[error("broker {broker} is not in the ISR {isr:?}")]
    NotInIsr {
        broker: BrokerId,
        isr: Vec<BrokerId>,
    },
    /// A fenced broker cannot lead; wait for it to heartbeat again.
    #[error("broker {0} is fenced")]
    BrokerFenced(BrokerId),
    /// The request comes from an old leader; refresh metadata and retry at the current epoch.
    #[error("stale leader epoch {given}; the partition is at {current}")]
    StaleLeaderEpoch { given: i32, current: i32 },
    /// The partition has no leader, so nobody may change its ISR.
    #[error("topic {topic:?} partition {partition} has no leader")]
    NoLeader { topic: String, partition: u32 },
    /// The ISR must contain the current leader.
    #[error("the ISR {isr:?} does not contain the leader {leader}")]
    IsrMissingLeader {
        leader: BrokerId,
        isr: Vec<BrokerId>,
    },
    /// An ISR member must be a replica of the partition.
    #[error("broker {broker} is not a replica of this partition {replicas:?}")]
    NotAReplica {
        broker: BrokerId,
        replicas: Vec<BrokerId>,
    },
    /// A fenced broker (dead, or shutting down) cannot join an ISR.
    #[error("broker {0} is fenced and cannot join the ISR until it heartbeats again")]
    IneligibleReplica(BrokerId),
    /// Each broker appears once in an ISR.
    #[error("broker {0} appears twice in the ISR")]
    DuplicateIsrMember(BrokerId),
}
