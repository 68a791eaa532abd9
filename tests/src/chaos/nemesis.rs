//! The nemesis: a fault schedule drawn from a seeded RNG ([`plan`], a pure function, so a seed
//! names a run), and the executor that injects each fault into the cluster, heals it, and
//! records both in a [`FaultRecord`] (reliability.md §4.5, N1, N4, N5, N6).
//!
//! Faults never overlap: one at a time, healed, then the executor waits (bounded) until the
//! controller lists every broker alive and every replica in sync, then a quiet gap. So a
//! majority of brokers is always alive and connected, and any unavailability is the fault's
//! cost, not a pile-up.
//!
//! Targets are drawn as roles (a random broker, a partition's leader, the controller) and
//! resolved when the fault starts, from the controller's view.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::history::{Clock, FaultRecord};
use super::topology::{ChaosCluster, Probe};

/// A fault's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL, restarted after the fault's duration (1–5 s).
    Kill,
    /// SIGSTOP, SIGCONT after the fault's duration (2–12 s).
    Pause,
    /// Cut one broker off from its peers (clients still reach it) for 3–10 s.
    Isolate,
    /// Cut a minority (the target and, with 5 brokers, another) off from the majority.
    Split,
    /// SIGTERM (graceful shutdown), started again after 0–2 s.
    CleanRestart,
    /// SIGKILL and start again at once.
    UncleanRestart,
}

impl FaultKind {
    /// The name written in `nemesis.jsonl`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Pause => "pause",
            Self::Isolate => "isolate",
            Self::Split => "split",
            Self::CleanRestart => "clean-restart",
            Self::UncleanRestart => "unclean-restart",
        }
    }

    /// How long the fault lasts, in ms: `(min, max)`.
    fn duration_ms(self) -> (u64, u64) {
        match self {
            Self::Kill => (1_000, 5_000),
            Self::Pause => (2_000, 12_000),
            Self::Isolate | Self::Split => (3_000, 10_000),
            Self::CleanRestart => (0, 2_000),
            Self::UncleanRestart => (0, 0),
        }
    }
}

/// Who a fault hits, resolved when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Broker `ids[index % n]`.
    Random(u32),
    /// The leader of this partition.
    Leader(u32),
    /// The controller.
    Controller,
}

/// One fault of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFault {
    /// What.
    pub kind: FaultKind,
    /// Whom.
    pub target: Target,
    /// How long before the heal.
    pub duration: Duration,
    /// Quiet time after the cluster is whole again.
    pub gap: Duration,
    /// Extra entropy for choices made at injection (a split's second member).
    pub salt: u64,
}

/// SplitMix64: a tiny, well-mixed seeded generator; enough for choosing faults.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// `count` faults drawn from `kinds` with `seed`, for a topic of `partitions` partitions.
pub fn plan(kinds: &[FaultKind], seed: u64, count: usize, partitions: u32) -> Vec<PlannedFault> {
    assert!(!kinds.is_empty(), "a schedule draws from at least one kind");
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let kind = kinds[rng.range(0, kinds.len() as u64 - 1) as usize];
            let target = match rng.range(0, 2) {
                0 => Target::Random(rng.range(0, 1 << 16) as u32),
                1 => Target::Leader(rng.range(0, u64::from(partitions.max(1)) - 1) as u32),
                _ => Target::Controller,
            };
            let (lo, hi) = kind.duration_ms();
            PlannedFault {
                kind,
                target,
                duration: Duration::from_millis(rng.range(lo, hi)),
                gap: Duration::from_millis(rng.range(2_000, 5_000)),
                salt: rng.next_u64(),
            }
        })
        .collect()
}

/// Injects faults into a cluster and records them.
pub struct Nemesis<'a> {
    /// The cluster, held mutably: only the nemesis kills, pauses and restarts.
    pub cluster: &'a mut ChaosCluster,
    /// For resolving targets and waiting for health.
    pub probe: Probe,
    /// The run's time base.
    pub clock: Clock,
    /// Every fault injected so far.
    pub records: Vec<FaultRecord>,
}

/// Quiet time before the first fault.
const QUIET_START: Duration = Duration::from_secs(2);

/// How long after a heal the nemesis waits for a whole cluster before going on anyway.
const HEALTH_WAIT: Duration = Duration::from_secs(20);

impl Nemesis<'_> {
    /// Runs `schedule` until it is done or the clock passes `until_ns`; every fault started is
    /// healed before this returns.
    ///
    /// # Errors
    ///
    /// If a fault cannot be injected or healed (a broker does not restart, `nft` fails).
    pub async fn run(&mut self, schedule: &[PlannedFault], until_ns: u64) -> Result<()> {
        // A quiet start, so that every partition has acknowledged writes before the first fault.
        tokio::time::sleep(QUIET_START).await;
        for (index, fault) in schedule.iter().enumerate() {
            if self.clock.now() >= until_ns {
                break;
            }
            self.inject(index, fault).await?;
            let healthy = self.probe.wait_healthy(HEALTH_WAIT).await;
            if !healthy {
                eprintln!("chaos: cluster not whole {HEALTH_WAIT:?} after healing fault {index}");
            }
            tokio::time::sleep(fault.gap).await;
        }
        Ok(())
    }

    /// The broker `target` names now, and how it was chosen.
    pub async fn resolve(&self, target: Target) -> (u32, String) {
        let ids = self.probe.ids();
        let fallback = |i: u32| ids[i as usize % ids.len()];
        match target {
            Target::Random(i) => (fallback(i), "random".to_owned()),
            Target::Controller => match self.probe.controller_view().await {
                Some(v) => (v.controller, "controller".to_owned()),
                None => (fallback(0), "random (no controller)".to_owned()),
            },
            Target::Leader(p) => {
                let view = self.probe.controller_view().await;
                let leader = view
                    .and_then(|v| v.partitions.get(p as usize).map(|d| d.leader_id))
                    .filter(|&l| l != 0);
                match leader {
                    Some(l) => (l, format!("leader of p{p}")),
                    None => (fallback(p), format!("random (p{p} has no leader)")),
                }
            }
        }
    }

    /// Injects one fault, waits its duration, heals it, and records it.
    async fn inject(&mut self, index: usize, fault: &PlannedFault) -> Result<()> {
        let (target, chosen_as) = self.resolve(fault.target).await;
        let targets = match fault.kind {
            FaultKind::Split => self.minority(target, fault.salt),
            _ => vec![target],
        };
        let start_ns = self.clock.now();
        eprintln!(
            "chaos: fault {index}: {} {targets:?} ({chosen_as}) for {:?}",
            fault.kind.name(),
            fault.duration
        );
        self.start(fault.kind, &targets)?;
        tokio::time::sleep(fault.duration).await;
        self.heal(fault.kind, &targets)?;
        self.records.push(FaultRecord {
            index,
            kind: fault.kind.name().to_owned(),
            targets,
            chosen_as,
            start_ns,
            heal_ns: Some(self.clock.now()),
        });
        Ok(())
    }

    /// The minority side of a split: `target` and, in a cluster of 5 or more, others drawn with
    /// `salt`, up to `(n - 1) / 2` brokers.
    fn minority(&self, target: u32, salt: u64) -> Vec<u32> {
        let ids = self.probe.ids();
        let size = (ids.len() - 1) / 2;
        let mut rng = Rng::new(salt);
        let mut side = vec![target];
        let mut others: Vec<u32> = ids.into_iter().filter(|&i| i != target).collect();
        while side.len() < size && !others.is_empty() {
            let i = rng.range(0, others.len() as u64 - 1) as usize;
            side.push(others.remove(i));
        }
        side
    }

    fn start(&mut self, kind: FaultKind, targets: &[u32]) -> Result<()> {
        let c = &mut self.cluster;
        match kind {
            FaultKind::Kill => targets.iter().for_each(|&t| c.cluster.kill(t)),
            FaultKind::Pause => {
                for &t in targets {
                    c.cluster.pause(t)?;
                }
            }
            FaultKind::Isolate | FaultKind::Split => {
                let majority: Vec<u32> = c.cluster.ids().filter(|i| !targets.contains(i)).collect();
                c.cluster.split(&c.net, targets, &majority)?;
            }
            FaultKind::CleanRestart => {
                for &t in targets {
                    tokio::task::block_in_place(|| c.cluster.stop(t))
                        .with_context(|| format!("stopping broker {t} gracefully"))?;
                }
            }
            FaultKind::UncleanRestart => targets.iter().for_each(|&t| c.cluster.kill(t)),
        }
        Ok(())
    }

    fn heal(&mut self, kind: FaultKind, targets: &[u32]) -> Result<()> {
        let c = &mut self.cluster;
        match kind {
            FaultKind::Pause => {
                for &t in targets {
                    c.cluster.resume(t)?;
                }
            }
            FaultKind::Isolate | FaultKind::Split => c.net.heal()?,
            FaultKind::Kill | FaultKind::CleanRestart | FaultKind::UncleanRestart => {
                for &t in targets {
                    tokio::task::block_in_place(|| c.cluster.restart(t))
                        .with_context(|| format!("restarting broker {t}"))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_names_one_schedule() {
        let kinds = [FaultKind::Kill, FaultKind::Pause, FaultKind::Split];
        assert_eq!(plan(&kinds, 7, 20, 3), plan(&kinds, 7, 20, 3));
        assert_ne!(plan(&kinds, 7, 20, 3), plan(&kinds, 8, 20, 3));
    }

    #[test]
    fn durations_stay_in_their_ranges_and_every_kind_is_drawn() {
        let kinds = [
            FaultKind::Kill,
            FaultKind::Pause,
            FaultKind::Isolate,
            FaultKind::Split,
            FaultKind::CleanRestart,
            FaultKind::UncleanRestart,
        ];
        let schedule = plan(&kinds, 42, 500, 3);
        for f in &schedule {
            let (lo, hi) = f.kind.duration_ms();
            let ms = f.duration.as_millis() as u64;
            assert!((lo..=hi).contains(&ms), "{f:?}");
            assert!((2_000..=5_000).contains(&(f.gap.as_millis() as u64)));
            if let Target::Leader(p) = f.target {
                assert!(p < 3);
            }
        }
        for k in kinds {
            assert!(schedule.iter().any(|f| f.kind == k), "{k:?} never drawn");
        }
        assert!(schedule.iter().any(|f| f.target == Target::Controller));
    }
}
