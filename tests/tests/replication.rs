//! Partition replication with real broker processes (DESIGN.md §5, §9 invariants 1 and 2):
//! leaders SIGKILLed while a producer writes with acks=all, and afterwards every acknowledged
//! record is read back exactly once at the offset it was acknowledged at, offsets are dense, and
//! the replicas' logs agree byte for byte below the high watermark.
//!
//! The producer here does not retry a failed send (the client is built with one attempt and
//! re-created after a failure), so these tests check replication alone: a retry of a batch whose
//! answer was lost is the idempotent producer's business (`tests/idempotence.rs`). Values are
//! unique, so a duplicate, a gap or a lost acknowledged value all show.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use cairn_client::{Client, ConsumerConfig, NewTopic, ProducerConfig, ProducerRecord, SeekTo};
use cairn_tests::partition::{Acked, PARTITION_WAIT as WAIT, PartitionState, wait_acked};
use cairn_tests::{TestCluster, wait_for};

/// Fast failure detection, so each failover takes a few seconds.
const CONFIG: &str = "\
[cluster]
broker_heartbeat_interval_ms = 500
broker_session_timeout_ms = 3000

[replication]
replica_lag_time_max_ms = 5000
";

const TOPIC: &str = "ledger";

/// Partition 0 as broker `via` describes it.
async fn state(cluster: &TestCluster, via: u32) -> Option<PartitionState> {
    cluster.partition_state(via, TOPIC, 0).await
}

/// Produces unique values with acks=all until `stop`, recording what was acknowledged. A failed
/// send is not retried; the client is rebuilt so it finds the new leader.
async fn produce(bootstrap: Vec<String>, acked: Acked, stop: Arc<AtomicBool>) -> Result<u64> {
    let mut next = 0u64;
    let mut failures = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let client = match Client::builder()
            .brokers(bootstrap.clone())
            .retries(1)
            .request_timeout(Duration::from_secs(10))
            .build()
            .await
        {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let producer = client.producer(ProducerConfig::default());
        while !stop.load(Ordering::Relaxed) {
            let sends: Vec<_> = (0..20)
                .map(|_| {
                    next += 1;
                    let value = format!("value-{next:08}");
                    let send =
                        producer.send(ProducerRecord::new(TOPIC, value.clone()).partition(0));
                    async move { (value, send.await) }
                })
                .collect();
            let results = futures::future::join_all(sends).await;
            let mut failed = false;
            {
                let mut acked = acked.lock().await;
                for (value, result) in results {
                    match result {
                        Ok(meta) => {
                            acked.insert(value, meta.offset);
                        }
                        Err(_) => failed = true,
                    }
                }
            }
            if failed {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                break;
            }
        }
    }
    Ok(failures)
}

/// Every batch of partition 0 in `data_dir` below `hw`, as bytes, from the segment files.
fn committed_bytes(data_dir: &Path, hw: i64) -> Result<Vec<u8>> {
    let dir = data_dir.join(format!("{TOPIC}-0"));
    let mut logs: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    let mut out = Vec::new();
    for path in logs {
        let bytes = bytes::Bytes::from(std::fs::read(&path)?);
        for batch in cairn_batch::batches(&bytes) {
            let batch = batch.with_context(|| format!("reading {}", path.display()))?;
            let header = cairn_batch::peek_header(&batch)?;
            let last = header.base_offset + i64::from(header.last_offset_delta);
            if last < hw {
                out.extend_from_slice(&batch);
            }
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_leader_kills() -> Result<()> {
    let mut cluster = TestCluster::start(3, Some(CONFIG))?;
    cluster.create_replicated_topic(TOPIC, 1).await?;

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = tokio::spawn(produce(
        cluster.bootstrap(),
        Arc::clone(&acked),
        Arc::clone(&stop),
    ));

    // Kill the leader; bring it back; wait until it is in sync again.
    wait_acked(&acked, 200).await?;
    let leader = cluster.wait_full_isr(TOPIC, 0).await?;
    cluster.kill(leader);
    cluster.wait_new_leader(TOPIC, 0, leader).await?;
    wait_acked(&acked, 200).await?;
    cluster.restart(leader)?;
    cluster.wait_full_isr(TOPIC, 0).await?;

    // Twice in a row: kill the leader, bring it back, and kill the broker that took over as
    // soon as it leads, while the first may still be catching up (two of three down at once
    // would also take the metadata quorum down). Whoever leads next must hold everything
    // acknowledged.
    let first_kill = cluster.wait_full_isr(TOPIC, 0).await?;
    wait_acked(&acked, 200).await?;
    cluster.kill(first_kill);
    let next = cluster.wait_new_leader(TOPIC, 0, first_kill).await?;
    cluster.restart(first_kill)?;
    cluster.kill(next);
    cluster.wait_new_leader(TOPIC, 0, next).await?;
    wait_acked(&acked, 100).await?;
    cluster.restart(next)?;
    cluster.wait_full_isr(TOPIC, 0).await?;
    wait_acked(&acked, 200).await?;

    stop.store(true, Ordering::Relaxed);
    let failures = producer.await??;
    let acked = acked.lock().await.clone();

    // Every acknowledged value exactly once, at its offset; offsets dense from 0.
    let leader = cluster.wait_full_isr(TOPIC, 0).await?;
    let hw = state(&cluster, leader)
        .await
        .context("describing the partition")?
        .high_watermark;
    let client = cluster.client().await?;
    let mut consumer = client.consumer(ConsumerConfig::default());
    consumer.assign(TOPIC, 0..1);
    consumer.seek(TOPIC, 0, SeekTo::Earliest).await?;
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut expected_offset = 0;
    while expected_offset < hw {
        for r in consumer.next_batch().await? {
            ensure!(
                r.offset == expected_offset,
                "offset {} after {}: offsets are not dense",
                r.offset,
                expected_offset - 1
            );
            expected_offset += 1;
            let value = String::from_utf8(r.value.to_vec())?;
            if let Some(first) = seen.insert(value.clone(), r.offset) {
                bail!("{value} is stored twice, at {first} and {}", r.offset);
            }
        }
    }
    for (value, offset) in &acked {
        match seen.get(value) {
            Some(o) if o == offset => {}
            Some(o) => bail!("{value} was acknowledged at {offset} but is stored at {o}"),
            None => bail!("{value} was acknowledged at {offset} but is lost"),
        }
    }

    // The replicas agree byte for byte below the high watermark.
    for id in cluster.ids().collect::<Vec<_>>() {
        cluster.stop(id)?;
    }
    let reference = committed_bytes(cluster.broker(1).data_dir(), hw)?;
    ensure!(!reference.is_empty(), "nothing committed");
    for id in [2, 3] {
        let other = committed_bytes(cluster.broker(id).data_dir(), hw)?;
        ensure!(
            other == reference,
            "broker {id}'s log differs from broker 1's below the high watermark {hw}"
        );
    }
    eprintln!(
        "{} acknowledged, {} stored below hw {hw}, {failures} failed rounds",
        acked.len(),
        seen.len()
    );
    Ok(())
}

/// Produces `values` to partition 0 through broker `id` alone, with raw gRPC and acks=all.
async fn produce_via(
    cluster: &TestCluster,
    id: u32,
    values: &[String],
) -> Vec<Result<i64, tonic::Status>> {
    let addr = format!("http://{}", cluster.broker(id).addr());
    let Ok(channel) = tonic::transport::Endpoint::from_shared(addr).map(|e| e.connect_lazy())
    else {
        return Vec::new();
    };
    let calls = values.iter().map(|v| {
        let mut client = cairn_proto::v1::broker_client::BrokerClient::new(channel.clone());
        let request = cairn_proto::v1::ProduceRequest {
            topic: TOPIC.into(),
            partition: 0,
            acks: cairn_proto::v1::Acks::All as i32,
            records: vec![cairn_proto::v1::ProduceRecord {
                value_payload: Some(cairn_proto::v1::produce_record::ValuePayload::ValueText(
                    v.clone(),
                )),
                ..Default::default()
            }],
            ..Default::default()
        };
        async move {
            let call = client.produce(request);
            match tokio::time::timeout(Duration::from_secs(40), call).await {
                Ok(Ok(r)) => Ok(r.into_inner().base_offset),
                Ok(Err(status)) => Err(status),
                Err(_) => Err(tonic::Status::deadline_exceeded("no answer in 40 s")),
            }
        }
    });
    futures::future::join_all(calls).await
}

/// Every value stored in partition 0, read from the leader.
async fn stored_values(cluster: &TestCluster) -> Result<Vec<String>> {
    let leader = cluster.wait_full_isr(TOPIC, 0).await?;
    let hw = state(cluster, leader)
        .await
        .context("describing the partition")?
        .high_watermark;
    let client = cluster.client().await?;
    let mut consumer = client.consumer(ConsumerConfig::default());
    consumer.assign(TOPIC, 0..1);
    consumer.seek(TOPIC, 0, SeekTo::Earliest).await?;
    let mut out = Vec::new();
    while (out.len() as i64) < hw {
        for r in consumer.next_batch().await? {
            out.push(String::from_utf8(r.value.to_vec())?);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_acknowledges_nothing_after_it_was_replaced() -> Result<()> {
    let mut cluster = TestCluster::start(3, Some(CONFIG))?;
    cluster.create_replicated_topic(TOPIC, 1).await?;
    let old = cluster.wait_full_isr(TOPIC, 0).await?;
    let before: Vec<String> = (0..20).map(|i| format!("before-{i}")).collect();
    ensure!(
        produce_via(&cluster, old, &before)
            .await
            .iter()
            .all(Result::is_ok)
    );

    // Paused past its lease: fenced, replaced.
    cluster.pause(old)?;
    let new = cluster.wait_new_leader(TOPIC, 0, old).await?;
    // The new leader itself must know it leads (another broker may have told us first).
    wait_for("the new leader knows it leads", WAIT, || async {
        (state(&cluster, new).await?.leader == new).then_some(())
    })
    .await?;
    let during: Vec<String> = (0..20).map(|i| format!("during-{i}")).collect();
    ensure!(
        produce_via(&cluster, new, &during)
            .await
            .iter()
            .all(Result::is_ok)
    );

    // Resumed, it still believes it leads until the metadata reaches it; whatever it is sent
    // now must not be acknowledged.
    cluster.resume(old)?;
    let after: Vec<String> = (0..10).map(|i| format!("after-{i}")).collect();
    for (value, result) in after.iter().zip(produce_via(&cluster, old, &after).await) {
        ensure!(
            result.is_err(),
            "the replaced leader acknowledged {value} at offset {:?}",
            result.ok()
        );
    }

    // It rejoins as a follower, and the log holds exactly what was acknowledged.
    let leader = cluster.wait_full_isr(TOPIC, 0).await?;
    ensure!(
        leader != old || old == new,
        "the old leader took over again too early"
    );
    // Concurrent requests land in any order: compare sorted.
    let mut stored = stored_values(&cluster).await?;
    let mut expected: Vec<String> = before.iter().chain(&during).cloned().collect();
    stored.sort();
    expected.sort();
    ensure!(stored == expected, "stored {stored:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_catches_up_and_rejoins_the_isr() -> Result<()> {
    let mut cluster = TestCluster::start(3, Some(CONFIG))?;
    cluster.create_replicated_topic(TOPIC, 1).await?;
    let leader = cluster.wait_full_isr(TOPIC, 0).await?;
    let follower = cluster
        .ids()
        .find(|&id| id != leader)
        .context("a follower")?;
    cluster.kill(follower);
    cluster.wait_brokers_fenced(&[follower]).await?;
    wait_for("the ISR without the dead follower", WAIT, || async {
        (!state(&cluster, leader).await?.isr.contains(&follower)).then_some(())
    })
    .await?;
    // min_insync_replicas is 2: two live replicas still take acks=all writes.
    let values: Vec<String> = (0..300).map(|i| format!("v-{i}")).collect();
    for chunk in values.chunks(50) {
        let results = produce_via(&cluster, leader, chunk).await;
        ensure!(results.iter().all(Result::is_ok), "{results:?}");
    }
    cluster.restart(follower)?;
    cluster.wait_full_isr(TOPIC, 0).await?;
    let hw = state(&cluster, leader)
        .await
        .context("describe")?
        .high_watermark;
    ensure!(hw == 300, "high watermark {hw}");
    for id in cluster.ids().collect::<Vec<_>>() {
        cluster.stop(id)?;
    }
    let reference = committed_bytes(cluster.broker(leader).data_dir(), hw)?;
    let caught_up = committed_bytes(cluster.broker(follower).data_dir(), hw)?;
    ensure!(
        caught_up == reference,
        "the restarted follower's log differs"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_broker_hands_its_leaderships_over_first() -> Result<()> {
    let mut cluster = TestCluster::start(3, Some(CONFIG))?;
    cluster.create_replicated_topic(TOPIC, 1).await?;
    let leader = cluster.wait_full_isr(TOPIC, 0).await?;
    let other = cluster
        .ids()
        .find(|&id| id != leader)
        .context("another broker")?;
    cluster.stop(leader)?;
    // Right after the process exited (well within its 3 s session), another replica leads.
    let now = state(&cluster, other)
        .await
        .context("describing the partition")?
        .leader;
    ensure!(
        now != leader && now != 0,
        "after a graceful stop the partition is led by {now}, not handed over"
    );
    let results = produce_via(&cluster, now, &["after-stop".to_owned()]).await;
    ensure!(results.iter().all(Result::is_ok), "{results:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isr_below_min_insync_replicas_refuses_acks_all_and_writes_nothing() -> Result<()> {
    let mut cluster = TestCluster::start(3, Some(CONFIG))?;
    cluster.wait_brokers_alive(&[1, 2, 3]).await?;
    let client = cluster.client().await?;
    client
        .admin()
        .create_topic(NewTopic::new(TOPIC, 1).replication_factor(3).config(
            cairn_client::TopicConfig {
                min_insync_replicas: Some(3),
                ..Default::default()
            },
        ))
        .await?;
    let leader = cluster.wait_full_isr(TOPIC, 0).await?;
    let ok = produce_via(&cluster, leader, &["first".to_owned()]).await;
    ensure!(ok.iter().all(Result::is_ok), "{ok:?}");
    let follower = cluster
        .ids()
        .find(|&id| id != leader)
        .context("a follower")?;
    cluster.kill(follower);
    wait_for("the ISR without the dead follower", WAIT, || async {
        (state(&cluster, leader).await?.isr.len() == 2).then_some(())
    })
    .await?;
    let size_before = state(&cluster, leader)
        .await
        .context("describe")?
        .size_bytes;
    let refused = produce_via(&cluster, leader, &["second".to_owned()]).await;
    let status = match refused.into_iter().next() {
        Some(Err(status)) => status,
        other => bail!("acks=all with 2 of 3 in sync and min_insync_replicas 3: {other:?}"),
    };
    let reason = tonic_types::StatusExt::get_details_error_info(&status).map(|i| i.reason);
    ensure!(
        reason.as_deref() == Some("NOT_ENOUGH_REPLICAS"),
        "{status:?}"
    );
    // Nothing was written: the leader's log is as long as before.
    let hw = state(&cluster, leader)
        .await
        .context("describe")?
        .high_watermark;
    ensure!(hw == 1, "high watermark {hw}");
    ensure!(
        state(&cluster, leader)
            .await
            .context("describe")?
            .size_bytes
            == size_before,
        "the refused batch was written"
    );
    Ok(())
}
