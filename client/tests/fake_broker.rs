//! The client against an in-process fake broker: one broker, topic `t` with two partitions,
//! logs kept in memory. Checks batching, ordering, NOT_LEADER retries and fetch decoding end to
//! end through real gRPC, without the real broker (which `tests/` exercises).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cairn_client::{
    Client, ConsumerConfig, Error, OffsetReset, ProducerConfig, ProducerRecord, SeekTo,
    partition_for_key,
};
use cairn_proto::v1::broker_server::{Broker, BrokerServer};
use cairn_proto::v1::position::Position as PositionKind;
use cairn_proto::v1::*;
use futures::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};

const PARTITIONS: u32 = 2;

#[derive(Default)]
struct Log {
    /// Stamped batches in offset order.
    batches: Vec<(i64, Bytes)>,
    end: i64,
}

#[derive(Default)]
struct State {
    logs: Mutex<HashMap<u32, Log>>,
    /// Stream requests still to answer with NOT_LEADER.
    refuse: AtomicU32,
    /// Produce requests accepted.
    requests: AtomicU32,
    addr: Mutex<String>,
}

#[derive(Clone, Default)]
struct Fake(Arc<State>);

impl Fake {
    fn append(&self, req: &ProduceRequest) -> Result<ProduceResponse, ErrorStatus> {
        let mut logs = self.0.logs.lock().unwrap();
        let log = logs.entry(req.partition).or_default();
        let base = log.end;
        for batch in cairn_batch::batches(&req.batches) {
            let batch = batch.map_err(|e| error(Code::InvalidArgument, "INVALID_BATCH", &e))?;
            let header = cairn_batch::validate(&batch, 8 << 20)
                .map_err(|e| error(Code::InvalidArgument, "CORRUPT_BATCH", &e))?;
            let mut stamped = batch.to_vec();
            cairn_batch::stamp(&mut stamped, log.end, 0);
            log.batches.push((log.end, stamped.into()));
            log.end += i64::from(header.record_count);
        }
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        Ok(ProduceResponse {
            base_offset: base,
            last_offset: log.end - 1,
            record_count: (log.end - base) as u32,
            log_start_offset: 0,
        })
    }

    fn not_leader(&self) -> ErrorStatus {
        let addr = self.0.addr.lock().unwrap().clone();
        ErrorStatus {
            code: Code::FailedPrecondition as i32,
            message: "not the leader".into(),
            reason: "NOT_LEADER".into(),
            metadata: [
                ("leader_id".into(), "1".into()),
                ("leader_addr".into(), addr),
            ]
            .into(),
        }
    }
}

fn error(code: Code, reason: &str, e: &dyn std::fmt::Display) -> ErrorStatus {
    ErrorStatus {
        code: code as i32,
        message: e.to_string(),
        reason: reason.into(),
        metadata: HashMap::new(),
    }
}

#[tonic::async_trait]
impl Broker for Fake {
    async fn produce(
        &self,
        _: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        Err(Status::unimplemented("use ProduceStream"))
    }

    type ProduceStreamStream = ReceiverStream<Result<ProduceStreamResponse, Status>>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<ProduceStreamRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(r)) = requests.next().await {
                let req = r.request.unwrap_or_default();
                let outcome = if fake
                    .0
                    .refuse
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    Err(fake.not_leader())
                } else {
                    fake.append(&req)
                };
                let (response, error) = match outcome {
                    Ok(ok) => (Some(ok), None),
                    Err(e) => (None, Some(e)),
                };
                let answer = ProduceStreamResponse {
                    correlation_id: r.correlation_id,
                    response,
                    error,
                };
                if tx.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let req = request.into_inner();
        let (batches, end) = {
            let logs = self.0.logs.lock().unwrap();
            let empty = Log::default();
            let log = logs.get(&req.partition).unwrap_or(&empty);
            if req.offset > log.end {
                let meta = [
                    ("log_start_offset".to_owned(), "0".to_owned()),
                    ("high_watermark".to_owned(), log.end.to_string()),
                ];
                return Err(Status::with_error_details(
                    Code::OutOfRange,
                    "offset out of range",
                    ErrorDetails::with_error_info("OFFSET_OUT_OF_RANGE", "cairn.v1", meta),
                ));
            }
            let mut out = Vec::new();
            for (i, (_, b)) in log.batches.iter().enumerate() {
                let next = log.batches.get(i + 1).map_or(log.end, |(n, _)| *n);
                if next > req.offset {
                    out.extend_from_slice(b);
                }
            }
            (out, log.end)
        };
        if batches.is_empty() {
            tokio::time::sleep(Duration::from_millis(u64::from(req.max_wait_ms.min(50)))).await;
        }
        Ok(Response::new(FetchResponse {
            records: vec![],
            batches: batches.into(),
            next_offset: end.max(req.offset),
            high_watermark: end,
            log_start_offset: 0,
        }))
    }

    type SubscribeStream = futures::stream::Empty<Result<SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        _: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_offsets(
        &self,
        request: Request<ListOffsetsRequest>,
    ) -> Result<Response<ListOffsetsResponse>, Status> {
        let req = request.into_inner();
        let logs = self.0.logs.lock().unwrap();
        let offsets = req
            .partitions
            .iter()
            .map(|&p| {
                let end = logs.get(&p).map_or(0, |l| l.end);
                let offset = match req.position.and_then(|p| p.position) {
                    Some(PositionKind::Offset(o)) => o,
                    Some(PositionKind::Boundary(b)) if b == Boundary::Earliest as i32 => 0,
                    _ => end,
                };
                PartitionOffset {
                    partition: p,
                    offset,
                    log_start_offset: 0,
                    high_watermark: end,
                }
            })
            .collect();
        Ok(Response::new(ListOffsetsResponse { offsets }))
    }

    async fn init_producer_id(
        &self,
        _: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        Ok(Response::new(InitProducerIdResponse {
            producer_id: 1,
            producer_epoch: 0,
        }))
    }

    async fn metadata(
        &self,
        _: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        let addr = self.0.addr.lock().unwrap().clone();
        Ok(Response::new(MetadataResponse {
            brokers: vec![BrokerInfo {
                id: 1,
                address: addr,
                alive: true,
            }],
            topics: vec![TopicMetadata {
                name: "t".into(),
                partitions: (0..PARTITIONS)
                    .map(|p| PartitionMetadata {
                        partition: p,
                        leader_id: 1,
                        replicas: vec![1],
                        isr: vec![1],
                        leader_epoch: 0,
                    })
                    .collect(),
            }],
            controller_id: 1,
            metadata_index: 1,
        }))
    }
}

async fn start() -> (Fake, Client) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = Fake::default();
    *fake.0.addr.lock().unwrap() = addr.clone();
    let server = tonic::transport::Server::builder()
        .add_service(BrokerServer::new(fake.clone()))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    let client = Client::builder()
        .brokers([addr])
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .build()
        .await
        .expect("connect to the fake");
    (fake, client)
}

#[tokio::test]
async fn produce_batches_in_order_and_consume_back() {
    let (fake, client) = start().await;
    let producer = client.producer(ProducerConfig::default());
    let sends: Vec<_> = (0..1000)
        .map(|i| {
            producer.send(ProducerRecord::new("t", format!("v{i}")).key(format!("k{}", i % 7)))
        })
        .collect();
    let acks = futures::future::try_join_all(sends)
        .await
        .expect("all acked");
    producer.flush().await.unwrap();
    assert!(
        fake.0.requests.load(Ordering::Relaxed) <= 10,
        "1000 records sent together should share a few batches"
    );

    let mut next = [0i64; PARTITIONS as usize];
    for (i, ack) in acks.iter().enumerate() {
        let key = format!("k{}", i % 7);
        assert_eq!(ack.partition, partition_for_key(key.as_bytes(), PARTITIONS));
        assert_eq!(
            ack.offset, next[ack.partition as usize],
            "dense, in send order"
        );
        next[ack.partition as usize] += 1;
    }

    let mut consumer = client.consumer(ConsumerConfig::default());
    consumer.assign("t", 0..PARTITIONS);
    let mut seen = HashMap::new();
    while seen.len() < 1000 {
        let r = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("records arrive")
            .expect("assigned")
            .expect("no error");
        seen.insert((r.partition, r.offset), r.value);
    }
    for (i, ack) in acks.iter().enumerate() {
        assert_eq!(
            seen[&(ack.partition, ack.offset)],
            Bytes::from(format!("v{i}"))
        );
    }
    assert_eq!(consumer.position("t", 0), Some(next[0]));

    // Seeking into the middle of a batch yields exactly from there.
    let from = next[1] / 2;
    consumer.seek("t", 1, SeekTo::Offset(from)).await.unwrap();
    consumer.unassign("t", [0]);
    let batch = consumer.next_batch().await.unwrap();
    assert_eq!(batch[0].offset, from);
}

#[tokio::test]
async fn not_leader_answers_are_retried() {
    let (fake, client) = start().await;
    fake.0.refuse.store(3, Ordering::SeqCst);
    let producer = client.producer(ProducerConfig {
        max_in_flight: 1,
        ..ProducerConfig::default()
    });
    let first = producer.send(ProducerRecord::new("t", "a").partition(0));
    let second = producer.send(ProducerRecord::new("t", "b").partition(0));
    let (a, b) = futures::future::join(first, second).await;
    assert_eq!(a.unwrap().offset, 0);
    assert_eq!(b.unwrap().offset, 1);
}

#[tokio::test]
async fn errors_surface_per_record() {
    let (_fake, client) = start().await;
    let producer = client.producer(ProducerConfig::default());
    let e = producer
        .send(ProducerRecord::new("nope", "x"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnknownTopic { .. }), "{e:?}");
    let e = producer
        .send(ProducerRecord::new("t", "x").partition(9))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnknownPartition { .. }), "{e:?}");

    let mut consumer = client.consumer(ConsumerConfig::default().offset_reset(OffsetReset::Error));
    consumer.seek("t", 0, SeekTo::Offset(100)).await.unwrap();
    let e = consumer.next_batch().await.unwrap_err();
    // The fake, like an older broker, names neither partition nor offset: the client does.
    assert!(
        matches!(
            e,
            Error::OffsetOutOfRange {
                ref topic,
                partition: 0,
                offset: 100,
                start: 0,
                end: 0,
                ..
            } if topic == "t"
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("offset 100"), "{e}");
    assert!(e.to_string().contains("t-0"), "{e}");
}

#[tokio::test]
async fn oversized_records_fail_before_sending() {
    let (fake, client) = start().await;
    let producer = client.producer(ProducerConfig::default());
    let e = producer
        .send(ProducerRecord::new("t", vec![0u8; 2 << 20]).partition(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::RecordTooLarge {
                partition: 1,
                max: 1_048_576,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("1048576"), "{e}");
    assert_eq!(
        fake.0.requests.load(Ordering::Relaxed),
        0,
        "nothing was sent"
    );
    // The producer goes on.
    let ok = producer.send(ProducerRecord::new("t", "small").partition(1));
    assert_eq!(ok.await.unwrap().offset, 0);
}

#[tokio::test]
async fn end_of_partition_is_reported_once_per_end() {
    let (_fake, client) = start().await;
    let producer = client.producer(ProducerConfig::default());
    for i in 0..3 {
        producer
            .send(ProducerRecord::new("t", format!("v{i}")).partition(0))
            .await
            .unwrap();
    }
    let mut consumer = client.consumer(ConsumerConfig::default().partition_eof(true));
    consumer.assign("t", [0]);
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match consumer.next().await.expect("assigned") {
            Ok(r) => seen.push(format!("{}", r.offset)),
            Err(Error::PartitionEof {
                topic,
                partition,
                offset,
            }) => seen.push(format!("eof {topic}-{partition}@{offset}")),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(seen, ["0", "1", "2", "eof t-0@3"]);
    // Once per end: a new record, then a new notice.
    producer
        .send(ProducerRecord::new("t", "v3").partition(0))
        .await
        .unwrap();
    assert_eq!(consumer.next().await.unwrap().unwrap().offset, 3);
    assert!(matches!(
        consumer.next().await.unwrap(),
        Err(Error::PartitionEof { offset: 4, .. })
    ));
}

#[tokio::test]
async fn pipelined_batches_survive_refusals() {
    let (fake, client) = start().await;
    fake.0.refuse.store(2, Ordering::SeqCst);
    let producer = client.producer(ProducerConfig {
        batch_bytes: 200,
        ..ProducerConfig::default()
    });
    let sends: Vec<_> = (0..50)
        .map(|i| producer.send(ProducerRecord::new("t", format!("value-{i:04}")).partition(1)))
        .collect();
    let acks = futures::future::try_join_all(sends)
        .await
        .expect("all acked");
    producer.flush().await.unwrap();
    let mut offsets: Vec<i64> = acks.iter().map(|a| a.offset).collect();
    offsets.sort_unstable();
    assert_eq!(
        offsets,
        (0..50).collect::<Vec<_>>(),
        "each record written once"
    );
    assert!(
        fake.0.requests.load(Ordering::Relaxed) > 5,
        "several batches"
    );
}
