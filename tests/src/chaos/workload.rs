//! The workload (reliability.md §4.4): writer tasks sending globally unique values with the
//! default producer (acks=all, idempotent) and recording every send; a metadata poller; and the
//! final read with a fresh client once every fault is healed.
//!
//! Each writer owns one partition and sends one value at a time, so its acknowledged offsets
//! must rise in send order, and an outage of its partition shows as one long send. Writers are
//! paced ([`SEND_INTERVAL`]) so that the brokers, not the workload, own the 2-core machine.
//!
//! A send's error is a definite `fail` only when the broker refused the request before any
//! append could happen (a validation error or an unknown topic); everything else, including
//! `NOT_ENOUGH_REPLICAS` and errors after the client's own retries, is `info`: the batch may
//! have been written by an earlier attempt.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_client::{Client, ConsumerConfig, Error, ProducerConfig, ProducerRecord, SeekTo};
use tokio::task::JoinHandle;

use super::history::{Clock, MetaSample, OpType, Recorder};
use super::topology::Probe;

/// The least time between two sends of one writer (≤ 50 sends/s each).
pub const SEND_INTERVAL: Duration = Duration::from_millis(20);

/// How often the metadata poller samples the controller's view.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The value writer `process` sends `counter`-th: unique across the run.
pub fn value_of(process: u32, counter: u64) -> u64 {
    (u64::from(process) << 40) | counter
}

/// Whether `error` guarantees the broker appended nothing.
pub fn is_definite_failure(error: &Error) -> bool {
    matches!(
        error,
        Error::InvalidArgument { .. } | Error::UnknownTopic { .. } | Error::UnknownPartition { .. }
    )
}

/// A client for the workload: short request timeout so that a send to a frozen broker gives
/// up and retries elsewhere within the failover time.
///
/// # Errors
///
/// If no broker answers.
pub async fn client(bootstrap: &[String]) -> Result<Client> {
    Ok(Client::builder()
        .brokers(bootstrap.to_vec())
        .request_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .await?)
}

/// Starts `per_partition` writers on each of `partitions` partitions of `topic`; they run until
/// `stop` is set. Writer `w` writes partition `w % partitions`.
pub fn spawn_writers(
    bootstrap: Vec<String>,
    topic: &str,
    partitions: u32,
    per_partition: u32,
    recorder: &Recorder,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<Result<()>>> {
    (0..partitions * per_partition)
        .map(|w| {
            let writer = Writer {
                process: w + 1,
                partition: w % partitions,
                topic: topic.to_owned(),
                recorder: recorder.clone(),
                stop: stop.clone(),
            };
            tokio::spawn(writer.run(bootstrap.clone()))
        })
        .collect()
}

struct Writer {
    process: u32,
    partition: u32,
    topic: String,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
}

impl Writer {
    async fn run(self, bootstrap: Vec<String>) -> Result<()> {
        let client = client(&bootstrap).await.context("writer connecting")?;
        let producer = client.producer(ProducerConfig::default());
        let mut pace = tokio::time::interval(SEND_INTERVAL);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut counter = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            pace.tick().await;
            counter += 1;
            let value = value_of(self.process, counter);
            let record = ProducerRecord::new(self.topic.clone(), value.to_be_bytes().to_vec())
                .partition(self.partition);
            let (process, p) = (self.process, self.partition);
            self.recorder
                .record(process, OpType::Invoke, p, value)
                .done();
            match producer.send(record).await {
                Ok(meta) if meta.partition == p => {
                    let ok = self.recorder.record(process, OpType::Ok, p, value);
                    ok.offset(meta.offset).done();
                }
                Ok(meta) => {
                    let info = self.recorder.record(process, OpType::Info, p, value);
                    info.err(format!("acked on partition {}", meta.partition))
                        .done();
                }
                Err(e) => {
                    let kind = if is_definite_failure(&e) {
                        OpType::Fail
                    } else {
                        OpType::Info
                    };
                    self.recorder.record(process, kind, p, value).err(e).done();
                }
            }
        }
        Ok(())
    }
}

/// Samples the controller's view every [`POLL_INTERVAL`] until `stop`; yields the samples.
pub fn spawn_poller(
    probe: Probe,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<MetaSample>> {
    tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            samples.push(probe.sample(clock).await);
        }
        samples
    })
}

/// What the final read found: per partition, `(offset, value)` in offset order and the high
/// watermark it read up to.
pub type FinalRead = (BTreeMap<u32, Vec<(i64, u64)>>, BTreeMap<u32, i64>);

/// Reads every partition of `topic` from offset 0 with a fresh client, until each partition's
/// high watermark has been reached and stayed the same for 3 reads, or `timeout` passes.
///
/// # Errors
///
/// If the high watermarks cannot be listed at all.
pub async fn final_read(
    bootstrap: &[String],
    topic: &str,
    partitions: u32,
    timeout: Duration,
) -> Result<FinalRead> {
    let deadline = tokio::time::Instant::now() + timeout;
    let client = client(bootstrap).await?;
    let ids: Vec<u32> = (0..partitions).collect();
    let mut consumer = client.consumer(
        ConsumerConfig::default()
            .max_wait(Duration::from_millis(200))
            .offset_reset(cairn_client::OffsetReset::Earliest),
    );
    consumer.assign(topic, ids.iter().copied());
    let mut read: BTreeMap<u32, BTreeMap<i64, u64>> = BTreeMap::new();
    let mut hws: BTreeMap<u32, i64> = BTreeMap::new();
    let mut stable_reads = 0;
    loop {
        let listed = client.list_offsets(topic, &ids, SeekTo::Latest).await;
        let now: BTreeMap<u32, i64> = match listed {
            Ok(offsets) => offsets.iter().map(|o| (o.partition, o.offset)).collect(),
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("chaos: final read: listing offsets: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => return Err(e).context("listing high watermarks for the final read"),
        };
        let caught_up = ids.iter().all(|&p| {
            let hw = now.get(&p).copied().unwrap_or(0);
            hw == 0 || consumer.position(topic, p).is_some_and(|at| at >= hw)
        });
        stable_reads = if caught_up && now == hws {
            stable_reads + 1
        } else {
            0
        };
        hws = now;
        if stable_reads >= 3 || tokio::time::Instant::now() >= deadline {
            break;
        }
        if !caught_up {
            let batch = tokio::time::timeout(Duration::from_secs(2), consumer.next_batch()).await;
            if let Ok(Ok(records)) = batch {
                for r in records {
                    let value = decode_value(&r.value);
                    read.entry(r.partition).or_default().insert(r.offset, value);
                }
            }
        }
    }
    let reads = read
        .into_iter()
        .map(|(p, r)| (p, r.into_iter().collect()))
        .collect();
    Ok((reads, hws))
}

/// A record's value as the writers encode it (8 bytes, big-endian); anything else maps to a
/// value no writer sends.
fn decode_value(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(u64::MAX, u64::from_be_bytes)
}
