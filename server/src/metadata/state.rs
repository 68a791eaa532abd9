//! The cluster metadata as data: [`ClusterState`], the [`MetadataCommand`]s that change it and
//! [`ClusterState::apply`], a plain synchronous, deterministic function.
//!
//! Every replica of the Raft log applies the same commands in the same order and must reach the
//! same state, so `apply` reads no clock, does no I/O and draws no random number: anything that
//! depends on time or chance (a topic id, a replica assignment) is decided by the controller and
//! carried inside the command. `apply` validates a command completely before it changes anything,
//! so a refused command leaves the state exactly as it was (DESIGN.md §9, invariant 5).
//!
//! This module knows nothing of Raft, storage or the network.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::topic::{TopicConfig, TopicName};

mod error;
pub use error::ApplyError;

/// The largest block of producer ids one allocation may take.
pub const MAX_PRODUCER_ID_BLOCK: u32 = 1 << 20;

/// A broker's id, as named on its command line.
pub type BrokerId = u32;

/// What the cluster knows about one broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    /// Where clients and peers reach it (`host:port`).
    pub addr: String,
    /// Bumped on every registration, so a restarted broker is told apart from its old self.
    pub epoch: u64,
    /// A fenced broker leads nothing and is not elected; set when its lease expires.
    pub fenced: bool,
}

/// One partition's replica set and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// The brokers holding a copy; the first is the preferred leader.
    pub replicas: Vec<BrokerId>,
    /// The current leader, or `None` while no in-sync replica is alive.
    pub leader: Option<BrokerId>,
    /// Bumped on every change of leader, so stale leaders and stale ISR changes are refused.
    pub leader_epoch: i32,
    /// The in-sync replicas; always a subset of `replicas` and containing `leader` if any.
    pub isr: Vec<BrokerId>,
}

/// One topic: its identity, configuration and partitions (indexed by partition id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    /// Unique for the lifetime of the cluster, so a re-created topic is not confused with the
    /// deleted one of the same name.
    pub topic_id: String,
    /// Per-topic settings; unset fields fall back to the broker's defaults.
    pub config: TopicConfig,
    /// Partition `i` is `partitions[i]`.
    pub partitions: Vec<PartitionRecord>,
}

/// The whole replicated metadata: what every broker learns from the Raft log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The cluster's id, set once by the first controller (empty until then).
    #[serde(default)]
    cluster_id: String,
    /// Registered brokers by id (ordered, so snapshots serialise deterministically).
    brokers: BTreeMap<BrokerId, BrokerRecord>,
    /// Topics by their validated name.
    topics: BTreeMap<String, TopicRecord>,
    /// Bumped by every accepted command; lets a broker tell whether its cached view is current.
    version: u64,
    /// The next producer id the cluster hands out (idempotent producers); ids are allocated to
    /// brokers in blocks, never twice.
    #[serde(default)]
    next_producer_id: i64,
}

/// A change to the cluster metadata, proposed by the controller through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// Names the cluster, once: the first controller proposes it (carrying over the id of a
    /// migrated single-broker data directory, if any).
    InitCluster { cluster_id: String },
    /// A broker announces itself (first start or restart). It starts fenced, as in KRaft: the
    /// controller unfences it once it heartbeats. A restarted broker lost its in-memory state,
    /// so, as when fenced, its leaderships move and it leaves the ISRs.
    RegisterBroker { id: BrokerId, addr: String },
    /// The broker's lease expired: it loses its leaderships and leaves every ISR it was not the
    /// last member of.
    FenceBroker { id: BrokerId },
    /// The broker is alive again; leaderless partitions it is in sync for elect it.
    UnfenceBroker { id: BrokerId },
    /// Creates a topic with the assignment the controller computed (see
    /// [`assign_replicas`](super::assign_replicas)).
    CreateTopic {
        name: String,
        topic_id: String,
        config: TopicConfig,
        assignment: Vec<Vec<BrokerId>>,
    },
    /// Deletes a topic and all its partitions.
    DeleteTopic { name: String },
    /// Gives `broker` the next `count` producer ids (a block it hands to idempotent producers).
    AllocateProducerIds { broker: BrokerId, count: u32 },
    /// Appends partitions to an existing topic.
    CreatePartitions {
        name: String,
        new_assignments: Vec<Vec<BrokerId>>,
    },
    /// Makes `leader` (an unfenced member of the ISR) the partition's leader.
    ElectLeader {
        topic: String,
        partition: u32,
        leader: BrokerId,
    },
    /// The partition leader, at `leader_epoch`, reports a new ISR.
    ChangeIsr {
        topic: String,
        partition: u32,
        isr: Vec<BrokerId>,
        leader_epoch: i32,
    },
}

/// What an accepted command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataResponse {
    /// A Raft entry with no command (blank or membership): the metadata did not change.
    Nothing,
    /// The command was applied; the state is now at `version`.
    Applied { version: u64 },
    /// The broker is registered with this `epoch`.
    BrokerRegistered { epoch: u64, version: u64 },
    /// The partition has a new leader at `leader_epoch`.
    LeaderElected { leader_epoch: i32, version: u64 },
    /// Producer ids `first..first + count` belong to the asking broker.
    ProducerIds {
        first: i64,
        count: u32,
        version: u64,
    },
}

impl ClusterState {
    /// The cluster's id; empty until the first controller set it.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Registered brokers by id.
    pub fn brokers(&self) -> &BTreeMap<BrokerId, BrokerRecord> {
        &self.brokers
    }

    /// Topics by name.
    pub fn topics(&self) -> &BTreeMap<String, TopicRecord> {
        &self.topics
    }

    /// One topic by name.
    pub fn topic(&self, name: &str) -> Option<&TopicRecord> {
        self.topics.get(name)
    }

    /// Bumped by every accepted command.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Applies one command: validates it completely, then changes the state and bumps the
    /// version.
    ///
    /// # Errors
    ///
    /// [`ApplyError`] saying why the command was refused; the state is then unchanged.
    pub fn apply(&mut self, cmd: &MetadataCommand) -> Result<MetadataResponse, ApplyError> {
        match cmd {
            MetadataCommand::InitCluster { cluster_id } => self.init_cluster(cluster_id),
            MetadataCommand::RegisterBroker { id, addr } => self.register_broker(*id, addr),
            MetadataCommand::FenceBroker { id } => self.fence_broker(*id),
            MetadataCommand::UnfenceBroker { id } => self.unfence_broker(*id),
            MetadataCommand::CreateTopic {
                name,
                topic_id,
                config,
                assignment,
            } => self.create_topic(name, topic_id, config, assignment),
            MetadataCommand::DeleteTopic { name } => self.delete_topic(name),
            MetadataCommand::AllocateProducerIds { broker, count } => {
                self.allocate_producer_ids(*broker, *count)
            }
            MetadataCommand::CreatePartitions {
                name,
                new_assignments,
            } => self.create_partitions(name, new_assignments),
            MetadataCommand::ElectLeader {
                topic,
                partition,
                leader,
            } => self.elect_leader(topic, *partition, *leader),
            MetadataCommand::ChangeIsr {
                topic,
                partition,
                isr,
                leader_epoch,
            } => self.change_isr(topic, *partition, isr, *leader_epoch),
        }
    }

    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    fn applied(&mut self) -> Result<MetadataResponse, ApplyError> {
        Ok(MetadataResponse::Applied {
            version: self.bump(),
        })
    }

    fn init_cluster(&mut self, cluster_id: &str) -> Result<MetadataResponse, ApplyError> {
        if cluster_id.is_empty() {
            return Err(ApplyError::EmptyClusterId);
        }
        if !self.cluster_id.is_empty() {
            return Err(ApplyError::ClusterIdSet(self.cluster_id.clone()));
        }
        cluster_id.clone_into(&mut self.cluster_id);
        self.applied()
    }

    fn register_broker(
        &mut self,
        id: BrokerId,
        addr: &str,
    ) -> Result<MetadataResponse, ApplyError> {
        if addr.is_empty() {
            return Err(ApplyError::EmptyAddress(id));
        }
        let epoch = self.brokers.get(&id).map_or(0, |b| b.epoch) + 1;
        self.brokers.insert(
            id,
            BrokerRecord {
                addr: addr.to_owned(),
                epoch,
                fenced: true,
            },
        );
        if epoch > 1 {
            self.step_down(id);
        }
        Ok(MetadataResponse::BrokerRegistered {
            epoch,
            version: self.bump(),
        })
    }

    fn fence_broker(&mut self, id: BrokerId) -> Result<MetadataResponse, ApplyError> {
        let broker = self
            .brokers
            .get_mut(&id)
            .ok_or(ApplyError::UnknownBroker(id))?;
        broker.fenced = true;
        self.step_down(id);
        self.applied()
    }

    /// For a broker just fenced: moves its leaderships to live in-sync replicas (bumping the
    /// leader epoch) and drops it from every ISR it is not the last member of. A partition left
    /// with no live in-sync replica has no leader, unless its topic allows unclean election:
    /// then a live replica outside the ISR leads, alone in a new ISR.
    fn step_down(&mut self, id: BrokerId) {
        let brokers = &self.brokers;
        for t in self.topics.values_mut() {
            let unclean = t.config.unclean_leader_election == Some(true);
            for p in &mut t.partitions {
                if p.isr.len() > 1 {
                    p.isr.retain(|&b| b != id);
                }
                if p.leader == Some(id) {
                    p.leader = first_live_in_sync(p, brokers);
                    if p.leader.is_none() && unclean {
                        elect_unclean(p, brokers);
                    }
                    p.leader_epoch += 1;
                }
            }
        }
    }

    fn unfence_broker(&mut self, id: BrokerId) -> Result<MetadataResponse, ApplyError> {
        let broker = self
            .brokers
            .get_mut(&id)
            .ok_or(ApplyError::UnknownBroker(id))?;
        broker.fenced = false;
        let brokers = &self.brokers;
        for t in self.topics.values_mut() {
            let unclean = t.config.unclean_leader_election == Some(true);
            for p in &mut t.partitions {
                if p.leader.is_some() {
                    continue;
                }
                if p.isr.contains(&id) {
                    p.leader = Some(id);
                    p.leader_epoch += 1;
                } else if unclean && p.replicas.contains(&id) {
                    // No in-sync replica is alive (else it would lead): an unclean election.
                    elect_unclean(p, brokers);
                    p.leader_epoch += 1;
                }
            }
        }
        self.applied()
    }

    fn create_topic(
        &mut self,
        name: &str,
        topic_id: &str,
        config: &TopicConfig,
        assignment: &[Vec<BrokerId>],
    ) -> Result<MetadataResponse, ApplyError> {
        let valid = TopicName::new(name).map_err(|e| ApplyError::InvalidTopicName {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        if self.topics.contains_key(valid.as_str()) {
            return Err(ApplyError::TopicExists(name.to_owned()));
        }
        if topic_id.is_empty() {
            return Err(ApplyError::EmptyTopicId(name.to_owned()));
        }
        config
            .validate()
            .map_err(|reason| ApplyError::InvalidConfig {
                name: name.to_owned(),
                reason,
            })?;
        let partitions = self.new_partitions(0, assignment)?;
        self.topics.insert(
            valid.as_str().to_owned(),
            TopicRecord {
                topic_id: topic_id.to_owned(),
                config: config.clone(),
                partitions,
            },
        );
        self.applied()
    }

    fn allocate_producer_ids(
        &mut self,
        broker: BrokerId,
        count: u32,
    ) -> Result<MetadataResponse, ApplyError> {
        if !self.brokers.contains_key(&broker) {
            return Err(ApplyError::UnknownBroker(broker));
        }
        if count == 0 || count > MAX_PRODUCER_ID_BLOCK {
            return Err(ApplyError::InvalidProducerIdBlock(count));
        }
        let first = self.next_producer_id;
        self.next_producer_id = first
            .checked_add(i64::from(count))
            .ok_or(ApplyError::ProducerIdsExhausted)?;
        Ok(MetadataResponse::ProducerIds {
            first,
            count,
            version: self.bump(),
        })
    }

    /// The next producer id the cluster will hand out.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    fn delete_topic(&mut self, name: &str) -> Result<MetadataResponse, ApplyError> {
        self.topics
            .remove(name)
            .ok_or_else(|| ApplyError::UnknownTopic(name.to_owned()))?;
        self.applied()
    }

    fn create_partitions(
        &mut self,
        name: &str,
        new_assignments: &[Vec<BrokerId>],
    ) -> Result<MetadataResponse, ApplyError> {
        let existing = self
            .topics
            .get(name)
            .ok_or_else(|| ApplyError::UnknownTopic(name.to_owned()))?
            .partitions
            .len();
        let first = u32::try_from(existing).unwrap_or(u32::MAX);
        let mut partitions = self.new_partitions(first, new_assignments)?;
        if let Some(topic) = self.topics.get_mut(name) {
            topic.partitions.append(&mut partitions);
        }
        self.applied()
    }

    /// Validates `assignment` (numbering its partitions from `first`) and builds fresh
    /// partitions: all replicas in sync, led by the first unfenced replica.
    fn new_partitions(
        &self,
        first: u32,
        assignment: &[Vec<BrokerId>],
    ) -> Result<Vec<PartitionRecord>, ApplyError> {
        if assignment.is_empty() {
            return Err(ApplyError::NoPartitions);
        }
        let mut out = Vec::with_capacity(assignment.len());
        for (i, replicas) in (first..).zip(assignment) {
            if replicas.is_empty() {
                return Err(ApplyError::EmptyReplicaSet { partition: i });
            }
            let mut seen = BTreeSet::new();
            for &b in replicas {
                if !seen.insert(b) {
                    return Err(ApplyError::DuplicateReplica {
                        partition: i,
                        broker: b,
                    });
                }
                if !self.brokers.contains_key(&b) {
                    return Err(ApplyError::UnknownBroker(b));
                }
            }
            let mut p = PartitionRecord {
                replicas: replicas.clone(),
                leader: None,
                leader_epoch: 0,
                isr: replicas.clone(),
            };
            p.leader = first_live_in_sync(&p, &self.brokers);
            out.push(p);
        }
        Ok(out)
    }

    fn partition_mut(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<&mut PartitionRecord, ApplyError> {
        let t = self
            .topics
            .get_mut(topic)
            .ok_or_else(|| ApplyError::UnknownTopic(topic.to_owned()))?;
        usize::try_from(partition)
            .ok()
            .and_then(|i| t.partitions.get_mut(i))
            .ok_or_else(|| ApplyError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            })
    }

    fn elect_leader(
        &mut self,
        topic: &str,
        partition: u32,
        leader: BrokerId,
    ) -> Result<MetadataResponse, ApplyError> {
        let fenced = self
            .brokers
            .get(&leader)
            .ok_or(ApplyError::UnknownBroker(leader))?
            .fenced;
        let p = self.partition_mut(topic, partition)?;
        if !p.isr.contains(&leader) {
            return Err(ApplyError::NotInIsr {
                broker: leader,
                isr: p.isr.clone(),
            });
        }
        if fenced {
            return Err(ApplyError::BrokerFenced(leader));
        }
        p.leader = Some(leader);
        p.leader_epoch += 1;
        let leader_epoch = p.leader_epoch;
        Ok(MetadataResponse::LeaderElected {
            leader_epoch,
            version: self.bump(),
        })
    }

    fn change_isr(
        &mut self,
        topic: &str,
        partition: u32,
        isr: &[BrokerId],
        leader_epoch: i32,
    ) -> Result<MetadataResponse, ApplyError> {
        let fenced: BTreeSet<BrokerId> = self
            .brokers
            .iter()
            .filter(|(_, b)| b.fenced)
            .map(|(&id, _)| id)
            .collect();
        let p = self.partition_mut(topic, partition)?;
        if leader_epoch != p.leader_epoch {
            return Err(ApplyError::StaleLeaderEpoch {
                given: leader_epoch,
                current: p.leader_epoch,
            });
        }
        let leader = p.leader.ok_or_else(|| ApplyError::NoLeader {
            topic: topic.to_owned(),
            partition,
        })?;
        if !isr.contains(&leader) {
            return Err(ApplyError::IsrMissingLeader {
                leader,
                isr: isr.to_vec(),
            });
        }
        let mut seen = BTreeSet::new();
        for &b in isr {
            if !p.replicas.contains(&b) {
                return Err(ApplyError::NotAReplica {
                    broker: b,
                    replicas: p.replicas.clone(),
                });
            }
            if !seen.insert(b) {
                return Err(ApplyError::DuplicateIsrMember(b));
            }
            // KIP-841: a fenced broker (dead, or in controlled shutdown) may stay in an ISR
            // but never joins one: it could not take over if elected.
            if fenced.contains(&b) && !p.isr.contains(&b) {
                return Err(ApplyError::IneligibleReplica(b));
            }
        }
        p.isr = isr.to_vec();
        self.applied()
    }
}

/// Unclean election: the first live replica leads, alone in the ISR (records only the old ISR
/// had are lost). Leaves the partition leaderless if no replica is alive.
fn elect_unclean(p: &mut PartitionRecord, brokers: &BTreeMap<BrokerId, BrokerRecord>) {
    if let Some(b) = p
        .replicas
        .iter()
        .copied()
        .find(|b| brokers.get(b).is_some_and(|r| !r.fenced))
    {
        p.leader = Some(b);
        p.isr = vec![b];
    }
}

/// The first replica, in preference order, that is in sync and not fenced.
fn first_live_in_sync(
    p: &PartitionRecord,
    brokers: &BTreeMap<BrokerId, BrokerRecord>,
) -> Option<BrokerId> {
    p.replicas
        .iter()
        .copied()
        .find(|b| p.isr.contains(b) && brokers.get(b).is_some_and(|r| !r.fenced))
}

#[cfg(test)]
mod tests;
