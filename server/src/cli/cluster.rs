//! `cairn cluster info`: the cluster id, its controller, the metadata Raft term and applied
//! index, and every broker with its address, liveness and Raft role.

use anyhow::Context;
use cairn_client::ClusterDescription;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

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
    /// Show the cluster id, the controller, the Raft term and applied index, and each broker
    /// with its address, ALIVE or FENCED, and its Raft role (`*` marks the controller).
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
    opts.tables_only()?;
    super::runtime()?.block_on(async move {
        match args.command {
            ClusterCommand::Info => info(&opts).await,
        }
    })
}

/// One row of the broker table: a registered broker, or a Raft member that has not registered
/// (yet).
struct Row {
    id: u32,
    /// `None` for a member that has not registered, so no address is known.
    address: Option<String>,
    status: &'static str,
    /// `voter`, `learner`, or `None` when the answering broker names no Raft members.
    role: Option<&'static str>,
    controller: bool,
}

/// The brokers in id order, each Raft voter and learner among them; members that never
/// registered are listed too, as `UNREGISTERED`.
fn rows(cluster: &ClusterDescription) -> Vec<Row> {
    let role = |id: u32| {
        if cluster.voters.contains(&id) {
            Some("voter")
        } else if cluster.learners.contains(&id) {
            Some("learner")
        } else {
            None
        }
    };
    let mut rows: Vec<Row> = cluster
        .brokers
        .iter()
        .map(|b| Row {
            id: b.id,
            address: Some(b.address.clone()),
            status: if b.alive { "ALIVE" } else { "FENCED" },
            role: role(b.id),
            controller: b.id == cluster.controller_id,
        })
        .collect();
    for &id in cluster.voters.iter().chain(&cluster.learners) {
        if !rows.iter().any(|r| r.id == id) {
            rows.push(Row {
                id,
                address: None,
                status: "UNREGISTERED",
                role: role(id),
                controller: id == cluster.controller_id,
            });
        }
    }
    rows.sort_by_key(|r| r.id);
    rows
}

async fn info(opts: &ClientOpts) -> anyhow::Result<()> {
    let client = opts.connect().await?;
    let cluster = client
        .admin()
        .describe_cluster()
        .await
        .context("describing the cluster")?;
    let rows = rows(&cluster);
    if opts.format() == Format::Json {
        return print_json(&info_json(&cluster, &rows));
    }
    let controller = match cluster.controller_id {
        0 => "none elected".to_owned(),
        id => id.to_string(),
    };
    let mut summary = table(["CLUSTER", cluster.cluster_id.as_str()]);
    summary.add_row(["CONTROLLER", &controller]);
    summary.add_row(["RAFT-TERM", &cluster.raft_term.to_string()]);
    summary.add_row(["APPLIED-INDEX", &cluster.metadata_applied_index.to_string()]);
    print_table(&summary);
    println!("\nBROKERS");
    let mut brokers = table(["ID", "ADDRESS", "STATUS", "ROLE"]);
    for r in &rows {
        let mark = if r.controller { "*" } else { "" };
        brokers.add_row([
            format!("{}{mark}", r.id),
            r.address.clone().unwrap_or_else(|| "-".into()),
            r.status.to_owned(),
            r.role.unwrap_or("-").to_owned(),
        ]);
    }
    print_table(&brokers);
    Ok(())
}

/// The cluster as one JSON document; `alive` stays a boolean for scripts written against the
/// single-broker version, `status` and `role` say the rest.
fn info_json(cluster: &ClusterDescription, rows: &[Row]) -> Value {
    let brokers: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "address": r.address,
                "alive": r.status == "ALIVE",
                "status": r.status,
                "role": r.role,
                "controller": r.controller,
            })
        })
        .collect();
    json!({
        "cluster_id": cluster.cluster_id,
        "controller_id": cluster.controller_id,
        "raft_term": cluster.raft_term,
        "metadata_applied_index": cluster.metadata_applied_index,
        "voters": cluster.voters,
        "learners": cluster.learners,
        "brokers": brokers,
    })
}

#[cfg(test)]
mod tests {
    use cairn_client::BrokerInfo;

    use super::*;

    fn broker(id: u32, alive: bool) -> BrokerInfo {
        BrokerInfo {
            id,
            address: format!("127.0.0.1:909{id}"),
            alive,
        }
    }

    #[test]
    fn rows_name_roles_fencing_and_unregistered_members() {
        let cluster = ClusterDescription {
            cluster_id: "c".into(),
            controller_id: 2,
            brokers: vec![broker(4, true), broker(2, true), broker(1, false)],
            raft_term: 7,
            voters: vec![1, 2, 3],
            learners: vec![4],
            metadata_applied_index: 42,
        };
        let rows = rows(&cluster);
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.id, r.address.is_some(), r.status, r.role, r.controller))
            .collect();
        assert_eq!(
            got,
            [
                (1, true, "FENCED", Some("voter"), false),
                (2, true, "ALIVE", Some("voter"), true),
                (3, false, "UNREGISTERED", Some("voter"), false),
                (4, true, "ALIVE", Some("learner"), false),
            ]
        );
        let json = info_json(&cluster, &rows);
        assert_eq!(json["raft_term"], 7);
        assert_eq!(json["metadata_applied_index"], 42);
        assert_eq!(json["brokers"][0]["alive"], false);
        assert_eq!(json["brokers"][0]["status"], "FENCED");
        assert_eq!(json["brokers"][1]["controller"], true);
        assert!(json["brokers"][2]["address"].is_null());
        assert_eq!(json["brokers"][3]["role"], "learner");
    }

    #[test]
    fn a_broker_outside_the_raft_lists_has_no_role() {
        let cluster = ClusterDescription {
            controller_id: 1,
            brokers: vec![broker(1, true)],
            ..Default::default()
        };
        let rows = rows(&cluster);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].role, None);
        assert!(rows[0].controller);
    }
}
