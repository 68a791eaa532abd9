//! One task per partition that sends sealed batches to the partition's leader over a
//! `ProduceStream`, up to `max_in_flight` at a time, and answers each record.
//!
//! The broker answers a stream's requests in order, so responses are matched to the queue of
//! batches in flight. A retriable failure marks the stream broken: nothing more is sent on it,
//! the batches still in flight are awaited, and then the failed ones go back to the front of the
//! queue, in their order, to be sent on a new stream to the (perhaps new) leader after a backoff.
//! Flush markers wait in the same queue and are answered once everything before them is.

use std::collections::VecDeque;
use std::time::Instant;

use cairn_proto::v1::{ProduceRequest, ProduceStreamRequest, ProduceStreamResponse};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::accumulator::Sealed;
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

/// A batch and how often it has failed.
struct Entry {
    batch: Sealed,
    attempts: u32,
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

/// Spawns the sender task of `topic`/`partition`; it ends once the returned sender is dropped
/// and every batch is answered.
pub(crate) fn spawn(
    client: Client,
    topic: String,
    partition: u32,
    acks: cairn_proto::v1::Acks,
    max_in_flight: usize,
) -> mpsc::UnboundedSender<SenderMsg> {
    let (tx, rx) = mpsc::unbounded_channel();
    let sender = Sender {
        client,
        topic,
        partition,
        acks,
        max_in_flight: max_in_flight.max(1),
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
    max_in_flight: usize,
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
                        self.queue.push_back(Queued::Batch(Entry { batch, attempts: 0 }));
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
        let mut client = match self.client.leader_client(&self.topic, self.partition).await {
            Ok(c) => c,
            Err(e) => {
                if let Some(Queued::Batch(entry)) = self.queue.pop_front() {
                    self.in_flight.push_back((0, entry, Instant::now()));
                }
                self.fail_in_flight(e);
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

    /// Sends queued batches until the window is full or a flush marker is next.
    fn fill(&mut self, requests: &mpsc::Sender<ProduceStreamRequest>) {
        while self.in_flight.len() < self.max_in_flight
            && matches!(self.queue.front(), Some(Queued::Batch(_)))
        {
            let Some(Queued::Batch(entry)) = self.queue.pop_front() else {
                unreachable!("front was just matched as a batch");
            };
            self.next_correlation += 1;
            let request = ProduceStreamRequest {
                correlation_id: self.next_correlation,
                request: Some(ProduceRequest {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    acks: self.acks as i32,
                    batches: entry.batch.bytes.clone(),
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
            (Some(ok), None) => self.acknowledge(entry.batch, ok.base_offset),
            (None, None) => self.failed(
                entry,
                Error::Transport {
                    message: "empty produce stream response".into(),
                    status: None,
                },
            ),
        }
    }

    fn acknowledge(&self, batch: Sealed, base_offset: i64) {
        for (i, ack) in batch.acks.into_iter().enumerate() {
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
        if self.client.should_retry(&e, entry.attempts) {
            self.retry.push(entry);
            self.last_error.get_or_insert(e);
        } else {
            for ack in entry.batch.acks {
                let _ = ack.tx.send(Err(e.clone()));
            }
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
