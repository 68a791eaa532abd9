//! Table and property tests of the assignors: completeness, balance, stickiness, minimal
//! movement, differing subscriptions, determinism; the uniform assignor's balance is checked
//! against brute force on small instances.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::{AssignorKind, MemberSubscription, assign};
use crate::group::types::{Assignment, MemberId, TopicMetadata, TopicPartition};
use crate::topic::TopicName;

fn t(name: &str) -> TopicName {
    TopicName::new(name).expect("valid test topic")
}

fn tp(topic: &str, p: u32) -> TopicPartition {
    TopicPartition::new(t(topic), p)
}

fn id(i: usize) -> MemberId {
    MemberId::new(format!("m{i}"))
}

fn sub(i: usize, topics: &[&str]) -> MemberSubscription {
    MemberSubscription {
        member_id: id(i),
        topics: topics.iter().map(|s| t(s)).collect(),
    }
}

/// Members `0..n`, all subscribing to `topics`.
fn same(n: usize, topics: &[&str]) -> Vec<MemberSubscription> {
    (0..n).map(|i| sub(i, topics)).collect()
}

fn meta(topics: &[(&str, u32)]) -> TopicMetadata {
    topics.iter().map(|&(name, n)| (t(name), n)).collect()
}

fn uniform(
    members: &[MemberSubscription],
    topics: &TopicMetadata,
    current: &Assignment,
) -> Assignment {
    let out = assign(AssignorKind::Uniform, members, topics, current);
    check_complete(&out, members, topics);
    out
}

/// Partition counts per member, in member order.
fn counts(a: &Assignment) -> Vec<usize> {
    a.values().map(BTreeSet::len).collect()
}

fn owners(a: &Assignment) -> BTreeMap<&TopicPartition, &MemberId> {
    a.iter()
        .flat_map(|(m, ps)| ps.iter().map(move |p| (p, m)))
        .collect()
}

/// Partitions whose owner in `before` is not their owner in `after`.
fn moved(before: &Assignment, after: &Assignment) -> usize {
    let after = owners(after);
    owners(before)
        .into_iter()
        .filter(|(p, m)| after.get(p) != Some(m))
        .count()
}

/// Every member listed; every subscribed partition assigned exactly once, to a subscriber.
fn check_complete(a: &Assignment, members: &[MemberSubscription], topics: &TopicMetadata) {
    let subs: BTreeMap<&MemberId, &BTreeSet<TopicName>> =
        members.iter().map(|m| (&m.member_id, &m.topics)).collect();
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        subs.keys().copied().collect::<Vec<_>>()
    );
    let mut seen = BTreeSet::new();
    for (m, ps) in a {
        for p in ps {
            assert!(
                subs[m].contains(&p.topic),
                "{m} got {p} without subscribing"
            );
            assert!(p.partition < topics[&p.topic], "{p} does not exist");
            assert!(seen.insert(p.clone()), "{p} assigned twice");
        }
    }
    for (topic, &n) in topics {
        if subs.values().any(|s| s.contains(topic)) {
            for p in 0..n {
                assert!(
                    seen.contains(&TopicPartition::new(topic.clone(), p)),
                    "{topic}-{p} unassigned"
                );
            }
        }
    }
}

fn parts(list: &[(&str, u32)]) -> BTreeSet<TopicPartition> {
    list.iter().map(|&(topic, p)| tp(topic, p)).collect()
}

#[test]
fn range_splits_each_topic_in_contiguous_ranges() {
    // (members, partitions of "a", expected ranges per member)
    let table: &[(usize, u32, &[&[u32]])] = &[
        (3, 6, &[&[0, 1], &[2, 3], &[4, 5]]),
        (3, 7, &[&[0, 1, 2], &[3, 4], &[5, 6]]),
        (3, 8, &[&[0, 1, 2], &[3, 4, 5], &[6, 7]]),
        (4, 2, &[&[0], &[1], &[], &[]]),
        (1, 3, &[&[0, 1, 2]]),
        (2, 0, &[&[], &[]]),
    ];
    for &(n, count, expected) in table {
        let members = same(n, &["a"]);
        let topics = meta(&[("a", count)]);
        let out = assign(AssignorKind::Range, &members, &topics, &Assignment::new());
        check_complete(&out, &members, &topics);
        for (i, want) in expected.iter().enumerate() {
            let want: BTreeSet<_> = want.iter().map(|&p| tp("a", p)).collect();
            assert_eq!(
                out[&id(i)],
                want,
                "{n} members, {count} partitions, member {i}"
            );
        }
    }
}

#[test]
fn range_co_partitions_and_follows_each_topics_subscribers() {
    let topics = meta(&[("a", 4), ("b", 4), ("c", 3)]);
    let members = vec![
        sub(0, &["a", "b"]),
        sub(1, &["a", "b", "c"]),
        sub(2, &["c"]),
    ];
    let out = assign(AssignorKind::Range, &members, &topics, &Assignment::new());
    check_complete(&out, &members, &topics);
    assert_eq!(
        out[&id(0)],
        parts(&[("a", 0), ("a", 1), ("b", 0), ("b", 1)])
    );
    assert_eq!(
        out[&id(1)],
        parts(&[("a", 2), ("a", 3), ("b", 2), ("b", 3), ("c", 0), ("c", 1)])
    );
    assert_eq!(out[&id(2)], parts(&[("c", 2)]));
}

#[test]
fn range_ignores_current_and_missing_topics() {
    let topics = meta(&[("a", 4)]);
    let members = vec![sub(0, &["a", "gone"]), sub(1, &["a"])];
    let current: Assignment = [(id(1), parts(&[("a", 0), ("a", 1)]))].into();
    let out = assign(AssignorKind::Range, &members, &topics, &current);
    assert_eq!(out[&id(0)], parts(&[("a", 0), ("a", 1)]));
    assert_eq!(out[&id(1)], parts(&[("a", 2), ("a", 3)]));
}

#[test]
fn uniform_three_members_six_partitions_two_each() {
    let out = uniform(&same(3, &["a"]), &meta(&[("a", 6)]), &Assignment::new());
    assert_eq!(counts(&out), [2, 2, 2]);
}

#[test]
fn uniform_balances_every_size() {
    for m in 1..=7 {
        for n in 0..=20 {
            let topics = meta(&[("a", n), ("b", n / 3)]);
            let out = uniform(&same(m, &["a", "b"]), &topics, &Assignment::new());
            let c = counts(&out);
            let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
            assert!(hi - lo <= 1, "{m} members, {n}+{} partitions: {c:?}", n / 3);
        }
    }
}

#[test]
fn uniform_keeps_a_balanced_assignment_as_it_is() {
    let topics = meta(&[("a", 7), ("b", 5)]);
    let members = same(4, &["a", "b"]);
    // Balanced but nothing like what it would compute from scratch.
    let current: Assignment = [
        (id(0), parts(&[("b", 0), ("b", 1), ("b", 2)])),
        (id(1), parts(&[("a", 6), ("b", 3), ("b", 4)])),
        (id(2), parts(&[("a", 0), ("a", 2), ("a", 4)])),
        (id(3), parts(&[("a", 1), ("a", 3), ("a", 5)])),
    ]
    .into();
    assert_eq!(uniform(&members, &topics, &current), current);
}

#[test]
fn uniform_joining_member_takes_only_its_share() {
    // (partitions, members before): a member joins; only its share moves, all to it.
    for &(n, before) in &[(6, 3), (12, 3), (7, 3), (10, 4), (3, 3), (20, 1)] {
        let topics = meta(&[("a", n)]);
        let old = uniform(&same(before, &["a"]), &topics, &Assignment::new());
        let new = uniform(&same(before + 1, &["a"]), &topics, &old);
        let share = n as usize / (before + 1);
        assert_eq!(
            new[&id(before)].len(),
            share,
            "{n} partitions, {before} + 1 members"
        );
        assert_eq!(
            moved(&old, &new),
            share,
            "{n} partitions, {before} + 1 members"
        );
        for i in 0..before {
            assert!(new[&id(i)].is_subset(&old[&id(i)]), "member {i} only loses");
        }
    }
}

#[test]
fn uniform_three_members_to_four_moves_exactly_one_of_six() {
    let topics = meta(&[("a", 6)]);
    let old = uniform(&same(3, &["a"]), &topics, &Assignment::new());
    let new = uniform(&same(4, &["a"]), &topics, &old);
    assert_eq!(moved(&old, &new), 1);
    assert_eq!(counts(&new).iter().sum::<usize>(), 6);
    assert!(counts(&new).iter().all(|&c| (1..=2).contains(&c)));
}

#[test]
fn uniform_leaving_member_moves_only_its_partitions() {
    for &(n, before, leaver) in &[(6, 4, 0), (12, 4, 2), (7, 3, 1), (9, 2, 1)] {
        let topics = meta(&[("a", n)]);
        let old = uniform(&same(before, &["a"]), &topics, &Assignment::new());
        let stay: Vec<_> = (0..before)
            .filter(|&i| i != leaver)
            .map(|i| sub(i, &["a"]))
            .collect();
        let new = uniform(&stay, &topics, &old);
        assert_eq!(
            moved(&old, &new),
            old[&id(leaver)].len(),
            "{n} partitions, {before} members"
        );
        for m in &stay {
            assert!(
                new[&m.member_id].is_superset(&old[&m.member_id]),
                "{} only gains",
                m.member_id
            );
        }
        let c = counts(&new);
        assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1);
    }
}

#[test]
fn uniform_rebalances_a_skewed_assignment_with_fewest_moves() {
    let topics = meta(&[("a", 6)]);
    let current: Assignment = [(id(0), (0..6).map(|p| tp("a", p)).collect())].into();
    let out = uniform(&same(3, &["a"]), &topics, &current);
    assert_eq!(counts(&out), [2, 2, 2]);
    assert_eq!(moved(&current, &out), 4);
}

#[test]
fn uniform_partitions_added_and_topic_deleted() {
    let members = same(3, &["a", "b"]);
    let old = uniform(&members, &meta(&[("a", 6), ("b", 3)]), &Assignment::new());
    // Partitions added: nobody loses anything, each gets one of the new ones.
    let grown = uniform(&members, &meta(&[("a", 9), ("b", 3)]), &old);
    assert_eq!(moved(&old, &grown), 0);
    assert_eq!(counts(&grown), [4, 4, 4]);
    // Topic b deleted: its partitions vanish; the rest moves only as balance requires.
    let deleted = uniform(&members, &meta(&[("a", 9)]), &grown);
    assert!(deleted.values().flatten().all(|p| p.topic == t("a")));
    assert_eq!(counts(&deleted), [3, 3, 3]);
    let before: Assignment = grown
        .iter()
        .map(|(m, ps)| {
            (
                m.clone(),
                ps.iter().filter(|p| p.topic == t("a")).cloned().collect(),
            )
        })
        .collect();
    let lower_bound = before
        .values()
        .map(|ps| ps.len().saturating_sub(3))
        .sum::<usize>();
    assert_eq!(moved(&before, &deleted), lower_bound);
}

#[test]
fn uniform_differing_subscriptions() {
    // (subscriptions, topics, expected counts)
    type Case = (
        &'static [&'static [&'static str]],
        &'static [(&'static str, u32)],
        &'static [usize],
    );
    let table: &[Case] = &[
        // Balanced by giving the member that can take both topics what the others cannot.
        (
            &[&["a"], &["a", "b"], &["b"]],
            &[("a", 4), ("b", 2)],
            &[2, 2, 2],
        ),
        // A topic only one member takes: it gets all of it, the rest is shared among the others.
        (
            &[&["a", "x"], &["a"], &["a"]],
            &[("a", 6), ("x", 4)],
            &[4, 3, 3],
        ),
        (&[&["x"], &["a"], &["a"]], &[("a", 6), ("x", 1)], &[1, 3, 3]),
        // The a-only member takes all of a, so the others share b evenly.
        (
            &[&["a"], &["a", "b"], &["a", "b"], &["b"]],
            &[("a", 2), ("b", 9)],
            &[2, 3, 3, 3],
        ),
        // Identical subscriptions differ by at most one beside a member that cannot help.
        (
            &[&["a"], &["b"], &["b"], &["b"]],
            &[("a", 1), ("b", 8)],
            &[1, 3, 3, 2],
        ),
        // A subscription to a topic that does not exist.
        (&[&["nope"], &["a"]], &[("a", 3)], &[0, 3]),
    ];
    for &(subs, topics, expected) in table {
        let members: Vec<_> = subs.iter().enumerate().map(|(i, s)| sub(i, s)).collect();
        let out = uniform(&members, &meta(topics), &Assignment::new());
        assert_eq!(counts(&out), expected, "{subs:?} over {topics:?}");
    }
}

#[test]
fn uniform_moves_along_a_chain_when_no_direct_move_helps() {
    // m0 takes x only, m2 takes y only, m1 both: m0 can only shed to m1, m1 only to m2.
    let members = vec![sub(0, &["x"]), sub(1, &["x", "y"]), sub(2, &["y"])];
    let topics = meta(&[("x", 4), ("y", 3)]);
    let current: Assignment = [
        (id(0), (0..4).map(|p| tp("x", p)).collect()),
        (id(1), (0..3).map(|p| tp("y", p)).collect()),
        (id(2), BTreeSet::new()),
    ]
    .into();
    let out = uniform(&members, &topics, &current);
    assert_eq!(counts(&out), [3, 2, 2]);
    // m0 → m1 one x, m1 → m2 two y: three moves, the fewest for a balance of 3/2/2.
    assert_eq!(moved(&current, &out), 3);
}

#[test]
fn uniform_unsubscribing_moves_that_topic_only() {
    let topics = meta(&[("a", 4), ("b", 4)]);
    let old = uniform(&same(2, &["a", "b"]), &topics, &Assignment::new());
    let members = vec![sub(0, &["a"]), sub(1, &["a", "b"])];
    let new = uniform(&members, &topics, &old);
    assert!(new[&id(0)].iter().all(|p| p.topic == t("a")));
    assert!(new[&id(0)].is_subset(&old[&id(0)]) || new[&id(0)].len() == 4);
    // m0's b partitions move to m1; then m1 has 6 of 8 and gives a partitions back only if a
    // balance 4/4 is reachable: it is (m0 takes all of a).
    assert_eq!(counts(&new), [4, 4]);
}

#[test]
fn assignors_are_deterministic_whatever_the_input_order() {
    let topics = meta(&[("a", 11), ("b", 5), ("c", 3)]);
    let members = vec![
        sub(0, &["a", "b"]),
        sub(1, &["a", "c"]),
        sub(2, &["b", "c"]),
        sub(3, &["a"]),
    ];
    let mut reversed = members.clone();
    reversed.reverse();
    for kind in [AssignorKind::Range, AssignorKind::Uniform] {
        let first = assign(kind, &members, &topics, &Assignment::new());
        check_complete(&first, &members, &topics);
        assert_eq!(
            assign(kind, &reversed, &topics, &Assignment::new()),
            first,
            "{kind}"
        );
        assert_eq!(
            assign(kind, &members, &topics, &Assignment::new()),
            first,
            "{kind}"
        );
        // From a previous result, uniform is a fixed point and range ignores it.
        assert_eq!(assign(kind, &members, &topics, &first), first, "{kind}");
    }
}

#[test]
fn assignor_names_round_trip() {
    for kind in [AssignorKind::Range, AssignorKind::Uniform] {
        assert_eq!(kind.name().parse::<AssignorKind>(), Ok(kind));
    }
    assert!("sticky".parse::<AssignorKind>().is_err());
}

/// A small random problem: members' subscriptions over up to three topics, and a current
/// assignment that may name departed members, missing partitions and non-subscribers.
fn small_problem(
    homogeneous: bool,
) -> impl Strategy<Value = (Vec<MemberSubscription>, TopicMetadata, Assignment)> {
    let names = ["a", "b", "c"];
    (1usize..=4, prop::collection::vec(0u32..=3, 3)).prop_flat_map(move |(m, sizes)| {
        let subs = prop::collection::vec(prop::sample::subsequence(names.to_vec(), 1..=3), m);
        // For each of the (up to 3 × 3) partitions: an owner index (m + 1 = departed), or none.
        let owners = prop::collection::vec(prop::option::of(0..=m), 9);
        (subs, owners).prop_map(move |(subs, owners)| {
            let members: Vec<_> = (0..m)
                .map(|i| {
                    if homogeneous {
                        sub(i, &names)
                    } else {
                        sub(i, &subs[i])
                    }
                })
                .collect();
            let topics: TopicMetadata = names.iter().zip(&sizes).map(|(n, &c)| (t(n), c)).collect();
            let mut current = Assignment::new();
            for (k, owner) in owners.iter().enumerate() {
                if let Some(o) = owner {
                    current
                        .entry(id(*o))
                        .or_default()
                        .insert(tp(names[k / 3], (k % 3) as u32));
                }
            }
            (members, topics, current)
        })
    })
}

/// The smallest sum of squared member counts any complete assignment reaches (brute force).
fn best_sum_of_squares(members: &[MemberSubscription], topics: &TopicMetadata) -> usize {
    let all: Vec<Vec<usize>> = topics
        .iter()
        .flat_map(|(topic, &n)| {
            let eligible: Vec<usize> = (0..members.len())
                .filter(|&i| members[i].topics.contains(topic))
                .collect();
            (0..n).map(move |_| eligible.clone())
        })
        .filter(|e| !e.is_empty())
        .collect();
    fn go(all: &[Vec<usize>], counts: &mut Vec<usize>) -> usize {
        let Some((first, rest)) = all.split_first() else {
            return counts.iter().map(|c| c * c).sum();
        };
        first
            .iter()
            .map(|&m| {
                counts[m] += 1;
                let best = go(rest, counts);
                counts[m] -= 1;
                best
            })
            .min()
            .expect("eligible is not empty")
    }
    go(&all, &mut vec![0; members.len()])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn uniform_balance_is_optimal((members, topics, current) in small_problem(false)) {
        let out = uniform(&members, &topics, &current);
        let squares: usize = counts(&out).iter().map(|c| c * c).sum();
        prop_assert_eq!(squares, best_sum_of_squares(&members, &topics));
        // Sticky: a second run from its own output changes nothing.
        prop_assert_eq!(uniform(&members, &topics, &out), out);
    }

    #[test]
    fn uniform_moves_the_fewest_with_equal_subscriptions((members, topics, current) in small_problem(true)) {
        let out = uniform(&members, &topics, &current);
        let n: usize = topics.values().map(|&c| c as usize).sum();
        let (q, r) = (n / members.len(), n % members.len());
        // What each member can keep of `current` (owner still here, partition still exists).
        let valid = |p: &TopicPartition| topics.get(&p.topic).is_some_and(|&c| p.partition < c);
        let mut kept: Vec<usize> = members
            .iter()
            .map(|m| current.get(&m.member_id).map_or(0, |ps| ps.iter().filter(|p| valid(p)).count()))
            .collect();
        kept.sort_unstable_by(|a, b| b.cmp(a));
        let lower_bound: usize = kept.iter().enumerate().map(|(i, &k)| k.saturating_sub(q + usize::from(i < r))).sum();
        let kept_current: Assignment = members
            .iter()
            .map(|m| (m.member_id.clone(), current.get(&m.member_id).map_or_else(BTreeSet::new, |ps| ps.iter().filter(|p| valid(p)).cloned().collect())))
            .collect();
        prop_assert_eq!(moved(&kept_current, &out), lower_bound);
        let c = counts(&out);
        prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1);
    }
}
