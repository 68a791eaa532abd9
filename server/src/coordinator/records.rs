//! What the coordinator writes to `__consumer_offsets`, and how a new coordinator reads it back.
//!
//! Every record is keyed; the latest record of a key wins, and an empty value deletes the key
//! (a tombstone), as in Kafka's compacted `__consumer_offsets`. Keys and values are JSON, so an
//! operator reading the topic with `RECORD_FORMAT_TEXT` (grpcurl) sees what is stored:
//!
//! - `{"type":"offset","group":"g","topic":"t","partition":0}` →
//!   `{"offset":42,"metadata":"","commit_timestamp_ms":…}`: a committed offset.
//! - `{"type":"group","group":"g"}` → a [`GroupSnapshot`]: the group's members, target and
//!   epochs (written whenever they change).
//!
//! [`Replay`] folds records in log order into the state a coordinator loads.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::group::{GroupSnapshot, TopicPartition};
use crate::topic::TopicName;

/// A record's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Key {
    /// A group's committed offset for one partition.
    Offset {
        /// Group id.
        group: String,
        /// Topic.
        topic: TopicName,
        /// Partition.
        partition: u32,
    },
    /// A group's membership state.
    Group {
        /// Group id.
        group: String,
    },
}

impl Key {
    /// The group the record belongs to.
    pub fn group(&self) -> &str {
        match self {
            Self::Offset { group, .. } | Self::Group { group } => group,
        }
    }

    /// The key as stored.
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a key always serialises"))
    }
}

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The next record to consume.
    pub offset: i64,
    /// The committer's free text.
    #[serde(default)]
    pub metadata: String,
    /// When it was committed (ms since the Unix epoch).
    pub commit_timestamp_ms: i64,
}

/// Encodes any stored value.
pub fn encode_value<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("stored values always serialise"))
}

/// A group as a new coordinator finds it in the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedGroup {
    /// The last snapshot written, if the group ever had members.
    pub snapshot: Option<GroupSnapshot>,
    /// Committed offsets.
    pub offsets: BTreeMap<TopicPartition, Committed>,
}

/// Replays records in log order.
#[derive(Debug, Default)]
pub struct Replay {
    groups: HashMap<String, LoadedGroup>,
    /// Records that did not decode (written by something else; skipped with a warning).
    pub skipped: usize,
}

impl Replay {
    /// Applies one record.
    pub fn apply(&mut self, key: Option<&[u8]>, value: &[u8]) {
        let Some(key) = key.and_then(|k| serde_json::from_slice::<Key>(k).ok()) else {
            self.skipped += 1;
            return;
        };
        match key {
            Key::Offset {
                group,
                topic,
                partition,
            } => {
                let tp = TopicPartition::new(topic, partition);
                if value.is_empty() {
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.offsets.remove(&tp);
                    }
                    return;
                }
                match serde_json::from_slice::<Committed>(value) {
                    Ok(c) => {
                        self.groups.entry(group).or_default().offsets.insert(tp, c);
                    }
                    Err(_) => self.skipped += 1,
                }
            }
            Key::Group { group } => {
                if value.is_empty() {
                    self.groups.remove(&group);
                    return;
                }
                match serde_json::from_slice::<GroupSnapshot>(value) {
                    Ok(s) => self.groups.entry(group).or_default().snapshot = Some(s),
                    Err(_) => self.skipped += 1,
                }
            }
        }
    }

    /// Every group found.
    pub fn finish(self) -> HashMap<String, LoadedGroup> {
        self.groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::{Group, GroupConfig, Heartbeat, MemberId, TopicMetadata};

    fn tp(t: &str, p: u32) -> TopicPartition {
        TopicPartition::new(TopicName::new(t).unwrap(), p)
    }

    fn offset_key(g: &str, t: &str, p: u32) -> Bytes {
        Key::Offset {
            group: g.into(),
            topic: TopicName::new(t).unwrap(),
            partition: p,
        }
        .encode()
    }

    fn committed(offset: i64) -> Bytes {
        encode_value(&Committed {
            offset,
            metadata: String::new(),
            commit_timestamp_ms: 1,
        })
    }

    #[test]
    fn keys_are_readable_json() {
        assert_eq!(
            &offset_key("g", "t", 3)[..],
            br#"{"type":"offset","group":"g","topic":"t","partition":3}"#
        );
        assert_eq!(
            &Key::Group { group: "g".into() }.encode()[..],
            br#"{"type":"group","group":"g"}"#
        );
    }

    #[test]
    fn the_latest_record_of_a_key_wins_and_tombstones_delete() {
        let mut r = Replay::default();
        r.apply(Some(&offset_key("g", "t", 0)), &committed(5));
        r.apply(Some(&offset_key("g", "t", 0)), &committed(9));
        r.apply(Some(&offset_key("g", "t", 1)), &committed(2));
        r.apply(Some(&offset_key("g", "t", 1)), b"");
        r.apply(Some(&offset_key("h", "t", 0)), &committed(1));
        r.apply(Some(&Key::Group { group: "h".into() }.encode()), b"");
        r.apply(None, b"junk");
        r.apply(Some(b"{\"type\":\"other\"}"), b"x");
        r.apply(Some(&offset_key("g", "t", 2)), b"not json");
        assert_eq!(r.skipped, 3);
        let groups = r.finish();
        assert_eq!(groups.len(), 1, "h was deleted");
        let g = &groups["g"];
        assert_eq!(g.offsets.len(), 1);
        assert_eq!(g.offsets[&tp("t", 0)].offset, 9);
    }

    #[test]
    fn a_snapshot_round_trips_through_its_record() {
        let mut group = Group::new(GroupConfig::default());
        let topics: TopicMetadata = [(TopicName::new("t").unwrap(), 4)].into();
        group
            .heartbeat(
                Heartbeat {
                    member_id: MemberId::new("m1"),
                    member_epoch: 0,
                    instance_id: None,
                    subscribed_topics: Some([TopicName::new("t").unwrap()].into()),
                    owned: Some(Default::default()),
                },
                &topics,
                0,
            )
            .unwrap();
        let snapshot = group.snapshot();
        let mut r = Replay::default();
        r.apply(
            Some(&Key::Group { group: "g".into() }.encode()),
            &encode_value(&snapshot),
        );
        assert_eq!(r.skipped, 0);
        assert_eq!(r.finish()["g"].snapshot.as_ref(), Some(&snapshot));
    }
}
