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
