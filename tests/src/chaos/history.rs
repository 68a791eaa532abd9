//! The history of a run: every send the workload made (invoke, then ok, fail or info), every
//! metadata sample the poller took, every fault the nemesis injected and healed, and what the
//! final read and the replicas' files held. The checker ([`super::checker`]) is a pure function
//! of a [`History`]; the runner writes it out as `history.jsonl` and `nemesis.jsonl`.
//!
//! Times are nanoseconds since the run's start ([`Clock`]), so a history is comparable across
//! runs and readable without the wall clock.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Nanoseconds since the start of a run.
pub type Nanos = u64;

/// One second in [`Nanos`].
pub const SECOND: Nanos = 1_000_000_000;

/// The run's time base, shared by every recorder.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    /// The wall clock at the start, in ns since the Unix epoch: to place broker log lines.
    wall_start_ns: u64,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Self {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            start: Instant::now(),
            wall_start_ns: u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// The run time of a wall-clock instant (ns since the Unix epoch); `None` before the
    /// start.
    pub fn from_wall(&self, wall_ns: u64) -> Option<Nanos> {
        wall_ns.checked_sub(self.wall_start_ns)
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> Nanos {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Converts [`Nanos`] to seconds, for reports.
pub fn secs(t: Nanos) -> f64 {
    Duration::from_nanos(t).as_secs_f64()
}

/// What an event says about a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The send was handed to the producer.
    Invoke,
    /// The broker acknowledged it at `offset`.
    Ok,
    /// The broker guarantees it did not append it (a validation error).
    Fail,
    /// Indeterminate: it may or may not have been appended (timeouts, transport errors, ...).
    Info,
}

/// One event of one send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// When, since the run's start.
    pub t_ns: Nanos,
    /// The writer task (each writes its partition's values in order, one send at a time).
    pub process: u32,
    /// Invoke, ok, fail or info.
    #[serde(rename = "type")]
    pub kind: OpType,
    /// The partition written.
    pub partition: u32,
    /// The globally unique value: `process << 40 | counter`.
    pub value: u64,
    /// The acknowledged offset (ok only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub offset: Option<i64>,
    /// The error (fail and info only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub err: Option<String>,
}

/// One partition as the controller described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionView {
    /// The leader (0: none).
    pub leader: u32,
    /// The leader epoch.
    pub epoch: i32,
    /// The in-sync replicas.
    pub isr: Vec<u32>,
}

/// One metadata sample: the controller's view at `t_ns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaSample {
    /// When, since the run's start.
    pub t_ns: Nanos,
    /// The controller (0: no broker claimed to be it).
    pub controller: u32,
    /// Brokers the controller lists as fenced.
    pub fenced: Vec<u32>,
    /// Every partition of the workload's topic, in index order (empty if unknown).
    pub partitions: Vec<PartitionView>,
}

/// A fault as the nemesis recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Its index in the schedule.
    pub index: usize,
    /// What was done, e.g. `kill`, `pause`, `isolate`.
    pub kind: String,
    /// The brokers it hit (the minority of a split).
    pub targets: Vec<u32>,
    /// How the target was chosen: `random`, `leader of p1`, `controller`.
    pub chosen_as: String,
    /// When it started.
    pub start_ns: Nanos,
    /// When it was healed (`None`: never, which the runner treats as the run's end).
    pub heal_ns: Option<Nanos>,
}

/// A broker's controller deciding to fence a broker, as its log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceLogged {
    /// When, since the run's start.
    pub t_ns: Nanos,
    /// The broker whose log has the line (it believed it was the controller).
    pub by: u32,
    /// The broker it fenced.
    pub broker: u32,
}

/// One batch as a replica's segment files hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BatchSummary {
    /// First offset.
    pub base: i64,
    /// Last offset.
    pub last: i64,
    /// The batch's CRC (covers the records, not the base offset or leader epoch).
    pub crc: u32,
}

/// Every replica's batches: partition → broker → batches in offset order.
pub type Replicas = BTreeMap<u32, BTreeMap<u32, Vec<BatchSummary>>>;

/// Everything a run produced, as the checker reads it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// Every send event, in the order recorded.
    pub ops: Vec<Op>,
    /// Metadata samples, in time order.
    pub meta: Vec<MetaSample>,
    /// Faults, in schedule order.
    pub faults: Vec<FaultRecord>,
    /// The final read of each partition: `(offset, value)` in offset order.
    pub final_reads: BTreeMap<u32, Vec<(i64, u64)>>,
    /// The high watermark each partition's final read reached.
    pub final_hw: BTreeMap<u32, i64>,
    /// For each partition, each broker's batches as its files hold them (only if the run
    /// compared replicas).
    pub replicas: Replicas,
    /// Fence decisions in the brokers' logs (including ones that a deposed controller could
    /// not commit, and ones too brief for the poller to see).
    #[serde(default)]
    pub fence_log: Vec<FenceLogged>,
    /// When the run's faults ended (the checker's end of time for open intervals).
    pub end_ns: Nanos,
}

/// A shared, append-only log of send events, written by every writer task.
#[derive(Debug, Clone)]
pub struct Recorder {
    clock: Clock,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Recorder {
    /// An empty recorder on `clock`.
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            ops: Arc::default(),
        }
    }

    /// The run's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Records one event, stamped now.
    pub fn record(&self, process: u32, kind: OpType, partition: u32, value: u64) -> OpBuilder<'_> {
        OpBuilder {
            recorder: self,
            op: Op {
                t_ns: self.clock.now(),
                process,
                kind,
                partition,
                value,
                offset: None,
                err: None,
            },
        }
    }

    /// How many sends were acknowledged at or after `since`.
    pub fn acked_since(&self, since: Nanos) -> usize {
        let ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.iter()
            .rev()
            .take_while(|o| o.t_ns >= since)
            .filter(|o| o.kind == OpType::Ok)
            .count()
    }

    /// Every event recorded so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// An event about to be recorded: add an offset or an error, then [`OpBuilder::done`].
#[must_use = "call done() to record the event"]
pub struct OpBuilder<'a> {
    recorder: &'a Recorder,
    op: Op,
}

impl OpBuilder<'_> {
    /// The acknowledged offset.
    pub fn offset(mut self, offset: i64) -> Self {
        self.op.offset = Some(offset);
        self
    }

    /// The error.
    pub fn err(mut self, err: impl ToString) -> Self {
        self.op.err = Some(err.to_string());
        self
    }

    /// Appends the event.
    pub fn done(self) {
        let mut ops = self.recorder.ops.lock().unwrap_or_else(|e| e.into_inner());
        ops.push(self.op);
    }
}

/// Writes `items` to `path`, one JSON object a line.
///
/// # Errors
///
/// If the file cannot be written.
pub fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for item in items {
        serde_json::to_writer(&mut out, item)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Writes the history's files into `dir`: `history.jsonl` (sends and metadata samples in time
/// order, each line tagged with `"f"`), `nemesis.jsonl` (faults), `final.json` (final reads,
/// high watermarks, replicas' batches, fence decisions from the logs, the end of the faults).
///
/// # Errors
///
/// If a file cannot be written.
pub fn write_history(dir: &Path, history: &History) -> Result<()> {
    #[derive(Serialize)]
    #[serde(tag = "f", rename_all = "lowercase")]
    enum Line<'a> {
        Send(&'a Op),
        Meta(&'a MetaSample),
    }
    let mut lines: Vec<(Nanos, Line<'_>)> = history
        .ops
        .iter()
        .map(|o| (o.t_ns, Line::Send(o)))
        .chain(history.meta.iter().map(|m| (m.t_ns, Line::Meta(m))))
        .collect();
    lines.sort_by_key(|(t, _)| *t);
    let lines: Vec<Line<'_>> = lines.into_iter().map(|(_, l)| l).collect();
    write_jsonl(&dir.join("history.jsonl"), &lines)?;
    write_jsonl(&dir.join("nemesis.jsonl"), &history.faults)?;
    #[derive(Serialize)]
    struct Final<'a> {
        final_hw: &'a BTreeMap<u32, i64>,
        final_reads: &'a BTreeMap<u32, Vec<(i64, u64)>>,
        replicas: &'a Replicas,
        fence_log: &'a [FenceLogged],
        end_ns: Nanos,
    }
    let file = std::fs::File::create(dir.join("final.json"))?;
    serde_json::to_writer(
        std::io::BufWriter::new(file),
        &Final {
            final_hw: &history.final_hw,
            final_reads: &history.final_reads,
            replicas: &history.replicas,
            fence_log: &history.fence_log,
            end_ns: history.end_ns,
        },
    )?;
    Ok(())
}
