//! A broker started in-process with `Broker::start` (port 0, a temporary data directory):
//! records go through the public client, and shutdown returns only after every tracked task
//! has ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_client::{Client, ConsumerConfig, NewTopic, ProducerConfig, ProducerRecord, SeekTo};
use cairn_server::broker::Broker;
use cairn_server::config::BrokerConfig;

/// Creates `topic`, retrying while the new broker elects itself and registers.
async fn create_topic(client: &Client, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.admin().create_topic(NewTopic::new(topic, 1)).await {
            Ok(_) => return,
            Err(e) => {
                assert!(Instant::now() < deadline, "topic never created: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_broker_serves_and_shutdown_waits_for_every_task() {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        ..BrokerConfig::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker = Broker::start(config, listener).await.unwrap();
    let client = Client::connect([broker.addr().to_string()]).await.unwrap();
    create_topic(&client, "in-process").await;

    let producer = client.producer(ProducerConfig::default());
    for i in 0..10 {
        producer
            .send(ProducerRecord::new("in-process", format!("value-{i}")))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    let mut consumer = client.consumer(ConsumerConfig::default());
    consumer.assign("in-process", 0..1);
    consumer
        .seek("in-process", 0, SeekTo::Earliest)
        .await
        .unwrap();
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while values.len() < 10 {
        assert!(Instant::now() < deadline, "only {} records", values.len());
        for r in consumer.next_batch().await.unwrap() {
            values.push(String::from_utf8(r.value.to_vec()).unwrap());
        }
    }
    let expected: Vec<String> = (0..10).map(|i| format!("value-{i}")).collect();
    assert_eq!(values, expected);

    // A task like a cleaning pass: on shutdown it still needs time to finish its unit of
    // work. Shutdown must not return (nor flush and close the logs) before it has.
    let tasks = broker.tasks().clone();
    let finished = Arc::new(AtomicBool::new(false));
    {
        let (tasks, finished) = (tasks.clone(), Arc::clone(&finished));
        broker.tasks().spawn(async move {
            tasks.cancelled().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            finished.store(true, Ordering::SeqCst);
        });
    }
    assert!(tasks.running() > 1, "the broker's own tasks are tracked");
    drop(consumer);
    drop(producer);
    drop(client);
    broker.shutdown().await.unwrap();
    assert!(
        finished.load(Ordering::SeqCst),
        "shutdown returned before a tracked task ended"
    );
    assert_eq!(tasks.running(), 0, "tracked tasks still running");
}
