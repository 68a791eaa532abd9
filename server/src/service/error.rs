//! The one place where domain errors become gRPC statuses.
//!
//! Every status carries exactly one `google.rpc.ErrorInfo` (AIP-193) in domain `cairn.v1` with
//! a stable UPPER_SNAKE_CASE reason, and every value named in the message also appears in the
//! info's metadata, so programs branch on the reason and people read the message.

use std::collections::HashMap;

use cairn_batch::BatchError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::coordinator::CoordinatorError;
use crate::group::GroupError;
use crate::log::LogError;
use crate::metadata::{ApplyError, ControllerError};
use crate::node::NodeError;
use crate::node::producers::SequenceError;

/// Domain of every Cairn `ErrorInfo`.
pub const DOMAIN: &str = "cairn.v1";

/// Stable reasons, as clients match them.
pub mod reason {
    /// The topic does not exist.
    pub const UNKNOWN_TOPIC: &str = "UNKNOWN_TOPIC";
    /// The partition does not exist.
    pub const UNKNOWN_PARTITION: &str = "UNKNOWN_PARTITION";
    /// The topic exists already.
    pub const TOPIC_ALREADY_EXISTS: &str = "TOPIC_ALREADY_EXISTS";
    /// The topic name is not allowed.
    pub const INVALID_TOPIC_NAME: &str = "INVALID_TOPIC_NAME";
    /// A request field is out of range or missing.
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    /// A batch is malformed (length, count, records).
    pub const INVALID_BATCH: &str = "INVALID_BATCH";
    /// A batch failed its CRC.
    pub const CORRUPT_BATCH: &str = "CORRUPT_BATCH";
    /// A batch is over the topic's `max_message_bytes`.
    pub const BATCH_TOO_LARGE: &str = "BATCH_TOO_LARGE";
    /// The offset lies outside the partition.
    pub const OFFSET_OUT_OF_RANGE: &str = "OFFSET_OUT_OF_RANGE";
    /// More replicas than brokers.
    pub const INVALID_REPLICATION_FACTOR: &str = "INVALID_REPLICATION_FACTOR";
    /// A request is larger than `limits.max_request_bytes`.
    pub const REQUEST_TOO_LARGE: &str = "REQUEST_TOO_LARGE";
    /// A limit was hit.
    pub const RESOURCE_EXHAUSTED: &str = "RESOURCE_EXHAUSTED";
    /// The broker's storage failed.
    pub const STORAGE_ERROR: &str = "STORAGE_ERROR";
    /// This broker does not lead the partition; the metadata names the leader.
    pub const NOT_LEADER: &str = "NOT_LEADER";
    /// This broker is not the controller; the metadata names the one it knows.
    pub const NOT_CONTROLLER: &str = "NOT_CONTROLLER";
    /// A broker heartbeat carried an epoch the controller no longer knows: register again.
    pub const STALE_BROKER_EPOCH: &str = "STALE_BROKER_EPOCH";
    /// The ISR is smaller than `min_insync_replicas`.
    pub const NOT_ENOUGH_REPLICAS: &str = "NOT_ENOUGH_REPLICAS";
    /// The ISR did not confirm an acks=all write in time.
    pub const REQUEST_TIMED_OUT: &str = "REQUEST_TIMED_OUT";
    /// The caller knows a newer leader epoch: the answering broker is a stale leader.
    pub const FENCED_LEADER_EPOCH: &str = "FENCED_LEADER_EPOCH";
    /// The caller's leader epoch is older than the leader's: refresh the metadata.
    pub const UNKNOWN_LEADER_EPOCH: &str = "UNKNOWN_LEADER_EPOCH";
    /// The calling broker holds no replica of the partition.
    pub const NOT_A_REPLICA: &str = "NOT_A_REPLICA";
    /// An idempotent producer's batch does not continue its sequence (a gap, or older than
    /// the batches the partition remembers); nothing was written.
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: &str = "OUT_OF_ORDER_SEQUENCE_NUMBER";
    /// An idempotent producer's epoch is older than the partition's: it was fenced.
    pub const INVALID_PRODUCER_EPOCH: &str = "INVALID_PRODUCER_EPOCH";
    /// The partition knows no state for the producer and the batch does not start at
    /// sequence 0: the producer must start over.
    pub const UNKNOWN_PRODUCER_ID: &str = "UNKNOWN_PRODUCER_ID";
    /// The cluster metadata refused a change that conflicts with its current state.
    pub const METADATA_CONFLICT: &str = "METADATA_CONFLICT";
    /// The cluster metadata cannot take writes right now (election, shutdown).
    pub const METADATA_UNAVAILABLE: &str = "METADATA_UNAVAILABLE";
    /// This broker does not coordinate the group (FAILED_PRECONDITION); metadata
    /// `coordinator_id` and `coordinator_address` name the one that does, when known.
    pub const NOT_COORDINATOR: &str = "NOT_COORDINATOR";
    /// The group's coordinator has no leader for its offsets partition, or is still loading
    /// it (UNAVAILABLE): retry shortly.
    pub const COORDINATOR_NOT_AVAILABLE: &str = "COORDINATOR_NOT_AVAILABLE";
    /// A group id that is empty, too long or has characters outside [A-Za-z0-9._-].
    pub const INVALID_GROUP_ID: &str = "INVALID_GROUP_ID";
    /// No group of that id (NOT_FOUND).
    pub const GROUP_ID_NOT_FOUND: &str = "GROUP_ID_NOT_FOUND";
    /// The group has members: offsets cannot be reset nor the group deleted
    /// (FAILED_PRECONDITION).
    pub const GROUP_NOT_EMPTY: &str = "GROUP_NOT_EMPTY";
    /// The group does not know the member (NOT_FOUND): drop every partition, rejoin with
    /// epoch 0.
    pub const UNKNOWN_MEMBER_ID: &str = "UNKNOWN_MEMBER_ID";
    /// The member's epoch is not the group's (FAILED_PRECONDITION): drop every partition,
    /// rejoin with epoch 0.
    pub const FENCED_MEMBER_EPOCH: &str = "FENCED_MEMBER_EPOCH";
    /// A commit carried an epoch older than the member's (FAILED_PRECONDITION): heartbeat, then
    /// commit what it still owns.
    pub const STALE_MEMBER_EPOCH: &str = "STALE_MEMBER_EPOCH";
    /// Another active member holds the instance id (FAILED_PRECONDITION).
    pub const UNRELEASED_INSTANCE_ID: &str = "UNRELEASED_INSTANCE_ID";
    /// A member committed a partition it does not hold (FAILED_PRECONDITION).
    pub const PARTITION_NOT_ASSIGNED: &str = "PARTITION_NOT_ASSIGNED";
    /// A commit below the committed offset (FAILED_PRECONDITION): offsets move backwards only
    /// through an admin reset.
    pub const OFFSET_BEHIND_COMMITTED: &str = "OFFSET_BEHIND_COMMITTED";
}

/// Builds a status with one `ErrorInfo`.
pub fn status(
    code: Code,
    reason: &str,
    message: impl Into<String>,
    meta: &[(&str, String)],
) -> Status {
    let metadata: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, DOMAIN, metadata),
    )
}

/// A missing or out-of-range request field.
pub fn invalid_argument(field: &str, message: impl Into<String>) -> Status {
    let message = message.into();
    let mut details = ErrorDetails::with_error_info(
        reason::INVALID_ARGUMENT,
        DOMAIN,
        HashMap::from([("field".to_owned(), field.to_owned())]),
    );
    details.add_bad_request_violation(field, message.clone());
    Status::with_error_details(Code::InvalidArgument, message, details)
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        let message = e.to_string();
        match e {
            NodeError::InvalidTopicName { name, .. } => status(
                Code::InvalidArgument,
                reason::INVALID_TOPIC_NAME,
                message,
                &[("topic", name)],
            ),
            NodeError::UnknownTopic(topic) => status(
                Code::NotFound,
                reason::UNKNOWN_TOPIC,
                format!("{message}; create it first or check the name"),
                &[("topic", topic)],
            ),
            NodeError::TopicExists(topic) => status(
                Code::AlreadyExists,
                reason::TOPIC_ALREADY_EXISTS,
                message,
                &[("topic", topic)],
            ),
            NodeError::UnknownPartition {
                topic,
                partition,
                count,
            } => status(
                Code::NotFound,
                reason::UNKNOWN_PARTITION,
                message,
                &[
                    ("topic", topic),
                    ("partition", partition.to_string()),
                    ("partition_count", count.to_string()),
                ],
            ),
            NodeError::InvalidArgument { field, reason } => {
                invalid_argument(field, format!("invalid {field}: {reason}"))
            }
            NodeError::InvalidReplicationFactor {
                requested,
                available,
            } => status(
                Code::InvalidArgument,
                reason::INVALID_REPLICATION_FACTOR,
                message,
                &[
                    ("replication_factor", requested.to_string()),
                    ("available_brokers", available.to_string()),
                ],
            ),
            NodeError::Log {
                topic,
                partition,
                source,
            } => log_status(&topic, partition, source),
            NodeError::NotLeader {
                topic,
                partition,
                leader,
                appended,
            } => {
                let mut meta = vec![("topic", topic), ("partition", partition.to_string())];
                if let Some((id, addr)) = leader {
                    meta.push(("leader_id", id.to_string()));
                    meta.push(("leader_addr", addr.unwrap_or_default()));
                }
                // "false": nothing was written, a retry cannot duplicate. "true": the batch was
                // appended at `offset` and its fate is unknown (KAFKA-13574's ambiguity).
                meta.push(("appended", appended.is_some().to_string()));
                if let Some(offset) = appended {
                    meta.push(("offset", offset.to_string()));
                }
                status(Code::FailedPrecondition, reason::NOT_LEADER, message, &meta)
            }
            NodeError::NotEnoughReplicas {
                topic,
                partition,
                isr,
                min,
            } => status(
                Code::Unavailable,
                reason::NOT_ENOUGH_REPLICAS,
                message,
                &[
                    ("topic", topic),
                    ("partition", partition.to_string()),
                    ("isr_size", isr.to_string()),
                    ("min_insync_replicas", min.to_string()),
                ],
            ),
            NodeError::ReplicationTimeout {
                topic,
                partition,
                offset,
                ..
            } => status(
                Code::DeadlineExceeded,
                reason::REQUEST_TIMED_OUT,
                message,
                &[
                    ("topic", topic),
                    ("partition", partition.to_string()),
                    ("offset", offset.to_string()),
                ],
            ),
            NodeError::FencedLeaderEpoch {
                topic,
                partition,
                given,
                current,
            }
            | NodeError::UnknownLeaderEpoch {
                topic,
                partition,
                given,
                current,
            } => {
                let reason = if given > current {
                    reason::FENCED_LEADER_EPOCH
                } else {
                    reason::UNKNOWN_LEADER_EPOCH
                };
                status(
                    Code::FailedPrecondition,
                    reason,
                    message,
                    &[
                        ("topic", topic),
                        ("partition", partition.to_string()),
                        ("leader_epoch", current.to_string()),
                    ],
                )
            }
            NodeError::NotAReplica {
                topic,
                partition,
                broker,
            } => status(
                Code::PermissionDenied,
                reason::NOT_A_REPLICA,
                message,
                &[
                    ("topic", topic),
                    ("partition", partition.to_string()),
                    ("broker_id", broker.to_string()),
                ],
            ),
            NodeError::Producer {
                topic,
                partition,
                source,
            } => producer_status(&topic, partition, source, message),
            NodeError::ResourceExhausted(_) => status(
                Code::ResourceExhausted,
                reason::RESOURCE_EXHAUSTED,
                message,
                &[],
            ),
            NodeError::CorruptMetadata { .. }
            | NodeError::Io { .. }
            | NodeError::DataDirLocked(_) => {
                tracing::error!(error = %message, "metadata storage error");
                status(Code::Internal, reason::STORAGE_ERROR, message, &[])
            }
        }
    }
}

/// An idempotent producer's batch refused by the partition's producer state: FAILED_PRECONDITION
/// (the request is well formed; the partition's state does not allow it).
fn producer_status(topic: &str, partition: u32, e: SequenceError, message: String) -> Status {
    let mut meta = vec![
        ("topic", topic.to_owned()),
        ("partition", partition.to_string()),
    ];
    let reason = match e {
        SequenceError::OutOfOrder {
            producer_id,
            epoch,
            expected,
            got,
        } => {
            meta.push(("producer_id", producer_id.to_string()));
            meta.push(("producer_epoch", epoch.to_string()));
            meta.push(("expected_sequence", expected.to_string()));
            meta.push(("sequence", got.to_string()));
            reason::OUT_OF_ORDER_SEQUENCE_NUMBER
        }
        SequenceError::InvalidEpoch {
            producer_id,
            epoch,
            current,
        } => {
            meta.push(("producer_id", producer_id.to_string()));
            meta.push(("producer_epoch", epoch.to_string()));
            meta.push(("current_epoch", current.to_string()));
            reason::INVALID_PRODUCER_EPOCH
        }
        SequenceError::UnknownProducer {
            producer_id,
            sequence,
        } => {
            meta.push(("producer_id", producer_id.to_string()));
            meta.push(("sequence", sequence.to_string()));
            reason::UNKNOWN_PRODUCER_ID
        }
    };
    status(Code::FailedPrecondition, reason, message, &meta)
}

fn log_status(topic: &str, partition: u32, e: LogError) -> Status {
    let at = |mut v: Vec<(&'static str, String)>| {
        v.push(("topic", topic.to_owned()));
        v.push(("partition", partition.to_string()));
        v
    };
    match e {
        LogError::OffsetOutOfRange { offset, start, end } => status(
            Code::OutOfRange,
            reason::OFFSET_OUT_OF_RANGE,
            format!(
                "offset {offset} is out of range for {topic}-{partition}: valid offsets are [{start}, {end}); seek to one of them"
            ),
            &at(vec![
                ("offset", offset.to_string()),
                ("log_start_offset", start.to_string()),
                ("high_watermark", end.to_string()),
            ]),
        ),
        LogError::BatchTooLarge { size, max }
        | LogError::InvalidBatch(BatchError::TooLarge { size, max }) => status(
            Code::InvalidArgument,
            reason::BATCH_TOO_LARGE,
            format!(
                "batch of {size} bytes exceeds the topic's max_message_bytes of {max}; send smaller batches"
            ),
            &at(vec![
                ("size", size.to_string()),
                ("max_message_bytes", max.to_string()),
            ]),
        ),
        LogError::InvalidBatch(b @ BatchError::CrcMismatch { .. }) => status(
            Code::InvalidArgument,
            reason::CORRUPT_BATCH,
            format!("rejected a corrupt batch for {topic}-{partition}: {b}; nothing was written"),
            &at(vec![]),
        ),
        LogError::InvalidBatch(b) => status(
            Code::InvalidArgument,
            reason::INVALID_BATCH,
            format!("rejected a malformed batch for {topic}-{partition}: {b}; nothing was written"),
            &at(vec![]),
        ),
        other => {
            tracing::error!(topic, partition, error = ?other, "storage error");
            status(
                Code::Internal,
                reason::STORAGE_ERROR,
                format!("storage error on {topic}-{partition}: {other}"),
                &at(vec![]),
            )
        }
    }
}

/// Maps a batch that failed validation at the edge (before reaching a log).
pub fn batch_status(topic: &str, partition: u32, e: BatchError) -> Status {
    log_status(topic, partition, LogError::InvalidBatch(e))
}

impl From<ControllerError> for Status {
    fn from(e: ControllerError) -> Status {
        let message = e.to_string();
        match e {
            ControllerError::NotController { this, controller } => {
                let mut meta = vec![("broker_id", this.to_string())];
                if let Some((id, addr)) = controller {
                    meta.push(("controller_id", id.to_string()));
                    meta.push(("controller_addr", addr));
                }
                status(Code::Unavailable, reason::NOT_CONTROLLER, message, &meta)
            }
            ControllerError::StaleBrokerEpoch { broker, given, .. } => status(
                Code::FailedPrecondition,
                reason::STALE_BROKER_EPOCH,
                message,
                &[
                    ("broker_id", broker.to_string()),
                    ("broker_epoch", given.to_string()),
                ],
            ),
            ControllerError::Refused(refusal) => apply_status(refusal, message),
            ControllerError::InvalidArgument { field, .. } => invalid_argument(field, message),
            ControllerError::InvalidReplicationFactor {
                requested,
                available,
            } => status(
                Code::InvalidArgument,
                reason::INVALID_REPLICATION_FACTOR,
                message,
                &[
                    ("replication_factor", requested.to_string()),
                    ("available_brokers", available.to_string()),
                ],
            ),
            ControllerError::Unavailable(_) => status(
                Code::Unavailable,
                reason::METADATA_UNAVAILABLE,
                format!("{message}; retry shortly"),
                &[],
            ),
        }
    }
}

/// A command the metadata refused, as the caller should see it.
fn apply_status(refusal: ApplyError, message: String) -> Status {
    match refusal {
        ApplyError::TopicExists(topic) => status(
            Code::AlreadyExists,
            reason::TOPIC_ALREADY_EXISTS,
            message,
            &[("topic", topic)],
        ),
        // Admin commands on a topic (delete, add partitions): advising to create it would
        // be wrong for a delete.
        ApplyError::UnknownTopic(topic) => status(
            Code::NotFound,
            reason::UNKNOWN_TOPIC,
            format!("{message}; check the name (topic list shows the topics)"),
            &[("topic", topic)],
        ),
        ApplyError::InvalidTopicName { name, .. } => status(
            Code::InvalidArgument,
            reason::INVALID_TOPIC_NAME,
            message,
            &[("topic", name)],
        ),
        ApplyError::UnknownPartition { topic, partition } => status(
            Code::NotFound,
            reason::UNKNOWN_PARTITION,
            message,
            &[("topic", topic), ("partition", partition.to_string())],
        ),
        ApplyError::InvalidConfig { .. } => invalid_argument("config", message),
        _ => status(
            Code::FailedPrecondition,
            reason::METADATA_CONFLICT,
            message,
            &[],
        ),
    }
}

impl From<CoordinatorError> for Status {
    fn from(e: CoordinatorError) -> Status {
        use tonic::Code::{FailedPrecondition, InvalidArgument, NotFound, Unavailable};
        let message = e.to_string();
        let g = |group: &String| ("group_id", group.clone());
        match e {
            CoordinatorError::InvalidGroupId { group, .. } => status(
                InvalidArgument,
                reason::INVALID_GROUP_ID,
                message,
                &[g(&group)],
            ),
            CoordinatorError::NotCoordinator { group, coordinator } => {
                let mut meta = vec![g(&group)];
                if let Some((id, addr)) = coordinator {
                    meta.push(("coordinator_id", id.to_string()));
                    if let Some(addr) = addr {
                        meta.push(("coordinator_address", addr));
                    }
                }
                status(FailedPrecondition, reason::NOT_COORDINATOR, message, &meta)
            }
            CoordinatorError::NotAvailable { group, .. } => status(
                Unavailable,
                reason::COORDINATOR_NOT_AVAILABLE,
                message,
                &[g(&group)],
            ),
            CoordinatorError::UnknownMember { group, member } => status(
                NotFound,
                reason::UNKNOWN_MEMBER_ID,
                message,
                &[g(&group), ("member_id", member)],
            ),
            CoordinatorError::StaleMemberEpoch {
                group,
                member,
                received,
                current,
            } => status(
                FailedPrecondition,
                reason::STALE_MEMBER_EPOCH,
                message,
                &[
                    g(&group),
                    ("member_id", member),
                    ("member_epoch", received.to_string()),
                    ("current_epoch", current.to_string()),
                ],
            ),
            CoordinatorError::FencedMemberEpoch {
                group,
                member,
                received,
                current,
            } => status(
                FailedPrecondition,
                reason::FENCED_MEMBER_EPOCH,
                message,
                &[
                    g(&group),
                    ("member_id", member),
                    ("member_epoch", received.to_string()),
                    ("current_epoch", current.to_string()),
                ],
            ),
            CoordinatorError::NotAssigned {
                group,
                member,
                partition,
            } => status(
                FailedPrecondition,
                reason::PARTITION_NOT_ASSIGNED,
                message,
                &[
                    g(&group),
                    ("member_id", member),
                    ("topic", partition.topic.to_string()),
                    ("partition", partition.partition.to_string()),
                ],
            ),
            CoordinatorError::OffsetBehind {
                group,
                partition,
                offset,
                committed,
            } => status(
                FailedPrecondition,
                reason::OFFSET_BEHIND_COMMITTED,
                message,
                &[
                    g(&group),
                    ("topic", partition.topic.to_string()),
                    ("partition", partition.partition.to_string()),
                    ("offset", offset.to_string()),
                    ("committed_offset", committed.to_string()),
                ],
            ),
            CoordinatorError::GroupNotEmpty { group, members } => status(
                FailedPrecondition,
                reason::GROUP_NOT_EMPTY,
                message,
                &[g(&group), ("members", members.to_string())],
            ),
            CoordinatorError::GroupNotFound(group) => {
                status(NotFound, reason::GROUP_ID_NOT_FOUND, message, &[g(&group)])
            }
            CoordinatorError::InvalidArgument { field, .. } => invalid_argument(field, message),
            CoordinatorError::Node(e) => e.into(),
        }
    }
}

/// A heartbeat's refusal as the member sees it (in the stream, as an `ErrorStatus`).
pub fn group_error_status(group: &str, e: &GroupError) -> Status {
    use tonic::Code::{FailedPrecondition, InvalidArgument, NotFound};
    let message = format!("group {group}: {e}");
    let g = ("group_id", group.to_owned());
    match e {
        GroupError::UnknownMemberId { member_id } => status(
            NotFound,
            reason::UNKNOWN_MEMBER_ID,
            message,
            &[g, ("member_id", member_id.to_string())],
        ),
        GroupError::FencedMemberEpoch {
            member_id,
            received,
            current,
        } => status(
            FailedPrecondition,
            reason::FENCED_MEMBER_EPOCH,
            message,
            &[
                g,
                ("member_id", member_id.to_string()),
                ("member_epoch", received.to_string()),
                ("current_epoch", current.to_string()),
            ],
        ),
        GroupError::UnreleasedInstanceId {
            instance_id,
            holder,
        } => status(
            FailedPrecondition,
            reason::UNRELEASED_INSTANCE_ID,
            message,
            &[
                g,
                ("instance_id", instance_id.to_string()),
                ("holder", holder.to_string()),
            ],
        ),
        GroupError::MissingSubscription { .. } => status(
            InvalidArgument,
            reason::INVALID_ARGUMENT,
            message,
            &[g, ("field", "subscription".to_owned())],
        ),
        GroupError::NotStatic { .. } => status(
            InvalidArgument,
            reason::INVALID_ARGUMENT,
            message,
            &[g, ("field", "instance_id".to_owned())],
        ),
        GroupError::InvalidEpoch(_) => status(
            InvalidArgument,
            reason::INVALID_ARGUMENT,
            message,
            &[g, ("field", "member_epoch".to_owned())],
        ),
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    /// A client must be able to tell a NOT_LEADER that wrote nothing from one whose batch was
    /// appended before the leader was replaced (its fate unknown).
    #[test]
    fn not_leader_says_whether_the_batch_was_appended() {
        let refusal = |appended| {
            Status::from(NodeError::NotLeader {
                topic: "t".into(),
                partition: 3,
                leader: Some((2, Some("b2:9092".into()))),
                appended,
            })
        };
        let nothing = refusal(None);
        assert_eq!(nothing.code(), Code::FailedPrecondition);
        let info = nothing.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, reason::NOT_LEADER);
        assert_eq!(info.metadata["appended"], "false");
        assert_eq!(info.metadata["leader_addr"], "b2:9092");
        assert!(!info.metadata.contains_key("offset"));

        let maybe = refusal(Some(41));
        let info = maybe.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, reason::NOT_LEADER);
        assert_eq!(info.metadata["appended"], "true");
        assert_eq!(info.metadata["offset"], "41");
        assert!(
            maybe.message().contains("may or may not survive"),
            "{}",
            maybe.message()
        );
    }
}
