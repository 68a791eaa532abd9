//! One consumer group's state machine (KIP-848): membership, the group epoch, the target
//! assignment, and each member's reconciliation towards it.
//!
//! - The **group epoch** goes up whenever what the assignor sees changes: a member joins or is
//!   removed, a subscription changes, or a subscribed topic's partition count changes (added,
//!   deleted). The target assignment is recomputed at once, from the previous target (so the
//!   uniform assignor stays sticky), and is therefore always at the group epoch.
//! - Each **member** converges one heartbeat at a time (`member.rs`): revoke first, then move to
//!   the target epoch and take the partitions nobody holds. A partition changes hands only
//!   after its old holder reported letting it go, or was removed from the group.
//! - **Time** is an input: every call that may start or check a deadline takes `now_ms`.
//!
//! The coordinator owns one [`Group`] per group id, calls [`Group::heartbeat`] for every
//! heartbeat and sends back the response, calls [`Group::expire`] at
//! [`Group::next_deadline`], and [`Group::update_topics`] when topic metadata changes.

use std::collections::{BTreeMap, BTreeSet};

use super::assignor::{self, AssignorKind, MemberSubscription};
use super::heartbeat::{
    GroupError, Heartbeat, HeartbeatResponse, JOIN_EPOCH, LEAVE_EPOCH, TEMPORARY_LEAVE_EPOCH,
};
use super::member::{self, MemberRecord, MemberState, Target};
use super::types::{Assignment, InstanceId, MemberId, TopicMetadata, TopicPartition};
use crate::topic::TopicName;

/// A group's timing and assignor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// The server-side assignor. Default: uniform (Kafka's default).
    pub assignor: AssignorKind,
    /// A member not heard from for this long is removed and its partitions move; so is a static
    /// member away this long. Default: 45 s (Kafka's `group.consumer.session.timeout.ms`).
    pub session_timeout_ms: i64,
    /// A member asked to revoke partitions that has not done so within this long is removed, so
    /// a stuck consumer cannot hold partitions forever. Default: 5 min (Kafka's
    /// `max.poll.interval.ms`).
    pub rebalance_timeout_ms: i64,
    /// How often members should heartbeat; returned in every response. Default: 5 s (Kafka's
    /// `group.consumer.heartbeat.interval.ms`).
    pub heartbeat_interval_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            assignor: AssignorKind::Uniform,
            session_timeout_ms: 45_000,
            rebalance_timeout_ms: 300_000,
            heartbeat_interval_ms: 5_000,
        }
    }
}

/// A member and the deadlines a coordinator restarts after failover.
#[derive(Debug, Clone)]
pub(super) struct Member {
    pub(super) record: MemberRecord,
    /// Removed if not heard from by then (also while away as a static member).
    pub(super) session_deadline_ms: i64,
    /// Removed if still holding revoked partitions by then.
    pub(super) revocation_deadline_ms: Option<i64>,
}

/// One consumer group: see the module documentation.
#[derive(Debug, Clone)]
pub struct Group {
    pub(super) config: GroupConfig,
    /// Bumped on every change the assignor sees; the target is always at this epoch.
    pub(super) group_epoch: i32,
    /// The partition counts of the topics some member subscribes to: the assignor's view, and
    /// the baseline to tell whether new metadata changes anything.
    pub(super) topics: TopicMetadata,
    /// The target assignment at `group_epoch`; every member has an entry.
    pub(super) target: Assignment,
    pub(super) members: BTreeMap<MemberId, Member>,
    /// Who holds each partition (assigned or pending revocation): the one-owner invariant's
    /// index.
    pub(super) holders: BTreeMap<TopicPartition, MemberId>,
    /// Bumped on every change to what [`Group::snapshot`] returns.
    pub(super) version: u64,
}

impl Group {
    /// An empty group at epoch 0.
    pub fn new(config: GroupConfig) -> Self {
        Self {
            config,
            group_epoch: 0,
            topics: TopicMetadata::new(),
            target: Assignment::new(),
            members: BTreeMap::new(),
            holders: BTreeMap::new(),
            version: 0,
        }
    }

    /// The group's configuration.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The group epoch.
    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }

    /// The target assignment, at the group epoch.
    pub fn target(&self) -> &Assignment {
        &self.target
    }

    /// Every member, in id order.
    pub fn members(&self) -> impl Iterator<Item = &MemberRecord> {
        self.members.values().map(|m| &m.record)
    }

    /// One member.
    pub fn member(&self, id: &MemberId) -> Option<&MemberRecord> {
        self.members.get(id).map(|m| &m.record)
    }

    /// Whether the group has no members (it may then be deleted, or its offsets reset).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Changes whenever the persisted state changes: compare before and after a call to know
    /// whether to write a new [`Group::snapshot`].
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The earliest session or revocation deadline: when [`Group::expire`] next has work.
    pub fn next_deadline(&self) -> Option<i64> {
        self.members
            .values()
            .flat_map(|m| std::iter::once(m.session_deadline_ms).chain(m.revocation_deadline_ms))
            .min()
    }

    /// Handles one heartbeat at `now_ms`, reading partition counts from `topics` (the cluster's
    /// current topic metadata).
    ///
    /// # Errors
    ///
    /// A [`GroupError`] telling the member what to do; the group is unchanged except that a
    /// fenced member's session is not refreshed.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        topics: &TopicMetadata,
        now_ms: i64,
    ) -> Result<HeartbeatResponse, GroupError> {
        match hb.member_epoch {
            JOIN_EPOCH => self.join(hb, topics, now_ms),
            LEAVE_EPOCH => Ok(self.leave(hb.member_id)),
            TEMPORARY_LEAVE_EPOCH => self.leave_temporarily(hb.member_id, now_ms),
            epoch if epoch > 0 => self.beat(hb, topics, now_ms),
            epoch => Err(GroupError::InvalidEpoch(epoch)),
        }
    }

    /// Applies new topic metadata: if a subscribed topic appeared, vanished or changed its
    /// partition count, bumps the group epoch and recomputes the target. Members learn at
    /// their next heartbeat. Returns whether the epoch was bumped.
    pub fn update_topics(&mut self, topics: &TopicMetadata) -> bool {
        let view = self.subscribed_view(topics);
        if view == self.topics {
            return false;
        }
        self.topics = view;
        self.bump();
        true
    }

    /// Gives every member at least a full session from `now_ms`, without changing the stored
    /// state: for a coordinator that could not be reached for a while (cut off from its
    /// followers, or its process stopped), so that no member is expired for not heartbeating
    /// a coordinator that refused or could not hear it.
    pub fn grant_full_sessions(&mut self, now_ms: i64) {
        let deadline = now_ms.saturating_add(self.config.session_timeout_ms);
        for m in self.members.values_mut() {
            m.session_deadline_ms = m.session_deadline_ms.max(deadline);
        }
    }

    /// Removes every member whose session deadline, or revocation deadline, is at or before
    /// `now_ms`; their partitions are free at once. Returns the removed members.
    pub fn expire(&mut self, now_ms: i64) -> Vec<MemberId> {
        let expired: Vec<MemberId> = self
            .members
            .values()
            .filter(|m| {
                m.session_deadline_ms <= now_ms
                    || m.revocation_deadline_ms.is_some_and(|d| d <= now_ms)
            })
            .map(|m| m.record.member_id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                self.remove(id);
            }
            self.drop_unsubscribed_topics();
            self.bump();
        }
        expired
    }

    fn join(
        &mut self,
        hb: Heartbeat,
        topics: &TopicMetadata,
        now_ms: i64,
    ) -> Result<HeartbeatResponse, GroupError> {
        let Some(subscribed) = hb.subscribed_topics else {
            return Err(GroupError::MissingSubscription {
                member_id: hb.member_id,
            });
        };
        let replaced = match &hb.instance_id {
            Some(instance) => self.static_predecessor(instance, &hb.member_id)?,
            None => None,
        };
        let mut record = MemberRecord::new(hb.member_id.clone(), hb.instance_id, subscribed);
        let membership_changed =
            match replaced.or_else(|| self.members.get(&hb.member_id).map(|m| m.record.clone())) {
                // A static restart, or a rejoin after fencing: the new incarnation owns nothing, so
                // nothing is pending revocation; it keeps its assignment and its target share.
                Some(old) => {
                    record.assigned = old.assigned;
                    let share = self.target.remove(&old.member_id).unwrap_or_default();
                    self.remove(&old.member_id);
                    self.target.insert(record.member_id.clone(), share);
                    old.subscribed_topics != record.subscribed_topics
                }
                None => {
                    self.target
                        .insert(record.member_id.clone(), BTreeSet::new());
                    true
                }
            };
        self.put(record, now_ms);
        if membership_changed {
            self.topics = self.subscribed_view(topics);
            self.bump();
        } else {
            self.refresh_topics(topics);
        }
        Ok(self.reconcile(&hb.member_id, Some(&BTreeSet::new()), now_ms))
    }

    /// The away static member `member_id` takes over, if any.
    ///
    /// # Errors
    ///
    /// [`GroupError::UnreleasedInstanceId`] if another member holds `instance` and is not away.
    fn static_predecessor(
        &self,
        instance: &InstanceId,
        member_id: &MemberId,
    ) -> Result<Option<MemberRecord>, GroupError> {
        let Some(holder) = self
            .members
            .values()
            .find(|m| m.record.instance_id.as_ref() == Some(instance))
        else {
            return Ok(None);
        };
        if holder.record.member_id == *member_id {
            return Ok(None);
        }
        if holder.record.member_epoch != TEMPORARY_LEAVE_EPOCH {
            return Err(GroupError::UnreleasedInstanceId {
                instance_id: instance.clone(),
                holder: holder.record.member_id.clone(),
            });
        }
        Ok(Some(holder.record.clone()))
    }

    fn leave(&mut self, member_id: MemberId) -> HeartbeatResponse {
        if self.members.contains_key(&member_id) {
            self.remove(&member_id);
            self.drop_unsubscribed_topics();
            self.bump();
        }
        self.left(member_id, LEAVE_EPOCH)
    }

    fn leave_temporarily(
        &mut self,
        member_id: MemberId,
        now_ms: i64,
    ) -> Result<HeartbeatResponse, GroupError> {
        let Some(member) = self.members.get(&member_id) else {
            return Err(GroupError::UnknownMemberId { member_id });
        };
        if member.record.instance_id.is_none() {
            return Err(GroupError::NotStatic { member_id });
        }
        // The consumer closed, so it owns nothing: its revocations are done. Its assignment
        // stays reserved for its instance id.
        let mut record = member.record.with_epoch(TEMPORARY_LEAVE_EPOCH);
        record.pending_revocation.clear();
        record.state = MemberState::Stable;
        self.put(record, now_ms);
        Ok(self.left(member_id, TEMPORARY_LEAVE_EPOCH))
    }

    fn left(&self, member_id: MemberId, epoch: i32) -> HeartbeatResponse {
        HeartbeatResponse {
            member_id,
            member_epoch: epoch,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            assignment: BTreeSet::new(),
        }
    }

    fn beat(
        &mut self,
        hb: Heartbeat,
        topics: &TopicMetadata,
        now_ms: i64,
    ) -> Result<HeartbeatResponse, GroupError> {
        let Some(member) = self.members.get(&hb.member_id) else {
            return Err(GroupError::UnknownMemberId {
                member_id: hb.member_id,
            });
        };
        check_epoch(&member.record, hb.member_epoch, hb.owned.as_ref())?;
        let mut record = member.record.clone();
        let resubscribed = hb
            .subscribed_topics
            .filter(|s| *s != record.subscribed_topics)
            .map(|s| record.subscribed_topics = s)
            .is_some();
        self.put(record, now_ms);
        if resubscribed {
            self.topics = self.subscribed_view(topics);
            self.bump();
        } else {
            self.refresh_topics(topics);
        }
        Ok(self.reconcile(&hb.member_id, hb.owned.as_ref(), now_ms))
    }

    /// Advances `id` towards its target and answers it.
    fn reconcile(
        &mut self,
        id: &MemberId,
        owned: Option<&BTreeSet<TopicPartition>>,
        now_ms: i64,
    ) -> HeartbeatResponse {
        let member = &self.members[id];
        let empty = BTreeSet::new();
        let target = Target {
            epoch: self.group_epoch,
            partitions: self.target.get(id).unwrap_or(&empty),
        };
        let next = member::next_record(&member.record, &target, owned, |tp| {
            self.holders.get(tp).is_some_and(|h| h != id)
        });
        let revoking = next.state == MemberState::UnrevokedPartitions;
        let deadline = match member.revocation_deadline_ms {
            Some(d) if revoking && next.pending_revocation == member.record.pending_revocation => {
                Some(d)
            }
            _ => revoking.then(|| now_ms.saturating_add(self.config.rebalance_timeout_ms)),
        };
        let response = HeartbeatResponse {
            member_id: id.clone(),
            member_epoch: next.member_epoch,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            assignment: next.assigned.clone(),
        };
        self.put(next, now_ms);
        self.members
            .get_mut(id)
            .expect("just put")
            .revocation_deadline_ms = deadline;
        response
    }

    /// Stores `record`, refreshes its session, and keeps `holders` and `version` in step.
    fn put(&mut self, record: MemberRecord, now_ms: i64) {
        let id = record.member_id.clone();
        let session_deadline_ms = now_ms.saturating_add(self.config.session_timeout_ms);
        if let Some(old) = self.members.get(&id) {
            if old.record == record {
                self.members
                    .get_mut(&id)
                    .expect("present")
                    .session_deadline_ms = session_deadline_ms;
                return;
            }
            self.unhold(&old.record.clone());
        }
        for tp in record.held() {
            let previous = self.holders.insert(tp.clone(), id.clone());
            debug_assert!(
                previous.is_none_or(|p| p == id),
                "{tp} held by two members: no partition has two holders"
            );
        }
        let revocation_deadline_ms = self.members.get(&id).and_then(|m| m.revocation_deadline_ms);
        self.members.insert(
            id,
            Member {
                record,
                session_deadline_ms,
                revocation_deadline_ms,
            },
        );
        self.version += 1;
    }

    fn unhold(&mut self, record: &MemberRecord) {
        for tp in record.held() {
            if self.holders.get(tp) == Some(&record.member_id) {
                self.holders.remove(tp);
            }
        }
    }

    /// Drops a member and everything it holds; the caller bumps the epoch.
    fn remove(&mut self, id: &MemberId) {
        if let Some(m) = self.members.remove(id) {
            self.unhold(&m.record);
            self.target.remove(id);
            self.version += 1;
        }
    }

    /// The partition counts of the subscribed topics, as `topics` has them.
    fn subscribed_view(&self, topics: &TopicMetadata) -> TopicMetadata {
        let subscribed: BTreeSet<&TopicName> = self
            .members
            .values()
            .flat_map(|m| &m.record.subscribed_topics)
            .collect();
        topics
            .iter()
            .filter(|(t, _)| subscribed.contains(t))
            .map(|(t, &n)| (t.clone(), n))
            .collect()
    }

    fn refresh_topics(&mut self, topics: &TopicMetadata) {
        self.update_topics(topics);
    }

    /// After members left: forget topics nobody subscribes to any more.
    fn drop_unsubscribed_topics(&mut self) {
        let members = &self.members;
        self.topics.retain(|t, _| {
            members
                .values()
                .any(|m| m.record.subscribed_topics.contains(t))
        });
    }

    /// A new group epoch and its target assignment.
    fn bump(&mut self) {
        self.group_epoch += 1;
        let subscriptions: Vec<MemberSubscription> = self
            .members
            .values()
            .map(|m| MemberSubscription {
                member_id: m.record.member_id.clone(),
                topics: m.record.subscribed_topics.clone(),
            })
            .collect();
        self.target = assignor::assign(
            self.config.assignor,
            &subscriptions,
            &self.topics,
            &self.target,
        );
        self.version += 1;
    }
}

/// Kafka's `throwIfMemberEpochIsInvalid`: the member's epoch must be the group's idea of it,
/// or the one before if it owns nothing beyond its assignment (the response that raised its
/// epoch was lost).
fn check_epoch(
    record: &MemberRecord,
    received: i32,
    owned: Option<&BTreeSet<TopicPartition>>,
) -> Result<(), GroupError> {
    let lost_response = received == record.previous_member_epoch
        && received < record.member_epoch
        && owned.is_some_and(|o| o.is_subset(&record.assigned));
    if received == record.member_epoch || lost_response {
        return Ok(());
    }
    Err(GroupError::FencedMemberEpoch {
        member_id: record.member_id.clone(),
        received,
        current: record.member_epoch,
    })
}
