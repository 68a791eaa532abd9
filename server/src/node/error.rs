//! The node's one error type. Each variant says what the caller can do; `service/error.rs` maps
//! them to gRPC statuses. Nothing here knows tonic.

use std::path::{Path, PathBuf};

use crate::log::LogError;
use crate::topic::InvalidTopicName;

/// Everything a node operation can refuse or fail with. Each variant says what the caller can do.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The topic name is not allowed; nothing was touched.
    #[error("invalid topic name {name:?}: {source}")]
    InvalidTopicName {
        name: String,
        #[source]
        source: InvalidTopicName,
    },
    /// No such topic. Create it first.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// A topic with this name exists.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// The topic exists but not this partition.
    #[error("topic {topic:?} has {count} partitions; partition {partition} does not exist")]
    UnknownPartition {
        topic: String,
        partition: u32,
        count: u32,
    },
    /// This broker does not lead the partition; send the request to `leader`. With
    /// `appended`, it did lead when the batch arrived and appended it at that offset, then was
    /// replaced before the in-sync replicas confirmed it: the outcome is unknown (the batch may
    /// survive on the new leader or be truncated). Without, nothing was written.
    #[error("broker does not lead {topic}-{partition}{}; {}", match appended {
        Some(offset) => format!(
            " any more: it appended the batch (up to offset {offset}) but was replaced before the \
             in-sync replicas confirmed it, so it may or may not survive (retrying with the \
             idempotent producer is safe)"
        ),
        None => String::new(),
    }, match leader {
        Some((id, Some(addr))) => format!("broker {id} at {addr} does"),
        Some((id, None)) => format!("broker {id} does"),
        None => "it has no leader right now (no live in-sync replica, or this broker is still \
                 opening it); retry shortly".to_owned(),
    })]
    NotLeader {
        topic: String,
        partition: u32,
        /// The leader's id and address, if there is one.
        leader: Option<(u32, Option<String>)>,
        /// The offset this broker appended the batch at before it was replaced, if it did.
        appended: Option<i64>,
    },
    /// The ISR is smaller than the topic's `min_insync_replicas`: an acks=all produce is
    /// refused before anything is written. Retry once replicas catch up, or use acks=1.
    #[error(
        "{topic}-{partition} has {isr} in-sync replica(s), fewer than min_insync_replicas {min}; \
         nothing was written"
    )]
    NotEnoughReplicas {
        topic: String,
        partition: u32,
        isr: usize,
        min: usize,
    },
    /// An acks=all batch was written here but the ISR did not confirm it in time; it may or
    /// may not survive. Retry (the idempotent producer makes that safe).
    #[error(
        "{topic}-{partition}: the in-sync replicas did not confirm offset {offset} within \
         {timeout_ms} ms"
    )]
    ReplicationTimeout {
        topic: String,
        partition: u32,
        offset: i64,
        timeout_ms: u64,
    },
    /// The caller knows a newer leader epoch than this broker: this broker is a stale leader.
    #[error(
        "{topic}-{partition}: request at leader epoch {given}, but this broker is at {current} (stale leader)"
    )]
    FencedLeaderEpoch {
        topic: String,
        partition: u32,
        given: i32,
        current: i32,
    },
    /// The caller is behind this broker's leader epoch: it should refresh its metadata.
    #[error(
        "{topic}-{partition}: request at leader epoch {given}, but the current epoch is {current}"
    )]
    UnknownLeaderEpoch {
        topic: String,
        partition: u32,
        given: i32,
        current: i32,
    },
    /// A broker that holds no replica of the partition asked to replicate it.
    #[error("broker {broker} is not a replica of {topic}-{partition}")]
    NotAReplica {
        topic: String,
        partition: u32,
        broker: u32,
    },
    /// The idempotent-producer state refused a batch (sequence gap, fenced epoch, unknown
    /// producer); nothing was written.
    #[error("partition {topic}-{partition}: {source}")]
    Producer {
        topic: String,
        partition: u32,
        #[source]
        source: super::producers::SequenceError,
    },
    /// A request field is out of range.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    /// More replicas than brokers.
    #[error("replication factor {requested} is larger than the {available} available broker(s)")]
    InvalidReplicationFactor { requested: u32, available: u32 },
    /// The partition's log refused or failed.
    #[error("partition {topic}-{partition}: {source}")]
    Log {
        topic: String,
        partition: u32,
        #[source]
        source: LogError,
    },
    /// The metadata file cannot be trusted; the broker will not guess.
    #[error("corrupt metadata in {path}: {reason}")]
    CorruptMetadata { path: PathBuf, reason: String },
    /// A file-system call on metadata or directories failed.
    #[error("{context} {path}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A limit was reached; retry later or ask for less.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Another process (probably another broker) holds the data directory.
    #[error(
        "data directory {0} is in use by another process; stop it or choose another --data-dir"
    )]
    DataDirLocked(PathBuf),
}

impl NodeError {
    pub(super) fn io(
        context: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> NodeError {
        let path = path.to_owned();
        move |source| NodeError::Io {
            context,
            path,
            source,
        }
    }
}
