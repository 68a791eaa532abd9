//! `cairn topic consume`: prints a topic's records with the client's simple
//! [`Consumer`](cairn_client::Consumer), from a chosen start, following the tail by default.
//!
//! With `-e` it stops once every partition has reached the high watermark it had when the
//! command started (records written later are not printed); with `-n` after that many records.
//!
//! With `-g GROUP` it reads as a member of a consumer group
//! ([`GroupConsumer`](cairn_client::GroupConsumer)): the group assigns the partitions, reading
//! starts at the group's committed offsets (`-o start|end` only says where partitions without
//! one start), and what was printed *and flushed* is committed every 5 s, before a revoked
//! partition is released, and when the command ends (`-n`, SIGINT, SIGTERM), after which it
//! leaves the group. Assignment changes go to stderr (`assigned: t-0,t-3`, `revoked: t-0`,
//! `lost: t-1`).

use std::collections::BTreeMap;
use std::io::{BufWriter, ErrorKind, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_client::{
    Client, ConsumerConfig, ConsumerRecord, GroupConsumer, GroupConsumerConfig, GroupEvent,
    OffsetReset, SeekTo, TopicPartition,
};
use clap::Args;
use futures::StreamExt;

use super::record_format::{self, Piece};
use super::{ClientOpts, Format};

/// Flags of `cairn topic consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Partitions to read, comma-separated [default: all].
    #[arg(short, long, value_delimiter = ',')]
    partitions: Vec<u32>,
    /// Where to start: start, end, an offset N, -N (N before the end of each partition), or
    /// @TIMESTAMP_MS. With -g: start or end, for partitions the group has no offset for.
    #[arg(short, long, default_value = "start", allow_hyphen_values = true)]
    offset: String,
    /// Read as a member of this consumer group: partitions assigned by the group, starting at
    /// its committed offsets; what is printed is committed.
    #[arg(short, long)]
    group: Option<String>,
    /// Stop after N records.
    #[arg(short, long)]
    num: Option<u64>,
    /// Exit at the end of each partition (its high watermark when the command started).
    #[arg(short, long)]
    exit_at_end: bool,
    /// Deprecated spelling of `-f/--format TEMPLATE`, kept for old scripts.
    #[arg(long = "format-string", hide = true)]
    format_string: Option<String>,
}

/// The template of `-f/--format` when it is not `text` or `json`: kcat-style, %t topic,
/// %p partition, %o offset, %k key, %K key length, %v value, %V value length, %T timestamp
/// (ms), %h headers, %% a percent sign; \n \t escapes. `text` prints values, one a line.
fn template<'a>(opts: &'a ClientOpts, args: &'a ConsumeArgs) -> &'a str {
    args.format_string
        .as_deref()
        .or_else(|| opts.template())
        .unwrap_or(r"%v\n")
}

/// A parsed `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Earliest,
    Latest,
    Offset(i64),
    /// This many records before the high watermark.
    FromEnd(i64),
    Timestamp(i64),
}

fn parse_start(s: &str) -> anyhow::Result<Start> {
    let bad = || format!("offset {s:?} is not start, end, N, -N or @TIMESTAMP_MS");
    Ok(match s {
        "start" | "beginning" | "oldest" | "earliest" => Start::Earliest,
        "end" | "newest" | "latest" => Start::Latest,
        _ => {
            if let Some(ts) = s.strip_prefix('@') {
                Start::Timestamp(ts.parse().with_context(bad)?)
            } else if let Some(n) = s.strip_prefix('-') {
                Start::FromEnd(n.parse::<u32>().with_context(bad)?.into())
            } else {
                let n = s.strip_prefix('+').unwrap_or(s);
                Start::Offset(n.parse::<u64>().with_context(bad)? as i64)
            }
        }
    })
}

/// Refuses an explicit `-o N` outside what partition `p` holds (its high watermark included:
/// reading there waits for the next record), with or without `-e`, before reading anything.
fn check_in_range(
    topic: &str,
    p: u32,
    offset: i64,
    offsets: &[cairn_client::PartitionOffset],
) -> anyhow::Result<()> {
    if let Some(o) = offsets.iter().find(|o| o.partition == p)
        && !(o.log_start_offset..=o.high_watermark).contains(&offset)
    {
        bail!(
            "offset {offset} is out of range for {topic}-{p}, which holds offsets [{}, {}): \
             choose one of them, or -o start, end or -N",
            o.log_start_offset,
            o.high_watermark
        );
    }
    Ok(())
}

/// Where each partition's reading ends, for `-e`, and which partitions are there.
struct Ends {
    /// Partition → high watermark at start.
    end: BTreeMap<u32, i64>,
}

/// Runs `topic consume`.
///
/// # Errors
///
/// Bad flags, an unknown topic or partition, fetch errors after the client's retries.
pub async fn run(opts: &ClientOpts, args: ConsumeArgs) -> anyhow::Result<()> {
    if let Some(group) = &args.group {
        return run_group(opts, group, &args).await;
    }
    let start = parse_start(&args.offset)?;
    let pieces = record_format::parse(template(opts, &args))?;
    let client = opts.connect().await?;
    let topic = args.topic.as_str();
    let partitions = partitions(&client, topic, &args.partitions).await?;
    let offsets = client
        .list_offsets(topic, &partitions, SeekTo::Latest)
        .await
        .context("looking up high watermarks")?;
    let ends = Ends {
        end: offsets
            .iter()
            .map(|o| (o.partition, o.high_watermark))
            .collect(),
    };
    let mut consumer = client.consumer(ConsumerConfig::default());
    for &p in &partitions {
        let to = match start {
            Start::Earliest => SeekTo::Earliest,
            Start::Latest => SeekTo::Latest,
            Start::Offset(o) => {
                check_in_range(topic, p, o, &offsets)?;
                SeekTo::Offset(o)
            }
            Start::Timestamp(t) => SeekTo::Timestamp(t),
            Start::FromEnd(n) => {
                let o = offsets.iter().find(|o| o.partition == p);
                let (log_start, hw) = o.map_or((0, 0), |o| (o.log_start_offset, o.high_watermark));
                SeekTo::Offset((hw - n).max(log_start))
            }
        };
        let at = consumer
            .seek(topic, p, to)
            .await
            .with_context(|| format!("seeking partition {p}"))?;
        if args.exit_at_end && at >= ends.end.get(&p).copied().unwrap_or(0) {
            consumer.unassign(topic, [p]);
        }
    }
    let printer = Printer {
        format: opts.format(),
        pieces,
        out: BufWriter::with_capacity(64 << 10, std::io::stdout()),
    };
    match read(&mut consumer, topic, &args, &ends, printer).await {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// The main loop: fetch, print, and stop at `-n` or, with `-e`, when nothing is left assigned.
async fn read(
    consumer: &mut cairn_client::Consumer,
    topic: &str,
    args: &ConsumeArgs,
    ends: &Ends,
    mut printer: Printer,
) -> anyhow::Result<()> {
    let limit = args.num.unwrap_or(u64::MAX);
    let mut printed = 0;
    while printed < limit && !consumer.assignment().is_empty() {
        let batch = consumer.next_batch().await.context("fetching")?;
        for record in &batch {
            let past_end = ends.end.get(&record.partition).copied().unwrap_or(0);
            if args.exit_at_end && record.offset >= past_end {
                continue;
            }
            printer.print(record)?;
            printed += 1;
            if printed >= limit {
                break;
            }
        }
        printer.out.flush()?;
        if args.exit_at_end {
            for (t, p) in consumer.assignment() {
                let end = ends.end.get(&p).copied().unwrap_or(0);
                if consumer.position(&t, p).is_some_and(|at| at >= end) {
                    consumer.unassign(topic, [p]);
                }
            }
        }
    }
    printer.out.flush()?;
    Ok(())
}

/// How often `-g` commits what it printed.
const GROUP_COMMIT_INTERVAL: Duration = Duration::from_secs(5);

/// Runs `topic consume -g`.
async fn run_group(opts: &ClientOpts, group: &str, args: &ConsumeArgs) -> anyhow::Result<()> {
    let reset = group_reset(args)?;
    let pieces = record_format::parse(template(opts, args))?;
    let client = opts.connect().await?;
    // Commits are the command's own: only what reached stdout may be committed.
    let mut consumer = client.group_consumer(
        GroupConsumerConfig::new(group)
            .offset_reset(reset)
            .auto_commit(None),
    );
    consumer.subscribe([args.topic.clone()]);
    let mut printer = Printer {
        format: opts.format(),
        pieces,
        out: BufWriter::with_capacity(64 << 10, std::io::stdout()),
    };
    let outcome = read_group(&mut consumer, args.num, &mut printer).await;
    let committed = match &outcome {
        // A record that failed to print must not be committed: leave without committing.
        Err(_) => Ok(()),
        Ok(()) => match printer.out.flush() {
            Ok(()) => consumer.commit().await.context("committing"),
            Err(e) => Err(e.into()),
        },
    };
    consumer.close().await.context("leaving the group")?;
    match outcome.and(committed) {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// The reset policy `-o` means with `-g`, refusing flags a group member cannot honour.
fn group_reset(args: &ConsumeArgs) -> anyhow::Result<OffsetReset> {
    if !args.partitions.is_empty() {
        bail!("-p cannot be used with -g: the group assigns the partitions");
    }
    if args.exit_at_end {
        bail!("-e cannot be used with -g: a group member follows its partitions; use -n");
    }
    match parse_start(&args.offset)? {
        Start::Earliest => Ok(OffsetReset::Earliest),
        Start::Latest => Ok(OffsetReset::Latest),
        _ => bail!(
            "with -g, -o is start or end (where partitions without a committed offset start); \
             move a group's offsets with `cairn group seek`"
        ),
    }
}

/// The group member's loop: print records, report assignment changes, commit what was
/// printed, until `-n` records or a signal.
///
/// Commits run in the background (the loop never waits on the coordinator, so partitions
/// whose leaders are healthy keep printing while the coordinator fails over); a failed one is
/// reported and its positions go with the next. Errors the stream survives (a coordinator or
/// leader away for longer than the client's retries, a whole-cluster restart) are reported
/// and the member carries on; only the end of the membership (a fatal refusal) stops it.
async fn read_group(
    consumer: &mut GroupConsumer,
    limit: Option<u64>,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let limit = limit.unwrap_or(u64::MAX);
    let mut printed = 0;
    let mut commit_every = tokio::time::interval(GROUP_COMMIT_INTERVAL);
    commit_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    commit_every.tick().await;
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    while printed < limit {
        tokio::select! {
            event = consumer.next() => match event.context("the group membership ended")? {
                Ok(GroupEvent::Record(record)) => {
                    printer.print(&record)?;
                    printed += 1;
                    if consumer.buffered_records() == 0 {
                        printer.out.flush()?;
                    }
                }
                Ok(GroupEvent::Assigned(p)) => eprintln!("assigned: {}", partition_list(&p)),
                Ok(GroupEvent::Revoked(p)) => {
                    // What was printed of them is committed before they are released.
                    printer.out.flush()?;
                    consumer.commit_in_background();
                    eprintln!("revoked: {}", partition_list(&p));
                }
                Ok(GroupEvent::Lost(p)) => eprintln!("lost: {}", partition_list(&p)),
                Ok(GroupEvent::CommitFailed(f)) => {
                    eprintln!("warning: {f} (retried in {GROUP_COMMIT_INTERVAL:?})");
                }
                Ok(_) => {}
                Err(e) => eprintln!("warning: {e}; still consuming"),
            },
            _ = commit_every.tick() => {
                printer.out.flush()?;
                consumer.commit_in_background();
            }
            () = &mut interrupted => break,
        }
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// `t-0,t-3`.
fn partition_list(partitions: &[TopicPartition]) -> String {
    partitions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The partitions to read: those asked for (checked to exist), or all.
async fn partitions(client: &Client, topic: &str, asked: &[u32]) -> anyhow::Result<Vec<u32>> {
    // The client's error names the topic already.
    let count = client.partition_count(topic).await?;
    if asked.is_empty() {
        return Ok((0..count).collect());
    }
    if let Some(p) = asked.iter().find(|&&p| p >= count) {
        bail!("topic {topic:?} has {count} partitions; there is no partition {p}");
    }
    Ok(asked.to_vec())
}

/// Writes records to stdout in the chosen format.
struct Printer {
    format: Format,
    pieces: Vec<Piece>,
    out: BufWriter<std::io::Stdout>,
}

impl Printer {
    fn print(&mut self, record: &ConsumerRecord) -> std::io::Result<()> {
        match self.format {
            Format::Text => record_format::render(&self.pieces, record, &mut self.out),
            Format::Json => {
                serde_json::to_writer(&mut self.out, &record_format::to_json(record))?;
                self.out.write_all(b"\n")
            }
        }
    }
}

/// Whether the reader of stdout went away (`| head`): not an error worth reporting.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_like_kcat_and_rpk() {
        let cases = [
            ("start", Start::Earliest),
            ("beginning", Start::Earliest),
            ("end", Start::Latest),
            ("42", Start::Offset(42)),
            ("+42", Start::Offset(42)),
            ("-3", Start::FromEnd(3)),
            ("@1700000000000", Start::Timestamp(1_700_000_000_000)),
        ];
        for (s, want) in cases {
            assert_eq!(parse_start(s).unwrap(), want, "{s}");
        }
        for bad in ["", "soon", "-x", "@", "4.5", "--1"] {
            assert!(parse_start(bad).is_err(), "{bad}");
        }
    }

    fn args(flags: &[&str]) -> ConsumeArgs {
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: ConsumeArgs,
        }
        let argv = ["consume", "t", "-g", "g"].iter().chain(flags);
        <Wrap as clap::Parser>::try_parse_from(argv)
            .expect("flags parse")
            .args
    }

    #[test]
    fn a_group_member_takes_start_or_end_only() {
        let cases: &[(&[&str], Option<OffsetReset>)] = &[
            (&[], Some(OffsetReset::Earliest)),
            (&["-o", "start"], Some(OffsetReset::Earliest)),
            (&["-o", "end"], Some(OffsetReset::Latest)),
            (&["-o", "5"], None),
            (&["-o", "-5"], None),
            (&["-o", "@1000"], None),
            (&["-p", "0"], None),
            (&["-e"], None),
        ];
        for (flags, want) in cases {
            let got = group_reset(&args(flags)).ok();
            assert_eq!(got, *want, "{flags:?}");
        }
    }
}
