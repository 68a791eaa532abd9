//! [`Admin`]: topics, partitions, the cluster description and consumer groups.
//!
//! Requests take plain Rust arguments ([`NewTopic`], [`ResetOffsets`]); answers are the
//! `cairn.v1` messages themselves, re-exported from the crate root ([`TopicDescription`],
//! [`TopicSummary`], [`ClusterDescription`], [`GroupDescription`], ...), because they already
//! are plain data with documented fields. Any broker accepts admin calls (group calls are
//! forwarded to the group's coordinator); the client picks one and moves on if it is
//! unreachable.
//!
//! [`ClusterDescription`]: crate::ClusterDescription

use cairn_proto::v1::{
    CommittedOffset, CreatePartitionsRequest, CreateTopicRequest, DeleteGroupRequest,
    DeleteTopicRequest, DescribeClusterRequest, DescribeGroupRequest, DescribeTopicRequest,
    GroupSummary, ListGroupsRequest, ListTopicsRequest, PartitionOffset, ResetGroupOffsetsRequest,
    TopicConfig, TopicDescription, TopicSummary,
};

use crate::client::{Client, SeekTo};
use crate::error::{Error, Result};
use crate::group::Coordinator;
use crate::{ClusterDescription, GroupDescription};

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Topic name: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
    pub name: String,
    /// Number of partitions, at least 1.
    pub partitions: u32,
    /// Copies of each partition; 0 lets the broker choose (1 on a single broker).
    pub replication_factor: u32,
    /// Settings; unset fields take the broker's defaults.
    pub config: TopicConfig,
}

impl NewTopic {
    /// A topic with `partitions` partitions, the broker's replication factor and defaults.
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication_factor: 0,
            config: TopicConfig::default(),
        }
    }

    /// Sets the replication factor.
    pub fn replication_factor(mut self, rf: u32) -> Self {
        self.replication_factor = rf;
        self
    }

    /// Sets the topic's config.
    pub fn config(mut self, config: TopicConfig) -> Self {
        self.config = config;
        self
    }
}

/// Where to move a consumer group's committed offsets: see [`Admin::reset_group_offsets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetOffsets {
    /// The group: it must have no members.
    pub group_id: String,
    /// The topic whose offsets move.
    pub topic: String,
    /// Its partitions; empty means all of them.
    pub partitions: Vec<u32>,
    /// The new position: an exact offset (clamped to what the partition stores), the first
    /// record at or after a timestamp, or the earliest or latest offset.
    pub to: SeekTo,
    /// Compute the new offsets without committing them.
    pub dry_run: bool,
}

impl ResetOffsets {
    /// Moves every partition of `topic` in `group_id` to `to`.
    pub fn new(group_id: impl Into<String>, topic: impl Into<String>, to: SeekTo) -> Self {
        Self {
            group_id: group_id.into(),
            topic: topic.into(),
            partitions: Vec::new(),
            to,
            dry_run: false,
        }
    }

    /// Only these partitions.
    pub fn partitions(mut self, partitions: impl IntoIterator<Item = u32>) -> Self {
        self.partitions = partitions.into_iter().collect();
        self
    }

    /// Sets [`ResetOffsets::dry_run`].
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }
}

/// Administers the cluster. Made by [`Client::admin`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
}

impl Admin {
    pub(crate) fn new(client: Client) -> Self {
        Self { client }
    }

    /// Creates a topic and returns it as it now stands.
    ///
    /// # Errors
    ///
    /// [`Error::TopicAlreadyExists`] (also when a retry follows a lost answer to a create that
    /// succeeded); [`Error::InvalidArgument`] with reason `INVALID_TOPIC_NAME` or
    /// `INVALID_ARGUMENT`; [`Error::NotEnoughReplicas`] when the cluster has too few brokers.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<TopicDescription> {
        let request = CreateTopicRequest {
            name: topic.name,
            partitions: topic.partitions,
            replication_factor: topic.replication_factor,
            config: Some(topic.config),
        };
        let response = self
            .client
            .call_admin(|mut c| {
                let request = request.clone();
                async move { c.create_topic(request).await }
            })
            .await?;
        // Producers and consumers made from now on should see the topic at once.
        let _ = self.client.refresh().await;
        response.topic.ok_or_else(missing_topic)
    }

    /// Deletes a topic and all of its data.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`].
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = DeleteTopicRequest { name: name.into() };
        self.client
            .call_admin(|mut c| {
                let request = request.clone();
                async move { c.delete_topic(request).await }
            })
            .await?;
        let _ = self.client.refresh().await;
        Ok(())
    }

    /// Lists every topic, in name order.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] when no broker answers.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>> {
        let response = self
            .client
            .call_admin(|mut c| async move { c.list_topics(ListTopicsRequest {}).await })
            .await?;
        Ok(response.topics)
    }

    /// Describes a topic: config and, per partition, offsets, size, replicas and leader.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`].
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        let request = DescribeTopicRequest { name: name.into() };
        let response = self
            .client
            .call_admin(|mut c| {
                let request = request.clone();
                async move { c.describe_topic(request).await }
            })
            .await?;
        response.topic.ok_or_else(missing_topic)
    }

    /// Grows a topic to `total_partitions` partitions (never shrinks it).
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`]; [`Error::InvalidArgument`] if `total_partitions` is not larger
    /// than the current count.
    pub async fn create_partitions(
        &self,
        name: &str,
        total_partitions: u32,
    ) -> Result<TopicDescription> {
        let request = CreatePartitionsRequest {
            name: name.into(),
            total_partitions,
        };
        let response = self
            .client
            .call_admin(|mut c| {
                let request = request.clone();
                async move { c.create_partitions(request).await }
            })
            .await?;
        let _ = self.client.refresh().await;
        response.topic.ok_or_else(missing_topic)
    }

    /// Describes the cluster: its id, brokers and controller.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] when no broker answers.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        self.client
            .call_admin(|mut c| async move { c.describe_cluster(DescribeClusterRequest {}).await })
            .await
    }

    /// Lists every consumer group the coordinators know, in id order.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] when no broker answers.
    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>> {
        let response = self
            .client
            .call_admin(|mut c| async move { c.list_groups(ListGroupsRequest {}).await })
            .await?;
        Ok(response.groups)
    }

    /// Describes a consumer group: its members with their partitions, and per partition the
    /// owner, committed offset, log end and lag (records and ms).
    ///
    /// # Errors
    ///
    /// [`Error::GroupNotFound`]; [`Error::InvalidArgument`] with reason `INVALID_GROUP_ID`.
    pub async fn describe_group(&self, group_id: &str) -> Result<GroupDescription> {
        let request = DescribeGroupRequest {
            group_id: group_id.into(),
        };
        self.client
            .call_admin(|mut c| {
                let request = request.clone();
                async move { c.describe_group(request).await }
            })
            .await
    }

    /// Moves a consumer group's committed offsets (backwards too), or with
    /// [`ResetOffsets::dry_run`] only says where they would go. Returns the offsets as stored
    /// (or as they would be).
    ///
    /// # Errors
    ///
    /// [`Error::GroupNotEmpty`] while the group has members; [`Error::UnknownTopic`],
    /// [`Error::UnknownPartition`]; [`Error::InvalidArgument`] for a bad group id.
    pub async fn reset_group_offsets(&self, reset: ResetOffsets) -> Result<Vec<CommittedOffset>> {
        self.find_coordinator(&reset.group_id).await?;
        let request = ResetGroupOffsetsRequest {
            group_id: reset.group_id,
            topic: reset.topic,
            partitions: reset.partitions,
            position: Some(reset.to.into()),
            dry_run: reset.dry_run,
        };
        let response = self
            .client
            .call_admin(|mut c| {
                let request = request.clone();
                async move { c.reset_group_offsets(request).await }
            })
            .await?;
        Ok(response.offsets)
    }

    /// Deletes a consumer group without members, and its committed offsets.
    ///
    /// # Errors
    ///
    /// [`Error::GroupNotFound`]; [`Error::GroupNotEmpty`] while it has members.
    pub async fn delete_group(&self, group_id: &str) -> Result<()> {
        let request = DeleteGroupRequest {
            group_id: group_id.into(),
        };
        self.client
            .call_admin(|mut c| {
                let request = request.clone();
                async move { c.delete_group(request).await }
            })
            .await?;
        Ok(())
    }

    /// Asks for the group's coordinator first: on a new cluster that creates the offsets
    /// topic, which a reset needs to store offsets (it answers `COORDINATOR_NOT_AVAILABLE`
    /// without it; describe and delete answer `GROUP_ID_NOT_FOUND`).
    async fn find_coordinator(&self, group_id: &str) -> Result<()> {
        Coordinator::new(self.client.clone(), group_id.to_owned())
            .find()
            .await
            .map(drop)
    }

    /// Looks up offsets of `partitions` of `topic` (all when empty); see
    /// [`Client::list_offsets`].
    ///
    /// # Errors
    ///
    /// As [`Client::list_offsets`].
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[u32],
        at: SeekTo,
    ) -> Result<Vec<PartitionOffset>> {
        self.client.list_offsets(topic, partitions, at).await
    }
}

fn missing_topic() -> Error {
    Error::Status {
        code: tonic::Code::Internal,
        reason: String::new(),
        message: "the broker's answer has no topic".into(),
        status: None,
    }
}
