//! A randomised simulation: up to five clients (some static) join, heartbeat, release, leave,
//! restart, crash and rejoin in any order while time passes and partitions are added. After
//! every step no partition has two owners and every client owns only what the group has it
//! hold; at the end, with everyone well-behaved, the group converges to its target.

use proptest::prelude::*;

use super::{Client, check_owners, meta};
use crate::group::{AssignorKind, Group, GroupConfig, MemberState, TopicMetadata};

#[derive(Debug, Clone)]
enum Op {
    /// Client `i` heartbeats (joining first if it is out).
    Heartbeat(usize),
    /// Client `i` finishes revoking.
    Release(usize),
    /// Client `i` leaves; a static one temporarily, to restart under a new member id.
    Leave(usize),
    /// Client `i`'s process dies without a word; it restarts under a new member id.
    Crash(usize),
    /// Time passes; clients' and group's timers fire.
    Tick(i64),
    /// Topic `a` gains a partition.
    AddPartition,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..5usize).prop_map(Op::Heartbeat),
        5 => (0..5usize).prop_map(Op::Release),
        1 => (0..5usize).prop_map(Op::Leave),
        1 => (0..5usize).prop_map(Op::Crash),
        3 => (1..4_000i64).prop_map(Op::Tick),
        1 => Just(Op::AddPartition),
    ]
}

struct Sim {
    config: GroupConfig,
    group: Group,
    clients: Vec<Client>,
    /// Restarts per client, for fresh member ids.
    incarnations: Vec<u32>,
    topics: TopicMetadata,
    now: i64,
}

impl Sim {
    fn new(assignor: AssignorKind) -> Self {
        let config = GroupConfig {
            assignor,
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 15_000,
            heartbeat_interval_ms: 1_000,
        };
        let clients = (0..5)
            .map(|i| {
                let topics: &[&str] = if i % 2 == 0 { &["a", "b"] } else { &["a"] };
                let client = Client::new(&format!("c{i}-0"), topics);
                if i < 2 {
                    client.with_instance(&format!("static-{i}"))
                } else {
                    client
                }
            })
            .collect();
        Self {
            group: Group::new(config.clone()),
            config,
            clients,
            incarnations: vec![0; 5],
            topics: meta(&[("a", 6), ("b", 3)]),
            now: 0,
        }
    }

    fn restart(&mut self, i: usize) {
        self.incarnations[i] += 1;
        self.clients[i].member_id =
            crate::group::MemberId::new(format!("c{i}-{}", self.incarnations[i]));
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Heartbeat(i) => {
                let c = &mut self.clients[i];
                // Refusals (unknown member, fenced, instance id not yet released) make the
                // client abandon everything; it rejoins on a later step.
                let _ = if c.active() {
                    c.heartbeat(&mut self.group, &self.topics, self.now)
                } else {
                    c.join(&mut self.group, &self.topics, self.now)
                };
            }
            Op::Release(i) => self.clients[i].release(),
            Op::Leave(i) if self.clients[i].active() => {
                let temporarily = self.clients[i].instance_id.is_some();
                let _ = self.clients[i].leave(&mut self.group, &self.topics, self.now, temporarily);
                self.restart(i);
            }
            Op::Leave(_) => {}
            Op::Crash(i) => {
                self.clients[i].abandon();
                self.restart(i);
            }
            Op::Tick(ms) => {
                self.now += ms;
                for c in &mut self.clients {
                    c.check_timers(&self.config, self.now);
                }
                self.group.expire(self.now);
            }
            Op::AddPartition => {
                let a = self.topics.keys().next().expect("topic a").clone();
                *self.topics.get_mut(&a).expect("topic a") += 1;
                self.group.update_topics(&self.topics);
            }
        }
        check_owners(&self.group, &self.clients);
    }

    /// Everyone (re)joins and behaves: releases at once, heartbeats every second, until the
    /// sessions of members whose process is gone have run out and the rest hold their target.
    fn settle(&mut self) {
        for round in 0..40 {
            for i in 0..self.clients.len() {
                self.clients[i].release();
                self.apply(&Op::Heartbeat(i));
            }
            self.apply(&Op::Tick(1_000));
            if round > 12 && self.converged() {
                return;
            }
        }
        panic!("no convergence: {:#?}", self.group.snapshot());
    }

    fn converged(&self) -> bool {
        let active = self.clients.iter().filter(|c| c.active()).count();
        active == self.clients.len()
            && self.group.members().count() == active
            && self.clients.iter().all(|c| {
                let m = self
                    .group
                    .member(&c.member_id)
                    .expect("active client is a member");
                m.state == MemberState::Stable
                    && m.member_epoch == self.group.group_epoch()
                    && m.assigned == self.group.target()[&c.member_id]
                    && c.owned == m.assigned
            })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn no_partition_has_two_owners_and_the_group_converges(
        ops in prop::collection::vec(op(), 1..150),
        range in any::<bool>(),
    ) {
        let mut sim = Sim::new(if range { AssignorKind::Range } else { AssignorKind::Uniform });
        for op in &ops {
            sim.apply(op);
        }
        sim.settle();
        let owned: usize = sim.clients.iter().map(|c| c.owned.len()).sum();
        let partitions: u32 = sim.topics.values().sum();
        prop_assert_eq!(owned, partitions as usize, "every partition owned once in the end");
    }
}
