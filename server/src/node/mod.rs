//! The broker node: the topics it knows and the partitions it hosts.
//!
//! `service/` (the gRPC edge) calls into this module with domain values and gets domain errors
//! back; nothing here knows tonic or prost. The node owns the topic [`Registry`] and one open
//! [`Partition`] per hosted partition, and runs the background upkeep: retention and interval
//! flushes.
//!
//! Locking: the registry mutex serialises topic changes (create, delete, add partitions) and is
//! never held across an await. The partition map is read-mostly behind an `RwLock`; data
//! requests clone an `Arc<Partition>` out of it and release it at once.

mod error;
mod partition;
mod registry;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use error::NodeError;
pub use partition::Partition;
pub use registry::{Registry, TopicRecord, new_id};

use crate::config::BrokerConfig;
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

/// A topic as described to admins.
#[derive(Debug, Clone)]
pub struct TopicInfo {
    /// Name.
    pub name: TopicName,
    /// What the registry holds.
    pub record: TopicRecord,
    /// The effective config (defaults filled in).
    pub effective: TopicConfig,
    /// Per-partition state, in index order.
    pub partitions: Vec<PartitionInfo>,
}

/// One partition as described to admins.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    /// Index.
    pub index: u32,
    /// First stored offset.
    pub log_start_offset: i64,
    /// Offset the next record gets.
    pub high_watermark: i64,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// Segment files.
    pub segment_count: usize,
    /// Leader epoch.
    pub leader_epoch: i32,
}

/// A broker's topics and partitions.
#[derive(Debug)]
pub struct Node {
    config: BrokerConfig,
    /// Broker-wide topic defaults, resolved against Cairn's built-in ones once.
    defaults: TopicConfig,
    registry: Mutex<Registry>,
    /// Open partitions by topic, in index order; looked up by `&str` without allocating.
    partitions: RwLock<HashMap<TopicName, Vec<Arc<Partition>>>>,
    /// Holds an exclusive lock on `<data-dir>/.lock` for the node's lifetime, so two brokers
    /// never write the same partitions.
    _lock: std::fs::File,
}

impl Node {
    /// Opens the data directory: loads the registry and opens (recovering) every partition.
    ///
    /// # Errors
    ///
    /// [`NodeError`] if the directory, the registry or a partition cannot be opened.
    pub fn open(config: BrokerConfig) -> Result<Arc<Self>, NodeError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(NodeError::io("creating data directory", &config.data_dir))?;
        let lock = lock_data_dir(&config.data_dir)?;
        let registry = Registry::load(&config.data_dir)?;
        let defaults = config.topic_defaults.resolve(&default_topic_config());
        let node = Self {
            defaults,
            registry: Mutex::new(registry),
            partitions: RwLock::new(HashMap::new()),
            config,
            _lock: lock,
        };
        node.remove_deleted_leftovers();
        let topics: Vec<_> = node.lock_registry().topics.clone().into_iter().collect();
        for (name, record) in topics {
            for index in 0..record.partitions {
                node.open_partition(&name, &record, index)?;
            }
        }
        Ok(Arc::new(node))
    }

    /// The broker configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// This cluster's id.
    pub fn cluster_id(&self) -> String {
        self.lock_registry().cluster_id.clone()
    }

    fn lock_registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().expect("registry lock is not poisoned")
    }

    fn partition_dir(&self, topic: &TopicName, index: u32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{index}"))
    }

    fn open_partition(
        &self,
        name: &TopicName,
        record: &TopicRecord,
        index: u32,
    ) -> Result<Arc<Partition>, NodeError> {
        let config = record.config.resolve(&self.defaults);
        let partition = Arc::new(Partition::open(
            name.clone(),
            index,
            self.partition_dir(name, index),
            config,
            0,
        )?);
        let mut map = self
            .partitions
            .write()
            .expect("partition map lock is not poisoned");
        let list = map.entry(name.clone()).or_default();
        debug_assert_eq!(list.len(), index as usize, "partitions open in index order");
        list.push(Arc::clone(&partition));
        drop(map);
        Ok(partition)
    }

    /// Creates a topic and opens its partitions.
    ///
    /// # Errors
    ///
    /// [`NodeError::InvalidTopicName`], [`NodeError::TopicExists`],
    /// [`NodeError::InvalidArgument`] (partitions, config), [`NodeError::InvalidReplicationFactor`].
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        config: TopicConfig,
    ) -> Result<TopicInfo, NodeError> {
        let name = parse_topic(name)?;
        self.check_partition_count(partitions)?;
        let replication_factor = replication_factor.max(1);
        if replication_factor > 1 {
            return Err(NodeError::InvalidReplicationFactor {
                requested: replication_factor,
                available: 1,
            });
        }
        config
            .validate()
            .map_err(|reason| NodeError::InvalidArgument {
                field: "config",
                reason,
            })?;
        let record = TopicRecord {
            topic_id: new_id(),
            partitions,
            replication_factor,
            config,
        };
        {
            let mut registry = self.lock_registry();
            if registry.topics.contains_key(&name) {
                return Err(NodeError::TopicExists(name.to_string()));
            }
            // Partition directories first, registry last: a crash in between leaves directories
            // the registry does not name, which the next start removes.
            for index in 0..partitions {
                if let Err(e) = self.open_partition(&name, &record, index) {
                    self.close_partitions(&name, 0..index, true);
                    return Err(e);
                }
            }
            registry.topics.insert(name.clone(), record);
            if let Err(e) = registry.save() {
                registry.topics.remove(&name);
                self.close_partitions(&name, 0..partitions, true);
                return Err(e);
            }
        }
        tracing::info!(topic = %name, partitions, "created topic");
        self.describe_topic(name.as_str())
    }

    fn check_partition_count(&self, partitions: u32) -> Result<(), NodeError> {
        let max = self.config.limits.max_partitions_per_topic;
        if partitions == 0 || partitions > max {
            return Err(NodeError::InvalidArgument {
                field: "partitions",
                reason: format!("must be between 1 and {max}, got {partitions}"),
            });
        }
        Ok(())
    }

    /// Drops partitions `range` (always a suffix: the topic's last ones) from the map and, if
    /// `delete`, removes their directories.
    fn close_partitions(&self, name: &TopicName, range: std::ops::Range<u32>, delete: bool) {
        {
            let mut map = self
                .partitions
                .write()
                .expect("partition map lock is not poisoned");
            if let Some(list) = map.get_mut(name.as_str()) {
                list.truncate(range.start as usize);
                if list.is_empty() {
                    map.remove(name.as_str());
                }
            }
        }
        if delete {
            for index in range {
                let dir = self.partition_dir(name, index);
                if let Err(e) = std::fs::remove_dir_all(&dir)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove partition directory");
                }
            }
        }
    }

    /// Deletes a topic and its data.
    ///
    /// # Errors
    ///
    /// [`NodeError::InvalidTopicName`], [`NodeError::UnknownTopic`], [`NodeError::Io`].
    pub fn delete_topic(&self, name: &str) -> Result<(), NodeError> {
        let name = parse_topic(name)?;
        let mut registry = self.lock_registry();
        let Some(record) = registry.topics.remove(&name) else {
            return Err(NodeError::UnknownTopic(name.to_string()));
        };
        if let Err(e) = registry.save() {
            registry.topics.insert(name, record);
            return Err(e);
        }
        // The registry no longer names the topic, so from here on a crash only leaves garbage
        // directories, which the next start removes.
        self.close_partitions(&name, 0..record.partitions, true);
        tracing::info!(topic = %name, "deleted topic");
        Ok(())
    }

    /// Removes partition directories that no registered topic owns (a crash during create or
    /// delete). Only directories named like `<valid-topic>-<number>` are considered.
    fn remove_deleted_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.config.data_dir) else {
            return;
        };
        let registry = self.lock_registry();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            let Some((topic, index)) = name.rsplit_once('-') else {
                continue;
            };
            let (Ok(topic), Ok(index)) = (TopicName::new(topic), index.parse::<u32>()) else {
                continue;
            };
            let owned = registry
                .topics
                .get(&topic)
                .is_some_and(|r| index < r.partitions);
            if !owned && entry.path().is_dir() {
                tracing::warn!(dir = %entry.path().display(), "removing partition directory of a deleted topic");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Every topic, in name order.
    pub fn list_topics(&self) -> Vec<(TopicName, TopicRecord)> {
        self.lock_registry()
            .topics
            .iter()
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect()
    }

    /// A topic with its effective config and per-partition state.
    ///
    /// # Errors
    ///
    /// [`NodeError::InvalidTopicName`], [`NodeError::UnknownTopic`].
    pub fn describe_topic(&self, name: &str) -> Result<TopicInfo, NodeError> {
        let name = parse_topic(name)?;
        let record = self
            .lock_registry()
            .topics
            .get(&name)
            .cloned()
            .ok_or_else(|| NodeError::UnknownTopic(name.to_string()))?;
        let partitions = (0..record.partitions)
            .map(|index| {
                let p = self.partition(name.as_str(), index)?;
                Ok(PartitionInfo {
                    index,
                    log_start_offset: p.log_start_offset(),
                    high_watermark: p.high_watermark(),
                    size_bytes: p.size_bytes(),
                    segment_count: p.segment_count(),
                    leader_epoch: p.leader_epoch(),
                })
            })
            .collect::<Result<_, NodeError>>()?;
        Ok(TopicInfo {
            effective: record.config.resolve(&self.defaults),
            name,
            record,
            partitions,
        })
    }

    /// Grows a topic to `total` partitions.
    ///
    /// # Errors
    ///
    /// [`NodeError::UnknownTopic`], [`NodeError::InvalidArgument`] if `total` is not larger.
    pub fn create_partitions(&self, name: &str, total: u32) -> Result<TopicInfo, NodeError> {
        let name = parse_topic(name)?;
        {
            let mut registry = self.lock_registry();
            let Some(record) = registry.topics.get(&name).cloned() else {
                return Err(NodeError::UnknownTopic(name.to_string()));
            };
            self.check_partition_count(total)?;
            if total <= record.partitions {
                return Err(NodeError::InvalidArgument {
                    field: "total_partitions",
                    reason: format!(
                        "topic {name:?} already has {} partitions; the new total must be larger",
                        record.partitions
                    ),
                });
            }
            for index in record.partitions..total {
                if let Err(e) = self.open_partition(&name, &record, index) {
                    self.close_partitions(&name, record.partitions..index, true);
                    return Err(e);
                }
            }
            let updated = TopicRecord {
                partitions: total,
                ..record.clone()
            };
            registry.topics.insert(name.clone(), updated);
            if let Err(e) = registry.save() {
                registry.topics.insert(name.clone(), record.clone());
                self.close_partitions(&name, record.partitions..total, true);
                return Err(e);
            }
        }
        self.describe_topic(name.as_str())
    }

    /// The partition `index` of `topic`, if this broker hosts it. The lookup allocates
    /// nothing; the name is validated only to explain a miss.
    ///
    /// # Errors
    ///
    /// [`NodeError::InvalidTopicName`], [`NodeError::UnknownTopic`] or
    /// [`NodeError::UnknownPartition`].
    pub fn partition(&self, topic: &str, index: u32) -> Result<Arc<Partition>, NodeError> {
        if let Some(p) = self
            .partitions
            .read()
            .expect("partition map lock is not poisoned")
            .get(topic)
            .and_then(|list| list.get(index as usize))
        {
            return Ok(Arc::clone(p));
        }
        let name = parse_topic(topic)?;
        match self.lock_registry().topics.get(&name) {
            None => Err(NodeError::UnknownTopic(name.to_string())),
            Some(r) => Err(NodeError::UnknownPartition {
                topic: name.to_string(),
                partition: index,
                count: r.partitions,
            }),
        }
    }

    fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partition map lock is not poisoned")
            .values()
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

    /// Flushes every partition; called on graceful shutdown.
    pub fn flush_all(&self) {
        for p in self.all_partitions() {
            if let Err(e) = p.flush() {
                tracing::error!(error = %e, "flush on shutdown failed");
            }
        }
    }
}

/// Takes the data directory's exclusive lock (released when the file is closed, including when
/// the process dies).
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, NodeError> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(NodeError::io("opening", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
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
