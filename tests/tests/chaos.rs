//! The fault suite's short run (issue 11; `tests/src/chaos`): a minute of mixed faults (kill,
//! pause, isolate, split, clean and unclean restarts, the controller included) must lose,
//! duplicate, move or diverge nothing; and the two canaries, which lose data on purpose, must
//! be reported, so that a checker that sees nothing cannot pass.
//!
//! Needs root (brokers run as distinct uids; partitions are nftables rules). The runs' files
//! stay in `target/tmp/chaos-*` for a look after a failure. The tests take turns: three
//! clusters at once would starve each other on a 2-core machine.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use cairn_tests::chaos::report::Results;
use cairn_tests::chaos::{RunConfig, Scenario, run};

/// One scenario at a time.
static TURN: Mutex<()> = Mutex::new(());

/// Runs `scenario` on its own runtime once no other scenario of this file runs.
fn run_scenario(scenario: Scenario, seed: u64, seconds: u64) -> Result<Results> {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("chaos-{}-{seed}", scenario.name()));
    let _ = std::fs::remove_dir_all(&out);
    let config = RunConfig {
        scenario,
        seed,
        duration: Duration::from_secs(seconds),
        out,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let results = runtime.block_on(run(&config))?;
    eprintln!(
        "{}",
        cairn_tests::chaos::report::summary(std::slice::from_ref(&results))
    );
    Ok(results)
}

#[test]
fn a_minute_of_mixed_faults_loses_nothing() -> Result<()> {
    let r = run_scenario(Scenario::Mixed, 11, 60)?;
    assert_eq!(r.anomalies.total(), 0, "{}\n{:#?}", r.verdict, r.examples);
    assert!(r.availability.faults >= 3, "{}", r.verdict);
    assert!(r.ops.acked > 1000, "{}", r.verdict);
    assert!(r.passed, "{}", r.verdict);
    Ok(())
}

#[test]
fn the_unclean_election_canary_is_reported_as_lost_writes() -> Result<()> {
    let r = run_scenario(Scenario::CanaryUnclean, 1, 0)?;
    assert!(r.anomalies.lost > 0, "{}", r.verdict);
    assert!(r.passed, "{}", r.verdict);
    Ok(())
}

#[test]
fn the_damaged_segment_canary_is_reported_as_divergence() -> Result<()> {
    let r = run_scenario(Scenario::CanarySegment, 1, 8)?;
    assert!(r.anomalies.replica_divergence > 0, "{}", r.verdict);
    assert!(r.passed, "{}", r.verdict);
    Ok(())
}
