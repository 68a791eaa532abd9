//! Topic names and topic configuration: the domain types every layer above the log shares.
//!
//! A [`TopicName`] is validated on construction, so a name that reaches the file system has
//! already been proven harmless (DESIGN.md §2). [`TopicConfig`] is what an operator sets per
//! topic; unset fields fall back to the broker's defaults when a partition's
//! [`LogConfig`] is derived from it.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::log::{FsyncPolicy, LogConfig};

/// Longest topic name, as in Kafka: leaves room for `-<partition>` within a 255-byte file name.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// A topic name proven to be `[A-Za-z0-9._-]{1,249}` and neither `.` nor `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName(String);

/// Why a topic name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTopicName {
    /// The name is empty.
    #[error("topic name must not be empty")]
    Empty,
    /// The name is longer than [`MAX_TOPIC_NAME_LEN`].
    #[error("topic name is {0} bytes long; the limit is {MAX_TOPIC_NAME_LEN}")]
    TooLong(usize),
    /// `.` and `..` name directories, not topics.
    #[error("topic name must not be '.' or '..'")]
    Dots,
    /// A character outside `[A-Za-z0-9._-]`.
    #[error("topic name contains {0:?}; only ASCII letters, digits, '.', '_' and '-' are allowed")]
    BadChar(char),
}

impl TopicName {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// [`InvalidTopicName`] saying what is wrong.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidTopicName> {
        let name = name.into();
        if name.is_empty() {
            return Err(InvalidTopicName::Empty);
        }
        if name.len() > MAX_TOPIC_NAME_LEN {
            return Err(InvalidTopicName::TooLong(name.len()));
        }
        if name == "." || name == ".." {
            return Err(InvalidTopicName::Dots);
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(InvalidTopicName::BadChar(c));
        }
        Ok(Self(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TopicName {
    type Error = InvalidTopicName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<TopicName> for String {
    fn from(t: TopicName) -> String {
        t.0
    }
}

/// Lets maps keyed by `TopicName` be searched with a request's `&str`, without allocating.
/// Sound because `TopicName` hashes and compares exactly as its `String` does.
impl std::borrow::Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a topic's partitions are flushed to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Before each produce is acknowledged, with group commit.
    Always,
    /// Every `fsync_interval_ms`.
    Interval,
    /// Left to the OS (Kafka's default); durability comes from replication.
    #[default]
    Never,
}

/// Per-topic settings. `None` means "the broker's default"; [`TopicConfig::resolve`] fills them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// Delete sealed segments older than this (ms); negative keeps them forever.
    pub retention_ms: Option<i64>,
    /// Delete the oldest sealed segments while a partition is larger than this; negative for no
    /// limit.
    pub retention_bytes: Option<i64>,
    /// Segment size at which a new segment starts.
    pub segment_bytes: Option<u64>,
    /// Segment age (ms) at which a new segment starts.
    pub segment_ms: Option<u64>,
    /// Flush policy.
    pub fsync: Option<Fsync>,
    /// Flush period for [`Fsync::Interval`].
    pub fsync_interval_ms: Option<u64>,
    /// Largest batch a producer may send, in bytes.
    pub max_message_bytes: Option<u32>,
    /// Smallest ISR that accepts an acks=all write.
    pub min_insync_replicas: Option<u32>,
    /// Whether a live replica outside the ISR may lead when no in-sync replica is alive
    /// (Kafka's `unclean.leader.election.enable`; loses acknowledged records). Default false.
    pub unclean_leader_election: Option<bool>,
}

/// Smallest allowed segment: a batch header and then some, so tests can roll often.
pub const MIN_SEGMENT_BYTES: u64 = 1024;

impl TopicConfig {
    /// Fills every unset field from `defaults`.
    pub fn resolve(&self, defaults: &TopicConfig) -> TopicConfig {
        TopicConfig {
            retention_ms: self.retention_ms.or(defaults.retention_ms),
            retention_bytes: self.retention_bytes.or(defaults.retention_bytes),
            segment_bytes: self.segment_bytes.or(defaults.segment_bytes),
            segment_ms: self.segment_ms.or(defaults.segment_ms),
            fsync: self.fsync.or(defaults.fsync),
            fsync_interval_ms: self.fsync_interval_ms.or(defaults.fsync_interval_ms),
            max_message_bytes: self.max_message_bytes.or(defaults.max_message_bytes),
            min_insync_replicas: self.min_insync_replicas.or(defaults.min_insync_replicas),
            unclean_leader_election: self
                .unclean_leader_election
                .or(defaults.unclean_leader_election),
        }
    }

    /// Refuses values no partition could run with.
    ///
    /// # Errors
    ///
    /// A sentence naming the field and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(s) = self.segment_bytes
            && !(MIN_SEGMENT_BYTES..=i32::MAX as u64).contains(&s)
        {
            return Err(format!(
                "segment_bytes must be between {MIN_SEGMENT_BYTES} and {}, got {s}",
                i32::MAX
            ));
        }
        if self.segment_ms == Some(0) {
            return Err("segment_ms must be positive".into());
        }
        if self.fsync_interval_ms == Some(0) {
            return Err("fsync_interval_ms must be positive".into());
        }
        if let Some(m) = self.max_message_bytes
            && (m as usize) < cairn_batch::HEADER_LEN + 8
        {
            return Err(format!(
                "max_message_bytes must be at least {}, got {m}",
                cairn_batch::HEADER_LEN + 8
            ));
        }
        if self.min_insync_replicas == Some(0) {
            return Err("min_insync_replicas must be at least 1".into());
        }
        Ok(())
    }

    /// The log configuration of one partition of a topic with this (resolved) config.
    pub fn log_config(&self) -> LogConfig {
        let base = LogConfig::default();
        let non_negative = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
        LogConfig {
            segment_bytes: self.segment_bytes.unwrap_or(base.segment_bytes),
            segment_ms: self.segment_ms.or(base.segment_ms),
            retention_ms: match self.retention_ms {
                Some(_) => non_negative(self.retention_ms),
                None => base.retention_ms,
            },
            retention_bytes: match self.retention_bytes {
                Some(_) => non_negative(self.retention_bytes),
                None => base.retention_bytes,
            },
            fsync: match self.fsync.unwrap_or_default() {
                Fsync::Always => FsyncPolicy::Always,
                Fsync::Never => FsyncPolicy::Never,
                Fsync::Interval => FsyncPolicy::Interval(Duration::from_millis(
                    self.fsync_interval_ms.unwrap_or(1000),
                )),
            },
            max_batch_bytes: self
                .max_message_bytes
                .map_or(base.max_batch_bytes, |m| m as usize),
            ..base
        }
    }
}

/// The broker-wide topic defaults: Kafka's, except where noted.
pub fn default_topic_config() -> TopicConfig {
    TopicConfig {
        retention_ms: Some(7 * 24 * 3600 * 1000),
        retention_bytes: Some(-1),
        segment_bytes: Some(1 << 30),
        segment_ms: Some(7 * 24 * 3600 * 1000),
        fsync: Some(Fsync::Never),
        fsync_interval_ms: Some(1000),
        max_message_bytes: Some((1 << 20) + cairn_batch::HEADER_LEN as u32),
        // Unset: each partition takes `default_min_insync` of its replication factor.
        min_insync_replicas: None,
        unclean_leader_election: Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kafka_style_names() {
        for ok in [
            "a",
            "orders",
            "Orders.v2",
            "a_b-c.d",
            "..x",
            "x..",
            &"n".repeat(249),
        ] {
            assert!(TopicName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_hostile_names() {
        let cases: &[(&str, InvalidTopicName)] = &[
            ("", InvalidTopicName::Empty),
            (".", InvalidTopicName::Dots),
            ("..", InvalidTopicName::Dots),
            ("../x", InvalidTopicName::BadChar('/')),
            ("a/b", InvalidTopicName::BadChar('/')),
            ("a\\b", InvalidTopicName::BadChar('\\')),
            ("a b", InvalidTopicName::BadChar(' ')),
            ("a\0b", InvalidTopicName::BadChar('\0')),
            ("é", InvalidTopicName::BadChar('é')),
        ];
        for (name, want) in cases {
            assert_eq!(TopicName::new(*name).unwrap_err(), *want, "{name:?}");
        }
        assert_eq!(
            TopicName::new("n".repeat(250)).unwrap_err(),
            InvalidTopicName::TooLong(250)
        );
    }

    #[test]
    fn deserialising_validates_too() {
        assert!(serde_json::from_str::<TopicName>("\"../etc\"").is_err());
        assert_eq!(
            serde_json::from_str::<TopicName>("\"ok\"")
                .unwrap()
                .as_str(),
            "ok"
        );
    }

    #[test]
    fn resolve_fills_only_unset_fields() {
        let set = TopicConfig {
            segment_bytes: Some(4096),
            ..Default::default()
        };
        let r = set.resolve(&default_topic_config());
        assert_eq!(r.segment_bytes, Some(4096));
        assert_eq!(r.retention_ms, default_topic_config().retention_ms);
    }

    #[test]
    fn log_config_maps_negative_retention_to_forever() {
        let c = TopicConfig {
            retention_ms: Some(-1),
            retention_bytes: Some(10_000),
            fsync: Some(Fsync::Interval),
            fsync_interval_ms: Some(50),
            ..Default::default()
        }
        .log_config();
        assert_eq!(c.retention_ms, None);
        assert_eq!(c.retention_bytes, Some(10_000));
        assert_eq!(c.fsync, FsyncPolicy::Interval(Duration::from_millis(50)));
    }

    #[test]
    fn validate_names_the_bad_field() {
        let bad = TopicConfig {
            segment_bytes: Some(10),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("segment_bytes"));
        assert!(default_topic_config().validate().is_ok());
    }
}
