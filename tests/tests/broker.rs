//! The broker through the Rust client crate: round trips with keys and headers, long-poll
//! wake-ups, and restarts (graceful and SIGKILL) that keep topics and records.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_client::{Client, ConsumerConfig, NewTopic, ProducerConfig, ProducerRecord, SeekTo};
use cairn_proto::v1::{self as pb, broker_client::BrokerClient};
use cairn_tests::TestBroker;
use futures::future::try_join_all;

async fn connect(b: &TestBroker) -> Client {
    Client::connect([b.addr().to_string()]).await.unwrap()
}

/// Reads every record of `partitions` from the earliest offset up to `count` records.
async fn read_n(
    client: &Client,
    topic: &str,
    partitions: std::ops::Range<u32>,
    count: usize,
) -> Vec<cairn_client::ConsumerRecord> {
    let mut consumer = client.consumer(ConsumerConfig::default());
    consumer.assign(topic, partitions.clone());
    for p in partitions {
        consumer.seek(topic, p, SeekTo::Earliest).await.unwrap();
    }
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records arrived",
            out.len()
        );
        out.extend(consumer.next_batch().await.unwrap());
    }
    out
}

#[tokio::test]
async fn round_trip_keeps_keys_headers_timestamps_and_per_key_partitions() {
    let broker = TestBroker::start().unwrap();
    let client = connect(&broker).await;
    client
        .admin()
        .create_topic(NewTopic::new("orders", 3))
        .await
        .unwrap();
    let producer = client.producer(ProducerConfig::default());
    let sends = (0..300).map(|i| {
        let record = ProducerRecord::new("orders", format!("value-{i}"))
            .key(format!("customer-{}", i % 7))
            .header("seq", i.to_string())
            .header("seq", "again")
            .timestamp(1_700_000_000_000 + i);
        producer.send(record)
    });
    let acks = try_join_all(sends).await.unwrap();
    producer.flush().await.unwrap();

    let records = read_n(&client, "orders", 0..3, 300).await;
    assert_eq!(records.len(), 300);
    for r in &records {
        let value = std::str::from_utf8(&r.value).unwrap();
        let i: i64 = value.strip_prefix("value-").unwrap().parse().unwrap();
        assert_eq!(
            r.key.as_deref(),
            Some(format!("customer-{}", i % 7).as_bytes())
        );
        assert_eq!(
            r.headers,
            vec![
                ("seq".to_owned(), Bytes::from(i.to_string())),
                ("seq".to_owned(), Bytes::from_static(b"again")),
            ]
        );
        assert_eq!(r.timestamp, 1_700_000_000_000 + i);
        // Each record is where its acknowledgement said it was.
        let ack = &acks[i as usize];
        assert_eq!((ack.partition, ack.offset), (r.partition, r.offset));
        // Equal keys share a partition (murmur2, as Kafka).
        assert_eq!(
            r.partition,
            cairn_client::partition_for_key(format!("customer-{}", i % 7).as_bytes(), 3)
        );
    }
    // Offsets within each partition are dense from 0.
    for p in 0..3 {
        let mut offsets: Vec<i64> = records
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.offset)
            .collect();
        offsets.sort_unstable();
        assert_eq!(offsets, (0..offsets.len() as i64).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn a_long_poll_fetch_wakes_when_a_record_arrives() {
    let broker = TestBroker::start().unwrap();
    let client = connect(&broker).await;
    client
        .admin()
        .create_topic(NewTopic::new("wake", 1))
        .await
        .unwrap();
    let mut raw = BrokerClient::connect(broker.url()).await.unwrap();
    let started = Instant::now();
    let fetch = tokio::spawn(async move {
        raw.fetch(pb::FetchRequest {
            topic: "wake".into(),
            offset: 0,
            max_wait_ms: 25_000,
            format: pb::RecordFormat::Text as i32,
            ..Default::default()
        })
        .await
    });
    // Produce only once the fetch is parked at the broker: until then it has not returned.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !fetch.is_finished(),
        "the fetch answered before any record existed"
    );
    let producer = client.producer(ProducerConfig::default());
    producer
        .send(ProducerRecord::new("wake", "ping"))
        .await
        .unwrap();
    let response = fetch.await.unwrap().unwrap().into_inner();
    assert_eq!(response.records.len(), 1);
    assert_eq!(response.records[0].value_text.as_deref(), Some("ping"));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the fetch waited out its timeout instead of waking: {:?}",
        started.elapsed()
    );
}

/// A value of about 100 bytes, so a few hundred of them fill several 4 KiB segments.
fn value(i: u32) -> String {
    format!("v{i:04}-{}", "x".repeat(90))
}

async fn produce_values(client: &Client, topic: &str, range: std::ops::Range<u32>) {
    let producer = client.producer(ProducerConfig::default());
    try_join_all(range.map(|i| producer.send(ProducerRecord::new(topic, value(i)).partition(0))))
        .await
        .unwrap();
    producer.flush().await.unwrap();
}

#[tokio::test]
async fn restarts_keep_topics_configs_and_records() {
    let mut broker = TestBroker::start().unwrap();
    let client = connect(&broker).await;
    client
        .admin()
        .create_topic(NewTopic::new("kept", 2).config(cairn_client::TopicConfig {
            segment_bytes: Some(4096),
            ..Default::default()
        }))
        .await
        .unwrap();
    produce_values(&client, "kept", 0..200).await;

    // A graceful stop, then a crash, then each time everything is still there.
    let stopping = Instant::now();
    broker.stop().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "graceful stop took {:?}: open client streams held the drain",
        stopping.elapsed()
    );
    broker.restart().unwrap();
    let client = connect(&broker).await;
    produce_values(&client, "kept", 200..300).await;
    broker.kill();
    broker.restart().unwrap();
    let client = connect(&broker).await;

    let topic = client.admin().describe_topic("kept").await.unwrap();
    assert_eq!(topic.partitions.len(), 2);
    assert_eq!(topic.config.unwrap().segment_bytes, Some(4096));
    assert!(
        topic.partitions[0].segment_count > 1,
        "small segments should have rolled"
    );
    let records = read_n(&client, "kept", 0..1, 300).await;
    let values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.value.to_vec()).unwrap())
        .collect();
    assert_eq!(values, (0..300).map(value).collect::<Vec<_>>());
}

/// A send made while the broker is down is retried inside the client until the broker is back:
/// a refused reconnect must not park the partition's sender until some other record arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_rides_out_a_broker_restart() {
    let mut broker = TestBroker::start().unwrap();
    let client = connect(&broker).await;
    client
        .admin()
        .create_topic(NewTopic::new("bounce", 1))
        .await
        .unwrap();
    let producer = client.producer(ProducerConfig::default());
    producer
        .send(ProducerRecord::new("bounce", "before"))
        .await
        .unwrap();

    broker.kill();
    let send = tokio::spawn(producer.send(ProducerRecord::new("bounce", "during")));
    // Down long enough for the client's first reconnects to be refused.
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.restart().unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(30), send)
        .await
        .expect("the send was not retried once the broker was back")
        .unwrap()
        .unwrap();
    assert_eq!(ack.offset, 1);
}

#[tokio::test]
async fn sigterm_answers_a_parked_long_poll_before_the_broker_exits() {
    let mut broker = TestBroker::start().unwrap();
    let client = connect(&broker).await;
    client
        .admin()
        .create_topic(NewTopic::new("drain", 1))
        .await
        .unwrap();
    let mut raw = BrokerClient::connect(broker.url()).await.unwrap();
    let fetch = tokio::spawn(async move {
        raw.fetch(pb::FetchRequest {
            topic: "drain".into(),
            offset: 0,
            max_wait_ms: 25_000,
            ..Default::default()
        })
        .await
    });
    // Let the fetch park at the broker (it cannot finish: the topic is empty).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!fetch.is_finished());
    let started = Instant::now();
    tokio::task::spawn_blocking(move || broker.stop())
        .await
        .unwrap()
        .unwrap();
    // The running request was answered (empty, at the high watermark), not cut off.
    let response = fetch
        .await
        .unwrap()
        .expect("a parked fetch is answered on shutdown");
    let response = response.into_inner();
    assert!(response.records.is_empty());
    assert_eq!(response.next_offset, 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn create_partitions_grows_a_topic_that_clients_then_use() {
    let mut broker = TestBroker::start().unwrap();
    let client = connect(&broker).await;
    let admin = client.admin();
    admin.create_topic(NewTopic::new("grow", 2)).await.unwrap();
    let grown = admin.create_partitions("grow", 4).await.unwrap();
    assert_eq!(grown.partitions.len(), 4);

    // The new partition takes writes and serves them back.
    let producer = client.producer(ProducerConfig::default());
    let ack = producer
        .send(ProducerRecord::new("grow", "new").partition(3))
        .await
        .unwrap();
    assert_eq!((ack.partition, ack.offset), (3, 0));

    // Shrinking, staying the same and unknown topics are refused and change nothing.
    for total in [2, 4] {
        let err = admin.create_partitions("grow", total).await.unwrap_err();
        assert!(
            matches!(err, cairn_client::Error::InvalidArgument { .. }),
            "{err:?}"
        );
    }
    let err = admin.create_partitions("nope", 9).await.unwrap_err();
    assert!(err.is_unknown_topic_or_partition(), "{err:?}");

    // The new partition count survives a restart.
    broker.stop().unwrap();
    broker.restart().unwrap();
    let client = connect(&broker).await;
    assert_eq!(
        client
            .admin()
            .describe_topic("grow")
            .await
            .unwrap()
            .partitions
            .len(),
        4
    );
    let records = read_n(&client, "grow", 3..4, 1).await;
    assert_eq!(records[0].value, Bytes::from_static(b"new"));
}

/// A data directory written by a single-broker Cairn from before cluster metadata (topics in
/// `topics.json`, no `metadata/`) opens: its topics move into the cluster metadata with their ids
/// and the cluster keeps its id, the records are all there, and the old file is retired.
#[tokio::test]
async fn a_data_dir_from_before_cluster_metadata_is_migrated() {
    let mut broker = TestBroker::start().unwrap();
    let client = connect(&broker).await;
    client
        .admin()
        .create_topic(NewTopic::new("legacy", 2))
        .await
        .unwrap();
    produce_values(&client, "legacy", 0..50).await;
    let topic_id = client
        .admin()
        .describe_topic("legacy")
        .await
        .unwrap()
        .topic_id;
    broker.stop().unwrap();

    // Turn the directory into what the old broker left: topics.json, partition directories
    // without their identity file, and no metadata store.
    let dir = broker.data_dir().to_owned();
    std::fs::remove_dir_all(dir.join("metadata")).unwrap();
    for p in 0..2 {
        std::fs::remove_file(dir.join(format!("legacy-{p}/partition.json"))).unwrap();
    }
    let registry = serde_json::json!({
        "version": 1,
        "cluster_id": "0123456789abcdef0123456789abcdef",
        "topics": {
            "legacy": {
                "topic_id": topic_id,
                "partitions": 2,
                "replication_factor": 1,
                "config": {}
            }
        }
    });
    std::fs::write(dir.join("topics.json"), registry.to_string()).unwrap();
    std::fs::create_dir(dir.join("ghost-0")).unwrap();

    broker.restart().unwrap();
    let client = connect(&broker).await;
    let cluster = cairn_tests::wait_for("the migrated topic", Duration::from_secs(20), || async {
        let cluster = client.admin().describe_cluster().await.ok()?;
        let topic = client.admin().describe_topic("legacy").await.ok()?;
        Some((cluster, topic))
    })
    .await
    .unwrap();
    assert_eq!(cluster.0.cluster_id, "0123456789abcdef0123456789abcdef");
    assert_eq!(cluster.1.topic_id, topic_id);
    assert_eq!(cluster.1.partitions.len(), 2);
    let records = read_n(&client, "legacy", 0..1, 50).await;
    assert_eq!(records.len(), 50);
    assert_eq!(&records[49].value[..], value(49).as_bytes());
    cairn_tests::wait_for(
        "topics.json retired and strays removed",
        Duration::from_secs(20),
        || async {
            (!dir.join("topics.json").exists()
                && dir.join("topics.json.migrated").exists()
                && !dir.join("ghost-0").exists())
            .then_some(())
        },
    )
    .await
    .unwrap();
}

/// Point 5 of the availability issue: callers that give up on requests to a broker that is not
/// answering (a paused broker, a healed partition) reset their streams, and those resets all
/// arrive together when it answers again. h2's default allows 20 such "pending-accept" resets
/// per connection and then tears the connection down (GOAWAY, ENHANCE_YOUR_CALM), failing
/// every other call on it. The broker must take a burst like that and keep the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_abandoned_calls_does_not_tear_down_the_connection() {
    let mut b = TestBroker::start().unwrap();
    let channel = tonic::transport::Endpoint::from_shared(b.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = pb::admin_client::AdminClient::new(channel.clone());
    admin
        .describe_cluster(pb::DescribeClusterRequest {})
        .await
        .unwrap();

    b.pause().unwrap();
    let abandoned = (0..100).map(|_| {
        let mut admin = pb::admin_client::AdminClient::new(channel.clone());
        async move {
            let call = admin.describe_cluster(pb::DescribeClusterRequest {});
            // Gives up while the broker is stopped: the stream is reset.
            let _ = tokio::time::timeout(Duration::from_millis(50), call).await;
        }
    });
    futures::future::join_all(abandoned).await;
    let mut patient = pb::admin_client::AdminClient::new(channel.clone());
    let waiting = tokio::spawn(async move {
        patient
            .describe_cluster(pb::DescribeClusterRequest {})
            .await
    });
    // Let the patient call's frames reach the socket behind the resets.
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.resume().unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the patient call is answered")
        .unwrap();
    assert!(
        answer.is_ok(),
        "the connection was torn down by the burst of resets: {answer:?}"
    );
}
