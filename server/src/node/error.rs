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
    /// This broker does not lead the partition; send the request to `leader`.
    #[error("broker does not lead {topic}-{partition}; {}", match leader {
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
