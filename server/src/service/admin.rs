//! `cairn.v1.Admin`: topics, partitions and the cluster description.

use std::sync::Arc;

use cairn_proto::v1::{self as pb, admin_server::Admin};
use tonic::{Request, Response, Status};

use super::convert::{topic_config, topic_description};
use crate::node::Node;

/// The admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    node: Arc<Node>,
}

impl AdminService {
    /// A service over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// Runs a blocking node call (it touches files) off the async threads.
    async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Node) -> Result<T, crate::node::NodeError> + Send + 'static,
    {
        let node = Arc::clone(&self.node);
        tokio::task::spawn_blocking(move || f(&node))
            .await
            .map_err(|e| Status::internal(format!("admin task failed: {e}")))?
            .map_err(Status::from)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let req = request.into_inner();
        let config = topic_config(req.config)?;
        let node_id = self.node.config().node_id;
        let info = self
            .blocking(move |n| {
                n.create_topic(&req.name, req.partitions, req.replication_factor, config)
            })
            .await?;
        Ok(Response::new(pb::CreateTopicResponse {
            topic: Some(topic_description(&info, node_id)),
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let name = request.into_inner().name;
        self.blocking(move |n| n.delete_topic(&name)).await?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        _request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let topics = self
            .node
            .list_topics()
            .into_iter()
            .map(|(name, r)| pb::TopicSummary {
                name: name.to_string(),
                partitions: r.partitions,
                replication_factor: r.replication_factor,
            })
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        let info = self.node.describe_topic(&request.into_inner().name)?;
        Ok(Response::new(pb::DescribeTopicResponse {
            topic: Some(topic_description(&info, self.node.config().node_id)),
        }))
    }

    async fn create_partitions(
        &self,
        request: Request<pb::CreatePartitionsRequest>,
    ) -> Result<Response<pb::CreatePartitionsResponse>, Status> {
        let req = request.into_inner();
        let node_id = self.node.config().node_id;
        let info = self
            .blocking(move |n| n.create_partitions(&req.name, req.total_partitions))
            .await?;
        Ok(Response::new(pb::CreatePartitionsResponse {
            topic: Some(topic_description(&info, node_id)),
        }))
    }

    async fn describe_cluster(
        &self,
        _request: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        Ok(Response::new(pb::DescribeClusterResponse {
            cluster_id: self.node.cluster_id(),
            controller_id: self.node.config().node_id,
            brokers: vec![super::self_broker_info(&self.node)],
            raft_term: 0,
            ..Default::default()
        }))
    }
}
