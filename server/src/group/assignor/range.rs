//! Kafka's RangeAssignor, per topic: the subscribers of a topic in member-id order, each given
//! a contiguous range of `partitions / subscribers` partitions, the first
//! `partitions % subscribers` one more. With the same subscribers on co-partitioned topics,
//! the same member gets the same partition numbers of every topic (the reason to pick it).

use std::collections::{BTreeMap, BTreeSet};

use super::super::types::{Assignment, MemberId, TopicMetadata, TopicPartition};
use crate::topic::TopicName;

pub(super) fn assign(
    members: &BTreeMap<&MemberId, &BTreeSet<TopicName>>,
    topics: &TopicMetadata,
) -> Assignment {
    let mut out: Assignment = members
        .keys()
        .map(|&id| (id.clone(), BTreeSet::new()))
        .collect();
    for (topic, &count) in topics {
        let subscribers: Vec<&MemberId> = members
            .iter()
            .filter(|(_, subs)| subs.contains(topic))
            .map(|(&id, _)| id)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        let n = subscribers.len() as u32;
        let (base, extra) = (count / n, count % n);
        let mut next = 0;
        for (i, id) in subscribers.into_iter().enumerate() {
            let take = base + u32::from((i as u32) < extra);
            let owned = out.get_mut(id).expect("every member has an entry");
            owned.extend((next..next + take).map(|p| TopicPartition::new(topic.clone(), p)));
            next += take;
        }
    }
    out
}
