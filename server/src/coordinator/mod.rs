//! The group coordinator: the async shell around the pure group core (`crate::group`), as
//! Kafka's group coordinator runtime wraps its state machines (DESIGN.md §6).
//!
//! - **Placement.** A group lives in partition `crc32(group id) % N` of the internal topic
//!   [`OFFSETS_TOPIC`] (`N` is the topic's partition count, fixed at creation). The leader of
//!   that partition is the group's coordinator, so coordinators move with partition leadership:
//!   when a broker dies, the controller elects new leaders among the in-sync replicas, and they
//!   take the groups over.
//! - **Durability.** Every change is a keyed record in that partition (`records`): a committed
//!   offset, or a snapshot of the group's membership (members, epochs, target assignment). A
//!   change is answered only once the record is replicated to the ISR (acks=all), so whatever
//!   a client was told survives the coordinator's death.
//! - **Failover.** This broker follows the leadership of the offsets partitions (`run`):
//!   becoming leader of one, it waits until its high watermark reaches its log end (every
//!   record it will replay is committed), replays the partition into a [`Shard`], and serves
//!   its groups; every member gets a fresh session from that moment. Losing the leadership
//!   drops the shard; requests then get `NOT_COORDINATOR` with the new leader.
//! - **Time.** A tick every [`TICK`] expires members past their session or rebalance timeout
//!   and feeds topic changes (new partitions, deleted topics) to every group.
//!
//! Locks: one async mutex per group, held across the replicated write of that group's change,
//! so a group's records are written in the order its state changed; groups are independent.
//!
//! - **Cleaning.** Commits and state changes only append, so a partition would grow forever
//!   and a new coordinator would replay all of it. Once a partition holds more than
//!   `offsets_cleanup_min_records` records and more than twice its live ones, its coordinator
//!   rewrites every live record after the current end and deletes the segments below (`clean`):
//!   what Kafka's log compaction does for `__consumer_offsets`, done by the one component that
//!   knows which records are live. Space and replay time stay proportional to the live state.

pub mod records;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::config::GroupsConfig;
use crate::group::{
    AssignorKind, Group, GroupConfig, GroupError, Heartbeat, HeartbeatResponse, MemberRecord,
    MemberState, TopicMetadata, TopicPartition,
};
use crate::metadata::BrokerId;
use crate::node::{Node, NodeError, Partition, now_ms};
use crate::topic::TopicName;
use records::{Committed, Key, Replay, encode_value};

/// The internal topic holding every group's state and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often sessions are checked and topic changes fed to groups.
const TICK: Duration = Duration::from_millis(100);
/// Longest metadata text stored with a committed offset.
pub const MAX_COMMIT_METADATA: usize = 4096;
/// Most partitions one commit may carry.
pub const MAX_COMMIT_PARTITIONS: usize = 10_000;
/// Longest group id.
const MAX_GROUP_ID_LEN: usize = 249;
/// Bytes read per step while replaying an offsets partition.
const LOAD_CHUNK: usize = 1 << 20;

/// A broker's id and, when known, its address.
pub type BrokerAt = (BrokerId, Option<String>);

/// Why a group call failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The group id is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid group id {group:?}: {why}")]
    InvalidGroupId {
        /// The id as given.
        group: String,
        /// What is wrong with it.
        why: String,
    },
    /// Another broker coordinates the group (or none does right now).
    #[error("broker does not coordinate group {group}; {}", match coordinator {
        Some((id, Some(addr))) => format!("broker {id} at {addr} does"),
        Some((id, None)) => format!("broker {id} does"),
        None => "no broker does right now: retry shortly".to_owned(),
    })]
    NotCoordinator {
        /// The group.
        group: String,
        /// The coordinator's id and address, when known.
        coordinator: Option<BrokerAt>,
    },
    /// The coordinator cannot serve the group yet.
    #[error("the coordinator of group {group} is not available: {why}; retry shortly")]
    NotAvailable {
        /// The group.
        group: String,
        /// Why.
        why: String,
    },
    /// A commit from a member the group does not know.
    #[error("group {group} does not know member {member}: rejoin (epoch 0) before committing")]
    UnknownMember {
        /// The group.
        group: String,
        /// The member.
        member: String,
    },
    /// A commit with an epoch older than the member's.
    #[error(
        "member {member} of group {group} committed at epoch {received}, its epoch is \
         {current}: heartbeat first, then commit what it still owns"
    )]
    StaleMemberEpoch {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The epoch it sent.
        received: i32,
        /// Its epoch.
        current: i32,
    },
    /// A commit with an epoch newer than the member's.
    #[error(
        "member {member} of group {group} committed at epoch {received}, its epoch is \
         {current}: rejoin with epoch 0"
    )]
    FencedMemberEpoch {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The epoch it sent.
        received: i32,
        /// Its epoch.
        current: i32,
    },
    /// A member committed a partition it does not hold.
    #[error(
        "member {member} of group {group} does not own {partition}: only the owner commits \
         a partition's offset"
    )]
    NotAssigned {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The partition.
        partition: TopicPartition,
    },
    /// A commit below the committed offset.
    #[error(
        "group {group} committed offset {committed} for {partition}; {offset} would move it \
         backwards (only an admin reset does that, on a group without members)"
    )]
    OffsetBehind {
        /// The group.
        group: String,
        /// The partition.
        partition: TopicPartition,
        /// The offset refused.
        offset: i64,
        /// The offset committed.
        committed: i64,
    },
    /// The group has members.
    #[error(
        "group {group} has {members} active member(s); stop them (or wait for their session \
         timeout) first"
    )]
    GroupNotEmpty {
        /// The group.
        group: String,
        /// How many.
        members: usize,
    },
    /// No such group.
    #[error("group {0} does not exist")]
    GroupNotFound(String),
    /// A bad field.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The partition or its log failed (unknown topic, not enough replicas, timeout, I/O).
    #[error(transparent)]
    Node(#[from] NodeError),
}

type Result<T, E = CoordinatorError> = std::result::Result<T, E>;

/// Checks a group id: the same alphabet and length as topic names.
///
/// # Errors
///
/// [`CoordinatorError::InvalidGroupId`].
pub fn validate_group_id(group: &str) -> Result<()> {
    let bad = |why: String| {
        Err(CoordinatorError::InvalidGroupId {
            group: group.to_owned(),
            why,
        })
    };
    if group.is_empty() {
        return bad("it is empty".to_owned());
    }
    if group.len() > MAX_GROUP_ID_LEN {
        return bad(format!(
            "{} bytes; the limit is {MAX_GROUP_ID_LEN}",
            group.len()
        ));
    }
    if let Some(c) = group
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(format!("{c:?} is not one of [A-Za-z0-9._-]"));
    }
    Ok(())
}

/// The offsets partition of `group` among `partitions`.
pub fn partition_for(group: &str, partitions: u32) -> u32 {
    crc32fast::hash(group.as_bytes()) % partitions.max(1)
}

/// How a group stands, for listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Every member owns its target.
    Stable,
    /// Some member is revoking or waiting.
    Reconciling,
}

/// A group as listed.
#[derive(Debug, Clone)]
pub struct GroupSummary {
    /// Group id.
    pub group: String,
    /// State.
    pub state: GroupState,
    /// Members.
    pub members: usize,
}

/// A group as described.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// Group id.
    pub group: String,
    /// State.
    pub state: GroupState,
    /// Group epoch.
    pub group_epoch: i32,
    /// The assignor.
    pub assignor: AssignorKind,
    /// Members in id order.
    pub members: Vec<MemberRecord>,
    /// Partition counts of the subscribed topics.
    pub topics: TopicMetadata,
    /// Committed offsets.
    pub offsets: BTreeMap<TopicPartition, Committed>,
}

/// One group's live state.
#[derive(Debug)]
struct Entry {
    group: Group,
    offsets: BTreeMap<TopicPartition, Committed>,
}

impl Entry {
    fn state(&self) -> GroupState {
        if self.group.is_empty() {
            GroupState::Empty
        } else if self
            .group
            .members()
            .all(|m| m.state == MemberState::Stable && m.member_epoch == self.group.group_epoch())
        {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }
}

type SharedEntry = Arc<tokio::sync::Mutex<Entry>>;

/// A loaded offsets partition this broker leads: its groups.
#[derive(Debug)]
struct Shard {
    partition: Arc<Partition>,
    /// The leader epoch it was loaded at; a change means reloading.
    epoch: i32,
    groups: Mutex<HashMap<String, SharedEntry>>,
    /// A cleaning pass is running.
    cleaning: std::sync::atomic::AtomicBool,
    /// When a tick last found this coordinator able to replicate (ms): a longer gap than the
    /// reach window means members could not reach it meanwhile.
    last_reachable_ms: std::sync::atomic::AtomicI64,
}

impl Shard {
    fn still_leads(&self) -> bool {
        self.partition.is_leader() && self.partition.leader_epoch() == self.epoch
    }

    /// Whether this coordinator can still replicate its writes: enough of the partition's
    /// ISR fetched from it within `window`. A broker cut off from its peers keeps believing it
    /// leads (it cannot hear that it was replaced), so without this it would go on answering
    /// heartbeats that change nothing while a new coordinator expires the same members.
    fn can_replicate(&self, window: Duration) -> bool {
        self.partition.isr_reachable(window)
    }

    fn cut_off(&self, group: &str) -> CoordinatorError {
        CoordinatorError::NotAvailable {
            group: group.to_owned(),
            why: format!(
                "partition {} of {OFFSETS_TOPIC} cannot replicate: its followers stopped \
                 fetching from this broker",
                self.partition.index
            ),
        }
    }

    /// Every group, to visit one at a time without holding the map.
    fn entries(&self) -> Vec<(String, SharedEntry)> {
        lock(&self.groups)
            .iter()
            .map(|(g, e)| (g.clone(), Arc::clone(e)))
            .collect()
    }

    fn entry(&self, group: &str) -> Option<SharedEntry> {
        lock(&self.groups).get(group).cloned()
    }

    fn entry_or_new(&self, group: &str, config: &GroupConfig) -> SharedEntry {
        Arc::clone(
            lock(&self.groups)
                .entry(group.to_owned())
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Mutex::new(Entry {
                        group: Group::new(config.clone()),
                        offsets: BTreeMap::new(),
                    }))
                }),
        )
    }

    /// Appends `records` as one batch and waits until the ISR has them, at most `timeout`;
    /// fails fast (`COORDINATOR_NOT_AVAILABLE`) once the followers stop fetching for `window`.
    async fn write(
        &self,
        group: &str,
        records: Vec<(Key, Bytes)>,
        (timeout, window): (Duration, Duration),
    ) -> Result<()> {
        if !self.still_leads() {
            return Err(CoordinatorError::NotCoordinator {
                group: group.to_owned(),
                coordinator: None,
            });
        }
        if !self.can_replicate(window) {
            return Err(self.cut_off(group));
        }
        let now = now_ms();
        let records: Vec<cairn_batch::Record> = records
            .into_iter()
            .map(|(key, value)| cairn_batch::Record {
                timestamp: now,
                key: Some(key.encode()),
                value,
                headers: Vec::new(),
            })
            .collect();
        self.partition.check_min_isr()?;
        let info = self.partition.append(cairn_batch::encode(&records)).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self
                .partition
                .wait_replicated(info.last_offset, self.epoch, left.min(window))
                .await
            {
                Err(NodeError::NotLeader { .. }) => {
                    return Err(CoordinatorError::NotCoordinator {
                        group: group.to_owned(),
                        coordinator: None,
                    });
                }
                Err(NodeError::ReplicationTimeout { .. })
                    if tokio::time::Instant::now() < deadline =>
                {
                    if !self.can_replicate(window) {
                        return Err(self.cut_off(group));
                    }
                }
                other => return Ok(other?),
            }
        }
    }
}

/// The group coordinator of one broker: see the module documentation.
#[derive(Debug)]
pub struct Coordinator {
    node: Arc<Node>,
    config: GroupsConfig,
    group_config: GroupConfig,
    /// Loaded offsets partitions, by index.
    shards: RwLock<HashMap<u32, Arc<Shard>>>,
    /// Offsets partitions being loaded, with the epoch.
    loading: Mutex<HashMap<u32, i32>>,
    /// [`Coordinator::topic_metadata`] and the metadata index it was built at.
    topics: RwLock<Option<(u64, Arc<TopicMetadata>)>>,
}

impl Coordinator {
    /// A coordinator for the offsets partitions `node` leads.
    pub fn new(node: Arc<Node>) -> Arc<Self> {
        let config = node.config().groups.clone();
        let assignor = config.assignor.parse().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "unknown group assignor; using uniform");
            AssignorKind::Uniform
        });
        let group_config = GroupConfig {
            assignor,
            session_timeout_ms: i64::from(config.session_timeout_ms),
            rebalance_timeout_ms: i64::from(config.rebalance_timeout_ms),
            heartbeat_interval_ms: i64::from(config.heartbeat_interval_ms),
        };
        Arc::new(Self {
            node,
            config,
            group_config,
            shards: RwLock::default(),
            loading: Mutex::default(),
            topics: RwLock::default(),
        })
    }

    /// The groups configuration.
    pub fn config(&self) -> &GroupsConfig {
        &self.config
    }

    /// How long a write may wait for the ISR, and the window in which the ISR must have been
    /// heard from (see [`Coordinator::reach_window`]).
    fn write_timeout(&self) -> (Duration, Duration) {
        (
            Duration::from_millis(self.node.config().replication.acks_all_timeout_ms),
            self.reach_window(),
        )
    }

    /// How recently the offsets partition's followers must have fetched for this broker to
    /// act as coordinator: two of their long polls plus a margin (1.5 s by default), so a
    /// coordinator cut off from its peers refuses within about a heartbeat interval instead
    /// of hanging for the acks timeout.
    fn reach_window(&self) -> Duration {
        let poll = u64::from(self.node.config().replication.replica_fetch_wait_max_ms);
        Duration::from_millis(2 * poll + 500)
    }

    /// The offsets partition of `group` and its leader (id, address), if the offsets topic
    /// exists.
    pub fn locate(&self, group: &str) -> Option<(u32, Option<BrokerAt>)> {
        let view = self.node.metadata();
        let topic = view.state.topic(OFFSETS_TOPIC)?;
        let n = u32::try_from(topic.partitions.len()).ok()?;
        let index = partition_for(group, n);
        let leader = topic.partitions.get(index as usize)?.leader.map(|id| {
            let addr = view.state.brokers().get(&id).map(|b| b.addr.clone());
            (id, addr)
        });
        Some((index, leader))
    }

    /// Whether this broker leads `group`'s offsets partition but is cut off from its
    /// followers: `FindCoordinator` then says the coordinator is not available rather than
    /// name a broker that will refuse the member.
    pub fn is_cut_off(&self, group: &str) -> bool {
        let Some((index, _)) = self.locate(group) else {
            return false;
        };
        read(&self.shards)
            .get(&index)
            .is_some_and(|s| s.still_leads() && !s.can_replicate(self.reach_window()))
    }

    /// The loaded shard of `group`, if this broker coordinates it.
    fn shard(&self, group: &str) -> Result<Arc<Shard>> {
        validate_group_id(group)?;
        let Some((index, leader)) = self.locate(group) else {
            return Err(CoordinatorError::NotAvailable {
                group: group.to_owned(),
                why: format!(
                    "the {OFFSETS_TOPIC} topic does not exist yet (FindCoordinator creates it)"
                ),
            });
        };
        if let Some(shard) = read(&self.shards).get(&index)
            && shard.still_leads()
        {
            if !shard.can_replicate(self.reach_window()) {
                return Err(shard.cut_off(group));
            }
            return Ok(Arc::clone(shard));
        }
        let me = self.node.id();
        // Leading it (or about to: the metadata names this broker and the node has not caught
        // up yet) but not loaded: a moment away.
        if leader.as_ref().is_some_and(|(id, _)| *id == me)
            || self
                .node
                .hosted(OFFSETS_TOPIC, index)
                .is_some_and(|p| p.is_leader())
        {
            return Err(CoordinatorError::NotAvailable {
                group: group.to_owned(),
                why: format!("partition {index} of {OFFSETS_TOPIC} is still loading"),
            });
        }
        Err(CoordinatorError::NotCoordinator {
            group: group.to_owned(),
            coordinator: leader.filter(|(id, _)| *id != me),
        })
    }

    /// The partition counts of every topic, as the group core wants them: rebuilt only when
    /// this broker applied new metadata, shared otherwise.
    fn topic_metadata(&self) -> Arc<TopicMetadata> {
        let view = self.node.metadata();
        if let Some((index, topics)) = &*read(&self.topics)
            && *index == view.applied_index
        {
            return Arc::clone(topics);
        }
        let topics: Arc<TopicMetadata> = Arc::new(
            view.state
                .topics()
                .iter()
                .filter_map(|(name, t)| {
                    let name = TopicName::new(name.as_str()).ok()?;
                    Some((name, u32::try_from(t.partitions.len()).ok()?))
                })
                .collect(),
        );
        *write(&self.topics) = Some((view.applied_index, Arc::clone(&topics)));
        topics
    }

    /// Handles one heartbeat of `group`. The outer error is the coordinator's (not coordinator,
    /// unavailable, write failed); the inner one is the group's answer to the member.
    ///
    /// # Errors
    ///
    /// [`CoordinatorError`].
    pub async fn heartbeat(
        &self,
        group: &str,
        hb: Heartbeat,
    ) -> Result<std::result::Result<HeartbeatResponse, GroupError>> {
        let shard = self.shard(group)?;
        let joining = hb.member_epoch == crate::group::JOIN_EPOCH;
        let entry = if joining {
            shard.entry_or_new(group, &self.group_config)
        } else {
            match shard.entry(group) {
                Some(e) => e,
                None => {
                    return Ok(Err(GroupError::UnknownMemberId {
                        member_id: hb.member_id,
                    }));
                }
            }
        };
        let mut entry = entry.lock().await;
        let topics = self.topic_metadata();
        let before = entry.group.version();
        let answer = entry.group.heartbeat(hb, &topics, now_ms());
        if entry.group.version() != before {
            let snapshot = encode_value(&entry.group.snapshot());
            shard
                .write(
                    group,
                    vec![(
                        Key::Group {
                            group: group.to_owned(),
                        },
                        snapshot,
                    )],
                    self.write_timeout(),
                )
                .await?;
        } else if entry.group.is_empty() && entry.offsets.is_empty() && answer.is_err() {
            // A refused join of a group nobody knew: leave no trace.
            drop(entry);
            forget_if_unused(&shard, group);
        }
        Ok(answer)
    }

    /// Commits `offsets` for `group` on behalf of `member` at `epoch` (empty member and epoch
    /// -1: from outside the group, accepted only while it has no members). All or nothing.
    ///
    /// # Errors
    ///
    /// [`CoordinatorError`]: bad input, membership and epoch checks, backwards offsets, or the
    /// write.
    pub async fn commit(
        &self,
        group: &str,
        member: &str,
        epoch: i32,
        offsets: Vec<(TopicPartition, i64, String)>,
    ) -> Result<Vec<(TopicPartition, Committed)>> {
        self.check_offsets(&offsets)?;
        let shard = self.shard(group)?;
        let external = member.is_empty() && epoch < 0;
        let entry = if external {
            shard.entry_or_new(group, &self.group_config)
        } else {
            shard
                .entry(group)
                .ok_or_else(|| CoordinatorError::UnknownMember {
                    group: group.to_owned(),
                    member: member.to_owned(),
                })?
        };
        let mut entry = entry.lock().await;
        if external {
            if !entry.group.is_empty() {
                return Err(CoordinatorError::GroupNotEmpty {
                    group: group.to_owned(),
                    members: entry.group.members().count(),
                });
            }
        } else {
            check_member(group, &entry.group, member, epoch, &offsets)?;
        }
        for (tp, offset, _) in &offsets {
            if let Some(c) = entry.offsets.get(tp)
                && *offset < c.offset
            {
                return Err(CoordinatorError::OffsetBehind {
                    group: group.to_owned(),
                    partition: tp.clone(),
                    offset: *offset,
                    committed: c.offset,
                });
            }
        }
        self.store(&shard, group, &mut entry, offsets).await
    }

    /// Writes offsets and applies them once replicated.
    async fn store(
        &self,
        shard: &Shard,
        group: &str,
        entry: &mut Entry,
        offsets: Vec<(TopicPartition, i64, String)>,
    ) -> Result<Vec<(TopicPartition, Committed)>> {
        let stored = stamped(offsets);
        let changed: Vec<(Key, Bytes)> = stored
            .iter()
            .filter(|(tp, c)| {
                entry
                    .offsets
                    .get(tp)
                    .is_none_or(|old| old.offset != c.offset || old.metadata != c.metadata)
            })
            .map(|(tp, c)| (offset_key(group, tp), encode_value(c)))
            .collect();
        if !changed.is_empty() {
            shard.write(group, changed, self.write_timeout()).await?;
        }
        for (tp, c) in &stored {
            entry.offsets.insert(tp.clone(), c.clone());
        }
        Ok(stored)
    }

    fn check_offsets(&self, offsets: &[(TopicPartition, i64, String)]) -> Result<()> {
        if offsets.len() > MAX_COMMIT_PARTITIONS {
            return Err(CoordinatorError::InvalidArgument {
                field: "offsets",
                message: format!(
                    "{} partitions in one commit; the limit is {MAX_COMMIT_PARTITIONS}",
                    offsets.len()
                ),
            });
        }
        let view = self.node.metadata();
        let mut seen = BTreeSet::new();
        for (tp, offset, metadata) in offsets {
            let Some(t) = view.state.topic(tp.topic.as_str()) else {
                return Err(NodeError::UnknownTopic(tp.topic.to_string()).into());
            };
            if tp.partition as usize >= t.partitions.len() {
                return Err(NodeError::UnknownPartition {
                    topic: tp.topic.to_string(),
                    partition: tp.partition,
                    count: u32::try_from(t.partitions.len()).unwrap_or(u32::MAX),
                }
                .into());
            }
            if *offset < 0 {
                return Err(CoordinatorError::InvalidArgument {
                    field: "offsets.offset",
                    message: format!("offset {offset} for {tp} is negative"),
                });
            }
            if metadata.len() > MAX_COMMIT_METADATA {
                return Err(CoordinatorError::InvalidArgument {
                    field: "offsets.metadata",
                    message: format!(
                        "{} bytes of metadata for {tp}; the limit is {MAX_COMMIT_METADATA}",
                        metadata.len()
                    ),
                });
            }
            if !seen.insert(tp) {
                return Err(CoordinatorError::InvalidArgument {
                    field: "offsets",
                    message: format!("{tp} appears twice"),
                });
            }
        }
        Ok(())
    }

    /// The committed offsets of `group` (all of them when `only` is empty).
    ///
    /// # Errors
    ///
    /// Not the coordinator, or not loaded yet.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        only: &BTreeSet<TopicPartition>,
    ) -> Result<Vec<(TopicPartition, Committed)>> {
        let shard = self.shard(group)?;
        let Some(entry) = shard.entry(group) else {
            return Ok(Vec::new());
        };
        let entry = entry.lock().await;
        Ok(entry
            .offsets
            .iter()
            .filter(|(tp, _)| only.is_empty() || only.contains(*tp))
            .map(|(tp, c)| (tp.clone(), c.clone()))
            .collect())
    }

    /// Sets offsets of a group without members, backwards included (an admin reset).
    ///
    /// # Errors
    ///
    /// [`CoordinatorError::GroupNotEmpty`], bad input, or the write.
    pub async fn reset_offsets(
        &self,
        group: &str,
        offsets: Vec<(TopicPartition, i64)>,
        dry_run: bool,
    ) -> Result<Vec<(TopicPartition, Committed)>> {
        let offsets: Vec<_> = offsets
            .into_iter()
            .map(|(tp, o)| (tp, o, String::new()))
            .collect();
        self.check_offsets(&offsets)?;
        let shard = self.shard(group)?;
        let entry = shard.entry_or_new(group, &self.group_config);
        let mut entry = entry.lock().await;
        if !entry.group.is_empty() {
            return Err(CoordinatorError::GroupNotEmpty {
                group: group.to_owned(),
                members: entry.group.members().count(),
            });
        }
        if dry_run {
            let answer = stamped(offsets);
            if entry.offsets.is_empty() {
                drop(entry);
                forget_if_unused(&shard, group);
            }
            return Ok(answer);
        }
        self.store(&shard, group, &mut entry, offsets).await
    }

    /// Deletes a group without members and its offsets.
    ///
    /// # Errors
    ///
    /// [`CoordinatorError::GroupNotFound`], [`CoordinatorError::GroupNotEmpty`], or the write.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        self.known_somewhere(group)?;
        let shard = self.shard(group)?;
        let entry = shard
            .entry(group)
            .ok_or_else(|| CoordinatorError::GroupNotFound(group.to_owned()))?;
        let mut entry = entry.lock().await;
        if !entry.group.is_empty() {
            return Err(CoordinatorError::GroupNotEmpty {
                group: group.to_owned(),
                members: entry.group.members().count(),
            });
        }
        let mut tombstones: Vec<(Key, Bytes)> = entry
            .offsets
            .keys()
            .map(|tp| (offset_key(group, tp), Bytes::new()))
            .collect();
        tombstones.push((
            Key::Group {
                group: group.to_owned(),
            },
            Bytes::new(),
        ));
        shard.write(group, tombstones, self.write_timeout()).await?;
        entry.offsets.clear();
        drop(entry);
        lock(&shard.groups).remove(group);
        Ok(())
    }

    /// Describes `group`.
    ///
    /// # Errors
    ///
    /// [`CoordinatorError::GroupNotFound`], or not the coordinator.
    pub async fn describe(&self, group: &str) -> Result<GroupDescription> {
        self.known_somewhere(group)?;
        let shard = self.shard(group)?;
        let entry = shard
            .entry(group)
            .ok_or_else(|| CoordinatorError::GroupNotFound(group.to_owned()))?;
        let entry = entry.lock().await;
        let snapshot = entry.group.snapshot();
        Ok(GroupDescription {
            group: group.to_owned(),
            state: entry.state(),
            group_epoch: entry.group.group_epoch(),
            assignor: entry.group.config().assignor,
            members: snapshot.members,
            topics: snapshot.topics,
            offsets: entry.offsets.clone(),
        })
    }

    /// Without the offsets topic no group exists yet: says so rather than "not available".
    fn known_somewhere(&self, group: &str) -> Result<()> {
        validate_group_id(group)?;
        if self.locate(group).is_none() {
            return Err(CoordinatorError::GroupNotFound(group.to_owned()));
        }
        Ok(())
    }

    /// The groups this broker coordinates.
    pub async fn list(&self) -> Vec<GroupSummary> {
        let shards: Vec<Arc<Shard>> = read(&self.shards)
            .values()
            .filter(|s| s.still_leads())
            .cloned()
            .collect();
        let mut out = Vec::new();
        for shard in shards {
            let entries = shard.entries();
            for (group, entry) in entries {
                let entry = entry.lock().await;
                out.push(GroupSummary {
                    group,
                    state: entry.state(),
                    members: entry.group.members().count(),
                });
            }
        }
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    /// Follows the leadership of the offsets partitions and runs the groups' timers until
    /// `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen_topics: Option<Arc<TopicMetadata>> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            self.follow_leadership();
            let topics = self.topic_metadata();
            let topics_changed = seen_topics.as_ref() != Some(&topics);
            seen_topics = Some(Arc::clone(&topics));
            self.tick(&topics, topics_changed).await;
        }
    }

    /// Loads offsets partitions this broker came to lead, drops those it no longer leads.
    fn follow_leadership(self: &Arc<Self>) {
        let count = self
            .node
            .metadata()
            .state
            .topic(OFFSETS_TOPIC)
            .map_or(0, |t| t.partitions.len());
        let mut shards = write(&self.shards);
        shards.retain(|index, s| (*index as usize) < count && s.still_leads());
        for index in 0..u32::try_from(count).unwrap_or(0) {
            let Some(p) = self.node.hosted(OFFSETS_TOPIC, index) else {
                continue;
            };
            if !p.is_leader() || shards.contains_key(&index) {
                continue;
            }
            let epoch = p.leader_epoch();
            let mut loading = lock(&self.loading);
            if loading.get(&index) == Some(&epoch) {
                continue;
            }
            loading.insert(index, epoch);
            let me = Arc::clone(self);
            tokio::spawn(async move {
                me.load(index, p, epoch).await;
                let mut loading = lock(&me.loading);
                if loading.get(&index) == Some(&epoch) {
                    loading.remove(&index);
                }
            });
        }
    }

    /// Replays offsets partition `index` (led at `epoch`) and serves its groups.
    async fn load(&self, index: u32, p: Arc<Partition>, epoch: i32) {
        let leads = || p.is_leader() && p.leader_epoch() == epoch;
        let end = p.log_end_offset();
        let mut hw = p.watch_high_watermark();
        while *hw.borrow_and_update() < end {
            if !leads() {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), hw.changed()).await;
        }
        let started = std::time::Instant::now();
        let mut replay = Replay::default();
        let mut offset = p.log_start_offset();
        let mut count = 0usize;
        while offset < end {
            let read = match p.read_now(offset, LOAD_CHUNK) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(partition = index, offset, error = %e, "could not load the offsets partition; will retry");
                    return;
                }
            };
            if read.records.is_empty() || read.next_offset <= offset {
                break;
            }
            for batch in cairn_batch::batches(&read.records) {
                let Ok(batch) = batch else { break };
                for record in cairn_batch::records(&batch) {
                    let Ok((at, r)) = record else { break };
                    if at >= offset && at < end {
                        replay.apply(r.key.as_deref(), &r.value);
                        count += 1;
                    }
                }
            }
            offset = read.next_offset;
        }
        if replay.skipped > 0 {
            tracing::warn!(
                partition = index,
                skipped = replay.skipped,
                "records in the offsets partition that are not Cairn's were skipped"
            );
        }
        let now = now_ms();
        let groups = replay
            .finish()
            .into_iter()
            .map(|(group, loaded)| {
                let restored = loaded.snapshot.map(|s| {
                    Group::restore(self.group_config.clone(), s, now).unwrap_or_else(|e| {
                        tracing::error!(group, error = %e, "a stored group snapshot is inconsistent; starting the group empty");
                        Group::new(self.group_config.clone())
                    })
                });
                let entry = Entry {
                    group: restored.unwrap_or_else(|| Group::new(self.group_config.clone())),
                    offsets: loaded.offsets,
                };
                (group, Arc::new(tokio::sync::Mutex::new(entry)))
            })
            .collect::<HashMap<_, _>>();
        let shard = Arc::new(Shard {
            partition: Arc::clone(&p),
            epoch,
            groups: Mutex::new(groups),
            cleaning: std::sync::atomic::AtomicBool::new(false),
            last_reachable_ms: std::sync::atomic::AtomicI64::new(now),
        });
        if !leads() {
            return;
        }
        let groups = lock(&shard.groups).len();
        let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if groups > 0 {
            tracing::info!(
                partition = index,
                epoch,
                records = count,
                groups,
                took_ms,
                "coordinating the groups of an offsets partition"
            );
        } else {
            tracing::debug!(
                partition = index,
                epoch,
                records = count,
                took_ms,
                "coordinating an offsets partition without groups"
            );
        }
        write(&self.shards).insert(index, shard);
    }

    /// Expires members and feeds topic changes to every loaded group; starts cleaning a
    /// partition that holds mostly superseded records.
    async fn tick(self: &Arc<Self>, topics: &TopicMetadata, topics_changed: bool) {
        let shards: Vec<Arc<Shard>> = read(&self.shards).values().cloned().collect();
        let now = now_ms();
        for shard in shards {
            // Cut off: members cannot reach a coordinator that refuses them, so their
            // sessions do not run here (a new coordinator gives them a full one).
            if !shard.still_leads() || !shard.can_replicate(self.reach_window()) {
                continue;
            }
            // Back from a silence (cut off, or this process stopped): every member gets a
            // full session from now before anyone is expired.
            let silent_since = shard
                .last_reachable_ms
                .swap(now, std::sync::atomic::Ordering::AcqRel);
            let window = i64::try_from(self.reach_window().as_millis()).unwrap_or(i64::MAX);
            let regrant = now - silent_since > window;
            let entries = shard.entries();
            let mut live = 0u64;
            for (group, entry) in entries {
                // A group busy with a request is looked at next tick.
                let Ok(mut entry) = entry.try_lock() else {
                    live += 1;
                    continue;
                };
                live += 1 + entry.offsets.len() as u64;
                if regrant {
                    entry.group.grant_full_sessions(now);
                }
                let before = entry.group.version();
                if topics_changed {
                    entry.group.update_topics(topics);
                }
                if entry.group.next_deadline().is_some_and(|d| d <= now) {
                    let expired = entry.group.expire(now);
                    if !expired.is_empty() {
                        tracing::info!(group, members = ?expired, "members left the group (session or rebalance timeout)");
                    }
                }
                if entry.group.version() != before {
                    let snapshot = encode_value(&entry.group.snapshot());
                    if let Err(e) = shard
                        .write(
                            &group,
                            vec![(
                                Key::Group {
                                    group: group.clone(),
                                },
                                snapshot,
                            )],
                            self.write_timeout(),
                        )
                        .await
                    {
                        tracing::warn!(group, error = %e, "could not store the group's state");
                    }
                }
            }
            let stored = u64::try_from(
                shard.partition.log_end_offset() - shard.partition.log_start_offset(),
            )
            .unwrap_or(0);
            if stored > self.config.offsets_cleanup_min_records.max(2 * live)
                && !shard
                    .cleaning
                    .swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                let me = Arc::clone(self);
                tokio::spawn(async move {
                    if let Err(e) = me.clean(&shard).await {
                        tracing::warn!(error = %e, "cleaning an offsets partition failed; will retry");
                    }
                    shard
                        .cleaning
                        .store(false, std::sync::atomic::Ordering::Release);
                });
            }
        }
    }

    /// Cleans an offsets partition: rolls its log at the end `S`, rewrites every group's
    /// live state (snapshot and offsets) after `S`, one group at a time under its lock, then
    /// deletes the segments below `S`. Everything a replay needs is then at or after `S`:
    /// records below it were superseded by the rewrite (or belong to deleted groups).
    /// Followers delete the same prefix when they see the leader's new log start. A crash
    /// half-way leaves a log that still replays to the same state.
    async fn clean(&self, shard: &Shard) -> Result<()> {
        let p = &shard.partition;
        let before = p.log_end_offset() - p.log_start_offset();
        let start_at = p.log_end_offset();
        p.roll()?;
        let entries = shard.entries();
        for (group, entry) in entries {
            let entry = entry.lock().await;
            let mut records: Vec<(Key, Bytes)> = entry
                .offsets
                .iter()
                .map(|(tp, c)| (offset_key(&group, tp), encode_value(c)))
                .collect();
            if entry.group.group_epoch() > 0 {
                records.push((
                    Key::Group {
                        group: group.clone(),
                    },
                    encode_value(&entry.group.snapshot()),
                ));
            }
            if !records.is_empty() {
                shard.write(&group, records, self.write_timeout()).await?;
            }
        }
        let deleted = p.delete_segments_below(start_at)?;
        tracing::info!(
            topic = OFFSETS_TOPIC,
            partition = p.index,
            records_before = before,
            records_after = p.log_end_offset() - p.log_start_offset(),
            segments_deleted = deleted,
            "cleaned an offsets partition"
        );
        Ok(())
    }
}

/// Checks that `member` at `epoch` may commit `offsets`: it is a member, its epoch is current
/// (or the one before, if its answer is still in flight), and it holds every partition.
fn check_member(
    group: &str,
    g: &Group,
    member: &str,
    epoch: i32,
    offsets: &[(TopicPartition, i64, String)],
) -> Result<()> {
    let id = crate::group::MemberId::new(member);
    let Some(rec) = g.member(&id) else {
        return Err(CoordinatorError::UnknownMember {
            group: group.to_owned(),
            member: member.to_owned(),
        });
    };
    if epoch != rec.member_epoch && epoch != rec.previous_member_epoch {
        let (received, current) = (epoch, rec.member_epoch);
        return Err(if epoch > rec.member_epoch {
            CoordinatorError::FencedMemberEpoch {
                group: group.to_owned(),
                member: member.to_owned(),
                received,
                current,
            }
        } else {
            CoordinatorError::StaleMemberEpoch {
                group: group.to_owned(),
                member: member.to_owned(),
                received,
                current,
            }
        });
    }
    let held: BTreeSet<&TopicPartition> = rec.held().collect();
    if let Some((tp, _, _)) = offsets.iter().find(|(tp, _, _)| !held.contains(tp)) {
        return Err(CoordinatorError::NotAssigned {
            group: group.to_owned(),
            member: member.to_owned(),
            partition: tp.clone(),
        });
    }
    Ok(())
}

/// Offsets as they are stored now.
fn stamped(offsets: Vec<(TopicPartition, i64, String)>) -> Vec<(TopicPartition, Committed)> {
    let now = now_ms();
    offsets
        .into_iter()
        .map(|(tp, offset, metadata)| {
            let c = Committed {
                offset,
                metadata,
                commit_timestamp_ms: now,
            };
            (tp, c)
        })
        .collect()
}

fn offset_key(group: &str, tp: &TopicPartition) -> Key {
    Key::Offset {
        group: group.to_owned(),
        topic: tp.topic.clone(),
        partition: tp.partition,
    }
}

/// Drops the entry of `group` if it holds nothing (a refused join, a dry run).
fn forget_if_unused(shard: &Shard, group: &str) {
    let mut groups = lock(&shard.groups);
    let unused = groups.get(group).is_some_and(|e| {
        e.try_lock()
            .is_ok_and(|e| e.group.is_empty() && e.offsets.is_empty() && e.group.group_epoch() == 0)
    });
    if unused {
        groups.remove(group);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_are_checked() {
        assert!(validate_group_id("orders-consumers_1.a").is_ok());
        for bad in ["", "a b", "ü", "a/b", &"x".repeat(250)] {
            assert!(
                matches!(
                    validate_group_id(bad),
                    Err(CoordinatorError::InvalidGroupId { .. })
                ),
                "{bad:?}"
            );
        }
    }

    fn tp(p: u32) -> TopicPartition {
        TopicPartition::new(TopicName::new("t").unwrap(), p)
    }

    /// A group where `a` joined alone (epoch 1, owns t-0..3), then `b` joined (epoch 2):
    /// `a` still holds everything, two partitions pending revocation at epoch 1.
    fn two_members() -> Group {
        let mut g = Group::new(GroupConfig::default());
        let topics: TopicMetadata = [(TopicName::new("t").unwrap(), 4)].into();
        let join = |id: &str| Heartbeat {
            member_id: crate::group::MemberId::new(id),
            member_epoch: 0,
            instance_id: None,
            subscribed_topics: Some([TopicName::new("t").unwrap()].into()),
            owned: Some(BTreeSet::new()),
        };
        g.heartbeat(join("a"), &topics, 0).unwrap();
        g.heartbeat(
            Heartbeat {
                member_epoch: 1,
                owned: Some((0..4).map(tp).collect()),
                subscribed_topics: None,
                ..join("a")
            },
            &topics,
            1,
        )
        .unwrap();
        g.heartbeat(join("b"), &topics, 2).unwrap();
        g.heartbeat(
            Heartbeat {
                member_epoch: 1,
                owned: None,
                subscribed_topics: None,
                ..join("a")
            },
            &topics,
            3,
        )
        .unwrap();
        g
    }

    #[test]
    fn only_holders_at_a_current_epoch_commit() {
        let g = two_members();
        let a = g.member(&crate::group::MemberId::new("a")).unwrap();
        assert_eq!(
            a.held().count(),
            4,
            "revoking partitions are still held: {a:?}"
        );
        let b = g.member(&crate::group::MemberId::new("b")).unwrap();
        let commit = |ps: &[u32]| -> Vec<(TopicPartition, i64, String)> {
            ps.iter().map(|&p| (tp(p), 1, String::new())).collect()
        };
        // a holds all four (two pending revocation) at its epoch: it may commit them all, which
        // is what it must do before releasing.
        assert!(check_member("g", &g, "a", a.member_epoch, &commit(&[0, 1, 2, 3])).is_ok());
        // b holds nothing yet.
        assert!(matches!(
            check_member("g", &g, "b", b.member_epoch, &commit(&[0])),
            Err(CoordinatorError::NotAssigned { .. })
        ));
        assert!(matches!(
            check_member("g", &g, "c", 1, &commit(&[0])),
            Err(CoordinatorError::UnknownMember { .. })
        ));
        assert!(matches!(
            check_member("g", &g, "a", a.member_epoch + 5, &commit(&[0])),
            Err(CoordinatorError::FencedMemberEpoch { .. })
        ));
        assert!(matches!(
            check_member("g", &g, "b", -3, &commit(&[])),
            Err(CoordinatorError::StaleMemberEpoch { .. })
        ));
    }

    #[test]
    fn placement_is_stable_and_spread() {
        assert_eq!(partition_for("g", 12), partition_for("g", 12));
        let used: BTreeSet<u32> = (0..200)
            .map(|i| partition_for(&format!("group-{i}"), 12))
            .collect();
        assert_eq!(used.len(), 12, "200 groups cover every partition");
        assert_eq!(partition_for("anything", 0), 0);
    }
}
