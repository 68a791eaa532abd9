//! [`Quorum`]: this broker's member of the metadata Raft group, and what the rest of the broker
//! asks of it: the current metadata, who the controller is, the voters and learners.
//!
//! Starting it opens the Raft log and state machine under `<data-dir>/metadata/`, starts openraft
//! with the configured timings and, on a pristine voter, initialises the group with the
//! configured voters (every voter may do so with the same list; openraft makes that safe). A
//! broker whose stored voters differ from the configured ones refuses to start: silently
//! adopting either list could split the cluster. A broker not among the voters waits to be added
//! as a learner by the controller when it registers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use openraft::{BasicNode, Config, Raft, ServerState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::election::Election;
use super::network::PreVoteClient;

use super::{
    BrokerId, LogStore, MetadataView, RaftNetworkClient, StateMachine, StoreError, TypeConfig,
};
use crate::config::{ClusterConfig, ConfigError, Voter};

/// Name of the metadata directory inside the data directory.
pub const METADATA_DIR: &str = "metadata";

/// Why the metadata quorum could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The Raft log or state machine could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// openraft refused the configuration or failed to start.
    #[error("starting the metadata Raft: {0}")]
    Raft(String),
    /// The stored cluster has other voters than the ones configured.
    #[error(
        "this broker's data directory belongs to a cluster whose voters are {stored:?}, but \
         --voters names {given:?}; start it with the cluster's voters list (changing voters is \
         not supported), or use an empty data directory"
    )]
    VotersMismatch {
        /// Voter ids in the stored membership.
        stored: Vec<u64>,
        /// Voter ids configured.
        given: Vec<u64>,
    },
}

/// This broker's handle on the metadata Raft group.
pub struct Quorum {
    id: BrokerId,
    raft: Raft<TypeConfig>,
    view: watch::Receiver<MetadataView>,
    voters: Vec<Voter>,
    /// Pre-vote elections and the leader's quorum acknowledgements (check-quorum).
    election: Arc<Election>,
    /// Stops the election tasks.
    tasks: CancellationToken,
    /// Whether this run of the broker registered and applied the metadata up to its
    /// registration: before that it names no controller to clients (its view may be stale).
    registered: AtomicBool,
    /// This cluster's fingerprint (its voters list), carried by every Raft call.
    fingerprint: String,
}

impl std::fmt::Debug for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum")
            .field("id", &self.id)
            .field("voters", &self.voters)
            .finish_non_exhaustive()
    }
}

impl Quorum {
    /// Opens the metadata store in `data_dir` and starts Raft. `advertised` is where peers reach
    /// this broker; with no voters configured, this broker alone is the voter at that address.
    ///
    /// # Errors
    ///
    /// [`QuorumError`] for a bad voters list, an unreadable store, a voters mismatch with the
    /// stored cluster, or openraft failing to start.
    pub async fn start(
        id: BrokerId,
        advertised: &str,
        data_dir: &Path,
        cluster: &ClusterConfig,
    ) -> Result<Self, QuorumError> {
        let mut voters = cluster.parsed_voters()?;
        if voters.is_empty() {
            voters.push(Voter {
                id,
                addr: advertised.to_owned(),
            });
        }
        let dir = data_dir.join(METADATA_DIR);
        let (log_store, sm) = tokio::task::spawn_blocking(move || {
            Ok::<_, StoreError>((LogStore::open(&dir)?, StateMachine::open(&dir)?))
        })
        .await
        .map_err(|e| QuorumError::Raft(format!("opening the metadata store: {e}")))??;
        let view = sm.subscribe();
        let config = Config {
            cluster_name: "cairn".to_owned(),
            heartbeat_interval: cluster.raft_heartbeat_interval_ms,
            election_timeout_min: cluster.raft_election_timeout_min_ms,
            election_timeout_max: cluster.raft_election_timeout_max_ms,
            // Metadata entries are small and few; snapshot every thousand.
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1_000),
            max_in_snapshot_log_to_keep: 500,
            // Elections start from `Election::run`, after a pre-vote.
            enable_elect: false,
            ..Config::default()
        }
        .validate()
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let fingerprint = super::network::cluster_fingerprint(&voters);
        let network = RaftNetworkClient::new(u64::from(id), &fingerprint);
        let raft = Raft::new(
            u64::from(id),
            Arc::new(config),
            network.clone(),
            log_store,
            sm,
        )
        .await
        .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let election = Arc::new(Election::new(u64::from(id), cluster));
        let tasks = CancellationToken::new();
        tokio::spawn(Arc::clone(&election).watch_quorum(raft.clone(), tasks.clone()));
        tokio::spawn(Arc::clone(&election).run(
            raft.clone(),
            PreVoteClient::new(&network, raft.clone()),
            tasks.clone(),
        ));
        let quorum = Self {
            id,
            raft,
            view,
            voters,
            election,
            tasks,
            registered: AtomicBool::new(false),
            fingerprint,
        };
        if let Err(e) = quorum.join().await {
            quorum.tasks.cancel();
            let _ = quorum.raft.shutdown().await;
            return Err(e);
        }
        Ok(quorum)
    }

    /// Checks the stored voters against the configured ones and initialises a pristine voter.
    async fn join(&self) -> Result<(), QuorumError> {
        let given: BTreeSet<u64> = self.voters.iter().map(|v| u64::from(v.id)).collect();
        let stored: BTreeSet<u64> = self
            .raft
            .with_raft_state(|st| st.membership_state.effective().voter_ids().collect())
            .await
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        if stored.is_empty() {
            if given.contains(&u64::from(self.id)) {
                let members: BTreeMap<u64, BasicNode> = self
                    .voters
                    .iter()
                    .map(|v| (u64::from(v.id), BasicNode::new(&v.addr)))
                    .collect();
                tracing::info!(voters = ?given, "initialising the metadata Raft group");
                self.raft
                    .initialize(members)
                    .await
                    .map_err(|e| QuorumError::Raft(e.to_string()))?;
            } else {
                tracing::info!(voters = ?given, "not a voter: waiting to join as a learner");
            }
            return Ok(());
        }
        if stored != given {
            return Err(QuorumError::VotersMismatch {
                stored: stored.into_iter().collect(),
                given: given.into_iter().collect(),
            });
        }
        Ok(())
    }

    /// This broker's id.
    pub fn id(&self) -> BrokerId {
        self.id
    }

    /// The openraft handle.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// The configured voters.
    pub fn configured_voters(&self) -> &[Voter] {
        &self.voters
    }

    /// The metadata as this broker last applied it.
    pub fn view(&self) -> MetadataView {
        self.view.borrow().clone()
    }

    /// Follows the metadata.
    pub fn subscribe(&self) -> watch::Receiver<MetadataView> {
        self.view.clone()
    }

    /// The controller (the Raft leader) as this broker knows it.
    pub fn controller(&self) -> Option<BrokerId> {
        self.raft
            .metrics()
            .borrow()
            .current_leader
            .and_then(|l| u32::try_from(l).ok())
    }

    /// The controller to name to clients: none until this run of the broker registered and
    /// caught up with the metadata up to its registration (a restarting broker's replayed view
    /// may name a controller long gone).
    pub fn known_controller(&self) -> Option<BrokerId> {
        if !self.registered.load(Ordering::Acquire) {
            return None;
        }
        if self.raft.metrics().borrow().current_leader == Some(u64::from(self.id)) {
            return self.is_controller().then_some(self.id);
        }
        self.controller()
    }

    /// Records that this run registered and applied the metadata up to its registration.
    pub fn set_registered(&self) {
        self.registered.store(true, Ordering::Release);
    }

    /// This cluster's fingerprint, which every Raft call carries and the `Raft` service checks.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The election state (for the `PreVote` handler).
    pub fn election(&self) -> &Arc<Election> {
        &self.election
    }

    /// Whether this broker is the controller right now: it leads the metadata Raft *and* a
    /// quorum acknowledged it within the leader lease (check-quorum), so a controller cut off
    /// from the other voters, or one restored as leader after a restart but not yet heard by
    /// them, stops acting as controller within one lease.
    pub fn is_controller(&self) -> bool {
        let single = {
            let m = self.raft.metrics();
            let m = m.borrow();
            if m.state != ServerState::Leader || m.current_leader != Some(u64::from(self.id)) {
                return false;
            }
            m.membership_config.membership().voter_ids().count() == 1
        };
        single || self.election.has_quorum(std::time::Instant::now())
    }

    /// The current Raft term.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    /// Voter and learner ids of the current membership.
    pub fn members(&self) -> (Vec<BrokerId>, Vec<BrokerId>) {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let ids = |it: &mut dyn Iterator<Item = u64>| -> Vec<BrokerId> {
            it.filter_map(|id| u32::try_from(id).ok()).collect()
        };
        (
            ids(&mut membership.voter_ids()),
            ids(&mut membership.learner_ids()),
        )
    }

    /// Whether `id` is a voter or learner in the current membership.
    pub fn is_member(&self, id: BrokerId) -> bool {
        let (voters, learners) = self.members();
        voters.contains(&id) || learners.contains(&id)
    }

    /// Where broker `id` is reached: its registered address, else its Raft membership address,
    /// else its configured voter address.
    pub fn broker_addr(&self, id: BrokerId) -> Option<String> {
        if let Some(b) = self.view.borrow().state.brokers().get(&id) {
            return Some(b.addr.clone());
        }
        let from_membership = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&u64::from(id))
            .map(|n| n.addr.clone());
        from_membership.or_else(|| {
            self.voters
                .iter()
                .find(|v| v.id == id)
                .map(|v| v.addr.clone())
        })
    }

    /// Waits until this broker has applied the metadata up to `index`, at most `timeout`.
    /// Returns whether it did.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.view.clone();
        tokio::time::timeout(timeout, rx.wait_for(|v| v.applied_index >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until broker `id` is registered and unfenced in this broker's metadata, at most
    /// `timeout`. Returns whether it is.
    pub async fn wait_alive(&self, id: BrokerId, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.alive(id))
            .await
            .unwrap_or(false)
    }

    /// Resolves once broker `id` is registered and unfenced (true), or when Raft stops (false).
    pub fn alive(&self, id: BrokerId) -> impl std::future::Future<Output = bool> + use<> {
        let mut rx = self.view.clone();
        async move {
            rx.wait_for(|v| v.state.brokers().get(&id).is_some_and(|b| !b.fenced))
                .await
                .is_ok()
        }
    }

    /// Resolves once broker `id` is unfenced at registration `epoch` or later (true), or when
    /// Raft stops (false).
    pub async fn alive_at(&self, id: BrokerId, epoch: u64) -> bool {
        let mut rx = self.view.clone();
        rx.wait_for(|v| {
            v.state
                .brokers()
                .get(&id)
                .is_some_and(|b| !b.fenced && b.epoch >= epoch)
        })
        .await
        .is_ok()
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        self.tasks.cancel();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "metadata Raft did not shut down cleanly");
        }
    }
}
