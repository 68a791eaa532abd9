//! One place that assembles a broker: [`Broker::start`] builds every part in order, and
//! [`Broker::shutdown`] takes them down in the reverse order. `cairn serve` is [`run`] with a
//! signal as the shutdown; tests start brokers in-process with [`Broker::start`] on a port-0
//! listener.
//!
//! Why one place: the lifecycle is only right if one owner knows every task. The broker owns
//! one cancellation token and one task tracker ([`Tasks`]); every long-lived task (lease,
//! upkeep, reconcile, controller duties, coordinator, ISR checks, follower fetchers, offsets
//! loads and cleaning, learner additions, ISR proposals, migration) runs through it, so
//! shutdown can wait for all of them before it flushes and closes the logs.
//!
//! Shutdown order: controlled shutdown (hand leaderships over, stop the lease), health
//! NOT_SERVING, stop intake, cancel the token (streams and long polls end, background work
//! stops), drain in-flight requests (at most [`service::DRAIN_TIMEOUT`]), stop the follower
//! fetchers, wait for every tracked task, flush the logs, stop Raft. The logs close when the
//! last reference to the node drops.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{BrokerConfig, ConfigError};
use crate::coordinator::Coordinator;
use crate::metadata::lease::Registered;
use crate::metadata::{Controller, LegacyTopic, Quorum, QuorumError};
use crate::node::{self, Node, NodeError, Registry};
use crate::replication::alter::{IsrUpdater, run_isr_checks};
use crate::service::{self, DRAIN_TIMEOUT, Parts, ServeError};
pub use crate::tasks::Tasks;

/// Why a broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listener's address could not be read.
    #[error("reading the listener's address")]
    Listener(#[source] std::io::Error),
    /// The data directory could not be locked or read.
    #[error("opening data directory {}", .0.display())]
    DataDir(PathBuf, #[source] NodeError),
    /// A pre-cluster data directory was given to a broker with other voters.
    #[error(
        "data directory {} holds topics from a single-broker Cairn (topics.json); start it once \
         without --voters to move them into the cluster metadata, then join it to a cluster \
         with an empty data directory",
        .0.display()
    )]
    LegacyWithVoters(PathBuf),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The metadata quorum did not start.
    #[error("starting the metadata quorum")]
    Quorum(#[from] QuorumError),
    /// The gRPC server failed.
    #[error("serving")]
    Serve(#[from] ServeError),
    /// The serving task panicked.
    #[error("the serving task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    addr: SocketAddr,
    tasks: Tasks,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<Result<(), BrokerError>>,
}

/// Runs a broker on `listener` until `shutdown` resolves, then shuts it down.
///
/// # Errors
///
/// [`BrokerError`] if it cannot start or the server fails.
pub async fn run(
    config: BrokerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BrokerError> {
    let mut broker = Broker::start(config, listener).await?;
    tokio::select! {
        () = shutdown => {}
        r = &mut broker.serving => return r?,
    }
    broker.shutdown().await
}

impl Broker {
    /// Builds and starts every part of a broker serving on `listener` (its address replaces
    /// `config.listen`). Returns once the server is accepting; the broker joins the cluster
    /// in the background and prints `cairn listening on ADDR` when it is ready.
    ///
    /// # Errors
    ///
    /// [`BrokerError`]: the data directory, the configuration or the quorum.
    pub async fn start(
        mut config: BrokerConfig,
        listener: TcpListener,
    ) -> Result<Self, BrokerError> {
        let addr = listener.local_addr().map_err(BrokerError::Listener)?;
        config.listen = addr;
        let data_dir = config.data_dir.clone();
        let (lock, legacy) = open_data_dir(&data_dir).await?;
        let voters = config.cluster.parsed_voters()?;
        if legacy.is_some() && voters.iter().any(|v| v.id != config.node_id) {
            return Err(BrokerError::LegacyWithVoters(data_dir));
        }
        let advertised = config
            .advertised_address
            .clone()
            .unwrap_or_else(|| addr.to_string());
        let tasks = Tasks::new();
        let cancel = tasks.token();
        let quorum =
            Arc::new(Quorum::start(config.node_id, &advertised, &data_dir, &config.cluster).await?);
        let cluster_id = legacy
            .as_ref()
            .map_or_else(node::new_id, |r| r.cluster_id.clone());
        let controller = Arc::new(Controller::new(
            Arc::clone(&quorum),
            &config.cluster,
            config.limits.max_partitions_per_topic,
            cluster_id,
            tasks.clone(),
        ));
        let node = Node::new(config, lock, quorum.subscribe(), tasks.clone());
        if let Some(registry) = legacy {
            // Dropped at shutdown; the next start migrates what is left (the file is retired
            // only after the migration committed).
            tasks.spawn_cancellable(migrate(Arc::clone(&controller), registry));
        }
        tracing::info!(%addr, data_dir = %data_dir.display(), "broker started; joining the cluster");
        let (registered, registration) = watch::channel::<Option<Registered>>(None);
        // Dropped at shutdown: a broker that never became ready has nothing to announce.
        tasks.spawn_cancellable(announce_ready(
            addr,
            data_dir.display().to_string(),
            Arc::clone(&quorum),
            registered.subscribe(),
        ));
        // The lease stops before the rest (controlled shutdown), on its own child token.
        let leave = cancel.child_token();
        let lease = tasks.spawn(crate::metadata::lease::run(
            Arc::clone(&quorum),
            node.advertised_address(),
            node.config().cluster.clone(),
            registered,
            leave.clone(),
        ));
        let isr = IsrUpdater::new(Arc::clone(&controller), tasks.clone());
        let coordinator = Coordinator::new(Arc::clone(&node), tasks.clone());
        tasks.spawn(Arc::clone(&node).run_upkeep(cancel.clone()));
        tasks.spawn(Arc::clone(&node).run_reconcile(registration, cancel.clone()));
        tasks.spawn(Arc::clone(&controller).run(cancel.clone()));
        tasks.spawn(Arc::clone(&coordinator).run(cancel.clone()));
        tasks.spawn(run_isr_checks(
            Arc::clone(&node),
            Arc::clone(&isr),
            node.config().replication.clone(),
            cancel.clone(),
        ));
        let parts = Parts {
            node,
            controller,
            coordinator,
            isr,
        };
        let (stop, stopped) = oneshot::channel();
        let serving = tokio::spawn(serve_then_stop(
            listener,
            parts,
            tasks.clone(),
            Lease { leave, task: lease },
            stopped,
        ));
        Ok(Self {
            addr,
            tasks,
            stop,
            serving,
        })
    }

    /// The address the broker listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker's tracked tasks: what shutdown waits for. A test can spawn through it.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Shuts the broker down (see the module docs for the order) and returns once every
    /// tracked task has ended, the logs are flushed and Raft has stopped.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Serve`] if the server failed, [`BrokerError::Join`] if it panicked.
    pub async fn shutdown(self) -> Result<(), BrokerError> {
        let _ = self.stop.send(());
        self.serving.await?
    }
}

/// The lease task and the token that makes it leave.
struct Lease {
    leave: CancellationToken,
    task: JoinHandle<()>,
}

/// Serves until told to stop, then takes the broker down in order (the module docs).
async fn serve_then_stop(
    listener: TcpListener,
    parts: Parts,
    tasks: Tasks,
    lease: Lease,
    stopped: oneshot::Receiver<()>,
) -> Result<(), BrokerError> {
    let node = Arc::clone(&parts.node);
    let quorum = Arc::clone(parts.controller.quorum());
    let shutdown = {
        let (node, quorum) = (Arc::clone(&node), Arc::clone(&quorum));
        async move {
            // A dropped `Broker` stops it too.
            let _ = stopped.await;
            controlled_shutdown(&node, &quorum, lease).await;
        }
    };
    let result = service::serve(listener, parts, tasks.token(), shutdown).await;
    // Fetchers have their own tokens (one per followed partition); stop them, then wait.
    tasks.token().cancel();
    node.stop_fetchers();
    tasks.cancel_and_wait().await;
    let flush_node = Arc::clone(&node);
    let _ = tokio::task::spawn_blocking(move || flush_node.flush_all()).await;
    quorum.shutdown().await;
    tracing::info!("stopped");
    result.map_err(BrokerError::from)
}

/// Locks the data directory and reads a pre-cluster `topics.json`, if any.
async fn open_data_dir(
    data_dir: &Path,
) -> Result<(node::DataDirLock, Option<Registry>), BrokerError> {
    let dir = data_dir.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || {
        let lock = node::lock_data_dir(&dir)?;
        Ok::<_, NodeError>((lock, Registry::load_legacy(&dir)?))
    })
    .await?;
    opened.map_err(|e| BrokerError::DataDir(data_dir.to_path_buf(), e))
}

/// Prints `cairn listening on ADDR` once this run of the broker registered and was unfenced
/// (for a cluster broker, once a quorum of voters is up): tests and scripts read the line to
/// learn the port and that the broker is ready. The metadata replayed from disk says nothing
/// about this run.
async fn announce_ready(
    addr: SocketAddr,
    shown: String,
    quorum: Arc<Quorum>,
    mut registration: watch::Receiver<Option<Registered>>,
) {
    let Ok(r) = registration.wait_for(Option::is_some).await.map(|r| *r) else {
        return;
    };
    let epoch = r.map_or(0, |r| r.epoch);
    if quorum.alive_at(quorum.id(), epoch).await {
        println!("cairn listening on {addr} (data in {shown})");
        tracing::info!(%addr, "broker ready");
    }
}

/// Controlled shutdown (Kafka's): if another broker is alive to take over, asks the controller
/// to fence this broker, which moves its partition leaderships to other in-sync replicas, and
/// waits (at most [`DRAIN_TIMEOUT`]) until this broker leads nothing, so clients move to the new
/// leaders before this one stops answering. Then stops the lease.
async fn controlled_shutdown(node: &Node, quorum: &Quorum, lease: Lease) {
    let me = quorum.id();
    let others_alive = quorum
        .view()
        .state
        .brokers()
        .iter()
        .any(|(&id, b)| id != me && !b.fenced);
    lease.leave.cancel();
    if !others_alive {
        lease.task.abort();
        return;
    }
    tracing::info!("controlled shutdown: handing over partition leaderships");
    let _ = lease.task.await;
    let handed_over = async {
        while !node.led_partitions().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, handed_over)
        .await
        .is_err()
    {
        tracing::warn!(
            still_leading = node.led_partitions().len(),
            "controlled shutdown: some leaderships did not move in time"
        );
    }
}

/// Moves the topics of a single-broker data directory into the cluster metadata once this
/// broker (its one voter) is the controller and registered, then retires the old file.
async fn migrate(controller: Arc<Controller>, registry: Registry) {
    let topics: Vec<LegacyTopic> = registry
        .topics
        .iter()
        .map(|(name, r)| LegacyTopic {
            name: name.clone(),
            topic_id: r.topic_id.clone(),
            partitions: r.partitions,
            config: r.config.clone(),
        })
        .collect();
    let quorum = Arc::clone(controller.quorum());
    let me = quorum.id();
    let mut metadata = quorum.subscribe();
    loop {
        let ready = {
            let view = metadata.borrow_and_update();
            !view.state.cluster_id().is_empty() && view.state.brokers().contains_key(&me)
        };
        if ready && quorum.is_controller() {
            match controller.migrate(&topics).await {
                Ok(()) => break,
                Err(e) => tracing::warn!(error = %e, "migrating topics.json failed; retrying"),
            }
        }
        tokio::select! {
            r = metadata.changed() => if r.is_err() { return },
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    match tokio::task::spawn_blocking(move || registry.retire()).await {
        Ok(Ok(())) => tracing::info!(
            topics = topics.len(),
            "migrated topics.json into the cluster metadata"
        ),
        Ok(Err(e)) => tracing::error!(error = %e, "could not retire topics.json"),
        Err(e) => tracing::error!(error = %e, "retiring topics.json panicked"),
    }
}
