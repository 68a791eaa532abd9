//! The internal `cairn.v1.Controller` service: brokers register and heartbeat here. Only the
//! controller accepts; any other broker answers `NOT_CONTROLLER` naming the one it knows
//! (`metadata::Controller` decides, this module only converts).

use std::sync::Arc;

use cairn_proto::v1::{self as pb, controller_server::ControllerServer};
use tonic::{Request, Response, Status};

use crate::metadata::Controller;

/// The `cairn.v1.Controller` service over this broker's [`Controller`].
#[derive(Debug, Clone)]
pub struct ControllerService {
    controller: Arc<Controller>,
}

impl ControllerService {
    /// The service for `controller`.
    pub fn new(controller: Arc<Controller>) -> Self {
        Self { controller }
    }

    /// The service ready to add to a tonic server.
    pub fn into_server(self) -> ControllerServer<Self> {
        ControllerServer::new(self)
    }
}

#[tonic::async_trait]
impl pb::controller_server::Controller for ControllerService {
    async fn register_broker(
        &self,
        request: Request<pb::RegisterBrokerRequest>,
    ) -> Result<Response<pb::RegisterBrokerResponse>, Status> {
        let req = request.into_inner();
        let committed = self
            .controller
            .register(req.broker_id, &req.address)
            .await?;
        let broker_epoch = match committed.response {
            crate::metadata::MetadataResponse::BrokerRegistered { epoch, .. } => epoch,
            other => {
                return Err(Status::internal(format!(
                    "registration answered {other:?}, not an epoch"
                )));
            }
        };
        Ok(Response::new(pb::RegisterBrokerResponse {
            broker_epoch,
            metadata_index: committed.index,
        }))
    }

    async fn broker_heartbeat(
        &self,
        request: Request<pb::BrokerHeartbeatRequest>,
    ) -> Result<Response<pb::BrokerHeartbeatResponse>, Status> {
        let req = request.into_inner();
        let fenced = self
            .controller
            .heartbeat(req.broker_id, req.broker_epoch, req.want_shutdown)
            .await?;
        Ok(Response::new(pb::BrokerHeartbeatResponse {
            fenced,
            lease_ms: u64::try_from(self.controller.session().as_millis()).unwrap_or(u64::MAX),
        }))
    }

    async fn alter_isr(
        &self,
        request: Request<pb::AlterIsrRequest>,
    ) -> Result<Response<pb::AlterIsrResponse>, Status> {
        let req = request.into_inner();
        let committed = self
            .controller
            .alter_isr(
                &req.topic,
                req.partition,
                req.leader_id,
                req.leader_epoch,
                req.isr,
            )
            .await?;
        Ok(Response::new(pb::AlterIsrResponse {
            metadata_index: committed.index,
        }))
    }

    async fn allocate_producer_ids(
        &self,
        request: Request<pb::AllocateProducerIdsRequest>,
    ) -> Result<Response<pb::AllocateProducerIdsResponse>, Status> {
        let req = request.into_inner();
        let first = self
            .controller
            .allocate_producer_ids(req.broker_id, req.count)
            .await?;
        Ok(Response::new(pb::AllocateProducerIdsResponse {
            first_producer_id: first,
            count: req.count,
        }))
    }
}
