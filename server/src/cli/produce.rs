//! `cairn topic produce`: one record per line of stdin, through the client's batching
//! [`Producer`](cairn_client::Producer); flushes at end of input and prints a summary to stderr.
//!
//! Stdin is read on a blocking thread and handed over in lines, so a slow pipe never stalls
//! the runtime; records are sent in the order of their lines, with one batch in flight per
//! partition so that a retry cannot reorder them. Lines without a key (or without `-p`) go to
//! the partitions in turn, as kcat spreads keyless messages: a short demo's few kilobytes
//! would otherwise all fit in one sticky partition's budget.

use std::collections::BTreeMap;
use std::io::BufRead;

use anyhow::{Context, bail};
use bytes::Bytes;
use cairn_client::{Acks, Partitioning, ProducerConfig, ProducerRecord, RecordMetadata};
use clap::{Args, ValueEnum};
use futures::stream::{FuturesUnordered, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;

use super::output::print_json;
use super::{ClientOpts, Format};

/// Bytes of records sent but not yet answered before `produce` waits for answers. Half the
/// producer's buffer, so that `send` always finds room and enqueues at once, in line order.
const MAX_PENDING_BYTES: usize = 32 << 20;

/// Flags of `cairn topic produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to write to.
    topic: String,
    /// Partition to write every record to [default: by key, or sticky without one].
    #[arg(short, long)]
    partition: Option<u32>,
    /// Split each line into key and value at the first occurrence of SEP.
    #[arg(short, long = "key-separator", value_name = "SEP")]
    key_separator: Option<String>,
    /// Header added to every record, repeatable.
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// When the broker acknowledges a write.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    acks: AcksArg,
}

/// `--acks` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AcksArg {
    /// Every in-sync replica has the batch.
    All,
    /// The leader has appended the batch.
    Leader,
    /// Fire and forget.
    None,
}

impl From<AcksArg> for Acks {
    fn from(a: AcksArg) -> Self {
        match a {
            AcksArg::All => Acks::All,
            AcksArg::Leader => Acks::Leader,
            AcksArg::None => Acks::None,
        }
    }
}

/// What was written, for the summary.
#[derive(Debug, Default)]
struct Summary {
    records: u64,
    /// Partition → (first, last) offset written.
    ranges: BTreeMap<u32, (i64, i64)>,
    errors: u64,
    first_error: Option<cairn_client::Error>,
}

impl Summary {
    fn add(&mut self, result: cairn_client::Result<RecordMetadata>) {
        match result {
            Ok(m) => {
                self.records += 1;
                let range = self
                    .ranges
                    .entry(m.partition)
                    .or_insert((m.offset, m.offset));
                range.0 = range.0.min(m.offset);
                range.1 = range.1.max(m.offset);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

/// Runs `topic produce`.
///
/// # Errors
///
/// Bad flags, an unreachable cluster, or any record the broker refused.
pub async fn run(opts: &ClientOpts, args: ProduceArgs) -> anyhow::Result<()> {
    let headers = parse_headers(&args.headers)?;
    let client = opts.connect().await?;
    // Fail fast on a missing topic rather than on the first send.
    // The client's error names the topic already.
    client.partition_count(&args.topic).await?;
    let producer = client.producer(ProducerConfig {
        acks: args.acks.into(),
        max_in_flight: 1,
        partitioning: Partitioning::RoundRobin,
        ..ProducerConfig::default()
    });
    let separator = args.key_separator.map(Bytes::from);
    let mut lines = read_lines();
    let header_bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    let mut pending = FuturesUnordered::new();
    let mut pending_bytes = 0;
    let mut summary = Summary::default();
    while let Some(line) = lines.recv().await {
        let line = line.context("reading stdin")?;
        let size = line.len() + header_bytes + 64;
        while pending_bytes + size > MAX_PENDING_BYTES
            && let Some((done, result)) = pending.next().await
        {
            pending_bytes -= done;
            summary.add(result);
        }
        let mut record = split_record(&args.topic, line, separator.as_deref());
        record.partition = args.partition;
        record.headers.clone_from(&headers);
        let ack = producer.send(record);
        pending_bytes += size;
        pending.push(async move { (size, ack.await) });
    }
    producer.flush().await.context("flushing the producer")?;
    while let Some((_, result)) = pending.next().await {
        summary.add(result);
    }
    report(opts.format(), &args.topic, &summary)?;
    if let Some(e) = summary.first_error {
        bail!("{} records failed; the first: {e}", summary.errors);
    }
    Ok(())
}

/// Prints the summary: to stderr as text, or to stdout as JSON.
fn report(format: Format, topic: &str, s: &Summary) -> anyhow::Result<()> {
    if format == Format::Json {
        let partitions: Vec<_> = s
            .ranges
            .iter()
            .map(|(p, (first, last))| json!({"partition": p, "first_offset": first, "last_offset": last}))
            .collect();
        return print_json(&json!({
            "topic": topic,
            "records": s.records,
            "errors": s.errors,
            "partitions": partitions,
        }));
    }
    let ranges: Vec<String> = s
        .ranges
        .iter()
        .map(|(p, (first, last))| format!("{p}@{first}..={last}"))
        .collect();
    eprintln!(
        "produced {} records to {topic} (partition@offsets: {})",
        s.records,
        if ranges.is_empty() {
            "none".to_owned()
        } else {
            ranges.join(", ")
        }
    );
    Ok(())
}

/// Lines of stdin without their `\n` (or `\r\n`), read on a blocking thread.
fn read_lines() -> mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    if tx.blocking_send(Ok(Bytes::from(line))).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    rx
}

/// A record from one line: key and value split at the first `separator`, if there is one
/// in the line; otherwise the whole line is the value and there is no key.
fn split_record(topic: &str, line: Bytes, separator: Option<&[u8]>) -> ProducerRecord {
    if let Some(sep) = separator.filter(|s| !s.is_empty())
        && let Some(at) = line.windows(sep.len()).position(|w| w == sep)
    {
        let key = line.slice(..at);
        let value = line.slice(at + sep.len()..);
        return ProducerRecord::new(topic, value).key(key);
    }
    ProducerRecord::new(topic, line)
}

/// Parses `-H key=value` headers.
fn parse_headers(entries: &[String]) -> anyhow::Result<Vec<(String, Bytes)>> {
    entries
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), Bytes::from(v.to_owned()))),
            _ => bail!("header {e:?} is not key=value"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_at_the_first_separator() {
        let r = split_record("t", Bytes::from_static(b"k::v::w"), Some(b"::"));
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(&r.value[..], b"v::w");
        let r = split_record("t", Bytes::from_static(b"plain"), Some(b"::"));
        assert_eq!((r.key, &r.value[..]), (None, &b"plain"[..]));
        let r = split_record("t", Bytes::from_static(b"a:b"), None);
        assert_eq!((r.key, &r.value[..]), (None, &b"a:b"[..]));
    }

    #[test]
    fn headers_need_a_name_and_an_equals_sign() {
        let h = parse_headers(&["a=1".into(), "b=x=y".into()]).unwrap();
        assert_eq!(h[1], ("b".to_owned(), Bytes::from_static(b"x=y")));
        assert!(parse_headers(&["nope".into()]).is_err());
        assert!(parse_headers(&["=v".into()]).is_err());
    }
}
