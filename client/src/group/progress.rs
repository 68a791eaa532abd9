//! What a member owns and how far it got: the partitions it holds, the position after the last
//! record handed to the application in each, and the last offset committed for it. Plain data,
//! no I/O: the [`GroupConsumer`](super::GroupConsumer) feeds it and asks it what to commit.
//!
//! Also [`diff`]: how a member gets from what it owns to what the coordinator assigned it.

use std::collections::{BTreeMap, BTreeSet};

use super::TopicPartition;

/// The steps from the partitions a member owns to its assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reconciliation {
    /// Owned but no longer assigned: stop, commit, release.
    pub revoke: BTreeSet<TopicPartition>,
    /// Assigned but not owned yet: look up where to start, then consume.
    pub assign: BTreeSet<TopicPartition>,
}

/// What must change for a member owning `owned` to own exactly `assignment`.
pub(crate) fn diff(
    owned: &BTreeSet<TopicPartition>,
    assignment: &BTreeSet<TopicPartition>,
) -> Reconciliation {
    Reconciliation {
        revoke: owned.difference(assignment).cloned().collect(),
        assign: assignment.difference(owned).cloned().collect(),
    }
}

/// One owned partition's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    /// The offset after the last record handed to the application: what a commit stores.
    next: i64,
    /// The offset last committed (by this member, or found committed when it took the
    /// partition); `None` if the group never committed one.
    committed: Option<i64>,
}

/// The partitions a member owns, each with its position and committed offset.
///
/// Keyed by topic then partition so a delivered record (whose topic is an `Arc<str>`) finds
/// its entry without allocating.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    topics: BTreeMap<String, BTreeMap<u32, Position>>,
}

impl Progress {
    /// Starts owning `tp` at `next`, with `committed` the group's committed offset, if any.
    pub fn start(&mut self, tp: &TopicPartition, next: i64, committed: Option<i64>) {
        self.topics
            .entry(tp.topic.clone())
            .or_default()
            .insert(tp.partition, Position { next, committed });
    }

    /// Records that the record at `offset` was handed to the application. Positions only move
    /// forward; a record of a partition not owned is ignored.
    pub fn delivered(&mut self, topic: &str, partition: u32, offset: i64) {
        if let Some(p) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.get_mut(&partition))
        {
            p.next = p.next.max(offset + 1);
        }
    }

    /// Stores `next` as the offset a commit of `tp` stores (the application finished the
    /// records before it), unless the position is already past it. Returns whether `tp` is
    /// owned.
    pub fn store(&mut self, tp: &TopicPartition, next: i64) -> bool {
        match self
            .topics
            .get_mut(&tp.topic)
            .and_then(|t| t.get_mut(&tp.partition))
        {
            Some(p) => {
                p.next = p.next.max(next);
                true
            }
            None => false,
        }
    }

    /// The position of `topic`/`partition`, if owned.
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        self.topics.get(topic)?.get(&partition).map(|p| p.next)
    }

    /// Owned partitions whose position differs from their committed offset (within `only`,
    /// when given), with the position to commit.
    pub fn uncommitted(
        &self,
        only: Option<&BTreeSet<TopicPartition>>,
    ) -> Vec<(TopicPartition, i64)> {
        self.iter()
            .filter(|(tp, p)| p.committed != Some(p.next) && only.is_none_or(|o| o.contains(tp)))
            .map(|(tp, p)| (tp, p.next))
            .collect()
    }

    /// Records that `offsets` were committed. A partition released meanwhile is skipped, and a
    /// committed offset never moves back (a late answer to an older commit).
    pub fn committed(&mut self, offsets: &[(TopicPartition, i64)]) {
        for (tp, offset) in offsets {
            if let Some(p) = self
                .topics
                .get_mut(&tp.topic)
                .and_then(|t| t.get_mut(&tp.partition))
            {
                p.committed = Some(p.committed.map_or(*offset, |c| c.max(*offset)));
            }
        }
    }

    /// Stops owning `partitions`.
    pub fn remove(&mut self, partitions: &BTreeSet<TopicPartition>) {
        for tp in partitions {
            if let Some(t) = self.topics.get_mut(&tp.topic) {
                t.remove(&tp.partition);
                if t.is_empty() {
                    self.topics.remove(&tp.topic);
                }
            }
        }
    }

    /// Stops owning everything; returns what was owned.
    pub fn clear(&mut self) -> BTreeSet<TopicPartition> {
        let owned = self.owned();
        self.topics.clear();
        owned
    }

    /// The partitions owned.
    pub fn owned(&self) -> BTreeSet<TopicPartition> {
        self.iter().map(|(tp, _)| tp).collect()
    }

    fn iter(&self) -> impl Iterator<Item = (TopicPartition, &Position)> {
        self.topics.iter().flat_map(|(topic, parts)| {
            parts
                .iter()
                .map(move |(&partition, p)| (TopicPartition::new(topic.clone(), partition), p))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&str, u32)]) -> BTreeSet<TopicPartition> {
        items
            .iter()
            .map(|(t, p)| TopicPartition::new(*t, *p))
            .collect()
    }

    #[test]
    fn diff_revokes_before_it_assigns() {
        type Set = &'static [(&'static str, u32)];
        // owned, assignment, revoke, assign
        let cases: &[(Set, Set, Set, Set)] = &[
            (&[], &[], &[], &[]),
            (&[], &[("t", 0), ("t", 1)], &[], &[("t", 0), ("t", 1)]),
            (&[("t", 0), ("t", 1)], &[("t", 1)], &[("t", 0)], &[]),
            (&[("t", 0)], &[("t", 1)], &[("t", 0)], &[("t", 1)]),
            (&[("a", 0), ("b", 0)], &[("a", 0), ("b", 0)], &[], &[]),
            (&[("a", 0)], &[], &[("a", 0)], &[]),
            // Same partition number, another topic.
            (&[("a", 1)], &[("b", 1)], &[("a", 1)], &[("b", 1)]),
        ];
        for (owned, assignment, revoke, assign) in cases {
            let d = diff(&set(owned), &set(assignment));
            assert_eq!(d.revoke, set(revoke), "owned {owned:?} → {assignment:?}");
            assert_eq!(d.assign, set(assign), "owned {owned:?} → {assignment:?}");
        }
    }

    #[test]
    fn positions_follow_delivered_records_and_only_move_forward() {
        let mut p = Progress::default();
        let t0 = TopicPartition::new("t", 0);
        p.start(&t0, 10, Some(10));
        assert!(p.uncommitted(None).is_empty(), "nothing delivered yet");
        p.delivered("t", 0, 10);
        p.delivered("t", 0, 11);
        assert_eq!(p.position("t", 0), Some(12));
        p.delivered("t", 0, 5);
        assert_eq!(p.position("t", 0), Some(12), "never backwards");
        p.delivered("t", 9, 100);
        p.delivered("other", 0, 100);
        assert_eq!(
            p.owned(),
            set(&[("t", 0)]),
            "records of unowned partitions ignored"
        );
        assert_eq!(p.uncommitted(None), vec![(t0, 12)]);
    }

    #[test]
    fn commit_bookkeeping() {
        let (a, b, c) = (
            TopicPartition::new("t", 0),
            TopicPartition::new("t", 1),
            TopicPartition::new("u", 0),
        );
        let mut p = Progress::default();
        p.start(&a, 0, None);
        p.start(&b, 7, Some(7));
        p.start(&c, 3, None);
        // A partition never committed is committed at its start, so the next owner starts
        // there rather than applying its own reset policy later.
        assert_eq!(p.uncommitted(None), vec![(a.clone(), 0), (c.clone(), 3)]);
        p.delivered("t", 1, 7);
        p.delivered("u", 0, 3);
        let only_t = set(&[("t", 0), ("t", 1)]);
        assert_eq!(
            p.uncommitted(Some(&only_t)),
            vec![(a.clone(), 0), (b.clone(), 8)]
        );
        p.committed(&[(a.clone(), 0), (b.clone(), 8)]);
        assert_eq!(p.uncommitted(None), vec![(c.clone(), 4)]);
        // A late answer to an older commit does not move the committed offset back.
        p.committed(&[(b.clone(), 7)]);
        assert_eq!(p.uncommitted(Some(&only_t)), vec![]);
        // A commit answered after the partition was released does not bring it back.
        p.remove(&set(&[("u", 0)]));
        p.committed(&[(c, 4)]);
        assert_eq!(p.owned(), only_t);
        assert_eq!(p.clear(), only_t);
        assert!(p.owned().is_empty());
        assert_eq!(p.position("t", 0), None);
    }
}
