//! Server-side assignors: given the members, what each subscribes to, the topics' partition
//! counts and the current target assignment, which member should own which partition.
//!
//! Pure and deterministic: the same inputs give the same output, whatever order `members`
//! comes in (they are sorted by id first) and however the caller built its maps. Nothing here
//! knows about epochs, heartbeats or revocation: the reconciliation in `reconcile.rs` turns a
//! target assignment into safe steps.
//!
//! - [`AssignorKind::Range`] (`range.rs`): Kafka's RangeAssignor, topic by topic: each topic's
//!   partitions in contiguous ranges over its subscribers in id order, the first
//!   `partitions % subscribers` getting one more. Not sticky: it depends only on membership.
//! - [`AssignorKind::Uniform`] (`uniform.rs`): KIP-848's `uniform`, balanced and sticky with
//!   minimal movement, also when subscriptions differ.

mod range;
mod uniform;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::types::{Assignment, MemberId, TopicMetadata};
use crate::topic::TopicName;

/// Which server-side assignor a group uses (KIP-848's `group.consumer.assignors`; `uniform`
/// is Kafka's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignorKind {
    /// Contiguous ranges of each topic's partitions over its subscribers, in member-id order.
    Range,
    /// Balanced, sticky, minimal movement.
    #[default]
    Uniform,
}

impl AssignorKind {
    /// The assignor's name, as clients and configuration spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Range => "range",
            Self::Uniform => "uniform",
        }
    }
}

impl fmt::Display for AssignorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An assignor name that is neither `range` nor `uniform`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown assignor {0:?}; expected \"range\" or \"uniform\"")]
pub struct UnknownAssignor(pub String);

impl FromStr for AssignorKind {
    type Err = UnknownAssignor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "range" => Ok(Self::Range),
            "uniform" => Ok(Self::Uniform),
            other => Err(UnknownAssignor(other.to_owned())),
        }
    }
}

/// One member as the assignors see it: who, and which topics it wants partitions of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSubscription {
    /// The member.
    pub member_id: MemberId,
    /// The topics it subscribes to. Topics missing from the metadata are ignored.
    pub topics: BTreeSet<TopicName>,
}

/// The assignment `kind` computes for `members` over `topics`.
///
/// `current` is the previous target assignment: the uniform assignor keeps what it can of it
/// (entries for members no longer listed, partitions that no longer exist and partitions of
/// topics a member no longer subscribes to are ignored); range ignores it. Every member in
/// `members` appears in the result, with an empty set if it gets nothing. If a member id is
/// listed twice, its first subscription counts.
pub fn assign(
    kind: AssignorKind,
    members: &[MemberSubscription],
    topics: &TopicMetadata,
    current: &Assignment,
) -> Assignment {
    let mut sorted: BTreeMap<&MemberId, &BTreeSet<TopicName>> = BTreeMap::new();
    for m in members {
        sorted.entry(&m.member_id).or_insert(&m.topics);
    }
    match kind {
        AssignorKind::Range => range::assign(&sorted, topics),
        AssignorKind::Uniform => uniform::assign(&sorted, topics, current),
    }
}
