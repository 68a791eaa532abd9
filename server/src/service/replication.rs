//! The internal `cairn.v1.Replication` service: the leader's side of follower fetches and of
//! epoch end-offset queries. `node::Partition` decides; this module converts, and hands an ISR
//! expansion the fetch called for to the [`IsrUpdater`].

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::v1::{self as pb, replication_server::ReplicationServer};
use tonic::{Request, Response, Status};

use crate::config::ReplicationConfig;
use crate::node::{Node, NodeError, Partition};
use crate::replication::alter::IsrUpdater;

/// The `cairn.v1.Replication` service.
#[derive(Debug, Clone)]
pub struct ReplicationService {
    node: Arc<Node>,
    isr: Arc<IsrUpdater>,
    config: ReplicationConfig,
}

impl ReplicationService {
    /// The service over `node`.
    pub fn new(node: Arc<Node>, isr: Arc<IsrUpdater>) -> Self {
        let config = node.config().replication.clone();
        Self { node, isr, config }
    }

    /// The service ready to add to a tonic server (fetch answers can be large).
    pub fn into_server(self) -> ReplicationServer<Self> {
        ReplicationServer::new(self)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// The hosted replica; a broker that does not host it cannot be its leader.
    fn hosted(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, Status> {
        match self.node.hosted(topic, partition) {
            Some(p) => Ok(p),
            None => {
                Err(self
                    .node
                    .partition(topic, partition)
                    .err()
                    .unwrap_or(NodeError::NotLeader {
                        topic: topic.to_owned(),
                        partition,
                        leader: None,
                        appended: None,
                    }))?
            }
        }
    }
}

#[tonic::async_trait]
impl pb::replication_server::Replication for ReplicationService {
    async fn replica_fetch(
        &self,
        request: Request<pb::ReplicaFetchRequest>,
    ) -> Result<Response<pb::ReplicaFetchResponse>, Status> {
        let req = request.into_inner();
        let p = self.hosted(&req.topic, req.partition)?;
        let max_bytes = req
            .max_bytes
            .min(self.config.replica_fetch_max_bytes.max(1)) as usize;
        let wait = Duration::from_millis(u64::from(
            req.max_wait_ms.min(self.config.replica_fetch_wait_max_ms),
        ));
        let (read, high_watermark, proposal) = p
            .serve_follower(
                req.replica_id,
                req.leader_epoch,
                req.fetch_offset,
                max_bytes,
                wait,
            )
            .await?;
        if let Some(isr) = proposal {
            self.isr.propose(Arc::clone(&p), isr);
        }
        Ok(Response::new(pb::ReplicaFetchResponse {
            batches: read.records,
            high_watermark,
            log_start_offset: read.log_start_offset,
            log_end_offset: read.log_end_offset,
        }))
    }

    async fn epoch_end_offset(
        &self,
        request: Request<pb::EpochEndOffsetRequest>,
    ) -> Result<Response<pb::EpochEndOffsetResponse>, Status> {
        let req = request.into_inner();
        let p = self.hosted(&req.topic, req.partition)?;
        let (epoch, end_offset) = p
            .epoch_end_offset(req.leader_epoch, req.epoch)?
            .unwrap_or((-1, -1));
        Ok(Response::new(pb::EpochEndOffsetResponse {
            epoch,
            end_offset,
        }))
    }
}
