//! `cairn serve`: runs a broker until SIGINT or SIGTERM, then shuts down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::broker;
use crate::config::BrokerConfig;
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

/// Runs the broker to completion: binds the listener, then hands over to [`broker::run`].
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
        let (listener, _) = service::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        broker::run(config, listener, shutdown_signal()).await?;
        Ok(())
    })
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
