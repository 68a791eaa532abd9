//! `cairn.v1.Groups` (coordinator lookup, member heartbeats, committed offsets) and the group
//! calls of `cairn.v1.Admin` ([`GroupAdmin`]).
//!
//! Group calls go to the group's coordinator (`crate::coordinator`); another broker answers
//! `NOT_COORDINATOR` naming it, except the admin calls, which any broker forwards to the
//! coordinator (marked, so never twice) so that a grpcurl user needs no second hop. Describing
//! a group asks each partition's leader for its high watermark and the timestamp of the first
//! uncommitted record, for lag in records and in time.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::v1::{
    self as pb, admin_client::AdminClient, broker_client::BrokerClient, groups_server::Groups,
    position::Position as PositionKind,
};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::admin::{AdminService, FORWARDED};
use super::convert::error_status;
use super::error::{group_error_status, invalid_argument, reason, status};
use crate::coordinator::{
    Coordinator, CoordinatorError, GroupDescription, GroupState, OFFSETS_TOPIC, records::Committed,
    validate_group_id,
};
use crate::group::{Heartbeat, HeartbeatResponse, InstanceId, MemberId, TopicPartition};
use crate::node::{Node, now_ms, parse_topic};
use crate::peers::PeerChannels;

/// How long FindCoordinator waits for a new offsets topic to get its leaders.
const FIND_WAIT: Duration = Duration::from_secs(10);
/// Timeout of the calls a coordinator makes to partition leaders and other brokers.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `DescribeGroup` waits for one partition leader's lag answer: a leader that is
/// stopped or cut off costs this much (its lag is reported unknown), not a peer timeout, so
/// that `group describe` answers within about a second under any single fault.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a broker waits for the coordinator it forwards a group admin call to: past the
/// coordinator's own probes, short of a client's patience.
const FORWARD_TIMEOUT: Duration = Duration::from_millis(1500);

/// The group calls of the Admin service, and what they share with the Groups service.
#[derive(Debug, Clone)]
pub struct GroupAdmin {
    coordinator: Arc<Coordinator>,
    node: Arc<Node>,
    peers: PeerChannels,
}

impl GroupAdmin {
    /// Group administration through `coordinator`.
    pub fn new(coordinator: Arc<Coordinator>, node: Arc<Node>) -> Self {
        Self {
            coordinator,
            node,
            peers: PeerChannels::new(|e| {
                e.tcp_nodelay(true)
                    .connect_timeout(PEER_TIMEOUT)
                    .timeout(PEER_TIMEOUT)
            }),
        }
    }

    fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, Status> {
        self.peers
            .get(addr)
            .map_err(|e| Status::internal(format!("bad broker address {addr}: {e}")))
    }

    fn admin_client(&self, addr: &str) -> Result<AdminClient<tonic::transport::Channel>, Status> {
        Ok(AdminClient::new(self.channel(addr)?))
    }

    fn broker_client(&self, addr: &str) -> Result<BrokerClient<tonic::transport::Channel>, Status> {
        Ok(BrokerClient::new(self.channel(addr)?))
    }

    /// The coordinator's address to forward to, if `e` names one and `request` was not
    /// forwarded already.
    fn forward_target<T>(e: &CoordinatorError, request: &Request<T>) -> Option<String> {
        if request.metadata().contains_key(FORWARDED) {
            return None;
        }
        match e {
            CoordinatorError::NotCoordinator {
                coordinator: Some((_, Some(addr))),
                ..
            } => Some(addr.clone()),
            _ => None,
        }
    }

    fn forwarded<T>(request: Request<T>) -> Request<T> {
        let mut request = Request::new(request.into_inner());
        request
            .metadata_mut()
            .insert(FORWARDED, MetadataValue::from_static("1"));
        request
    }

    /// `Admin.ListGroups`: every alive broker's groups (a forwarded call: this broker's).
    pub async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<pb::ListGroupsResponse, Status> {
        let me = self.node.id();
        let summaries = |list: Vec<crate::coordinator::GroupSummary>| {
            list.into_iter().map(move |s| pb::GroupSummary {
                group_id: s.group,
                state: state_pb(s.state) as i32,
                members: u32::try_from(s.members).unwrap_or(u32::MAX),
                coordinator_id: me,
            })
        };
        let mut groups: Vec<pb::GroupSummary> = summaries(self.coordinator.list().await).collect();
        if !request.metadata().contains_key(FORWARDED) {
            let view = self.node.metadata();
            let others: Vec<String> = view
                .state
                .brokers()
                .iter()
                .filter(|(id, b)| **id != me && !b.fenced)
                .map(|(_, b)| b.addr.clone())
                .collect();
            let calls = others.into_iter().map(|addr| async move {
                let mut client = self.admin_client(&addr)?;
                let answer = client
                    .list_groups(Self::forwarded(Request::new(pb::ListGroupsRequest {})))
                    .await?;
                Ok::<_, Status>(answer.into_inner().groups)
            });
            for answer in futures::future::join_all(calls).await {
                match answer {
                    Ok(list) => groups.extend(list),
                    Err(e) => tracing::warn!(error = %e, "a broker did not list its groups"),
                }
            }
        }
        groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        groups.dedup_by(|a, b| a.group_id == b.group_id);
        Ok(pb::ListGroupsResponse { groups })
    }

    /// `Admin.DescribeGroup`, forwarded to the coordinator.
    pub async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<pb::DescribeGroupResponse, Status> {
        let group = request.get_ref().group_id.clone();
        match self.coordinator.describe(&group).await {
            Ok(d) => Ok(self.describe_with_lag(d).await),
            Err(e) => match Self::forward_target(&e, &request) {
                Some(addr) => {
                    let mut admin = self.admin_client(&addr)?;
                    let call = admin.describe_group(Self::forwarded(request));
                    match tokio::time::timeout(FORWARD_TIMEOUT, call).await {
                        Ok(answer) => Ok(answer?.into_inner()),
                        Err(_) => Err(CoordinatorError::NotAvailable {
                            group,
                            why: format!(
                                "its coordinator at {addr} did not answer within \
                                 {FORWARD_TIMEOUT:?}"
                            ),
                        }
                        .into()),
                    }
                }
                None => Err(e.into()),
            },
        }
    }

    async fn describe_with_lag(&self, d: GroupDescription) -> pb::DescribeGroupResponse {
        let mut owners = std::collections::BTreeMap::new();
        for m in &d.members {
            for tp in &m.assigned {
                owners.insert(tp.clone(), m.member_id.to_string());
            }
        }
        let mut partitions: BTreeSet<TopicPartition> = d
            .topics
            .iter()
            .flat_map(|(t, n)| (0..*n).map(|p| TopicPartition::new(t.clone(), p)))
            .collect();
        partitions.extend(d.offsets.keys().cloned());
        let now = now_ms();
        let probes = partitions.iter().map(|tp| {
            let committed = d.offsets.get(tp).map(|c| c.offset);
            async move {
                let probe =
                    match tokio::time::timeout(PROBE_TIMEOUT, self.probe(tp, committed)).await {
                        Ok(probe) => probe,
                        Err(_) => Err(Status::deadline_exceeded(format!(
                            "the leader of {tp} did not answer within {PROBE_TIMEOUT:?}"
                        ))),
                    };
                (tp, committed, probe)
            }
        });
        let partitions = futures::future::join_all(probes)
            .await
            .into_iter()
            .map(|(tp, committed, probe)| {
                let (log_end_offset, lag, lag_ms) = match probe {
                    Ok(p) => {
                        let from = committed.unwrap_or(p.log_start).max(p.log_start);
                        let lag = (p.high_watermark - committed.unwrap_or(p.log_start)).max(0);
                        let lag_ms = if from < p.high_watermark {
                            p.first_timestamp.map_or(0, |ts| (now - ts).max(0))
                        } else {
                            0
                        };
                        (p.high_watermark, lag, lag_ms)
                    }
                    Err(e) => {
                        tracing::debug!(partition = %tp, error = %e, "no lag for a partition");
                        (-1, -1, -1)
                    }
                };
                pb::GroupPartition {
                    topic: tp.topic.to_string(),
                    partition: tp.partition,
                    owner: owners.get(tp).cloned().unwrap_or_default(),
                    committed_offset: committed.unwrap_or(-1),
                    log_end_offset,
                    lag,
                    lag_ms,
                }
            })
            .collect();
        pb::DescribeGroupResponse {
            group_id: d.group,
            state: state_pb(d.state) as i32,
            group_epoch: d.group_epoch,
            coordinator_id: self.node.id(),
            assignor: d.assignor.to_string(),
            members: d
                .members
                .iter()
                .map(|m| pb::GroupMember {
                    member_id: m.member_id.to_string(),
                    instance_id: m.instance_id.as_ref().map(ToString::to_string),
                    member_epoch: m.member_epoch,
                    subscribed_topics: m
                        .subscribed_topics
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    assigned: by_topic(&m.assigned),
                    pending_revocation: by_topic(&m.pending_revocation),
                })
                .collect(),
            partitions,
        }
    }

    /// The leader's view of `tp`: log start, high watermark, and the timestamp of the first
    /// record at or after `from` (the log start without one).
    async fn probe(&self, tp: &TopicPartition, from: Option<i64>) -> Result<Probe, Status> {
        let addr = self.leader_addr(tp)?;
        let mut client = self.broker_client(&addr)?;
        let earliest = self
            .list_offset(
                &mut client,
                tp,
                PositionKind::Boundary(pb::Boundary::Earliest as i32),
            )
            .await?;
        let (log_start, high_watermark) = (earliest.log_start_offset, earliest.high_watermark);
        let start = from.unwrap_or(log_start).max(log_start);
        let mut first_timestamp = None;
        if start < high_watermark {
            let fetched = client
                .fetch(pb::FetchRequest {
                    topic: tp.topic.to_string(),
                    partition: tp.partition,
                    offset: start,
                    max_bytes: 1,
                    max_wait_ms: 0,
                    format: pb::RecordFormat::Records as i32,
                })
                .await?
                .into_inner();
            first_timestamp = fetched.records.first().map(|r| r.timestamp_ms);
        }
        Ok(Probe {
            log_start,
            high_watermark,
            first_timestamp,
        })
    }

    async fn list_offset(
        &self,
        client: &mut BrokerClient<tonic::transport::Channel>,
        tp: &TopicPartition,
        position: PositionKind,
    ) -> Result<pb::PartitionOffset, Status> {
        client
            .list_offsets(pb::ListOffsetsRequest {
                topic: tp.topic.to_string(),
                partitions: vec![tp.partition],
                position: Some(pb::Position {
                    position: Some(position),
                }),
            })
            .await?
            .into_inner()
            .offsets
            .into_iter()
            .next()
            .ok_or_else(|| Status::internal(format!("no offset returned for {tp}")))
    }

    fn leader_addr(&self, tp: &TopicPartition) -> Result<String, Status> {
        let view = self.node.metadata();
        let leader = view
            .state
            .topic(tp.topic.as_str())
            .and_then(|t| t.partitions.get(tp.partition as usize))
            .and_then(|p| p.leader);
        leader
            .and_then(|id| view.state.brokers().get(&id).map(|b| b.addr.clone()))
            .ok_or_else(|| {
                status(
                    tonic::Code::Unavailable,
                    reason::NOT_LEADER,
                    format!("{tp} has no leader right now; retry shortly"),
                    &[
                        ("topic", tp.topic.to_string()),
                        ("partition", tp.partition.to_string()),
                    ],
                )
            })
    }

    /// `Admin.ResetGroupOffsets`, forwarded to the coordinator.
    pub async fn reset_group_offsets(
        &self,
        request: Request<pb::ResetGroupOffsetsRequest>,
    ) -> Result<pb::ResetGroupOffsetsResponse, Status> {
        let req = request.get_ref();
        validate_group_id(&req.group_id)?;
        let topic = parse_topic(&req.topic)?;
        let count = self
            .node
            .metadata()
            .state
            .topic(topic.as_str())
            .map(|t| u32::try_from(t.partitions.len()).unwrap_or(u32::MAX))
            .ok_or_else(|| crate::node::NodeError::UnknownTopic(topic.to_string()))?;
        let position = req.position.and_then(|p| p.position).ok_or_else(|| {
            invalid_argument("position", "set an offset, a timestamp or a boundary")
        })?;
        if let PositionKind::Boundary(b) = position
            && !matches!(
                pb::Boundary::try_from(b),
                Ok(pb::Boundary::Earliest | pb::Boundary::Latest)
            )
        {
            return Err(invalid_argument(
                "position.boundary",
                "use BOUNDARY_EARLIEST or BOUNDARY_LATEST",
            ));
        }
        let partitions: Vec<u32> = if req.partitions.is_empty() {
            (0..count).collect()
        } else {
            req.partitions.clone()
        };
        if let Some(&p) = partitions.iter().find(|&&p| p >= count) {
            return Err(crate::node::NodeError::UnknownPartition {
                topic: topic.to_string(),
                partition: p,
                count,
            }
            .into());
        }
        // Only the coordinator resolves and writes: forward before asking any leader.
        if let Err(e) = self
            .coordinator
            .fetch_offsets(&req.group_id, &BTreeSet::new())
            .await
        {
            return match Self::forward_target(&e, &request) {
                Some(addr) => Ok(self
                    .admin_client(&addr)?
                    .reset_group_offsets(Self::forwarded(request))
                    .await?
                    .into_inner()),
                None => Err(e.into()),
            };
        }
        let mut offsets = Vec::with_capacity(partitions.len());
        for p in partitions {
            let tp = TopicPartition::new(topic.clone(), p);
            let addr = self.leader_addr(&tp)?;
            let mut client = self.broker_client(&addr)?;
            let offset = match position {
                PositionKind::Offset(o) => {
                    let range = self
                        .list_offset(
                            &mut client,
                            &tp,
                            PositionKind::Boundary(pb::Boundary::Earliest as i32),
                        )
                        .await?;
                    o.clamp(range.log_start_offset, range.high_watermark)
                }
                other => self.list_offset(&mut client, &tp, other).await?.offset,
            };
            offsets.push((tp, offset));
        }
        let stored = self
            .coordinator
            .reset_offsets(&req.group_id, offsets, req.dry_run)
            .await?;
        Ok(pb::ResetGroupOffsetsResponse {
            offsets: stored.into_iter().map(committed_pb).collect(),
        })
    }

    /// `Admin.DeleteGroup`, forwarded to the coordinator.
    pub async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<pb::DeleteGroupResponse, Status> {
        match self
            .coordinator
            .delete_group(&request.get_ref().group_id)
            .await
        {
            Ok(()) => Ok(pb::DeleteGroupResponse {}),
            Err(e) => match Self::forward_target(&e, &request) {
                Some(addr) => Ok(self
                    .admin_client(&addr)?
                    .delete_group(Self::forwarded(request))
                    .await?
                    .into_inner()),
                None => Err(e.into()),
            },
        }
    }
}

/// What a partition's leader says about it.
struct Probe {
    log_start: i64,
    high_watermark: i64,
    first_timestamp: Option<i64>,
}

/// The Groups service.
#[derive(Debug, Clone)]
pub struct GroupsService {
    coordinator: Arc<Coordinator>,
    node: Arc<Node>,
    /// Creates the offsets topic (through the controller).
    admin: AdminService,
    /// Ends member streams at shutdown.
    shutdown: CancellationToken,
}

impl GroupsService {
    /// The service over `coordinator`; `admin` creates the offsets topic.
    pub fn new(
        coordinator: Arc<Coordinator>,
        node: Arc<Node>,
        admin: AdminService,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            coordinator,
            node,
            admin,
            shutdown,
        }
    }

    /// Creates the offsets topic: the configured partitions, as many replicas as configured
    /// and alive, retention off.
    async fn create_offsets_topic(&self) -> Result<(), Status> {
        let config = self.coordinator.config();
        let alive = self
            .node
            .metadata()
            .state
            .brokers()
            .values()
            .filter(|b| !b.fenced)
            .count();
        let rf = config
            .offsets_topic_replication_factor
            .min(u32::try_from(alive).unwrap_or(u32::MAX))
            .max(1);
        let request = Request::new(pb::CreateTopicRequest {
            name: OFFSETS_TOPIC.to_owned(),
            partitions: config.offsets_topic_partitions,
            replication_factor: rf,
            config: Some(pb::TopicConfig {
                retention_ms: Some(-1),
                retention_bytes: Some(-1),
                segment_bytes: Some(config.offsets_topic_segment_bytes),
                ..Default::default()
            }),
        });
        use cairn_proto::v1::admin_server::Admin;
        match self.admin.create_topic(request).await {
            Ok(_) => {
                tracing::info!(
                    partitions = config.offsets_topic_partitions,
                    replication_factor = rf,
                    "created {OFFSETS_TOPIC}"
                );
                Ok(())
            }
            Err(e) if e.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }
}

type HeartbeatStream =
    Pin<Box<dyn Stream<Item = Result<pb::GroupHeartbeatResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Groups for GroupsService {
    async fn find_coordinator(
        &self,
        request: Request<pb::FindCoordinatorRequest>,
    ) -> Result<Response<pb::FindCoordinatorResponse>, Status> {
        let group = request.into_inner().group_id;
        validate_group_id(&group)?;
        if self.coordinator.locate(&group).is_none() {
            self.create_offsets_topic().await?;
        }
        let deadline = tokio::time::Instant::now() + FIND_WAIT;
        loop {
            if self.coordinator.is_cut_off(&group) {
                return Err(CoordinatorError::NotAvailable {
                    group,
                    why: "this broker leads its partition but cannot replicate; ask another"
                        .to_owned(),
                }
                .into());
            }
            if let Some((partition, Some((id, Some(address))))) = self.coordinator.locate(&group) {
                return Ok(Response::new(pb::FindCoordinatorResponse {
                    coordinator_id: id,
                    address,
                    partition,
                }));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CoordinatorError::NotAvailable {
                    group,
                    why: format!("its {OFFSETS_TOPIC} partition has no leader"),
                }
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    type HeartbeatStream = HeartbeatStream;

    async fn heartbeat(
        &self,
        request: Request<Streaming<pb::GroupHeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let coordinator = Arc::clone(&self.coordinator);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => break,
                    m = inbound.message() => m,
                };
                let Ok(Some(message)) = message else { break };
                let (answer, last) = match heartbeat_one(&coordinator, message).await {
                    Ok(answer) => (Ok(answer), false),
                    // The coordinator moved or is loading: the member finds it again.
                    Err(
                        e @ (CoordinatorError::NotCoordinator { .. }
                        | CoordinatorError::NotAvailable { .. }),
                    ) => (Err(Status::from(e)), true),
                    Err(e) => (
                        Ok(pb::GroupHeartbeatResponse {
                            error: Some(error_status(&Status::from(e))),
                            ..Default::default()
                        }),
                        false,
                    ),
                };
                if tx.send(answer).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn commit_offsets(
        &self,
        request: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        let req = request.into_inner();
        let offsets = req
            .offsets
            .into_iter()
            .map(|c| {
                Ok((
                    TopicPartition::new(parse_topic(&c.topic)?, c.partition),
                    c.offset,
                    c.metadata,
                ))
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let stored = self
            .coordinator
            .commit(&req.group_id, &req.member_id, req.member_epoch, offsets)
            .await?;
        Ok(Response::new(pb::CommitOffsetsResponse {
            offsets: stored.into_iter().map(committed_pb).collect(),
        }))
    }

    async fn fetch_offsets(
        &self,
        request: Request<pb::FetchOffsetsRequest>,
    ) -> Result<Response<pb::FetchOffsetsResponse>, Status> {
        let req = request.into_inner();
        let only = partitions_of(&req.topics)?;
        let offsets = self.coordinator.fetch_offsets(&req.group_id, &only).await?;
        Ok(Response::new(pb::FetchOffsetsResponse {
            offsets: offsets.into_iter().map(committed_pb).collect(),
        }))
    }
}

/// Handles one heartbeat message: the member's answer, or the group's refusal as an in-stream
/// error. The error is the coordinator's own.
async fn heartbeat_one(
    coordinator: &Coordinator,
    m: pb::GroupHeartbeatRequest,
) -> Result<pb::GroupHeartbeatResponse, CoordinatorError> {
    validate_group_id(&m.group_id)?;
    if m.member_epoch < crate::group::TEMPORARY_LEAVE_EPOCH {
        return Err(CoordinatorError::InvalidArgument {
            field: "member_epoch",
            message: format!(
                "member epoch {} is invalid: 0 joins, -1 leaves, -2 leaves temporarily, a \
                 positive epoch is the last one given",
                m.member_epoch
            ),
        });
    }
    let member_id = match (m.member_id.is_empty(), m.member_epoch) {
        (true, crate::group::JOIN_EPOCH) => crate::node::new_id(),
        (true, _) => {
            return Err(CoordinatorError::InvalidArgument {
                field: "member_id",
                message: "only a join (member_epoch 0) may leave member_id empty".to_owned(),
            });
        }
        (false, _) if m.member_id.len() > 255 => {
            return Err(CoordinatorError::InvalidArgument {
                field: "member_id",
                message: format!("{} bytes; the limit is 255", m.member_id.len()),
            });
        }
        (false, _) => m.member_id,
    };
    let subscribed_topics = match m.subscription {
        Some(s) => Some(
            s.topics
                .iter()
                .map(|t| parse_topic(t))
                .collect::<Result<BTreeSet<_>, _>>()?,
        ),
        None => None,
    };
    let owned = match m.owned {
        Some(o) => {
            Some(
                partitions_of(&o.topics).map_err(|_| CoordinatorError::InvalidArgument {
                    field: "owned",
                    message: "an owned topic name is invalid".to_owned(),
                })?,
            )
        }
        None => None,
    };
    let hb = Heartbeat {
        member_id: MemberId::new(member_id),
        member_epoch: m.member_epoch,
        instance_id: m.instance_id.map(InstanceId::new),
        subscribed_topics,
        owned,
    };
    Ok(match coordinator.heartbeat(&m.group_id, hb).await? {
        Ok(answer) => heartbeat_pb(answer, coordinator.config().session_timeout_ms),
        Err(refusal) => pb::GroupHeartbeatResponse {
            error: Some(error_status(&group_error_status(&m.group_id, &refusal))),
            ..Default::default()
        },
    })
}

fn heartbeat_pb(a: HeartbeatResponse, session_timeout_ms: u32) -> pb::GroupHeartbeatResponse {
    pb::GroupHeartbeatResponse {
        member_id: a.member_id.to_string(),
        member_epoch: a.member_epoch,
        heartbeat_interval_ms: i32::try_from(a.heartbeat_interval_ms).unwrap_or(i32::MAX),
        assignment: Some(pb::OwnedPartitions {
            topics: by_topic(&a.assignment),
        }),
        error: None,
        session_timeout_ms: i32::try_from(session_timeout_ms).unwrap_or(i32::MAX),
    }
}

fn partitions_of(topics: &[pb::TopicPartitions]) -> Result<BTreeSet<TopicPartition>, Status> {
    let mut out = BTreeSet::new();
    for t in topics {
        let topic = parse_topic(&t.topic)?;
        out.extend(
            t.partitions
                .iter()
                .map(|&p| TopicPartition::new(topic.clone(), p)),
        );
    }
    Ok(out)
}

fn by_topic(set: &BTreeSet<TopicPartition>) -> Vec<pb::TopicPartitions> {
    let mut out: Vec<pb::TopicPartitions> = Vec::new();
    for tp in set {
        match out.last_mut() {
            Some(last) if last.topic == tp.topic.as_str() => last.partitions.push(tp.partition),
            _ => out.push(pb::TopicPartitions {
                topic: tp.topic.to_string(),
                partitions: vec![tp.partition],
            }),
        }
    }
    out
}

fn committed_pb((tp, c): (TopicPartition, Committed)) -> pb::CommittedOffset {
    pb::CommittedOffset {
        topic: tp.topic.to_string(),
        partition: tp.partition,
        offset: c.offset,
        metadata: c.metadata,
        commit_timestamp_ms: c.commit_timestamp_ms,
    }
}

fn state_pb(s: GroupState) -> pb::GroupState {
    match s {
        GroupState::Empty => pb::GroupState::Empty,
        GroupState::Stable => pb::GroupState::Stable,
        GroupState::Reconciling => pb::GroupState::Reconciling,
    }
}
