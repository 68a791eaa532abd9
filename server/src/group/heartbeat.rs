//! What travels between a member and its group: the heartbeat (KIP-848's
//! ConsumerGroupHeartbeat request, its epoch doubling as join and leave), the response, and
//! the refusals, each saying what the member must do. The coordinator converts its wire
//! messages to and from these; nothing here knows the wire.

use std::collections::BTreeSet;

use super::types::{InstanceId, MemberId, TopicPartition};
use crate::topic::TopicName;

/// The member epoch a heartbeat carries to join (or rejoin after being fenced).
pub const JOIN_EPOCH: i32 = 0;
/// The member epoch a heartbeat carries to leave for good.
pub const LEAVE_EPOCH: i32 = -1;
/// The member epoch a static member's heartbeat carries to leave for a restart: its partitions
/// stay reserved for its instance id until its session times out.
pub const TEMPORARY_LEAVE_EPOCH: i32 = -2;

/// One heartbeat, as KIP-848's ConsumerGroupHeartbeat request carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The member sending it.
    pub member_id: MemberId,
    /// Its epoch: [`JOIN_EPOCH`], [`LEAVE_EPOCH`], [`TEMPORARY_LEAVE_EPOCH`], or the last epoch
    /// it was given.
    pub member_epoch: i32,
    /// Its static identity, if any (read on join).
    pub instance_id: Option<InstanceId>,
    /// Its subscription: required on join, `None` afterwards when unchanged.
    pub subscribed_topics: Option<BTreeSet<TopicName>>,
    /// The partitions it owns right now, after applying every response it has received (new
    /// partitions taken, revoked ones released once it is done with them). `None`: unchanged
    /// since the last report, which never acknowledges a revocation.
    pub owned: Option<BTreeSet<TopicPartition>>,
}

/// What the member must be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatResponse {
    /// The member.
    pub member_id: MemberId,
    /// Its epoch from now on (negative echoes a leave).
    pub member_epoch: i32,
    /// How often to heartbeat.
    pub heartbeat_interval_ms: i64,
    /// The complete set of partitions it may own now. Owned partitions not in it must be
    /// revoked (offsets committed, processing stopped) and the next heartbeat must report it.
    pub assignment: BTreeSet<TopicPartition>,
}

/// Why a heartbeat was refused, and what the member must do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The group does not know the member (removed after a timeout, or never joined): it must
    /// abandon its partitions and rejoin with epoch 0.
    #[error("unknown member {member_id}: abandon all partitions and rejoin with epoch 0")]
    UnknownMemberId {
        /// The member.
        member_id: MemberId,
    },
    /// The member's epoch is not the group's idea of it (Kafka's FENCED_MEMBER_EPOCH): it must
    /// abandon its partitions and rejoin with epoch 0.
    #[error(
        "member {member_id} sent epoch {received}, the group knows epoch {current}: abandon all \
         partitions and rejoin with epoch 0"
    )]
    FencedMemberEpoch {
        /// The member.
        member_id: MemberId,
        /// The epoch it sent.
        received: i32,
        /// The epoch the group holds for it.
        current: i32,
    },
    /// Another member that has not left holds this instance id; retry after it leaves or times
    /// out.
    #[error("instance id {instance_id} is held by active member {holder}")]
    UnreleasedInstanceId {
        /// The instance id.
        instance_id: InstanceId,
        /// The member holding it.
        holder: MemberId,
    },
    /// A join without a subscription.
    #[error("member {member_id} joined without subscribed topics")]
    MissingSubscription {
        /// The member.
        member_id: MemberId,
    },
    /// A temporary leave (epoch -2) from a member without an instance id.
    #[error("member {member_id} left temporarily but has no instance id")]
    NotStatic {
        /// The member.
        member_id: MemberId,
    },
    /// A member epoch below -2.
    #[error("member epoch {0} is invalid")]
    InvalidEpoch(i32),
}
