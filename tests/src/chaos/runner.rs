//! One scenario from start to verdict: start the cluster, create the topic, run the writers and
//! the poller while the nemesis (or a canary) does its work, heal, read everything back, stop
//! the cluster cleanly, read every replica's files, check, and write the run's files into
//! `out`: `history.jsonl`, `nemesis.jsonl`, `final.json`, `results.json`, `broker-<id>.log`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cairn_client::NewTopic;
use cairn_proto::v1::TopicConfig;

use super::availability::check_availability;
use super::checker::check_safety;
use super::history::{Clock, FaultRecord, History, Recorder, Replicas, write_history};
use super::nemesis::{FaultKind, Nemesis, plan};
use super::report::{Expect, Results};
use super::topology::{ChaosCluster, Probe, SESSION};
use super::{canary, replicas, workload};

/// The topic every scenario writes.
pub const TOPIC: &str = "chaos";

/// A scenario: which faults, on how many brokers, and what it must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// SIGKILL a random broker, a partition leader or the controller; restart 1–5 s later.
    Kill,
    /// SIGSTOP one (the controller included) for 2–12 s.
    Pause,
    /// Isolate one broker (the controller included), or split off a minority.
    Partition,
    /// Everything above plus clean and unclean restarts.
    Mixed,
    /// Unclean election with min ISR 1: must report lost writes.
    CanaryUnclean,
    /// A replica's segment cut in half after the run: must report divergence.
    CanarySegment,
}

impl Scenario {
    /// Every scenario, in the order the script runs them.
    pub const ALL: [Self; 6] = [
        Self::Kill,
        Self::Pause,
        Self::Partition,
        Self::Mixed,
        Self::CanaryUnclean,
        Self::CanarySegment,
    ];

    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Partition => "partition",
            Self::Mixed => "mixed",
            Self::CanaryUnclean => "canary-unclean",
            Self::CanarySegment => "canary-segment",
        }
    }

    /// The scenario named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The faults the nemesis draws from (none for the canaries, which script their own).
    pub fn kinds(self) -> &'static [FaultKind] {
        use FaultKind::*;
        match self {
            Self::Kill => &[Kill],
            Self::Pause => &[Pause],
            Self::Partition => &[Isolate, Split],
            Self::Mixed => &[Kill, Pause, Isolate, Split, CleanRestart, UncleanRestart],
            Self::CanaryUnclean | Self::CanarySegment => &[],
        }
    }

    /// Brokers in the cluster: 5 for the unclean canary, so that a majority stays connected
    /// while both followers of a partition are cut off.
    pub fn brokers(self) -> usize {
        if self == Self::CanaryUnclean { 5 } else { 3 }
    }

    /// Partitions of the topic.
    pub fn partitions(self) -> u32 {
        if self == Self::CanaryUnclean { 1 } else { 3 }
    }

    /// What the run must show.
    pub fn expect(self) -> Expect {
        match self {
            Self::CanaryUnclean => Expect::LostWrites,
            Self::CanarySegment => Expect::Divergence,
            _ => Expect::Clean,
        }
    }

    /// The topic's settings: RF 3, min ISR 2 and clean elections, except for the unclean
    /// canary; 1 MiB segments so that segments roll.
    fn topic_config(self) -> TopicConfig {
        let unclean = self == Self::CanaryUnclean;
        TopicConfig {
            segment_bytes: Some(1 << 20),
            min_insync_replicas: Some(if unclean { 1 } else { 2 }),
            unclean_leader_election: Some(unclean),
            ..TopicConfig::default()
        }
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The scenario.
    pub scenario: Scenario,
    /// The nemesis seed.
    pub seed: u64,
    /// How long faults are injected (the quiet run of the segment canary).
    pub duration: Duration,
    /// Where the run's files go.
    pub out: PathBuf,
}

/// Writers per partition.
const WRITERS_PER_PARTITION: u32 = 2;

/// How long writers may take to finish their last send once told to stop.
const WRITER_DRAIN: Duration = Duration::from_secs(90);

/// Runs one scenario and checks it; writes its files into `config.out`.
///
/// # Errors
///
/// If the cluster cannot be set up, a fault cannot be injected or healed, or a file cannot be
/// written. Anomalies are not errors: they are in the results.
pub async fn run(config: &RunConfig) -> Result<Results> {
    let s = config.scenario;
    std::fs::create_dir_all(&config.out)?;
    let mut cc = ChaosCluster::start(s.brokers(), &config.out).await?;
    let bootstrap = cc.cluster.bootstrap();
    let topic = NewTopic::new(TOPIC, s.partitions())
        .replication_factor(3)
        .config(s.topic_config());
    cc.cluster
        .client()
        .await?
        .admin()
        .create_topic(topic)
        .await?;
    let probe = cc.probe(TOPIC);
    if !probe.wait_healthy(Duration::from_secs(60)).await {
        bail!("the cluster did not become whole after creating {TOPIC}");
    }
    let recorder = Recorder::new(Clock::start());
    let clock = recorder.clock();
    let stop_writers = Arc::new(AtomicBool::new(false));
    let stop_poller = Arc::new(AtomicBool::new(false));
    let partitions = s.partitions();
    let writers = workload::spawn_writers(
        bootstrap.clone(),
        TOPIC,
        partitions,
        WRITERS_PER_PARTITION,
        &recorder,
        &stop_writers,
    );
    let poller = workload::spawn_poller(probe.clone(), clock, stop_poller.clone());
    let faults = inject(config, &mut cc, &probe, &recorder).await?;
    stop_writers.store(true, Ordering::Relaxed);
    drain(writers).await;
    let end_ns = clock.now();
    if !probe.wait_healthy(Duration::from_secs(30)).await {
        eprintln!("chaos: the cluster is not whole 30 s after the last fault");
    }
    let (final_reads, final_hw) =
        workload::final_read(&bootstrap, TOPIC, partitions, Duration::from_secs(60)).await?;
    stop_poller.store(true, Ordering::Relaxed);
    let meta = poller.await.context("the metadata poller panicked")?;
    // Fences decided once the brokers are told to stop are the shutdown's, not the faults'.
    let stop_ns = clock.now();
    let replicas = stop_and_read_replicas(&mut cc, s)?;
    let ids: Vec<u32> = cc.cluster.ids().collect();
    let mut fence_log = super::brokerlog::fence_decisions(&config.out, &ids, clock);
    fence_log.retain(|f| f.t_ns < stop_ns);
    let history = History {
        ops: recorder.ops(),
        meta,
        faults,
        final_reads,
        final_hw,
        replicas,
        fence_log,
        end_ns,
    };
    finish(config, &history)
}

/// Runs the scenario's nemesis, or its canary, until its duration has passed.
async fn inject(
    config: &RunConfig,
    cc: &mut ChaosCluster,
    probe: &Probe,
    recorder: &Recorder,
) -> Result<Vec<FaultRecord>> {
    let clock = recorder.clock();
    match config.scenario {
        Scenario::CanaryUnclean => canary::unclean_election(cc, probe, recorder).await,
        Scenario::CanarySegment => {
            tokio::time::sleep(config.duration).await;
            Ok(Vec::new())
        }
        s => {
            let schedule = plan(s.kinds(), config.seed, 10_000, s.partitions());
            let until = clock.now() + u64::try_from(config.duration.as_nanos()).unwrap_or(u64::MAX);
            let mut nemesis = Nemesis {
                cluster: cc,
                probe: probe.clone(),
                clock,
                records: Vec::new(),
            };
            nemesis.run(&schedule, until).await?;
            Ok(nemesis.records)
        }
    }
}

/// Waits for the writers to finish their last sends; aborts those still stuck after
/// [`WRITER_DRAIN`] (their last send stays without an outcome: indeterminate).
async fn drain(writers: Vec<tokio::task::JoinHandle<Result<()>>>) {
    let deadline = tokio::time::Instant::now() + WRITER_DRAIN;
    for w in writers {
        let abort = w.abort_handle();
        match tokio::time::timeout_at(deadline, w).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("chaos: a writer failed: {e:#}"),
            Ok(Err(e)) => eprintln!("chaos: a writer panicked: {e}"),
            Err(_) => {
                eprintln!("chaos: a writer was still sending after {WRITER_DRAIN:?}");
                abort.abort();
            }
        }
    }
}

/// Stops every broker gracefully (so every log is flushed), damages a replica for the segment
/// canary, and reads every replica's batches.
fn stop_and_read_replicas(cc: &mut ChaosCluster, s: Scenario) -> Result<Replicas> {
    let ids: Vec<u32> = cc.cluster.ids().collect();
    for (id, outcome) in tokio::task::block_in_place(|| cc.cluster.stop_all()) {
        if let Err(e) = outcome {
            eprintln!("chaos: stopping broker {id}: {e:#}");
        }
    }
    let dirs: Vec<(u32, PathBuf)> = ids
        .iter()
        .map(|&id| (id, cc.cluster.broker(id).data_dir().to_owned()))
        .collect();
    if s == Scenario::CanarySegment {
        let (path, len) = replicas::truncate_first_segment(&dirs[0].1, TOPIC, 0)?;
        eprintln!("chaos: canary: cut {} to {len} bytes", path.display());
    }
    replicas::all_replicas(&dirs, TOPIC, s.partitions())
}

/// Checks the history, writes the run's files, prints the verdict line.
fn finish(config: &RunConfig, history: &History) -> Result<Results> {
    write_history(&config.out, history)?;
    let safety = check_safety(history);
    let session = u64::try_from(SESSION.as_nanos()).unwrap_or(u64::MAX);
    let availability = check_availability(history, session);
    let s = config.scenario;
    let results = Results::new(
        s.name(),
        config.seed,
        config.duration.as_secs(),
        s.brokers(),
        s.expect(),
        safety,
        availability,
    );
    results.write(&config.out)?;
    println!("{}", results.verdict);
    Ok(results)
}
