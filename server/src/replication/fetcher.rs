//! The follower side of replication: one task per followed partition copies the leader's log.
//!
//! A fetcher lives for one (leader, leader epoch): the node starts it when the metadata makes
//! this broker a follower and cancels it when the leader or epoch changes. It first truncates
//! by leader epoch — it asks the leader where its own latest epoch ends and cuts there, asking
//! again for earlier epochs while the logs diverge (KIP-101, KIP-279) — never to its high
//! watermark. Then it long-polls `ReplicaFetch` from its log end, appends what comes (offsets and
//! epochs as the leader stamped them) and takes the leader's high watermark. Each fetch offset
//! tells the leader this follower's log end, which is how the leader's high watermark advances.

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::v1::{self as pb, replication_client::ReplicationClient};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use super::{Truncation, truncation_offset};
use crate::config::ReplicationConfig;
use crate::metadata::BrokerId;
use crate::node::{NodeError, Partition};
use crate::peers::PeerChannels;

/// Pause after a failed fetch before the next.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Bound on one RPC beyond its long-poll wait.
const RPC_MARGIN: Duration = Duration::from_secs(5);

/// Channels to partition leaders, shared by every fetcher of a broker: large HTTP/2 windows, so
/// one fetch carries a full answer without waiting for window updates.
pub fn leader_channels() -> PeerChannels {
    PeerChannels::new(|e| {
        e.connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .initial_stream_window_size(16 << 20)
            .initial_connection_window_size(32 << 20)
    })
}

/// What a fetcher follows.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// This broker.
    pub me: BrokerId,
    /// The leader.
    pub leader: BrokerId,
    /// The leader's address.
    pub leader_addr: String,
    /// The leader epoch being followed.
    pub epoch: i32,
}

/// Why one fetch round failed.
#[derive(Debug)]
enum Failure {
    /// The logs diverged or the leader's log moved: truncate by epoch again.
    Diverged(String),
    /// Anything else: pause and retry (the node cancels this fetcher if leadership moved).
    Retry(String),
}

/// Copies the leader's log into `partition` until `cancel` fires.
pub async fn run(
    partition: Arc<Partition>,
    assignment: Assignment,
    config: ReplicationConfig,
    channels: PeerChannels,
    cancel: CancellationToken,
) {
    let topic = partition.topic.to_string();
    let index = partition.index;
    let channel = match channels.get(&assignment.leader_addr) {
        Ok(c) => c,
        Err(e) => {
            let addr = &assignment.leader_addr;
            tracing::error!(%topic, partition = index, %addr, error = %e, "cannot follow the leader");
            return;
        }
    };
    let mut client = ReplicationClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let mut truncated = false;
    loop {
        let round = async {
            if !truncated {
                truncate(&partition, &mut client, &assignment).await?;
                truncated = true;
            }
            fetch(&partition, &mut client, &assignment, &config).await
        };
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            r = round => r,
        };
        match outcome {
            Ok(()) => {}
            Err(Failure::Diverged(why)) => {
                tracing::info!(%topic, partition = index, %why, "truncating by leader epoch again");
                truncated = false;
            }
            Err(Failure::Retry(why)) => {
                tracing::debug!(%topic, partition = index, %why, "fetch failed; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// Truncates by leader epoch: asks the leader where this log's latest epoch ends, and cuts
/// there, asking about earlier epochs while the answer says the logs diverge further back.
async fn truncate(
    partition: &Partition,
    client: &mut ReplicationClient<Channel>,
    a: &Assignment,
) -> Result<(), Failure> {
    let cache = partition.epoch_cache();
    let mut asked = cache.latest_epoch();
    while let Some(epoch) = asked {
        let request = pb::EpochEndOffsetRequest {
            topic: partition.topic.to_string(),
            partition: partition.index,
            replica_id: a.me,
            leader_epoch: a.epoch,
            epoch,
        };
        let answer = client
            .epoch_end_offset(request)
            .await
            .map_err(|s| Failure::Retry(format!("{}: {}", reason(&s), s.message())))?
            .into_inner();
        let leader_answer = (answer.epoch >= 0).then_some((answer.epoch, answer.end_offset));
        match truncation_offset(&cache, partition.log_end_offset(), leader_answer) {
            Truncation::To(offset) => {
                if offset < partition.log_end_offset() {
                    tracing::info!(
                        topic = %partition.topic,
                        partition = partition.index,
                        from = partition.log_end_offset(),
                        to = offset,
                        "truncating to the leader's log"
                    );
                }
                return cut(partition, offset).await;
            }
            Truncation::AskAgain { epoch } => asked = Some(epoch),
            Truncation::StartOver => {
                // Nothing here matches the leader's log: empty it; the first fetch finds where
                // the leader's log starts.
                tracing::warn!(
                    topic = %partition.topic,
                    partition = partition.index,
                    "no common epoch with the leader: emptying the replica"
                );
                return partition
                    .reset_to(partition.log_start_offset())
                    .await
                    .map_err(|e| Failure::Retry(e.to_string()));
            }
            Truncation::InvalidAnswer => {
                return Err(Failure::Retry(format!(
                    "the leader answered epoch {} end {} to a question about epoch {epoch}",
                    answer.epoch, answer.end_offset
                )));
            }
        }
    }
    Ok(())
}

/// Truncates to `offset`; below the log start, restarts the log there.
async fn cut(partition: &Partition, offset: i64) -> Result<(), Failure> {
    let result = if offset < partition.log_start_offset() {
        partition.reset_to(offset.max(0)).await
    } else {
        partition.truncate_to(offset).await.map(|_| ())
    };
    result.map_err(|e| Failure::Retry(e.to_string()))
}

/// One fetch from the log end, appended.
async fn fetch(
    partition: &Partition,
    client: &mut ReplicationClient<Channel>,
    a: &Assignment,
    config: &ReplicationConfig,
) -> Result<(), Failure> {
    let offset = partition.log_end_offset();
    let mut request = tonic::Request::new(pb::ReplicaFetchRequest {
        topic: partition.topic.to_string(),
        partition: partition.index,
        replica_id: a.me,
        leader_epoch: a.epoch,
        fetch_offset: offset,
        max_bytes: config.replica_fetch_max_bytes,
        max_wait_ms: config.replica_fetch_wait_max_ms,
    });
    request.set_timeout(
        Duration::from_millis(u64::from(config.replica_fetch_wait_max_ms)) + RPC_MARGIN,
    );
    let response = match client.replica_fetch(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let why = format!("{}: {}", reason(&status), status.message());
            if reason(&status) == "OFFSET_OUT_OF_RANGE" {
                let start = status.get_details_error_info().and_then(|i| {
                    i.metadata
                        .get("log_start_offset")
                        .and_then(|v| v.parse::<i64>().ok())
                });
                if let Some(start) = start.filter(|&s| offset < s) {
                    // The leader's log starts past everything here (retention): start over there.
                    partition
                        .reset_to(start)
                        .await
                        .map_err(|e| Failure::Retry(e.to_string()))?;
                    return Ok(());
                }
                return Err(Failure::Diverged(why));
            }
            return Err(Failure::Retry(why));
        }
    };
    let leader_log_start = response.log_start_offset;
    match partition
        .append_replicated(response.batches, response.high_watermark)
        .await
    {
        Ok(_) => {
            // The leader's log start moved up (retention, a coordinator's cleaning): follow it,
            // whole segments at a time, as Kafka's followers do.
            if leader_log_start > partition.log_start_offset()
                && let Err(e) = partition.delete_segments_below(leader_log_start)
            {
                tracing::warn!(error = %e, "could not follow the leader's log start");
            }
            Ok(())
        }
        Err(e @ NodeError::Log { .. }) => Err(Failure::Diverged(e.to_string())),
        Err(e) => Err(Failure::Retry(e.to_string())),
    }
}
