//! `cairn bench produce`: K tasks, each with its own [`Producer`], send fixed-size records
//! until the shared record budget or the deadline runs out.
//!
//! The timed loop allocates as little per record as the client allows: every record shares
//! one `Bytes` payload (a clone is a reference-count bump). What remains per record is the
//! client's own: the topic `String` of `ProducerRecord`, its oneshot, and this loop's slot in
//! a `FuturesUnordered`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use cairn_client::{Client, Producer, ProducerConfig, ProducerRecord};
use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use super::{Report, Workload, histogram};

/// Sends between cooperative yields, so that producer tasks leave room on the runtime's
/// workers for the client's dispatcher and sender tasks.
const YIELD_EVERY: u64 = 32;

/// Runs the produce workload and reports it.
///
/// # Errors
///
/// The first record the broker refused, after the client's retries.
pub(crate) async fn run(client: &Client, w: &Workload, bar: ProgressBar) -> anyhow::Result<Report> {
    let partitions = client
        .partition_count(&w.topic)
        .await
        .with_context(|| format!("topic {:?}", w.topic))?;
    let shared = Arc::new(Shared {
        claimed: AtomicU64::new(0),
        limit: w.record_limit(),
        deadline: w.duration.map(|d| Instant::now() + d),
        payload: Bytes::from(vec![b'x'; w.record_size]),
        topic: w.topic.clone(),
        bar: bar.clone(),
        // Unanswered records per task: enough to fill batches, few enough that every send
        // finds room in the producer's buffer at once.
        window: ((32usize << 20) / (w.record_size + 64)).clamp(64, 50_000),
        // Each task paces itself to its share of `--rate`.
        interval: (w.rate > 0).then(|| Duration::from_secs_f64(w.producers as f64 / w.rate as f64)),
    });
    let config = ProducerConfig {
        linger: Duration::from_millis(w.linger_ms),
        batch_bytes: w.batch_bytes,
        acks: w.acks.into(),
        ..ProducerConfig::default()
    };
    let start = Instant::now();
    let tasks: Vec<_> = (0..w.producers)
        .map(|_| {
            tokio::spawn(produce_task(
                client.producer(config.clone()),
                shared.clone(),
            ))
        })
        .collect();
    let mut latency = histogram();
    let mut records = 0;
    for task in tasks {
        let (n, h) = task.await.context("a producer task panicked")??;
        records += n;
        latency.add(h).context("merging latency histograms")?;
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(Report {
        workload: "produce",
        baseline: w.baseline,
        topic: w.topic.clone(),
        partitions,
        record_size: w.record_size,
        records,
        bytes: records * w.record_size as u64,
        elapsed,
        latency,
        latency_of: "send to ack, per record",
    })
}

/// What the producer tasks share.
struct Shared {
    /// Records claimed so far across tasks; a task sends only what it claimed.
    claimed: AtomicU64,
    limit: u64,
    deadline: Option<Instant>,
    /// The one value every record carries.
    payload: Bytes,
    topic: String,
    bar: ProgressBar,
    window: usize,
    /// With `--rate`: the time between two sends of one task.
    interval: Option<Duration>,
}

impl Shared {
    fn claim(&self) -> bool {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        self.claimed.fetch_add(1, Ordering::Relaxed) < self.limit
    }
}

/// One producer's loop; returns the records acknowledged and their latencies (µs).
async fn produce_task(
    producer: Producer,
    shared: Arc<Shared>,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let mut latency = histogram();
    let mut pending = FuturesUnordered::new();
    let mut acked = 0u64;
    let mut sent = 0u64;
    let mut record = |r: (Instant, cairn_client::Result<_>)| -> anyhow::Result<()> {
        let (sent_at, result) = r;
        result.context("sending a record")?;
        latency.saturating_record(sent_at.elapsed().as_micros() as u64);
        acked += 1;
        Ok(())
    };
    let started = tokio::time::Instant::now();
    while shared.claim() {
        if let Some(interval) = shared.interval {
            // Paced: sleep until this send's slot (sleeping only when at least 1 ms ahead, so
            // high rates do not pay a timer per record).
            // Acks that arrive meanwhile are recorded at once, so pacing adds no latency.
            let due = started + interval.mul_f64(sent as f64);
            if due > tokio::time::Instant::now() + Duration::from_millis(1) {
                let sleep = tokio::time::sleep_until(due);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => break,
                        Some(r) = pending.next(), if !pending.is_empty() => {
                            record(r)?;
                            shared.bar.inc(1);
                        }
                    }
                }
            }
        }
        if pending.len() >= shared.window
            && let Some(r) = pending.next().await
        {
            record(r)?;
            shared.bar.inc(1);
        }
        let sent_at = Instant::now();
        let ack = producer.send(ProducerRecord {
            topic: shared.topic.clone(),
            value: shared.payload.clone(),
            ..ProducerRecord::default()
        });
        pending.push(ack.map(move |r| (sent_at, r)));
        sent += 1;
        let mut done = 0;
        while let Some(Some(r)) = pending.next().now_or_never() {
            record(r)?;
            done += 1;
        }
        shared.bar.inc(done);
        if sent.is_multiple_of(YIELD_EVERY) {
            tokio::task::yield_now().await;
        }
    }
    producer.flush().await.context("flushing")?;
    while let Some(r) = pending.next().await {
        record(r)?;
        shared.bar.inc(1);
    }
    Ok((acked, latency))
}
