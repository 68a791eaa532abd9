//! Table tests for [`ClusterState::apply`]: every command, every refusal, and that a refused
//! command changes nothing.

use super::*;
use crate::topic::TopicConfig;

use MetadataCommand as C;

fn register(id: BrokerId) -> MetadataCommand {
    C::RegisterBroker {
        id,
        addr: format!("host{id}:9092"),
    }
}

fn create(name: &str, assignment: Vec<Vec<BrokerId>>) -> MetadataCommand {
    C::CreateTopic {
        name: name.into(),
        topic_id: format!("id-{name}"),
        config: TopicConfig::default(),
        assignment,
    }
}

fn elect(topic: &str, partition: u32, leader: BrokerId) -> MetadataCommand {
    C::ElectLeader {
        topic: topic.into(),
        partition,
        leader,
    }
}

fn isr(topic: &str, partition: u32, isr: Vec<BrokerId>, leader_epoch: i32) -> MetadataCommand {
    C::ChangeIsr {
        topic: topic.into(),
        partition,
        isr,
        leader_epoch,
    }
}

/// Brokers 1..=3 registered and unfenced, broker 4 registered and fenced, topic `t` with two
/// partitions on 1,2,3 and 2,3,1.
fn base() -> ClusterState {
    let mut s = ClusterState::default();
    let mut cmds = vec![C::InitCluster {
        cluster_id: "c1".into(),
    }];
    cmds.extend((1..=4).map(register));
    cmds.extend((1..=3).map(|id| C::UnfenceBroker { id }));
    cmds.push(create("t", vec![vec![1, 2, 3], vec![2, 3, 1]]));
    for c in &cmds {
        s.apply(c).expect("base setup applies");
    }
    s
}

fn partition(s: &ClusterState, topic: &str, p: usize) -> PartitionRecord {
    s.topic(topic).expect("topic exists").partitions[p].clone()
}

#[test]
fn base_state_is_as_described() {
    let s = base();
    assert_eq!(s.brokers().len(), 4);
    assert!(s.brokers()[&4].fenced);
    assert!(!s.brokers()[&1].fenced);
    let p0 = partition(&s, "t", 0);
    assert_eq!(p0.leader, Some(1));
    assert_eq!(p0.isr, vec![1, 2, 3]);
    assert_eq!(p0.leader_epoch, 0);
    assert_eq!(partition(&s, "t", 1).leader, Some(2));
    assert_eq!(s.version(), 9);
}

/// Every refusal: the error is the expected one and the state (version included) is unchanged.
#[test]
fn refused_commands_change_nothing() {
    let table: Vec<(MetadataCommand, ApplyError)> = vec![
        (
            C::RegisterBroker {
                id: 9,
                addr: String::new(),
            },
            ApplyError::EmptyAddress(9),
        ),
        (C::FenceBroker { id: 9 }, ApplyError::UnknownBroker(9)),
        (
            C::AllocateProducerIds {
                broker: 9,
                count: 10,
            },
            ApplyError::UnknownBroker(9),
        ),
        (
            C::AllocateProducerIds {
                broker: 1,
                count: 0,
            },
            ApplyError::InvalidProducerIdBlock(0),
        ),
        (
            C::InitCluster {
                cluster_id: String::new(),
            },
            ApplyError::EmptyClusterId,
        ),
        (
            C::InitCluster {
                cluster_id: "other".into(),
            },
            ApplyError::ClusterIdSet("c1".into()),
        ),
        (C::UnfenceBroker { id: 9 }, ApplyError::UnknownBroker(9)),
        (create("t", vec![vec![1]]), ApplyError::TopicExists("t".into())),
        (
            create("bad/name", vec![vec![1]]),
            ApplyError::InvalidTopicName {
                name: "bad/name".into(),
                reason: "topic name contains '/'; only ASCII letters, digits, '.', '_' and '-' are allowed".into(),
            },
        ),
        (create("u", vec![]), ApplyError::NoPartitions),
        (
            create("u", vec![vec![1], vec![]]),
            ApplyError::EmptyReplicaSet { partition: 1 },
        ),
        (
            create("u", vec![vec![1, 2, 1]]),
            ApplyError::DuplicateReplica {
                partition: 0,
                broker: 1,
            },
        ),
        (create("u", vec![vec![1, 9]]), ApplyError::UnknownBroker(9)),
        (
            C::CreateTopic {
                name: "u".into(),
                topic_id: String::new(),
                config: TopicConfig::default(),
                assignment: vec![vec![1]],
            },
            ApplyError::EmptyTopicId("u".into()),
        ),
        (
            C::CreateTopic {
                name: "u".into(),
                topic_id: "id".into(),
                config: TopicConfig {
                    segment_bytes: Some(1),
                    ..TopicConfig::default()
                },
                assignment: vec![vec![1]],
            },
            ApplyError::InvalidConfig {
                name: "u".into(),
                reason: TopicConfig {
                    segment_bytes: Some(1),
                    ..TopicConfig::default()
                }
                .validate()
                .expect_err("segment_bytes 1 is invalid"),
            },
        ),
        (
            C::DeleteTopic { name: "u".into() },
            ApplyError::UnknownTopic("u".into()),
        ),
        (
            C::CreatePartitions {
                name: "u".into(),
                new_assignments: vec![vec![1]],
            },
            ApplyError::UnknownTopic("u".into()),
        ),
        (
            C::CreatePartitions {
                name: "t".into(),
                new_assignments: vec![],
            },
            ApplyError::NoPartitions,
        ),
        (
            C::CreatePartitions {
                name: "t".into(),
                new_assignments: vec![vec![1], vec![3, 3]],
            },
            ApplyError::DuplicateReplica {
                partition: 3,
                broker: 3,
            },
        ),
        (
            C::CreatePartitions {
                name: "t".into(),
                new_assignments: vec![vec![]],
            },
            ApplyError::EmptyReplicaSet { partition: 2 },
        ),
        (
            C::CreatePartitions {
                name: "t".into(),
                new_assignments: vec![vec![8]],
            },
            ApplyError::UnknownBroker(8),
        ),
        (elect("u", 0, 1), ApplyError::UnknownTopic("u".into())),
        (
            elect("t", 2, 1),
            ApplyError::UnknownPartition {
                topic: "t".into(),
                partition: 2,
            },
        ),
        (elect("t", 0, 9), ApplyError::UnknownBroker(9)),
        (
            elect("t", 0, 4),
            ApplyError::NotInIsr {
                broker: 4,
                isr: vec![1, 2, 3],
            },
        ),
        (
            isr("t", 0, vec![1, 2], 1),
            ApplyError::StaleLeaderEpoch {
                given: 1,
                current: 0,
            },
        ),
        (
            isr("t", 0, vec![2, 3], 0),
            ApplyError::IsrMissingLeader {
                leader: 1,
                isr: vec![2, 3],
            },
        ),
        (
            isr("t", 0, vec![1, 4], 0),
            ApplyError::NotAReplica {
                broker: 4,
                replicas: vec![1, 2, 3],
            },
        ),
        (
            isr("t", 0, vec![1, 2, 1], 0),
            ApplyError::DuplicateIsrMember(1),
        ),
        (isr("u", 0, vec![1], 0), ApplyError::UnknownTopic("u".into())),
        (
            isr("t", 5, vec![1], 0),
            ApplyError::UnknownPartition {
                topic: "t".into(),
                partition: 5,
            },
        ),
    ];
    for (cmd, want) in table {
        let mut s = base();
        let before = s.clone();
        assert_eq!(s.apply(&cmd), Err(want), "{cmd:?}");
        assert_eq!(s, before, "refused {cmd:?} changed the state");
    }
}

#[test]
fn elect_refuses_a_fenced_in_sync_broker() {
    let mut s = base();
    // Broker 4 in sync on a new topic, then fenced.
    s.apply(&C::UnfenceBroker { id: 4 }).expect("unfence");
    s.apply(&create("v", vec![vec![4, 1]])).expect("create");
    // 4 leads alone in the ISR, then is fenced: as the last member it stays in the ISR.
    s.apply(&isr("v", 0, vec![4], 0)).expect("isr");
    s.apply(&C::FenceBroker { id: 4 }).expect("fence");
    assert_eq!(partition(&s, "v", 0).isr, vec![4]);
    let before = s.clone();
    assert_eq!(s.apply(&elect("v", 0, 4)), Err(ApplyError::BrokerFenced(4)));
    assert_eq!(s, before);
}

#[test]
fn a_fenced_broker_stays_in_an_isr_but_never_joins_one() {
    let mut s = base();
    s.apply(&isr("t", 0, vec![1, 2], 0)).unwrap();
    s.apply(&C::FenceBroker { id: 3 }).unwrap();
    let before = s.clone();
    assert_eq!(
        s.apply(&isr("t", 0, vec![1, 2, 3], 0)),
        Err(ApplyError::IneligibleReplica(3))
    );
    assert_eq!(s, before, "a refused command changes nothing");
    // Broker 2 is fenced while in partition 0's ISR: a shrink that keeps it is fine.
    s.apply(&C::FenceBroker { id: 2 }).unwrap();
    assert_eq!(partition(&s, "t", 0).isr, vec![1]);
    let mut s = base();
    s.apply(&C::FenceBroker { id: 3 }).unwrap();
    assert_eq!(partition(&s, "t", 0).isr, vec![1, 2]);
    s.apply(&C::UnfenceBroker { id: 3 }).unwrap();
    s.apply(&isr("t", 0, vec![1, 2, 3], 0)).unwrap();
}

#[test]
fn change_isr_refuses_a_leaderless_partition() {
    let mut s = base();
    s.apply(&create("solo", vec![vec![4]]))
        .expect("create on fenced broker");
    assert_eq!(partition(&s, "solo", 0).leader, None);
    let before = s.clone();
    assert_eq!(
        s.apply(&isr("solo", 0, vec![4], 0)),
        Err(ApplyError::NoLeader {
            topic: "solo".into(),
            partition: 0
        })
    );
    assert_eq!(s, before);
}

#[test]
fn register_bumps_the_epoch_and_starts_fenced() {
    let mut s = base();
    let r = s.apply(&C::RegisterBroker {
        id: 1,
        addr: "new:1".into(),
    });
    assert_eq!(
        r,
        Ok(MetadataResponse::BrokerRegistered {
            epoch: 2,
            version: 10
        })
    );
    let b = &s.brokers()[&1];
    assert_eq!((b.addr.as_str(), b.epoch, b.fenced), ("new:1", 2, true));
}

#[test]
fn re_registering_a_leader_moves_its_leaderships() {
    let mut s = base();
    s.apply(&register(2)).expect("re-register");
    let p1 = partition(&s, "t", 1);
    assert_eq!(
        (p1.leader, p1.leader_epoch, p1.isr),
        (Some(3), 1, vec![3, 1])
    );
    assert!(s.brokers()[&2].fenced);
    // First registration of a new broker touches no partition.
    let before = s.topics().clone();
    s.apply(&register(5)).expect("register");
    assert_eq!(s.topics(), &before);
}

#[test]
fn fence_moves_leadership_to_a_live_in_sync_replica() {
    let mut s = base();
    s.apply(&C::FenceBroker { id: 1 }).expect("fence");
    let p0 = partition(&s, "t", 0);
    assert_eq!(p0.leader, Some(2));
    assert_eq!(p0.leader_epoch, 1);
    assert_eq!(p0.isr, vec![2, 3]);
    // A partition it only followed keeps its leader and epoch but drops it from the ISR.
    let p1 = partition(&s, "t", 1);
    assert_eq!(
        (p1.leader, p1.leader_epoch, p1.isr),
        (Some(2), 0, vec![2, 3])
    );
    assert!(s.brokers()[&1].fenced);
}

#[test]
fn fencing_the_last_in_sync_replica_leaves_no_leader_until_it_returns() {
    let mut s = base();
    s.apply(&create("one", vec![vec![3]])).expect("create");
    s.apply(&C::FenceBroker { id: 3 }).expect("fence");
    let p = partition(&s, "one", 0);
    assert_eq!(
        (p.leader, p.leader_epoch, p.isr.clone()),
        (None, 1, vec![3])
    );
    s.apply(&C::UnfenceBroker { id: 3 }).expect("unfence");
    let p = partition(&s, "one", 0);
    assert_eq!((p.leader, p.leader_epoch), (Some(3), 2));
}

#[test]
fn create_topic_leads_with_the_first_unfenced_replica() {
    let mut s = base();
    let r = s.apply(&create("w", vec![vec![4, 2], vec![3]]));
    assert_eq!(r, Ok(MetadataResponse::Applied { version: 10 }));
    let t = s.topic("w").expect("created");
    assert_eq!(t.topic_id, "id-w");
    assert_eq!(t.partitions[0].leader, Some(2));
    assert_eq!(t.partitions[0].isr, vec![4, 2]);
    assert_eq!(t.partitions[1].leader, Some(3));
}

#[test]
fn delete_topic_frees_the_name() {
    let mut s = base();
    s.apply(&C::DeleteTopic { name: "t".into() })
        .expect("delete");
    assert!(s.topic("t").is_none());
    s.apply(&create("t", vec![vec![1]])).expect("re-create");
    assert_eq!(s.topic("t").map(|t| t.partitions.len()), Some(1));
}

#[test]
fn create_partitions_appends() {
    let mut s = base();
    s.apply(&C::CreatePartitions {
        name: "t".into(),
        new_assignments: vec![vec![3, 1]],
    })
    .expect("add");
    let p2 = partition(&s, "t", 2);
    assert_eq!((p2.replicas.clone(), p2.leader), (vec![3, 1], Some(3)));
    assert_eq!(s.topic("t").map(|t| t.partitions.len()), Some(3));
}

#[test]
fn elect_and_change_isr_follow_the_leader_epoch() {
    let mut s = base();
    assert_eq!(
        s.apply(&elect("t", 0, 2)),
        Ok(MetadataResponse::LeaderElected {
            leader_epoch: 1,
            version: 10
        })
    );
    // The old epoch is now stale; the new one works.
    assert!(s.apply(&isr("t", 0, vec![2], 0)).is_err());
    s.apply(&isr("t", 0, vec![2, 3], 1)).expect("shrink");
    let p0 = partition(&s, "t", 0);
    assert_eq!((p0.leader, p0.isr), (Some(2), vec![2, 3]));
    // Out of the ISR means not electable.
    assert!(matches!(
        s.apply(&elect("t", 0, 1)),
        Err(ApplyError::NotInIsr { broker: 1, .. })
    ));
}

#[test]
fn state_round_trips_through_json() {
    let s = base();
    let bytes = serde_json::to_vec(&s).expect("serialise");
    let back: ClusterState = serde_json::from_slice(&bytes).expect("deserialise");
    assert_eq!(back, s);
}

#[test]
fn the_cluster_id_is_set_once() {
    let mut s = ClusterState::default();
    assert_eq!(s.cluster_id(), "");
    s.apply(&C::InitCluster {
        cluster_id: "c1".into(),
    })
    .unwrap();
    assert_eq!(s.cluster_id(), "c1");
    assert_eq!(
        s.apply(&C::InitCluster {
            cluster_id: "c1".into()
        }),
        Err(ApplyError::ClusterIdSet("c1".into()))
    );
}

#[test]
fn producer_id_blocks_never_overlap() {
    let mut s = base();
    let mut blocks = Vec::new();
    for (broker, count) in [(1, 1000), (2, 10), (1, 1000)] {
        match s.apply(&C::AllocateProducerIds { broker, count }) {
            Ok(MetadataResponse::ProducerIds { first, count, .. }) => blocks.push((first, count)),
            other => panic!("allocation answered {other:?}"),
        }
    }
    assert_eq!(blocks, [(0, 1000), (1000, 10), (1010, 1000)]);
    assert_eq!(s.next_producer_id(), 2010);
}

#[test]
fn unclean_election_only_where_the_topic_allows_it() {
    let mut s = base();
    let unclean = TopicConfig {
        unclean_leader_election: Some(true),
        ..TopicConfig::default()
    };
    s.apply(&C::CreateTopic {
        name: "u".into(),
        topic_id: "id-u".into(),
        config: unclean,
        assignment: vec![vec![1, 2]],
    })
    .unwrap();
    // Broker 2 leaves both ISRs (it is fenced first), then broker 1, the last in-sync replica,
    // is fenced too; broker 2 comes back.
    for cmd in [
        C::FenceBroker { id: 2 },
        C::FenceBroker { id: 1 },
        C::UnfenceBroker { id: 2 },
    ] {
        s.apply(&cmd).unwrap();
    }
    // Topic "t" (clean): partition 0 was led by 1 with ISR [1, 3] after 2 left; 3 is alive.
    assert_eq!(partition(&s, "t", 0).leader, Some(3));
    // Topic "u" (unclean): ISR [1] only, 1 fenced: 2 leads alone.
    let u = partition(&s, "u", 0);
    assert_eq!(u.leader, Some(2));
    assert_eq!(u.isr, vec![2]);

    // The same history on a clean topic leaves it leaderless.
    let mut s = base();
    s.apply(&C::CreateTopic {
        name: "c".into(),
        topic_id: "id-c".into(),
        config: TopicConfig::default(),
        assignment: vec![vec![1, 2]],
    })
    .unwrap();
    for cmd in [
        C::FenceBroker { id: 2 },
        C::FenceBroker { id: 1 },
        C::UnfenceBroker { id: 2 },
    ] {
        s.apply(&cmd).unwrap();
    }
    let c = partition(&s, "c", 0);
    assert_eq!(c.leader, None);
    assert_eq!(c.isr, vec![1]);
}
