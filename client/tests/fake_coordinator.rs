//! The group consumer against in-process fake coordinators whose every heartbeat answer the
//! test writes by hand: the paths a real broker takes seconds (or a crash) to show. Fencing
//! loses partitions without a commit and rejoins with the same id; a revocation is committed
//! before its release is reported; `NOT_COORDINATOR` moves the stream to the named broker
//! with the same id and epoch; a silent coordinator costs the partitions after the session
//! timeout.
//!
//! Each fake is a broker holding topic `t` (two empty partitions) and a `Groups` service that
//! passes every heartbeat and commit to the test, in arrival order, on one channel.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::{
    Client, GroupConsumer, GroupConsumerConfig, GroupEvent, OffsetReset, TopicPartition,
};
use cairn_proto::v1::broker_server::{Broker, BrokerServer};
use cairn_proto::v1::groups_server::{Groups, GroupsServer};
use cairn_proto::v1::*;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream, UnboundedReceiverStream};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};

const WAIT: Duration = Duration::from_secs(10);

/// What reached a fake coordinator.
enum Seen {
    /// A heartbeat, and where its answer goes (an `Err` ends the stream with that status).
    Heartbeat(
        GroupHeartbeatRequest,
        oneshot::Sender<Result<GroupHeartbeatResponse, Status>>,
    ),
    /// A commit (answered at once).
    Commit(CommitOffsetsRequest),
}

#[derive(Clone)]
struct Fake {
    addr: Arc<Mutex<String>>,
    /// The coordinator FindCoordinator names.
    coordinator: Arc<Mutex<String>>,
    seen: mpsc::UnboundedSender<Seen>,
}

#[tonic::async_trait]
impl Groups for Fake {
    async fn find_coordinator(
        &self,
        _: Request<FindCoordinatorRequest>,
    ) -> Result<Response<FindCoordinatorResponse>, Status> {
        Ok(Response::new(FindCoordinatorResponse {
            coordinator_id: 1,
            address: self.coordinator.lock().unwrap().clone(),
            partition: 0,
        }))
    }

    type HeartbeatStream = UnboundedReceiverStream<Result<GroupHeartbeatResponse, Status>>;

    async fn heartbeat(
        &self,
        request: Request<Streaming<GroupHeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(hb)) = inbound.next().await {
                let (reply, answer) = oneshot::channel();
                if seen.send(Seen::Heartbeat(hb, reply)).is_err() {
                    return;
                }
                let Ok(answer) = answer.await else { return };
                let end = answer.is_err();
                if tx.send(answer).is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn commit_offsets(
        &self,
        request: Request<CommitOffsetsRequest>,
    ) -> Result<Response<CommitOffsetsResponse>, Status> {
        let _ = self.seen.send(Seen::Commit(request.into_inner()));
        Ok(Response::new(CommitOffsetsResponse::default()))
    }

    async fn fetch_offsets(
        &self,
        _: Request<FetchOffsetsRequest>,
    ) -> Result<Response<FetchOffsetsResponse>, Status> {
        Ok(Response::new(FetchOffsetsResponse::default()))
    }
}

#[tonic::async_trait]
impl Broker for Fake {
    async fn produce(
        &self,
        _: Request<ProduceRequest>,
    ) -> Result<Response<ProduceResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    type ProduceStreamStream = ReceiverStream<Result<ProduceStreamResponse, Status>>;

    async fn produce_stream(
        &self,
        _: Request<Streaming<ProduceStreamRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    /// Nothing stored: waits a little and answers empty.
    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let req = request.into_inner();
        tokio::time::sleep(Duration::from_millis(u64::from(req.max_wait_ms.min(20)))).await;
        Ok(Response::new(FetchResponse {
            next_offset: req.offset,
            ..Default::default()
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
        let offsets = request
            .into_inner()
            .partitions
            .into_iter()
            .map(|partition| PartitionOffset {
                partition,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(ListOffsetsResponse { offsets }))
    }

    async fn init_producer_id(
        &self,
        _: Request<InitProducerIdRequest>,
    ) -> Result<Response<InitProducerIdResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn metadata(
        &self,
        _: Request<MetadataRequest>,
    ) -> Result<Response<MetadataResponse>, Status> {
        let addr = self.addr.lock().unwrap().clone();
        Ok(Response::new(MetadataResponse {
            brokers: vec![BrokerInfo {
                id: 1,
                address: addr,
                alive: true,
            }],
            topics: vec![TopicMetadata {
                name: "t".into(),
                partitions: (0..2)
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

/// A fake broker and coordinator on a free port; what reaches its coordinator comes out of
/// the receiver.
async fn fake() -> (Fake, mpsc::UnboundedReceiver<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (seen, rx) = mpsc::unbounded_channel();
    let fake = Fake {
        addr: Arc::new(Mutex::new(addr.clone())),
        coordinator: Arc::new(Mutex::new(addr)),
        seen,
    };
    let server = tonic::transport::Server::builder()
        .add_service(BrokerServer::new(fake.clone()))
        .add_service(GroupsServer::new(fake.clone()))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    (fake, rx)
}

async fn client(fake: &Fake) -> Client {
    let addr = fake.addr.lock().unwrap().clone();
    Client::builder()
        .brokers([addr])
        .retry_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .build()
        .await
        .expect("connect to the fake")
}

fn member(client: &Client, config: GroupConsumerConfig) -> GroupConsumer {
    let mut consumer = client.group_consumer(
        GroupConsumerConfig {
            max_wait: Duration::from_millis(20),
            ..config
        }
        .offset_reset(OffsetReset::Earliest),
    );
    consumer.subscribe(["t"]);
    consumer
}

fn tps(parts: &[u32]) -> Vec<TopicPartition> {
    parts.iter().map(|&p| TopicPartition::new("t", p)).collect()
}

fn answer(member_id: &str, epoch: i32, parts: &[u32]) -> Result<GroupHeartbeatResponse, Status> {
    Ok(GroupHeartbeatResponse {
        member_id: member_id.into(),
        member_epoch: epoch,
        heartbeat_interval_ms: 60_000,
        assignment: Some(OwnedPartitions {
            topics: vec![TopicPartitions {
                topic: "t".into(),
                partitions: parts.to_vec(),
            }],
        }),
        error: None,
        // 0: not said, so the consumer keeps the session timeout it was configured with.
        session_timeout_ms: 0,
    })
}

fn refusal(code: Code, reason: &str) -> Result<GroupHeartbeatResponse, Status> {
    Ok(GroupHeartbeatResponse {
        error: Some(ErrorStatus {
            code: code as i32,
            message: "refused by the test".into(),
            reason: reason.into(),
            metadata: Default::default(),
        }),
        ..Default::default()
    })
}

fn owned(hb: &GroupHeartbeatRequest) -> BTreeSet<u32> {
    hb.owned
        .iter()
        .flat_map(|o| &o.topics)
        .flat_map(|t| t.partitions.iter().copied())
        .collect()
}

/// The next heartbeat; commits met on the way are returned too.
async fn heartbeat(
    seen: &mut mpsc::UnboundedReceiver<Seen>,
) -> (
    GroupHeartbeatRequest,
    oneshot::Sender<Result<GroupHeartbeatResponse, Status>>,
    Vec<CommitOffsetsRequest>,
) {
    let mut commits = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, seen.recv()).await {
            Ok(Some(Seen::Heartbeat(hb, reply))) => return (hb, reply, commits),
            Ok(Some(Seen::Commit(c))) => commits.push(c),
            Ok(None) => panic!("the fake is gone"),
            Err(_) => panic!("no heartbeat within {WAIT:?}"),
        }
    }
}

/// The next assignment change the consumer's stream yields (records cannot come: the fake
/// stores none).
async fn event(consumer: &mut GroupConsumer) -> GroupEvent {
    tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("an event within the wait")
        .expect("the stream goes on")
        .expect("no error")
}

#[tokio::test]
async fn a_fenced_member_loses_its_partitions_uncommitted_and_rejoins_with_its_id() {
    let (fake, mut seen) = fake().await;
    let client = client(&fake).await;
    let mut consumer = member(&client, GroupConsumerConfig::new("g"));

    let (join, reply, _) = heartbeat(&mut seen).await;
    assert_eq!(join.member_epoch, 0);
    assert_eq!(join.member_id.len(), 32, "chosen by the client");
    assert_eq!(
        join.subscription.as_ref().map(|s| &s.topics[..]),
        Some(&["t".to_owned()][..])
    );
    let id = join.member_id.clone();
    reply.send(answer(&id, 1, &[0, 1])).unwrap();
    assert_eq!(
        event(&mut consumer).await,
        GroupEvent::Assigned(tps(&[0, 1]))
    );
    assert_eq!(consumer.member_epoch(), 1);

    // The new partitions are reported at once, not after the (one-minute) interval.
    let (report, reply, _) = heartbeat(&mut seen).await;
    assert_eq!(owned(&report), BTreeSet::from([0, 1]));
    assert_eq!(report.member_epoch, 1);
    reply
        .send(refusal(Code::FailedPrecondition, "FENCED_MEMBER_EPOCH"))
        .unwrap();

    // It rejoins at once, owning nothing, under the same id; the partitions are lost.
    let (rejoin, reply, commits) = heartbeat(&mut seen).await;
    assert_eq!(
        (rejoin.member_epoch, rejoin.member_id.as_str()),
        (0, id.as_str())
    );
    assert!(owned(&rejoin).is_empty());
    assert!(rejoin.subscription.is_some());
    assert_eq!(event(&mut consumer).await, GroupEvent::Lost(tps(&[0, 1])));
    assert!(consumer.assignment().is_empty());
    reply.send(answer(&id, 3, &[1])).unwrap();
    assert_eq!(event(&mut consumer).await, GroupEvent::Assigned(tps(&[1])));
    let (report, reply, more) = heartbeat(&mut seen).await;
    assert_eq!(owned(&report), BTreeSet::from([1]));
    // A lost partition is never committed; committing now names only what is held.
    assert!(
        commits.is_empty() && more.is_empty(),
        "nothing committed while fenced"
    );
    reply.send(answer(&id, 3, &[1])).unwrap();
    consumer.commit().await.unwrap();
    let Some(Seen::Commit(c)) = seen.recv().await else {
        panic!("a commit")
    };
    assert_eq!((c.member_id.as_str(), c.member_epoch), (id.as_str(), 3));
    assert_eq!(c.offsets.len(), 1);
    assert_eq!((c.offsets[0].partition, c.offsets[0].offset), (1, 0));
}

#[tokio::test]
async fn a_revoked_partition_is_committed_before_its_release_is_reported() {
    let (fake, mut seen) = fake().await;
    let client = client(&fake).await;
    let mut consumer = member(&client, GroupConsumerConfig::new("g"));
    let (join, reply, _) = heartbeat(&mut seen).await;
    let id = join.member_id.clone();
    reply.send(answer(&id, 1, &[0, 1])).unwrap();
    assert_eq!(
        event(&mut consumer).await,
        GroupEvent::Assigned(tps(&[0, 1]))
    );
    let (_, reply, _) = heartbeat(&mut seen).await;
    reply.send(answer(&id, 2, &[0])).unwrap();

    // Revoked: no release yet, so the next heartbeat (after the answer) still owns it…
    assert_eq!(event(&mut consumer).await, GroupEvent::Revoked(tps(&[1])));
    assert_eq!(consumer.assignment(), tps(&[0, 1]));
    // …until the application polls again: commit first (auto-commit), then the report.
    let polled = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(polled.is_err(), "nothing to yield: {polled:?}");
    let (report, reply, commits) = heartbeat(&mut seen).await;
    assert_eq!(owned(&report), BTreeSet::from([0]));
    assert_eq!(
        commits.len(),
        1,
        "the revoked partition committed before the report"
    );
    assert_eq!(commits[0].member_epoch, 2);
    let committed: Vec<u32> = commits[0].offsets.iter().map(|o| o.partition).collect();
    assert_eq!(committed, [1], "only the revoked partition");
    reply.send(answer(&id, 2, &[0])).unwrap();
    assert_eq!(consumer.assignment(), tps(&[0]));

    // Closing commits the rest and leaves with epoch -1.
    let close = tokio::spawn(consumer.close());
    let (leave, reply, commits) = heartbeat(&mut seen).await;
    assert_eq!(
        (leave.member_epoch, leave.member_id.as_str()),
        (-1, id.as_str())
    );
    assert_eq!(commits.len(), 1, "committed before leaving");
    assert_eq!(commits[0].offsets[0].partition, 0);
    reply.send(answer(&id, -1, &[])).unwrap();
    tokio::time::timeout(WAIT, close)
        .await
        .expect("close returns once the leave is answered")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn not_coordinator_moves_the_stream_with_the_same_id_and_epoch() {
    let (first, mut first_seen) = fake().await;
    let (second, mut second_seen) = fake().await;
    let client = client(&first).await;
    let mut consumer = member(&client, GroupConsumerConfig::new("g").instance_id("i-1"));
    let (join, reply, _) = heartbeat(&mut first_seen).await;
    assert_eq!(join.instance_id.as_deref(), Some("i-1"));
    let id = join.member_id.clone();
    reply.send(answer(&id, 5, &[0])).unwrap();
    assert_eq!(event(&mut consumer).await, GroupEvent::Assigned(tps(&[0])));

    // The coordinator moved: the stream ends naming the second broker.
    let (_, reply, _) = heartbeat(&mut first_seen).await;
    let second_addr = second.addr.lock().unwrap().clone();
    let moved = Status::with_error_details(
        Code::FailedPrecondition,
        "not the coordinator",
        ErrorDetails::with_error_info(
            "NOT_COORDINATOR",
            "cairn.v1",
            [
                ("coordinator_id".to_owned(), "2".to_owned()),
                ("coordinator_address".to_owned(), second_addr),
            ],
        ),
    );
    reply.send(Err(moved)).unwrap();
    let (resumed, reply, _) = heartbeat(&mut second_seen).await;
    assert_eq!(
        (resumed.member_id.as_str(), resumed.member_epoch),
        (id.as_str(), 5),
        "nothing lost: same member, same epoch"
    );
    assert_eq!(owned(&resumed), BTreeSet::from([0]));
    assert!(
        resumed.subscription.is_some(),
        "a new stream hears everything"
    );
    reply.send(answer(&id, 5, &[0])).unwrap();
    assert_eq!(consumer.assignment(), tps(&[0]));

    // A static member leaves temporarily (-2), on the coordinator it now talks to.
    let close = tokio::spawn(consumer.close());
    let (leave, reply, _) = heartbeat(&mut second_seen).await;
    assert_eq!(leave.member_epoch, -2);
    reply.send(answer(&id, -2, &[])).unwrap();
    tokio::time::timeout(WAIT, close)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_silent_coordinator_is_left_within_the_call_deadline_without_losing_anything() {
    let (fake, mut seen) = fake().await;
    let client = client(&fake).await;
    let mut consumer = member(
        &client,
        GroupConsumerConfig::new("g").session_timeout(Duration::from_millis(1500)),
    );
    let (join, reply, _) = heartbeat(&mut seen).await;
    let id = join.member_id.clone();
    reply.send(answer(&id, 1, &[0])).unwrap();
    assert_eq!(event(&mut consumer).await, GroupEvent::Assigned(tps(&[0])));
    // The report goes unanswered (its reply is held, not dropped): a stopped coordinator.
    let (_, _unanswered, _) = heartbeat(&mut seen).await;
    let silent = tokio::time::Instant::now();
    // Within the call deadline (a third of the session) the member gives the stream up and
    // goes on on a new one, with the same id and epoch, still owning its partition.
    let (again, reply, commits) = heartbeat(&mut seen).await;
    assert!(
        silent.elapsed() < Duration::from_millis(1500),
        "{:?}",
        silent.elapsed()
    );
    assert_eq!(
        (again.member_id.as_str(), again.member_epoch),
        (id.as_str(), 1)
    );
    assert_eq!(owned(&again), BTreeSet::from([0]));
    assert!(commits.is_empty());
    reply.send(answer(&id, 1, &[0])).unwrap();
    // Nothing was lost: no event comes, the partition is still owned.
    let polled = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(polled.is_err(), "nothing to yield: {polled:?}");
    assert_eq!(consumer.assignment(), tps(&[0]));
}
