//! The client and the CLI as a newcomer who knows rdkafka, kcat and rpk meets them (issue 18):
//! exact timestamp seeks, fast and clear connection errors, keyless records spread over
//! partitions, explicit-offset commits, and the CLI habits that carry over from rpk and Kafka.
//!
//! Every command runs as a process against a `TestBroker`; waits are on process exit (with a
//! deadline) or on conditions, never on sleeps.

use std::collections::BTreeSet;
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::Result;
use cairn_client::{
    Client, ConsumerConfig, GroupConsumerConfig, GroupEvent, NewTopic, Partitioning,
    ProducerConfig, ProducerRecord, SeekTo, TopicPartition,
};
use cairn_tests::{TestBroker, run_cli};
use futures::StreamExt;
use serde_json::Value;

/// How long any one command may take before the test calls it hung.
const DEADLINE: Duration = Duration::from_secs(120);

fn run(broker: &TestBroker, args: &[&str]) -> Output {
    run_cli(&broker.addr().to_string(), args, "", DEADLINE)
        .unwrap_or_else(|e| panic!("cairn {args:?}: {e:#}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(broker: &TestBroker, args: &[&str]) -> String {
    let o = run(broker, args);
    assert!(
        o.status.success(),
        "cairn {args:?} failed:\nstdout: {}\nstderr: {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Sends 30 records stamped `base`, `base + 1 s`, ... to partition 0 of `topic` as one batch
/// (a long linger, then a flush).
async fn produce_stamped(client: &Client, topic: &str, base: i64) -> Result<()> {
    let producer = client.producer(ProducerConfig {
        linger: Duration::from_secs(60),
        ..ProducerConfig::default()
    });
    let sends: Vec<_> = (0..30)
        .map(|i| {
            producer.send(
                ProducerRecord::new(topic, format!("r{i}"))
                    .partition(0)
                    .timestamp(base + i * 1000),
            )
        })
        .collect();
    producer.flush().await?;
    for (i, send) in sends.into_iter().enumerate() {
        assert_eq!(send.await?.offset, i as i64);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_seek_lands_on_the_record_inside_a_batch() -> Result<()> {
    let broker = TestBroker::start()?;
    let client = Client::connect([broker.addr().to_string()]).await?;
    client.admin().create_topic(NewTopic::new("ts", 1)).await?;
    let base = 1_700_000_000_000i64;
    produce_stamped(&client, "ts", base).await?;

    let mut consumer = client.consumer(ConsumerConfig::default().partition_eof(true));
    let at = consumer
        .seek("ts", 0, SeekTo::Timestamp(base + 15_000))
        .await?;
    assert_eq!(at, 15);
    let mut offsets = Vec::new();
    while let Some(item) = consumer.next().await {
        match item {
            Ok(r) => offsets.push(r.offset),
            Err(cairn_client::Error::PartitionEof { offset, .. }) => {
                assert_eq!(offset, 30);
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert_eq!(offsets, (15..30).collect::<Vec<_>>());

    // The CLI agrees: topic consume -o @TS and group seek --to @TS.
    let ts = format!("@{}", base + 15_000);
    let out = ok(
        &broker,
        &["topic", "consume", "ts", "-o", &ts, "-e", "-f", r"%o\n"],
    );
    assert_eq!(out.lines().next(), Some("15"), "{out}");
    assert_eq!(out.lines().count(), 15, "{out}");
    let dry = ok(
        &broker,
        &[
            "group",
            "seek",
            "g",
            "--topic",
            "ts",
            "--to",
            &ts,
            "--dry-run",
            "-f",
            "json",
        ],
    );
    let dry: Value = serde_json::from_str(&dry)?;
    assert_eq!(dry["offsets"][0]["offset"], 15, "{dry}");
    Ok(())
}

#[test]
fn a_refused_connection_fails_fast_naming_the_address_and_the_reason() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let addr = listener.local_addr().expect("bound").to_string();
    drop(listener);
    cairn_tests::cairn_bin(); // built before the clock starts
    let started = Instant::now();
    let o =
        run_cli("127.0.0.1:1", &["topic", "list", "-b", &addr], "", DEADLINE).expect("cairn runs");
    let elapsed = started.elapsed();
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}: {err}");
    assert!(err.contains(&addr), "{err}");
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
    assert_eq!(err.matches(&addr).count(), 1, "the address once: {err}");
}

#[test]
fn cli_flags_and_names_carry_over_from_rpk_and_kafka() {
    let broker = TestBroker::start().unwrap();
    let addr = broker.addr().to_string();
    // -b, Kafka's dotted config key, -f json.
    ok(
        &broker,
        &[
            "topic",
            "create",
            "kv",
            "-b",
            &addr,
            "-c",
            "retention.ms=60000",
        ],
    );
    let described = ok(&broker, &["topic", "describe", "kv", "-f", "json"]);
    let described: Value = serde_json::from_str(&described).unwrap();
    assert_eq!(described["config"]["retention_ms"], "60000");

    // topic add-partitions.
    ok(&broker, &["topic", "add-partitions", "kv", "--num", "2"]);
    let described = ok(&broker, &["topic", "describe", "kv", "-f", "json"]);
    let described: Value = serde_json::from_str(&described).unwrap();
    assert_eq!(described["partitions"].as_array().map(Vec::len), Some(3));

    // A template is for topic consume only.
    let o = run(&broker, &["topic", "list", "-f", "%v"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("text or json"),
        "{}",
        text(&o.stderr)
    );

    // An offset past the end is an error naming the partition and its range, -e or not.
    ok(&broker, &["topic", "produce", "kv", "-p", "0"]);
    for args in [
        &["topic", "consume", "kv", "-p", "0", "-o", "999"][..],
        &["topic", "consume", "kv", "-p", "0", "-o", "999", "-e"][..],
    ] {
        let o = run(&broker, args);
        assert!(!o.status.success(), "{args:?}");
        let err = text(&o.stderr);
        assert!(err.contains("offset 999"), "{err}");
        assert!(err.contains("kv-0"), "{err}");
        assert!(err.contains("[0, 0)"), "{err}");
    }

    // group seek --to -N: N records before each partition's end.
    let lines: String = (0..10).map(|i| format!("{i}\n")).collect();
    let o = run_cli(
        &addr,
        &["topic", "produce", "kv", "-p", "1"],
        &lines,
        DEADLINE,
    )
    .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let dry = ok(
        &broker,
        &[
            "group",
            "seek",
            "g",
            "--topic",
            "kv",
            "-p",
            "1",
            "--to",
            "-3",
            "--dry-run",
            "-f",
            "json",
        ],
    );
    let dry: Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(dry["offsets"][0]["offset"], 7, "{dry}");

    // Messages say each thing once, and deleting a missing topic does not advise creating it.
    let o = run(&broker, &["topic", "delete", "nope"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(!err.contains("create it"), "{err}");
    assert!(!err.contains("unknown topic: unknown topic"), "{err}");
    let o = run(&broker, &["topic", "consume", "nope", "-e"]);
    let err = text(&o.stderr);
    assert_eq!(err.matches("nope").count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_spread_over_six_partitions_within_a_second() -> Result<()> {
    let broker = TestBroker::start()?;
    let client = Client::connect([broker.addr().to_string()]).await?;
    client
        .admin()
        .create_topic(NewTopic::new("spread", 6))
        .await?;
    assert_eq!(ProducerConfig::default().partitioning, Partitioning::Sticky);
    // Under a second of load: 1000 records of 100 bytes, sent at once (one linger window).
    let producer = client.producer(ProducerConfig::default());
    let started = Instant::now();
    let sends: Vec<_> = (0..1000)
        .map(|_| producer.send(ProducerRecord::new("spread", vec![b'x'; 100])))
        .collect();
    let mut partitions = BTreeSet::new();
    for send in sends {
        partitions.insert(send.await?.partition);
    }
    assert!(started.elapsed() < Duration::from_secs(1) || partitions.len() == 6);
    assert_eq!(partitions.len(), 6, "{partitions:?}");

    // The README's demo: keyless lines from the CLI spread too.
    let lines: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    let o = run_cli(
        &broker.addr().to_string(),
        &["topic", "produce", "spread"],
        &lines,
        DEADLINE,
    )?;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let offsets = client.list_offsets("spread", &[], SeekTo::Latest).await?;
    assert!(offsets.iter().all(|o| o.high_watermark > 0), "{offsets:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_member_commits_the_offsets_it_is_given() -> Result<()> {
    let broker = TestBroker::start()?;
    let client = Client::connect([broker.addr().to_string()]).await?;
    client
        .admin()
        .create_topic(NewTopic::new("work", 1))
        .await?;
    let producer = client.producer(ProducerConfig::default());
    for i in 0..10 {
        producer
            .send(ProducerRecord::new("work", format!("{i}")))
            .await?;
    }
    let mut member = client.group_consumer(
        GroupConsumerConfig::new("workers")
            .auto_commit(None)
            .auto_store(false),
    );
    member.subscribe(["work"]);
    let mut read = 0;
    while read < 10 {
        match member.next().await.expect("subscribed")? {
            GroupEvent::Record(_) => read += 1,
            _ => continue,
        }
    }
    let tp = TopicPartition::new("work", 0);
    let committed = |d: cairn_client::GroupDescription| {
        d.partitions
            .iter()
            .find(|p| p.topic == "work" && p.partition == 0)
            .map(|p| p.committed_offset)
    };
    // Nothing stored: a commit commits nothing (the stream's position does not count).
    member.commit().await?;
    assert_eq!(member.position("work", 0), Some(0));
    // An explicit commit stores exactly what it is given.
    member.commit_offsets([(tp.clone(), 4)]).await?;
    let described = client.admin().describe_group("workers").await?;
    assert_eq!(committed(described), Some(4));
    // Stored offsets go with the next commit.
    member.store_offsets([(tp.clone(), 7)])?;
    member.commit().await?;
    let described = client.admin().describe_group("workers").await?;
    assert_eq!(committed(described), Some(7));
    // A partition it does not own is refused.
    assert!(
        member
            .store_offsets([(TopicPartition::new("work", 5), 1)])
            .is_err()
    );
    member.close().await?;
    Ok(())
}
