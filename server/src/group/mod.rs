//! Consumer groups' pure core (DESIGN.md §6, the KIP-848 model): the server-side assignors and
//! the reconciliation state machine of one group.
//!
//! This module owns the *decisions*: which member should own which partition (the target
//! assignment), when the group epoch moves, how each member gets from what it owns to its
//! target without any partition ever having two owners (revoke first, then assign), who is
//! fenced, who timed out, and what a coordinator must persist to fail over. It is plain data
//! and functions, table- and property-tested; time is an argument (`now_ms`), never read.
//!
//! It must not know gRPC, tokio, Raft, the partition log or committed offsets. The coordinator
//! (the async shell) owns one [`Group`] per group id, feeds it heartbeats, topic metadata and
//! the clock, sends each member its [`HeartbeatResponse`], persists [`GroupSnapshot`]s, and
//! fences offset commits by member epoch.
//!
//! # How `crate::coordinator` wires it
//!
//! - Feed: every stream message as a [`Heartbeat`] to [`Group::heartbeat`] with the current
//!   topic metadata (name → partition count); [`Group::update_topics`] on every metadata change;
//!   [`Group::expire`] when a timer set to [`Group::next_deadline`] fires (re-arm after every
//!   call).
//! - Send: each [`HeartbeatResponse`] (epoch and full assignment; sending the assignment only
//!   when it changed is fine); each [`GroupError`] as its error code — `UNKNOWN_MEMBER_ID` and
//!   `FENCED_MEMBER_EPOCH` tell the member to drop everything and rejoin at epoch 0. The core is
//!   pull-based: members see a new group epoch at their next heartbeat, so a coordinator may ask
//!   them to heartbeat at once to speed a rebalance up.
//! - The client must report `owned` as what it holds after applying every response, keep one
//!   heartbeat in flight, and drop all partitions on a refusal, after a session timeout without
//!   an answer, or when a revocation has been outstanding for the rebalance timeout.
//! - Persist: when [`Group::version`] changed during a call, write [`Group::snapshot`] durably
//!   before sending that call's responses; after failover [`Group::restore`] restarts every
//!   deadline from the moment of restoring (deadlines are not persisted).
//! - Known limits: topics are named, not identified by topic id (a topic deleted and re-created
//!   with the same partition count between two heartbeats goes unnoticed); the uniform
//!   assignor's balancing is at least O(members × partitions) per move, unmeasured at scale.
//!
//! # Layout
//!
//! - `types`: [`MemberId`], [`InstanceId`], [`TopicPartition`], [`Assignment`],
//!   [`TopicMetadata`].
//! - `assignor`: [`assign`] with [`AssignorKind::Range`] and [`AssignorKind::Uniform`]
//!   (balanced, sticky, minimal movement, differing subscriptions).
//! - `heartbeat`: [`Heartbeat`], [`HeartbeatResponse`], [`GroupError`] and the join and leave
//!   epochs: what a member and its group say to each other.
//! - `member`: one member's reconciliation step ([`MemberRecord`], [`MemberState`]).
//! - `reconcile`: [`Group`]: join, heartbeat, leave, static membership, fencing, session and
//!   rebalance timeouts, topic metadata changes.
//! - `snapshot`: [`GroupSnapshot`], what survives a coordinator failover.
//! - `tests`: reconciliation scenarios and a randomised simulation of members heartbeating in
//!   any order, checking that no partition ever has two owners and that the group converges.

mod assignor;
mod heartbeat;
mod member;
mod reconcile;
mod snapshot;
mod types;

#[cfg(test)]
mod tests;

pub use assignor::{AssignorKind, MemberSubscription, UnknownAssignor, assign};
pub use heartbeat::{
    GroupError, Heartbeat, HeartbeatResponse, JOIN_EPOCH, LEAVE_EPOCH, TEMPORARY_LEAVE_EPOCH,
};
pub use member::{MemberRecord, MemberState};
pub use reconcile::{Group, GroupConfig};
pub use snapshot::{GroupSnapshot, SnapshotError};
pub use types::{Assignment, InstanceId, MemberId, TopicMetadata, TopicPartition};
