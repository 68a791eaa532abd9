//! A run's results: `results.json` (reliability.md §4.7), a one-line verdict, and the summary
//! table the `cairn-chaos` binary prints.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::availability::Availability;
use super::checker::{Anomalies, Examples, OpCounts, Safety};

/// What a scenario must show to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// No anomaly at all: a real scenario.
    Clean,
    /// At least one lost write: the unclean-election canary.
    LostWrites,
    /// At least one diverging replica: the damaged-segment canary.
    Divergence,
}

/// Everything `results.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// The scenario's name.
    pub scenario: String,
    /// The nemesis seed.
    pub seed: u64,
    /// Seconds of faults asked for.
    pub duration_s: u64,
    /// Brokers in the cluster.
    pub brokers: usize,
    /// What the scenario must show.
    pub expect: Expect,
    /// Send counts.
    pub ops: OpCounts,
    /// Safety anomalies.
    pub anomalies: Anomalies,
    /// Examples of them.
    pub examples: Examples,
    /// Liveness figures.
    pub availability: Availability,
    /// Whether the run showed what it must.
    pub passed: bool,
    /// The one-line verdict.
    pub verdict: String,
}

impl Results {
    /// Puts the checker's findings together and decides the verdict.
    pub fn new(
        scenario: &str,
        seed: u64,
        duration_s: u64,
        brokers: usize,
        expect: Expect,
        safety: Safety,
        availability: Availability,
    ) -> Self {
        let a = &safety.anomalies;
        let passed = match expect {
            Expect::Clean => a.total() == 0,
            Expect::LostWrites => a.lost > 0,
            Expect::Divergence => a.replica_divergence > 0,
        };
        let verdict = format!(
            "{scenario} seed {seed}: {} ({} anomalies: {} lost, {} divergent replicas; \
             {} acked; unavailable {:.1} s over {} faults, {} fence events, {} spurious)",
            if passed { "PASS" } else { "FAIL" },
            a.total(),
            a.lost,
            a.replica_divergence,
            safety.ops.acked,
            availability.unavailable_s_total,
            availability.faults,
            availability.fence_events,
            availability.spurious_fences,
        );
        Self {
            scenario: scenario.to_owned(),
            seed,
            duration_s,
            brokers,
            expect,
            ops: safety.ops,
            anomalies: safety.anomalies,
            examples: safety.examples,
            availability,
            passed,
            verdict,
        }
    }

    /// Writes `results.json` into `dir`.
    ///
    /// # Errors
    ///
    /// If the file cannot be written.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(dir.join("results.json"), json + "\n")?;
        Ok(())
    }
}

/// The summary table over `results`, then the final `N passed, N failed` line.
pub fn summary(results: &[Results]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>6} {:>7} {:>6} {:>5} {:>4} {:>5} {:>5} {:>4} {:>5} {:>5} {:>5} {:>7} {:>6} {:>6} {:>9} {:>5}  verdict",
        "scenario",
        "seed",
        "acked",
        "info",
        "lost",
        "dup",
        "incon",
        "wrong",
        "gap",
        "abort",
        "nmono",
        "diver",
        "unav_s",
        "max_s",
        "faults",
        "fences/sp",
        "ldr"
    );
    for r in results {
        let (a, v) = (&r.anomalies, &r.availability);
        let _ = writeln!(
            out,
            "{:<16} {:>6} {:>7} {:>6} {:>5} {:>4} {:>5} {:>5} {:>4} {:>5} {:>5} {:>5} {:>7.1} {:>6.1} {:>6} {:>9} {:>5}  {}",
            r.scenario,
            r.seed,
            r.ops.acked,
            r.ops.indeterminate,
            a.lost,
            a.duplicated,
            a.inconsistent_offsets,
            a.wrong_offset,
            a.gaps,
            a.aborted_reads,
            a.nonmonotonic_sends,
            a.replica_divergence,
            v.unavailable_s_total,
            v.unavailable_s_max,
            v.faults,
            format!("{}/{}", v.fence_events, v.spurious_fences),
            v.leader_changes,
            if r.passed { "pass" } else { "FAIL" },
        );
    }
    let passed = results.iter().filter(|r| r.passed).count();
    let _ = writeln!(out, "{passed} passed, {} failed", results.len() - passed);
    out
}
