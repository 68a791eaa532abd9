//! What faults cost, from a [`History`]: unavailable seconds per partition, recovery time per
//! fault, fence events against the faults injected, and leader changes (reliability.md §4.7).
//! Measured, never failed on: unavailability is expected while fewer than `min_insync_replicas`
//! replicas can be reached.
//!
//! - **Unavailable**: per partition, the intervals of at least 1 s during which a send was
//!   outstanding and none was acknowledged.
//! - **Recovery**: per fault, from its heal to the first acknowledgement on each partition
//!   (`after_heal_s`), and from its start to the end of the last outage that began during it
//!   (`from_start_s`; 0 when no partition was out).
//! - **Fences**: a broker turning from alive to fenced in the controller's view. A fence is
//!   *explained* when a fault hit that broker and started at most a session earlier than the
//!   fence (or is still going on); the rest are *spurious*.
//! - **Leader changes**: a partition's leader or epoch changing between samples; those more than
//!   [`QUIET_AFTER_HEAL`] after every fault's heal are spurious elections.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::history::{FaultRecord, History, Nanos, OpType, SECOND, secs};

/// An outage shorter than this is not counted.
const MIN_OUTAGE: Nanos = SECOND;

/// After a heal, leadership may still move back (preferred leaders) for this long without
/// counting as spurious.
pub const QUIET_AFTER_HEAL: Nanos = 15 * SECOND;

/// One outage of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    /// The partition.
    pub partition: u32,
    /// When it began: the first unanswered send, or the last acknowledgement.
    pub start_s: f64,
    /// Its length.
    pub seconds: f64,
}

/// What one fault cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// The fault's index in the schedule.
    pub fault: usize,
    /// What it was.
    pub kind: String,
    /// Its targets.
    pub targets: Vec<u32>,
    /// Seconds from its start to the end of the last outage that began while it lasted.
    pub from_start_s: f64,
    /// Seconds from its heal to the first acknowledgement on the slowest partition.
    pub after_heal_s: f64,
}

/// The liveness figures of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Availability {
    /// Sum of every partition's outages.
    pub unavailable_s_total: f64,
    /// The longest single outage.
    pub unavailable_s_max: f64,
    /// Every outage.
    pub outages: Vec<Outage>,
    /// Per fault.
    pub recoveries: Vec<Recovery>,
    /// Median of `from_start_s` over faults.
    pub recovery_s_p50: f64,
    /// Largest `from_start_s`.
    pub recovery_s_max: f64,
    /// Faults injected.
    pub faults: u64,
    /// Brokers turning fenced in the controller's view.
    pub fence_events: u64,
    /// Fence events no fault explains.
    pub spurious_fences: u64,
    /// Partition leader (or epoch) changes.
    pub leader_changes: u64,
    /// Leader changes with no fault active or recently healed.
    pub spurious_elections: u64,
}

/// Computes the availability figures of `history`; `session_ns` is the broker session timeout.
pub fn check_availability(history: &History, session_ns: Nanos) -> Availability {
    let outages = outages(history);
    let mut out = Availability {
        unavailable_s_total: outages.iter().map(|o| o.seconds).fold(0.0, |a, b| a + b),
        unavailable_s_max: outages.iter().map(|o| o.seconds).fold(0.0, f64::max),
        faults: history.faults.len() as u64,
        ..Availability::default()
    };
    out.recoveries = history
        .faults
        .iter()
        .map(|f| recovery(history, f, &outages))
        .collect();
    let mut times: Vec<f64> = out.recoveries.iter().map(|r| r.from_start_s).collect();
    times.sort_by(f64::total_cmp);
    out.recovery_s_p50 = times.get(times.len() / 2).copied().unwrap_or(0.0);
    out.recovery_s_max = times.last().copied().unwrap_or(0.0);
    out.outages = outages;
    count_fences(history, session_ns, &mut out);
    count_leader_changes(history, &mut out);
    out
}

/// Every outage of every partition, in partition then time order.
pub fn outages(history: &History) -> Vec<Outage> {
    let mut by_partition: BTreeMap<u32, Vec<(Nanos, OpType)>> = BTreeMap::new();
    for op in &history.ops {
        by_partition
            .entry(op.partition)
            .or_default()
            .push((op.t_ns, op.kind));
    }
    let mut out = Vec::new();
    for (p, mut events) in by_partition {
        events.sort_by_key(|(t, _)| *t);
        let mut outstanding = 0u32;
        // Since when a send has been outstanding with no acknowledgement.
        let mut anchor = 0;
        let mut close = |from: Nanos, to: Nanos| {
            if to.saturating_sub(from) >= MIN_OUTAGE {
                out.push(Outage {
                    partition: p,
                    start_s: secs(from),
                    seconds: secs(to - from),
                });
            }
        };
        for (t, kind) in events {
            match kind {
                OpType::Invoke => {
                    if outstanding == 0 {
                        anchor = t;
                    }
                    outstanding += 1;
                }
                _ => {
                    outstanding = outstanding.saturating_sub(1);
                    if kind == OpType::Ok || outstanding == 0 {
                        close(anchor, t);
                        anchor = t;
                    }
                }
            }
        }
        if outstanding > 0 {
            close(anchor, history.end_ns.max(anchor));
        }
    }
    out
}

/// When `fault` ended: its heal, or the end of the run.
fn heal_of(history: &History, fault: &FaultRecord) -> Nanos {
    fault.heal_ns.unwrap_or(history.end_ns)
}

fn recovery(history: &History, fault: &FaultRecord, outages: &[Outage]) -> Recovery {
    let start = secs(fault.start_ns);
    let heal = heal_of(history, fault);
    let from_start_s = outages
        .iter()
        .filter(|o| o.start_s >= start - 1.0 && o.start_s <= secs(heal))
        .map(|o| o.start_s + o.seconds - start)
        .fold(0.0, f64::max);
    let partitions: std::collections::BTreeSet<u32> =
        history.ops.iter().map(|o| o.partition).collect();
    let after_heal_s = partitions
        .iter()
        .filter_map(|&p| {
            history
                .ops
                .iter()
                .find(|o| o.partition == p && o.kind == OpType::Ok && o.t_ns >= heal)
                .map(|o| secs(o.t_ns - heal))
        })
        .fold(0.0, f64::max);
    Recovery {
        fault: fault.index,
        kind: fault.kind.clone(),
        targets: fault.targets.clone(),
        from_start_s,
        after_heal_s,
    }
}

fn count_fences(history: &History, session_ns: Nanos, out: &mut Availability) {
    let mut fenced: Vec<u32> = Vec::new();
    for sample in history.meta.iter().filter(|m| m.controller != 0) {
        for &b in &sample.fenced {
            if fenced.contains(&b) {
                continue;
            }
            out.fence_events += 1;
            let explained = history.faults.iter().any(|f| {
                f.targets.contains(&b)
                    && f.start_ns <= sample.t_ns
                    && sample.t_ns <= heal_of(history, f) + 2 * session_ns
            });
            if !explained {
                out.spurious_fences += 1;
            }
        }
        fenced.clone_from(&sample.fenced);
    }
}

fn count_leader_changes(history: &History, out: &mut Availability) {
    let mut last: BTreeMap<usize, (u32, i32)> = BTreeMap::new();
    for sample in &history.meta {
        for (i, p) in sample.partitions.iter().enumerate() {
            let now = (p.leader, p.epoch);
            let changed = last
                .get(&i)
                .is_some_and(|&before| before != now && p.leader != 0);
            if p.leader != 0 {
                last.insert(i, now);
            }
            if !changed {
                continue;
            }
            out.leader_changes += 1;
            let during_fault = history.faults.iter().any(|f| {
                f.start_ns <= sample.t_ns && sample.t_ns <= heal_of(history, f) + QUIET_AFTER_HEAL
            });
            if !during_fault {
                out.spurious_elections += 1;
            }
        }
    }
}
