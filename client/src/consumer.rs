//! [`Consumer`]: a simple consumer that reads partitions it is assigned, from positions it
//! keeps in memory, by long-polling `Fetch` on each partition's leader.
//!
//! Every assigned partition has at most one fetch outstanding; fetches run concurrently and the
//! first to return records is delivered, so a quiet partition never delays a busy one. Fetches
//! ask for stored batches (`RECORD_FORMAT_BATCHES`) and decode them with `cairn_batch`,
//! slicing keys and values out of the response without copying. The reading position lives
//! here, in the process; nothing is committed (the [`GroupConsumer`](crate::GroupConsumer)
//! reads through one of these and commits its positions to its group).

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use cairn_proto::v1::{FetchRequest, FetchResponse, RecordFormat};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};

use crate::client::{Client, SeekTo};
use crate::error::{Error, Result};

/// Where reading starts when a partition has no position (the simple [`Consumer`]: never
/// sought; the [`GroupConsumer`](crate::GroupConsumer): no committed offset), and where it
/// jumps when its position is no longer stored (retention deleted it, or a seek went past the
/// end). Kafka's `auto.offset.reset`; one enum for both consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// The oldest stored record. The default of both consumers: a new reader sees what is
    /// already there (Kafka defaults to `latest`, which surprises more people than it helps;
    /// set [`OffsetReset::Latest`] for Kafka's behaviour).
    #[default]
    Earliest,
    /// The end of the partition: only records produced from now on.
    Latest,
    /// Yield [`Error::NoOffset`] (no position) or [`Error::OffsetOutOfRange`] (position gone)
    /// and leave the partition for the caller to [`Consumer::seek`] (Kafka's `none`).
    Error,
}

/// The old name of [`OffsetReset`], from when the group consumer had its own enum.
#[deprecated(note = "use OffsetReset")]
pub type ResetPolicy = OffsetReset;

/// How a [`Consumer`] fetches. Every field documents its default; set them with the builder
/// methods (`ConsumerConfig::default().offset_reset(OffsetReset::Latest)`).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// How long a fetch waits on the broker for records to arrive. Default 500 ms. Keep it
    /// below the client's request timeout.
    pub max_wait: Duration,
    /// Upper bound on the bytes one fetch returns per partition. Default 1 MiB (the broker
    /// always returns at least one whole batch).
    pub max_bytes: u32,
    /// Where a partition that was never sought starts, and what happens on
    /// `OFFSET_OUT_OF_RANGE`. Default [`OffsetReset::Earliest`].
    pub offset_reset: OffsetReset,
    /// Yield [`Error::PartitionEof`] each time a partition's position reaches its high
    /// watermark (rdkafka's `enable.partition.eof`). Default false.
    pub partition_eof: bool,
    /// Verify each fetched batch's CRC before decoding it. Default true.
    pub check_crcs: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_millis(500),
            max_bytes: 1 << 20,
            offset_reset: OffsetReset::Earliest,
            partition_eof: false,
            check_crcs: true,
        }
    }
}

impl ConsumerConfig {
    /// Sets [`ConsumerConfig::max_wait`].
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Sets [`ConsumerConfig::max_bytes`].
    pub fn max_bytes(mut self, bytes: u32) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Sets [`ConsumerConfig::offset_reset`].
    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.offset_reset = reset;
        self
    }

    /// Sets [`ConsumerConfig::partition_eof`].
    pub fn partition_eof(mut self, on: bool) -> Self {
        self.partition_eof = on;
        self
    }

    /// Sets [`ConsumerConfig::check_crcs`].
    pub fn check_crcs(mut self, on: bool) -> Self {
        self.check_crcs = on;
        self
    }
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic read; shared by every record of a fetch (one allocation per fetch, not per record).
    pub topic: Arc<str>,
    /// Partition read.
    pub partition: u32,
    /// The record's offset.
    pub offset: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key, if the record has one.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Ordered headers.
    pub headers: Vec<(String, Bytes)>,
}

/// Reads assigned partitions. Records come from [`Consumer::next_batch`] or, one at a time,
/// from the [`Stream`] implementation; both are cancel safe (state lives in the consumer).
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    partitions: BTreeMap<(String, u32), PartitionState>,
    fetches: FuturesUnordered<BoxFuture<'static, Done>>,
    /// Records fetched but not yet yielded by the `Stream`.
    buffer: VecDeque<ConsumerRecord>,
    /// End-of-partition notices owed, yielded once the buffer is empty.
    eofs: VecDeque<Error>,
    /// Source of fetch epochs; a seek starts a new epoch and results of older ones are dropped.
    epochs: u64,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .field("partitions", &self.partitions)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct PartitionState {
    /// Next offset to fetch; `None` until resolved from [`ConsumerConfig::start`].
    position: Option<i64>,
    /// Results of fetches from other epochs are stale.
    epoch: u64,
    /// Epoch of the fetch outstanding, if any.
    in_flight: Option<u64>,
    /// The end-of-partition notice for the current end went out; cleared by new records or
    /// a seek.
    at_eof: bool,
}

/// A finished fetch.
struct Done {
    topic: String,
    partition: u32,
    epoch: u64,
    result: Result<Fetched>,
}

struct Fetched {
    records: Vec<ConsumerRecord>,
    next: i64,
    /// The partition's high watermark when the fetch was answered.
    high_watermark: i64,
}

impl Client {
    /// A consumer with `config` and nothing assigned.
    pub fn consumer(&self, config: ConsumerConfig) -> Consumer {
        Consumer {
            client: self.clone(),
            config,
            partitions: BTreeMap::new(),
            fetches: FuturesUnordered::new(),
            buffer: VecDeque::new(),
            eofs: VecDeque::new(),
            epochs: 0,
        }
    }
}

impl Consumer {
    /// Adds `partitions` of `topic` to the assignment; each starts at
    /// [`ConsumerConfig::offset_reset`] unless sought. Already assigned partitions keep their
    /// position.
    pub fn assign(&mut self, topic: &str, partitions: impl IntoIterator<Item = u32>) {
        for p in partitions {
            self.epochs += 1;
            let epoch = self.epochs;
            self.partitions
                .entry((topic.to_owned(), p))
                .or_insert(PartitionState {
                    position: None,
                    epoch,
                    in_flight: None,
                    at_eof: false,
                });
        }
    }

    /// Removes `partitions` of `topic` from the assignment and drops their buffered records.
    pub fn unassign(&mut self, topic: &str, partitions: impl IntoIterator<Item = u32>) {
        for p in partitions {
            self.partitions.remove(&(topic.to_owned(), p));
            self.buffer
                .retain(|r| &*r.topic != topic || r.partition != p);
        }
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.partitions.keys().cloned().collect()
    }

    /// Moves the position of `topic`/`partition` (assigning it if needed) and returns the
    /// offset it resolved to. Records buffered from the old position are dropped.
    ///
    /// # Errors
    ///
    /// As [`Client::list_offsets`], for every target but [`SeekTo::Offset`].
    pub async fn seek(&mut self, topic: &str, partition: u32, to: SeekTo) -> Result<i64> {
        let offset = resolve(&self.client, topic, partition, to).await?;
        self.seek_to(topic, partition, offset);
        Ok(offset)
    }

    /// [`Consumer::seek`] to an exact offset, which needs no lookup.
    pub(crate) fn seek_to(&mut self, topic: &str, partition: u32, offset: i64) {
        self.epochs += 1;
        let state = self
            .partitions
            .entry((topic.to_owned(), partition))
            .or_insert(PartitionState {
                position: None,
                epoch: 0,
                in_flight: None,
                at_eof: false,
            });
        state.position = Some(offset);
        state.at_eof = false;
        state.epoch = self.epochs;
        self.buffer
            .retain(|r| &*r.topic != topic || r.partition != partition);
    }

    /// Records fetched and not yet yielded by the `Stream`: that many come without waiting.
    pub(crate) fn buffered_len(&self) -> usize {
        self.buffer.len()
    }

    /// The offset of the next record this consumer will yield from `topic`/`partition`;
    /// `None` if it is not assigned or its start is not resolved yet.
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        let state = self.partitions.get(&(topic.to_owned(), partition))?;
        self.buffer
            .iter()
            .find(|r| r.partition == partition && &*r.topic == topic)
            .map(|r| r.offset)
            .or(state.position)
    }

    /// Waits for the next records from any assigned partition (records buffered by the
    /// `Stream` first). Returns an empty batch at once when nothing is assigned.
    ///
    /// # Errors
    ///
    /// A partition's fetch error that a retry cannot cure: [`Error::OffsetOutOfRange`] or
    /// [`Error::NoOffset`] (with [`OffsetReset::Error`]), [`Error::UnknownTopic`],
    /// [`Error::CorruptBatch`], ... The partition's position is unchanged, so the next call
    /// fetches it again. Retriable errors (the leader restarting or unreachable, no leader yet)
    /// are not returned: the partition keeps being fetched, with the client's backoff, until
    /// its leader answers. With [`ConsumerConfig::partition_eof`], [`Error::PartitionEof`] is a
    /// notice, not a failure: reading goes on.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: fetches in progress stay in the consumer and their records are delivered by
    /// the next call.
    pub async fn next_batch(&mut self) -> Result<Vec<ConsumerRecord>> {
        if !self.buffer.is_empty() {
            return Ok(self.buffer.drain(..).collect());
        }
        match futures::future::poll_fn(|cx| self.poll_fetch(cx)).await {
            Some(result) => result,
            None => Ok(Vec::new()),
        }
    }

    /// Starts a fetch for every assigned partition that has none outstanding in its epoch.
    fn start_fetches(&mut self) {
        for ((topic, partition), state) in &mut self.partitions {
            if state.in_flight == Some(state.epoch) {
                continue;
            }
            state.in_flight = Some(state.epoch);
            let fetch = fetch(
                self.client.clone(),
                self.config.clone(),
                topic.clone(),
                *partition,
                state.position,
            );
            let (topic, partition, epoch) = (topic.clone(), *partition, state.epoch);
            self.fetches.push(Box::pin(async move {
                Done {
                    result: fetch.await,
                    topic,
                    partition,
                    epoch,
                }
            }));
        }
    }

    /// Polls fetches until one yields records or an error; `None` when nothing is assigned.
    fn poll_fetch(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Vec<ConsumerRecord>>>> {
        loop {
            if let Some(eof) = self.eofs.pop_front() {
                return Poll::Ready(Some(Err(eof)));
            }
            if self.partitions.is_empty() {
                return Poll::Ready(None);
            }
            self.start_fetches();
            let Some(done) = ready!(self.fetches.poll_next_unpin(cx)) else {
                return Poll::Pending;
            };
            match self.complete(done) {
                Some(Ok(records)) if records.is_empty() => {}
                // Records first; the end-of-partition notice on the next poll.
                Some(result) => return Poll::Ready(Some(result)),
                None => {}
            }
        }
    }

    /// Applies a finished fetch to its partition's state; `None` if it was stale or the error
    /// was handled here.
    fn complete(&mut self, done: Done) -> Option<Result<Vec<ConsumerRecord>>> {
        let key = (done.topic, done.partition);
        let state = self.partitions.get_mut(&key)?;
        if state.in_flight == Some(done.epoch) {
            state.in_flight = None;
        }
        if state.epoch != done.epoch {
            return None;
        }
        match done.result {
            Ok(fetched) => {
                state.position = Some(fetched.next);
                if !fetched.records.is_empty() {
                    state.at_eof = false;
                }
                if self.config.partition_eof
                    && !state.at_eof
                    && fetched.next >= fetched.high_watermark
                {
                    state.at_eof = true;
                    self.eofs.push_back(Error::PartitionEof {
                        topic: key.0.clone(),
                        partition: key.1,
                        offset: fetched.next,
                    });
                }
                Some(Ok(fetched.records))
            }
            Err(Error::OffsetOutOfRange { start, end, .. })
                if self.config.offset_reset != OffsetReset::Error =>
            {
                let to = match self.config.offset_reset {
                    OffsetReset::Earliest => start,
                    _ => end,
                };
                // Without the range (an older broker), resolve it afresh on the next fetch.
                state.position = (to >= 0).then_some(to);
                None
            }
            // The leader is away (a restart, a failover, the whole cluster down): the fetch
            // already retried with backoff; keep polling from the same position, as a Kafka
            // consumer does, instead of ending the application's loop.
            Err(e) if e.is_retriable() => {
                tracing::warn!(topic = key.0, partition = key.1, error = %e, "fetch failed; still retrying");
                None
            }
            Err(e) => Some(Err(e)),
        }
    }
}

impl Stream for Consumer {
    type Item = Result<ConsumerRecord>;

    /// Yields records one at a time; ends only when nothing is assigned.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(r) = this.buffer.pop_front() {
                return Poll::Ready(Some(Ok(r)));
            }
            match ready!(this.poll_fetch(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(records)) => this.buffer.extend(records),
            }
        }
    }
}

/// The offset `to` means in `topic`/`partition`.
async fn resolve(client: &Client, topic: &str, partition: u32, to: SeekTo) -> Result<i64> {
    if let SeekTo::Offset(o) = to {
        return Ok(o);
    }
    let offsets = client.list_offsets(topic, &[partition], to).await?;
    offsets
        .into_iter()
        .find(|o| o.partition == partition)
        .map(|o| o.offset)
        .ok_or_else(|| Error::unknown_partition(topic, partition, 0))
}

/// One long-poll fetch from `position` (resolved from the config's start when `None`).
async fn fetch(
    client: Client,
    config: ConsumerConfig,
    topic: String,
    partition: u32,
    position: Option<i64>,
) -> Result<Fetched> {
    let offset = match position {
        Some(o) => o,
        None => {
            let start = match config.offset_reset {
                OffsetReset::Earliest => SeekTo::Earliest,
                OffsetReset::Latest => SeekTo::Latest,
                OffsetReset::Error => return Err(Error::NoOffset { topic, partition }),
            };
            resolve(&client, &topic, partition, start).await?
        }
    };
    let request = FetchRequest {
        topic: topic.clone(),
        partition,
        offset,
        max_bytes: config.max_bytes,
        max_wait_ms: config.max_wait.as_millis().min(u128::from(u32::MAX)) as u32,
        format: RecordFormat::Batches as i32,
    };
    let response = client
        .call_leader(&topic, partition, |mut c| {
            let request = request.clone();
            async move { c.fetch(request).await }
        })
        .await
        .map_err(|e| match e {
            // The broker names the offset; an older one may not.
            Error::OffsetOutOfRange {
                topic,
                partition,
                offset: -1,
                start,
                end,
                status,
            } => Error::OffsetOutOfRange {
                topic,
                partition,
                offset,
                start,
                end,
                status,
            },
            e => e,
        })?;
    decode(&topic, partition, offset, &response, config.check_crcs)
}

/// Decodes a fetch answer into the records at or after `offset`, and the next offset to fetch.
fn decode(
    topic: &str,
    partition: u32,
    offset: i64,
    response: &FetchResponse,
    check_crcs: bool,
) -> Result<Fetched> {
    let corrupt = |source| Error::CorruptBatch {
        topic: topic.to_owned(),
        partition,
        source,
    };
    let shared_topic: Arc<str> = Arc::from(topic);
    let mut records = Vec::new();
    let mut next = offset;
    let mut whole = true;
    for batch in cairn_batch::batches(&response.batches) {
        let batch = match batch {
            Ok(b) => b,
            // A cut-off tail after whole batches: fetch it again from where they end.
            Err(_) if next > offset => {
                whole = false;
                break;
            }
            Err(e) => return Err(corrupt(e)),
        };
        if check_crcs {
            cairn_batch::check_crc(&batch).map_err(corrupt)?;
        }
        let header = cairn_batch::peek_header(&batch).map_err(corrupt)?;
        for item in cairn_batch::records(&batch) {
            let (record_offset, r) = item.map_err(corrupt)?;
            if record_offset < offset {
                continue;
            }
            records.push(ConsumerRecord {
                topic: Arc::clone(&shared_topic),
                partition,
                offset: record_offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers,
            });
        }
        next = next.max(header.next_offset());
    }
    if whole {
        next = next.max(response.next_offset);
    }
    Ok(Fetched {
        records,
        next,
        high_watermark: response.high_watermark,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_batch::{BatchBuilder, Record};

    /// A stored batch: records `base..base + n`, stamped as the broker would.
    fn stored(base: i64, n: usize) -> Bytes {
        let mut b = BatchBuilder::new();
        for i in 0..n {
            b.push(&Record {
                timestamp: 1000 + i as i64,
                key: None,
                value: Bytes::from(format!("v{}", base + i as i64)),
                headers: vec![("h".into(), Bytes::from_static(b"x"))],
            });
        }
        let mut bytes = b.finish().to_vec();
        cairn_batch::stamp(&mut bytes, base, 0);
        Bytes::from(bytes)
    }

    fn response(batches: &[Bytes], next_offset: i64) -> FetchResponse {
        FetchResponse {
            batches: batches.concat().into(),
            next_offset,
            ..FetchResponse::default()
        }
    }

    #[test]
    fn skips_records_before_the_requested_offset() {
        let r = response(&[stored(10, 5), stored(15, 3)], 18);
        let f = decode("t", 0, 12, &r, true).expect("valid");
        let offsets: Vec<i64> = f.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [12, 13, 14, 15, 16, 17]);
        assert_eq!(f.records[0].value, Bytes::from_static(b"v12"));
        assert_eq!(f.records[0].headers[0].0, "h");
        assert_eq!(f.next, 18);
    }

    #[test]
    fn empty_answer_takes_the_brokers_next_offset() {
        let f = decode("t", 0, 7, &response(&[], 7), true).expect("valid");
        assert!(f.records.is_empty());
        assert_eq!(f.next, 7);
    }

    #[test]
    fn cut_off_tail_is_fetched_again() {
        let second = stored(5, 5);
        let mut buf = stored(0, 5).to_vec();
        buf.extend_from_slice(&second[..second.len() - 3]);
        let r = FetchResponse {
            batches: buf.into(),
            next_offset: 10,
            ..FetchResponse::default()
        };
        let f = decode("t", 0, 0, &r, true).expect("first batch is whole");
        assert_eq!(f.records.len(), 5);
        assert_eq!(f.next, 5, "not the broker's 10: the tail was cut");
    }

    #[test]
    fn corrupt_batches_are_not_delivered() {
        let mut bytes = stored(0, 3).to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let r = response(&[Bytes::from(bytes)], 3);
        assert!(matches!(
            decode("t", 1, 0, &r, true),
            Err(Error::CorruptBatch { partition: 1, .. })
        ));
    }
}
