//! Parsing of broker statuses into [`Error`] variants, and what errors say.
use super::*;

fn status(code: Code, reason: &str, meta: &[(&str, &str)]) -> Status {
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Status::with_error_details(
        code,
        "broker says no",
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, meta),
    )
}

#[test]
fn offset_out_of_range_carries_the_valid_range() {
    let s = status(
        Code::OutOfRange,
        "OFFSET_OUT_OF_RANGE",
        &[
            ("topic", "kv"),
            ("partition", "3"),
            ("offset", "999"),
            ("log_start_offset", "10"),
            ("high_watermark", "42"),
        ],
    );
    let e = Error::from_status(s);
    let text = e.to_string();
    match e {
        Error::OffsetOutOfRange {
            topic,
            partition,
            offset,
            start,
            end,
            status,
        } => {
            assert_eq!((topic.as_str(), partition, offset), ("kv", 3, 999));
            assert_eq!((start, end), (10, 42));
            assert_eq!(status.expect("kept").code(), Code::OutOfRange);
        }
        other => panic!("got {other:?}"),
    }
    assert_eq!(
        text,
        "offset 999 is out of range for kv-3, which holds offsets [10, 42): seek within them"
    );
}

#[test]
fn partition_errors_name_their_partition() {
    let meta: &[(&str, &str)] = &[("topic", "t"), ("partition", "4")];
    let not_leader = Error::from_status(status(Code::FailedPrecondition, "NOT_LEADER", meta));
    assert!(not_leader.to_string().contains("t-4"), "{not_leader}");
    let unknown = Error::from_status(status(Code::NotFound, "UNKNOWN_PARTITION", meta));
    assert!(matches!(
        unknown,
        Error::UnknownPartition { ref topic, partition: 4, .. } if topic == "t"
    ));
    // A broker that did not say: the client names what it asked for.
    let bare = Error::from_status(status(Code::OutOfRange, "OFFSET_OUT_OF_RANGE", &[]))
        .at_partition("u", 2);
    assert!(bare.to_string().contains("u-2"), "{bare}");
}

#[test]
fn messages_say_each_thing_once() {
    let s = Status::with_error_details(
        Code::NotFound,
        "unknown topic \"nope\"",
        ErrorDetails::with_error_info("UNKNOWN_TOPIC", ERROR_DOMAIN, HashMap::new()),
    );
    assert_eq!(Error::from_status(s).to_string(), "unknown topic \"nope\"");
}

#[test]
fn debug_shows_no_encoded_details() {
    let e = Error::from_status(status(
        Code::InvalidArgument,
        "RECORD_TOO_LARGE",
        &[("max_message_bytes", "1048576")],
    ));
    let debug = format!("{e:?}");
    assert!(debug.contains("RECORD_TOO_LARGE"), "{debug}");
    assert!(!debug.contains("details"), "{debug}");
    assert!(!debug.contains("b\""), "{debug}");
}

#[test]
fn not_leader_with_and_without_address() {
    let with = status(
        Code::FailedPrecondition,
        "NOT_LEADER",
        &[("leader_id", "3"), ("leader_addr", "10.0.0.3:9092")],
    );
    let e = Error::from_status(with);
    assert!(e.is_retriable());
    assert!(matches!(
        e,
        Error::NotLeader { leader: Some(LeaderHint { id: 3, addr: Some(ref a) }), .. }
            if a == "10.0.0.3:9092"
    ));
    let empty_addr = status(
        Code::FailedPrecondition,
        "NOT_LEADER",
        &[("leader_id", "2"), ("leader_addr", "")],
    );
    assert!(matches!(
        Error::from_status(empty_addr),
        Error::NotLeader {
            leader: Some(LeaderHint { id: 2, addr: None }),
            ..
        }
    ));
    let unknown = status(Code::FailedPrecondition, "NOT_LEADER", &[]);
    assert!(matches!(
        Error::from_status(unknown),
        Error::NotLeader { leader: None, .. }
    ));
}

#[test]
fn reasons_map_to_variants() {
    type Check = fn(&Error) -> bool;
    let cases: &[(Code, &str, Check)] = &[
        (Code::NotFound, "UNKNOWN_TOPIC", |e| {
            matches!(e, Error::UnknownTopic { .. })
        }),
        (Code::NotFound, "UNKNOWN_PARTITION", |e| {
            matches!(e, Error::UnknownPartition { .. })
        }),
        (Code::AlreadyExists, "TOPIC_ALREADY_EXISTS", |e| {
            matches!(e, Error::TopicAlreadyExists { .. })
        }),
        (
            Code::InvalidArgument,
            "CORRUPT_BATCH",
            |e| matches!(e, Error::InvalidArgument { reason, .. } if reason == "CORRUPT_BATCH"),
        ),
        (
            Code::InvalidArgument,
            "RECORD_TOO_LARGE",
            |e| matches!(e, Error::InvalidArgument { reason, .. } if reason == "RECORD_TOO_LARGE"),
        ),
        (Code::Unavailable, "NOT_ENOUGH_REPLICAS", |e| {
            matches!(e, Error::NotEnoughReplicas { .. }) && e.is_retriable()
        }),
        (Code::ResourceExhausted, "RESOURCE_EXHAUSTED", |e| {
            matches!(e, Error::ResourceExhausted { .. })
        }),
        (Code::Internal, "STORAGE_ERROR", |e| {
            matches!(e, Error::Storage { .. }) && !e.is_retriable()
        }),
        (
            Code::FailedPrecondition,
            "OUT_OF_ORDER_SEQUENCE_NUMBER",
            |e| e.is_sequence_refusal() && !e.is_retriable(),
        ),
        (Code::FailedPrecondition, "UNKNOWN_PRODUCER_ID", |e| {
            e.is_sequence_refusal() && !e.is_retriable()
        }),
        (Code::FailedPrecondition, "INVALID_PRODUCER_EPOCH", |e| {
            matches!(e, Error::ProducerFenced { .. }) && !e.is_retriable()
        }),
        (
            Code::PermissionDenied,
            "SOMETHING_NEW",
            |e| matches!(e, Error::Status { code: Code::PermissionDenied, reason, .. } if reason == "SOMETHING_NEW"),
        ),
    ];
    for (code, reason, check) in cases {
        let e = Error::from_status(status(*code, reason, &[]));
        assert!(check(&e), "{reason}: got {e:?}");
        assert!(
            std::error::Error::source(&e).is_some(),
            "{reason} keeps its status"
        );
    }
}

#[test]
fn group_reasons_map_to_variants() {
    type Check = fn(&Error) -> bool;
    type Meta = &'static [(&'static str, &'static str)];
    let cases: &[(Code, &str, Meta, Check)] = &[
        (
            Code::FailedPrecondition,
            "NOT_COORDINATOR",
            &[("coordinator_id", "2"), ("coordinator_address", "h:9")],
            |e| {
                e.is_retriable()
                    && matches!(e, Error::NotCoordinator {
                        coordinator: Some(CoordinatorHint { id: 2, addr: Some(a) }), ..
                    } if a == "h:9")
            },
        ),
        (
            Code::FailedPrecondition,
            "NOT_COORDINATOR",
            &[("coordinator_id", "2"), ("coordinator_address", "")],
            |e| {
                matches!(
                    e,
                    Error::NotCoordinator {
                        coordinator: Some(CoordinatorHint { id: 2, addr: None }),
                        ..
                    }
                )
            },
        ),
        (Code::FailedPrecondition, "NOT_COORDINATOR", &[], |e| {
            matches!(
                e,
                Error::NotCoordinator {
                    coordinator: None,
                    ..
                }
            )
        }),
        (Code::Unavailable, "COORDINATOR_NOT_AVAILABLE", &[], |e| {
            matches!(e, Error::CoordinatorNotAvailable { .. }) && e.is_retriable()
        }),
        (Code::NotFound, "GROUP_ID_NOT_FOUND", &[], |e| {
            matches!(e, Error::GroupNotFound { .. }) && !e.is_retriable()
        }),
        (
            Code::FailedPrecondition,
            "GROUP_NOT_EMPTY",
            &[("members", "3")],
            |e| matches!(e, Error::GroupNotEmpty { members: 3, .. }) && !e.is_retriable(),
        ),
        (Code::NotFound, "UNKNOWN_MEMBER_ID", &[], |e| {
            matches!(e, Error::UnknownMemberId { .. }) && e.is_member_lost()
        }),
        (
            Code::FailedPrecondition,
            "FENCED_MEMBER_EPOCH",
            &[("member_epoch", "4"), ("current_epoch", "6")],
            |e| {
                e.is_member_lost()
                    && matches!(
                        e,
                        Error::FencedMemberEpoch {
                            member_epoch: 4,
                            current_epoch: 6,
                            ..
                        }
                    )
            },
        ),
        (
            Code::FailedPrecondition,
            "STALE_MEMBER_EPOCH",
            &[("member_epoch", "4"), ("current_epoch", "5")],
            |e| {
                !e.is_member_lost()
                    && matches!(
                        e,
                        Error::StaleMemberEpoch {
                            member_epoch: 4,
                            current_epoch: 5,
                            ..
                        }
                    )
            },
        ),
        (
            Code::FailedPrecondition,
            "UNRELEASED_INSTANCE_ID",
            &[],
            |e| matches!(e, Error::UnreleasedInstanceId { .. }),
        ),
        (
            Code::FailedPrecondition,
            "PARTITION_NOT_ASSIGNED",
            &[("topic", "t"), ("partition", "3")],
            |e| matches!(e, Error::PartitionNotAssigned { topic, partition: 3, .. } if topic == "t"),
        ),
        (
            Code::FailedPrecondition,
            "OFFSET_BEHIND_COMMITTED",
            &[
                ("topic", "t"),
                ("partition", "1"),
                ("offset", "5"),
                ("committed_offset", "9"),
            ],
            |e| {
                matches!(
                    e,
                    Error::OffsetBehindCommitted {
                        partition: 1,
                        offset: 5,
                        committed: 9,
                        ..
                    }
                ) && !e.is_retriable()
            },
        ),
        (
            Code::InvalidArgument,
            "INVALID_GROUP_ID",
            &[("group_id", "a b")],
            |e| matches!(e, Error::InvalidArgument { reason, .. } if reason == "INVALID_GROUP_ID"),
        ),
    ];
    for (code, reason, meta, check) in cases {
        let e = Error::from_status(status(*code, reason, meta));
        assert!(check(&e), "{reason} {meta:?}: got {e:?}");
        assert!(e.status().is_some(), "{reason} keeps its status");
    }
}

#[test]
fn statuses_without_details_map_by_code() {
    let e = Error::from_status(Status::unavailable("connection refused"));
    assert!(matches!(e, Error::Transport { .. }) && e.is_retriable());
    let e = Error::from_status(Status::invalid_argument("bad"));
    assert!(matches!(e, Error::InvalidArgument { ref reason, .. } if reason.is_empty()));
    assert_eq!(e.to_string(), "bad");
    assert!(!e.is_retriable());
}

#[test]
fn stream_errors_parse_like_statuses() {
    let e = Error::from_stream_error(ErrorStatus {
        code: Code::OutOfRange as i32,
        message: "too far".into(),
        reason: "OFFSET_OUT_OF_RANGE".into(),
        metadata: [
            ("log_start_offset".to_owned(), "0".to_owned()),
            ("high_watermark".to_owned(), "7".to_owned()),
        ]
        .into(),
    });
    assert!(matches!(
        e,
        Error::OffsetOutOfRange {
            start: 0,
            end: 7,
            ..
        }
    ));
}
