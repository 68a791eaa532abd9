//! The topic registry of single-broker data directories from before cluster metadata:
//! `<data-dir>/topics.json`, which topics existed with how many partitions and which config.
//!
//! Topics now live in the replicated cluster metadata (DESIGN.md §4). A broker that finds this
//! file migrates it once: the controller writes each topic (same id, same partitions, on this
//! broker) into the metadata, then the file is renamed to `topics.json.migrated` ([`retire`]).
//! Until then ([`Registry::pending`]) no partition directory is treated as a stray.
//!
//! [`retire`]: Registry::retire

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::topic::{TopicConfig, TopicName};

use super::NodeError;

const FILE_NAME: &str = "topics.json";
const RETIRED_NAME: &str = "topics.json.migrated";
const FORMAT_VERSION: u32 = 1;

/// One topic as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Stable id: tells a re-created topic from the one deleted before it.
    pub topic_id: String,
    /// Number of partitions; partitions are `0..partitions`.
    pub partitions: u32,
    /// Copies of each partition.
    pub replication_factor: u32,
    /// The settings given at creation; unset fields follow the broker's defaults.
    pub config: TopicConfig,
}

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    cluster_id: String,
    topics: BTreeMap<TopicName, TopicRecord>,
}

/// The registry in memory, and the file it mirrors.
#[derive(Debug)]
pub struct Registry {
    path: PathBuf,
    /// Generated once, when the data directory is first used.
    pub cluster_id: String,
    /// Topics by name (sorted, so listings are stable).
    pub topics: BTreeMap<TopicName, TopicRecord>,
}

impl Registry {
    /// Whether `data_dir` holds a registry still to migrate.
    pub fn pending(data_dir: &Path) -> bool {
        data_dir.join(FILE_NAME).exists()
    }

    /// The registry of `data_dir` if it has one still to migrate.
    ///
    /// # Errors
    ///
    /// As [`Registry::load`].
    pub fn load_legacy(data_dir: &Path) -> Result<Option<Self>, NodeError> {
        if Self::pending(data_dir) {
            Self::load(data_dir).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Marks the registry migrated: renames it so it is never read again (kept for reference).
    ///
    /// # Errors
    ///
    /// [`NodeError::Io`].
    pub fn retire(&self) -> Result<(), NodeError> {
        let to = self.path.with_file_name(RETIRED_NAME);
        fs::rename(&self.path, &to).map_err(NodeError::io("renaming", &self.path))?;
        let dir = self.path.parent().expect("registry path has a parent");
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(NodeError::io("syncing directory", dir))
    }

    /// Loads the registry of `data_dir`, or starts an empty one if there is none yet.
    ///
    /// # Errors
    ///
    /// [`NodeError::Io`] if the file cannot be read, [`NodeError::CorruptMetadata`] if it does not
    /// parse (the broker refuses to start rather than forget topics).
    pub fn load(data_dir: &Path) -> Result<Self, NodeError> {
        let path = data_dir.join(FILE_NAME);
        match fs::read(&path) {
            Ok(bytes) => {
                let on_disk: OnDisk =
                    serde_json::from_slice(&bytes).map_err(|e| NodeError::CorruptMetadata {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if on_disk.version != FORMAT_VERSION {
                    return Err(NodeError::CorruptMetadata {
                        path,
                        reason: format!("unknown format version {}", on_disk.version),
                    });
                }
                Ok(Self {
                    path,
                    cluster_id: on_disk.cluster_id,
                    topics: on_disk.topics,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let registry = Self {
                    path,
                    cluster_id: new_id(),
                    topics: BTreeMap::new(),
                };
                registry.save()?;
                Ok(registry)
            }
            Err(e) => Err(NodeError::io("reading", &path)(e)),
        }
    }

    /// Writes the registry atomically: temporary file, fsync, rename, fsync of the directory.
    ///
    /// # Errors
    ///
    /// [`NodeError::Io`]; the previous file is then still in place.
    pub fn save(&self) -> Result<(), NodeError> {
        let on_disk = OnDisk {
            version: FORMAT_VERSION,
            cluster_id: self.cluster_id.clone(),
            topics: self.topics.clone(),
        };
        let json = serde_json::to_vec_pretty(&on_disk).expect("registry serialises");
        let tmp = self.path.with_extension("json.tmp");
        let mut f = fs::File::create(&tmp).map_err(NodeError::io("creating", &tmp))?;
        f.write_all(&json).map_err(NodeError::io("writing", &tmp))?;
        f.sync_all().map_err(NodeError::io("syncing", &tmp))?;
        fs::rename(&tmp, &self.path).map_err(NodeError::io("renaming", &tmp))?;
        let dir = self.path.parent().expect("registry path has a parent");
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(NodeError::io("syncing directory", dir))?;
        Ok(())
    }
}

/// A 128-bit random id in hex, from the standard library's randomly seeded hasher (no extra
/// crate for something this small and non-cryptographic).
pub fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(32);
    for salt in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_reload_and_keeps_its_cluster_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::load(dir.path()).unwrap();
        r.topics.insert(
            TopicName::new("t").unwrap(),
            TopicRecord {
                topic_id: new_id(),
                partitions: 3,
                replication_factor: 1,
                config: TopicConfig::default(),
            },
        );
        r.save().unwrap();
        let again = Registry::load(dir.path()).unwrap();
        assert_eq!(again.cluster_id, r.cluster_id);
        assert_eq!(again.topics, r.topics);
    }

    #[test]
    fn a_garbled_file_is_refused_not_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        assert!(matches!(
            Registry::load(dir.path()),
            Err(NodeError::CorruptMetadata { .. })
        ));
    }

    #[test]
    fn ids_differ() {
        assert_ne!(new_id(), new_id());
        assert_eq!(new_id().len(), 32);
    }
}
