//! `cairn serve`: runs a broker until SIGINT or SIGTERM, then shuts down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use std::sync::Arc;

use crate::config::BrokerConfig;
use crate::metadata::{Controller, LegacyTopic, Quorum};
use crate::node::{self, Node, Registry};
use crate::service;

/// Flags of `cairn serve`; each overrides the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (see ARCHITECTURE.md for the keys).
    #[arg(long, short = 'c', env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    /// Directory holding partitions and metadata [default: ./data].
    #[arg(long, env = "CAIRN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:9092].
    #[arg(long, env = "CAIRN_LISTEN")]
    listen: Option<SocketAddr>,
    /// This broker's id [default: 1].
    #[arg(long)]
    node_id: Option<u32>,
    /// Address clients should use to reach this broker, if not the listen address.
    #[arg(long)]
    advertised_address: Option<String>,
    /// The metadata Raft voters, the same list on every broker: `1@host:port,2@host:port,...`.
    /// A broker whose id is listed votes; others join as learners. Unset: this broker alone.
    #[arg(long, env = "CAIRN_VOTERS", value_delimiter = ',')]
    voters: Vec<String>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<BrokerConfig> {
        let mut config = match &self.config {
            Some(path) => BrokerConfig::from_file(path)?,
            None => BrokerConfig::default(),
        };
        if let Some(d) = self.data_dir {
            config.data_dir = d;
        }
        if let Some(l) = self.listen {
            config.listen = l;
        }
        if let Some(id) = self.node_id {
            config.node_id = id;
        }
        if let Some(a) = self.advertised_address {
            config.advertised_address = Some(a);
        }
        if !self.voters.is_empty() {
            config.cluster.voters = self.voters;
        }
        config.validate()?;
        Ok(config)
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        // openraft narrates every election step at info and logs every retry to an unreachable
        // peer (twice a second) as a warning or error; Cairn logs what matters of those itself.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,openraft=error,openraft::replication=off")
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the broker to completion.
///
/// # Errors
///
/// Configuration, data-directory or transport failures, with their causes.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    let config = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let (listener, addr) = service::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let mut config = config;
        config.listen = addr;
        let data_dir = config.data_dir.clone();
        let dir = data_dir.clone();
        let (lock, legacy) = tokio::task::spawn_blocking(move || {
            let lock = node::lock_data_dir(&dir)?;
            Ok::<_, node::NodeError>((lock, Registry::load_legacy(&dir)?))
        })
        .await
        .context("opening the data directory")?
        .with_context(|| format!("opening data directory {}", data_dir.display()))?;
        let voters = config.cluster.parsed_voters()?;
        if legacy.is_some() && voters.iter().any(|v| v.id != config.node_id) {
            anyhow::bail!(
                "data directory {} holds topics from a single-broker Cairn (topics.json); start \
                 it once without --voters to move them into the cluster metadata, then join it \
                 to a cluster with an empty data directory",
                data_dir.display()
            );
        }
        let advertised = config
            .advertised_address
            .clone()
            .unwrap_or_else(|| addr.to_string());
        let quorum = Arc::new(
            Quorum::start(config.node_id, &advertised, &data_dir, &config.cluster)
                .await
                .context("starting the metadata quorum")?,
        );
        let cluster_id = legacy
            .as_ref()
            .map_or_else(node::new_id, |r| r.cluster_id.clone());
        let controller = Arc::new(Controller::new(
            Arc::clone(&quorum),
            &config.cluster,
            config.limits.max_partitions_per_topic,
            cluster_id,
        ));
        let node = Node::new(config, lock, quorum.subscribe());
        if let Some(registry) = legacy {
            tokio::spawn(migrate(Arc::clone(&controller), registry));
        }
        tracing::info!(%addr, data_dir = %data_dir.display(), "broker started; joining the cluster");
        // Tests and scripts read this line to learn the port and that the broker is ready: it
        // is printed once this run of the broker registered and was unfenced (for a cluster
        // broker, once a quorum of voters is up). The metadata replayed from disk says nothing
        // about this run.
        let (registered, mut registration) =
            tokio::sync::watch::channel::<Option<crate::metadata::lease::Registered>>(None);
        let shown = data_dir.display().to_string();
        let ready_quorum = Arc::clone(&quorum);
        tokio::spawn(async move {
            let Ok(r) = registration.wait_for(Option::is_some).await.map(|r| *r) else {
                return;
            };
            let epoch = r.map_or(0, |r| r.epoch);
            if ready_quorum.alive_at(ready_quorum.id(), epoch).await {
                println!("cairn listening on {addr} (data in {shown})");
                tracing::info!(%addr, "broker ready");
            }
        });
        service::serve(listener, node, controller, registered, shutdown_signal())
            .await
            .context("serving")
    })
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
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
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

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
