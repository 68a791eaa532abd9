//! KIP-848's `uniform` assignor: balanced, sticky, and moving as little as it can.
//!
//! 1. **Keep** every partition of the current assignment that still exists, whose owner is
//!    still a member and still subscribes to its topic.
//! 2. **Place** the partitions nobody kept, most constrained first (topics with the fewest
//!    subscribers), each with the eligible member holding the fewest partitions.
//! 3. **Balance**: while some member `s` can pass a partition along a chain of members
//!    `s → a → … → d` (each able to take a partition of a topic its predecessor holds, as
//!    subscriptions allow) to a member `d` holding at least two fewer partitions than `s`, move
//!    one partition along the shortest such chain (from the most loaded source among equally
//!    short ones; every hop moves one partition, so short chains move little).
//!
//! Each move in step 3 lowers the sum of squared member counts, so the loop ends, and it ends
//! exactly when no chain is left: by the theory of semi-matchings (Harvey, Ladner, Lovász,
//! Tamir, 2003) that assignment is optimally balanced, the largest count as small as the
//! subscriptions allow. Members with identical subscriptions always differ by at most one
//! (the direct chain between them would otherwise exist). When everyone subscribes to the same
//! topics every chain has length one, a partition moves only from a member above its fair share
//! to one below it, and the number moved is the least any balanced assignment needs; when a
//! partition must move along a chain, one already moving (or returning to its previous owner)
//! is preferred over one that would otherwise stay.
//!
//! Counts are balanced over all of a member's partitions, not per topic, as in Kafka.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::super::types::{Assignment, MemberId, TopicMetadata, TopicPartition};
use crate::topic::TopicName;

pub(super) fn assign(
    members: &BTreeMap<&MemberId, &BTreeSet<TopicName>>,
    topics: &TopicMetadata,
    current: &Assignment,
) -> Assignment {
    let mut state = State::new(members, topics);
    state.keep(current);
    state.place_unassigned();
    state.balance();
    state.into_assignment()
}

/// The problem indexed densely: members, topics and partitions by position, partitions sorted
/// by topic so each topic's partitions form one contiguous range.
struct State<'a> {
    members: Vec<&'a MemberId>,
    /// Subscribed topics that exist, in name order.
    topics: Vec<&'a TopicName>,
    /// Per topic, its first partition index and its partition count.
    ranges: Vec<(usize, usize)>,
    /// Per topic, the members subscribing to it, in id order.
    subscribers: Vec<Vec<usize>>,
    /// Per member, per topic: does it subscribe?
    subscribes: Vec<Vec<bool>>,
    /// Per partition, its topic.
    topic_of: Vec<usize>,
    /// Per partition, the member keeping it from `current` (stickiness), if any.
    original: Vec<Option<usize>>,
    /// Per partition, its owner so far.
    owner: Vec<Option<usize>>,
    /// Per member, the partitions it owns so far.
    owned: Vec<BTreeSet<usize>>,
}

impl<'a> State<'a> {
    fn new(
        members: &BTreeMap<&'a MemberId, &'a BTreeSet<TopicName>>,
        meta: &'a TopicMetadata,
    ) -> Self {
        let member_list: Vec<&MemberId> = members.keys().copied().collect();
        let mut topics = Vec::new();
        let mut ranges = Vec::new();
        let mut subscribers = Vec::new();
        let mut topic_of = Vec::new();
        for (topic, &count) in meta {
            let subs: Vec<usize> = members
                .values()
                .enumerate()
                .filter(|(_, s)| s.contains(topic))
                .map(|(i, _)| i)
                .collect();
            if subs.is_empty() || count == 0 {
                continue;
            }
            ranges.push((topic_of.len(), count as usize));
            topic_of.extend(std::iter::repeat_n(topics.len(), count as usize));
            topics.push(topic);
            subscribers.push(subs);
        }
        let mut subscribes = vec![vec![false; topics.len()]; member_list.len()];
        for (t, subs) in subscribers.iter().enumerate() {
            for &m in subs {
                subscribes[m][t] = true;
            }
        }
        let n = topic_of.len();
        Self {
            owned: vec![BTreeSet::new(); member_list.len()],
            members: member_list,
            topics,
            ranges,
            subscribers,
            subscribes,
            topic_of,
            original: vec![None; n],
            owner: vec![None; n],
        }
    }

    /// The dense index of `tp`, if it exists and someone subscribes to its topic.
    fn index_of(&self, tp: &TopicPartition) -> Option<usize> {
        let t = self.topics.binary_search(&&tp.topic).ok()?;
        let (base, count) = self.ranges[t];
        let p = tp.partition as usize;
        (p < count).then_some(base + p)
    }

    fn give(&mut self, p: usize, m: usize) {
        if let Some(old) = self.owner[p] {
            self.owned[old].remove(&p);
        }
        self.owner[p] = Some(m);
        self.owned[m].insert(p);
    }

    /// Step 1: stickiness.
    fn keep(&mut self, current: &Assignment) {
        for (m, id) in self.members.clone().into_iter().enumerate() {
            let Some(parts) = current.get(id) else {
                continue;
            };
            for tp in parts {
                let Some(p) = self.index_of(tp) else { continue };
                if self.owner[p].is_none() && self.subscribes[m][self.topic_of[p]] {
                    self.original[p] = Some(m);
                    self.give(p, m);
                }
            }
        }
    }

    /// Step 2: everything not kept, most constrained topics first, to the least loaded
    /// eligible member (lowest id on ties).
    fn place_unassigned(&mut self) {
        let mut free: Vec<usize> = (0..self.owner.len())
            .filter(|&p| self.owner[p].is_none())
            .collect();
        free.sort_by_key(|&p| (self.subscribers[self.topic_of[p]].len(), p));
        for p in free {
            let m = *self.subscribers[self.topic_of[p]]
                .iter()
                .min_by_key(|&&m| (self.owned[m].len(), m))
                .expect("only subscribed topics have partitions");
            self.give(p, m);
        }
    }

    /// Step 3: move partitions along improving chains until none is left.
    fn balance(&mut self) {
        let eligible: Vec<usize> = (0..self.members.len())
            .filter(|&m| self.subscribes[m].iter().any(|&s| s))
            .collect();
        loop {
            let Some(min) = eligible.iter().map(|&m| self.owned[m].len()).min() else {
                return;
            };
            let mut sources = eligible.clone();
            sources.sort_by_key(|&m| (std::cmp::Reverse(self.owned[m].len()), m));
            // The shortest chain, from the most loaded source among equals: a direct hop from
            // the most loaded member is as good as it gets, so stop looking there.
            let mut best: Option<Vec<usize>> = None;
            for s in sources
                .into_iter()
                .take_while(|&s| self.owned[s].len() >= min + 2)
            {
                if let Some(path) = self.improving_chain(s) {
                    if best.as_ref().is_none_or(|b| path.len() < b.len()) {
                        best = Some(path);
                    }
                    if best.as_ref().is_some_and(|b| b.len() == 2) {
                        break;
                    }
                }
            }
            let Some(path) = best else { return };
            // Last hop first, so no partition is passed on twice in one chain.
            for hop in path.windows(2).rev() {
                let p = self.pick(hop[0], hop[1]);
                self.give(p, hop[1]);
            }
        }
    }

    /// The topics `m` owns partitions of.
    fn topics_owned(&self, m: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(&p) = self.owned[m].range(from..).next() {
            let t = self.topic_of[p];
            out.push(t);
            let (base, count) = self.ranges[t];
            from = base + count;
        }
        out
    }

    /// The shortest chain from `s` to a member holding at least two fewer partitions, by
    /// breadth-first search; among the nearest, the least loaded, then the lowest id.
    fn improving_chain(&self, s: usize) -> Option<Vec<usize>> {
        let limit = self.owned[s].len().checked_sub(2)?;
        let mut prev: Vec<Option<usize>> = vec![None; self.members.len()];
        let mut seen = vec![false; self.members.len()];
        seen[s] = true;
        let mut layer = VecDeque::from([s]);
        while !layer.is_empty() {
            let mut next = VecDeque::new();
            for &u in &layer {
                for t in self.topics_owned(u) {
                    for &v in &self.subscribers[t] {
                        if !seen[v] {
                            seen[v] = true;
                            prev[v] = Some(u);
                            next.push_back(v);
                        }
                    }
                }
            }
            let best = next
                .iter()
                .copied()
                .filter(|&v| self.owned[v].len() <= limit)
                .min_by_key(|&v| (self.owned[v].len(), v));
            if let Some(d) = best {
                let mut path = vec![d];
                while let Some(u) = prev[*path.last().expect("path is not empty")] {
                    path.push(u);
                }
                path.reverse();
                return Some(path);
            }
            layer = next;
        }
        None
    }

    /// Which of `from`'s partitions to hand to `to`: one `to` may take; preferably one that
    /// was `to`'s before, else one that is moving anyway, else the highest.
    fn pick(&self, from: usize, to: usize) -> usize {
        self.owned[from]
            .iter()
            .copied()
            .filter(|&p| self.subscribes[to][self.topic_of[p]])
            .min_by_key(|&p| {
                let rank = match self.original[p] {
                    Some(o) if o == to => 0,
                    Some(o) if o == from => 2,
                    _ => 1,
                };
                (rank, std::cmp::Reverse(p))
            })
            .expect("a chain hop exists only where the receiver can take a partition")
    }

    fn into_assignment(self) -> Assignment {
        let mut out: Assignment = self
            .members
            .iter()
            .map(|&id| (id.clone(), BTreeSet::new()))
            .collect();
        for (p, owner) in self.owner.iter().enumerate() {
            let m = owner.expect("every partition is placed");
            let t = self.topic_of[p];
            let tp = TopicPartition::new(self.topics[t].clone(), (p - self.ranges[t].0) as u32);
            out.get_mut(self.members[m])
                .expect("every member has an entry")
                .insert(tp);
        }
        out
    }
}
