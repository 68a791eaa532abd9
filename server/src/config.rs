//! Broker configuration: what an operator sets in a TOML file or on the command line.
//!
//! Every field documents its default and why. The file is optional; flags override it
//! (`cairn serve --config cairn.toml --data-dir ...`). Unknown keys are refused so that a typo
//! does not silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::topic::{TopicConfig, default_topic_config};

/// Default listen address: Kafka's port, on loopback so that a first `cairn serve` exposes
/// nothing to the network.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9092";

/// Everything a broker needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// This broker's id, unique in the cluster. Default 1.
    pub node_id: u32,
    /// Where partitions and metadata live. Default `./data`.
    pub data_dir: PathBuf,
    /// Address the gRPC server binds. Default [`DEFAULT_LISTEN`]. Port 0 picks a free port (the
    /// chosen address is printed at start).
    pub listen: SocketAddr,
    /// Address clients should use to reach this broker, if not the bound one (NAT, containers).
    pub advertised_address: Option<String>,
    /// Defaults for topics that leave a setting unset.
    pub topic_defaults: TopicConfig,
    /// Protective limits.
    pub limits: Limits,
    /// How often sealed segments are checked against retention, in ms. Default 300 000 (5 min),
    /// Kafka's `log.retention.check.interval.ms`.
    pub retention_check_interval_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            data_dir: PathBuf::from("data"),
            listen: DEFAULT_LISTEN.parse().expect("constant address parses"),
            advertised_address: None,
            topic_defaults: default_topic_config(),
            limits: Limits::default(),
            retention_check_interval_ms: 300_000,
        }
    }
}

/// Limits that keep one client from exhausting the broker. Past them a request gets
/// `INVALID_ARGUMENT` or `RESOURCE_EXHAUSTED` and changes nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest gRPC message accepted or sent, in bytes. Default 64 MiB: room for a full fetch
    /// and many produce batches, far below memory. (Kafka: `socket.request.max.bytes` 100 MiB.)
    pub max_request_bytes: usize,
    /// Most structured records in one produce request. Default 10 000.
    pub max_records_per_request: usize,
    /// Most bytes one fetch returns. Default 32 MiB (Kafka's `fetch.max.bytes` is 50 MiB).
    pub max_fetch_bytes: usize,
    /// Longest a fetch may wait for data, in ms. Default 30 000.
    pub max_fetch_wait_ms: u32,
    /// Concurrent HTTP/2 streams per connection. Default 1 024.
    pub max_concurrent_streams_per_connection: u32,
    /// Open `Subscribe` and `ProduceStream` streams across all connections. Default 4 096.
    pub max_open_streams: usize,
    /// Most partitions one topic may have. Default 10 000.
    pub max_partitions_per_topic: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 64 << 20,
            max_records_per_request: 10_000,
            max_fetch_bytes: 32 << 20,
            max_fetch_wait_ms: 30_000,
            max_concurrent_streams_per_connection: 1024,
            max_open_streams: 4096,
            max_partitions_per_topic: 10_000,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl BrokerConfig {
    /// Reads a TOML file; missing keys take their defaults.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file and the problem.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Refuses values the broker cannot run with.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.topic_defaults
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("topic_defaults: {e}")))?;
        if self.limits.max_request_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "limits.max_request_bytes must be at least 1024".into(),
            ));
        }
        if self.retention_check_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "retention_check_interval_ms must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_toml_keeps_other_defaults() {
        let c: BrokerConfig = toml::from_str(
            "data_dir = \"/tmp/x\"\n[topic_defaults]\nfsync = \"always\"\n[limits]\nmax_records_per_request = 5\n",
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.topic_defaults.fsync, Some(crate::topic::Fsync::Always));
        assert_eq!(c.topic_defaults.segment_bytes, None);
        assert_eq!(c.limits.max_records_per_request, 5);
        assert_eq!(c.limits.max_fetch_bytes, Limits::default().max_fetch_bytes);
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<BrokerConfig>("data_dri = \"x\"").is_err());
    }
}
