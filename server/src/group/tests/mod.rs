//! Reconciliation tests: scenarios step by step (`scenarios.rs`) and a randomised simulation
//! of clients heartbeating, releasing, crashing and rejoining in any order (`simulation.rs`).
//!
//! Both drive [`Group`] through [`Client`], a model of a well-behaved consumer: it takes new
//! partitions as soon as a response names them, releases revoked ones when it is done with
//! them, reports what it owns in every heartbeat, abandons everything when refused, and gives
//! its partitions up by itself when its session or a revocation outlives its timeout (as a
//! Kafka consumer does), so it never owns what the group may have handed to someone else.

mod scenarios;
mod simulation;

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Group, GroupConfig, GroupError, Heartbeat, HeartbeatResponse, InstanceId, MemberId,
    TopicMetadata, TopicPartition,
};
use crate::topic::TopicName;

fn t(name: &str) -> TopicName {
    TopicName::new(name).expect("valid test topic")
}

fn tp(topic: &str, p: u32) -> TopicPartition {
    TopicPartition::new(t(topic), p)
}

fn meta(topics: &[(&str, u32)]) -> TopicMetadata {
    topics.iter().map(|&(name, n)| (t(name), n)).collect()
}

/// A consumer, as the group sees it from the outside.
#[derive(Debug, Clone)]
struct Client {
    member_id: MemberId,
    instance_id: Option<InstanceId>,
    topics: BTreeSet<TopicName>,
    /// `None` while not in the group.
    epoch: Option<i32>,
    /// What it owns (processes) right now.
    owned: BTreeSet<TopicPartition>,
    /// The latest assignment it was given.
    assignment: BTreeSet<TopicPartition>,
    /// When its latest successful heartbeat was answered.
    last_ok_ms: i64,
    /// Since when it has owed a revocation the group has not yet seen.
    revoking_since_ms: Option<i64>,
}

impl Client {
    fn new(id: &str, topics: &[&str]) -> Self {
        Self {
            member_id: MemberId::new(id),
            instance_id: None,
            topics: topics.iter().map(|s| t(s)).collect(),
            epoch: None,
            owned: BTreeSet::new(),
            assignment: BTreeSet::new(),
            last_ok_ms: 0,
            revoking_since_ms: None,
        }
    }

    fn with_instance(mut self, instance: &str) -> Self {
        self.instance_id = Some(InstanceId::new(instance));
        self
    }

    fn active(&self) -> bool {
        self.epoch.is_some()
    }

    /// Joins (epoch 0) owning nothing.
    fn join(
        &mut self,
        group: &mut Group,
        topics: &TopicMetadata,
        now_ms: i64,
    ) -> Result<HeartbeatResponse, GroupError> {
        self.owned.clear();
        self.assignment.clear();
        let hb = Heartbeat {
            member_id: self.member_id.clone(),
            member_epoch: 0,
            instance_id: self.instance_id.clone(),
            subscribed_topics: Some(self.topics.clone()),
            owned: Some(BTreeSet::new()),
        };
        self.send(group, hb, topics, now_ms)
    }

    /// One heartbeat reporting what it owns.
    fn heartbeat(
        &mut self,
        group: &mut Group,
        topics: &TopicMetadata,
        now_ms: i64,
    ) -> Result<HeartbeatResponse, GroupError> {
        let hb = Heartbeat {
            member_id: self.member_id.clone(),
            member_epoch: self.epoch.expect("heartbeats only while in the group"),
            instance_id: self.instance_id.clone(),
            subscribed_topics: None,
            owned: Some(self.owned.clone()),
        };
        self.send(group, hb, topics, now_ms)
    }

    fn send(
        &mut self,
        group: &mut Group,
        hb: Heartbeat,
        topics: &TopicMetadata,
        now_ms: i64,
    ) -> Result<HeartbeatResponse, GroupError> {
        let reported_all_revoked = hb
            .owned
            .as_ref()
            .is_some_and(|o| o.is_subset(&self.assignment));
        match group.heartbeat(hb, topics, now_ms) {
            Ok(resp) => {
                self.epoch = Some(resp.member_epoch);
                self.last_ok_ms = now_ms;
                self.owned.extend(resp.assignment.iter().cloned());
                self.assignment = resp.assignment.clone();
                if reported_all_revoked {
                    self.revoking_since_ms = None;
                }
                if !self.owned.is_subset(&self.assignment) {
                    self.revoking_since_ms.get_or_insert(now_ms);
                }
                Ok(resp)
            }
            Err(e) => {
                self.abandon();
                Err(e)
            }
        }
    }

    /// Finishes revoking: keeps only what the latest assignment allows.
    fn release(&mut self) {
        let assignment = &self.assignment;
        self.owned.retain(|p| assignment.contains(p));
    }

    /// Leaves the group: releases everything first, then says so (epoch -1, or -2 if static
    /// and `temporarily`).
    fn leave(
        &mut self,
        group: &mut Group,
        topics: &TopicMetadata,
        now_ms: i64,
        temporarily: bool,
    ) -> Result<HeartbeatResponse, GroupError> {
        self.abandon();
        let hb = Heartbeat {
            member_id: self.member_id.clone(),
            member_epoch: if temporarily { -2 } else { -1 },
            instance_id: self.instance_id.clone(),
            subscribed_topics: None,
            owned: Some(BTreeSet::new()),
        };
        group.heartbeat(hb, topics, now_ms)
    }

    /// Drops every partition and forgets its epoch (fenced, crashed, timed out).
    fn abandon(&mut self) {
        self.epoch = None;
        self.owned.clear();
        self.assignment.clear();
        self.revoking_since_ms = None;
    }

    /// The client's own timers: no answer for a session timeout, or a revocation outstanding
    /// for a rebalance timeout, and it gives everything up.
    fn check_timers(&mut self, config: &GroupConfig, now_ms: i64) {
        let session_over = self.active() && self.last_ok_ms + config.session_timeout_ms <= now_ms;
        let revocation_over = self
            .revoking_since_ms
            .is_some_and(|since| since + config.rebalance_timeout_ms <= now_ms);
        if session_over || revocation_over {
            self.abandon();
        }
    }
}

/// No partition owned by two clients; every client owns only what the group has it hold.
fn check_owners(group: &Group, clients: &[Client]) {
    let mut owner: BTreeMap<&TopicPartition, &MemberId> = BTreeMap::new();
    for c in clients {
        for p in &c.owned {
            if let Some(other) = owner.insert(p, &c.member_id) {
                panic!("{p} owned by {other} and {}", c.member_id);
            }
        }
        if c.active() {
            let record = group
                .member(&c.member_id)
                .expect("an active client is a member");
            let held: BTreeSet<&TopicPartition> = record.held().collect();
            assert!(
                c.owned.iter().all(|p| held.contains(p)),
                "{} owns {:?} beyond {held:?}",
                c.member_id,
                c.owned
            );
        }
    }
    check_group(group);
}

/// The group's own invariants: no partition held twice; a target share for every member.
fn check_group(group: &Group) {
    let mut holder = BTreeMap::new();
    for m in group.members() {
        assert!(
            m.assigned.is_disjoint(&m.pending_revocation),
            "{}",
            m.member_id
        );
        for p in m.held() {
            if let Some(other) = holder.insert(p.clone(), m.member_id.clone()) {
                panic!("{p} held by {other} and {}", m.member_id);
            }
        }
    }
    let members: Vec<_> = group.members().map(|m| &m.member_id).collect();
    assert_eq!(group.target().keys().collect::<Vec<_>>(), members);
}
