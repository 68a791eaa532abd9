//! `cairn.v1.Admin`: topics, partitions and the cluster description.
//!
//! Reads (list, describe) answer from this broker's copy of the metadata. Writes go to the
//! controller: handled here if this broker is the controller, otherwise forwarded with the same
//! request to the controller's Admin service (marked, so it is never forwarded twice). Either way
//! the answer waits until this broker has applied the change, so a client that creates a topic
//! through a broker can use it there at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::v1::{self as pb, admin_client::AdminClient, admin_server::Admin};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use super::convert::{brokers, topic_config, topic_description};
use super::error::{reason, status};
use crate::metadata::Controller;
use crate::node::Node;

/// Request header marking a call forwarded to the controller.
pub(super) const FORWARDED: &str = "x-cairn-forwarded";
/// Response header: the Raft index at which the controller committed the change.
const METADATA_INDEX: &str = "x-cairn-metadata-index";
/// How long a write may wait for a controller to be elected or for this broker to apply the
/// committed change.
const WAIT: Duration = Duration::from_secs(10);
/// How long a write waits for this broker to come alive after start before going ahead anyway.
const STARTUP_GRACE: Duration = Duration::from_secs(5);

/// The admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    node: Arc<Node>,
    controller: Arc<Controller>,
    groups: super::groups::GroupAdmin,
    max_message_bytes: usize,
}

impl AdminService {
    /// A service over `node` that sends writes to `controller` (local or remote) and group
    /// calls to their coordinators.
    pub fn new(
        node: Arc<Node>,
        controller: Arc<Controller>,
        coordinator: Arc<crate::coordinator::Coordinator>,
    ) -> Self {
        let max_message_bytes = node.config().limits.max_request_bytes;
        Self {
            groups: super::groups::GroupAdmin::new(coordinator, Arc::clone(&node)),
            node,
            controller,
            max_message_bytes,
        }
    }

    /// Runs a write here if this broker is the controller (or the request was forwarded to it),
    /// otherwise forwards the request to the controller. Returns the commit index (the answer
    /// itself is rebuilt from this broker's metadata once it applied the change).
    async fn write<Req, Resp, L, LFut, F, FFut>(
        &self,
        request: Request<Req>,
        local: L,
        forward: F,
    ) -> Result<u64, Status>
    where
        L: FnOnce(Arc<Controller>, Req) -> LFut,
        LFut: Future<Output = Result<u64, Status>>,
        F: FnOnce(AdminClient<Channel>, Request<Req>) -> FFut,
        FFut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let forwarded = request.metadata().contains_key(FORWARDED);
        let quorum = self.controller.quorum();
        // A broker just started is fenced until its first heartbeat (milliseconds after it
        // registers); a write sent at that moment should not see a cluster with no live broker.
        quorum.wait_alive(quorum.id(), STARTUP_GRACE).await;
        if forwarded || quorum.is_controller() {
            return local(Arc::clone(&self.controller), request.into_inner()).await;
        }
        self.wait_for_controller().await;
        let mut request = Request::new(request.into_inner());
        request
            .metadata_mut()
            .insert(FORWARDED, MetadataValue::from_static("1"));
        let client = AdminClient::new(self.controller.remote_channel()?)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        let response = forward(client, request).await?;
        Ok(response
            .metadata()
            .get(METADATA_INDEX)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Waits a little for an election in progress to name a controller.
    async fn wait_for_controller(&self) {
        let _ = self
            .controller
            .quorum()
            .raft()
            .wait(Some(WAIT))
            .metrics(|m| m.current_leader.is_some(), "a controller is elected")
            .await;
    }

    /// Waits until this broker applied `index` and opened the replicas it assigns here, so its
    /// answer and its next requests see the change.
    async fn applied(&self, index: u64) -> Result<(), Status> {
        if self.controller.quorum().wait_applied(index, WAIT).await {
            let node = Arc::clone(&self.node);
            let _ = tokio::task::spawn_blocking(move || node.reconcile(false)).await;
            Ok(())
        } else {
            Err(status(
                Code::Unavailable,
                reason::METADATA_UNAVAILABLE,
                format!(
                    "the change was committed at metadata index {index}, but this broker has not \
                     applied it yet; retry the read shortly"
                ),
                &[("metadata_index", index.to_string())],
            ))
        }
    }

    fn describe(&self, name: &str) -> Result<pb::TopicDescription, Status> {
        Ok(topic_description(&self.node.describe_topic(name)?))
    }
}

/// A response carrying the commit index, so a forwarding broker can wait for it.
fn with_index<T>(answer: T, index: u64) -> Response<T> {
    let mut response = Response::new(answer);
    if let Ok(v) = MetadataValue::try_from(index.to_string()) {
        response.metadata_mut().insert(METADATA_INDEX, v);
    }
    response
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let name = request.get_ref().name.clone();
        let index = self
            .write(
                request,
                |c, req| async move {
                    let config = topic_config(req.config)?;
                    let committed = c
                        .create_topic(&req.name, req.partitions, req.replication_factor, config)
                        .await?;
                    Ok(committed.index)
                },
                |mut client, req| async move { client.create_topic(req).await },
            )
            .await?;
        self.applied(index).await?;
        Ok(with_index(
            pb::CreateTopicResponse {
                topic: Some(self.describe(&name)?),
            },
            index,
        ))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        crate::node::parse_topic(&request.get_ref().name)?;
        if request.get_ref().name == crate::coordinator::OFFSETS_TOPIC {
            return Err(status(
                Code::InvalidArgument,
                reason::INVALID_TOPIC_NAME,
                format!(
                    "{} is internal: it holds every consumer group's committed offsets",
                    crate::coordinator::OFFSETS_TOPIC
                ),
                &[("topic", crate::coordinator::OFFSETS_TOPIC.to_owned())],
            ));
        }
        let index = self
            .write(
                request,
                |c, req| async move { Ok(c.delete_topic(&req.name).await?.index) },
                |mut client, req| async move { client.delete_topic(req).await },
            )
            .await?;
        self.applied(index).await?;
        Ok(with_index(pb::DeleteTopicResponse {}, index))
    }

    async fn list_topics(
        &self,
        _request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let topics = self
            .node
            .list_topics()
            .into_iter()
            .map(|(name, partitions, replication_factor)| pb::TopicSummary {
                name,
                partitions,
                replication_factor,
            })
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        Ok(Response::new(pb::DescribeTopicResponse {
            topic: Some(self.describe(&request.into_inner().name)?),
        }))
    }

    async fn create_partitions(
        &self,
        request: Request<pb::CreatePartitionsRequest>,
    ) -> Result<Response<pb::CreatePartitionsResponse>, Status> {
        let name = request.get_ref().name.clone();
        crate::node::parse_topic(&name)?;
        let index = self
            .write(
                request,
                |c, req| async move {
                    Ok(c.create_partitions(&req.name, req.total_partitions)
                        .await?
                        .index)
                },
                |mut client, req| async move { client.create_partitions(req).await },
            )
            .await?;
        self.applied(index).await?;
        Ok(with_index(
            pb::CreatePartitionsResponse {
                topic: Some(self.describe(&name)?),
            },
            index,
        ))
    }

    async fn describe_cluster(
        &self,
        _request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        let quorum = self.controller.quorum();
        let view = quorum.view();
        let (voters, learners) = quorum.members();
        Ok(Response::new(pb::DescribeClusterResponse {
            cluster_id: view.state.cluster_id().to_owned(),
            controller_id: quorum.known_controller().unwrap_or(0),
            brokers: brokers(&view.state),
            raft_term: quorum.term(),
            voters,
            learners,
            metadata_applied_index: view.applied_index,
        }))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        Ok(Response::new(self.groups.list_groups(request).await?))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        Ok(Response::new(self.groups.describe_group(request).await?))
    }

    async fn reset_group_offsets(
        &self,
        request: Request<pb::ResetGroupOffsetsRequest>,
    ) -> Result<Response<pb::ResetGroupOffsetsResponse>, Status> {
        Ok(Response::new(
            self.groups.reset_group_offsets(request).await?,
        ))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        Ok(Response::new(self.groups.delete_group(request).await?))
    }
}
