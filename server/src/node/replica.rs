//! A partition's replica set as its leader tracks it: the ISR from the metadata and each
//! follower's progress, from which the high watermark and ISR changes follow (the decisions
//! themselves are the pure functions of `crate::replication`).
//!
//! Followers report their log end offset with every fetch (the fetch offset). A follower is
//! "caught up" at a fetch that asks for the leader's log end offset as it was at that follower's
//! previous fetch (Kafka's lastCaughtUpTime rule), so a follower that keeps fetching but never
//! closes the gap eventually leaves the ISR.

use std::collections::HashMap;

use crate::metadata::BrokerId;
use crate::replication::{
    FollowerState, UNKNOWN_OFFSET, drop_silent, expand, high_watermark, shrink,
};

/// One follower's progress.
#[derive(Debug, Clone, Copy)]
struct Progress {
    log_end_offset: i64,
    last_caught_up_ms: i64,
    /// The leader's log end offset and the time when this follower last fetched.
    last_fetch_leader_leo: i64,
    last_fetch_ms: i64,
    /// When the follower last fetched, or when this broker started leading if it was in
    /// sync then: whether the leader can still reach it (see [`ReplicaSet::isr_heard_since`]).
    last_heard_ms: i64,
}

/// The replica set of one partition, as its leader sees it.
#[derive(Debug, Default)]
pub struct ReplicaSet {
    /// This broker.
    me: BrokerId,
    /// All replicas, in preference order.
    replicas: Vec<BrokerId>,
    /// The committed ISR from the metadata.
    isr: Vec<BrokerId>,
    /// Followers' progress (leader only; reset at every leadership change).
    progress: HashMap<BrokerId, Progress>,
    /// The offset at which this broker's current leader epoch started.
    epoch_start_offset: i64,
    /// An ISR change sent to the controller and not yet seen in the metadata.
    pending_isr: Option<Vec<BrokerId>>,
}

impl ReplicaSet {
    /// Starts leading at `epoch_start_offset`: every ISR follower counts as caught up now, so
    /// none is dropped before it had a chance to fetch from the new leader.
    pub fn become_leader(
        &mut self,
        me: BrokerId,
        replicas: &[BrokerId],
        isr: &[BrokerId],
        epoch_start_offset: i64,
        now_ms: i64,
    ) {
        self.me = me;
        self.replicas = replicas.to_vec();
        self.isr = isr.to_vec();
        self.epoch_start_offset = epoch_start_offset;
        self.pending_isr = None;
        self.progress = replicas
            .iter()
            .filter(|&&r| r != me)
            .map(|&r| {
                let caught_up = if isr.contains(&r) { now_ms } else { 0 };
                (
                    r,
                    Progress {
                        log_end_offset: UNKNOWN_OFFSET,
                        last_caught_up_ms: caught_up,
                        last_fetch_leader_leo: -1,
                        last_fetch_ms: 0,
                        last_heard_ms: caught_up,
                    },
                )
            })
            .collect();
    }

    /// Takes the replicas and ISR the metadata now holds.
    pub fn set_membership(&mut self, me: BrokerId, replicas: &[BrokerId], isr: &[BrokerId]) {
        self.me = me;
        self.replicas = replicas.to_vec();
        if self.pending_isr.as_deref() == Some(isr) {
            self.pending_isr = None;
        }
        self.isr = isr.to_vec();
    }

    /// The committed ISR.
    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }

    /// Whether `id` is a replica of this partition.
    pub fn is_replica(&self, id: BrokerId) -> bool {
        self.replicas.contains(&id)
    }

    /// Records a follower fetch at `fetch_offset` while the leader's log ends at `leader_leo`.
    pub fn record_fetch(&mut self, id: BrokerId, fetch_offset: i64, leader_leo: i64, now_ms: i64) {
        let p = self.progress.entry(id).or_insert(Progress {
            log_end_offset: UNKNOWN_OFFSET,
            last_caught_up_ms: 0,
            last_fetch_leader_leo: -1,
            last_fetch_ms: 0,
            last_heard_ms: 0,
        });
        if fetch_offset >= leader_leo {
            p.last_caught_up_ms = now_ms;
        } else if p.last_fetch_leader_leo >= 0 && fetch_offset >= p.last_fetch_leader_leo {
            p.last_caught_up_ms = p.last_caught_up_ms.max(p.last_fetch_ms);
        }
        p.log_end_offset = fetch_offset;
        p.last_fetch_leader_leo = leader_leo;
        p.last_fetch_ms = now_ms;
        p.last_heard_ms = now_ms;
    }

    /// Whether enough of the ISR was heard from at or after `since_ms` for an acks=all write
    /// to complete: at least `min_insync` members (this broker included), or the whole ISR if
    /// it is smaller (a shrunk ISR was agreed with the controller, which this leader reached).
    /// A follower is heard when it fetches, and a caught-up follower fetches at least every
    /// `replica_fetch_wait_max_ms` (its long poll), so a leader cut off from its followers
    /// finds out within about that.
    pub fn isr_heard_since(&self, since_ms: i64, min_insync: usize) -> bool {
        let heard = self
            .isr
            .iter()
            .filter(|&&r| {
                r == self.me
                    || self
                        .progress
                        .get(&r)
                        .is_some_and(|p| p.last_heard_ms >= since_ms)
            })
            .count();
        heard >= min_insync.min(self.isr.len()).max(1)
    }

    /// The high watermark the ISR allows with the leader at `leader_leo`: every member of the
    /// *maximal* ISR — the committed one plus any member of a pending proposal (KIP-497) — has
    /// everything below it. Counting a joining follower before its admission commits matters:
    /// once committed it may be elected, so it must already hold every acknowledged record. A
    /// follower not heard from yet holds the watermark back (the caller never lowers it).
    pub fn high_watermark(&self, leader_leo: i64) -> i64 {
        let pending = self.pending_isr.as_deref().unwrap_or(&[]);
        let members = self
            .isr
            .iter()
            .chain(pending.iter().filter(|r| !self.isr.contains(r)))
            .filter(|&&r| r != self.me);
        let followers = members.map(|r| {
            self.progress
                .get(r)
                .map_or(UNKNOWN_OFFSET, |p| p.log_end_offset)
        });
        high_watermark(leader_leo, followers)
    }

    /// Followers' states, in replica order (so an expanded ISR lists them in that order).
    fn states(&self) -> Vec<FollowerState> {
        self.replicas
            .iter()
            .filter_map(|id| {
                self.progress.get(id).map(|p| FollowerState {
                    id: *id,
                    log_end_offset: p.log_end_offset,
                    last_caught_up_ms: p.last_caught_up_ms,
                })
            })
            .collect()
    }

    /// An ISR without the followers that lag (`lag_max_ms`) or went silent (no fetch for
    /// `silence_max_ms`), if any did and no change is on its way (checked periodically).
    pub fn shrink_proposal(
        &mut self,
        now_ms: i64,
        lag_max_ms: i64,
        silence_max_ms: i64,
    ) -> Option<Vec<BrokerId>> {
        if self.pending_isr.is_some() {
            return None;
        }
        let lagging = shrink(&self.isr, self.me, &self.states(), now_ms, lag_max_ms);
        let base = lagging.clone().unwrap_or_else(|| self.isr.clone());
        let heard: Vec<(BrokerId, i64)> = self
            .progress
            .iter()
            .map(|(&id, p)| (id, p.last_heard_ms))
            .collect();
        let proposal = drop_silent(&base, self.me, &heard, now_ms, silence_max_ms).or(lagging)?;
        self.pending_isr = Some(proposal.clone());
        Some(proposal)
    }

    /// An ISR with `follower` added, if its fetch shows it caught up and no change is on its
    /// way. Only the fetching follower is considered (as Kafka does): judging a silent one by
    /// its last known log end would let a dead follower back in on an idle partition.
    pub fn expand_proposal(
        &mut self,
        follower: BrokerId,
        high_watermark: i64,
    ) -> Option<Vec<BrokerId>> {
        if self.pending_isr.is_some() {
            return None;
        }
        let state: Vec<FollowerState> = self
            .states()
            .into_iter()
            .filter(|f| f.id == follower)
            .collect();
        let proposal = expand(&self.isr, &state, high_watermark, self.epoch_start_offset)?;
        self.pending_isr = Some(proposal.clone());
        Some(proposal)
    }

    /// Forgets a proposal the controller refused or that failed, so it is tried again.
    pub fn proposal_failed(&mut self) {
        self.pending_isr = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_hears_its_isr_through_their_fetches() {
        let (me, a, b): (BrokerId, BrokerId, BrokerId) = (1, 2, 3);
        let mut set = ReplicaSet::default();
        // Becoming leader at 1 000 counts every in-sync follower as heard then.
        set.become_leader(me, &[me, a, b], &[me, a, b], 0, 1_000);
        assert!(set.isr_heard_since(1_000, 2));
        // Nobody fetched since: cut off (only itself is heard).
        assert!(!set.isr_heard_since(2_000, 2));
        set.record_fetch(a, 0, 0, 2_500);
        assert!(set.isr_heard_since(2_000, 2), "itself and a make 2");
        assert!(!set.isr_heard_since(2_000, 3));
        // An ISR the controller shrank to the leader alone: nothing to hear from.
        set.set_membership(me, &[me, a, b], &[me]);
        assert!(set.isr_heard_since(9_000, 2));
    }
}
