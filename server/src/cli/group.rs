//! `cairn group list|describe|seek|delete`: consumer groups as the coordinators see them. Any
//! broker answers (it forwards to the group's coordinator). Members join with
//! `cairn topic consume -g GROUP`.

use anyhow::Context;
use cairn_client::{
    CommittedOffset, GroupDescription, GroupState, GroupSummary, ResetOffsets, SeekTo,
    TopicPartitions,
};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::output::{print_json, print_table, table};
use super::{ClientOpts, Format};

/// `cairn group ...`.
#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// List consumer groups.
    #[command(visible_alias = "ls")]
    List,
    /// Show a group's members, and per partition its owner, committed offset, log end and lag.
    #[command(visible_alias = "info")]
    Describe {
        /// Group id.
        group: String,
    },
    /// Move a group's committed offsets; the group must have no members.
    Seek(SeekArgs),
    /// Delete a group without members, and its committed offsets.
    Delete {
        /// Group id.
        group: String,
    },
}

#[derive(Debug, Args)]
struct SeekArgs {
    /// Group id.
    group: String,
    /// Topic whose committed offsets move.
    #[arg(short, long)]
    topic: String,
    /// Partitions, comma-separated [default: all].
    #[arg(short, long, value_delimiter = ',')]
    partitions: Vec<u32>,
    /// Where to: earliest, latest, @TIMESTAMP_MS (the first record at or after it), an
    /// offset (clamped to what the partition stores), or -N: N records before the end of each
    /// partition (as `topic consume -o -N`).
    #[arg(long, allow_hyphen_values = true)]
    to: String,
    /// Show the offsets it would commit, and commit nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Runs a `group` verb.
///
/// # Errors
///
/// Broker errors (unknown group, group not empty, ...), bad flags.
pub fn run(args: GroupArgs) -> anyhow::Result<()> {
    let opts = args.opts;
    opts.tables_only()?;
    super::runtime()?.block_on(async move {
        match args.command {
            GroupCommand::List => list(&opts).await,
            GroupCommand::Describe { group } => describe(&opts, &group).await,
            GroupCommand::Seek(s) => seek(&opts, s).await,
            GroupCommand::Delete { group } => delete(&opts, &group).await,
        }
    })
}

async fn list(opts: &ClientOpts) -> anyhow::Result<()> {
    let client = opts.connect().await?;
    let groups = client
        .admin()
        .list_groups()
        .await
        .context("listing groups")?;
    if opts.format() == Format::Json {
        return print_json(&Value::Array(groups.iter().map(summary_json).collect()));
    }
    let mut t = table(["GROUP", "STATE", "MEMBERS", "COORDINATOR"]);
    for g in &groups {
        t.add_row([
            g.group_id.clone(),
            state_name(g.state).to_owned(),
            g.members.to_string(),
            g.coordinator_id.to_string(),
        ]);
    }
    print_table(&t);
    Ok(())
}

async fn describe(opts: &ClientOpts, group: &str) -> anyhow::Result<()> {
    let client = opts.connect().await?;
    let d = client
        .admin()
        .describe_group(group)
        .await
        .with_context(|| format!("describing group {group:?}"))?;
    if opts.format() == Format::Json {
        return print_json(&describe_json(&d));
    }
    let mut summary = table(["GROUP", d.group_id.as_str()]);
    summary.add_row(["STATE", state_name(d.state)]);
    summary.add_row(["EPOCH", &d.group_epoch.to_string()]);
    summary.add_row(["COORDINATOR", &d.coordinator_id.to_string()]);
    summary.add_row(["ASSIGNOR", &d.assignor]);
    summary.add_row(["MEMBERS", &d.members.len().to_string()]);
    print_table(&summary);

    println!("\nMEMBERS");
    let mut members = table([
        "MEMBER-ID",
        "INSTANCE-ID",
        "EPOCH",
        "TOPICS",
        "ASSIGNED",
        "REVOKING",
    ]);
    for m in &d.members {
        members.add_row([
            m.member_id.clone(),
            m.instance_id.clone().unwrap_or_else(|| "-".into()),
            m.member_epoch.to_string(),
            m.subscribed_topics.join(","),
            or_dash(partition_list(&m.assigned)),
            or_dash(partition_list(&m.pending_revocation)),
        ]);
    }
    print_table(&members);

    println!("\nPARTITIONS");
    let mut parts = table([
        "TOPIC",
        "PARTITION",
        "OWNER",
        "COMMITTED",
        "LOG-END",
        "LAG",
        "LAG-MS",
    ]);
    let known = |v: i64| if v < 0 { "-".to_owned() } else { v.to_string() };
    for p in &d.partitions {
        parts.add_row([
            p.topic.clone(),
            p.partition.to_string(),
            or_dash(p.owner.clone()),
            known(p.committed_offset),
            known(p.log_end_offset),
            known(p.lag),
            known(p.lag_ms),
        ]);
    }
    print_table(&parts);
    Ok(())
}

async fn seek(opts: &ClientOpts, args: SeekArgs) -> anyhow::Result<()> {
    let to = parse_to(&args.to)?;
    let client = opts.connect().await?;
    let targets: Vec<(SeekTo, Vec<u32>)> = match to {
        Target::At(to) => vec![(to, args.partitions.clone())],
        Target::FromEnd(n) => client
            .list_offsets(&args.topic, &args.partitions, SeekTo::Latest)
            .await
            .with_context(|| format!("looking up the ends of topic {:?}", args.topic))?
            .into_iter()
            .map(|o| {
                let at = o.high_watermark.saturating_sub(n).max(o.log_start_offset);
                (SeekTo::Offset(at), vec![o.partition])
            })
            .collect(),
    };
    let mut offsets = Vec::new();
    for (to, partitions) in targets {
        let reset = ResetOffsets::new(&args.group, &args.topic, to)
            .partitions(partitions)
            .dry_run(args.dry_run);
        offsets.extend(
            client
                .admin()
                .reset_group_offsets(reset)
                .await
                .with_context(|| format!("moving the offsets of group {:?}", args.group))?,
        );
    }
    if opts.format() == Format::Json {
        return print_json(&json!({
            "group_id": args.group,
            "dry_run": args.dry_run,
            "offsets": offsets.iter().map(committed_json).collect::<Vec<_>>(),
        }));
    }
    let mut t = table(["TOPIC", "PARTITION", "OFFSET"]);
    for o in &offsets {
        t.add_row([
            o.topic.clone(),
            o.partition.to_string(),
            o.offset.to_string(),
        ]);
    }
    print_table(&t);
    if args.dry_run {
        eprintln!("dry run: nothing committed");
    }
    Ok(())
}

async fn delete(opts: &ClientOpts, group: &str) -> anyhow::Result<()> {
    let client = opts.connect().await?;
    client
        .admin()
        .delete_group(group)
        .await
        .with_context(|| format!("deleting group {group:?}"))?;
    match opts.format() {
        Format::Json => print_json(&json!({ "group_id": group, "deleted": true })),
        Format::Text => {
            let mut t = table(["GROUP", "STATUS"]);
            t.add_row([group, "DELETED"]);
            print_table(&t);
            Ok(())
        }
    }
}

/// A parsed `--to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The same target for every partition.
    At(SeekTo),
    /// This many records before each partition's end.
    FromEnd(i64),
}

/// Parses `--to`.
fn parse_to(s: &str) -> anyhow::Result<Target> {
    let bad = || format!("--to {s:?} is not earliest, latest, @TIMESTAMP_MS, an offset or -N");
    Ok(match s {
        "earliest" | "start" | "beginning" | "oldest" => Target::At(SeekTo::Earliest),
        "latest" | "end" | "newest" => Target::At(SeekTo::Latest),
        _ => {
            if let Some(ts) = s.strip_prefix('@') {
                Target::At(SeekTo::Timestamp(
                    ts.parse::<u64>().with_context(bad)? as i64
                ))
            } else if let Some(n) = s.strip_prefix('-') {
                Target::FromEnd(n.parse::<u32>().with_context(bad)?.into())
            } else {
                let n = s.strip_prefix('+').unwrap_or(s);
                Target::At(SeekTo::Offset(n.parse::<u64>().with_context(bad)? as i64))
            }
        }
    })
}

/// `STABLE`, `RECONCILING`, `EMPTY`.
fn state_name(state: i32) -> &'static str {
    match GroupState::try_from(state) {
        Ok(GroupState::Empty) => "EMPTY",
        Ok(GroupState::Stable) => "STABLE",
        Ok(GroupState::Reconciling) => "RECONCILING",
        _ => "UNKNOWN",
    }
}

/// `orders-0,orders-1,audit-3`.
fn partition_list(topics: &[TopicPartitions]) -> String {
    topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| format!("{}-{p}", t.topic)))
        .collect::<Vec<_>>()
        .join(",")
}

fn or_dash(s: String) -> String {
    if s.is_empty() { "-".to_owned() } else { s }
}

fn summary_json(g: &GroupSummary) -> Value {
    json!({
        "group_id": g.group_id,
        "state": state_name(g.state),
        "members": g.members,
        "coordinator_id": g.coordinator_id,
    })
}

fn topic_partitions_json(topics: &[TopicPartitions]) -> Vec<Value> {
    topics
        .iter()
        .map(|t| json!({ "topic": t.topic, "partitions": t.partitions }))
        .collect()
}

fn committed_json(o: &CommittedOffset) -> Value {
    json!({ "topic": o.topic, "partition": o.partition, "offset": o.offset })
}

/// A group description as one JSON document, fields named as in the proto (-1 and "" where
/// the proto says unknown or none).
fn describe_json(d: &GroupDescription) -> Value {
    let members: Vec<Value> = d
        .members
        .iter()
        .map(|m| {
            json!({
                "member_id": m.member_id,
                "instance_id": m.instance_id,
                "member_epoch": m.member_epoch,
                "subscribed_topics": m.subscribed_topics,
                "assigned": topic_partitions_json(&m.assigned),
                "pending_revocation": topic_partitions_json(&m.pending_revocation),
            })
        })
        .collect();
    let partitions: Vec<Value> = d
        .partitions
        .iter()
        .map(|p| {
            json!({
                "topic": p.topic,
                "partition": p.partition,
                "owner": p.owner,
                "committed_offset": p.committed_offset,
                "log_end_offset": p.log_end_offset,
                "lag": p.lag,
                "lag_ms": p.lag_ms,
            })
        })
        .collect();
    json!({
        "group_id": d.group_id,
        "state": state_name(d.state),
        "group_epoch": d.group_epoch,
        "coordinator_id": d.coordinator_id,
        "assignor": d.assignor,
        "members": members,
        "partitions": partitions,
    })
}

#[cfg(test)]
mod tests {
    use cairn_client::{GroupMember, GroupPartition};

    use super::*;

    #[test]
    fn seek_targets_parse() {
        let cases = [
            ("earliest", Target::At(SeekTo::Earliest)),
            ("start", Target::At(SeekTo::Earliest)),
            ("latest", Target::At(SeekTo::Latest)),
            ("end", Target::At(SeekTo::Latest)),
            ("42", Target::At(SeekTo::Offset(42))),
            ("+42", Target::At(SeekTo::Offset(42))),
            ("-100", Target::FromEnd(100)),
            (
                "@1700000000000",
                Target::At(SeekTo::Timestamp(1_700_000_000_000)),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(parse_to(s).unwrap(), want, "{s}");
        }
        for bad in ["", "soon", "--1", "@", "@x", "4.5", "+-3"] {
            assert!(parse_to(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn descriptions_read_as_json_and_lists() {
        let d = GroupDescription {
            group_id: "billing".into(),
            state: GroupState::Reconciling as i32,
            group_epoch: 4,
            coordinator_id: 2,
            assignor: "uniform".into(),
            members: vec![GroupMember {
                member_id: "m1".into(),
                instance_id: None,
                member_epoch: 4,
                subscribed_topics: vec!["orders".into()],
                assigned: vec![TopicPartitions {
                    topic: "orders".into(),
                    partitions: vec![0, 2],
                }],
                pending_revocation: vec![],
            }],
            partitions: vec![GroupPartition {
                topic: "orders".into(),
                partition: 1,
                owner: String::new(),
                committed_offset: -1,
                log_end_offset: 10,
                lag: 10,
                lag_ms: 1500,
            }],
        };
        let v = describe_json(&d);
        assert_eq!(v["state"], "RECONCILING");
        assert_eq!(v["members"][0]["assigned"][0]["partitions"], json!([0, 2]));
        assert!(v["members"][0]["instance_id"].is_null());
        assert_eq!(v["partitions"][0]["committed_offset"], -1);
        assert_eq!(v["partitions"][0]["lag_ms"], 1500);
        assert_eq!(partition_list(&d.members[0].assigned), "orders-0,orders-2");
        assert_eq!(or_dash(partition_list(&[])), "-");
        assert_eq!(state_name(99), "UNKNOWN");
    }
}
