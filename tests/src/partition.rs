//! Partition-level waits for replication tests: a partition's leader, epoch, ISR and high
//! watermark as one broker describes them, waits for a new leader or a full ISR, and the record
//! of acknowledged values a producer task keeps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use cairn_proto::v1::DescribeTopicRequest;

use crate::{TestCluster, wait_for};

/// How long a replication wait may take: a few sessions and elections on a busy machine.
pub const PARTITION_WAIT: Duration = Duration::from_secs(60);

/// One partition as a broker describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The leader's id (0: none).
    pub leader: u32,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// The in-sync replicas.
    pub isr: Vec<u32>,
    /// The answering broker's high watermark.
    pub high_watermark: i64,
    /// Bytes of the answering broker's replica.
    pub size_bytes: u64,
}

/// Values a producer task got acknowledged: value → offset.
pub type Acked = Arc<tokio::sync::Mutex<HashMap<String, i64>>>;

/// Waits until `more` values beyond those acknowledged now are acknowledged.
///
/// # Errors
///
/// If that does not happen within [`PARTITION_WAIT`].
pub async fn wait_acked(acked: &Acked, more: usize) -> Result<()> {
    let target = acked.lock().await.len() + more;
    wait_for("acknowledged records", PARTITION_WAIT, || async {
        (acked.lock().await.len() >= target).then_some(())
    })
    .await
}

impl TestCluster {
    /// Waits for brokers 1, 2 and 3, creates `topic` with `partitions` partitions on all three,
    /// and waits until partition 0's ISR is full: the start of every replication test.
    ///
    /// # Errors
    ///
    /// If a broker does not come alive, the topic cannot be created, or the ISR stays short.
    pub async fn create_replicated_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        self.wait_brokers_alive(&[1, 2, 3]).await?;
        self.client()
            .await?
            .admin()
            .create_topic(cairn_client::NewTopic::new(topic, partitions).replication_factor(3))
            .await?;
        self.wait_full_isr(topic, 0).await?;
        Ok(())
    }

    /// `topic`/`partition` as broker `via` describes it; `None` if it does not answer (within
    /// 5 s), does not know the partition, or `via` is 0 (a `controller_id` of 0 means "no
    /// controller known yet", so a wait that asks the controller just waits on).
    pub async fn partition_state(
        &self,
        via: u32,
        topic: &str,
        partition: u32,
    ) -> Option<PartitionState> {
        if via == 0 {
            return None;
        }
        let mut admin = self.admin(via);
        let call = admin.describe_topic(DescribeTopicRequest { name: topic.into() });
        let topic = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .ok()?
            .ok()?
            .into_inner()
            .topic?;
        let p = topic.partitions.get(partition as usize)?;
        Some(PartitionState {
            leader: p.leader_id,
            leader_epoch: p.leader_epoch,
            isr: p.isr.clone(),
            high_watermark: p.high_watermark,
            size_bytes: p.size_bytes,
        })
    }

    /// Waits until some broker names a live broker other than `old` as the partition's leader;
    /// returns it.
    ///
    /// # Errors
    ///
    /// If that does not happen within [`PARTITION_WAIT`].
    pub async fn wait_new_leader(&self, topic: &str, partition: u32, old: u32) -> Result<u32> {
        wait_for("a new partition leader", PARTITION_WAIT, || async {
            for id in self.answering() {
                if let Some(s) = self.partition_state(id, topic, partition).await
                    && s.leader != 0
                    && s.leader != old
                    && self.answering().contains(&s.leader)
                {
                    return Some(s.leader);
                }
            }
            None
        })
        .await
    }

    /// Waits until the controller lists every broker of the cluster in the partition's ISR,
    /// with a leader; returns the leader.
    ///
    /// # Errors
    ///
    /// If that does not happen within [`PARTITION_WAIT`].
    pub async fn wait_full_isr(&self, topic: &str, partition: u32) -> Result<u32> {
        let all: Vec<u32> = self.ids().collect();
        wait_for("every replica in sync", PARTITION_WAIT, || async {
            let answer = self
                .describe_cluster(*self.answering().first()?)
                .await
                .ok()?;
            let controller = crate::cluster::controller_of(&answer)?;
            let mut s = self.partition_state(controller, topic, partition).await?;
            s.isr.sort_unstable();
            (s.isr == all && s.leader != 0).then_some(s.leader)
        })
        .await
    }
}
