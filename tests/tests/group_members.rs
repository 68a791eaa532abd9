//! Consumer groups with member processes (`cairn topic consume -g`) on real brokers: the
//! issue's scenario end to end (split, join, SIGKILLed member, SIGKILLed coordinator) and lag.

use std::time::Duration;

use anyhow::Result;
use cairn_tests::group::{fast_config, find_coordinator};
use cairn_tests::{TestCluster, wait_for};

/// Member processes, a fast session timeout, three offsets partitions.
fn members_config() -> String {
    fast_config("offsets_topic_partitions = 3\n")
}

const WAIT: Duration = Duration::from_secs(30);
const WORK: &str = "work";
const WORKERS: &str = "workers";
const LONG_WAIT: Duration = Duration::from_secs(90);

type AckedRecords = std::sync::Arc<std::sync::Mutex<Vec<(u32, i64, String)>>>;

/// Produces `v0, v1, …` round-robin over 6 partitions until `stop`, recording what was acked.
async fn produce_work(
    bootstrap: Vec<String>,
    acked: AckedRecords,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<()> {
    use cairn_client::{ProducerConfig, ProducerRecord};
    let client = cairn_client::Client::connect(bootstrap).await?;
    let producer = client.producer(ProducerConfig::default());
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let sends: Vec<_> = (0..12)
            .map(|_| {
                let value = format!("v{n}");
                let p = (n % 6) as u32;
                n += 1;
                let send = producer.send(ProducerRecord::new(WORK, value.clone()).partition(p));
                async move { (send.await, value) }
            })
            .collect();
        for (ack, value) in futures::future::join_all(sends).await {
            if let Ok(ack) = ack {
                acked
                    .lock()
                    .unwrap()
                    .push((ack.partition, ack.offset, value));
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

/// The scenario end to end with real processes: 3 members split 6 partitions 2-2-2; a
/// 4th joins and only the one partition that moves changes hands (the other 5 never pause); a
/// SIGKILLed member's partitions move after the session timeout; the coordinator's broker is
/// SIGKILLed and the group carries on from its committed offsets. Throughout, no sample of the
/// group shows a partition held by two members, and at the end every acknowledged record below
/// the committed offsets was consumed by some member: nothing committed was skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_splits_rebalances_and_survives_member_and_coordinator_deaths() -> Result<()> {
    use cairn_tests::group::{GroupMember, GroupView, describe_group_with};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    let mut cluster = TestCluster::start(3, Some(&members_config()))?;
    cluster.wait_brokers_alive(&[1, 2, 3]).await?;
    let client = cluster.client().await?;
    client
        .admin()
        .create_topic(cairn_client::NewTopic::new(WORK, 6).replication_factor(3))
        .await?;

    let acked: AckedRecords = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = tokio::spawn(produce_work(
        cluster.bootstrap(),
        Arc::clone(&acked),
        Arc::clone(&stop),
    ));

    let brokers = cluster.bootstrap_list();
    let mut members = vec![
        GroupMember::start(&brokers, WORK, WORKERS)?,
        GroupMember::start(&brokers, WORK, WORKERS)?,
        GroupMember::start(&brokers, WORK, WORKERS)?,
    ];

    // A sampler describes the group every 100 ms through a live broker.
    let admins: Vec<_> = (1..=3).map(|id| cluster.admin(id)).collect();
    let via = Arc::new(AtomicU32::new(1));
    let samples: Arc<std::sync::Mutex<Vec<GroupView>>> = Arc::default();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (admins, via, samples, sampling) = (
            admins.clone(),
            Arc::clone(&via),
            Arc::clone(&samples),
            Arc::clone(&sampling),
        );
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                let admin = admins[via.load(Ordering::Relaxed) as usize - 1].clone();
                if let Some(v) = describe_group_with(admin, WORKERS, WORK).await {
                    samples.lock().unwrap().push(v);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let view = || {
        let admin = admins[via.load(Ordering::Relaxed) as usize - 1].clone();
        describe_group_with(admin, WORKERS, WORK)
    };
    let settled = |shares: Vec<usize>| {
        let view = &view;
        async move {
            wait_for(
                &format!("the group settled at {shares:?}"),
                LONG_WAIT,
                || async {
                    let v = view().await?;
                    (v.stable && v.shares() == shares && v.holders().ok()?.len() == 6).then_some(v)
                },
            )
            .await
        }
    };

    // 3 members: 2 partitions each.
    let three = settled(vec![2, 2, 2]).await?;
    let before = three.holders().map_err(anyhow::Error::msg)?;
    let first_sample = samples.lock().unwrap().len();

    // A 4th joins: one partition moves to it, the other five stay where they are, untouched.
    members.push(GroupMember::start(&brokers, WORK, WORKERS)?);
    let four = settled(vec![1, 1, 2, 2]).await?;
    let after = four.holders().map_err(anyhow::Error::msg)?;
    let moved: Vec<u32> = (0..6).filter(|p| before[p] != after[p]).collect();
    // 2-2-2 → 2-2-1-1: minimal movement is one partition.
    assert_eq!(
        moved.len(),
        1,
        "only one partition moves: {before:?} → {after:?}"
    );
    for v in &samples.lock().unwrap()[first_sample..] {
        for p in (0..6).filter(|p| !moved.contains(p)) {
            assert!(
                v.assigned.get(&before[&p]).is_some_and(|s| s.contains(&p)),
                "partition {p} paused or moved while the 4th member joined: {v:?}"
            );
        }
    }

    // A member is SIGKILLed: its partitions move after the session timeout (5 s), not before.
    let killed_at = std::time::Instant::now();
    members[0].kill();
    let three_again = settled(vec![2, 2, 2]).await?;
    let took = killed_at.elapsed();
    assert!(
        took >= Duration::from_secs(4),
        "partitions moved {took:?} after the kill, before the session timeout"
    );
    assert_eq!(three_again.assigned.len(), 3);

    // The coordinator's broker is SIGKILLed: another takes the group over, members carry on.
    let coordinator = wait_for("the coordinator", WAIT, || {
        find_coordinator(&cluster, 2, WORKERS)
    })
    .await?
    .0;
    let survivor = (1..=3).find(|&id| id != coordinator).expect("survivors");
    via.store(survivor, Ordering::Relaxed);
    cluster.kill(coordinator);
    let acked_then = acked.lock().unwrap().len();
    wait_for(
        "more records acknowledged after the kill",
        LONG_WAIT,
        || async { (acked.lock().unwrap().len() > acked_then + 120).then_some(()) },
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    producer.await??;

    // Every acknowledged record gets consumed and committed: lag 0 everywhere.
    let ends: std::collections::BTreeMap<u32, i64> =
        acked
            .lock()
            .unwrap()
            .iter()
            .fold(Default::default(), |mut m, (p, o, _)| {
                let e = m.entry(*p).or_insert(0);
                *e = (*e).max(o + 1);
                m
            });
    let done = wait_for("the group caught up (lag 0)", LONG_WAIT, || async {
        let v = view().await?;
        ends.iter()
            .all(|(p, end)| {
                v.progress
                    .get(p)
                    .is_some_and(|&(c, _, lag, _)| c >= *end && lag == 0)
            })
            .then_some(v)
    })
    .await?;
    assert_eq!(done.assigned.len(), 3, "three members remain: {done:?}");
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    for m in &mut members[1..] {
        m.stop()?;
    }

    // No sample ever showed a partition with two holders.
    let samples = samples.lock().unwrap();
    assert!(samples.len() > 50, "only {} samples", samples.len());
    for v in samples.iter() {
        v.holders().map_err(anyhow::Error::msg)?;
    }
    // Nothing committed was skipped: every acked record below the committed offset was
    // consumed by some member, with the value it was written with.
    let consumed: std::collections::HashMap<(u32, i64), String> = members
        .iter()
        .flat_map(|m| m.records())
        .map(|(p, o, v)| ((p, o), v))
        .collect();
    for (p, o, value) in acked.lock().unwrap().iter() {
        let committed = done.progress[p].0;
        if *o < committed {
            assert_eq!(
                consumed.get(&(*p, *o)),
                Some(value),
                "record {p}@{o} ({value}) is below the committed offset {committed} but no \
                 member consumed it"
            );
        }
    }
    Ok(())
}

/// `cairn group describe`'s source of truth shows lag growing while a producer runs ahead of a
/// stopped group, in records and in time, and zero once a member caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_grows_while_the_group_is_stopped_and_returns_to_zero() -> Result<()> {
    use cairn_client::{ProducerConfig, ProducerRecord};
    use cairn_tests::group::{GroupMember, describe_group};

    let cluster = TestCluster::start(1, Some(&members_config()))?;
    cluster.wait_brokers_alive(&[1]).await?;
    let client = cluster.client().await?;
    client
        .admin()
        .create_topic(cairn_client::NewTopic::new(WORK, 2))
        .await?;
    let producer = client.producer(ProducerConfig::default());
    let produce = |from: u32, n: u32| {
        let producer = &producer;
        async move {
            for i in from..from + n {
                producer
                    .send(ProducerRecord::new(WORK, format!("r{i}")).partition(i % 2))
                    .await?;
            }
            anyhow::Ok(())
        }
    };
    let lag = || async {
        let v = describe_group(&cluster, 1, WORKERS, WORK).await?;
        let total: i64 = v.progress.values().map(|p| p.2).sum();
        let oldest_ms = v.progress.values().map(|p| p.3).max()?;
        Some((total, oldest_ms))
    };

    produce(0, 20).await?;
    let mut member = GroupMember::start(&cluster.bootstrap_list(), WORK, WORKERS)?;
    wait_for("the member caught up", LONG_WAIT, || async {
        (lag().await? == (0, 0)).then_some(())
    })
    .await?;
    member.stop()?;
    assert_eq!(member.records().len(), 20);

    produce(20, 30).await?;
    let (first, first_ms) = wait_for("lag of 30", WAIT, || async {
        lag().await.filter(|l| l.0 == 30)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    produce(50, 40).await?;
    let (second, second_ms) = wait_for("lag of 70", WAIT, || async {
        lag().await.filter(|l| l.0 == 70)
    })
    .await?;
    assert!(second > first);
    assert!(
        first_ms >= 0 && second_ms > first_ms,
        "lag in time grows: {first_ms} → {second_ms}"
    );
    // What an operator sees: `cairn group describe` says the same.
    let described = cli_lag(&cluster.bootstrap_list()).await?;
    assert_eq!(described.0, 70, "cairn group describe: {described:?}");
    assert!(
        described.1 >= second_ms,
        "cairn group describe: {described:?}"
    );

    let member = GroupMember::start(&cluster.bootstrap_list(), WORK, WORKERS)?;
    wait_for("lag back to zero", LONG_WAIT, || async {
        (lag().await? == (0, 0)).then_some(())
    })
    .await?;
    assert_eq!(cli_lag(&cluster.bootstrap_list()).await?, (0, 0));
    // The second member started where the first committed: nothing twice, nothing skipped.
    let mut values: Vec<String> = member.records().into_iter().map(|r| r.2).collect();
    values.sort();
    let mut expected: Vec<String> = (20..90).map(|i| format!("r{i}")).collect();
    expected.sort();
    assert_eq!(values, expected);
    Ok(())
}

/// Total lag in records and the largest lag in ms, as `cairn group describe --format json`
/// prints them for the `work` partitions.
async fn cli_lag(brokers: &str) -> Result<(i64, i64)> {
    let brokers = brokers.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        cairn_tests::run_cli(
            &brokers,
            &["group", "describe", WORKERS, "--format", "json"],
            "",
            Duration::from_secs(30),
        )
    })
    .await??;
    anyhow::ensure!(
        out.status.success(),
        "cairn group describe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let parts = v["partitions"].as_array().cloned().unwrap_or_default();
    let work = parts.iter().filter(|p| p["topic"] == WORK);
    let total = work.clone().map(|p| p["lag"].as_i64().unwrap_or(-1)).sum();
    let oldest = work
        .map(|p| p["lag_ms"].as_i64().unwrap_or(-1))
        .max()
        .unwrap_or(-1);
    Ok((total, oldest))
}
