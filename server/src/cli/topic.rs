//! `cairn topic create|list|describe|delete|add-partitions`, and the dispatch of `topic produce|consume` to
//! their own modules.
//!
//! Topic settings arrive as `-c key=value` and are parsed here into the wire `TopicConfig`, so
//! that a typo in a key is a clear error on the command line, not a silent default. Kafka's
//! dotted spellings (`retention.ms`, `min.insync.replicas`, ...) are accepted as aliases.

use anyhow::{Context, bail};
use cairn_client::{FsyncPolicy, NewTopic, TopicConfig, TopicDescription};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::output::{id_list, print_json, print_table, table};
use super::{ClientOpts, Format, consume, produce};

/// `cairn topic ...`.
#[derive(Debug, Args)]
pub struct TopicArgs {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    command: TopicCommand,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics.
    #[command(visible_alias = "ls")]
    List,
    /// Show a topic's configuration and partitions.
    #[command(visible_alias = "info")]
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and all of its data.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Add partitions to a topic (never removes any); keys map to partitions anew.
    AddPartitions {
        /// Topic name.
        name: String,
        /// How many partitions to add.
        #[arg(short, long)]
        num: u32,
    },
    /// Produce one record per line of stdin.
    Produce(produce::ProduceArgs),
    /// Print a topic's records.
    Consume(consume::ConsumeArgs),
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Topic name: 1 to 249 of [A-Za-z0-9._-].
    name: String,
    /// Number of partitions.
    #[arg(short, long, default_value_t = 1)]
    partitions: u32,
    /// Copies of each partition [default: the broker's].
    #[arg(short, long)]
    replication_factor: Option<u32>,
    /// Topic setting, repeatable: retention_ms, retention_bytes, segment_bytes, segment_ms,
    /// fsync (always|interval|never), fsync_interval_ms, max_message_bytes,
    /// min_insync_replicas, unclean_leader_election; Kafka's dotted names (retention.ms,
    /// unclean.leader.election.enable, ...) too.
    #[arg(short = 'c', long = "config", value_name = "KEY=VALUE")]
    configs: Vec<String>,
}

/// Runs a `topic` verb.
///
/// # Errors
///
/// Broker errors (unknown topic, topic exists, ...), bad flags, a closed stdout.
pub fn run(args: TopicArgs) -> anyhow::Result<()> {
    let opts = args.opts;
    if !matches!(args.command, TopicCommand::Consume(_)) {
        opts.tables_only()?;
    }
    super::runtime()?.block_on(async move {
        match args.command {
            TopicCommand::Create(c) => create(&opts, c).await,
            TopicCommand::List => list(&opts).await,
            TopicCommand::Describe { name } => describe(&opts, &name).await,
            TopicCommand::Delete { name } => delete(&opts, &name).await,
            TopicCommand::AddPartitions { name, num } => add_partitions(&opts, &name, num).await,
            TopicCommand::Produce(p) => produce::run(&opts, p).await,
            TopicCommand::Consume(c) => consume::run(&opts, c).await,
        }
    })
}

async fn create(opts: &ClientOpts, args: CreateArgs) -> anyhow::Result<()> {
    let config = parse_configs(&args.configs)?;
    let client = opts.connect().await?;
    let topic = NewTopic::new(&args.name, args.partitions)
        .replication_factor(args.replication_factor.unwrap_or(0))
        .config(config);
    let created = client
        .admin()
        .create_topic(topic)
        .await
        .with_context(|| format!("creating topic {:?}", args.name))?;
    match opts.format() {
        Format::Json => print_json(&describe_json(&created)),
        Format::Text => {
            let mut t = table(["TOPIC", "STATUS"]);
            t.add_row([created.name.as_str(), "OK"]);
            print_table(&t);
            Ok(())
        }
    }
}

async fn list(opts: &ClientOpts) -> anyhow::Result<()> {
    let client = opts.connect().await?;
    let topics = client
        .admin()
        .list_topics()
        .await
        .context("listing topics")?;
    if opts.format() == Format::Json {
        let topics: Vec<Value> = topics
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "partitions": t.partitions,
                    "replicas": t.replication_factor,
                })
            })
            .collect();
        return print_json(&Value::Array(topics));
    }
    let mut t = table(["NAME", "PARTITIONS", "REPLICAS"]);
    for topic in &topics {
        t.add_row([
            topic.name.clone(),
            topic.partitions.to_string(),
            topic.replication_factor.to_string(),
        ]);
    }
    print_table(&t);
    Ok(())
}

async fn describe(opts: &ClientOpts, name: &str) -> anyhow::Result<()> {
    let client = opts.connect().await?;
    let topic = client
        .admin()
        .describe_topic(name)
        .await
        .with_context(|| format!("describing topic {name:?}"))?;
    if opts.format() == Format::Json {
        return print_json(&describe_json(&topic));
    }
    let mut summary = table(["NAME", topic.name.as_str()]);
    summary.add_row(["TOPIC-ID", topic.topic_id.as_str()]);
    summary.add_row(["PARTITIONS", &topic.partitions.len().to_string()]);
    summary.add_row(["REPLICAS", &topic.replication_factor.to_string()]);
    print_table(&summary);

    println!("\nCONFIGS");
    let mut configs = table(["KEY", "VALUE"]);
    for (key, value) in config_entries(&topic.config.unwrap_or_default()) {
        configs.add_row([key.to_owned(), value.map_or("-".into(), |v| v.to_string())]);
    }
    print_table(&configs);

    println!("\nPARTITIONS");
    let mut parts = table([
        "PARTITION",
        "LEADER",
        "EPOCH",
        "REPLICAS",
        "ISR",
        "LOG-START",
        "HIGH-WATERMARK",
        "SIZE",
        "SEGMENTS",
    ]);
    for p in &topic.partitions {
        parts.add_row([
            p.partition.to_string(),
            p.leader_id.to_string(),
            p.leader_epoch.to_string(),
            id_list(&p.replicas),
            id_list(&p.isr),
            p.log_start_offset.to_string(),
            p.high_watermark.to_string(),
            p.size_bytes.to_string(),
            p.segment_count.to_string(),
        ]);
    }
    print_table(&parts);
    Ok(())
}

async fn delete(opts: &ClientOpts, name: &str) -> anyhow::Result<()> {
    let client = opts.connect().await?;
    client
        .admin()
        .delete_topic(name)
        .await
        .with_context(|| format!("deleting topic {name:?}"))?;
    match opts.format() {
        Format::Json => print_json(&json!({ "name": name, "deleted": true })),
        Format::Text => {
            let mut t = table(["TOPIC", "STATUS"]);
            t.add_row([name, "DELETED"]);
            print_table(&t);
            Ok(())
        }
    }
}

async fn add_partitions(opts: &ClientOpts, name: &str, num: u32) -> anyhow::Result<()> {
    if num == 0 {
        bail!("--num must be at least 1");
    }
    let client = opts.connect().await?;
    let admin = client.admin();
    let current = admin
        .describe_topic(name)
        .await
        .with_context(|| format!("describing topic {name:?}"))?;
    let count = u32::try_from(current.partitions.len()).context("partition count")?;
    let total = count.checked_add(num).context("too many partitions")?;
    let grown = admin
        .create_partitions(name, total)
        .await
        .with_context(|| format!("adding {num} partitions to topic {name:?}"))?;
    match opts.format() {
        Format::Json => print_json(&describe_json(&grown)),
        Format::Text => {
            let mut t = table(["TOPIC", "PARTITIONS", "STATUS"]);
            t.add_row([
                name.to_owned(),
                grown.partitions.len().to_string(),
                "OK".into(),
            ]);
            print_table(&t);
            Ok(())
        }
    }
}

/// A topic description as JSON, every field named as in the proto.
fn describe_json(topic: &TopicDescription) -> Value {
    let config: serde_json::Map<String, Value> = config_entries(&topic.config.unwrap_or_default())
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.map_or(Value::Null, Value::String)))
        .collect();
    let partitions: Vec<Value> = topic
        .partitions
        .iter()
        .map(|p| {
            json!({
                "partition": p.partition,
                "leader": p.leader_id,
                "leader_epoch": p.leader_epoch,
                "replicas": p.replicas,
                "isr": p.isr,
                "log_start_offset": p.log_start_offset,
                "high_watermark": p.high_watermark,
                "size_bytes": p.size_bytes,
                "segments": p.segment_count,
            })
        })
        .collect();
    json!({
        "name": topic.name,
        "topic_id": topic.topic_id,
        "replication_factor": topic.replication_factor,
        "config": config,
        "partitions": partitions,
    })
}

/// The settings of `config` by their `-c` key; `None` where the broker's default applies.
fn config_entries(c: &TopicConfig) -> Vec<(&'static str, Option<String>)> {
    let fsync = match FsyncPolicy::try_from(c.fsync_policy) {
        Ok(FsyncPolicy::Always) => Some("always".to_owned()),
        Ok(FsyncPolicy::Interval) => Some("interval".to_owned()),
        Ok(FsyncPolicy::Never) => Some("never".to_owned()),
        _ => None,
    };
    vec![
        ("retention_ms", c.retention_ms.map(|v| v.to_string())),
        ("retention_bytes", c.retention_bytes.map(|v| v.to_string())),
        ("segment_bytes", c.segment_bytes.map(|v| v.to_string())),
        ("segment_ms", c.segment_ms.map(|v| v.to_string())),
        ("fsync", fsync),
        (
            "fsync_interval_ms",
            c.fsync_interval_ms.map(|v| v.to_string()),
        ),
        (
            "max_message_bytes",
            c.max_message_bytes.map(|v| v.to_string()),
        ),
        (
            "min_insync_replicas",
            c.min_insync_replicas.map(|v| v.to_string()),
        ),
        (
            "unclean_leader_election",
            c.unclean_leader_election.map(|v| v.to_string()),
        ),
    ]
}

/// Parses `-c key=value` settings.
///
/// # Errors
///
/// An entry without `=`, an unknown key, or a value that does not parse.
fn parse_configs(entries: &[String]) -> anyhow::Result<TopicConfig> {
    let mut c = TopicConfig::default();
    for entry in entries {
        let Some((key, value)) = entry.split_once('=') else {
            bail!("config {entry:?} is not key=value");
        };
        let (key, value) = (canonical_key(key.trim()), value.trim());
        let key = key.as_str();
        let bad = || format!("config {key}: {value:?} is not a valid value");
        match key {
            "retention_ms" => c.retention_ms = Some(value.parse().with_context(bad)?),
            "retention_bytes" => c.retention_bytes = Some(value.parse().with_context(bad)?),
            "segment_bytes" => c.segment_bytes = Some(value.parse().with_context(bad)?),
            "segment_ms" => c.segment_ms = Some(value.parse().with_context(bad)?),
            "fsync_interval_ms" => c.fsync_interval_ms = Some(value.parse().with_context(bad)?),
            "max_message_bytes" => c.max_message_bytes = Some(value.parse().with_context(bad)?),
            "min_insync_replicas" => {
                c.min_insync_replicas = Some(value.parse().with_context(bad)?);
            }
            "unclean_leader_election" => {
                c.unclean_leader_election = Some(value.parse().with_context(bad)?);
            }
            "fsync" | "fsync_policy" => {
                let policy = match value {
                    "always" => FsyncPolicy::Always,
                    "interval" => FsyncPolicy::Interval,
                    "never" => FsyncPolicy::Never,
                    _ => bail!("config fsync: {value:?} is not always, interval or never"),
                };
                c.fsync_policy = policy as i32;
            }
            _ => bail!(
                "unknown config key {key:?}; known keys: retention_ms, retention_bytes, \
                 segment_bytes, segment_ms, fsync, fsync_interval_ms, max_message_bytes, \
                 min_insync_replicas, unclean_leader_election"
            ),
        }
    }
    Ok(c)
}

/// A `-c` key as Cairn names it: Kafka's dotted spelling (`retention.ms`) is an alias of the
/// underscored one, and `unclean.leader.election.enable` of `unclean_leader_election`.
fn canonical_key(key: &str) -> String {
    let key = key.replace('.', "_");
    match key.as_str() {
        "unclean_leader_election_enable" => "unclean_leader_election".to_owned(),
        "max_message_bytes" | "message_max_bytes" => "max_message_bytes".to_owned(),
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(entries: &[&str]) -> anyhow::Result<TopicConfig> {
        parse_configs(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn known_keys_parse() {
        let c = parse(&["retention_ms=1000", "fsync=never", "segment_bytes=4096"]).unwrap();
        assert_eq!(c.retention_ms, Some(1000));
        assert_eq!(c.segment_bytes, Some(4096));
        assert_eq!(c.fsync_policy, FsyncPolicy::Never as i32);
    }

    #[test]
    fn kafkas_dotted_keys_are_aliases() {
        let c = parse(&[
            "retention.ms=1000",
            "segment.bytes=4096",
            "min.insync.replicas=2",
            "unclean.leader.election.enable=true",
            "max.message.bytes=100",
        ])
        .unwrap();
        assert_eq!(c.retention_ms, Some(1000));
        assert_eq!(c.segment_bytes, Some(4096));
        assert_eq!(c.min_insync_replicas, Some(2));
        assert_eq!(c.unclean_leader_election, Some(true));
        assert_eq!(c.max_message_bytes, Some(100));
    }

    #[test]
    fn bad_entries_are_clear_errors() {
        for (entry, needle) in [
            ("colour=blue", "unknown config key"),
            ("retention_ms", "not key=value"),
            ("segment_bytes=-1", "not a valid value"),
            ("fsync=sometimes", "always, interval or never"),
        ] {
            let e = parse(&[entry]).unwrap_err().to_string();
            assert!(e.contains(needle), "{entry}: {e}");
        }
    }
}
