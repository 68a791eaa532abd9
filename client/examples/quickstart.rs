//! Creates a topic, produces a few records and reads them back.
//!
//! Runs against the brokers in `CAIRN_BROKERS` (comma-separated), or 127.0.0.1:9092:
//!
//! ```text
//! cargo run -p cairn-client --example quickstart
//! ```

use std::time::Duration;

use cairn_client::{
    Client, ConsumerConfig, Error, NewTopic, ProducerConfig, ProducerRecord, SeekTo,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let brokers = std::env::var("CAIRN_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let client = Client::connect(brokers.split(',')).await?;
    let topic = "quickstart";

    match client.admin().create_topic(NewTopic::new(topic, 3)).await {
        Ok(t) => println!("created {} with {} partitions", t.name, t.partitions.len()),
        Err(Error::TopicAlreadyExists { .. }) => println!("{topic} exists already"),
        Err(e) => return Err(e.into()),
    }

    let producer = client.producer(ProducerConfig::default());
    // All ten sends are enqueued before the first await, so they share batches.
    let sends: Vec<_> = (0..10)
        .map(|i| {
            let record = ProducerRecord::new(topic, format!("hello #{i}"))
                .key(format!("key-{}", i % 3))
                .header("source", "quickstart");
            producer.send(record)
        })
        .collect();
    let acks = futures::future::try_join_all(sends).await?;
    producer.flush().await?;
    for ack in &acks {
        println!("wrote {}/{} @ {}", ack.topic, ack.partition, ack.offset);
    }

    // Read back what was just written to the first record's partition.
    let first = &acks[0];
    let mut consumer = client.consumer(ConsumerConfig::default());
    consumer
        .seek(topic, first.partition, SeekTo::Offset(first.offset))
        .await?;
    let expected = acks
        .iter()
        .filter(|a| a.partition == first.partition)
        .count();
    let mut seen = 0;
    while seen < expected {
        let batch = tokio::time::timeout(Duration::from_secs(10), consumer.next_batch()).await??;
        for r in batch {
            println!(
                "read {}/{} @ {}: {}",
                r.topic,
                r.partition,
                r.offset,
                String::from_utf8_lossy(&r.value)
            );
            seen += 1;
        }
    }
    Ok(())
}
