//! One task per partition that sends sealed batches to the partition's leader over a
//! `ProduceStream`, up to `max_in_flight` at a time, and answers each record.
//!
//! The broker answers a stream's requests in order, so responses are matched to the queue of
//! batches in flight. A retriable failure marks the stream broken: nothing more is sent on it,
//! the batches still in flight are awaited, and then the failed ones go back to the front of the
//! queue, in their order, to be sent on a new stream to the (perhaps new) leader after a backoff.
//! Flush markers wait in the same queue and are answered once everything before them is.
//!
//! # Idempotence
//!
//! With [`ProducerConfig::idempotence`](crate::ProducerConfig::idempotence) every batch gets the
//! producer id, epoch and this partition's next sequence when it is first sent, and keeps them
//! across retries: the partition leader writes a retried batch once (answering with the offsets
//! it was first written at) and refuses a batch whose predecessor is missing with
//! `OUT_OF_ORDER_SEQUENCE_NUMBER`, writing nothing. So when batch N fails retriably, batches
//! N+1.. of the same window either were written after it (their retries are duplicates) or
//! are refused as out of order; either way all are retried in order after N, and the log keeps
//! the order of `send` (at most 5 batches in flight, Kafka's rule, so the leader remembers
//! every batch a retry can repeat).
//!
//! A sequence refusal that no earlier failure explains (the partition lost the producer's
//! batches: they expired, or an unclean leader election cut them), and any stamped batch that
//! fails for good (which leaves a hole in the sequence), *break* the partition's sequence. Once
//! the stream drains, the partition starts over under a new producer id of its own at sequence
//! 0: batches the broker refused unwritten are re-stamped and retried; batches whose outcome is
//! unknown (sent under the old id, failed retriably) fail with
//! [`Error::OutOfOrderSequence`], since re-sending them under a new id could duplicate them.

use std::collections::VecDeque;
use std::time::Instant;

use std::sync::Arc;

use bytes::Bytes;
use cairn_batch::BatchBuilder;
use cairn_proto::v1::{
    InitProducerIdRequest, ProduceRequest, ProduceStreamRequest, ProduceStreamResponse,
};
use tokio::sync::{OnceCell, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::accumulator::{Ack, Sealed};
use crate::client::Client;
use crate::error::Error;
use crate::producer::RecordMetadata;

/// What the dispatcher sends a partition's sender.
#[derive(Debug)]
pub(crate) enum SenderMsg {
    /// A batch to send.
    Batch(Sealed),
    /// Answer once every batch sent before this marker has been answered.
    Flush(oneshot::Sender<()>),
}

/// Most batches in flight per partition with idempotence: the broker remembers each
/// producer's last 5 batches, so a retry is always recognised as a duplicate.
pub(crate) const MAX_IN_FLIGHT_IDEMPOTENT: usize = 5;

/// The producer's id and epoch, asked for once (lazily, from any broker) and shared by its
/// partitions.
pub(crate) type SharedProducerId = Arc<OnceCell<(i64, i16)>>;

/// A batch, its records' answers, and how often it has failed.
struct Entry {
    batch: Batch,
    acks: Vec<Ack>,
    attempts: u32,
    /// When it reached the sender: retriable failures are retried until the delivery
    /// timeout has passed since.
    created: Instant,
    /// Idempotence: producer id, epoch and first sequence, fixed when the batch is first sent
    /// and kept across retries.
    stamp: Option<(i64, i16, i32)>,
    /// The broker refused its last attempt unwritten (a sequence refusal).
    unwritten: bool,
}

/// A batch before and after its header is written.
enum Batch {
    /// Records encoded, header not yet written (no sequence yet).
    Open(BatchBuilder),
    /// As sent.
    Encoded(Bytes),
}

impl Entry {
    fn new(sealed: Sealed) -> Self {
        Self {
            batch: Batch::Open(sealed.builder),
            acks: sealed.acks,
            attempts: 0,
            created: Instant::now(),
            stamp: None,
            unwritten: false,
        }
    }

    fn fail(self, e: &Error) {
        for ack in self.acks {
            let _ = ack.tx.send(Err(e.clone()));
        }
    }
}

/// One partition's idempotence state.
struct Idempotence {
    /// The producer's shared id.
    shared: SharedProducerId,
    /// The id and epoch this partition stamps new batches with; `None` until known, and after
    /// a break until the new one is.
    current: Option<(i64, i16)>,
    /// Whether the partition broke its sequence before and so asks for an id of its own.
    own: bool,
    /// The sequence of the next new batch's first record.
    next_seq: i32,
    /// The sequence broke: start over with a new id once the stream drains.
    broken: bool,
}

/// `seq + n`, wrapping past `i32::MAX` to 0 as the broker does.
fn add_seq(seq: i32, n: usize) -> i32 {
    let sum = i64::from(seq) + n as i64;
    i32::try_from(sum % (i64::from(i32::MAX) + 1)).expect("reduced modulo 2^31")
}

/// Asks any broker for a new producer id.
async fn init_producer_id(client: &Client) -> Result<(i64, i16), Error> {
    let r = client
        .call_any(|mut c| async move { c.init_producer_id(InitProducerIdRequest {}).await })
        .await?;
    let epoch = i16::try_from(r.producer_epoch).map_err(|_| Error::Transport {
        message: format!("the broker gave producer epoch {}", r.producer_epoch),
        status: None,
    })?;
    Ok((r.producer_id, epoch))
}

enum Queued {
    Batch(Entry),
    Flush(oneshot::Sender<()>),
}

/// An open `ProduceStream`.
struct Stream {
    requests: mpsc::Sender<ProduceStreamRequest>,
    responses: Streaming<ProduceStreamResponse>,
}

/// A partition sender's settings, from the producer's config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SenderConfig {
    pub acks: cairn_proto::v1::Acks,
    pub max_in_flight: usize,
    /// How long after it reached the sender a batch may still be retried.
    pub delivery_timeout: std::time::Duration,
}

/// Spawns the sender task of `topic`/`partition`; it ends once the returned sender is dropped
/// and every batch is answered. With `idempotence` (the producer's shared id), batches carry
/// sequences and at most [`MAX_IN_FLIGHT_IDEMPOTENT`] are in flight.
pub(crate) fn spawn(
    client: Client,
    topic: String,
    partition: u32,
    config: SenderConfig,
    idempotence: Option<SharedProducerId>,
) -> mpsc::UnboundedSender<SenderMsg> {
    let (tx, rx) = mpsc::unbounded_channel();
    let max_in_flight = match idempotence {
        Some(_) => config.max_in_flight.clamp(1, MAX_IN_FLIGHT_IDEMPOTENT),
        None => config.max_in_flight.max(1),
    };
    let sender = Sender {
        client,
        topic,
        partition,
        acks: config.acks,
        delivery_timeout: config.delivery_timeout,
        max_in_flight,
        idempotence: idempotence.map(|shared| Idempotence {
            shared,
            current: None,
            own: false,
            next_seq: 0,
            broken: false,
        }),
        queue: VecDeque::new(),
        in_flight: VecDeque::new(),
        retry: Vec::new(),
        last_error: None,
        next_correlation: 0,
    };
    tokio::spawn(sender.run(rx));
    tx
}

struct Sender {
    client: Client,
    topic: String,
    partition: u32,
    acks: cairn_proto::v1::Acks,
    /// How long a batch is retried after it reached this sender.
    delivery_timeout: std::time::Duration,
    max_in_flight: usize,
    /// Sequences, when the producer is idempotent.
    idempotence: Option<Idempotence>,
    /// Waiting to be sent, in order.
    queue: VecDeque<Queued>,
    /// Sent on the current stream, awaiting answers in order: correlation id, entry, send time.
    in_flight: VecDeque<(u64, Entry, Instant)>,
    /// Failed retriably on the current stream; re-queued, in order, once it drains.
    retry: Vec<Entry>,
    /// Why the current stream broke; `Some` means broken: send nothing more on it.
    last_error: Option<Error>,
    next_correlation: u64,
}

impl Sender {
    async fn run(mut self, mut input: mpsc::UnboundedReceiver<SenderMsg>) {
        let mut input_open = true;
        let mut stream: Option<Stream> = None;
        let timeout = self.client.config().request_timeout;
        loop {
            if self.in_flight.is_empty()
                && let Some(e) = self.last_error.take()
            {
                // The broken stream has drained: retry its failures on a new one.
                stream = None;
                let attempt = self.retry.first().map_or(1, |e| e.attempts);
                for entry in self.retry.drain(..).rev() {
                    self.queue.push_front(Queued::Batch(entry));
                }
                self.restart_sequence_if_broken();
                self.client
                    .recover(&self.topic, self.partition, &e, attempt)
                    .await;
            }
            while self.in_flight.is_empty() && matches!(self.queue.front(), Some(Queued::Flush(_)))
            {
                if let Some(Queued::Flush(done)) = self.queue.pop_front() {
                    let _ = done.send(());
                }
            }
            if !input_open && self.queue.is_empty() && self.in_flight.is_empty() {
                return;
            }
            if stream.is_none() && matches!(self.queue.front(), Some(Queued::Batch(_))) {
                stream = self.open().await;
                if stream.is_none() {
                    // Opening failed and its batches wait for a retry: take it now, at the top
                    // of the loop. Waiting in the select below would need new input to wake,
                    // and a caller awaiting this very send sends none.
                    continue;
                }
            } else if let Some(s) = &stream
                && self.last_error.is_none()
            {
                self.fill(&s.requests);
            }
            let oldest = self.in_flight.front().map(|(_, _, sent)| *sent + timeout);
            tokio::select! {
                msg = input.recv(), if input_open => match msg {
                    Some(SenderMsg::Batch(batch)) => {
                        self.queue.push_back(Queued::Batch(Entry::new(batch)));
                    }
                    Some(SenderMsg::Flush(done)) => self.queue.push_back(Queued::Flush(done)),
                    None => input_open = false,
                },
                response = next_response(&mut stream), if !self.in_flight.is_empty() => {
                    match response {
                        Ok(Some(r)) => self.answer(r),
                        Ok(None) => self.fail_in_flight(Error::Transport {
                            message: "the broker closed the produce stream".into(),
                            status: None,
                        }),
                        Err(status) => self.fail_in_flight(Error::from_status(status)),
                    }
                }
                () = sleep_until(oldest), if oldest.is_some() => {
                    self.fail_in_flight(Error::Timeout(timeout));
                    stream = None;
                }
            }
        }
    }

    /// Opens a stream to the leader with the first batches already queued on it (the broker
    /// may wait for a first request before it answers the call).
    async fn open(&mut self) -> Option<Stream> {
        if let Err(e) = self.ensure_producer_id().await {
            self.fail_front(e);
            return None;
        }
        let mut client = match self.client.leader_client(&self.topic, self.partition).await {
            Ok(c) => c,
            Err(e) => {
                self.fail_front(e);
                return None;
            }
        };
        let (requests, rx) = mpsc::channel(self.max_in_flight);
        self.fill(&requests);
        let call = client.produce_stream(ReceiverStream::new(rx));
        let timeout = self.client.config().request_timeout;
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(response)) => Some(Stream {
                requests,
                responses: response.into_inner(),
            }),
            Ok(Err(status)) => {
                self.fail_in_flight(Error::from_status(status));
                None
            }
            Err(_) => {
                self.fail_in_flight(Error::Timeout(timeout));
                None
            }
        }
    }

    /// Fails the first queued batch with `e` (retrying it if `e` allows), as if it had been
    /// sent on a stream that failed.
    fn fail_front(&mut self, e: Error) {
        if let Some(Queued::Batch(entry)) = self.queue.pop_front() {
            self.in_flight.push_back((0, entry, Instant::now()));
        }
        self.fail_in_flight(e);
    }

    /// With idempotence, makes sure the partition knows the producer id to stamp: the
    /// producer's shared one, or after a break one of its own.
    async fn ensure_producer_id(&mut self) -> Result<(), Error> {
        let Some(idem) = &mut self.idempotence else {
            return Ok(());
        };
        if idem.current.is_none() {
            let id = if idem.own {
                init_producer_id(&self.client).await?
            } else {
                *idem
                    .shared
                    .get_or_try_init(|| init_producer_id(&self.client))
                    .await?
            };
            idem.current = Some(id);
        }
        Ok(())
    }

    /// The bytes to send for `entry`: encoded once, with its sequence when idempotent (a
    /// retry keeps its sequence; a batch refused unwritten before a break gets a new one).
    fn encode(&mut self, entry: &mut Entry) -> Bytes {
        entry.unwritten = false;
        let stamp = match &mut self.idempotence {
            Some(idem) => {
                let (id, epoch) = idem
                    .current
                    .expect("the producer id is known before a stream opens");
                match entry.stamp {
                    Some(stamp @ (stamped, _, _)) if stamped == id => Some(stamp),
                    _ => {
                        let seq = idem.next_seq;
                        idem.next_seq = add_seq(seq, entry.acks.len());
                        entry.stamp = Some((id, epoch, seq));
                        entry.stamp
                    }
                }
            }
            None => None,
        };
        let batch = std::mem::replace(&mut entry.batch, Batch::Encoded(Bytes::new()));
        let bytes = match (batch, stamp) {
            (Batch::Open(mut builder), Some((id, epoch, seq))) => {
                builder.set_producer(id, epoch, seq);
                builder.finish()
            }
            (Batch::Open(builder), None) => builder.finish(),
            (Batch::Encoded(bytes), Some((id, epoch, seq))) => {
                let header = cairn_batch::peek_header(&bytes).expect("the producer encoded it");
                if (
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence,
                ) == (id, epoch, seq)
                {
                    bytes
                } else {
                    cairn_batch::with_producer(&bytes, id, epoch, seq)
                }
            }
            (Batch::Encoded(bytes), None) => bytes,
        };
        entry.batch = Batch::Encoded(bytes.clone());
        bytes
    }

    /// After a break, once the stream drained: starts the partition's sequence over under a
    /// new id. Queued batches the broker refused unwritten (or never saw) will be stamped
    /// afresh; those sent under the old id with an unknown outcome fail, since re-sending them
    /// under another id could write them twice.
    fn restart_sequence_if_broken(&mut self) {
        let Some(idem) = &mut self.idempotence else {
            return;
        };
        if !idem.broken {
            return;
        }
        let old = idem.current.take().map(|(id, _)| id);
        idem.broken = false;
        idem.own = true;
        idem.next_seq = 0;
        tracing::warn!(
            topic = %self.topic,
            partition = self.partition,
            producer_id = ?old,
            "producer sequence broken; starting over with a new producer id"
        );
        let unknown = Error::OutOfOrderSequence {
            reason: "SEQUENCE_RESET".into(),
            message: "an earlier batch of this partition failed for good, so its producer \
                      sequence started over; this batch was sent before and may or may not \
                      have been written, so it is not sent again"
                .into(),
            status: None,
        };
        let queue = std::mem::take(&mut self.queue);
        for q in queue {
            match q {
                Queued::Batch(entry) if entry.stamp.is_some() && !entry.unwritten => {
                    entry.fail(&unknown);
                }
                other => self.queue.push_back(other),
            }
        }
    }

    /// Marks the partition's sequence broken (and the stream with it).
    fn break_sequence(&mut self, e: &Error) {
        if let Some(idem) = &mut self.idempotence {
            idem.broken = true;
            self.last_error.get_or_insert_with(|| e.clone());
        }
    }

    /// Sends queued batches until the window is full or a flush marker is next.
    fn fill(&mut self, requests: &mpsc::Sender<ProduceStreamRequest>) {
        while self.in_flight.len() < self.max_in_flight
            && matches!(self.queue.front(), Some(Queued::Batch(_)))
        {
            let Some(Queued::Batch(mut entry)) = self.queue.pop_front() else {
                unreachable!("front was just matched as a batch");
            };
            let batches = self.encode(&mut entry);
            self.next_correlation += 1;
            let request = ProduceStreamRequest {
                correlation_id: self.next_correlation,
                request: Some(ProduceRequest {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    acks: self.acks as i32,
                    batches,
                    records: Vec::new(),
                }),
            };
            // The channel holds `max_in_flight` requests and at most that many are in flight,
            // so it is full only if the call has ended; the response side reports that.
            let _ = requests.try_send(request);
            self.in_flight
                .push_back((self.next_correlation, entry, Instant::now()));
        }
    }

    /// Matches a response to the oldest batch in flight.
    fn answer(&mut self, response: ProduceStreamResponse) {
        let Some((correlation, entry, _)) = self.in_flight.pop_front() else {
            return;
        };
        if response.correlation_id != correlation {
            self.in_flight
                .push_front((correlation, entry, Instant::now()));
            self.fail_in_flight(Error::Transport {
                message: format!(
                    "produce stream answered request {} while {correlation} was next",
                    response.correlation_id
                ),
                status: None,
            });
            return;
        }
        match (response.response, response.error) {
            (_, Some(error)) => self.failed(entry, Error::from_stream_error(error)),
            (Some(ok), None) => self.acknowledge(entry.acks, ok.base_offset),
            (None, None) => self.failed(
                entry,
                Error::Transport {
                    message: "empty produce stream response".into(),
                    status: None,
                },
            ),
        }
    }

    fn acknowledge(&self, acks: Vec<Ack>, base_offset: i64) {
        for (i, ack) in acks.into_iter().enumerate() {
            let _ = ack.tx.send(Ok(RecordMetadata {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: base_offset + i as i64,
                timestamp: ack.timestamp,
            }));
        }
    }

    /// One batch failed: retry it once the stream drains, or fail its records.
    fn failed(&mut self, mut entry: Entry, e: Error) {
        entry.attempts += 1;
        let retry = if self.idempotence.is_some() && e.is_sequence_refusal() {
            // Refused unwritten. After an earlier failure in this window that failure explains
            // it (the batch before is missing): retry in order. Otherwise the partition lost
            // the sequence: start over under a new id.
            entry.unwritten = true;
            if self.last_error.is_none() {
                self.break_sequence(&e);
            }
            entry.attempts < self.client.config().retries
        } else if e.is_retriable() {
            // A broker or the whole cluster restarting, a failover: ride it out until the
            // delivery timeout, not a fixed number of attempts.
            entry.created.elapsed() < self.delivery_timeout
        } else {
            self.client.should_retry(&e, entry.attempts)
        };
        if retry {
            self.retry.push(entry);
            self.last_error.get_or_insert(e);
        } else {
            if entry.stamp.is_some() {
                // Its sequences may be missing from the log: later batches would be gaps.
                self.break_sequence(&e);
            }
            entry.fail(&e);
        }
    }

    /// The stream failed: every batch in flight failed with `e`.
    fn fail_in_flight(&mut self, e: Error) {
        while let Some((_, entry, _)) = self.in_flight.pop_front() {
            self.failed(entry, e.clone());
        }
        // Even if nothing is retried, the stream is unusable.
        self.last_error.get_or_insert(e);
    }
}

async fn next_response(
    stream: &mut Option<Stream>,
) -> Result<Option<ProduceStreamResponse>, tonic::Status> {
    match stream {
        Some(s) => s.responses.message().await,
        None => Ok(None),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => futures::future::pending().await,
    }
}
