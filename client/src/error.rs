//! The client's one error type, and the parsing of a broker's `tonic::Status` into it.
//!
//! The broker attaches a `google.rpc.ErrorInfo` (domain `cairn.v1`) with a stable `reason` to
//! every error it returns (DESIGN.md §7). This module turns that reason, and the values in its
//! metadata, into a variant the caller can act on; the original `tonic::Status` stays reachable
//! as the error's `source()`. It knows nothing of routing or retries: [`Error::is_retriable`] only
//! says which errors a retry can cure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::v1::ErrorStatus;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every error the broker returns.
pub const ERROR_DOMAIN: &str = "cairn.v1";

/// `Result` with the client's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the client. Each variant says what the caller can do; the
/// broker's `tonic::Status`, when there was one, is the error's `source()`.
///
/// `Error` is `Clone` because a batch that fails fails every record future in it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The topic does not exist (reason `UNKNOWN_TOPIC`). Create it, or check the name.
    #[error("{message}")]
    UnknownTopic {
        /// What the broker (or the metadata cache) said: a sentence naming the topic.
        message: String,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// The partition does not exist (reason `UNKNOWN_PARTITION`).
    #[error("{message}")]
    UnknownPartition {
        /// Topic asked for.
        topic: String,
        /// Partition asked for.
        partition: u32,
        /// What the broker (or the metadata cache) said: a sentence naming both.
        message: String,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// A topic of that name exists already (reason `TOPIC_ALREADY_EXISTS`).
    #[error("{message}")]
    TopicAlreadyExists {
        /// What the broker said.
        message: String,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// The offset asked for is outside `start..end` (reason `OFFSET_OUT_OF_RANGE`): seek into
    /// the range. `start` is the log start offset, `end` the high watermark.
    #[error(
        "offset {offset} is out of range for {topic}-{partition}, which holds offsets [{start}, {end}): seek within them"
    )]
    OffsetOutOfRange {
        /// Topic read.
        topic: String,
        /// Partition read.
        partition: u32,
        /// The offset asked for (-1 if the broker did not say).
        offset: i64,
        /// The partition's first stored offset.
        start: i64,
        /// The partition's high watermark (one past the last readable offset).
        end: i64,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// The broker asked is not the partition's leader (reason `NOT_LEADER`). The client retries
    /// these itself; you see one only once its retries are spent.
    #[error(
        "{topic}-{partition} has no reachable leader{}: retry once a leader is elected",
        leader_text(leader)
    )]
    NotLeader {
        /// Topic addressed.
        topic: String,
        /// Partition addressed.
        partition: u32,
        /// The leader, if the broker knew it.
        leader: Option<LeaderHint>,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// Too few in-sync replicas for an `acks = all` write (reason `NOT_ENOUGH_REPLICAS`).
    #[error("{message}")]
    NotEnoughReplicas {
        /// What the broker said.
        message: String,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// The request was malformed or too large (code `INVALID_ARGUMENT`): retrying will not help.
    /// `reason` is the broker's, e.g. `INVALID_TOPIC_NAME`, `BATCH_TOO_LARGE`, `CORRUPT_BATCH`.
    #[error("{message}{}", reason_suffix(reason))]
    InvalidArgument {
        /// The stable reason, e.g. `RECORD_TOO_LARGE`.
        reason: String,
        /// What the broker said.
        message: String,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// The broker is out of some resource (reason `RESOURCE_EXHAUSTED`); back off.
    #[error("the broker is overloaded: {message}")]
    ResourceExhausted {
        /// What the broker said.
        message: String,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// The broker could not read or write its log (reason `STORAGE_ERROR`).
    #[error("{message}")]
    Storage {
        /// What the broker said.
        message: String,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// No broker could be reached, or the connection failed mid-call (`UNAVAILABLE` without a
    /// Cairn reason, or a transport failure). The message names the broker's address and the
    /// operating system's reason (`connection refused`, a timeout) when there was one.
    #[error("{message}")]
    Transport {
        /// What failed, as a sentence.
        message: String,
        /// The status tonic reported.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// The broker did not answer within the configured request timeout.
    #[error("the broker did not answer within {0:?} (the client's request timeout)")]
    Timeout(Duration),
    /// A fetched batch failed its CRC or could not be decoded; it was not delivered.
    #[error("a batch read from {topic}-{partition} is corrupt and was not delivered: {source}")]
    CorruptBatch {
        /// Topic read.
        topic: String,
        /// Partition read.
        partition: u32,
        /// What was wrong with the bytes.
        #[source]
        source: cairn_batch::BatchError,
    },
    /// An idempotent producer's batch was refused unwritten because it does not continue the
    /// producer's sequence on that partition (reason `OUT_OF_ORDER_SEQUENCE_NUMBER`), or the
    /// partition does not know the producer (`UNKNOWN_PRODUCER_ID`: it expired with its
    /// batches, or the partition lost them). The producer handles these itself (see
    /// [`ProducerConfig::idempotence`](crate::ProducerConfig::idempotence)); a record fails
    /// with one only when its batch was refused for good.
    #[error("{message}{}", reason_suffix(reason))]
    OutOfOrderSequence {
        /// `OUT_OF_ORDER_SEQUENCE_NUMBER` or `UNKNOWN_PRODUCER_ID`.
        reason: String,
        /// What the broker (or the producer) said.
        message: String,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// The partition knows a newer epoch of this producer id (reason `INVALID_PRODUCER_EPOCH`):
    /// another producer instance fenced this one.
    #[error("this producer was fenced by a newer instance: {message}")]
    ProducerFenced {
        /// What the broker said.
        message: String,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// The broker asked does not coordinate the group (reason `NOT_COORDINATOR`). Group
    /// calls find the coordinator again and retry by themselves; you see one only once their
    /// retries are spent.
    #[error(
        "the broker asked does not coordinate the group{}: retry",
        coordinator_text(coordinator)
    )]
    NotCoordinator {
        /// The coordinator, if the broker knew it.
        coordinator: Option<CoordinatorHint>,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// The group's coordinator cannot serve yet (reason `COORDINATOR_NOT_AVAILABLE`): the
    /// offsets topic is being created, or a new coordinator is loading it. Retry shortly.
    #[error("{message}")]
    CoordinatorNotAvailable {
        /// What the broker said.
        message: String,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// No group of that id (reason `GROUP_ID_NOT_FOUND`).
    #[error("{message}")]
    GroupNotFound {
        /// What the broker said.
        message: String,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// The group has active members (reason `GROUP_NOT_EMPTY`): its offsets cannot be reset
    /// nor the group deleted until they leave (or their session times out).
    #[error("{message}")]
    GroupNotEmpty {
        /// How many members it has, as the coordinator said (0 if it did not say).
        members: u32,
        /// What the broker said.
        message: String,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// The group does not know this member (reason `UNKNOWN_MEMBER_ID`): it was removed
    /// (session or rebalance timeout). Its partitions are lost; it must rejoin. The
    /// [`GroupConsumer`](crate::GroupConsumer) does both by itself.
    #[error("{message}")]
    UnknownMemberId {
        /// What the broker said.
        message: String,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// The member's epoch is not the group's (reason `FENCED_MEMBER_EPOCH`): another
    /// incarnation took over, or the group moved on. Its partitions are lost; it must rejoin.
    #[error(
        "this member's epoch {member_epoch} was fenced (the group is at {current_epoch}): it rejoins"
    )]
    FencedMemberEpoch {
        /// The epoch the member sent.
        member_epoch: i32,
        /// The epoch the group holds for it.
        current_epoch: i32,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// A commit carried an epoch older than the member's (reason `STALE_MEMBER_EPOCH`): the
    /// member must learn its new epoch (heartbeat) and commit again what it still holds.
    #[error(
        "the commit carried the stale member epoch {member_epoch} (the member is at {current_epoch}): commit again"
    )]
    StaleMemberEpoch {
        /// The epoch the commit carried.
        member_epoch: i32,
        /// The member's current epoch.
        current_epoch: i32,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// Another active member holds this static instance id (reason `UNRELEASED_INSTANCE_ID`):
    /// two processes share one `instance_id`, or the previous one has not left or timed out.
    #[error("instance id held by another member: {message}")]
    UnreleasedInstanceId {
        /// What the broker said.
        message: String,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// A commit named a partition the member does not hold (reason `PARTITION_NOT_ASSIGNED`);
    /// nothing of that commit was written.
    #[error("{topic}-{partition} is not assigned to this member, so its offset was not committed")]
    PartitionNotAssigned {
        /// Topic committed.
        topic: String,
        /// Partition committed.
        partition: u32,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// A commit would move a committed offset backwards (reason `OFFSET_BEHIND_COMMITTED`);
    /// nothing of that commit was written. Only an admin reset of an empty group moves offsets
    /// back.
    #[error(
        "offset {offset} of {topic}-{partition} is behind the committed offset {committed}; nothing was committed"
    )]
    OffsetBehindCommitted {
        /// Topic committed.
        topic: String,
        /// Partition committed.
        partition: u32,
        /// The offset refused.
        offset: i64,
        /// The committed offset.
        committed: i64,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// The [`GroupConsumer`](crate::GroupConsumer) was closed, or its membership failed for
    /// good; it commits and delivers nothing more.
    #[error("the group consumer is closed: make a new one")]
    GroupConsumerClosed,
    /// Any other status from the broker.
    #[error("{message} (gRPC code {code:?}{}{reason})", if reason.is_empty() { "" } else { ", reason " })]
    Status {
        /// The gRPC code.
        code: Code,
        /// The `ErrorInfo` reason, empty when there was none.
        reason: String,
        /// What the broker said.
        message: String,
        /// The broker's status.
        #[source]
        status: Option<BrokerStatus>,
    },
    /// The client was configured with something unusable (no brokers, a bad address, ...).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// The producer was shut down before the record was acknowledged.
    #[error("the producer was closed before the record was acknowledged")]
    ProducerClosed,
    /// A record is larger than
    /// [`ProducerConfig::max_record_bytes`](crate::ProducerConfig::max_record_bytes) (Kafka's
    /// `max.request.size`); the producer refused it, and it was never sent.
    #[error(
        "a record of {size} bytes for {topic}-{partition} exceeds the producer's limit of {max} bytes (max_record_bytes); it was not sent"
    )]
    RecordTooLarge {
        /// Topic the record was for.
        topic: String,
        /// Partition it was for.
        partition: u32,
        /// The record's encoded size in a batch of its own.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not a failure: the consumer has read everything `topic`/`partition` held (its position
    /// reached the high watermark). Yielded once each time a partition reaches its end, only
    /// with [`ConsumerConfig::partition_eof`](crate::ConsumerConfig::partition_eof) (rdkafka's
    /// `enable.partition.eof`); reading goes on.
    #[error("reached the end of {topic}-{partition} at offset {offset}")]
    PartitionEof {
        /// Topic read.
        topic: String,
        /// Partition read.
        partition: u32,
        /// The high watermark: the offset the next record will get.
        offset: i64,
    },
    /// A partition has no position to start from (never sought, no committed offset) and the
    /// offset reset policy is [`OffsetReset::Error`](crate::OffsetReset::Error): seek it.
    #[error(
        "{topic}-{partition} has no position (nothing sought, nothing committed) and offset_reset is Error: seek it first"
    )]
    NoOffset {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
}

/// The broker's `tonic::Status`, kept as an error's `source()`. Its `Debug` shows the code, the
/// message and the `ErrorInfo` reason, not the encoded details bytes; [`Deref`](std::ops::Deref)
/// reaches the whole [`GrpcStatus`](crate::GrpcStatus).
#[derive(Clone)]
pub struct BrokerStatus(Arc<Status>);

impl BrokerStatus {
    /// Wraps a status.
    pub fn new(status: Status) -> Self {
        Self(Arc::new(status))
    }
}

impl std::ops::Deref for BrokerStatus {
    type Target = Status;
    fn deref(&self) -> &Status {
        &self.0
    }
}

impl std::fmt::Debug for BrokerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = self.0.get_details_error_info().map(|i| i.reason);
        f.debug_struct("BrokerStatus")
            .field("code", &self.0.code())
            .field("message", &self.0.message())
            .field("reason", &reason)
            .finish()
    }
}

impl std::fmt::Display for BrokerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.0.code(), self.0.message())
    }
}

impl std::error::Error for BrokerStatus {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

/// ` (REASON)` after a message, or nothing without a reason.
fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

fn leader_text(leader: &Option<LeaderHint>) -> String {
    match leader {
        Some(LeaderHint { id, addr: Some(a) }) => {
            format!(" here (the leader is broker {id} at {a})")
        }
        Some(LeaderHint { id, addr: None }) => format!(" here (the leader is broker {id})"),
        None => String::new(),
    }
}

fn coordinator_text(c: &Option<CoordinatorHint>) -> String {
    match c {
        Some(CoordinatorHint { id, addr: Some(a) }) => format!(" (broker {id} at {a} does)"),
        Some(CoordinatorHint { id, addr: None }) => format!(" (broker {id} does)"),
        None => String::new(),
    }
}

/// Where a `NOT_LEADER` error said the leader is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's broker id.
    pub id: u32,
    /// The leader's `host:port`, when the broker knew it.
    pub addr: Option<String>,
}

/// Where a `NOT_COORDINATOR` error said the group's coordinator is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorHint {
    /// The coordinator's broker id.
    pub id: u32,
    /// Its `host:port`, when the broker knew it.
    pub addr: Option<String>,
}

impl Error {
    /// Parses a broker's status: its `ErrorInfo` reason picks the variant, its metadata fills
    /// the fields. A status without `ErrorInfo` maps by code alone.
    pub fn from_status(status: Status) -> Self {
        let (reason, metadata) = match status.get_details_error_info() {
            Some(info) => (info.reason, info.metadata),
            None => (String::new(), HashMap::new()),
        };
        let message = status.message().to_owned();
        let code = status.code();
        let detail = root_cause(&status);
        let status = Some(BrokerStatus::new(status));
        let int = |key: &str| metadata.get(key).and_then(|v| v.parse::<i64>().ok());
        let epoch = |key: &str| int(key).and_then(|e| i32::try_from(e).ok()).unwrap_or(-1);
        let text = |key: &str| metadata.get(key).cloned().unwrap_or_default();
        let partition = || {
            int("partition")
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(0)
        };
        match reason.as_str() {
            "UNKNOWN_TOPIC" => Self::UnknownTopic { message, status },
            "UNKNOWN_PARTITION" => Self::UnknownPartition {
                topic: text("topic"),
                partition: partition(),
                message,
                status,
            },
            "TOPIC_ALREADY_EXISTS" => Self::TopicAlreadyExists { message, status },
            "OFFSET_OUT_OF_RANGE" => Self::OffsetOutOfRange {
                topic: text("topic"),
                partition: partition(),
                offset: int("offset").unwrap_or(-1),
                start: int("log_start_offset").unwrap_or(-1),
                end: int("high_watermark").unwrap_or(-1),
                status,
            },
            "NOT_LEADER" => Self::NotLeader {
                topic: text("topic"),
                partition: partition(),
                leader: int("leader_id")
                    .and_then(|id| u32::try_from(id).ok())
                    .map(|id| LeaderHint {
                        id,
                        addr: metadata
                            .get("leader_addr")
                            .filter(|a| !a.is_empty())
                            .cloned(),
                    }),
                status,
            },
            "NOT_ENOUGH_REPLICAS" => Self::NotEnoughReplicas { message, status },
            "RESOURCE_EXHAUSTED" => Self::ResourceExhausted { message, status },
            "STORAGE_ERROR" => Self::Storage { message, status },
            "OUT_OF_ORDER_SEQUENCE_NUMBER" | "UNKNOWN_PRODUCER_ID" => Self::OutOfOrderSequence {
                reason,
                message,
                status,
            },
            "INVALID_PRODUCER_EPOCH" => Self::ProducerFenced { message, status },
            "NOT_COORDINATOR" => Self::NotCoordinator {
                coordinator: int("coordinator_id")
                    .and_then(|id| u32::try_from(id).ok())
                    .map(|id| CoordinatorHint {
                        id,
                        addr: metadata
                            .get("coordinator_address")
                            .filter(|a| !a.is_empty())
                            .cloned(),
                    }),
                status,
            },
            "COORDINATOR_NOT_AVAILABLE" => Self::CoordinatorNotAvailable { message, status },
            "GROUP_ID_NOT_FOUND" => Self::GroupNotFound { message, status },
            "GROUP_NOT_EMPTY" => Self::GroupNotEmpty {
                members: int("members")
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
                message,
                status,
            },
            "UNKNOWN_MEMBER_ID" => Self::UnknownMemberId { message, status },
            "FENCED_MEMBER_EPOCH" => Self::FencedMemberEpoch {
                member_epoch: epoch("member_epoch"),
                current_epoch: epoch("current_epoch"),
                status,
            },
            "STALE_MEMBER_EPOCH" => Self::StaleMemberEpoch {
                member_epoch: epoch("member_epoch"),
                current_epoch: epoch("current_epoch"),
                status,
            },
            "UNRELEASED_INSTANCE_ID" => Self::UnreleasedInstanceId { message, status },
            "PARTITION_NOT_ASSIGNED" => Self::PartitionNotAssigned {
                topic: text("topic"),
                partition: partition(),
                status,
            },
            "OFFSET_BEHIND_COMMITTED" => Self::OffsetBehindCommitted {
                topic: text("topic"),
                partition: partition(),
                offset: int("offset").unwrap_or(-1),
                committed: int("committed_offset").unwrap_or(-1),
                status,
            },
            _ if code == Code::InvalidArgument => Self::InvalidArgument {
                reason,
                message,
                status,
            },
            "" if code == Code::Unavailable || code == Code::DeadlineExceeded => Self::Transport {
                message: transport_message(&message, detail.as_deref()),
                status,
            },
            _ => Self::Status {
                code,
                reason,
                message,
                status,
            },
        }
    }

    /// Parses the error of one request inside a `ProduceStream`, which the broker sends as an
    /// [`ErrorStatus`] message rather than a `tonic::Status`.
    pub fn from_stream_error(e: ErrorStatus) -> Self {
        Self::from_status(status_of(e))
    }

    /// Whether retrying the same request (after a metadata refresh and a backoff) may succeed:
    /// leadership moved, a broker was unreachable, the ISR was briefly too small, or the broker
    /// was overloaded.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::NotLeader { .. }
            | Self::NotEnoughReplicas { .. }
            | Self::ResourceExhausted { .. }
            | Self::Transport { .. }
            | Self::NotCoordinator { .. }
            | Self::CoordinatorNotAvailable { .. }
            | Self::Timeout(_) => true,
            // DEADLINE_EXCEEDED with a reason is the broker's REQUEST_TIMED_OUT: the ISR did not
            // confirm in time, which a retry (to a possibly new leader) may get past.
            Self::Status { code, .. } => matches!(
                code,
                Code::Unavailable | Code::Aborted | Code::Unknown | Code::DeadlineExceeded
            ),
            _ => false,
        }
    }

    /// Whether the broker refused an idempotent batch without writing it because of its
    /// sequence (`OUT_OF_ORDER_SEQUENCE_NUMBER`, `UNKNOWN_PRODUCER_ID`).
    pub(crate) fn is_sequence_refusal(&self) -> bool {
        matches!(self, Self::OutOfOrderSequence { .. })
    }

    /// Whether the error says the topic or partition is missing, which may only mean that
    /// metadata has not reached every broker yet.
    pub fn is_unknown_topic_or_partition(&self) -> bool {
        matches!(
            self,
            Self::UnknownTopic { .. } | Self::UnknownPartition { .. }
        )
    }

    /// Whether the group no longer counts this member as it was (`UNKNOWN_MEMBER_ID`,
    /// `FENCED_MEMBER_EPOCH`): every partition it held is lost and it must rejoin with epoch 0.
    pub fn is_member_lost(&self) -> bool {
        matches!(
            self,
            Self::UnknownMemberId { .. } | Self::FencedMemberEpoch { .. }
        )
    }

    /// The broker's `tonic::Status`, when the error came from one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Self::UnknownTopic { status, .. }
            | Self::UnknownPartition { status, .. }
            | Self::TopicAlreadyExists { status, .. }
            | Self::OffsetOutOfRange { status, .. }
            | Self::NotLeader { status, .. }
            | Self::NotEnoughReplicas { status, .. }
            | Self::InvalidArgument { status, .. }
            | Self::ResourceExhausted { status, .. }
            | Self::Storage { status, .. }
            | Self::Transport { status, .. }
            | Self::OutOfOrderSequence { status, .. }
            | Self::ProducerFenced { status, .. }
            | Self::NotCoordinator { status, .. }
            | Self::CoordinatorNotAvailable { status, .. }
            | Self::GroupNotFound { status, .. }
            | Self::GroupNotEmpty { status, .. }
            | Self::UnknownMemberId { status, .. }
            | Self::FencedMemberEpoch { status, .. }
            | Self::StaleMemberEpoch { status, .. }
            | Self::UnreleasedInstanceId { status, .. }
            | Self::PartitionNotAssigned { status, .. }
            | Self::OffsetBehindCommitted { status, .. }
            | Self::Status { status, .. } => status.as_deref(),
            _ => None,
        }
    }

    /// An `UnknownTopic` raised by the client itself (the topic is not in the metadata).
    pub(crate) fn unknown_topic(topic: &str) -> Self {
        Self::UnknownTopic {
            message: format!("topic {topic:?} does not exist: create it, or check the name"),
            status: None,
        }
    }

    /// An `UnknownPartition` raised by the client itself.
    pub(crate) fn unknown_partition(topic: &str, partition: u32, count: usize) -> Self {
        Self::UnknownPartition {
            topic: topic.to_owned(),
            partition,
            message: format!("topic {topic:?} has {count} partitions, not partition {partition}"),
            status: None,
        }
    }

    /// Names `topic`/`partition` in a partition error whose broker did not say (an older or
    /// foreign broker, or an error the client made up before asking one).
    pub(crate) fn at_partition(mut self, at_topic: &str, at_partition: u32) -> Self {
        match &mut self {
            Self::UnknownPartition {
                topic, partition, ..
            }
            | Self::OffsetOutOfRange {
                topic, partition, ..
            }
            | Self::NotLeader {
                topic, partition, ..
            } if topic.is_empty() => {
                at_topic.clone_into(topic);
                *partition = at_partition;
            }
            _ => {}
        }
        self
    }

    /// Names the broker `addr` (normalised) in a connection failure.
    pub(crate) fn at_address(self, addr: &str) -> Self {
        match self {
            Self::Transport { message, status } if !message.starts_with("cannot reach") => {
                let addr = addr.strip_prefix("http://").unwrap_or(addr);
                Self::Transport {
                    message: format!("cannot reach broker {addr}: {message}"),
                    status,
                }
            }
            other => other,
        }
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Self::from_status(status)
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(e: tonic::transport::Error) -> Self {
        let mut detail: &dyn std::error::Error = &e;
        while let Some(next) = detail.source() {
            detail = next;
        }
        Self::Transport {
            message: transport_message(&e.to_string(), Some(&detail.to_string())),
            status: None,
        }
    }
}

/// The deepest cause under a status: for a failed connection, the operating system's reason
/// (`Connection refused (os error 111)`), which tonic's own message leaves out.
fn root_cause(status: &Status) -> Option<String> {
    let mut cause = std::error::Error::source(status)?;
    while let Some(next) = cause.source() {
        cause = next;
    }
    Some(cause.to_string())
}

/// A transport failure's message with its root cause, each said once.
fn transport_message(message: &str, detail: Option<&str>) -> String {
    match detail {
        Some(d) if !message.contains(d) => {
            if message.is_empty() {
                d.to_owned()
            } else {
                format!("{message}: {d}")
            }
        }
        _ => message.to_owned(),
    }
}

/// Rebuilds the `tonic::Status` a unary call would have returned from a stream's [`ErrorStatus`].
fn status_of(e: ErrorStatus) -> Status {
    let code = Code::from(e.code);
    if e.reason.is_empty() {
        return Status::new(code, e.message);
    }
    let details = ErrorDetails::with_error_info(e.reason, ERROR_DOMAIN, e.metadata);
    Status::with_error_details(code, e.message, details)
}

#[cfg(test)]
mod tests;
