//! The nouns every part of the group core shares: who a member is, which partition is meant,
//! and what an assignment looks like.
//!
//! Everything here is ordered (`Ord`) and kept in `BTree` collections, so iterating over
//! members or partitions always gives the same order and the assignors stay deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::topic::TopicName;

/// A member's id within its group. Chosen outside this core (KIP-848 has the client pick a
/// UUID; the coordinator may generate one instead) and opaque here: only compared and sorted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberId(pub String);

impl MemberId {
    /// Wraps `id`.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A static member's `group.instance.id`: stable across restarts of the same consumer, unlike
/// its [`MemberId`]. Lets a restarted consumer take its partitions back without a rebalance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceId(pub String);

impl InstanceId {
    /// Wraps `id`.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One partition of one topic. Ordered by topic, then partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartition {
    /// The topic.
    pub topic: TopicName,
    /// The partition's index within the topic, from 0.
    pub partition: u32,
}

impl TopicPartition {
    /// `topic`'s partition `partition`.
    pub fn new(topic: TopicName, partition: u32) -> Self {
        Self { topic, partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Which partitions each member has (or should have). A member with nothing may be absent or
/// map to an empty set; the assignors always list every member they were given.
pub type Assignment = BTreeMap<MemberId, BTreeSet<TopicPartition>>;

/// The topics that exist and their partition counts, as the cluster metadata says. A topic
/// missing here does not exist (or was deleted); its partitions are assigned to nobody.
pub type TopicMetadata = BTreeMap<TopicName, u32>;
