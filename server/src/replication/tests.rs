//! The truncation scenarios of Kafka KIP-101 and KIP-279, simulated step by step.
//!
//! Each replica is a model log (one record per offset, each with the epoch it was written in),
//! an in-memory [`LeaderEpochCache`], a high watermark and how much of its log is durable. The
//! steps are the ones the KIPs describe; after each failover the follower truncates with
//! [`truncation_offset`] (asking the leader with [`LeaderEpochCache::end_offset_for`]) and then
//! fetches, and the logs must agree offset by offset. Each scenario also replays the old rule
//! (truncate to the high watermark, or KIP-101 without KIP-279) and shows it loses or diverges,
//! so the scenario really exercises what it claims to.

use super::*;

/// One record: the epoch of the leader that wrote it, and a value unique in the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    epoch: i32,
    value: &'static str,
}

/// A replica of one partition in the model.
struct Replica {
    name: &'static str,
    /// Offset `i` holds `log[i]`; the log starts at 0.
    log: Vec<Record>,
    /// How many records survive a crash (fsynced).
    durable: usize,
    cache: LeaderEpochCache,
    /// The high watermark this replica knows (checkpointed: it survives a crash).
    hw: i64,
}

impl Replica {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            log: Vec::new(),
            durable: 0,
            cache: LeaderEpochCache::in_memory(),
            hw: 0,
        }
    }

    fn leo(&self) -> i64 {
        self.log.len() as i64
    }

    /// Takes leadership in `epoch`: records it at the log end, as a Kafka leader does.
    fn lead(&mut self, epoch: i32) {
        self.cache.assign(epoch, self.leo()).unwrap();
    }

    /// Appends `value` as the leader in its current epoch; returns its offset.
    fn append(&mut self, value: &'static str) -> i64 {
        let epoch = self.cache.latest_epoch().expect("a leader has an epoch");
        self.log.push(Record { epoch, value });
        self.leo() - 1
    }

    /// One fetch from `leader`: copies what it lacks, recording each new epoch, and learns the
    /// leader's high watermark.
    fn fetch_from(&mut self, leader: &Replica) {
        for record in &leader.log[self.log.len()..] {
            self.cache.assign(record.epoch, self.leo()).unwrap();
            self.log.push(*record);
        }
        self.hw = leader.hw.min(self.leo());
    }

    /// As the leader: advances the high watermark over the ISR followers' log ends.
    fn update_hw(&mut self, isr_follower_leos: &[i64]) {
        let candidate = high_watermark(self.leo(), isr_follower_leos.iter().copied());
        self.hw = advance(self.hw, candidate);
    }

    fn flush(&mut self) {
        self.durable = self.log.len();
    }

    /// Power loss and restart: the log keeps what was durable, and reopening puts the epoch
    /// cache back in step with it.
    fn crash(&mut self) {
        self.log.truncate(self.durable);
        self.cache.truncate_from_end(self.leo());
        self.hw = self.hw.min(self.leo());
    }

    fn truncate(&mut self, offset: i64) {
        self.log.truncate(offset.max(0) as usize);
        self.durable = self.durable.min(self.log.len());
        self.cache.truncate_from_end(self.leo());
        self.hw = self.hw.min(self.leo());
    }

    /// Becomes a follower of `leader`: the epoch exchange, truncating as it goes. Returns
    /// every step taken.
    fn truncate_for(&mut self, leader: &Replica) -> Vec<Truncation> {
        let mut steps = Vec::new();
        let mut asked = self.cache.latest_epoch();
        loop {
            assert!(steps.len() < 10, "{}: the exchange must end", self.name);
            let answer = asked.and_then(|e| leader.cache.end_offset_for(e, leader.leo()));
            let step = truncation_offset(&self.cache, self.leo(), answer);
            steps.push(step);
            match step {
                Truncation::To(offset) => {
                    self.truncate(offset);
                    return steps;
                }
                Truncation::AskAgain { epoch } => asked = Some(epoch),
                Truncation::StartOver => {
                    self.truncate(0);
                    return steps;
                }
                Truncation::InvalidAnswer => panic!("{}: invalid answer {answer:?}", self.name),
            }
        }
    }

    /// The same replica, to replay an alternative history on.
    fn copy(&self) -> Replica {
        Replica {
            name: self.name,
            log: self.log.clone(),
            durable: self.durable,
            cache: self.cache.clone(),
            hw: self.hw,
        }
    }

    fn values(&self) -> Vec<&'static str> {
        self.log.iter().map(|r| r.value).collect()
    }
}

/// The two logs hold the same record at every offset, and each epoch cache describes its log.
fn assert_converged(a: &Replica, b: &Replica) {
    for offset in 0..a.log.len().max(b.log.len()) {
        assert_eq!(
            a.log.get(offset),
            b.log.get(offset),
            "{} and {} disagree at offset {offset}",
            a.name,
            b.name
        );
    }
    assert_cache_describes_log(a);
    assert_cache_describes_log(b);
}

/// The cache's entries below the log end are exactly where the log's epochs change (a leader
/// may also hold its current epoch at the log end, before its first record).
fn assert_cache_describes_log(r: &Replica) {
    let mut from_log: Vec<(i32, i64)> = Vec::new();
    for (offset, record) in r.log.iter().enumerate() {
        if from_log.last().is_none_or(|&(e, _)| e != record.epoch) {
            from_log.push((record.epoch, offset as i64));
        }
    }
    let cached: Vec<(i32, i64)> = r
        .cache
        .entries()
        .iter()
        .filter(|e| e.start_offset < r.leo())
        .map(|e| (e.epoch, e.start_offset))
        .collect();
    assert_eq!(cached, from_log, "{}'s epoch cache", r.name);
}

/// True if the two logs hold different records at some offset both have.
fn diverged(a: &Replica, b: &Replica) -> bool {
    a.log.iter().zip(&b.log).any(|(x, y)| x != y)
}

/// KIP-101 scenario 1: a follower restarts after replicating a record the leader already
/// counts as acknowledged, but before it learned the new high watermark. Truncating to its
/// own high watermark loses the record once it becomes leader; truncating by epoch keeps it.
#[test]
fn kip_101_scenario_1_a_restarted_follower_keeps_an_acknowledged_record() {
    let (mut a, mut b) = (Replica::new("A"), Replica::new("B"));
    a.lead(0);
    a.append("m0");
    b.fetch_from(&a);
    a.update_hw(&[b.leo()]);
    b.fetch_from(&a);
    assert_eq!((a.hw, b.hw), (1, 1));

    // m1 reaches B; B's next fetch tells A, whose high watermark moves: m1 is acknowledged
    // (acks=all). B has not learned the new watermark yet.
    let m1 = a.append("m1");
    b.fetch_from(&a);
    a.update_hw(&[b.leo()]);
    assert_eq!((a.hw, b.hw), (2, 1));
    a.flush();
    b.flush();

    // B restarts.
    b.crash();
    let mut old_rule = b.copy();
    old_rule.truncate(old_rule.hw);
    assert_eq!(old_rule.leo(), m1, "the old rule loses m1 on B");

    assert_eq!(b.truncate_for(&a), [Truncation::To(2)]);
    assert_eq!(b.values(), ["m0", "m1"]);

    // A dies; B, in the ISR, becomes leader in epoch 1. The acknowledged m1 is still there.
    a.crash();
    b.lead(1);
    b.append("m2");
    assert_eq!(b.log[m1 as usize].value, "m1");

    // A comes back as a follower of B and converges.
    assert_eq!(a.truncate_for(&b), [Truncation::To(2)]);
    a.fetch_from(&b);
    b.update_hw(&[a.leo()]);
    a.fetch_from(&b);
    assert_converged(&a, &b);
    assert_eq!(a.values(), ["m0", "m1", "m2"]);
    assert_eq!((a.hw, b.hw), (3, 3));
}

/// KIP-101 scenario 2: both replicas lose power; the follower had not made the leader's last
/// record durable, comes back first and leads, writing a different record at that offset. The
/// old leader's high watermark covers its own record, so truncating to it keeps a record the
/// new leader never had: the logs diverge for good. By epoch, the old leader drops it.
///
/// (m1 was acknowledged under Kafka's default of not fsyncing; with `fsync = always` B would
/// have had it on disk. The point here is convergence.)
#[test]
fn kip_101_scenario_2_replicas_that_diverged_in_a_double_crash_converge() {
    let (mut a, mut b) = (Replica::new("A"), Replica::new("B"));
    a.lead(0);
    a.append("m0");
    b.fetch_from(&a);
    a.update_hw(&[b.leo()]);
    b.fetch_from(&a);
    a.flush();
    b.flush();

    // m1 is durable on A only; B fetched it but had not fsynced it.
    a.append("m1");
    a.flush();
    b.fetch_from(&a);
    a.update_hw(&[b.leo()]);
    assert_eq!(a.hw, 2);

    // Power failure. B restarts first and is elected leader in epoch 1.
    a.crash();
    b.crash();
    assert_eq!((a.values(), b.values()), (vec!["m0", "m1"], vec!["m0"]));
    b.lead(1);
    b.append("m2");
    b.flush();

    // A comes back as B's follower.
    let mut old_rule = a.copy();
    old_rule.truncate(old_rule.hw);
    old_rule.fetch_from(&b);
    assert!(diverged(&old_rule, &b), "the old rule keeps m1 against m2");

    assert_eq!(a.truncate_for(&b), [Truncation::To(1)]);
    a.fetch_from(&b);
    b.append("m3");
    a.fetch_from(&b);
    b.update_hw(&[a.leo()]);
    a.fetch_from(&b);
    assert_converged(&a, &b);
    assert_eq!(a.values(), ["m0", "m2", "m3"]);
    assert_eq!((a.hw, b.hw), (3, 3));
}

/// KIP-279: a fast double failover. The follower becomes leader and writes, fails before
/// anyone fetched, and the old leader returns to lead again. The returning follower asks where
/// its epoch ends; the leader never had that epoch. Cutting at the leader's answer alone
/// (KIP-101 before KIP-279) keeps the follower's record of the lost epoch; comparing the
/// epoch the leader answered with the follower's own end for it does not.
#[test]
fn kip_279_double_failover_converges_without_divergence() {
    let (mut a, mut b) = (Replica::new("A"), Replica::new("B"));
    a.lead(0);
    a.append("m0");
    b.fetch_from(&a);
    a.update_hw(&[b.leo()]);
    b.fetch_from(&a);
    a.flush();
    b.flush();

    // A writes m1 that B never fetches, and fails.
    a.append("m1");
    a.flush();
    a.crash();

    // B leads epoch 1, writes m2 at the same offset, and fails before anyone fetches it.
    b.lead(1);
    b.append("m2");
    b.flush();
    b.crash();

    // A returns and leads again, in epoch 2, and writes m3.
    a.lead(2);
    a.append("m3");
    a.flush();
    assert_eq!(a.cache.end_offset_for(1, a.leo()), Some((0, 2)));

    // KIP-101 alone: the leader's end offset (2) and the follower's log end (2).
    let mut kip_101_only = b.copy();
    let (_, leader_end) = a.cache.end_offset_for(1, a.leo()).unwrap();
    kip_101_only.truncate(leader_end.min(kip_101_only.leo()));
    kip_101_only.fetch_from(&a);
    assert!(
        diverged(&kip_101_only, &a),
        "KIP-101 alone keeps m2 against m1"
    );

    // B returns as A's follower: A answers epoch 0 ending at 2; B's epoch 0 ends at 1.
    assert_eq!(b.truncate_for(&a), [Truncation::To(1)]);
    b.fetch_from(&a);
    a.update_hw(&[b.leo()]);
    b.fetch_from(&a);
    assert_converged(&a, &b);
    assert_eq!(b.values(), ["m0", "m1", "m3"]);

    // And once more the other way: A fails, B leads epoch 3, A returns and follows.
    a.crash();
    b.lead(3);
    b.append("m4");
    assert_eq!(a.truncate_for(&b), [Truncation::To(3)]);
    a.fetch_from(&b);
    assert_converged(&a, &b);
    assert_eq!(a.values(), ["m0", "m1", "m3", "m4"]);
}

/// KIP-279's second round: the leader answers an epoch the follower does not have, and the
/// follower's own epoch below it must be compared again. X leads epochs 0 and 1, Y leads 2 and
/// 3 (each time nobody fetches), X leads 4. X's answer (epoch 1) is one Y never had, so Y
/// asks again about its own epoch 0, and cuts where that ends on X. Z, which only ever had epoch 0, needs no truncation.
#[test]
fn kip_279_asking_again_converges_three_replicas() {
    let (mut x, mut y, mut z) = (Replica::new("X"), Replica::new("Y"), Replica::new("Z"));
    x.lead(0);
    x.append("a0");
    x.append("a1");
    for r in [&mut y, &mut z] {
        r.fetch_from(&x);
    }
    x.update_hw(&[y.leo(), z.leo()]);
    for r in [&mut x, &mut y, &mut z] {
        r.flush();
    }

    // X is re-elected in epoch 1 and writes b, which nobody fetches; X fails.
    x.lead(1);
    x.append("b");
    x.flush();
    x.crash();
    // Y leads epoch 2 and then 3, writing c and d, which nobody fetches; Y fails.
    y.lead(2);
    y.append("c");
    y.lead(3);
    y.append("d");
    y.flush();
    y.crash();
    // X returns and leads epoch 4.
    x.lead(4);
    x.append("e");

    let mut kip_101_only = y.copy();
    let (_, leader_end) = x.cache.end_offset_for(3, x.leo()).unwrap();
    kip_101_only.truncate(leader_end.min(kip_101_only.leo()));
    kip_101_only.fetch_from(&x);
    assert!(diverged(&kip_101_only, &x), "cutting at X's answer keeps c");

    assert_eq!(
        y.truncate_for(&x),
        [Truncation::AskAgain { epoch: 0 }, Truncation::To(2),]
    );
    assert_eq!(z.truncate_for(&x), [Truncation::To(2)]);
    for r in [&mut y, &mut z] {
        r.fetch_from(&x);
    }
    x.update_hw(&[y.leo(), z.leo()]);
    assert_converged(&x, &y);
    assert_converged(&x, &z);
    assert_eq!(y.values(), ["a0", "a1", "b", "e"]);
    assert_eq!(x.hw, 4);
}

/// A replica whose every epoch is newer than anything the leader has (an unclean election of a
/// replica that missed them) starts over rather than keep records the leader never had.
#[test]
fn a_follower_with_no_epoch_in_common_starts_over() {
    let (mut a, mut b) = (Replica::new("A"), Replica::new("B"));
    // B alone led epochs 3 and 4 (and retention left only those).
    b.lead(3);
    b.append("x0");
    b.lead(4);
    b.append("x1");
    // A, which never saw them, leads epoch 5 with records of its own.
    a.lead(5);
    a.append("y0");
    a.append("y1");
    a.append("y2");
    assert_eq!(a.cache.end_offset_for(4, a.leo()), None);

    assert_eq!(b.truncate_for(&a), [Truncation::StartOver]);
    b.fetch_from(&a);
    assert_converged(&a, &b);
}
