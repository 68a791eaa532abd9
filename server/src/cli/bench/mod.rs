//! `cairn bench produce|consume`: the load tool. Drives a topic with fixed-size records and
//! reports throughput (records/s, MB/s = 10^6 bytes/s) and latency percentiles from an
//! hdrhistogram, as a table or one JSON object.
//!
//! `--baseline` runs the same workload against an in-process broker that does nothing
//! ([`baseline`]), so the real numbers can be read against the cost of gRPC and the client.
//!
//! # Layout
//!
//! - this module: flags, the runtime, progress bars and the report.
//! - `produce`: K producer tasks; latency is per record, from `send` to its acknowledgement.
//! - `consume`: one consumer per partition; latency is per fetch round trip.
//! - `baseline`: the do-nothing `cairn.v1.Broker`.

mod baseline;
mod consume;
mod produce;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_client::Client;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::output::{print_json, print_table, table};
use super::produce::AcksArg;
use super::{ClientOpts, Format};

/// Records a run writes or reads when neither `--records` nor `--duration` is given.
const DEFAULT_RECORDS: u64 = 100_000;

/// `cairn bench ...`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    opts: ClientOpts,
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Produce fixed-size records as fast as the producers can; latency is send → ack.
    Produce(Workload),
    /// Read a topic from its start (filling it first if it holds too few records); latency
    /// is the fetch round trip.
    Consume(Workload),
}

/// What a bench run does. Shared by `produce` and `consume`.
#[derive(Debug, Clone, Args)]
pub(crate) struct Workload {
    /// Topic to use; created with `--partitions` if missing.
    #[arg(long, default_value = "cairn-bench")]
    topic: String,
    /// Partitions of the topic when the bench creates it.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Records to write or read [default: 100000].
    #[arg(long, conflicts_with = "duration")]
    records: Option<u64>,
    /// Run for this long instead of a record count: seconds, or a duration such as `30s`.
    /// `consume` still fills the topic to 100000 records first, and stops early at its end.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Largest producer batch, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// How long a producer batch waits for more records.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// When the broker acknowledges a write.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    acks: AcksArg,
    /// Concurrent producer tasks, each with its own producer.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Replicas per partition when the bench creates the topic.
    #[arg(long, default_value_t = 1)]
    replication_factor: u32,
    /// Produce at most this many records per second in all (0: as fast as possible), to
    /// measure latency below saturation.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Bytes a consumer asks for per fetch.
    #[arg(long, default_value_t = 1 << 20)]
    fetch_bytes: u32,
    /// Print the report as one JSON object (the same as `--format json`).
    #[arg(long)]
    json: bool,
    /// Run against an in-process broker that does nothing, to measure gRPC and client cost.
    #[arg(long)]
    baseline: bool,
}

impl Workload {
    /// The record budget: `--records`, or unbounded with `--duration`.
    fn record_limit(&self) -> u64 {
        match (self.records, self.duration) {
            (Some(n), _) => n,
            (None, Some(_)) => u64::MAX,
            (None, None) => DEFAULT_RECORDS,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs > 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err(format!("{s:?} is not a positive number of seconds"));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// Runs a bench.
///
/// # Errors
///
/// An unreachable cluster, a failed send or fetch, or a baseline server that cannot start.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (mut opts, command) = (args.opts, args.command);
    super::runtime()?.block_on(async move {
        let (produce, w) = match command {
            BenchCommand::Produce(w) => (true, w),
            BenchCommand::Consume(w) => (false, w),
        };
        if w.producers == 0 || w.record_size == 0 || w.partitions == 0 {
            bail!("--producers, --record-size and --partitions must be at least 1");
        }
        let json = w.json || opts.format() == Format::Json;
        let _server = if w.baseline {
            let server = baseline::start(&w.topic, w.partitions, w.record_size).await?;
            opts.brokers = vec![server.addr().to_string()];
            Some(server)
        } else {
            None
        };
        let client = opts.connect().await?;
        if !w.baseline {
            ensure_topic(&client, &w).await?;
        }
        let report = if produce {
            produce::run(&client, &w, progress(&w, json, "produce")).await?
        } else {
            consume::run(&client, &w, json).await?
        };
        report.print(json)
    })
}

/// Creates the topic unless it exists.
async fn ensure_topic(client: &Client, w: &Workload) -> anyhow::Result<()> {
    if client.partition_count(&w.topic).await.is_ok() {
        return Ok(());
    }
    let topic = cairn_client::NewTopic::new(&w.topic, w.partitions)
        .replication_factor(w.replication_factor);
    match client.admin().create_topic(topic).await {
        Ok(_) | Err(cairn_client::Error::TopicAlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating topic {:?}", w.topic)),
    }
}

/// Progress with `--duration`: no known end.
const SPINNER_TEMPLATE: &str = "{spinner} {msg} {elapsed_precise} {human_pos} records {per_sec}";
/// Progress with a record count.
const BAR_TEMPLATE: &str =
    "{msg} {elapsed_precise} [{bar:40}] {human_pos}/{human_len} {per_sec} eta {eta}";

/// A progress bar on stderr: a bar to `--records`, a spinner with `--duration`; hidden with
/// JSON output or when stderr is not a terminal.
pub(crate) fn progress(w: &Workload, json: bool, phase: &str) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let limit = w.record_limit();
    let (bar, template) = if limit == u64::MAX {
        (ProgressBar::new_spinner(), SPINNER_TEMPLATE)
    } else {
        (ProgressBar::new(limit), BAR_TEMPLATE)
    };
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("the progress template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(phase.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A latency histogram in microseconds, from 1 µs to an hour.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("the histogram bounds are valid")
}

/// The outcome of a run.
#[derive(Debug)]
pub(crate) struct Report {
    /// `produce` or `consume`.
    pub workload: &'static str,
    pub baseline: bool,
    pub topic: String,
    pub partitions: u32,
    pub record_size: usize,
    pub records: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Microseconds: send → ack per record, or fetch round trip per fetch.
    pub latency: Histogram<u64>,
    /// What one latency sample measures.
    pub latency_of: &'static str,
}

impl Report {
    fn per_sec(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    fn print(&self, json: bool) -> anyhow::Result<()> {
        let max = self.latency.max() as f64 / 1000.0;
        if json {
            return print_json(&json!({
                "workload": self.workload,
                "baseline": self.baseline,
                "topic": self.topic,
                "partitions": self.partitions,
                "record_size": self.record_size,
                "records": self.records,
                "bytes": self.bytes,
                "elapsed_secs": self.elapsed.as_secs_f64(),
                "records_per_sec": self.per_sec(self.records),
                "mb_per_sec": self.per_sec(self.bytes) / 1e6,
                "latency_of": self.latency_of,
                "latency_samples": self.latency.len(),
                "latency_ms": {
                    "mean": self.latency.mean() / 1000.0,
                    "p50": self.ms(0.5),
                    "p99": self.ms(0.99),
                    "p999": self.ms(0.999),
                    "max": max,
                },
            }));
        }
        let mut t = table(["METRIC", "VALUE"]);
        let mode = if self.baseline { " (baseline)" } else { "" };
        let rows = [
            ("WORKLOAD", format!("{}{mode}", self.workload)),
            (
                "TOPIC",
                format!("{} ({} partitions)", self.topic, self.partitions),
            ),
            (
                "RECORDS",
                format!("{} x {} B", self.records, self.record_size),
            ),
            ("ELAPSED", format!("{:.3} s", self.elapsed.as_secs_f64())),
            ("RECORDS/S", format!("{:.0}", self.per_sec(self.records))),
            ("MB/S", format!("{:.1}", self.per_sec(self.bytes) / 1e6)),
            ("LATENCY", self.latency_of.to_owned()),
            ("MEAN", format!("{:.3} ms", self.latency.mean() / 1000.0)),
            ("P50", format!("{:.3} ms", self.ms(0.5))),
            ("P99", format!("{:.3} ms", self.ms(0.99))),
            ("P999", format!("{:.3} ms", self.ms(0.999))),
            ("MAX", format!("{max:.3} ms")),
        ];
        for (k, v) in rows {
            t.add_row([k.to_owned(), v]);
        }
        print_table(&t);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_templates_parse() {
        for t in [SPINNER_TEMPLATE, BAR_TEMPLATE] {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }

    #[test]
    fn durations_are_seconds_or_humantime() {
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
