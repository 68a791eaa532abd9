//! The `cairn` command line, noun-verb like rpk: `cairn serve`, `cairn topic ...`,
//! `cairn group ...`, `cairn cluster ...`, `cairn bench ...`. `main.rs` only calls [`main`].
//!
//! Client commands find brokers through `--brokers` or `CAIRN_BROKERS`. People get tables,
//! scripts get `--format json`; errors go to stderr with a non-zero exit status (2 for usage
//! errors, clap's default).
//!
//! # Layout
//!
//! - `serve`: the broker.
//! - `topic`: topic administration (`create`, `list`, `describe`, `delete`).
//! - `produce` / `consume`: `topic produce` (stdin lines in) and `topic consume` (records out,
//!   alone or as a member of a consumer group with `-g`), with `record_format` rendering
//!   kcat-style `-f` strings and JSON lines.
//! - `group`: consumer groups (`list`, `describe`, `seek`, `delete`).
//! - `cluster`: `cluster info`.
//! - `bench`: the load tool, and its do-nothing baseline broker.
//! - `output`: tables, JSON and the few encoders the commands share.

mod bench;
mod cluster;
mod consume;
mod group;
mod output;
mod produce;
mod record_format;
mod serve;
mod topic;

use std::process::ExitCode;

use anyhow::Context;
use cairn_client::Client;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Cairn: a partitioned, replicated commit log.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker.
    Serve(serve::ServeArgs),
    /// Create, list, describe, delete, produce to and consume from topics.
    Topic(topic::TopicArgs),
    /// List, describe, move the offsets of and delete consumer groups.
    Group(group::GroupArgs),
    /// Describe the cluster.
    Cluster(cluster::ClusterArgs),
    /// Measure produce and consume throughput and latency.
    Bench(bench::BenchArgs),
}

/// Connection and output flags shared by every client command. `global` so they may follow
/// the verb (`cairn topic list --format json`) as well as the noun. Named as rpk names them:
/// `-b/--brokers`, `-f/--format` (which `topic consume` also takes as a kcat-style template).
#[derive(Debug, Clone, Args)]
pub(crate) struct ClientOpts {
    /// Brokers to bootstrap from, comma-separated `host:port` (port 9092 if left out).
    #[arg(
        short = 'b',
        long,
        global = true,
        env = "CAIRN_BROKERS",
        value_delimiter = ',',
        default_value = "127.0.0.1:9092"
    )]
    brokers: Vec<String>,
    /// Output format: `text` (tables and plain text, for people) or `json` (for scripts);
    /// `topic consume` also takes a kcat-style template such as '%k=%v\n'.
    #[arg(
        short = 'f',
        long = "format",
        global = true,
        default_value = "text",
        value_name = "text|json|TEMPLATE"
    )]
    format: String,
}

/// How a client command prints its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Tables and plain text.
    Text,
    /// JSON: one document, or one object per line for streams of records.
    Json,
}

impl ClientOpts {
    /// The output format; a template counts as text (only `topic consume` takes one, and it
    /// reads [`ClientOpts::template`]).
    pub(crate) fn format(&self) -> Format {
        if self.format == "json" {
            Format::Json
        } else {
            Format::Text
        }
    }

    /// The kcat-style template given with `-f`, if it is neither `text` nor `json`.
    pub(crate) fn template(&self) -> Option<&str> {
        (!matches!(self.format.as_str(), "text" | "json")).then_some(self.format.as_str())
    }

    /// Refuses a template for a command that prints tables or JSON documents.
    ///
    /// # Errors
    ///
    /// When `-f` is neither `text` nor `json`.
    pub(crate) fn tables_only(&self) -> anyhow::Result<()> {
        match self.template() {
            Some(t) => anyhow::bail!(
                "--format {t:?} is not text or json (only topic consume takes a template)"
            ),
            None => Ok(()),
        }
    }

    /// Connects to the cluster.
    ///
    /// # Errors
    ///
    /// When no broker answers.
    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        let brokers = self.brokers.join(",");
        Client::builder()
            .brokers(self.brokers.iter().map(|b| b.trim().to_owned()))
            .build()
            .await
            .map_err(|e| match e {
                // The message names the broker and the reason already.
                cairn_client::Error::Transport { .. } => anyhow::Error::new(e),
                e => anyhow::Error::new(e).context(format!("connecting to {brokers}")),
            })
    }
}

/// A runtime for the client commands; `serve` builds its own.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Topic(args) => topic::run(args),
        Command::Group(args) => group::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error's chain of causes, joined by `: `, stopping before a `tonic::Status`: the client's
/// error already carries the broker's message, and the status's own rendering repeats it with
/// gRPC internals a person cannot act on.
fn describe(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        if cause.is::<tonic::Status>() || cause.is::<cairn_client::BrokerStatus>() {
            break;
        }
        let text = cause.to_string();
        if parts.last().is_none_or(|last| !last.ends_with(&text)) {
            parts.push(text);
        }
    }
    // A context naming what the error names already says it once only: `deleting topic
    // "t": unknown topic "t"` becomes `deleting topic: unknown topic "t"`.
    for i in 0..parts.len() {
        let (head, rest) = parts.split_at_mut(i + 1);
        for quoted in quoted_names(&head[i]) {
            if rest.iter().any(|later| later.contains(&quoted)) {
                head[i] = head[i].replace(&format!(" {quoted}"), "");
            }
        }
    }
    parts.join(": ")
}

/// The `"..."` names in `text`, quotes included.
fn quoted_names(text: &str) -> Vec<String> {
    text.split('"')
        .enumerate()
        .filter(|(i, name)| i % 2 == 1 && !name.is_empty())
        .map(|(_, name)| format!("\"{name}\""))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_one_line_without_grpc_internals() {
        let status = tonic::Status::already_exists("topic \"t\" already exists");
        let e = anyhow::Error::new(cairn_client::Error::from_status(status))
            .context("creating topic \"t\"");
        let text = describe(&e);
        assert!(text.starts_with("creating topic: "), "{text}");
        assert!(text.contains("already exists"), "{text}");
        assert!(!text.contains("code:"), "{text}");
        assert_eq!(text.matches("\"t\"").count(), 1, "the name once: {text}");
    }
}
