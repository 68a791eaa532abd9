//! Every bad input gets its documented gRPC code and `ErrorInfo` reason, and leaves the log as it
//! was. Uses the generated tonic clients directly so it can send bytes the client crate never
//! would (bad CRCs, torn batches).

use bytes::Bytes;
use cairn_batch::Record;
use cairn_proto::v1::{self as pb, admin_client::AdminClient, broker_client::BrokerClient};
use cairn_tests::TestBroker;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

struct Clients {
    broker: BrokerClient<Channel>,
    admin: AdminClient<Channel>,
}

async fn clients(b: &TestBroker) -> Clients {
    let channel = Channel::from_shared(b.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    Clients {
        broker: BrokerClient::new(channel.clone()).max_decoding_message_size(usize::MAX),
        admin: AdminClient::new(channel),
    }
}

fn batch(values: &[&str]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .map(|v| Record {
            timestamp: 1_700_000_000_000,
            key: None,
            value: Bytes::copy_from_slice(v.as_bytes()),
            headers: vec![],
        })
        .collect();
    cairn_batch::encode(&records)
}

fn produce(topic: &str, partition: u32, batches: Bytes) -> pb::ProduceRequest {
    pb::ProduceRequest {
        topic: topic.into(),
        partition,
        batches,
        ..Default::default()
    }
}

/// Asserts the status code and ErrorInfo reason, returning the info's metadata.
fn expect(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    code: Code,
    reason: &str,
) -> std::collections::HashMap<String, String> {
    let status = result.expect_err("the request should have been refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(!status.message().is_empty());
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "{status:?}");
    assert_eq!(info.domain, "cairn.v1");
    info.metadata
}

async fn values(c: &mut Clients, topic: &str) -> Vec<String> {
    let r = c
        .broker
        .fetch(pb::FetchRequest {
            topic: topic.into(),
            offset: 0,
            format: pb::RecordFormat::Text as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    r.records
        .into_iter()
        .map(|r| r.value_text.unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn bad_inputs_are_refused_and_change_nothing() {
    let broker = TestBroker::start().unwrap();
    let mut c = clients(&broker).await;
    c.admin
        .create_topic(pb::CreateTopicRequest {
            name: "t".into(),
            partitions: 1,
            config: Some(pb::TopicConfig {
                max_message_bytes: Some(4096),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    c.broker
        .produce(produce("t", 0, batch(&["a", "b"])))
        .await
        .unwrap();
    let before = values(&mut c, "t").await;
    assert_eq!(before, ["a", "b"]);

    // Unknown topic, unknown partition.
    expect(
        c.broker.produce(produce("nope", 0, batch(&["x"]))).await,
        Code::NotFound,
        "UNKNOWN_TOPIC",
    );
    let meta = expect(
        c.broker.produce(produce("t", 7, batch(&["x"]))).await,
        Code::NotFound,
        "UNKNOWN_PARTITION",
    );
    assert_eq!(meta["partition_count"], "1");

    // Hostile topic names never reach the file system.
    for name in ["../x", "a/b", "..", ".", "", "x\0y", &"n".repeat(250)] {
        expect(
            c.admin
                .create_topic(pb::CreateTopicRequest {
                    name: name.into(),
                    partitions: 1,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "INVALID_TOPIC_NAME",
        );
        expect(
            c.broker.produce(produce(name, 0, batch(&["x"]))).await,
            Code::InvalidArgument,
            "INVALID_TOPIC_NAME",
        );
    }
    let parent = broker.data_dir().parent().unwrap();
    assert!(
        !parent.join("x-0").exists(),
        "a hostile name escaped the data dir"
    );

    // Zero partitions; an existing name.
    expect(
        c.admin
            .create_topic(pb::CreateTopicRequest {
                name: "zero".into(),
                partitions: 0,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    expect(
        c.admin
            .create_topic(pb::CreateTopicRequest {
                name: "t".into(),
                partitions: 1,
                ..Default::default()
            })
            .await,
        Code::AlreadyExists,
        "TOPIC_ALREADY_EXISTS",
    );

    // Oversized batch (topic limit 4096 bytes).
    let big = "x".repeat(5000);
    let meta = expect(
        c.broker.produce(produce("t", 0, batch(&[&big]))).await,
        Code::InvalidArgument,
        "BATCH_TOO_LARGE",
    );
    assert_eq!(meta["max_message_bytes"], "4096");

    // A bad CRC: flip one byte of the value.
    let mut corrupt = batch(&["c"]).to_vec();
    *corrupt.last_mut().unwrap() ^= 0x40;
    expect(
        c.broker
            .produce(produce("t", 0, Bytes::from(corrupt.clone())))
            .await,
        Code::InvalidArgument,
        "CORRUPT_BATCH",
    );

    // A good batch followed by a bad one: neither is written.
    let mut two = batch(&["good"]).to_vec();
    two.extend_from_slice(&corrupt);
    expect(
        c.broker.produce(produce("t", 0, Bytes::from(two))).await,
        Code::InvalidArgument,
        "CORRUPT_BATCH",
    );

    // Torn and garbage batches.
    let whole = batch(&["torn"]);
    expect(
        c.broker
            .produce(produce("t", 0, whole.slice(..whole.len() - 3)))
            .await,
        Code::InvalidArgument,
        "INVALID_BATCH",
    );
    expect(
        c.broker
            .produce(produce("t", 0, Bytes::from_static(&[0xff; 80])))
            .await,
        Code::InvalidArgument,
        "INVALID_BATCH",
    );

    // Both payload shapes, or neither.
    let mut both = produce("t", 0, batch(&["x"]));
    both.records.push(pb::ProduceRecord::default());
    expect(
        c.broker.produce(both).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    expect(
        c.broker.produce(produce("t", 0, Bytes::new())).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );

    // Offsets out of range, above and below.
    for offset in [3, 1000, -1] {
        let meta = expect(
            c.broker
                .fetch(pb::FetchRequest {
                    topic: "t".into(),
                    offset,
                    ..Default::default()
                })
                .await,
            Code::OutOfRange,
            "OFFSET_OUT_OF_RANGE",
        );
        assert_eq!(meta["log_start_offset"], "0");
        assert_eq!(meta["high_watermark"], "2");
    }

    // Nothing changed.
    assert_eq!(values(&mut c, "t").await, before);
    let described = c
        .admin
        .describe_topic(pb::DescribeTopicRequest { name: "t".into() })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    assert_eq!(described.partitions[0].high_watermark, 2);
    let topics = c
        .admin
        .list_topics(pb::ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(topics.topics.len(), 1, "{topics:?}");
}

#[tokio::test]
async fn limits_refuse_oversized_requests_and_too_many_streams() {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("cairn.toml");
    std::fs::write(
        &config,
        "[limits]\nmax_records_per_request = 5\nmax_open_streams = 1\nmax_request_bytes = 65536\n",
    )
    .unwrap();
    let broker = TestBroker::start_with(&["--config", config.to_str().unwrap()]).unwrap();
    let mut c = clients(&broker).await;
    c.admin
        .create_topic(pb::CreateTopicRequest {
            name: "t".into(),
            partitions: 1,
            ..Default::default()
        })
        .await
        .unwrap();

    // Six structured records where five are allowed.
    let records = vec![
        pb::ProduceRecord {
            value_payload: Some(pb::produce_record::ValuePayload::ValueText("x".into())),
            ..Default::default()
        };
        6
    ];
    let request = pb::ProduceRequest {
        topic: "t".into(),
        records,
        ..Default::default()
    };
    let meta = expect(
        c.broker.produce(request).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert_eq!(meta["field"], "records");

    // A message larger than max_request_bytes is refused by the transport, not buffered.
    let huge = produce("t", 0, Bytes::from(vec![0u8; 100_000]));
    let meta = expect(
        c.broker.produce(huge).await,
        Code::ResourceExhausted,
        "REQUEST_TOO_LARGE",
    );
    assert!(meta.is_empty());

    // One open stream allowed: a second subscription is refused.
    let subscribe = || pb::SubscribeRequest {
        topic: "t".into(),
        ..Default::default()
    };
    let first = c.broker.subscribe(subscribe()).await.unwrap();
    expect(
        c.broker.subscribe(subscribe()).await,
        Code::ResourceExhausted,
        "RESOURCE_EXHAUSTED",
    );
    // Closing the first frees the slot.
    drop(first);
    cairn_tests::wait_for(
        "the stream slot to free up",
        std::time::Duration::from_secs(10),
        || {
            let mut broker = c.broker.clone();
            async move { broker.subscribe(subscribe()).await.ok() }
        },
    )
    .await
    .unwrap();

    // Nothing was written by any refused request.
    assert!(values(&mut c, "t").await.is_empty());
}
