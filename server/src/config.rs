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
    /// Cluster membership and the metadata Raft group's timing.
    pub cluster: ClusterConfig,
    /// Partition replication between brokers.
    pub replication: ReplicationConfig,
    /// Consumer groups: their coordinators, timeouts and the offsets topic.
    pub groups: GroupsConfig,
}

/// Consumer groups (DESIGN.md §6): timing every group gets, and the internal topic holding
/// their state and committed offsets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupsConfig {
    /// A member not heard from for this long leaves its group and its partitions move, in ms.
    /// Default 45 000 (Kafka's `group.consumer.session.timeout.ms`).
    pub session_timeout_ms: u32,
    /// How often members heartbeat, in ms. Default 5 000 (Kafka's
    /// `group.consumer.heartbeat.interval.ms`).
    pub heartbeat_interval_ms: u32,
    /// A member asked to release partitions that has not done so within this long is removed,
    /// in ms. Default 300 000 (Kafka's `max.poll.interval.ms`).
    pub rebalance_timeout_ms: u32,
    /// The server-side assignor: `uniform` (sticky, the default) or `range`.
    pub assignor: String,
    /// Partitions of `__consumer_offsets`, fixed when the topic is created (on the first group
    /// call). Default 12.
    pub offsets_topic_partitions: u32,
    /// Replicas of each `__consumer_offsets` partition (fewer if fewer brokers are alive when
    /// it is created). Default 3.
    pub offsets_topic_replication_factor: u32,
    /// Segment size of `__consumer_offsets`, fixed when the topic is created. Default 16 MiB.
    pub offsets_topic_segment_bytes: u64,
    /// A coordinator cleans an offsets partition (rewrites every live group state and offset
    /// at its end, then deletes the segments below) once it holds more than this many records
    /// and more than twice its live ones: Kafka's compaction of `__consumer_offsets`, done by
    /// the coordinator that knows what is live. Default 100 000.
    pub offsets_cleanup_min_records: u64,
}

impl GroupsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.assignor
            .parse::<crate::group::AssignorKind>()
            .map_err(|e| ConfigError::Invalid(format!("groups.assignor: {e}")))?;
        if self.session_timeout_ms == 0
            || self.heartbeat_interval_ms == 0
            || self.heartbeat_interval_ms >= self.session_timeout_ms
        {
            return Err(ConfigError::Invalid(
                "groups: heartbeat_interval_ms must be positive and below session_timeout_ms"
                    .into(),
            ));
        }
        if self.offsets_topic_partitions == 0 || self.offsets_topic_replication_factor == 0 {
            return Err(ConfigError::Invalid(
                "groups: offsets_topic_partitions and offsets_topic_replication_factor must be \
                 positive"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Default for GroupsConfig {
    fn default() -> Self {
        Self {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            rebalance_timeout_ms: 300_000,
            assignor: "uniform".to_owned(),
            offsets_topic_partitions: 12,
            offsets_topic_replication_factor: 3,
            offsets_topic_segment_bytes: 16 << 20,
            offsets_cleanup_min_records: 100_000,
        }
    }
}

/// How followers copy partitions from their leaders (DESIGN.md §5).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// A follower that has not caught up with the leader's log end for this long leaves the
    /// ISR, in ms. Default 30 000 (Kafka's `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: u64,
    /// Most bytes one follower fetch returns. Default 1 MiB (Kafka's `replica.fetch.max.bytes`).
    pub replica_fetch_max_bytes: u32,
    /// How long a follower fetch waits at the leader for new records, in ms. Default 500
    /// (Kafka's `replica.fetch.wait.max.ms`).
    pub replica_fetch_wait_max_ms: u32,
    /// A follower that has not fetched at all for this long leaves the ISR, in ms, without
    /// waiting for `replica_lag_time_max_ms` or its fencing: a live follower long-polls, so it
    /// fetches at least every `replica_fetch_wait_max_ms`, and every acks=all write waits for
    /// each ISR member. More than twice `replica_fetch_wait_max_ms`. Default 1 500.
    pub replica_fetch_silence_max_ms: u64,
    /// How long an acks=all produce waits for the ISR, in ms, before it fails with
    /// `REQUEST_TIMED_OUT`. Default 30 000 (Kafka's producer `request.timeout.ms`).
    pub acks_all_timeout_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            replica_lag_time_max_ms: 30_000,
            replica_fetch_max_bytes: 1 << 20,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_silence_max_ms: 1_500,
            acks_all_timeout_ms: 30_000,
        }
    }
}

/// How this broker finds and joins its cluster (DESIGN.md §4).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The metadata Raft voters as `id@host:port`, the same list on every broker. A broker whose
    /// id is listed votes; any other broker joins as a learner (it receives the metadata but does
    /// not vote) through the voters. Empty (the default): this broker is the only voter, a
    /// one-broker cluster.
    pub voters: Vec<String>,
    /// How often a broker renews its lease with the controller, in ms; each call also gives up
    /// after this long, so a broker whose controller stopped answering moves on to the new one
    /// within one interval. Default 500 (Kafka's `broker.heartbeat.interval.ms` is 2 000;
    /// Cairn's is shorter so that a dead leader is replaced within about 4 s).
    pub broker_heartbeat_interval_ms: u64,
    /// How long a lease lasts without a heartbeat before the controller fences the broker and
    /// moves its leaderships, in ms of the controller's own running time (a paused controller
    /// does not count its pause). At least three heartbeat intervals. Default 3 000 (Kafka's
    /// `broker.session.timeout.ms` is 9 000).
    pub broker_session_timeout_ms: u64,
    /// How often the Raft leader sends heartbeats to the other voters, in ms. Default 100.
    pub raft_heartbeat_interval_ms: u64,
    /// Election timeout bounds, in ms. A voter that has not heard from a leader for a random
    /// time between the upper bound and twice it minus the lower (1.0–1.5 s with the defaults)
    /// first asks the other voters whether they would vote for it (pre-vote): only if a
    /// majority has not heard from a leader for the upper bound either, and its log is as
    /// recent as theirs, does it start a real election. So a cut-off voter never raises the term
    /// and deposes a healthy controller on its return. Defaults 500 and 1 000 (Kafka's
    /// `controller.quorum.election.timeout.ms` is 1 000).
    pub raft_election_timeout_min_ms: u64,
    /// Upper bound of the election timeout, in ms. Default 1 000.
    pub raft_election_timeout_max_ms: u64,
    /// How often the controller moves partition leadership back to preferred replicas that are
    /// alive and in sync, in ms. Default 30 000 (Kafka's
    /// `leader.imbalance.check.interval.seconds` is 300).
    pub leader_balance_interval_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            voters: Vec::new(),
            broker_heartbeat_interval_ms: 500,
            broker_session_timeout_ms: 3_000,
            raft_heartbeat_interval_ms: 100,
            raft_election_timeout_min_ms: 500,
            raft_election_timeout_max_ms: 1_000,
            leader_balance_interval_ms: 30_000,
        }
    }
}

/// One metadata voter: a broker id and the address peers reach it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    /// Broker id.
    pub id: u32,
    /// `host:port`.
    pub addr: String,
}

impl std::str::FromStr for Voter {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            ConfigError::Invalid(format!(
                "voter {s:?}: {why}; expected id@host:port, e.g. 1@127.0.0.1:9092"
            ))
        };
        let (id, addr) = s.split_once('@').ok_or_else(|| bad("no '@'"))?;
        let id: u32 = id
            .trim()
            .parse()
            .map_err(|_| bad("the id is not a number"))?;
        if id == 0 {
            return Err(bad("broker ids start at 1"));
        }
        let addr = addr.trim();
        let port = addr
            .rsplit_once(':')
            .and_then(|(host, port)| (!host.is_empty()).then_some(port))
            .ok_or_else(|| bad("the address has no host:port"))?;
        port.parse::<u16>()
            .map_err(|_| bad("the port is not a number"))?;
        Ok(Self {
            id,
            addr: addr.to_owned(),
        })
    }
}

impl ClusterConfig {
    /// The parsed voters list (empty for a one-broker cluster).
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] for an entry that does not parse or an id listed twice.
    pub fn parsed_voters(&self) -> Result<Vec<Voter>, ConfigError> {
        let mut voters: Vec<Voter> = Vec::with_capacity(self.voters.len());
        for v in &self.voters {
            let voter: Voter = v.parse()?;
            if voters.iter().any(|o| o.id == voter.id) {
                return Err(ConfigError::Invalid(format!(
                    "voter id {} is listed twice",
                    voter.id
                )));
            }
            voters.push(voter);
        }
        Ok(voters)
    }

    /// How long one registration or heartbeat call to the controller may take: one heartbeat
    /// interval (at least 100 ms), well under the session by the rule `validate` enforces.
    pub fn lease_call_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.broker_heartbeat_interval_ms.max(100))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.parsed_voters()?;
        let positive = [
            (
                "broker_heartbeat_interval_ms",
                self.broker_heartbeat_interval_ms,
            ),
            ("broker_session_timeout_ms", self.broker_session_timeout_ms),
            (
                "raft_heartbeat_interval_ms",
                self.raft_heartbeat_interval_ms,
            ),
            (
                "leader_balance_interval_ms",
                self.leader_balance_interval_ms,
            ),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "cluster.{name} must be positive"
                )));
            }
        }
        // A heartbeat call gives up after one interval and the next starts right away, so a
        // broker whose controller changed makes at least two attempts at the new one in any
        // session: the new controller's grace always has room for them.
        if self.broker_session_timeout_ms < 3 * self.broker_heartbeat_interval_ms {
            return Err(ConfigError::Invalid(format!(
                "cluster.broker_session_timeout_ms ({}) must be at least three times \
                 cluster.broker_heartbeat_interval_ms ({}): each heartbeat call may take one \
                 interval before the broker tries another controller",
                self.broker_session_timeout_ms, self.broker_heartbeat_interval_ms
            )));
        }
        if self.raft_election_timeout_min_ms <= 2 * self.raft_heartbeat_interval_ms
            || self.raft_election_timeout_max_ms <= self.raft_election_timeout_min_ms
        {
            return Err(ConfigError::Invalid(format!(
                "cluster: need raft_heartbeat_interval_ms ({}) * 2 < raft_election_timeout_min_ms \
                 ({}) < raft_election_timeout_max_ms ({})",
                self.raft_heartbeat_interval_ms,
                self.raft_election_timeout_min_ms,
                self.raft_election_timeout_max_ms
            )));
        }
        Ok(())
    }
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
            cluster: ClusterConfig::default(),
            replication: ReplicationConfig::default(),
            groups: GroupsConfig::default(),
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
        if self.node_id == 0 {
            return Err(ConfigError::Invalid(
                "node_id: broker ids start at 1".into(),
            ));
        }
        let r = &self.replication;
        if r.replica_lag_time_max_ms == 0
            || r.replica_fetch_max_bytes == 0
            || r.acks_all_timeout_ms == 0
        {
            return Err(ConfigError::Invalid(
                "replication: replica_lag_time_max_ms, replica_fetch_max_bytes and \
                 acks_all_timeout_ms must be positive"
                    .into(),
            ));
        }
        if r.replica_fetch_silence_max_ms <= 2 * u64::from(r.replica_fetch_wait_max_ms) {
            return Err(ConfigError::Invalid(format!(
                "replication.replica_fetch_silence_max_ms ({}) must be more than twice \
                 replication.replica_fetch_wait_max_ms ({}): a live follower fetches at least \
                 that often",
                r.replica_fetch_silence_max_ms, r.replica_fetch_wait_max_ms
            )));
        }
        self.groups.validate()?;
        self.cluster.validate()
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
    fn the_readme_lists_every_key_with_its_default() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme
            .find("## Configuration")
            .expect("a Configuration section")..];
        let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let block = &section[start..start + section[start..].find("```").expect("its end")];
        let documented: BrokerConfig = toml::from_str(block).expect("the README's TOML parses");
        documented.validate().unwrap();
        let json = |c: &BrokerConfig| serde_json::to_value(c).unwrap();
        assert_eq!(json(&documented), json(&BrokerConfig::default()));
    }

    #[test]
    fn bad_group_settings_say_why() {
        let mut c = BrokerConfig::default();
        c.groups.assignor = "roundrobin".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("groups.assignor")
        );
        let mut c = BrokerConfig::default();
        c.groups.heartbeat_interval_ms = c.groups.session_timeout_ms;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("heartbeat_interval_ms")
        );
    }

    #[test]
    fn voters_parse_and_bad_ones_say_why() {
        let v: Voter = "2@127.0.0.1:9093".parse().unwrap();
        assert_eq!((v.id, v.addr.as_str()), (2, "127.0.0.1:9093"));
        for bad in ["2", "x@h:1", "0@h:1", "2@h", "2@:1", "2@h:port"] {
            let e = bad.parse::<Voter>().unwrap_err().to_string();
            assert!(e.contains("id@host:port"), "{bad}: {e}");
        }
        let twice = ClusterConfig {
            voters: vec!["1@a:1".into(), "1@b:2".into()],
            ..ClusterConfig::default()
        };
        assert!(
            twice
                .parsed_voters()
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }

    #[test]
    fn cluster_timing_is_checked() {
        let mut c = BrokerConfig::default();
        c.validate().unwrap();
        c.cluster.broker_session_timeout_ms = c.cluster.broker_heartbeat_interval_ms;
        assert!(c.validate().is_err());
        let mut c = BrokerConfig::default();
        c.cluster.raft_election_timeout_max_ms = c.cluster.raft_election_timeout_min_ms;
        assert!(c.validate().is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<BrokerConfig>("data_dri = \"x\"").is_err());
    }
}
