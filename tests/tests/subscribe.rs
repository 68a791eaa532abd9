//! `Subscribe` tails a partition from a position; `ListOffsets` finds earliest, latest and
//! timestamp offsets; `ProduceStream` answers each request in order, errors included.

use std::time::Duration;

use bytes::Bytes;
use cairn_batch::Record;
use cairn_proto::v1::{
    self as pb, admin_client::AdminClient, broker_client::BrokerClient, position::Position,
};
use cairn_tests::TestBroker;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

async fn setup() -> (TestBroker, BrokerClient<Channel>) {
    let broker = TestBroker::start().unwrap();
    let channel = Channel::from_shared(broker.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    AdminClient::new(channel.clone())
        .create_topic(pb::CreateTopicRequest {
            name: "tail".into(),
            partitions: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    (broker, BrokerClient::new(channel))
}

fn batch(values: &[&str], timestamp: i64) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .map(|v| Record {
            timestamp,
            key: None,
            value: Bytes::copy_from_slice(v.as_bytes()),
            headers: vec![],
        })
        .collect();
    cairn_batch::encode(&records)
}

async fn produce(c: &mut BrokerClient<Channel>, values: &[&str], timestamp: i64) -> i64 {
    c.produce(pb::ProduceRequest {
        topic: "tail".into(),
        batches: batch(values, timestamp),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .base_offset
}

fn subscribe(position: Position) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        topic: "tail".into(),
        start: Some(pb::Position {
            position: Some(position),
        }),
        format: pb::RecordFormat::Text as i32,
        ..Default::default()
    }
}

/// Reads chunks until `n` records arrived (or 20 s passed).
async fn take(
    stream: &mut tonic::Streaming<pb::SubscribeResponse>,
    n: usize,
) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("records arrive on the subscription")
            .expect("the stream stays open")
            .unwrap();
        out.extend(
            chunk
                .records
                .into_iter()
                .map(|r| (r.offset, r.value_text.unwrap_or_default())),
        );
    }
    out
}

#[tokio::test]
async fn subscribe_from_earliest_and_latest_sees_the_right_records() {
    let (_broker, mut c) = setup().await;
    produce(&mut c, &["a", "b"], 1_000).await;

    let mut from_start = c
        .subscribe(subscribe(Position::Boundary(pb::Boundary::Earliest as i32)))
        .await
        .unwrap()
        .into_inner();
    let mut from_end = c
        .subscribe(subscribe(Position::Boundary(pb::Boundary::Latest as i32)))
        .await
        .unwrap()
        .into_inner();
    let mut from_offset = c
        .subscribe(subscribe(Position::Offset(1)))
        .await
        .unwrap()
        .into_inner();

    assert_eq!(
        take(&mut from_start, 2).await,
        [(0, "a".into()), (1, "b".into())]
    );
    produce(&mut c, &["c"], 2_000).await;
    assert_eq!(take(&mut from_start, 1).await, [(2, "c".into())]);
    assert_eq!(take(&mut from_end, 1).await, [(2, "c".into())]);
    assert_eq!(
        take(&mut from_offset, 2).await,
        [(1, "b".into()), (2, "c".into())]
    );

    // A start past the end is refused up front.
    let err = c
        .subscribe(subscribe(Position::Offset(99)))
        .await
        .expect_err("offset 99 is past the end");
    assert_eq!(err.code(), tonic::Code::OutOfRange);
}

#[tokio::test]
async fn list_offsets_by_boundary_and_timestamp() {
    let (_broker, mut c) = setup().await;
    produce(&mut c, &["old1", "old2"], 1_000).await;
    produce(&mut c, &["new"], 5_000).await;
    let at = |position| pb::ListOffsetsRequest {
        topic: "tail".into(),
        partitions: vec![],
        position: Some(pb::Position {
            position: Some(position),
        }),
    };
    let offset = |r: tonic::Response<pb::ListOffsetsResponse>| r.into_inner().offsets[0].offset;
    let earliest = c
        .list_offsets(at(Position::Boundary(pb::Boundary::Earliest as i32)))
        .await
        .unwrap();
    assert_eq!(offset(earliest), 0);
    let latest = c
        .list_offsets(at(Position::Boundary(pb::Boundary::Latest as i32)))
        .await
        .unwrap();
    assert_eq!(offset(latest), 3);
    let by_time = c
        .list_offsets(at(Position::TimestampMs(4_000)))
        .await
        .unwrap();
    assert_eq!(offset(by_time), 2, "first record at or after 4000 ms");
    let past = c
        .list_offsets(at(Position::TimestampMs(9_000)))
        .await
        .unwrap();
    assert_eq!(offset(past), 3, "a time past every record gives the end");
    let missing = c
        .list_offsets(pb::ListOffsetsRequest {
            topic: "tail".into(),
            ..Default::default()
        })
        .await
        .expect_err("a position is required");
    assert_eq!(missing.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn produce_stream_answers_in_order_and_reports_errors_in_band() {
    let (_broker, mut c) = setup().await;
    let requests = vec![
        (1, "tail", batch(&["x"], 1)),
        (2, "missing", batch(&["y"], 1)),
        (3, "tail", batch(&["z1", "z2"], 1)),
    ];
    let outbound = tokio_stream::iter(requests.into_iter().map(|(id, topic, batches)| {
        pb::ProduceStreamRequest {
            correlation_id: id,
            request: Some(pb::ProduceRequest {
                topic: topic.into(),
                batches,
                ..Default::default()
            }),
        }
    }));
    let answers: Vec<_> = c
        .produce_stream(outbound)
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<_, _>>()
        .await
        .unwrap();
    assert_eq!(
        answers.iter().map(|a| a.correlation_id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(answers[0].response.as_ref().unwrap().base_offset, 0);
    let err = answers[1].error.as_ref().unwrap();
    assert_eq!(err.reason, "UNKNOWN_TOPIC");
    assert_eq!(err.code, tonic::Code::NotFound as i32);
    let third = answers[2].response.as_ref().unwrap();
    assert_eq!((third.base_offset, third.last_offset), (1, 2));
}
