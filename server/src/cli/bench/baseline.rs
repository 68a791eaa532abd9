//! The do-nothing broker behind `cairn bench --baseline`: an in-process `cairn.v1.Broker` on
//! 127.0.0.1:0 that touches no storage, served with the real server's HTTP/2 settings and
//! `TCP_NODELAY` on every accepted socket.
//!
//! - `Produce` / `ProduceStream` read the batch headers for the record count and answer with
//!   fake, increasing offsets.
//! - `Fetch` answers with prebuilt, valid encoded batches (`cairn_batch`) of about the
//!   requested size, restamped with the requested base offset (one copy per fetch, 8 bytes
//!   written per batch) so the client's decoding sees a consistent log.
//! - `Metadata` names one broker (itself) leading every partition of the bench topic;
//!   `ListOffsets` says every log starts at 0 and ends far away.
//!
//! So the baseline measures gRPC, HTTP/2 and the client carrying the same bytes as a real run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use cairn_batch::Record;
use cairn_proto::v1::broker_server::{Broker, BrokerServer};
use cairn_proto::v1::position::Position as PositionKind;
use cairn_proto::v1::{
    Boundary, BrokerInfo, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, PartitionMetadata, PartitionOffset, ProduceRequest,
    ProduceResponse, ProduceStreamRequest, ProduceStreamResponse, SubscribeRequest,
    SubscribeResponse, TopicMetadata,
};
use futures::{Stream, StreamExt};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// The real server's flow-control windows and message limit (`service/mod.rs`).
const STREAM_WINDOW: u32 = 16 << 20;
const CONNECTION_WINDOW: u32 = 32 << 20;
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// The high watermark the null broker claims: far enough that no run reaches it.
const FAR_END: i64 = 1 << 50;
/// Bytes of one prebuilt batch, as the producer's default batch size.
const BATCH_BYTES: usize = 1 << 20;
const BROKER_ID: u32 = 1;

/// A running null broker, on a runtime of its own so that it does not share the load tool's
/// workers (a real broker is another process); shut down when dropped.
pub(crate) struct NullServer {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl NullServer {
    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for NullServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Not `drop`: this may run inside the load tool's runtime, where blocking is banned.
            runtime.shutdown_background();
        }
    }
}

/// Starts a null broker hosting `topic` with `partitions` partitions, whose fetches carry
/// records of `record_size` bytes.
///
/// # Errors
///
/// If its runtime cannot start or 127.0.0.1:0 cannot be bound.
pub(crate) async fn start(
    topic: &str,
    partitions: u32,
    record_size: usize,
) -> anyhow::Result<NullServer> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn-baseline")
        .build()
        .context("starting the baseline server's runtime")?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let topic = topic.to_owned();
    runtime.spawn(async move {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let _ = tx.send(Ok(addr));
        let state = State {
            addr: addr.to_string(),
            topic,
            offsets: (0..partitions).map(|_| AtomicI64::new(0)).collect(),
            prebuilt: Mutex::new(HashMap::new()),
            record_size,
        };
        if let Err(e) = serve(listener, state).await {
            eprintln!("baseline server failed: {e}");
        }
    });
    let addr = rx
        .await
        .context("the baseline server did not start")?
        .context("binding the baseline server")?;
    Ok(NullServer {
        addr,
        runtime: Some(runtime),
    })
}

/// Serves `state` with the real server's HTTP/2 settings until the runtime stops.
async fn serve(
    listener: tokio::net::TcpListener,
    state: State,
) -> Result<(), tonic::transport::Error> {
    let broker = BrokerServer::new(NullBroker {
        state: Arc::new(state),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // `Server::tcp_nodelay` is ignored by `serve_with_incoming` (tonic's own docs say so):
    // the accepted sockets get TCP_NODELAY from `TcpIncoming` instead.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .add_service(broker)
        .serve_with_incoming(incoming)
        .await
}

#[derive(Clone)]
struct NullBroker {
    state: Arc<State>,
}

struct State {
    addr: String,
    topic: String,
    /// Next fake offset per partition.
    offsets: Vec<AtomicI64>,
    /// Fetch answers by requested size, built once.
    prebuilt: Mutex<HashMap<u32, Arc<Prebuilt>>>,
    /// Value bytes of each prebuilt record (`--record-size`).
    record_size: usize,
}

/// Encoded batches filling a fetch of a given size.
struct Prebuilt {
    bytes: Bytes,
    /// Start of each batch in `bytes`, and its record count.
    batches: Vec<(usize, i64)>,
}

impl Prebuilt {
    fn build(max_bytes: u32, record_size: usize) -> Self {
        let max_bytes = (max_bytes as usize).max(1);
        let record = Record {
            timestamp: 0,
            key: None,
            value: Bytes::from(vec![b'x'; record_size]),
            headers: Vec::new(),
        };
        let per_batch = (BATCH_BYTES.min(max_bytes) / (record_size + 16)).max(1);
        let one = cairn_batch::encode(&vec![record; per_batch]);
        let count = (max_bytes / one.len()).max(1);
        let mut bytes = BytesMut::with_capacity(one.len() * count);
        let mut batches = Vec::with_capacity(count);
        for _ in 0..count {
            batches.push((bytes.len(), per_batch as i64));
            bytes.extend_from_slice(&one);
        }
        Self {
            bytes: bytes.freeze(),
            batches,
        }
    }

    /// A copy whose batches start at `offset`; returns it and the next offset.
    fn at(&self, offset: i64) -> (Bytes, i64) {
        let mut out = BytesMut::from(&self.bytes[..]);
        let mut next = offset;
        for &(start, count) in &self.batches {
            cairn_batch::stamp(&mut out[start..], next, 0);
            next += count;
        }
        (out.freeze(), next)
    }
}

impl State {
    fn produce(&self, request: &ProduceRequest) -> Result<ProduceResponse, Status> {
        let counter = self
            .offsets
            .get(request.partition as usize)
            .ok_or_else(|| Status::not_found("no such partition"))?;
        let mut count = request.records.len() as i64;
        for batch in cairn_batch::batches(&request.batches) {
            let batch = batch.map_err(|e| Status::invalid_argument(e.to_string()))?;
            let header = cairn_batch::peek_header(&batch)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            count += i64::from(header.record_count);
        }
        let base = counter.fetch_add(count, Ordering::Relaxed);
        Ok(ProduceResponse {
            base_offset: base,
            last_offset: base + count - 1,
            record_count: count as u32,
            log_start_offset: 0,
        })
    }

    fn prebuilt(&self, max_bytes: u32) -> Arc<Prebuilt> {
        let mut cache = self.prebuilt.lock().expect("prebuilt cache lock poisoned");
        cache
            .entry(max_bytes)
            .or_insert_with(|| Arc::new(Prebuilt::build(max_bytes, self.record_size)))
            .clone()
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Broker for NullBroker {
    async fn produce(
        &self,
        request: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        self.state.produce(request.get_ref()).map(Response::new)
    }

    type ProduceStreamStream = BoxStream<ProduceStreamResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceStreamRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let state = self.state.clone();
        let answers = request.into_inner().map(move |item| {
            let item = item?;
            let request = item.request.unwrap_or_default();
            let response = state.produce(&request)?;
            Ok(ProduceStreamResponse {
                correlation_id: item.correlation_id,
                response: Some(response),
                error: None,
            })
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let request = request.into_inner();
        let (batches, next_offset) = self.state.prebuilt(request.max_bytes).at(request.offset);
        Ok(Response::new(FetchResponse {
            records: Vec::new(),
            batches,
            next_offset,
            high_watermark: FAR_END,
            log_start_offset: 0,
        }))
    }

    type SubscribeStream = BoxStream<SubscribeResponse>;

    async fn subscribe(
        &self,
        _request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented(
            "the baseline broker does not subscribe",
        ))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let request = request.into_inner();
        let offset = match request.position.and_then(|p| p.position) {
            Some(PositionKind::Offset(o)) => o,
            Some(PositionKind::Boundary(b)) if b == Boundary::Latest as i32 => FAR_END,
            _ => 0,
        };
        let partitions = if request.partitions.is_empty() {
            (0..self.state.offsets.len() as u32).collect()
        } else {
            request.partitions
        };
        let offsets = partitions
            .into_iter()
            .map(|partition| PartitionOffset {
                partition,
                offset,
                log_start_offset: 0,
                high_watermark: FAR_END,
            })
            .collect();
        Ok(Response::new(ListOffsetsResponse { offsets }))
    }

    async fn init_producer_id(
        &self,
        _request: Request<cairn_proto::v1::InitProducerIdRequest>,
    ) -> Result<Response<cairn_proto::v1::InitProducerIdResponse>, Status> {
        // Stores nothing, so checks no sequence: any id will do.
        Ok(Response::new(cairn_proto::v1::InitProducerIdResponse {
            producer_id: 0,
            producer_epoch: 0,
        }))
    }

    async fn metadata(
        &self,
        _request: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        let partitions = (0..self.state.offsets.len() as u32)
            .map(|partition| PartitionMetadata {
                partition,
                leader_id: BROKER_ID,
                replicas: vec![BROKER_ID],
                isr: vec![BROKER_ID],
                leader_epoch: 0,
            })
            .collect();
        Ok(Response::new(MetadataResponse {
            brokers: vec![BrokerInfo {
                id: BROKER_ID,
                address: self.state.addr.clone(),
                alive: true,
            }],
            topics: vec![TopicMetadata {
                name: self.state.topic.clone(),
                partitions,
            }],
            controller_id: BROKER_ID,
            metadata_index: 1,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prebuilt_fetches_decode_at_the_requested_offset() {
        let prebuilt = Prebuilt::build(256 << 10, 1000);
        let (bytes, next) = prebuilt.at(1000);
        assert!(bytes.len() <= 256 << 10, "{}", bytes.len());
        let mut expected = 1000;
        for batch in cairn_batch::batches(&bytes) {
            let batch = batch.unwrap();
            cairn_batch::check_crc(&batch).unwrap();
            for item in cairn_batch::records(&batch) {
                let (offset, record) = item.unwrap();
                assert_eq!(offset, expected);
                assert_eq!(record.value.len(), 1000);
                expected += 1;
            }
        }
        assert_eq!(next, expected);
        assert!(next > 1000);
    }
}
