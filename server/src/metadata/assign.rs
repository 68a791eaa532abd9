//! Replica placement: [`assign_replicas`], a pure function the controller calls before it
//! proposes a `CreateTopic` or `CreatePartitions` command.
//!
//! It is Kafka's rack-unaware round-robin: the first replica (the preferred leader) of partition
//! `p` is broker `(start + p) mod n`, and the followers sit at a shift from it that grows by one
//! every `n` partitions, so both leaders and followers spread evenly. The caller picks `start`
//! (Kafka draws it at random); keeping chance out of this function keeps it testable and keeps
//! `apply` deterministic. Knows nothing of Raft, storage or the network.

use super::state::BrokerId;

/// Why no assignment could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    /// Register (or unfence) a broker first.
    #[error("no live brokers to place replicas on")]
    NoBrokers,
    /// A topic needs at least one partition.
    #[error("the partition count must be at least 1")]
    ZeroPartitions,
    /// A partition needs at least one replica.
    #[error("the replication factor must be at least 1")]
    ZeroReplicationFactor,
    /// Lower the replication factor or add brokers.
    #[error("replication factor {replication_factor} is larger than the {brokers} live brokers")]
    ReplicationFactorTooLarge {
        replication_factor: u32,
        brokers: usize,
    },
    /// The broker list names one broker twice.
    #[error("broker {0} is listed twice")]
    DuplicateBroker(BrokerId),
}

/// Places `replication_factor` replicas for each of `partitions` partitions on `brokers`.
///
/// `brokers` is sorted first, so the result depends only on the set of brokers and `start`.
///
/// # Errors
///
/// [`AssignError`] when the request cannot be met (no brokers, zero partitions or replicas, a
/// replication factor above the number of brokers, a broker listed twice).
pub fn assign_replicas(
    brokers: &[BrokerId],
    partitions: u32,
    replication_factor: u32,
    start: u32,
) -> Result<Vec<Vec<BrokerId>>, AssignError> {
    let mut sorted = brokers.to_vec();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(AssignError::DuplicateBroker(w[0]));
    }
    let n = sorted.len();
    if n == 0 {
        return Err(AssignError::NoBrokers);
    }
    if partitions == 0 {
        return Err(AssignError::ZeroPartitions);
    }
    if replication_factor == 0 {
        return Err(AssignError::ZeroReplicationFactor);
    }
    let rf = usize::try_from(replication_factor).unwrap_or(usize::MAX);
    if rf > n {
        return Err(AssignError::ReplicationFactorTooLarge {
            replication_factor,
            brokers: n,
        });
    }
    let start = usize::try_from(start).unwrap_or(0) % n;
    let mut shift = start;
    let mut out = Vec::with_capacity(usize::try_from(partitions).unwrap_or(0));
    for p in 0..usize::try_from(partitions).unwrap_or(usize::MAX) {
        if p > 0 && p % n == 0 {
            shift += 1;
        }
        let first = (p + start) % n;
        let mut replicas = Vec::with_capacity(rf);
        replicas.push(sorted[first]);
        // With n == 1, rf is 1 and this loop does not run, so `n - 1` is never zero here.
        for j in 0..rf - 1 {
            let index = (first + 1 + (shift + j) % (n - 1)) % n;
            replicas.push(sorted[index]);
        }
        out.push(replicas);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// (first-replica count, total replica count) per broker.
    fn spread(assignment: &[Vec<BrokerId>]) -> BTreeMap<BrokerId, (usize, usize)> {
        let mut m = BTreeMap::new();
        for replicas in assignment {
            m.entry(replicas[0]).or_insert((0, 0)).0 += 1;
            for &b in replicas {
                m.entry(b).or_insert((0, 0)).1 += 1;
            }
        }
        m
    }

    #[test]
    fn spreads_leaders_and_replicas_evenly() {
        // (brokers, partitions, rf, first replicas per broker, replicas per broker)
        let table: &[(&[u32], u32, u32, usize, usize)] = &[
            (&[1, 2, 3], 6, 3, 2, 6),
            (&[3, 1, 2], 6, 3, 2, 6),
            (&[1, 2, 3], 3, 1, 1, 1),
            (&[1, 2, 3, 4], 8, 2, 2, 4),
            (&[1, 2, 3, 4, 5], 10, 3, 2, 6),
            (&[7], 4, 1, 4, 4),
        ];
        for &(brokers, partitions, rf, leaders, replicas) in table {
            for start in 0..5 {
                let a = assign_replicas(brokers, partitions, rf, start).expect("valid request");
                assert_eq!(a.len(), partitions as usize);
                for r in &a {
                    assert_eq!(r.len(), rf as usize, "{brokers:?} {r:?}");
                    let distinct: BTreeSet<_> = r.iter().collect();
                    assert_eq!(distinct.len(), r.len(), "duplicate replica in {r:?}");
                }
                let s = spread(&a);
                assert_eq!(s.len(), brokers.len(), "{brokers:?} start {start}: {a:?}");
                for (b, &(l, t)) in &s {
                    assert_eq!((l, t), (leaders, replicas), "broker {b} in {a:?}");
                }
            }
        }
    }

    #[test]
    fn deterministic_for_the_same_input() {
        let a = assign_replicas(&[1, 2, 3, 4], 12, 3, 2);
        assert_eq!(a, assign_replicas(&[4, 3, 2, 1], 12, 3, 2));
    }

    #[test]
    fn refuses_impossible_requests() {
        let table: &[(&[u32], u32, u32, AssignError)] = &[
            (
                &[1, 2, 3],
                6,
                4,
                AssignError::ReplicationFactorTooLarge {
                    replication_factor: 4,
                    brokers: 3,
                },
            ),
            (&[], 1, 1, AssignError::NoBrokers),
            (&[1], 0, 1, AssignError::ZeroPartitions),
            (&[1], 1, 0, AssignError::ZeroReplicationFactor),
            (&[1, 2, 1], 1, 1, AssignError::DuplicateBroker(1)),
        ];
        for (brokers, partitions, rf, want) in table {
            assert_eq!(
                assign_replicas(brokers, *partitions, *rf, 0).as_ref(),
                Err(want),
                "{brokers:?} p={partitions} rf={rf}"
            );
        }
    }
}
