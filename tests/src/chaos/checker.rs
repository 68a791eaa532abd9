//! The checker: a pure function from a [`History`] to [`Anomalies`] (safety: what must never
//! happen) and [`Availability`] (liveness: what a fault cost). It follows `jepsen.tests.kafka`
//! (reliability.md §4.6) for the checks a write-only workload with a final read can make.
//!
//! Safety checks:
//! - **lost**: an acknowledged value absent from its partition's final read;
//! - **duplicated**: a value at more than one offset in the final read (the idempotent producer
//!   must never duplicate, so any count fails);
//! - **inconsistent offsets**: one (partition, offset) holding two values across acknowledgements
//!   and the final read;
//! - **wrong offset**: an acknowledged value read back at another offset;
//! - **gaps**: offsets missing from the final read below its high watermark (offsets are dense
//!   from 0; retention is off in chaos runs);
//! - **aborted reads**: a value whose send failed definitely (`fail`) visible anywhere;
//! - **nonmonotonic sends**: a writer's acknowledged offsets on a partition not increasing in
//!   send order (each writer sends one value at a time);
//! - **replica divergence**: replicas whose batches below the high watermark differ from the
//!   others', or do not cover it.
//!
//! Availability lives in [`super::availability`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::history::{BatchSummary, History, OpType};

/// Counts of each safety anomaly; all zero in a correct run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomalies {
    /// Acknowledged values missing from the final read.
    pub lost: u64,
    /// Values read at more than one offset.
    pub duplicated: u64,
    /// Offsets holding more than one value.
    pub inconsistent_offsets: u64,
    /// Acknowledged values read back at another offset.
    pub wrong_offset: u64,
    /// Offsets missing from a final read below its high watermark.
    pub gaps: u64,
    /// Definitely failed values that are visible.
    pub aborted_reads: u64,
    /// Acknowledged offsets going backwards for one writer and partition.
    pub nonmonotonic_sends: u64,
    /// Replicas (partition, broker) whose batches differ from the others' or stop short.
    pub replica_divergence: u64,
}

impl Anomalies {
    /// The sum of every count.
    pub fn total(&self) -> u64 {
        self.lost
            + self.duplicated
            + self.inconsistent_offsets
            + self.wrong_offset
            + self.gaps
            + self.aborted_reads
            + self.nonmonotonic_sends
            + self.replica_divergence
    }
}

/// Samples of what went wrong, for the report (a few of each kind).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Examples {
    /// `(partition, offset, value)` of lost acknowledged writes.
    pub lost: Vec<(u32, i64, u64)>,
    /// Human-readable descriptions of the other anomalies.
    pub other: Vec<String>,
}

/// How many examples of each kind a report keeps.
const MAX_EXAMPLES: usize = 10;

/// Send counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Sends invoked.
    pub invoked: u64,
    /// Sends acknowledged.
    pub acked: u64,
    /// Sends failed definitely.
    pub failed: u64,
    /// Sends with an indeterminate outcome.
    pub indeterminate: u64,
    /// Indeterminate sends whose value is in the final read.
    pub indeterminate_visible: u64,
    /// Records in the final read.
    pub read: u64,
}

/// The safety verdict over a history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Safety {
    /// Send counts.
    pub ops: OpCounts,
    /// Anomaly counts.
    pub anomalies: Anomalies,
    /// Examples of the anomalies.
    pub examples: Examples,
}

/// Runs every safety check over `history`.
pub fn check_safety(history: &History) -> Safety {
    let mut out = Safety::default();
    count_ops(history, &mut out.ops);
    // value → every (partition, offset) the final read holds it at.
    let mut read_at: HashMap<u64, Vec<(u32, i64)>> = HashMap::new();
    // (partition, offset) → every value seen there (acks and final read).
    let mut log: BTreeMap<(u32, i64), BTreeSet<u64>> = BTreeMap::new();
    for (&p, records) in &history.final_reads {
        for &(o, v) in records {
            read_at.entry(v).or_default().push((p, o));
            log.entry((p, o)).or_default().insert(v);
        }
        out.ops.read += records.len() as u64;
    }
    check_acks(history, &read_at, &mut log, &mut out);
    check_read_values(history, &read_at, &mut out);
    for ((p, o), values) in &log {
        if values.len() > 1 {
            out.anomalies.inconsistent_offsets += 1;
            example(&mut out.examples, || {
                format!("p{p} offset {o} holds {values:?}")
            });
        }
    }
    check_gaps(history, &mut out);
    check_replicas(history, &mut out);
    out
}

fn count_ops(history: &History, ops: &mut OpCounts) {
    for op in &history.ops {
        match op.kind {
            OpType::Invoke => ops.invoked += 1,
            OpType::Ok => ops.acked += 1,
            OpType::Fail => ops.failed += 1,
            OpType::Info => ops.indeterminate += 1,
        }
    }
}

fn example(examples: &mut Examples, describe: impl FnOnce() -> String) {
    if examples.other.len() < MAX_EXAMPLES * 4 {
        examples.other.push(describe());
    }
}

/// Lost, wrong-offset and nonmonotonic checks over acknowledged sends; adds each ack to `log`.
fn check_acks(
    history: &History,
    read_at: &HashMap<u64, Vec<(u32, i64)>>,
    log: &mut BTreeMap<(u32, i64), BTreeSet<u64>>,
    out: &mut Safety,
) {
    let mut last_offset: HashMap<(u32, u32), i64> = HashMap::new();
    for op in history.ops.iter().filter(|o| o.kind == OpType::Ok) {
        let Some(offset) = op.offset else {
            example(&mut out.examples, || format!("ok without offset: {op:?}"));
            continue;
        };
        log.entry((op.partition, offset))
            .or_default()
            .insert(op.value);
        let key = (op.process, op.partition);
        if let Some(&prev) = last_offset.get(&key)
            && offset <= prev
        {
            out.anomalies.nonmonotonic_sends += 1;
            example(&mut out.examples, || {
                format!(
                    "writer {} p{}: offset {offset} acked after {prev}",
                    op.process, op.partition
                )
            });
        }
        last_offset.insert(key, offset);
        let places = read_at.get(&op.value).map(Vec::as_slice).unwrap_or(&[]);
        let in_partition: Vec<i64> = places
            .iter()
            .filter(|(p, _)| *p == op.partition)
            .map(|(_, o)| *o)
            .collect();
        if in_partition.is_empty() {
            out.anomalies.lost += 1;
            if out.examples.lost.len() < MAX_EXAMPLES {
                out.examples.lost.push((op.partition, offset, op.value));
            }
        } else if !in_partition.contains(&offset) {
            out.anomalies.wrong_offset += 1;
            example(&mut out.examples, || {
                format!(
                    "value {:#x} acked at p{} offset {offset}, read at {in_partition:?}",
                    op.value, op.partition
                )
            });
        }
    }
}

/// Duplicates, aborted reads and visible indeterminate sends, over the final read.
fn check_read_values(history: &History, read_at: &HashMap<u64, Vec<(u32, i64)>>, out: &mut Safety) {
    for (value, places) in read_at {
        if places.len() > 1 {
            out.anomalies.duplicated += 1;
            example(&mut out.examples, || {
                format!("value {value:#x} read at {places:?}")
            });
        }
    }
    let mut seen_info = BTreeSet::new();
    for op in &history.ops {
        match op.kind {
            OpType::Fail if read_at.contains_key(&op.value) => {
                out.anomalies.aborted_reads += 1;
                example(&mut out.examples, || {
                    format!("failed send {:#x} is visible", op.value)
                });
            }
            OpType::Info if read_at.contains_key(&op.value) && seen_info.insert(op.value) => {
                out.ops.indeterminate_visible += 1;
            }
            _ => {}
        }
    }
}

/// Offsets missing from each final read below its high watermark.
fn check_gaps(history: &History, out: &mut Safety) {
    for (&p, &hw) in &history.final_hw {
        let offsets: BTreeSet<i64> = history
            .final_reads
            .get(&p)
            .map(|r| r.iter().map(|(o, _)| *o).collect())
            .unwrap_or_default();
        let missing = (0..hw).filter(|o| !offsets.contains(o)).count() as u64;
        if missing > 0 {
            out.anomalies.gaps += missing;
            example(&mut out.examples, || {
                format!("p{p}: {missing} offsets below the high watermark {hw} not read")
            });
        }
    }
}

/// Replica divergence: below the partition's high watermark, every replica must hold the same
/// batches, covering every offset. The reference is the batch list most replicas agree on.
fn check_replicas(history: &History, out: &mut Safety) {
    for (&p, replicas) in &history.replicas {
        let hw = history.final_hw.get(&p).copied().unwrap_or(0);
        let below: BTreeMap<u32, Vec<BatchSummary>> = replicas
            .iter()
            .map(|(&b, batches)| (b, batches.iter().copied().filter(|x| x.base < hw).collect()))
            .collect();
        let mut votes: HashMap<&Vec<BatchSummary>, usize> = HashMap::new();
        for batches in below.values() {
            *votes.entry(batches).or_default() += 1;
        }
        let Some(reference) = votes
            .iter()
            .max_by_key(|(b, n)| (**n, covers(b, hw)))
            .map(|(b, _)| (*b).clone())
        else {
            continue;
        };
        for (b, batches) in &below {
            let differs = *batches != reference;
            if differs || !covers(batches, hw) {
                out.anomalies.replica_divergence += 1;
                let first = first_difference(batches, &reference);
                example(&mut out.examples, || {
                    format!(
                        "p{p} broker {b}: {} batches below hw {hw}, {} in the reference; \
                         first difference at {first:?}",
                        batches.len(),
                        reference.len()
                    )
                });
            }
        }
    }
}

/// Whether `batches` are dense from 0 and reach `hw`.
fn covers(batches: &[BatchSummary], hw: i64) -> bool {
    let mut next = 0;
    for b in batches {
        if b.base != next {
            return false;
        }
        next = b.last + 1;
    }
    next >= hw
}

/// The base offset of the first batch where `a` and `b` differ.
fn first_difference(a: &[BatchSummary], b: &[BatchSummary]) -> Option<i64> {
    a.iter()
        .zip(b)
        .find(|(x, y)| x != y)
        .map(|(x, _)| x.base)
        .or_else(|| {
            let n = a.len().min(b.len());
            a.get(n).or_else(|| b.get(n)).map(|x| x.base)
        })
}
