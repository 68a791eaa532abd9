//! Producer ids for idempotent producers (Kafka's `ProducerIdManager`), behind
//! `cairn.v1.Broker/InitProducerId`.
//!
//! Ids are unique in the cluster: the replicated metadata hands each broker blocks of
//! [`BLOCK_SIZE`] ids through the controller (`AllocateProducerIds`: in place when this broker
//! is the controller, otherwise over the internal `cairn.v1.Controller` service), and the
//! broker gives them out one by one, taking a new block when its block is used up. Nothing is
//! persisted here: a restarted broker simply takes a new block, so an id is never reused (the
//! unused rest of the old block is skipped, as in Kafka).

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::v1::{self as pb, controller_client::ControllerClient};
use tonic::Status;

use crate::metadata::Controller;

/// Bound on one allocation sent to a remote controller.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Ids taken from the controller at a time (Kafka's block size).
pub const BLOCK_SIZE: u32 = 1000;

/// Hands out producer ids from blocks allocated by the controller.
#[derive(Debug)]
pub struct ProducerIds {
    controller: Arc<Controller>,
    /// The current block `next..end`; an async mutex, so that callers arriving while a block is
    /// fetched wait for that one fetch instead of each taking a block.
    block: tokio::sync::Mutex<(i64, i64)>,
}

impl ProducerIds {
    /// Ids allocated through `controller`'s quorum.
    pub fn new(controller: Arc<Controller>) -> Self {
        Self {
            controller,
            block: tokio::sync::Mutex::new((0, 0)),
        }
    }

    /// The next unused producer id.
    ///
    /// # Errors
    ///
    /// The controller's refusal or unavailability (`NOT_CONTROLLER`, `METADATA_UNAVAILABLE`,
    /// UNAVAILABLE without a controller): retriable.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a block fetched for a cancelled call is kept for the next one (or skipped if
    /// the fetch itself was cancelled after the controller committed it: ids are never reused).
    pub async fn next(&self) -> Result<i64, Status> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let first = self.allocate().await?;
            *block = (first, first + i64::from(BLOCK_SIZE));
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }

    async fn allocate(&self) -> Result<i64, Status> {
        let quorum = self.controller.quorum();
        let me = quorum.id();
        if quorum.is_controller() {
            return Ok(self
                .controller
                .allocate_producer_ids(me, BLOCK_SIZE)
                .await?);
        }
        let channel = self.controller.remote_channel()?;
        let mut request = tonic::Request::new(pb::AllocateProducerIdsRequest {
            broker_id: me,
            count: BLOCK_SIZE,
        });
        request.set_timeout(CALL_TIMEOUT);
        let response = ControllerClient::new(channel)
            .allocate_producer_ids(request)
            .await?
            .into_inner();
        Ok(response.first_producer_id)
    }
}
