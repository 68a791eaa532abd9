//! The `cairn` command line, noun-verb like rpk: `cairn serve`, `cairn topic ...`,
//! `cairn cluster ...`, `cairn bench ...`. `main.rs` only calls [`main`].
//!
//! Client commands find brokers through `--brokers` or `CAIRN_BROKERS`. People get tables,
//! scripts get `--format json`; errors go to stderr with a non-zero exit status.

mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
