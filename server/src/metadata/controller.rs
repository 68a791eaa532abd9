//! [`Controller`]: what the metadata Raft leader does for the cluster, as KRaft's active
//! controller does in Kafka.
//!
//! Every broker holds a `Controller`, but only the one whose Raft node leads acts: it registers
//! brokers (adding non-voters to the Raft group as learners), renews their leases on heartbeat,
//! fences a broker whose lease expired (its leaderships move to live in-sync replicas), unfences
//! a fenced broker that heartbeats, turns admin requests into validated commands with a replica
//! assignment, and moves leadership back to preferred replicas. Each of those is a command
//! written through Raft; `ClusterState::apply` does the rest on every broker alike.
//!
//! Leases live only in the leader's memory, as in KRaft, and are judged on evidence only
//! (`leases.rs`): a broker is fenced when this controller, while running and acting as
//! controller, went a whole session without hearing from it. A newly elected controller gives
//! every broker a full session from the moment it took over, a paused or cut-off controller does
//! not count the time it could not hear, and the controller never fences itself. Any other broker answers [`ControllerError::NotController`] with the leader it
//! knows, and the caller retries there.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::leases::Leases;
use super::{
    ApplyError, AssignError, BrokerId, MetadataCommand, MetadataResponse, Quorum, assign_replicas,
};

/// How often the controller's duties run: lease checks, naming the cluster, balancing.
const TICK: Duration = Duration::from_millis(200);
use crate::config::ClusterConfig;
use crate::peers::PeerChannels;
use crate::topic::{TopicConfig, TopicName};

/// Why the controller refused or could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// This broker is not the controller; ask `controller` (if known) instead.
    #[error("broker {this} is not the controller{}", fmt_controller(controller))]
    NotController {
        /// The broker that answered.
        this: BrokerId,
        /// The controller this broker knows of, with its address.
        controller: Option<(BrokerId, String)>,
    },
    /// The broker's registration is gone or newer; register again.
    #[error("broker {broker} heartbeated with epoch {given}, but {}", match current {
        Some(c) => format!("its current epoch is {c}; register again"),
        None => "it is not registered; register first".to_owned(),
    })]
    StaleBrokerEpoch {
        /// The broker.
        broker: BrokerId,
        /// The epoch it sent.
        given: u64,
        /// The epoch the cluster knows, if it knows the broker.
        current: Option<u64>,
    },
    /// The metadata refused the command (unknown topic, name taken, ...); nothing changed.
    #[error(transparent)]
    Refused(#[from] ApplyError),
    /// A request field is out of range.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// More replicas than live brokers.
    #[error(
        "replication factor {requested} is larger than the {available} live broker(s); lower it \
         or start more brokers"
    )]
    InvalidReplicationFactor {
        /// Requested replicas per partition.
        requested: u32,
        /// Live (unfenced) brokers.
        available: u32,
    },
    /// Raft could not commit the command (shutting down, lost leadership mid-write).
    #[error("the metadata log is unavailable: {0}")]
    Unavailable(String),
}

fn fmt_controller(c: &Option<(BrokerId, String)>) -> String {
    match c {
        Some((id, addr)) => format!("; broker {id} at {addr} is"),
        None => "; no controller is elected yet".to_owned(),
    }
}

/// What a write committed: the command's response and the Raft log index it was applied at.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The response.
    pub response: MetadataResponse,
    /// Raft log index; a broker that applied it sees the change.
    pub index: u64,
}

/// A topic of a single-broker data directory from before cluster metadata, to carry over.
#[derive(Debug, Clone)]
pub struct LegacyTopic {
    /// Name.
    pub name: TopicName,
    /// Its id, kept so the partition directories stay its own.
    pub topic_id: String,
    /// Partition count.
    pub partitions: u32,
    /// Settings.
    pub config: TopicConfig,
}

/// The controller's logic on one broker (active only while it leads the metadata Raft).
#[derive(Debug)]
pub struct Controller {
    quorum: Arc<Quorum>,
    session: Duration,
    balance_every: Duration,
    max_partitions: u32,
    /// The id the first controller gives the cluster (a migrated directory's, or a new one).
    initial_cluster_id: String,
    /// Lease deadlines on the active clock (see `leases.rs`).
    leases: Mutex<Leases>,
    /// When leadership was last balanced (or this broker last became controller).
    last_balance: Mutex<Option<(u64, Instant)>>,
    /// Channels to the controller when it is another broker (admin forwarding, ISR changes,
    /// producer-id blocks).
    channels: PeerChannels,
}

impl Controller {
    /// The controller for `quorum`.
    pub fn new(
        quorum: Arc<Quorum>,
        cluster: &ClusterConfig,
        max_partitions: u32,
        initial_cluster_id: String,
    ) -> Self {
        Self {
            quorum,
            session: Duration::from_millis(cluster.broker_session_timeout_ms),
            balance_every: Duration::from_millis(cluster.leader_balance_interval_ms),
            max_partitions,
            initial_cluster_id,
            leases: Mutex::new(Leases::new(
                Duration::from_millis(cluster.broker_session_timeout_ms),
                TICK * 2,
            )),
            last_balance: Mutex::new(None),
            channels: PeerChannels::new(|e| {
                e.connect_timeout(Duration::from_secs(3)).tcp_nodelay(true)
            }),
        }
    }

    /// A channel to the controller, for a broker that is not it: the controller it knows of.
    ///
    /// # Errors
    ///
    /// [`ControllerError::NotController`] without a controller if none is known (an election
    /// is running) or this broker is the controller; [`ControllerError::Unavailable`] for an
    /// unusable address.
    pub fn remote_channel(&self) -> Result<tonic::transport::Channel, ControllerError> {
        let me = self.quorum.id();
        let addr = self
            .quorum
            .controller()
            .filter(|&c| c != me)
            .and_then(|c| self.quorum.broker_addr(c))
            .ok_or(ControllerError::NotController {
                this: me,
                controller: None,
            })?;
        self.channels.get(&addr).map_err(|e| {
            ControllerError::Unavailable(format!("the controller's address {addr:?}: {e}"))
        })
    }

    /// The metadata quorum.
    pub fn quorum(&self) -> &Arc<Quorum> {
        &self.quorum
    }

    fn not_controller(&self) -> ControllerError {
        let controller = self
            .quorum
            .controller()
            .filter(|&c| c != self.quorum.id())
            .and_then(|c| self.quorum.broker_addr(c).map(|a| (c, a)));
        ControllerError::NotController {
            this: self.quorum.id(),
            controller,
        }
    }

    fn ensure_controller(&self) -> Result<(), ControllerError> {
        if self.quorum.is_controller() {
            Ok(())
        } else {
            Err(self.not_controller())
        }
    }

    /// Writes `cmd` through Raft and waits until it is applied here.
    async fn write(&self, cmd: MetadataCommand) -> Result<Committed, ControllerError> {
        match self.quorum.raft().client_write(cmd).await {
            Ok(written) => Ok(Committed {
                response: written.data?,
                index: written.log_id.index,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(self.not_controller())
            }
            Err(e) => Err(ControllerError::Unavailable(e.to_string())),
        }
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Grants `id` a full session from now.
    fn renew(&self, id: BrokerId) {
        self.leases().renew(id);
    }

    /// Registers a broker (fenced, with a new epoch) and, if it is not in the Raft group, adds
    /// it as a learner so it receives the metadata.
    ///
    /// # Errors
    ///
    /// [`ControllerError::NotController`], a refusal (empty address), or Raft unavailable.
    pub async fn register(&self, id: BrokerId, addr: &str) -> Result<Committed, ControllerError> {
        self.ensure_controller()?;
        if id == 0 {
            return Err(ControllerError::InvalidArgument {
                field: "broker_id",
                reason: "broker ids start at 1".to_owned(),
            });
        }
        self.name_cluster().await?;
        let committed = self
            .write(MetadataCommand::RegisterBroker {
                id,
                addr: addr.to_owned(),
            })
            .await?;
        self.renew(id);
        tracing::info!(broker = id, addr, "registered broker");
        if !self.quorum.is_member(id) {
            let raft = self.quorum.raft().clone();
            let node = openraft::BasicNode::new(addr);
            tokio::spawn(async move {
                match raft.add_learner(u64::from(id), node, false).await {
                    Ok(_) => tracing::info!(broker = id, "added broker as a metadata learner"),
                    Err(e) => tracing::warn!(broker = id, error = %e, "could not add learner"),
                }
            });
        }
        Ok(committed)
    }

    /// Renews a broker's lease and unfences it if it was fenced; or, for a broker that wants
    /// to shut down, fences it at once, which moves its leaderships to other live in-sync
    /// replicas (controlled shutdown). Returns whether the broker is now fenced.
    ///
    /// # Errors
    ///
    /// [`ControllerError::NotController`], [`ControllerError::StaleBrokerEpoch`], or Raft
    /// unavailable while fencing or unfencing.
    pub async fn heartbeat(
        &self,
        id: BrokerId,
        epoch: u64,
        want_shutdown: bool,
    ) -> Result<bool, ControllerError> {
        self.ensure_controller()?;
        let fenced = {
            let view = self.quorum.view();
            let Some(broker) = view.state.brokers().get(&id) else {
                return Err(ControllerError::StaleBrokerEpoch {
                    broker: id,
                    given: epoch,
                    current: None,
                });
            };
            if broker.epoch != epoch {
                return Err(ControllerError::StaleBrokerEpoch {
                    broker: id,
                    given: epoch,
                    current: Some(broker.epoch),
                });
            }
            broker.fenced
        };
        if want_shutdown {
            if !fenced {
                self.write(MetadataCommand::FenceBroker { id }).await?;
                tracing::info!(
                    broker = id,
                    "controlled shutdown: fenced the broker and moved its leaderships"
                );
            }
            return Ok(true);
        }
        self.renew(id);
        if fenced {
            self.write(MetadataCommand::UnfenceBroker { id }).await?;
            tracing::info!(broker = id, "unfenced broker");
        }
        Ok(false)
    }

    /// Changes a partition's ISR on behalf of its leader, at the leader's epoch.
    ///
    /// # Errors
    ///
    /// [`ControllerError::NotController`]; a refusal if the epoch is stale, the leader is not
    /// the partition's leader, or the ISR is invalid.
    pub async fn alter_isr(
        &self,
        topic: &str,
        partition: u32,
        leader: BrokerId,
        leader_epoch: i32,
        isr: Vec<BrokerId>,
    ) -> Result<Committed, ControllerError> {
        self.ensure_controller()?;
        let view = self.quorum.view();
        let current = view
            .state
            .topic(topic)
            .and_then(|t| t.partitions.get(partition as usize))
            .ok_or_else(|| ApplyError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
            })?;
        if current.leader != Some(leader) {
            return Err(ApplyError::StaleLeaderEpoch {
                given: leader_epoch,
                current: current.leader_epoch,
            }
            .into());
        }
        let committed = self
            .write(MetadataCommand::ChangeIsr {
                topic: topic.to_owned(),
                partition,
                isr: isr.clone(),
                leader_epoch,
            })
            .await?;
        tracing::info!(topic, partition, leader, ?isr, "changed ISR");
        Ok(committed)
    }

    /// Allocates a block of `count` producer ids to `broker`; returns the first.
    ///
    /// # Errors
    ///
    /// [`ControllerError::NotController`], a refusal, or Raft unavailable.
    pub async fn allocate_producer_ids(
        &self,
        broker: BrokerId,
        count: u32,
    ) -> Result<i64, ControllerError> {
        self.ensure_controller()?;
        match self
            .write(MetadataCommand::AllocateProducerIds { broker, count })
            .await?
            .response
        {
            MetadataResponse::ProducerIds { first, .. } => Ok(first),
            other => Err(ControllerError::Unavailable(format!(
                "producer id allocation answered {other:?}"
            ))),
        }
    }

    /// The session a heartbeat grants.
    pub fn session(&self) -> Duration {
        self.session
    }

    /// Creates a topic: validates it, places its replicas on live brokers (spreading preferred
    /// leaders evenly) and commits it. Returns the commit.
    ///
    /// # Errors
    ///
    /// [`ControllerError`] naming what to fix; nothing changed.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        config: TopicConfig,
    ) -> Result<Committed, ControllerError> {
        self.ensure_controller()?;
        let name = TopicName::new(name).map_err(|e| ApplyError::InvalidTopicName {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        self.check_partition_count("partitions", partitions)?;
        config
            .validate()
            .map_err(|reason| ControllerError::InvalidArgument {
                field: "config",
                reason,
            })?;
        let view = self.quorum.view();
        if view.state.topic(name.as_str()).is_some() {
            return Err(ApplyError::TopicExists(name.to_string()).into());
        }
        let replication_factor = replication_factor.max(1);
        let assignment = self.assign(&view.state, partitions, replication_factor)?;
        let committed = self
            .write(MetadataCommand::CreateTopic {
                name: name.to_string(),
                topic_id: crate::node::new_id(),
                config,
                assignment,
            })
            .await?;
        tracing::info!(topic = %name, partitions, replication_factor, "created topic");
        Ok(committed)
    }

    /// Deletes a topic.
    ///
    /// # Errors
    ///
    /// [`ControllerError`]; nothing changed.
    pub async fn delete_topic(&self, name: &str) -> Result<Committed, ControllerError> {
        self.ensure_controller()?;
        let committed = self
            .write(MetadataCommand::DeleteTopic {
                name: name.to_owned(),
            })
            .await?;
        tracing::info!(topic = name, "deleted topic");
        Ok(committed)
    }

    /// Grows a topic to `total` partitions, placing the new ones like the first.
    ///
    /// # Errors
    ///
    /// [`ControllerError`]; nothing changed.
    pub async fn create_partitions(
        &self,
        name: &str,
        total: u32,
    ) -> Result<Committed, ControllerError> {
        self.ensure_controller()?;
        let view = self.quorum.view();
        let topic = view
            .state
            .topic(name)
            .ok_or_else(|| ApplyError::UnknownTopic(name.to_owned()))?;
        self.check_partition_count("total_partitions", total)?;
        let existing = u32::try_from(topic.partitions.len()).unwrap_or(u32::MAX);
        if total <= existing {
            return Err(ControllerError::InvalidArgument {
                field: "total_partitions",
                reason: format!(
                    "topic {name:?} already has {existing} partitions; the new total must be larger"
                ),
            });
        }
        let rf = topic.partitions.first().map_or(1, |p| p.replicas.len());
        let rf = u32::try_from(rf).unwrap_or(u32::MAX);
        let new_assignments = self.assign(&view.state, total - existing, rf)?;
        self.write(MetadataCommand::CreatePartitions {
            name: name.to_owned(),
            new_assignments,
        })
        .await
    }

    fn check_partition_count(&self, field: &'static str, n: u32) -> Result<(), ControllerError> {
        if n == 0 || n > self.max_partitions {
            return Err(ControllerError::InvalidArgument {
                field,
                reason: format!("must be between 1 and {}, got {n}", self.max_partitions),
            });
        }
        Ok(())
    }

    /// Places replicas on the live brokers, from a random starting broker as Kafka does.
    fn assign(
        &self,
        state: &super::ClusterState,
        partitions: u32,
        replication_factor: u32,
    ) -> Result<Vec<Vec<BrokerId>>, ControllerError> {
        let live: Vec<BrokerId> = state
            .brokers()
            .iter()
            .filter(|(_, b)| !b.fenced)
            .map(|(&id, _)| id)
            .collect();
        let start = u32::from_str_radix(&crate::node::new_id()[..8], 16).unwrap_or(0);
        assign_replicas(&live, partitions, replication_factor, start).map_err(|e| match e {
            AssignError::ReplicationFactorTooLarge { .. } | AssignError::NoBrokers => {
                ControllerError::InvalidReplicationFactor {
                    requested: replication_factor,
                    available: u32::try_from(live.len()).unwrap_or(u32::MAX),
                }
            }
            other => ControllerError::InvalidArgument {
                field: "partitions",
                reason: other.to_string(),
            },
        })
    }

    /// Carries the topics of a pre-cluster single-broker data directory into the metadata, each
    /// partition on this broker alone, keeping their ids. Topics already present with the same
    /// id are skipped, so an interrupted migration can run again.
    ///
    /// # Errors
    ///
    /// [`ControllerError`] if a topic cannot be written.
    pub async fn migrate(&self, topics: &[LegacyTopic]) -> Result<(), ControllerError> {
        self.ensure_controller()?;
        let me = self.quorum.id();
        for t in topics {
            let view = self.quorum.view();
            match view.state.topic(t.name.as_str()) {
                Some(existing) if existing.topic_id == t.topic_id => continue,
                Some(_) => return Err(ApplyError::TopicExists(t.name.to_string()).into()),
                None => {}
            }
            let assignment = vec![vec![me]; t.partitions as usize];
            self.write(MetadataCommand::CreateTopic {
                name: t.name.to_string(),
                topic_id: t.topic_id.clone(),
                config: t.config.clone(),
                assignment,
            })
            .await?;
            tracing::info!(topic = %t.name, "migrated topic into the cluster metadata");
        }
        Ok(())
    }

    /// Runs the controller's periodic duties while this broker leads: names the cluster, fences
    /// brokers whose lease expired and rebalances leadership. Returns when `shutdown` fires.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !self.quorum.is_controller() {
                self.leases().idle(std::time::Instant::now());
                continue;
            }
            if let Err(e) = self.duties().await {
                tracing::debug!(error = %e, "controller duties interrupted");
            }
        }
    }

    /// Gives the cluster its id if no controller did yet (before the first registration).
    async fn name_cluster(&self) -> Result<(), ControllerError> {
        if self.quorum.view().state.cluster_id().is_empty() {
            match self
                .write(MetadataCommand::InitCluster {
                    cluster_id: self.initial_cluster_id.clone(),
                })
                .await
            {
                Ok(_) => tracing::info!(cluster_id = %self.initial_cluster_id, "named the cluster"),
                // Named concurrently (another registration); that name stands.
                Err(ControllerError::Refused(ApplyError::ClusterIdSet(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn duties(&self) -> Result<(), ControllerError> {
        self.name_cluster().await?;
        let view = self.quorum.view();
        let term = self.quorum.term();
        let tick = {
            let live = view
                .state
                .brokers()
                .iter()
                .filter(|(_, b)| !b.fenced)
                .map(|(&id, _)| id);
            let mut leases = self.leases();
            let tick = leases.tick(std::time::Instant::now(), term, self.quorum.id(), live);
            if tick.new_term
                && let Some((old, silent)) = self.quorum.election().last_leader()
                && let Ok(old) = BrokerId::try_from(old)
            {
                // This broker saw the previous controller's Raft heartbeats stop `silent` ago
                // (which is why it was elected): that time counts against its lease.
                leases.already_silent(old, silent);
                tracing::info!(
                    term,
                    previous = old,
                    silent_ms = u64::try_from(silent.as_millis()).unwrap_or(u64::MAX),
                    "became controller: every broker gets a full session, the silent previous \
                     controller the rest of its own"
                );
            } else if tick.new_term {
                tracing::info!(term, "became controller: every broker gets a full session");
            }
            tick
        };
        for id in tick.expired {
            tracing::warn!(
                broker = id,
                session_ms = u64::try_from(self.session.as_millis()).unwrap_or(u64::MAX),
                "no heartbeat from the broker for a whole session of this controller's running \
                 time: fencing it"
            );
            self.write(MetadataCommand::FenceBroker { id }).await?;
        }
        if self.balance_due(term) {
            self.balance_leaders().await?;
        }
        Ok(())
    }

    /// Whether leadership balancing is due: every `balance_every`, counting from when this
    /// broker became controller in `term` (a new controller first waits a full interval).
    fn balance_due(&self, term: u64) -> bool {
        let now = Instant::now();
        let mut last = self
            .last_balance
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *last {
            Some((t, at)) if t == term && now.duration_since(at) < self.balance_every => false,
            Some((t, _)) if t == term => {
                *last = Some((term, now));
                true
            }
            _ => {
                *last = Some((term, now));
                false
            }
        }
    }

    /// Moves leadership back to each partition's preferred replica (its first) where that
    /// replica is alive, in sync and not leading.
    async fn balance_leaders(&self) -> Result<(), ControllerError> {
        let view = self.quorum.view();
        let brokers = view.state.brokers();
        let mut moves = Vec::new();
        for (name, topic) in view.state.topics() {
            for (index, p) in (0u32..).zip(&topic.partitions) {
                let Some(&preferred) = p.replicas.first() else {
                    continue;
                };
                let alive = brokers.get(&preferred).is_some_and(|b| !b.fenced);
                if p.leader != Some(preferred) && alive && p.isr.contains(&preferred) {
                    moves.push((name.clone(), index, preferred));
                }
            }
        }
        for (topic, partition, leader) in moves {
            tracing::info!(%topic, partition, leader, "moving leadership to the preferred replica");
            match self
                .write(MetadataCommand::ElectLeader {
                    topic,
                    partition,
                    leader,
                })
                .await
            {
                Ok(_) | Err(ControllerError::Refused(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
