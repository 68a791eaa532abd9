//! What a group must persist so that a new coordinator carries on where the old one stopped,
//! and the check that a restored state keeps the one-holder invariant.
//!
//! The snapshot holds everything a heartbeat's answer depends on except time: the group epoch,
//! the subscribed topics' partition counts, the target assignment, and every member's record
//! (epochs, state, assigned and pending partitions). Deadlines are not persisted: a restored
//! group gives every member a fresh session and every revoking member a fresh rebalance
//! timeout from the moment of restoring, as Kafka's coordinator does after failover.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::member::{MemberRecord, MemberState};
use super::reconcile::{Group, GroupConfig, Member};
use super::types::{Assignment, MemberId, TopicMetadata, TopicPartition};

/// A group's persisted state. Write it (or the members that changed) whenever
/// [`Group::version`] changes, *before* sending the responses of that call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    /// The group epoch.
    pub group_epoch: i32,
    /// The subscribed topics' partition counts the target was computed from.
    pub topics: TopicMetadata,
    /// The target assignment at `group_epoch`.
    pub target: Assignment,
    /// Every member, in id order.
    pub members: Vec<MemberRecord>,
}

/// Why a snapshot cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Two members hold the same partition.
    #[error("{partition} is held by both {first} and {second}")]
    TwoHolders {
        /// The partition.
        partition: TopicPartition,
        /// One holder.
        first: MemberId,
        /// The other.
        second: MemberId,
    },
    /// The same member id appears twice.
    #[error("member {0} appears twice")]
    DuplicateMember(MemberId),
}

impl Group {
    /// The state to persist.
    pub fn snapshot(&self) -> GroupSnapshot {
        GroupSnapshot {
            group_epoch: self.group_epoch,
            topics: self.topics.clone(),
            target: self.target.clone(),
            members: self.members().cloned().collect(),
        }
    }

    /// The group `snapshot` describes, every deadline restarted from `now_ms`. Target entries
    /// of unknown members are dropped and members without one get an empty share (the next
    /// epoch bump recomputes it).
    ///
    /// # Errors
    ///
    /// [`SnapshotError`] if the snapshot breaks an invariant; it was not written by
    /// [`Group::snapshot`].
    pub fn restore(
        config: GroupConfig,
        snapshot: GroupSnapshot,
        now_ms: i64,
    ) -> Result<Self, SnapshotError> {
        let mut members = BTreeMap::new();
        let mut holders: BTreeMap<TopicPartition, MemberId> = BTreeMap::new();
        for record in snapshot.members {
            for tp in record.held() {
                if let Some(first) = holders.insert(tp.clone(), record.member_id.clone()) {
                    return Err(SnapshotError::TwoHolders {
                        partition: tp.clone(),
                        first,
                        second: record.member_id.clone(),
                    });
                }
            }
            let revocation_deadline_ms = (record.state == MemberState::UnrevokedPartitions)
                .then(|| now_ms.saturating_add(config.rebalance_timeout_ms));
            let member = Member {
                session_deadline_ms: now_ms.saturating_add(config.session_timeout_ms),
                revocation_deadline_ms,
                record,
            };
            let id = member.record.member_id.clone();
            if members.insert(id.clone(), member).is_some() {
                return Err(SnapshotError::DuplicateMember(id));
            }
        }
        let mut target = snapshot.target;
        target.retain(|id, _| members.contains_key(id));
        for id in members.keys() {
            target.entry(id.clone()).or_default();
        }
        Ok(Self {
            config,
            group_epoch: snapshot.group_epoch,
            topics: snapshot.topics,
            target,
            members,
            holders,
            version: 0,
        })
    }
}
