//! Reconciliation step by step: the scenarios issue 6 names, then fencing, static membership,
//! timeouts, metadata changes and failover.

use std::collections::BTreeSet;

use super::{Client, check_owners, meta, t, tp};
use crate::group::{
    Group, GroupConfig, GroupError, GroupSnapshot, Heartbeat, InstanceId, MemberId, MemberState,
    TopicMetadata, TopicPartition,
};

fn config() -> GroupConfig {
    GroupConfig {
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 20_000,
        heartbeat_interval_ms: 1_000,
        ..GroupConfig::default()
    }
}

/// Every active client releases what it must and heartbeats, until each holds its target at
/// the group epoch. Returns the rounds it took.
fn settle(group: &mut Group, clients: &mut [Client], topics: &TopicMetadata, now_ms: i64) -> usize {
    for round in 1..=10 {
        for i in 0..clients.len() {
            if clients[i].active() {
                clients[i].release();
                clients[i]
                    .heartbeat(group, topics, now_ms)
                    .expect("a settled member is not refused");
                check_owners(group, clients);
            }
        }
        if converged(group, clients) {
            return round;
        }
    }
    panic!("no convergence: {:#?}", group.snapshot());
}

fn converged(group: &Group, clients: &[Client]) -> bool {
    clients.iter().filter(|c| c.active()).all(|c| {
        let m = group
            .member(&c.member_id)
            .expect("active client is a member");
        m.state == MemberState::Stable
            && m.member_epoch == group.group_epoch()
            && m.assigned == group.target()[&c.member_id]
            && c.owned == m.assigned
    })
}

/// Three clients `a`, `b`, `c` on topic `t` with 6 partitions, settled at 2 each.
fn three_on_six() -> (Group, Vec<Client>, TopicMetadata) {
    let topics = meta(&[("t", 6)]);
    let mut group = Group::new(config());
    let mut clients: Vec<Client> = ["a", "b", "c"]
        .iter()
        .map(|id| Client::new(id, &["t"]))
        .collect();
    for i in 0..clients.len() {
        clients[i].join(&mut group, &topics, 0).expect("join");
        check_owners(&group, &clients[..=i]);
    }
    settle(&mut group, &mut clients, &topics, 0);
    (group, clients, topics)
}

fn owner_of<'a>(clients: &'a [Client], p: &TopicPartition) -> Option<&'a Client> {
    clients.iter().find(|c| c.owned.contains(p))
}

#[test]
fn three_members_on_six_partitions_get_two_each() {
    let (group, clients, _) = three_on_six();
    assert_eq!(group.group_epoch(), 3, "one bump per join");
    for c in &clients {
        assert_eq!(c.owned.len(), 2, "{}", c.member_id);
        assert_eq!(c.epoch, Some(3));
    }
}

#[test]
fn a_fourth_member_pauses_only_the_partition_that_moves() {
    let (mut group, mut clients, topics) = three_on_six();
    let before: Vec<BTreeSet<TopicPartition>> = clients.iter().map(|c| c.owned.clone()).collect();
    let mut d = Client::new("d", &["t"]);
    let resp = d.join(&mut group, &topics, 100).expect("join");
    assert_eq!(group.group_epoch(), 4);
    // d's target partition is still held by its old owner: d gets nothing yet.
    let target_d = group.target()[&d.member_id].clone();
    assert_eq!(target_d.len(), 1);
    let moving = target_d.iter().next().unwrap().clone();
    assert!(resp.assignment.is_empty());
    assert_eq!(resp.member_epoch, 4);
    assert_eq!(
        group.member(&d.member_id).unwrap().state,
        MemberState::UnreleasedPartitions
    );
    clients.push(d);
    let (loser, _) = clients
        .iter()
        .enumerate()
        .find(|(_, c)| c.owned.contains(&moving))
        .unwrap();

    // Everyone heartbeats without releasing yet: the loser is asked to revoke, keeping its epoch;
    // the others move to epoch 4 keeping everything; d still waits.
    for i in 0..4 {
        let resp = clients[i].heartbeat(&mut group, &topics, 200).unwrap();
        check_owners(&group, &clients);
        if i == loser {
            assert_eq!(resp.member_epoch, 3);
            assert_eq!(
                resp.assignment,
                &before[i] - &BTreeSet::from([moving.clone()])
            );
            assert_eq!(
                group.member(&clients[i].member_id).unwrap().state,
                MemberState::UnrevokedPartitions
            );
        } else if i < 3 {
            assert_eq!(resp.member_epoch, 4);
            assert_eq!(
                resp.assignment, before[i],
                "a member that keeps everything never pauses"
            );
        } else {
            assert!(resp.assignment.is_empty(), "not before the loser releases");
        }
    }
    // Still processing: the loser reports it owns the partition; nothing moves.
    clients[loser].heartbeat(&mut group, &topics, 300).unwrap();
    assert!(
        clients[3]
            .heartbeat(&mut group, &topics, 300)
            .unwrap()
            .assignment
            .is_empty()
    );
    // Released and reported: the loser reaches epoch 4, then d gets the partition.
    clients[loser].release();
    assert_eq!(
        clients[loser]
            .heartbeat(&mut group, &topics, 400)
            .unwrap()
            .member_epoch,
        4
    );
    assert!(owner_of(&clients, &moving).is_none());
    let resp = clients[3].heartbeat(&mut group, &topics, 500).unwrap();
    assert_eq!(resp.assignment, BTreeSet::from([moving.clone()]));
    check_owners(&group, &clients);
    // Exactly one partition changed hands; no other was ever released.
    for (i, c) in clients.iter().take(3).enumerate() {
        let lost: Vec<_> = before[i].difference(&c.owned).collect();
        assert_eq!(lost.len(), usize::from(i == loser));
    }
    settle(&mut group, &mut clients, &topics, 600);
}

#[test]
fn a_coordinator_back_from_a_silence_grants_full_sessions() {
    let (mut group, _clients, _topics) = three_on_six();
    let version = group.version();
    // The coordinator was cut off from 0 to 12 s: nobody could heartbeat it. Back at 12 s,
    // every member gets a full session from then, not an expiry for its silence.
    group.grant_full_sessions(12_000);
    assert!(group.expire(12_000).is_empty());
    assert!(group.expire(21_999).is_empty());
    assert_eq!(group.next_deadline(), Some(22_000));
    assert_eq!(group.version(), version, "nothing to store");
    assert_eq!(group.expire(22_000).len(), 3);
    // A later grant never shortens a session.
    let (mut group, _clients, _topics) = three_on_six();
    group.grant_full_sessions(-5_000);
    assert_eq!(group.next_deadline(), Some(10_000));
}

#[test]
fn an_expired_session_moves_its_partitions() {
    let (mut group, mut clients, topics) = three_on_six();
    let dead = clients.pop().unwrap();
    assert_eq!(group.next_deadline(), Some(10_000));
    // a and b keep heartbeating; c is killed and says nothing.
    let mut now = 0;
    while now < 9_000 {
        now += 1_000;
        for c in &mut clients {
            c.heartbeat(&mut group, &topics, now).unwrap();
        }
        assert!(group.expire(now).is_empty());
    }
    assert_eq!(
        group.next_deadline(),
        Some(10_000),
        "c's deadline comes first"
    );
    assert_eq!(group.expire(10_000), vec![dead.member_id.clone()]);
    assert_eq!(group.group_epoch(), 4);
    // Its partitions are free at once: the survivors take them without anyone revoking.
    for c in &mut clients {
        let resp = c.heartbeat(&mut group, &topics, 10_000).unwrap();
        assert_eq!(resp.member_epoch, 4);
        assert_eq!(resp.assignment.len(), 3);
    }
    assert!(dead.owned.iter().all(|p| owner_of(&clients, p).is_some()));
    check_owners(&group, &clients);
    // Its heartbeat, should it come back, is refused.
    let mut dead = dead;
    assert!(matches!(
        dead.heartbeat(&mut group, &topics, 10_001),
        Err(GroupError::UnknownMemberId { .. })
    ));
    assert!(dead.owned.is_empty());
}

#[test]
fn leaving_frees_partitions_at_once() {
    let (mut group, mut clients, topics) = three_on_six();
    let mut leaver = clients.remove(0);
    let resp = leaver.leave(&mut group, &topics, 50, false).unwrap();
    assert_eq!(resp.member_epoch, -1);
    assert!(group.member(&leaver.member_id).is_none());
    assert_eq!(group.group_epoch(), 4);
    assert_eq!(
        settle(&mut group, &mut clients, &topics, 60),
        1,
        "nothing to revoke"
    );
    assert!(clients.iter().all(|c| c.owned.len() == 3));
}

#[test]
fn a_static_member_restarting_keeps_its_partitions_without_a_rebalance() {
    let topics = meta(&[("t", 6)]);
    let mut group = Group::new(config());
    let mut clients = vec![
        Client::new("a-1", &["t"]).with_instance("a"),
        Client::new("b", &["t"]),
        Client::new("c", &["t"]),
    ];
    for c in &mut clients {
        c.join(&mut group, &topics, 0).unwrap();
    }
    settle(&mut group, &mut clients, &topics, 0);
    let epoch = group.group_epoch();
    let kept = clients[0].owned.clone();
    let others: Vec<_> = clients[1..].iter().map(|c| c.owned.clone()).collect();

    // a shuts down for a restart (epoch -2): nothing moves, no new epoch.
    assert_eq!(
        clients[0]
            .leave(&mut group, &topics, 1_000, true)
            .unwrap()
            .member_epoch,
        -2
    );
    assert_eq!(group.group_epoch(), epoch);
    settle(&mut group, &mut clients, &topics, 2_000);
    assert_eq!(
        clients[1..]
            .iter()
            .map(|c| c.owned.clone())
            .collect::<Vec<_>>(),
        others
    );

    // Back within the session timeout under a new member id: same partitions, same epoch.
    let mut restarted = Client::new("a-2", &["t"]).with_instance("a");
    let resp = restarted.join(&mut group, &topics, 8_000).unwrap();
    assert_eq!(resp.assignment, kept);
    assert_eq!(resp.member_epoch, epoch);
    assert_eq!(group.group_epoch(), epoch);
    assert!(group.member(&MemberId::new("a-1")).is_none());
    clients[0] = restarted;
    check_owners(&group, &clients);

    // A second process claiming the same instance id while a-2 runs is refused.
    let mut impostor = Client::new("a-3", &["t"]).with_instance("a");
    assert_eq!(
        impostor.join(&mut group, &topics, 8_100),
        Err(GroupError::UnreleasedInstanceId {
            instance_id: InstanceId::new("a"),
            holder: MemberId::new("a-2"),
        })
    );
}

#[test]
fn a_static_member_away_past_its_session_loses_its_partitions() {
    let topics = meta(&[("t", 4)]);
    let mut group = Group::new(config());
    let mut a = Client::new("a-1", &["t"]).with_instance("a");
    let mut b = Client::new("b", &["t"]);
    a.join(&mut group, &topics, 0).unwrap();
    b.join(&mut group, &topics, 0).unwrap();
    let mut clients = vec![a, b];
    settle(&mut group, &mut clients, &topics, 0);
    clients[0].leave(&mut group, &topics, 1_000, true).unwrap();
    clients[1].heartbeat(&mut group, &topics, 6_000).unwrap();
    assert_eq!(group.expire(11_000), vec![MemberId::new("a-1")]);
    let resp = clients[1].heartbeat(&mut group, &topics, 11_000).unwrap();
    assert_eq!(resp.assignment.len(), 4);
}

#[test]
fn stale_epochs_are_fenced_and_the_member_rejoins() {
    let (mut group, mut clients, topics) = three_on_six();
    let a = &mut clients[0];
    let epoch = a.epoch.unwrap();
    let beat = |epoch, owned: BTreeSet<TopicPartition>| Heartbeat {
        member_id: MemberId::new("a"),
        member_epoch: epoch,
        instance_id: None,
        subscribed_topics: None,
        owned: Some(owned),
    };
    let previous = group.member(&a.member_id).unwrap().previous_member_epoch;
    assert_eq!((previous, epoch), (1, 3), "a joined at 1 and moved to 3");
    // An older epoch that is not the previous one, or a newer one, is fenced.
    for stale in [2, epoch + 1] {
        assert_eq!(
            group.heartbeat(beat(stale, a.owned.clone()), &topics, 10),
            Err(GroupError::FencedMemberEpoch {
                member_id: a.member_id.clone(),
                received: stale,
                current: epoch
            })
        );
    }
    // The previous epoch, owning only what it was assigned, is accepted: its last response
    // was lost.
    let resp = group
        .heartbeat(beat(previous, a.owned.clone()), &topics, 20)
        .unwrap();
    assert_eq!(resp.member_epoch, epoch);
    let mut more = a.owned.clone();
    more.insert(tp("t", 99));
    assert!(matches!(
        group.heartbeat(beat(previous, more), &topics, 30),
        Err(GroupError::FencedMemberEpoch { .. })
    ));
    // Fenced, the client abandons its partitions and rejoins with epoch 0 under the same id.
    a.epoch = Some(2);
    assert!(a.heartbeat(&mut group, &topics, 40).is_err());
    assert!(a.owned.is_empty());
    let resp = a.join(&mut group, &topics, 50).unwrap();
    assert_eq!(resp.member_epoch, group.group_epoch());
    assert_eq!(resp.assignment.len(), 2);
    assert_eq!(
        group.group_epoch(),
        epoch,
        "a rejoin with the same subscription changes nothing"
    );
    check_owners(&group, &clients);
}

#[test]
fn refused_requests() {
    let topics = meta(&[("t", 2)]);
    let mut group = Group::new(config());
    let mut hb = Heartbeat {
        member_id: MemberId::new("x"),
        member_epoch: 0,
        instance_id: None,
        subscribed_topics: None,
        owned: None,
    };
    assert!(matches!(
        group.heartbeat(hb.clone(), &topics, 0),
        Err(GroupError::MissingSubscription { .. })
    ));
    hb.member_epoch = 7;
    assert!(matches!(
        group.heartbeat(hb.clone(), &topics, 0),
        Err(GroupError::UnknownMemberId { .. })
    ));
    hb.member_epoch = -3;
    assert_eq!(
        group.heartbeat(hb.clone(), &topics, 0),
        Err(GroupError::InvalidEpoch(-3))
    );
    hb.member_epoch = 0;
    hb.subscribed_topics = Some(BTreeSet::from([t("t")]));
    group.heartbeat(hb.clone(), &topics, 0).unwrap();
    hb.member_epoch = -2;
    assert!(matches!(
        group.heartbeat(hb.clone(), &topics, 0),
        Err(GroupError::NotStatic { .. })
    ));
    // Leaving twice is harmless.
    hb.member_epoch = -1;
    assert_eq!(
        group
            .heartbeat(hb.clone(), &topics, 0)
            .unwrap()
            .member_epoch,
        -1
    );
    assert_eq!(group.heartbeat(hb, &topics, 0).unwrap().member_epoch, -1);
    assert!(group.is_empty());
}

#[test]
fn a_member_stuck_revoking_is_removed_after_the_rebalance_timeout() {
    let (mut group, mut clients, topics) = three_on_six();
    let mut d = Client::new("d", &["t"]);
    d.join(&mut group, &topics, 0).unwrap();
    clients.push(d);
    let moving = group.target()[&MemberId::new("d")]
        .iter()
        .next()
        .unwrap()
        .clone();
    let stuck = clients
        .iter()
        .position(|c| c.owned.contains(&moving))
        .unwrap();
    // Everyone keeps heartbeating; the stuck member never releases.
    let mut now = 0;
    while now < 20_000 {
        for c in &mut clients {
            c.check_timers(&config(), now);
            if c.active() {
                c.heartbeat(&mut group, &topics, now).unwrap();
            }
        }
        check_owners(&group, &clients);
        now += 1_000;
        assert!(group.expire(now - 1).is_empty());
    }
    // The client gave up by itself at its rebalance timeout; the group removes it too.
    clients[stuck].check_timers(&config(), now);
    assert!(!clients[stuck].active());
    assert_eq!(group.expire(now), vec![clients[stuck].member_id.clone()]);
    clients.remove(stuck);
    settle(&mut group, &mut clients, &topics, now);
    assert!(owner_of(&clients, &moving).is_some_and(|c| c.member_id == MemberId::new("d")));
    assert_eq!(clients.iter().map(|c| c.owned.len()).sum::<usize>(), 6);
}

#[test]
fn partitions_added_and_topics_deleted() {
    let (mut group, mut clients, _) = three_on_six();
    // Partitions added: a new epoch; everyone gains, nobody revokes.
    let grown = meta(&[("t", 9)]);
    assert!(group.update_topics(&grown));
    assert!(
        !group.update_topics(&grown),
        "unchanged metadata changes nothing"
    );
    assert!(!group.update_topics(&meta(&[("t", 9), ("unrelated", 3)])));
    let before: Vec<_> = clients.iter().map(|c| c.owned.clone()).collect();
    for c in &mut clients {
        let resp = c.heartbeat(&mut group, &grown, 10).unwrap();
        assert_eq!(resp.member_epoch, group.group_epoch());
        assert_eq!(resp.assignment.len(), 3);
    }
    for (c, b) in clients.iter().zip(&before) {
        assert!(c.owned.is_superset(b));
    }
    // Topic deleted (noticed through a heartbeat): members must revoke what they hold of it.
    let gone = TopicMetadata::new();
    let resp = clients[0].heartbeat(&mut group, &gone, 20).unwrap();
    assert!(resp.assignment.is_empty());
    assert!(group.target().values().all(BTreeSet::is_empty));
    settle(&mut group, &mut clients, &gone, 30);
    assert!(clients.iter().all(|c| c.owned.is_empty()));
}

#[test]
fn changing_subscription_bumps_the_epoch() {
    let topics = meta(&[("t", 2), ("u", 2)]);
    let (mut group, mut clients, _) = three_on_six();
    let epoch = group.group_epoch();
    let hb = Heartbeat {
        member_id: clients[0].member_id.clone(),
        member_epoch: clients[0].epoch.unwrap(),
        instance_id: None,
        subscribed_topics: Some(BTreeSet::from([t("t"), t("u")])),
        owned: Some(clients[0].owned.clone()),
    };
    group.heartbeat(hb, &topics, 5).unwrap();
    assert_eq!(group.group_epoch(), epoch + 1);
    clients[0].topics = BTreeSet::from([t("t"), t("u")]);
    settle(&mut group, &mut clients, &topics, 10);
    let u: usize = clients[0]
        .owned
        .iter()
        .filter(|p| p.topic == t("u"))
        .count();
    assert_eq!(u, 2, "only a subscribes to u");
}

#[test]
fn a_restored_snapshot_carries_on_mid_rebalance() {
    let (mut group, mut clients, topics) = three_on_six();
    let mut d = Client::new("d", &["t"]);
    d.join(&mut group, &topics, 0).unwrap();
    clients.push(d);
    for c in &mut clients {
        c.heartbeat(&mut group, &topics, 10).unwrap();
    }
    assert!(
        group
            .members()
            .any(|m| m.state == MemberState::UnrevokedPartitions)
    );
    let version = group.version();
    let snapshot = group.snapshot();
    let json = serde_json::to_string(&snapshot).unwrap();
    let back: GroupSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snapshot);
    let mut restored = Group::restore(config(), back, 5_000).unwrap();
    assert_eq!(restored.snapshot(), snapshot);
    assert_eq!(
        restored.next_deadline(),
        Some(15_000),
        "sessions restart at failover"
    );
    check_owners(&restored, &clients);
    settle(&mut restored, &mut clients, &topics, 5_100);
    let mut counts: Vec<usize> = clients.iter().map(|c| c.owned.len()).collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 1, 2, 2]);
    assert_eq!(clients.iter().map(|c| c.owned.len()).sum::<usize>(), 6);
    assert!(group.version() == version);

    // A snapshot with one partition held twice is refused.
    let mut bad = snapshot;
    let p = bad.members[0].assigned.iter().next().unwrap().clone();
    bad.members[1].pending_revocation.insert(p);
    assert!(Group::restore(config(), bad, 0).is_err());
}
