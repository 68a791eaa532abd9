//! `cairn bench consume`: one [`Consumer`](cairn_client::Consumer) per partition reads from the
//! log start until the record budget, the deadline, or the partition's high watermark at the
//! start of the run. A topic with fewer records than the budget is filled first (untimed).
//!
//! Each consumer has one partition, so one `next_batch` is one fetch round trip: that is the
//! latency sample.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use cairn_client::{Client, ConsumerConfig, PartitionOffset, SeekTo};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use super::{DEFAULT_RECORDS, Report, Workload, histogram, progress};

/// Runs the consume workload (after filling the topic if needed) and reports it.
///
/// # Errors
///
/// Fetch errors after the client's retries, or a failed fill.
pub(crate) async fn run(client: &Client, w: &Workload, json: bool) -> anyhow::Result<Report> {
    let offsets = fill_if_short(client, w, json).await?;
    let bar = progress(w, json, "consume");
    let shared = Arc::new(Shared {
        received: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        limit: w.record_limit(),
        deadline: w.duration.map(|d| Instant::now() + d),
        bar: bar.clone(),
    });
    let config = ConsumerConfig {
        max_bytes: w.fetch_bytes,
        ..ConsumerConfig::default()
    };
    let start = Instant::now();
    let tasks: Vec<_> = offsets
        .iter()
        .map(|o| {
            let reader = Reader {
                client: client.clone(),
                config: config.clone(),
                topic: w.topic.clone(),
                partition: o.partition,
                end: o.high_watermark,
            };
            tokio::spawn(reader.run(shared.clone()))
        })
        .collect();
    let mut latency = histogram();
    for task in tasks {
        let h = task.await.context("a consumer task panicked")??;
        latency.add(h).context("merging latency histograms")?;
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(Report {
        workload: "consume",
        baseline: w.baseline,
        topic: w.topic.clone(),
        partitions: offsets.len() as u32,
        record_size: w.record_size,
        records: shared.received.load(Ordering::Relaxed),
        bytes: shared.bytes.load(Ordering::Relaxed),
        elapsed,
        latency,
        latency_of: "fetch round trip",
    })
}

/// Produces (untimed) what the topic lacks of the record budget; returns every partition's
/// offsets as they then stand. The baseline broker never lacks anything.
async fn fill_if_short(
    client: &Client,
    w: &Workload,
    json: bool,
) -> anyhow::Result<Vec<PartitionOffset>> {
    let offsets = client
        .list_offsets(&w.topic, &[], SeekTo::Latest)
        .await
        .context("looking up offsets")?;
    let stored: i64 = offsets
        .iter()
        .map(|o| o.high_watermark - o.log_start_offset)
        .sum();
    let wanted = w.records.unwrap_or(DEFAULT_RECORDS);
    if w.baseline || stored as u64 >= wanted {
        return Ok(offsets);
    }
    let fill = Workload {
        records: Some(wanted - stored as u64),
        duration: None,
        ..w.clone()
    };
    super::produce::run(client, &fill, progress(&fill, json, "fill"))
        .await
        .context("filling the topic")?;
    client
        .list_offsets(&w.topic, &[], SeekTo::Latest)
        .await
        .context("looking up offsets")
}

/// What the consumer tasks share.
struct Shared {
    received: AtomicU64,
    /// Value bytes received.
    bytes: AtomicU64,
    limit: u64,
    deadline: Option<Instant>,
    bar: ProgressBar,
}

impl Shared {
    fn done(&self) -> bool {
        self.received.load(Ordering::Relaxed) >= self.limit
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// One partition's reader.
struct Reader {
    client: Client,
    config: ConsumerConfig,
    topic: String,
    partition: u32,
    /// The high watermark when the run started: where this reader stops.
    end: i64,
}

impl Reader {
    /// Fetches until the run is done or the partition's end; returns fetch latencies (µs).
    async fn run(self, shared: Arc<Shared>) -> anyhow::Result<Histogram<u64>> {
        let mut latency = histogram();
        let mut consumer = self.client.consumer(self.config);
        let mut position = consumer
            .seek(&self.topic, self.partition, SeekTo::Earliest)
            .await
            .with_context(|| format!("seeking partition {}", self.partition))?;
        while position < self.end && !shared.done() {
            let asked = Instant::now();
            let batch = consumer
                .next_batch()
                .await
                .with_context(|| format!("fetching partition {}", self.partition))?;
            latency.saturating_record(asked.elapsed().as_micros() as u64);
            let bytes: usize = batch.iter().map(|r| r.value.len()).sum();
            shared
                .received
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            shared.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
            shared.bar.inc(batch.len() as u64);
            position = consumer
                .position(&self.topic, self.partition)
                .unwrap_or(position);
        }
        Ok(latency)
    }
}
