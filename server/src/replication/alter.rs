//! ISR changes, from the partition leader to the controller (Kafka's AlterPartition).
//!
//! A leader proposes a new ISR when a follower catches up (on its fetch) or falls behind
//! `replica_lag_time_max_ms` (checked periodically). The proposal goes to the controller: in
//! place when this broker is the controller, otherwise over the internal `cairn.v1.Controller`
//! service. Until the change comes back through the metadata, the leader computes its high
//! watermark over the maximal ISR (the committed one plus a follower being admitted, KIP-497):
//! a leaving follower is still required, a joining one already is.

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::v1::{self as pb, controller_client::ControllerClient};
use tokio_util::sync::CancellationToken;

use crate::metadata::{BrokerId, Controller};
use crate::node::{Node, Partition};

/// Bound on one ISR change sent to a remote controller.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends ISR proposals to the controller.
#[derive(Debug)]
pub struct IsrUpdater {
    controller: Arc<Controller>,
}

impl IsrUpdater {
    /// An updater reaching the controller through `controller`'s quorum view.
    pub fn new(controller: Arc<Controller>) -> Arc<Self> {
        Arc::new(Self { controller })
    }

    /// Proposes `isr` for `partition` in the background; a failure clears the proposal so the
    /// next check makes it again.
    pub fn propose(self: &Arc<Self>, partition: Arc<Partition>, isr: Vec<BrokerId>) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let epoch = partition.leader_epoch();
            match this.send(&partition, epoch, isr.clone()).await {
                Ok(()) => tracing::info!(
                    topic = %partition.topic,
                    partition = partition.index,
                    ?isr,
                    "ISR change committed"
                ),
                Err(e) => {
                    // Expected while a controller election runs; the next check proposes again.
                    tracing::debug!(
                        topic = %partition.topic,
                        partition = partition.index,
                        ?isr,
                        error = %e,
                        "ISR change failed"
                    );
                    partition.isr_proposal_failed();
                }
            }
        });
    }

    async fn send(&self, p: &Partition, epoch: i32, isr: Vec<BrokerId>) -> Result<(), String> {
        let quorum = self.controller.quorum();
        let me = quorum.id();
        if quorum.is_controller() {
            return self
                .controller
                .alter_isr(p.topic.as_str(), p.index, me, epoch, isr)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
        }
        let channel = self
            .controller
            .remote_channel()
            .map_err(|e| e.to_string())?;
        let mut request = tonic::Request::new(pb::AlterIsrRequest {
            topic: p.topic.to_string(),
            partition: p.index,
            leader_id: me,
            leader_epoch: epoch,
            isr,
        });
        request.set_timeout(CALL_TIMEOUT);
        ControllerClient::new(channel)
            .alter_isr(request)
            .await
            .map(|_| ())
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }
}

/// Every `lag_max / 2` (at most every quarter of `silence_max`), proposes dropping followers
/// that fell behind or went silent from the ISRs of the partitions this broker leads. Returns
/// when `shutdown` fires.
pub async fn run_isr_checks(
    node: Arc<Node>,
    updater: Arc<IsrUpdater>,
    replication: crate::config::ReplicationConfig,
    shutdown: CancellationToken,
) {
    let lag = i64::try_from(replication.replica_lag_time_max_ms).unwrap_or(i64::MAX);
    let silence = i64::try_from(replication.replica_fetch_silence_max_ms).unwrap_or(i64::MAX);
    let every = (replication.replica_lag_time_max_ms / 2)
        .min(replication.replica_fetch_silence_max_ms / 4)
        .max(50);
    let mut tick = tokio::time::interval(Duration::from_millis(every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for p in node.led_partitions() {
            if let Some(isr) = p.isr_proposal(lag, silence) {
                updater.propose(p, isr);
            }
        }
    }
}
