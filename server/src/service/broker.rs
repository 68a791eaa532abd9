//! `cairn.v1.Broker`: the data plane.
//!
//! Raw batches pass through untouched: a produce validates and appends the producer's bytes, a
//! `RECORD_FORMAT_BATCHES` fetch returns the stored bytes as one `Bytes`. Only the structured
//! formats (for grpcurl and simple clients) encode or decode records.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_proto::v1::{
    self as pb, Acks, Boundary, RecordFormat, broker_server::Broker,
    position::Position as PositionKind,
};
use futures::Stream;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use super::error::{batch_status, invalid_argument, reason, status};
use super::producer_ids::ProducerIds;
use crate::metadata::{Controller, Quorum};
use crate::node::{Node, Partition};

/// Most produce requests of one stream waiting for their ISR at once.
const MAX_PIPELINED: usize = 64;
/// Default fetch size when a request leaves `max_bytes` unset.
const DEFAULT_FETCH_BYTES: usize = 1 << 20;
/// A subscription re-checks that its partition still exists at least this often.
const SUBSCRIBE_RECHECK: Duration = Duration::from_secs(5);

/// The data-plane service.
#[derive(Debug, Clone)]
pub struct BrokerService {
    node: Arc<Node>,
    /// The metadata quorum, for the controller's id.
    quorum: Arc<Quorum>,
    /// Ids for idempotent producers (`InitProducerId`).
    producer_ids: Arc<ProducerIds>,
    /// Open `Subscribe` and `ProduceStream` streams; bounded by `limits.max_open_streams`.
    streams: Arc<Semaphore>,
    /// Cancelled when the broker shuts down, so long-lived streams end and draining finishes.
    shutdown: CancellationToken,
}

impl BrokerService {
    /// A service over `node`, taking producer ids through `controller`; its streams end when
    /// `shutdown` is cancelled.
    pub fn new(node: Arc<Node>, controller: Arc<Controller>, shutdown: CancellationToken) -> Self {
        let streams = Arc::new(Semaphore::new(node.config().limits.max_open_streams));
        Self {
            node,
            quorum: Arc::clone(controller.quorum()),
            producer_ids: Arc::new(ProducerIds::new(controller)),
            streams,
            shutdown,
        }
    }

    fn acquire_stream(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        Arc::clone(&self.streams).try_acquire_owned().map_err(|_| {
            let max = self.node.config().limits.max_open_streams;
            status(
                tonic::Code::ResourceExhausted,
                reason::RESOURCE_EXHAUSTED,
                format!("the broker already serves {max} open streams; close some or retry later"),
                &[("max_open_streams", max.to_string())],
            )
        })
    }

    /// Turns a request's payload into batches ready to append, refusing bad input before any
    /// byte is written.
    fn batches_of(
        &self,
        req: &mut pb::ProduceRequest,
        p: &Partition,
    ) -> Result<Vec<Bytes>, Status> {
        match (req.batches.is_empty(), req.records.is_empty()) {
            (false, false) => Err(invalid_argument(
                "batches",
                "set either `batches` or `records`, not both",
            )),
            (true, true) => Err(invalid_argument(
                "records",
                "a produce request needs at least one record (in `records` or `batches`)",
            )),
            (false, true) => self.split_batches(std::mem::take(&mut req.batches), p),
            (true, false) => {
                let max = self.node.config().limits.max_records_per_request;
                if req.records.len() > max {
                    return Err(invalid_argument(
                        "records",
                        format!(
                            "{} records in one request; the limit is {max}",
                            req.records.len()
                        ),
                    ));
                }
                Ok(vec![convert::encode_records(&req.records)?])
            }
        }
    }

    /// A single batch goes to the log as it is (the log validates it). Several concatenated
    /// batches are all validated first, so that a bad one in the middle writes nothing.
    fn split_batches(&self, raw: Bytes, p: &Partition) -> Result<Vec<Bytes>, Status> {
        let (topic, index) = (p.topic.as_str(), p.index);
        let first = cairn_batch::peek_header(&raw).map_err(|e| batch_status(topic, index, e))?;
        if first.total_len() == raw.len() {
            return Ok(vec![raw]);
        }
        let max = p.config.log_config().max_batch_bytes;
        cairn_batch::batches(&raw)
            .map(|b| {
                let b = b.map_err(|e| batch_status(topic, index, e))?;
                cairn_batch::validate(&b, max).map_err(|e| batch_status(topic, index, e))?;
                Ok(b)
            })
            .collect()
    }

    async fn produce_one(&self, req: pb::ProduceRequest) -> Result<pb::ProduceResponse, Status> {
        self.append_one(req).await?.replicated().await
    }

    /// The first half of a produce: validates and appends, in request order. The second half,
    /// [`Appended::replicated`], waits for the ISR (acks=all) and may overlap with later
    /// appends on the same stream.
    async fn append_one(&self, mut req: pb::ProduceRequest) -> Result<Appended, Status> {
        let acks = Acks::try_from(req.acks)
            .map_err(|_| invalid_argument("acks", format!("unknown acks value {}", req.acks)))?;
        if req.topic == crate::coordinator::OFFSETS_TOPIC {
            return Err(status(
                tonic::Code::InvalidArgument,
                reason::INVALID_TOPIC_NAME,
                format!(
                    "{} is internal: only group coordinators write to it (commit offsets with \
                     cairn.v1.Groups/CommitOffsets)",
                    req.topic
                ),
                &[("topic", req.topic.clone())],
            ));
        }
        let p = self.node.partition(&req.topic, req.partition)?;
        let batches = self.batches_of(&mut req, &p)?;
        if acks == Acks::None {
            // Fire and forget: answer now, append in the background, report failures in the log.
            tokio::spawn(async move {
                for b in batches {
                    if let Err(e) = p.append(b).await {
                        tracing::warn!(error = %e, "acks=none produce failed");
                        return;
                    }
                }
            });
            return Ok(Appended {
                response: pb::ProduceResponse {
                    base_offset: -1,
                    last_offset: -1,
                    record_count: 0,
                    log_start_offset: -1,
                },
                wait: None,
            });
        }
        let all = matches!(acks, Acks::All | Acks::Unspecified);
        // acks=all is refused up front, before anything is written, when the ISR is too small.
        if all {
            p.check_min_isr()?;
        }
        let epoch = p.leader_epoch();
        let mut response = pb::ProduceResponse {
            base_offset: -1,
            ..Default::default()
        };
        for b in batches {
            let info = p.append(b).await?;
            if response.base_offset < 0 {
                response.base_offset = info.base_offset;
            }
            response.last_offset = info.last_offset;
            response.record_count += (info.last_offset - info.base_offset + 1) as u32;
        }
        response.log_start_offset = p.log_start_offset();
        let timeout = Duration::from_millis(self.node.config().replication.acks_all_timeout_ms);
        Ok(Appended {
            response,
            wait: all.then_some((p, epoch, timeout)),
        })
    }

    fn fetch_bytes(&self, requested: u32) -> usize {
        match requested {
            0 => DEFAULT_FETCH_BYTES,
            n => (n as usize).min(self.node.config().limits.max_fetch_bytes),
        }
    }

    fn resolve_position(
        &self,
        p: &Partition,
        position: Option<&pb::Position>,
    ) -> Result<i64, Status> {
        match position.and_then(|pos| pos.position) {
            None => Ok(p.high_watermark()),
            Some(PositionKind::Offset(o)) => Ok(o),
            Some(PositionKind::TimestampMs(ts)) => Ok(p.offset_for_timestamp(ts)?),
            Some(PositionKind::Boundary(b)) => match Boundary::try_from(b) {
                Ok(Boundary::Earliest) => Ok(p.log_start_offset()),
                Ok(Boundary::Latest) => Ok(p.high_watermark()),
                _ => Err(invalid_argument(
                    "position.boundary",
                    "boundary must be BOUNDARY_EARLIEST or BOUNDARY_LATEST",
                )),
            },
        }
    }
}

fn record_format(value: i32) -> Result<RecordFormat, Status> {
    RecordFormat::try_from(value)
        .map_err(|_| invalid_argument("format", format!("unknown record format {value}")))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A produce whose batches are in the leader's log, with what acks=all still waits for.
struct Appended {
    response: pb::ProduceResponse,
    /// For acks=all: the partition, the leader epoch the batches were written at, and how
    /// long to wait for the ISR.
    wait: Option<(Arc<Partition>, i32, Duration)>,
}

impl Appended {
    /// Waits until every in-sync replica has the batches (acks=all); a leader replaced in the
    /// meantime answers NOT_LEADER and acknowledges nothing.
    async fn replicated(self) -> Result<pb::ProduceResponse, Status> {
        if let Some((p, epoch, timeout)) = self.wait {
            p.wait_replicated(self.response.last_offset, epoch, timeout)
                .await?;
        }
        Ok(self.response)
    }
}

#[tonic::async_trait]
impl Broker for BrokerService {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        self.produce_one(request.into_inner())
            .await
            .map(Response::new)
    }

    type ProduceStreamStream = BoxStream<pb::ProduceStreamResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<pb::ProduceStreamRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let permit = self.acquire_stream()?;
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let service = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // Appends happen in stream order; acks=all waits overlap, and answers leave in
            // order, so a producer pipelining batches is not held to one replication round
            // trip per batch.
            let mut waiting = FuturesOrdered::new();
            let mut open = true;
            // Ends once the client closed its side and every answer went out.
            while open || !waiting.is_empty() {
                tokio::select! {
                    next = incoming.message(), if open && waiting.len() < MAX_PIPELINED => {
                        let item = match next {
                            Ok(Some(item)) => item,
                            Ok(None) => {
                                open = false;
                                continue;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                return;
                            }
                        };
                        let correlation_id = item.correlation_id;
                        let appended = match item.request {
                            None => Err(invalid_argument(
                                "request",
                                "each stream message needs a `request`",
                            )),
                            Some(req) => service.append_one(req).await,
                        };
                        waiting.push_back(async move {
                            let answer = match appended {
                                Ok(a) => a.replicated().await,
                                Err(e) => Err(e),
                            };
                            (correlation_id, answer)
                        });
                    }
                    Some((correlation_id, answer)) = waiting.next(), if !waiting.is_empty() => {
                        let response = match answer {
                            Ok(r) => pb::ProduceStreamResponse {
                                correlation_id,
                                response: Some(r),
                                error: None,
                            },
                            Err(s) => pb::ProduceStreamResponse {
                                correlation_id,
                                response: None,
                                error: Some(convert::error_status(&s)),
                            },
                        };
                        if tx.send(Ok(response)).await.is_err() {
                            return;
                        }
                    }
                    () = service.shutdown.cancelled() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let req = request.into_inner();
        let format = record_format(req.format)?;
        let p = self.node.partition(&req.topic, req.partition)?;
        let wait = Duration::from_millis(u64::from(
            req.max_wait_ms
                .min(self.node.config().limits.max_fetch_wait_ms),
        ));
        let max_bytes = self.fetch_bytes(req.max_bytes);
        // A long-poll ends early on shutdown, answering with whatever is there.
        let read = tokio::select! {
            r = p.read(req.offset, max_bytes, wait) => r?,
            () = self.shutdown.cancelled() => p.read_now(req.offset, max_bytes)?,
        };
        let mut response = pb::FetchResponse {
            next_offset: read.next_offset,
            high_watermark: p.high_watermark(),
            log_start_offset: read.log_start_offset,
            ..Default::default()
        };
        if format == RecordFormat::Batches {
            response.batches = read.records;
        } else {
            response.records = convert::decode_records(&read.records, req.offset, format)?;
        }
        Ok(Response::new(response))
    }

    type SubscribeStream = BoxStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = request.into_inner();
        let format = record_format(req.format)?;
        let p = self.node.partition(&req.topic, req.partition)?;
        let mut offset = self.resolve_position(&p, req.start.as_ref())?;
        let max_bytes = self.fetch_bytes(req.max_bytes);
        // Fail fast on a bad start offset rather than on the first read inside the stream.
        p.read_now(offset, 1)?;
        let permit = self.acquire_stream()?;
        let (tx, rx) = mpsc::channel(4);
        let node = Arc::clone(&self.node);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            loop {
                let read = tokio::select! {
                    r = p.read(offset, max_bytes, SUBSCRIBE_RECHECK) => r,
                    () = tx.closed() => return,
                    () = shutdown.cancelled() => return,
                };
                let read = match read {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                if read.records.is_empty() {
                    // Nothing new: make sure the partition was not deleted or its leadership
                    // moved under us; the error tells the subscriber where to go.
                    let e = match node.partition(p.topic.as_str(), p.index) {
                        Ok(current) if Arc::ptr_eq(&current, &p) => continue,
                        Ok(_) => crate::node::NodeError::UnknownTopic(p.topic.to_string()),
                        Err(e) => e,
                    };
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
                let mut chunk = pb::SubscribeResponse {
                    next_offset: read.next_offset,
                    high_watermark: p.high_watermark(),
                    ..Default::default()
                };
                if format == RecordFormat::Batches {
                    chunk.batches = read.records;
                } else {
                    match convert::decode_records(&read.records, offset, format) {
                        Ok(records) => chunk.records = records,
                        Err(s) => {
                            let _ = tx.send(Err(s)).await;
                            return;
                        }
                    }
                }
                offset = read.next_offset;
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let req = request.into_inner();
        let topic = self.node.describe_topic(&req.topic)?;
        let partitions = if req.partitions.is_empty() {
            (0..u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX)).collect()
        } else {
            req.partitions.clone()
        };
        if req.position.as_ref().and_then(|p| p.position).is_none() {
            return Err(invalid_argument(
                "position",
                "set `position` to an offset, a timestamp_ms or a boundary",
            ));
        }
        let mut offsets = Vec::with_capacity(partitions.len());
        for index in partitions {
            let p = self.node.partition(topic.name.as_str(), index)?;
            let offset = self.resolve_position(&p, req.position.as_ref())?;
            offsets.push(pb::PartitionOffset {
                partition: index,
                offset,
                log_start_offset: p.log_start_offset(),
                high_watermark: p.high_watermark(),
            });
        }
        Ok(Response::new(pb::ListOffsetsResponse { offsets }))
    }

    async fn init_producer_id(
        &self,
        _request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        let producer_id = self.producer_ids.next().await?;
        Ok(Response::new(pb::InitProducerIdResponse {
            producer_id,
            producer_epoch: 0,
        }))
    }

    async fn metadata(
        &self,
        request: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::MetadataResponse>, Status> {
        let req = request.into_inner();
        let view = self.node.metadata();
        let describe = |(name, t): (&String, &crate::metadata::TopicRecord)| pb::TopicMetadata {
            name: name.clone(),
            partitions: (0u32..)
                .zip(&t.partitions)
                .map(|(i, p)| convert::partition_metadata(i, p))
                .collect(),
        };
        // Kafka omits unknown topics from metadata rather than failing the whole call.
        let topics = if req.topics.is_empty() {
            view.state.topics().iter().map(describe).collect()
        } else {
            req.topics
                .iter()
                .filter_map(|n| view.state.topics().get_key_value(n.as_str()))
                .map(describe)
                .collect()
        };
        Ok(Response::new(pb::MetadataResponse {
            brokers: convert::brokers(&view.state),
            topics,
            controller_id: self.quorum.known_controller().unwrap_or(0),
            metadata_index: view.applied_index,
        }))
    }
}
