//! One member's reconciliation towards its target, one heartbeat at a time (Kafka's
//! `CurrentAssignmentBuilder`, KIP-848).
//!
//! A member's partitions are `assigned` (it may own them now) and `pending_revocation` (it was
//! told to give them up and has not yet said it did). Both count as *held*: no other member is
//! given a held partition. A member moves towards its target in this order:
//!
//! 1. Partitions it holds outside its target are taken out of `assigned` and wait in
//!    `pending_revocation` (state [`MemberState::UnrevokedPartitions`]), the member epoch
//!    unchanged, until a heartbeat reports it no longer owns any of them.
//! 2. Then it moves to the target epoch and gets every target partition nobody else holds;
//!    target partitions another member still holds stay out ([`MemberState::UnreleasedPartitions`])
//!    and come with a later heartbeat, once their holder has let them go.
//!
//! So a partition changes hands only through a state where nobody holds it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::types::{InstanceId, MemberId, TopicPartition};
use crate::topic::TopicName;

/// Where a member stands in its reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// It holds what its target at its epoch says, or is one heartbeat from learning a newer
    /// target (its epoch is then below the group's).
    Stable,
    /// It must give up `pending_revocation` before it may advance.
    UnrevokedPartitions,
    /// It is at the target epoch but waits for partitions other members still hold.
    UnreleasedPartitions,
}

/// What the group knows of one member; everything here must survive a coordinator failover
/// (see [`super::GroupSnapshot`]). Session and revocation deadlines are not part of it: a new
/// coordinator restarts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The member.
    pub member_id: MemberId,
    /// Its static identity, if it has one; a restart under the same instance id takes this
    /// record over.
    pub instance_id: Option<InstanceId>,
    /// The topics it subscribes to (they feed the assignor).
    pub subscribed_topics: BTreeSet<TopicName>,
    /// Its epoch: the last one it was told. [`super::TEMPORARY_LEAVE_EPOCH`] while a static
    /// member is away.
    pub member_epoch: i32,
    /// The epoch before the last change, so a heartbeat whose response was lost is still
    /// accepted (Kafka's rule).
    pub previous_member_epoch: i32,
    /// Where its reconciliation stands.
    pub state: MemberState,
    /// The partitions it may own now: what its last response told it.
    pub assigned: BTreeSet<TopicPartition>,
    /// Partitions it was told to give up and may still own; nobody else gets them yet.
    pub pending_revocation: BTreeSet<TopicPartition>,
}

impl MemberRecord {
    /// A member just joining: epoch 0, holding nothing.
    pub(super) fn new(
        member_id: MemberId,
        instance_id: Option<InstanceId>,
        subscribed_topics: BTreeSet<TopicName>,
    ) -> Self {
        Self {
            member_id,
            instance_id,
            subscribed_topics,
            member_epoch: 0,
            previous_member_epoch: 0,
            state: MemberState::Stable,
            assigned: BTreeSet::new(),
            pending_revocation: BTreeSet::new(),
        }
    }

    /// Every partition the member holds: assigned or pending revocation.
    pub fn held(&self) -> impl Iterator<Item = &TopicPartition> {
        self.assigned.iter().chain(&self.pending_revocation)
    }

    pub(super) fn with_epoch(&self, epoch: i32) -> Self {
        let mut next = self.clone();
        if epoch != self.member_epoch {
            next.previous_member_epoch = self.member_epoch;
            next.member_epoch = epoch;
        }
        next
    }
}

/// The target a member reconciles towards: the group's target epoch and its share of it.
pub(super) struct Target<'a> {
    pub epoch: i32,
    pub partitions: &'a BTreeSet<TopicPartition>,
}

/// The member's next record, given its target, the partitions its heartbeat reports owning
/// (`None`: not reported, so assumed unchanged) and `held_by_other`, which says whether a
/// member other than this one holds a partition.
pub(super) fn next_record(
    member: &MemberRecord,
    target: &Target<'_>,
    owned: Option<&BTreeSet<TopicPartition>>,
    held_by_other: impl Fn(&TopicPartition) -> bool,
) -> MemberRecord {
    match member.state {
        MemberState::Stable if member.member_epoch == target.epoch => member.clone(),
        MemberState::UnrevokedPartitions if still_owns_any(owned, &member.pending_revocation) => {
            member.clone()
        }
        _ => advance(member, target, owned, held_by_other),
    }
}

/// Does the member (by its report) still own any of `partitions`? Unreported means yes.
fn still_owns_any(
    owned: Option<&BTreeSet<TopicPartition>>,
    partitions: &BTreeSet<TopicPartition>,
) -> bool {
    owned.is_none_or(|owned| !owned.is_disjoint(partitions))
}

fn advance(
    member: &MemberRecord,
    target: &Target<'_>,
    owned: Option<&BTreeSet<TopicPartition>>,
    held_by_other: impl Fn(&TopicPartition) -> bool,
) -> MemberRecord {
    let keep: BTreeSet<TopicPartition> = member
        .assigned
        .intersection(target.partitions)
        .cloned()
        .collect();
    let revoke: BTreeSet<TopicPartition> = member
        .assigned
        .difference(target.partitions)
        .cloned()
        .collect();
    if !revoke.is_empty() && still_owns_any(owned, &revoke) {
        let mut next = member.clone();
        next.state = MemberState::UnrevokedPartitions;
        next.assigned = keep;
        next.pending_revocation = revoke;
        return next;
    }
    let (free, unreleased): (Vec<TopicPartition>, Vec<TopicPartition>) = target
        .partitions
        .difference(&keep)
        .cloned()
        .partition(|tp| !held_by_other(tp));
    let mut next = member.with_epoch(target.epoch);
    next.state = if unreleased.is_empty() {
        MemberState::Stable
    } else {
        MemberState::UnreleasedPartitions
    };
    next.assigned = keep;
    next.assigned.extend(free);
    next.pending_revocation.clear();
    next
}
