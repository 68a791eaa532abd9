//! `cairn cluster info`: the cluster id, its controller and its brokers.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{print_json, print_table, table};
use super::{ClientOpts, Format};

/// `cairn cluster ...`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Show the cluster id, the controller and the brokers (`*` marks the controller).
    #[command(visible_aliases = ["metadata", "status"])]
    Info,
}

/// Runs a `cluster` verb.
///
/// # Errors
///
/// When no broker answers.
pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let opts = args.opts;
    super::runtime()?.block_on(async move {
        match args.command {
            ClusterCommand::Info => info(&opts).await,
        }
    })
}

async fn info(opts: &ClientOpts) -> anyhow::Result<()> {
    let client = opts.connect().await?;
    let cluster = client
        .admin()
        .describe_cluster()
        .await
        .context("describing the cluster")?;
    if opts.format == Format::Json {
        let brokers: Vec<_> = cluster
            .brokers
            .iter()
            .map(|b| json!({"id": b.id, "address": b.address, "alive": b.alive}))
            .collect();
        return print_json(&json!({
            "cluster_id": cluster.cluster_id,
            "controller_id": cluster.controller_id,
            "raft_term": cluster.raft_term,
            "brokers": brokers,
        }));
    }
    let mut summary = table(["CLUSTER", cluster.cluster_id.as_str()]);
    summary.add_row(["CONTROLLER", &cluster.controller_id.to_string()]);
    print_table(&summary);
    println!("\nBROKERS");
    let mut brokers = table(["ID", "ADDRESS", "ALIVE"]);
    for b in &cluster.brokers {
        let mark = if b.id == cluster.controller_id {
            "*"
        } else {
            ""
        };
        brokers.add_row([
            format!("{}{mark}", b.id),
            b.address.clone(),
            b.alive.to_string(),
        ]);
    }
    print_table(&brokers);
    Ok(())
}
