//! `cairn-chaos`: runs fault scenarios against real `cairn` brokers and checks them (issue 11,
//! reliability.md §4). Needs root (brokers run as distinct uids; partitions are nftables rules).
//!
//! ```text
//! cargo run -p cairn-tests --bin cairn-chaos -- --scenario mixed --seed 7 --duration-s 120
//! ```
//!
//! Each scenario writes `<out>/<scenario>-<seed>/`: `history.jsonl`, `nemesis.jsonl`,
//! `final.json`, `results.json`, and every broker's log. The last line printed is
//! `N passed, N failed`; the exit status is 1 if any scenario failed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use cairn_tests::chaos::report::{Results, summary};
use cairn_tests::chaos::{RunConfig, Scenario, run};
use clap::Parser;

/// Runs Cairn's fault scenarios and checks their histories.
#[derive(Debug, Parser)]
#[command(name = "cairn-chaos")]
struct Args {
    /// Scenarios to run, in order: kill, pause, partition, mixed, canary-unclean,
    /// canary-segment, or all. Repeat or comma-separate.
    #[arg(long, value_delimiter = ',', default_value = "mixed")]
    scenario: Vec<String>,
    /// Seed of the nemesis schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of faults per scenario.
    #[arg(long = "duration-s", default_value_t = 60)]
    duration_s: u64,
    /// Where the runs' files go.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
}

fn scenarios(names: &[String]) -> Result<Vec<Scenario>> {
    let mut out = Vec::new();
    for name in names {
        if name == "all" {
            out.extend(Scenario::ALL);
            continue;
        }
        match Scenario::parse(name) {
            Some(s) => out.push(s),
            None => bail!("unknown scenario {name:?}"),
        }
    }
    Ok(out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut results: Vec<Results> = Vec::new();
    for scenario in scenarios(&args.scenario)? {
        let config = RunConfig {
            scenario,
            seed: args.seed,
            duration: Duration::from_secs(args.duration_s),
            out: args.out.join(format!("{}-{}", scenario.name(), args.seed)),
        };
        eprintln!(
            "chaos: running {} into {}",
            scenario.name(),
            config.out.display()
        );
        match run(&config).await {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("chaos: {} could not run: {e:#}", scenario.name());
                println!("{} seed {}: ERROR {e:#}", scenario.name(), args.seed);
                results.push(errored(&config, &format!("{e:#}")));
            }
        }
    }
    print!("{}", summary(&results));
    if results.iter().any(|r| !r.passed) {
        std::process::exit(1);
    }
    Ok(())
}

/// A failed row for a scenario that could not run.
fn errored(config: &RunConfig, error: &str) -> Results {
    let s = config.scenario;
    let mut r = Results::new(
        s.name(),
        config.seed,
        config.duration.as_secs(),
        s.brokers(),
        s.expect(),
        Default::default(),
        Default::default(),
    );
    r.passed = false;
    r.verdict = format!("{} seed {}: ERROR {error}", s.name(), config.seed);
    r
}
