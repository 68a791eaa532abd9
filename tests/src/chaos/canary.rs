//! The canaries: runs where the product is made to lose data on purpose, so that the checker is
//! seen to catch it (Jepsen's "tests for tests"). A checker that reports 0 here is broken.
//!
//! - [`unclean_election`]: a topic with `unclean_leader_election = true` and
//!   `min_insync_replicas = 1`; both followers of partition 0 are cut off until the ISR is the
//!   leader alone, the leader acknowledges writes alone, then it is SIGKILLed and the followers
//!   healed, so an out-of-sync follower leads. The writes only the old leader had are lost.
//! - The damaged segment ([`super::replicas::truncate_first_segment`], used by the runner):
//!   once the cluster has stopped, one replica's first segment is cut in half.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::history::{Clock, FaultRecord, Recorder};
use super::topology::{ChaosCluster, Probe};
use crate::wait_for;

/// How long each step may take.
const STEP: Duration = Duration::from_secs(60);

/// How many writes the canary lets through at each stage.
const WRITES: usize = 30;

/// Runs the unclean-election canary on partition 0; returns the two faults it injected.
///
/// # Errors
///
/// If a step does not happen in time (the ISR does not shrink, no follower is elected).
pub async fn unclean_election(
    cc: &mut ChaosCluster,
    probe: &Probe,
    recorder: &Recorder,
) -> Result<Vec<FaultRecord>> {
    let clock = recorder.clock();
    let view = probe.controller_view().await.context("no controller")?;
    let p0 = view.partitions.first().context("no partition 0")?;
    let leader = p0.leader_id;
    let followers: Vec<u32> = p0
        .replicas
        .iter()
        .copied()
        .filter(|&r| r != leader)
        .collect();
    if leader == 0 || followers.len() != 2 {
        bail!("the canary needs a led partition with 3 replicas: {p0:?}");
    }
    eprintln!("chaos: canary: isolating followers {followers:?} of leader {leader}");
    let isolate_ns = clock.now();
    for &f in &followers {
        cc.cluster.isolate(&cc.net, f)?;
    }
    wait_for("the ISR to shrink to the leader alone", STEP, || async {
        let view = probe.controller_view().await?;
        (view.partitions.first()?.isr == [leader]).then_some(())
    })
    .await?;
    wait_acks(recorder, clock, WRITES).await?;
    eprintln!("chaos: canary: killing leader {leader}, healing its followers");
    cc.cluster.kill(leader);
    let kill_ns = clock.now();
    cc.net.heal()?;
    let new = wait_for("an out-of-sync follower to lead", STEP, || async {
        let view = probe.controller_view().await?;
        let l = view.partitions.first()?.leader_id;
        followers.contains(&l).then_some(l)
    })
    .await?;
    eprintln!("chaos: canary: broker {new} leads uncleanly; restarting {leader}");
    wait_acks(recorder, clock, WRITES).await?;
    tokio::task::block_in_place(|| cc.cluster.restart(leader))?;
    let record = |index, kind: &str, targets, start_ns, heal_ns| FaultRecord {
        index,
        kind: kind.to_owned(),
        targets,
        chosen_as: "canary".to_owned(),
        start_ns,
        heal_ns: Some(heal_ns),
    };
    Ok(vec![
        record(0, "isolate", followers, isolate_ns, kill_ns),
        record(1, "kill", vec![leader], kill_ns, clock.now()),
    ])
}

/// Waits until `n` more sends have been acknowledged than now.
async fn wait_acks(recorder: &Recorder, clock: Clock, n: usize) -> Result<()> {
    let since = clock.now();
    wait_for("acknowledged writes", STEP, || async {
        (recorder.acked_since(since) >= n).then_some(())
    })
    .await
}
