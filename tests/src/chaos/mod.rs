//! Cairn's own Jepsen-style fault suite (issue 11; the plan is reliability.md §4): real broker
//! processes, a seeded nemesis, writers of unique values with acks=all and the idempotent
//! producer, and a checker over the recorded history.
//!
//! # Layout
//!
//! - [`topology`]: the cluster under test (brokers as distinct uids, so that
//!   [`crate::netfault`] can partition them) and a [`topology::Probe`] of the controller's view.
//! - [`nemesis`]: the seeded fault schedule and the executor that injects and heals faults.
//! - [`workload`]: writers, the metadata poller, the final read.
//! - [`history`]: what a run records, and its files (`history.jsonl`, `nemesis.jsonl`).
//! - [`checker`]: safety anomalies, a pure function of the history.
//! - [`availability`]: unavailable seconds, recovery times, fences and elections.
//! - [`replicas`]: a stopped broker's segment files, for the divergence check.
//! - [`canary`]: runs that lose data on purpose, so that the checker is seen to catch it.
//! - [`report`]: `results.json`, the verdict line and the summary table.
//! - [`runner`]: one scenario from start to verdict.

pub mod availability;
pub mod canary;
pub mod checker;
pub mod history;
pub mod nemesis;
pub mod replicas;
pub mod report;
pub mod runner;
pub mod topology;
pub mod workload;

#[cfg(test)]
mod checker_tests;

pub use runner::{RunConfig, Scenario, run};
