//! [`Producer`]: batching records per partition and handing sealed batches to one sender task
//! per partition ([`crate::sender`]).
//!
//! `send` hands the record to a dispatcher task over a channel *before* its future first
//! awaits, so records sent one after another keep their order, and a `join_all` of many sends
//! lands them in the same batches. The dispatcher picks the partition ([`crate::partitioner`]),
//! appends to that partition's open batch ([`crate::accumulator`]) and seals batches on size or
//! linger. Memory is bounded by [`ProducerConfig::buffer_bytes`]: a send waits for room.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_batch::{BatchBuilder, Record};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::accumulator::{Accumulator, Ack, Sealed};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::partitioner::{Partitioner, Partitioning};
use crate::sender::{self, SenderMsg};

/// When the broker acknowledges a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Fire and forget: the broker answers before writing. Lost writes go unseen.
    None,
    /// Once the leader has appended the batch.
    Leader,
    /// Once every in-sync replica has the batch. The default.
    #[default]
    All,
}

impl From<Acks> for cairn_proto::v1::Acks {
    fn from(a: Acks) -> Self {
        match a {
            Acks::None => Self::None,
            Acks::Leader => Self::Leader,
            Acks::All => Self::All,
        }
    }
}

/// How a [`Producer`] batches and sends. Retries and timeouts come from the
/// [`ClientConfig`](crate::ClientConfig).
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a batch waits for more records after its first. Default 5 ms.
    pub linger: Duration,
    /// Largest batch, in encoded bytes. Default 1 MiB.
    pub batch_bytes: usize,
    /// When a write counts as done. Default [`Acks::All`].
    pub acks: Acks,
    /// Where keyless records go. Default [`Partitioning::Sticky`]. Keyed records always use
    /// Kafka's murmur2.
    pub partitioning: Partitioning,
    /// With [`Partitioning::Sticky`], keyless records move to the next partition after this
    /// many bytes of them went to one (or when its batch is sealed, whichever comes first).
    /// Default 16 KiB, Kafka's `batch.size`, which drives the same switch (KIP-794): a burst
    /// of small keyless records spreads over the partitions within a few hundred records.
    pub sticky_bytes: usize,
    /// Largest record the producer sends (key, value and headers encoded, as in a batch of its
    /// own); a larger one fails at once with [`Error::RecordTooLarge`] and never travels.
    /// Default 1 MiB, the broker's default `max_message_bytes` (Kafka's `max.request.size`).
    /// Raise both together.
    pub max_record_bytes: usize,
    /// Batches per partition sent on its `ProduceStream` before the first is answered.
    /// Default 5, and at most 5 with [`idempotence`](Self::idempotence), which keeps the order
    /// of `send` across retries. Without idempotence, a batch that fails with a retriable
    /// error while later ones succeed lands after them when retried: set 1 for strict order.
    pub max_in_flight: usize,
    /// The idempotent producer (Kafka's `enable.idempotence`). Default on. The producer asks a
    /// broker for a producer id once (lazily, before its first batch) and stamps every batch
    /// with it and a per-partition sequence, fixed when the batch is first sent; the partition
    /// leader writes a retried batch only once (answering with the offsets it was first written
    /// at) and refuses gaps, so retries neither duplicate nor reorder records. Ignored with
    /// [`Acks::None`], whose answers come before the write and so cannot report a refusal.
    ///
    /// If a batch fails for good (e.g. too large, or its retries are spent) or the partition
    /// loses the producer's sequence (it expired, or an unclean leader election), that
    /// partition starts over under a new producer id: batches the broker refused unwritten are
    /// re-sent, batches whose outcome is unknown fail with [`Error::OutOfOrderSequence`].
    pub idempotence: bool,
    /// Upper bound on the bytes of records sent but not yet answered; `send` waits for room.
    /// Default 64 MiB.
    pub buffer_bytes: usize,
    /// How long a batch keeps being retried after a retriable failure (an unreachable or
    /// restarting broker, `NOT_LEADER`, no leader yet, `NOT_ENOUGH_REPLICAS`, metadata not
    /// available, a timeout), counted from when its sender got it (Kafka's
    /// `delivery.timeout.ms`). Default 120 s: longer than a whole cluster's restart, so a
    /// send rides it out. Errors that a retry cannot cure fail at once; with idempotence a
    /// retried batch keeps its producer id and sequence, so it is written once.
    pub delivery_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            batch_bytes: 1 << 20,
            acks: Acks::All,
            partitioning: Partitioning::Sticky,
            sticky_bytes: 16 << 10,
            max_record_bytes: 1 << 20,
            max_in_flight: 5,
            buffer_bytes: 64 << 20,
            idempotence: true,
            delivery_timeout: Duration::from_secs(120),
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// Topic to write to.
    pub topic: String,
    /// Partition to write to; `None` lets the partitioner choose (by key, or by
    /// [`Partitioning`] without one).
    pub partition: Option<u32>,
    /// Optional key.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Ordered headers; names may repeat.
    pub headers: Vec<(String, Bytes)>,
    /// Milliseconds since the Unix epoch; `None` means now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record of `value` for `topic`, without key or headers.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            value: value.into(),
            ..Self::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the partition explicitly.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Appends a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the timestamp (ms since the Unix epoch).
    pub fn timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = Some(timestamp_ms);
        self
    }

    /// Bytes the record takes in the producer's buffer (payload plus a little framing).
    fn buffer_size(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.key.as_ref().map_or(0, Bytes::len) + self.value.len() + headers + 32
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic written.
    pub topic: String,
    /// Partition written.
    pub partition: u32,
    /// The record's offset in its partition.
    pub offset: i64,
    /// The record's timestamp (ms since the Unix epoch).
    pub timestamp: i64,
}

/// Sends records in batches to partition leaders. Cheap to clone; clones share the batches.
///
/// Dropping every clone still sends what was enqueued (the background tasks finish on their
/// own), but only [`Producer::flush`] tells you when that is done.
#[derive(Debug, Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    commands: mpsc::UnboundedSender<Command>,
    /// Bytes of [`ProducerConfig::buffer_bytes`] still free.
    buffer: Arc<Semaphore>,
    buffer_bytes: usize,
}

enum Command {
    Send {
        topic: String,
        partition: Option<u32>,
        record: Record,
        ack: Ack,
    },
    Flush(oneshot::Sender<()>),
}

impl Client {
    /// A producer with `config`. Spawns its dispatcher task on the current Tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn producer(&self, config: ProducerConfig) -> Producer {
        Producer::new(self.clone(), config)
    }
}

impl Producer {
    /// A producer on `client`; the same as [`Client::producer`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn new(client: Client, config: ProducerConfig) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        let buffer_bytes = config.buffer_bytes.clamp(1, Semaphore::MAX_PERMITS);
        let producer_id = (config.idempotence && config.acks != Acks::None)
            .then(sender::SharedProducerId::default);
        let dispatcher = Dispatcher {
            partitioner: Partitioner::new(config.partitioning, config.sticky_bytes),
            sizer: BatchBuilder::with_capacity(0),
            client,
            config,
            producer_id,
            topics: HashMap::new(),
        };
        tokio::spawn(dispatcher.run(rx));
        Self {
            shared: Arc::new(Shared {
                commands,
                buffer: Arc::new(Semaphore::new(buffer_bytes)),
                buffer_bytes,
            }),
        }
    }

    /// Sends a record. The record is enqueued before this returns when the buffer has room
    /// (otherwise when the returned future first runs and room frees up), so sends keep their
    /// order and `join_all` of many sends shares batches. The future resolves when the broker
    /// has answered for the record's batch.
    ///
    /// # Errors
    ///
    /// The future yields [`Error::RecordTooLarge`] at once for a record over
    /// [`ProducerConfig::max_record_bytes`]; otherwise the batch's error once it cannot be cured
    /// by a retry, or once [`ProducerConfig::delivery_timeout`] has passed:
    /// [`Error::UnknownTopic`], [`Error::InvalidArgument`] (e.g. `BATCH_TOO_LARGE` if
    /// the topic's `max_message_bytes` is lower than the producer's limit),
    /// [`Error::NotEnoughReplicas`], [`Error::Transport`], ...; [`Error::ProducerClosed`] if the
    /// runtime shut the producer down first.
    pub fn send(
        &self,
        record: ProducerRecord,
    ) -> impl Future<Output = Result<RecordMetadata>> + Send + 'static + use<> {
        let (tx, rx) = oneshot::channel();
        let shared = self.shared.clone();
        let size = record.buffer_size().min(shared.buffer_bytes) as u32;
        let waiting = match shared.buffer.clone().try_acquire_many_owned(size) {
            Ok(permit) => {
                shared.enqueue(record, Some(permit), tx);
                None
            }
            Err(_) => Some((record, tx)),
        };
        async move {
            if let Some((record, tx)) = waiting {
                let permit = shared.buffer.clone().acquire_many_owned(size).await.ok();
                shared.enqueue(record, permit, tx);
            }
            rx.await.unwrap_or(Err(Error::ProducerClosed))
        }
    }

    /// Sends every open batch now and waits until every record sent before this call has been
    /// answered (acknowledged or failed; each record's own future says which).
    ///
    /// # Errors
    ///
    /// [`Error::ProducerClosed`] if the producer's tasks are gone.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Flush(tx))
            .map_err(|_| Error::ProducerClosed)?;
        rx.await.map_err(|_| Error::ProducerClosed)
    }
}

impl Shared {
    fn enqueue(
        &self,
        r: ProducerRecord,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        tx: oneshot::Sender<Result<RecordMetadata>>,
    ) {
        let timestamp = r.timestamp.unwrap_or_else(now_ms);
        let command = Command::Send {
            topic: r.topic,
            partition: r.partition,
            record: Record {
                timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers,
            },
            ack: Ack {
                tx,
                timestamp,
                _permit: permit,
            },
        };
        if let Err(mpsc::error::SendError(Command::Send { ack, .. })) = self.commands.send(command)
        {
            let _ = ack.tx.send(Err(Error::ProducerClosed));
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The producer's background task: partitions records and accumulates them into batches.
struct Dispatcher {
    client: Client,
    config: ProducerConfig,
    partitioner: Partitioner,
    /// An empty batch, never written to: sizes a record as in a batch of its own.
    sizer: BatchBuilder,
    /// The producer id shared by the partitions' senders, with idempotence.
    producer_id: Option<sender::SharedProducerId>,
    /// Topic → partition → its open batch and its sender task.
    topics: HashMap<String, HashMap<u32, Slot>>,
}

struct Slot {
    acc: Accumulator,
    sender: mpsc::UnboundedSender<SenderMsg>,
}

impl Dispatcher {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut buf = Vec::with_capacity(1024);
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                n = rx.recv_many(&mut buf, 1024) => {
                    if n == 0 {
                        break;
                    }
                    for command in buf.drain(..) {
                        self.handle(command).await;
                    }
                }
                () = sleep_until(deadline) => self.seal_expired(Instant::now()),
            }
        }
        // Every producer handle is gone: send what is left; the senders finish on their own.
        self.seal_all();
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Send {
                topic,
                partition,
                record,
                ack,
            } => {
                let size = self.sizer.record_size(&record);
                match self
                    .choose(&topic, partition, record.key.as_deref(), size)
                    .await
                {
                    Ok((partition, _)) if size > self.config.max_record_bytes => {
                        let _ = ack.tx.send(Err(Error::RecordTooLarge {
                            topic,
                            partition,
                            size,
                            max: self.config.max_record_bytes,
                        }));
                    }
                    Ok((partition, count)) => self.append(topic, partition, count, &record, ack),
                    Err(e) => {
                        let _ = ack.tx.send(Err(e));
                    }
                }
            }
            Command::Flush(done) => {
                self.seal_all();
                let mut waits = Vec::new();
                for slot in self.topics.values().flat_map(HashMap::values) {
                    let (tx, rx) = oneshot::channel();
                    if slot.sender.send(SenderMsg::Flush(tx)).is_ok() {
                        waits.push(rx);
                    }
                }
                tokio::spawn(async move {
                    futures::future::join_all(waits).await;
                    let _ = done.send(());
                });
            }
        }
    }

    /// The partition for a record, and the topic's partition count.
    async fn choose(
        &mut self,
        topic: &str,
        explicit: Option<u32>,
        key: Option<&[u8]>,
        size: usize,
    ) -> Result<(u32, u32)> {
        let mut count = match self.client.cached_partition_count(topic) {
            Some(n) => n,
            None => self.client.partition_count(topic).await?,
        };
        if let Some(p) = explicit {
            if p >= count {
                // Partitions may have been added since the cache was filled.
                self.client.refresh().await?;
                count = self.client.partition_count(topic).await?;
                if p >= count {
                    return Err(Error::unknown_partition(topic, p, count as usize));
                }
            }
            return Ok((p, count));
        }
        if count == 0 {
            return Err(Error::unknown_topic(topic));
        }
        Ok((self.partitioner.partition(topic, key, count, size), count))
    }

    fn append(&mut self, topic: String, partition: u32, count: u32, record: &Record, ack: Ack) {
        let slots = self.topics.entry(topic.clone()).or_default();
        let slot = slots.entry(partition).or_insert_with(|| Slot {
            acc: Accumulator::new(self.config.batch_bytes),
            sender: sender::spawn(
                self.client.clone(),
                topic.clone(),
                partition,
                sender::SenderConfig {
                    acks: self.config.acks.into(),
                    max_in_flight: self.config.max_in_flight,
                    delivery_timeout: self.config.delivery_timeout,
                },
                self.producer_id.clone(),
            ),
        });
        let sealed = slot.acc.append(record, ack, Instant::now());
        if !sealed.is_empty() {
            for batch in sealed {
                dispatch(&slot.sender, batch);
            }
            self.partitioner.batch_sealed(&topic, partition, count);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.topics
            .values()
            .flat_map(HashMap::values)
            .filter_map(|s| s.acc.deadline(self.config.linger))
            .min()
    }

    fn seal_expired(&mut self, now: Instant) {
        let linger = self.config.linger;
        for (topic, slots) in &mut self.topics {
            let count = slots.len() as u32;
            for (&partition, slot) in slots.iter_mut() {
                if slot.acc.deadline(linger).is_some_and(|d| d <= now)
                    && let Some(batch) = slot.acc.seal()
                {
                    dispatch(&slot.sender, batch);
                    let count = self
                        .client
                        .cached_partition_count(topic)
                        .unwrap_or(count)
                        .max(1);
                    self.partitioner.batch_sealed(topic, partition, count);
                }
            }
        }
    }

    fn seal_all(&mut self) {
        for slot in self.topics.values_mut().flat_map(HashMap::values_mut) {
            if let Some(batch) = slot.acc.seal() {
                dispatch(&slot.sender, batch);
            }
        }
    }
}

/// Hands a sealed batch to its partition's sender; if the sender is gone, fails its records.
fn dispatch(sender: &mpsc::UnboundedSender<SenderMsg>, batch: Sealed) {
    if let Err(mpsc::error::SendError(SenderMsg::Batch(batch))) =
        sender.send(SenderMsg::Batch(batch))
    {
        for ack in batch.acks {
            let _ = ack.tx.send(Err(Error::ProducerClosed));
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => futures::future::pending().await,
    }
}
