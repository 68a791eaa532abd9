//! The broker node: the partitions this broker hosts, following the cluster metadata.
//!
//! `service/` (the gRPC edge) calls into this module with domain values and gets domain errors
//! back; nothing here knows tonic or prost. Topics live in the replicated cluster metadata
//! (`crate::metadata`); the node follows it (`reconcile`): it opens a [`Partition`] for every
//! replica assigned to this broker, marks which ones it leads, and closes and deletes the
//! replicas of deleted topics. It answers data requests only for partitions it leads, and
//! otherwise names the leader (`NOT_LEADER`). It also runs the background upkeep: retention and
//! interval flushes. `registry` is the topic file of single-broker data directories from before
//! cluster metadata, read once to migrate it.
//!
//! Locking: the partition map is read-mostly behind an `RwLock`; data requests clone an
//! `Arc<Partition>` out of it and release it at once. A mutex serialises reconcile passes.

mod error;
mod partition;
pub mod producers;
mod reconcile;
mod registry;
mod replica;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use error::NodeError;
pub use partition::{Partition, default_min_insync};
pub use registry::{Registry, TopicRecord, new_id};
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::metadata::{BrokerId, MetadataView};
use crate::topic::{TopicConfig, TopicName, default_topic_config};

/// Parses a topic name from a request.
///
/// # Errors
///
/// [`NodeError::InvalidTopicName`].
pub fn parse_topic(name: &str) -> Result<TopicName, NodeError> {
    TopicName::new(name).map_err(|source| NodeError::InvalidTopicName {
        name: name.to_owned(),
        source,
    })
}

/// A topic as described to admins: its metadata, and local figures for the partitions this
/// broker hosts.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    /// Name.
    pub name: TopicName,
    /// What the cluster metadata holds.
    pub record: crate::metadata::TopicRecord,
    /// The effective config (defaults filled in).
    pub effective: TopicConfig,
    /// Per-partition state, in index order.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    /// Copies of each partition (the first partition's replica count).
    pub fn replication_factor(&self) -> u32 {
        self.record
            .partitions
            .first()
            .map_or(0, |p| u32::try_from(p.replicas.len()).unwrap_or(u32::MAX))
    }
}

/// One partition as described to admins.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    /// Index.
    pub index: u32,
    /// Replicas, leader, leader epoch and ISR from the cluster metadata.
    pub record: crate::metadata::PartitionRecord,
    /// The log's figures, if this broker hosts a replica.
    pub local: Option<LocalLog>,
}

/// A hosted replica's figures.
#[derive(Debug, Clone, Copy)]
pub struct LocalLog {
    /// First stored offset.
    pub log_start_offset: i64,
    /// Offset the next record gets.
    pub high_watermark: i64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Segment files.
    pub segment_count: usize,
}

/// The data directory's exclusive lock: held for the broker's lifetime, so two brokers never
/// write the same partitions. Released when dropped, or when the process dies.
#[derive(Debug)]
pub struct DataDirLock(#[allow(dead_code)] std::fs::File);

/// A broker's hosted partitions, following the cluster metadata.
#[derive(Debug)]
pub struct Node {
    config: BrokerConfig,
    /// Broker-wide topic defaults, resolved against Cairn's built-in ones once.
    defaults: TopicConfig,
    /// The cluster metadata as this broker applied it.
    metadata: watch::Receiver<MetadataView>,
    /// Open partitions by topic, indexed by partition (`None` where this broker holds no
    /// replica); looked up by `&str` without allocating.
    partitions: RwLock<HashMap<TopicName, Vec<Option<Arc<Partition>>>>>,
    /// Serialises reconcile passes (opening, closing and deleting partitions).
    reconciling: Mutex<()>,
    /// Running follower fetchers by partition: the leader and epoch each follows.
    fetchers: Mutex<HashMap<(String, u32), Fetcher>>,
    /// Channels to partition leaders, shared by the fetchers.
    leader_channels: crate::peers::PeerChannels,
    /// The runtime fetchers run on (absent in synchronous unit tests: no fetchers then).
    runtime: Option<tokio::runtime::Handle>,
    _lock: DataDirLock,
}

/// A running follower fetcher.
#[derive(Debug)]
struct Fetcher {
    leader: BrokerId,
    epoch: i32,
    cancel: tokio_util::sync::CancellationToken,
}

impl Node {
    /// A node over the locked data directory, following `metadata`. It hosts nothing until
    /// [`Node::reconcile`] opens the partitions the metadata assigns it.
    pub fn new(
        config: BrokerConfig,
        lock: DataDirLock,
        metadata: watch::Receiver<MetadataView>,
    ) -> Arc<Self> {
        let defaults = config.topic_defaults.resolve(&default_topic_config());
        Arc::new(Self {
            defaults,
            metadata,
            partitions: RwLock::new(HashMap::new()),
            reconciling: Mutex::new(()),
            fetchers: Mutex::new(HashMap::new()),
            leader_channels: crate::replication::fetcher::leader_channels(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            config,
            _lock: lock,
        })
    }

    /// The broker configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// This broker's id.
    pub fn id(&self) -> BrokerId {
        self.config.node_id
    }

    /// The address clients reach this broker at.
    pub fn advertised_address(&self) -> String {
        self.config
            .advertised_address
            .clone()
            .unwrap_or_else(|| self.config.listen.to_string())
    }

    /// The cluster metadata as this broker last applied it.
    pub fn metadata(&self) -> MetadataView {
        self.metadata.borrow().clone()
    }

    /// This cluster's id (empty until the first controller named it).
    pub fn cluster_id(&self) -> String {
        self.metadata.borrow().state.cluster_id().to_owned()
    }

    fn partition_dir(&self, topic: &str, index: u32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{index}"))
    }

    /// Every topic in the cluster: name, partition count and replication factor, in name order.
    pub fn list_topics(&self) -> Vec<(String, u32, u32)> {
        let view = self.metadata();
        view.state
            .topics()
            .iter()
            .map(|(name, t)| {
                let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
                (
                    name.clone(),
                    u32::try_from(t.partitions.len()).unwrap_or(u32::MAX),
                    u32::try_from(rf).unwrap_or(u32::MAX),
                )
            })
            .collect()
    }

    /// A topic with its effective config, its partitions' replicas and leaders, and local
    /// figures for the replicas hosted here.
    ///
    /// # Errors
    ///
    /// [`NodeError::InvalidTopicName`], [`NodeError::UnknownTopic`].
    pub fn describe_topic(&self, name: &str) -> Result<TopicInfo, NodeError> {
        let name = parse_topic(name)?;
        let view = self.metadata();
        let record = view
            .state
            .topic(name.as_str())
            .cloned()
            .ok_or_else(|| NodeError::UnknownTopic(name.to_string()))?;
        let partitions = (0u32..)
            .zip(&record.partitions)
            .map(|(index, p)| PartitionInfo {
                index,
                record: p.clone(),
                local: self.hosted(name.as_str(), index).map(|h| LocalLog {
                    log_start_offset: h.log_start_offset(),
                    high_watermark: h.high_watermark(),
                    size_bytes: h.size_bytes(),
                    segment_count: h.segment_count(),
                }),
            })
            .collect();
        Ok(TopicInfo {
            effective: record.config.resolve(&self.defaults),
            name,
            record,
            partitions,
        })
    }

    /// The replica of `topic`/`index` hosted here, whether it leads or not.
    pub fn hosted(&self, topic: &str, index: u32) -> Option<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partition map lock is not poisoned")
            .get(topic)
            .and_then(|list| list.get(index as usize))
            .and_then(Option::clone)
    }

    /// The partition `index` of `topic`, if this broker leads it: what data requests use. The
    /// lookup allocates nothing; a miss is explained from the metadata.
    ///
    /// # Errors
    ///
    /// [`NodeError::InvalidTopicName`], [`NodeError::UnknownTopic`],
    /// [`NodeError::UnknownPartition`], or [`NodeError::NotLeader`] naming the leader.
    pub fn partition(&self, topic: &str, index: u32) -> Result<Arc<Partition>, NodeError> {
        if let Some(p) = self.hosted(topic, index)
            && p.is_leader()
        {
            return Ok(p);
        }
        let name = parse_topic(topic)?;
        let view = self.metadata();
        let Some(t) = view.state.topic(name.as_str()) else {
            return Err(NodeError::UnknownTopic(name.to_string()));
        };
        let Some(p) = t.partitions.get(index as usize) else {
            return Err(NodeError::UnknownPartition {
                topic: name.to_string(),
                partition: index,
                count: u32::try_from(t.partitions.len()).unwrap_or(u32::MAX),
            });
        };
        let leader = p.leader.filter(|&l| l != self.id()).map(|l| {
            let addr = view.state.brokers().get(&l).map(|b| b.addr.clone());
            (l, addr)
        });
        Err(NodeError::NotLeader {
            topic: name.to_string(),
            partition: index,
            leader,
            appended: None,
        })
    }

    /// The partitions this broker leads.
    pub fn led_partitions(&self) -> Vec<Arc<Partition>> {
        let mut all = self.all_partitions();
        all.retain(|p| p.is_leader());
        all
    }

    fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partition map lock is not poisoned")
            .values()
            .flatten()
            .flatten()
            .cloned()
            .collect()
    }

    /// Applies retention to every partition; logs and skips failures.
    pub fn apply_retention(&self, now_ms: i64) -> usize {
        let mut deleted = 0;
        for p in self.all_partitions() {
            match p.apply_retention(now_ms) {
                Ok(n) => deleted += n,
                Err(e) => tracing::error!(error = %e, "retention failed"),
            }
        }
        deleted
    }

    /// Runs retention and interval flushes until `shutdown` fires.
    pub async fn run_upkeep(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut flush = tokio::time::interval(Duration::from_millis(100));
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut retention = tokio::time::interval(Duration::from_millis(
            self.config.retention_check_interval_ms,
        ));
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = flush.tick() => {
                    let node = Arc::clone(&self);
                    let _ = tokio::task::spawn_blocking(move || {
                        for p in node.all_partitions() {
                            if let Err(e) = p.flush_if_due() {
                                tracing::error!(error = %e, "interval flush failed");
                            }
                        }
                    }).await;
                }
                _ = retention.tick() => {
                    let node = Arc::clone(&self);
                    let _ = tokio::task::spawn_blocking(move || node.apply_retention(now_ms())).await;
                }
            }
        }
    }

    /// Stops every follower fetcher (on shutdown).
    pub fn stop_fetchers(&self) {
        let mut fetchers = self
            .fetchers
            .lock()
            .expect("fetcher map lock is not poisoned");
        for (_, f) in fetchers.drain() {
            f.cancel.cancel();
        }
    }

    /// Flushes every partition; called on graceful shutdown.
    pub fn flush_all(&self) {
        for p in self.all_partitions() {
            if let Err(e) = p.flush() {
                tracing::error!(error = %e, "flush on shutdown failed");
            }
        }
    }
}

/// Creates the data directory if needed and takes its exclusive lock.
///
/// # Errors
///
/// [`NodeError::DataDirLocked`] if another process holds it, [`NodeError::Io`] otherwise.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, NodeError> {
    std::fs::create_dir_all(dir).map_err(NodeError::io("creating data directory", dir))?;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(NodeError::io("opening", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(NodeError::DataDirLocked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(NodeError::io("locking", &path)(e)),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
