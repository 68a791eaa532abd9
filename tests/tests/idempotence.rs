//! The idempotent producer against real brokers (DESIGN.md §9 invariant 3: with the idempotent
//! producer, retries never duplicate): a batch sent twice is stored once and both answers carry
//! the same offsets; a sequence gap is refused and writes nothing; duplicates are still spotted
//! after a crash, a clean restart and segment rolls; and on a 3-broker cluster a retrying
//! producer whose partition leader is SIGKILLed twice ends up with every acknowledged value
//! stored exactly once, at the offset it was acknowledged at.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use cairn_batch::{BatchBuilder, Record};
use cairn_client::{
    Client, ConsumerConfig, NewTopic, ProducerConfig, ProducerRecord, SeekTo, TopicConfig,
};
use cairn_proto::v1::broker_client::BrokerClient;
use cairn_proto::v1::{Acks, InitProducerIdRequest, ProduceRequest, ProduceResponse};
use cairn_tests::partition::{Acked, PARTITION_WAIT as WAIT, wait_acked};
use cairn_tests::{TestBroker, TestCluster, wait_for};
use tonic::transport::Channel;
use tonic_types::StatusExt;

const TOPIC: &str = "once";

async fn broker_client(url: String) -> Result<BrokerClient<Channel>> {
    Ok(BrokerClient::connect(url).await?)
}

async fn init_producer_id(c: &mut BrokerClient<Channel>) -> Result<(i64, i16)> {
    let r = c
        .init_producer_id(InitProducerIdRequest {})
        .await?
        .into_inner();
    Ok((r.producer_id, i16::try_from(r.producer_epoch)?))
}

/// Now, in ms since the Unix epoch (records with old timestamps would be deleted by the default
/// 7-day retention as soon as their segment rolls).
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A batch of `count` records from producer `id` (epoch 0) starting at sequence `seq`.
fn batch(id: i64, seq: i32, count: i32) -> Bytes {
    let mut b = BatchBuilder::new().producer(id, 0, seq);
    for i in 0..count {
        b.push(&Record {
            timestamp: now_ms(),
            key: Some(Bytes::from_static(&[b'k'; 50])),
            value: Bytes::from(format!("p{id}-s{}", seq + i)),
            headers: vec![],
        });
    }
    b.finish()
}

async fn produce(
    c: &mut BrokerClient<Channel>,
    batches: Bytes,
) -> Result<ProduceResponse, tonic::Status> {
    c.produce(ProduceRequest {
        topic: TOPIC.into(),
        partition: 0,
        acks: Acks::All as i32,
        batches,
        records: Vec::new(),
    })
    .await
    .map(tonic::Response::into_inner)
}

/// The `ErrorInfo` reason of a status.
fn reason(s: &tonic::Status) -> String {
    s.get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// Every value stored in partition 0, with its offset, read through `client` up to the high
/// watermark.
async fn stored(client: &Client) -> Result<Vec<(i64, String)>> {
    let offsets = client.list_offsets(TOPIC, &[0], SeekTo::Latest).await?;
    let hw = offsets.first().context("partition 0")?.offset;
    let mut consumer = client.consumer(ConsumerConfig::default());
    consumer.assign(TOPIC, 0..1);
    consumer.seek(TOPIC, 0, SeekTo::Earliest).await?;
    let mut out = Vec::new();
    let mut next = 0;
    while next < hw {
        for r in consumer.next_batch().await? {
            next = r.offset + 1;
            out.push((r.offset, String::from_utf8(r.value.to_vec())?));
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_twice_is_stored_once_and_a_gap_is_refused() -> Result<()> {
    let broker = TestBroker::start()?;
    let client = Client::connect([broker.url()]).await?;
    client.admin().create_topic(NewTopic::new(TOPIC, 1)).await?;
    let mut c = broker_client(broker.url()).await?;
    let (id, epoch) = init_producer_id(&mut c).await?;
    let (other, _) = init_producer_id(&mut c).await?;
    ensure!(epoch == 0 && id >= 0 && other != id, "ids {id} and {other}");

    let first = produce(&mut c, batch(id, 0, 3)).await?;
    let again = produce(&mut c, batch(id, 0, 3)).await?;
    ensure!(
        (first.base_offset, first.last_offset) == (0, 2),
        "first write at {first:?}"
    );
    ensure!(
        (again.base_offset, again.last_offset) == (first.base_offset, first.last_offset),
        "the retry was answered {again:?}, the original {first:?}"
    );
    produce(&mut c, batch(id, 3, 2)).await?;

    // A gap, a restart of a known producer's sequence, and an unknown producer: refused.
    for (what, bytes, want) in [
        ("a gap", batch(id, 6, 1), "OUT_OF_ORDER_SEQUENCE_NUMBER"),
        (
            "an old sequence",
            batch(id, 1, 1),
            "OUT_OF_ORDER_SEQUENCE_NUMBER",
        ),
        (
            "an unknown producer",
            batch(other, 4, 1),
            "UNKNOWN_PRODUCER_ID",
        ),
    ] {
        match produce(&mut c, bytes).await {
            Ok(r) => bail!("{what} was written at {r:?}"),
            Err(s) => {
                ensure!(reason(&s) == want, "{what}: {s:?}");
                ensure!(s.code() == tonic::Code::FailedPrecondition, "{what}: {s:?}");
            }
        }
    }

    let values: Vec<String> = stored(&client).await?.into_iter().map(|(_, v)| v).collect();
    let want: Vec<String> = (0..5).map(|s| format!("p{id}-s{s}")).collect();
    ensure!(values == want, "stored {values:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_spotted_after_restarts_and_segment_rolls() -> Result<()> {
    let mut broker = TestBroker::start()?;
    let client = Client::connect([broker.url()]).await?;
    let config = TopicConfig {
        segment_bytes: Some(4096),
        ..TopicConfig::default()
    };
    client
        .admin()
        .create_topic(NewTopic::new(TOPIC, 1).config(config))
        .await?;
    let mut c = broker_client(broker.url()).await?;
    let (id, _) = init_producer_id(&mut c).await?;
    // 40 batches of 10 records, about 600 bytes each: several segments.
    let mut offsets = Vec::new();
    for i in 0..40 {
        let r = produce(&mut c, batch(id, 10 * i, 10)).await?;
        offsets.push((r.base_offset, r.last_offset));
    }
    let partition_dir = broker.data_dir().join(format!("{TOPIC}-0"));
    let count = |suffix: &str| -> Result<usize> {
        Ok(std::fs::read_dir(&partition_dir)?
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(suffix))
            })
            .count())
    };
    ensure!(count(".log")? > 3, "the log rolled");
    ensure!(count(".snapshot")? > 0, "a roll wrote a producer snapshot");

    let mut next = 40;
    for how in ["a crash", "a clean restart"] {
        if how == "a crash" {
            broker.restart()?; // SIGKILL, then start again
        } else {
            broker.stop()?;
            broker.restart()?;
        }
        let mut c = broker_client(broker.url()).await?;
        wait_for("the partition to take writes again", WAIT, || {
            let mut c = c.clone();
            async move {
                c.init_producer_id(InitProducerIdRequest {}).await.ok()?;
                produce(&mut c, batch(id, 10 * (next - 1), 10)).await.ok()
            }
        })
        .await?;
        // Each of the last five batches is answered with its first offsets, writing nothing.
        for i in next - 5..next {
            let r = produce(&mut c, batch(id, 10 * i, 10)).await?;
            ensure!(
                (r.base_offset, r.last_offset) == offsets[i as usize],
                "after {how}, batch {i} was answered {r:?}, first written at {:?}",
                offsets[i as usize]
            );
        }
        let gap = produce(&mut c, batch(id, 10 * next + 1, 10)).await;
        ensure!(
            gap.as_ref()
                .is_err_and(|s| reason(s) == "OUT_OF_ORDER_SEQUENCE_NUMBER"),
            "after {how}, a gap was answered {gap:?}"
        );
        let r = produce(&mut c, batch(id, 10 * next, 10)).await?;
        ensure!(r.base_offset == 10 * i64::from(next), "after {how}: {r:?}");
        offsets.push((r.base_offset, r.last_offset));
        next += 1;
    }

    let values: Vec<(i64, String)> = stored(&client).await?;
    ensure!(
        values.len() == 10 * next as usize,
        "{} records stored",
        values.len()
    );
    for (i, (offset, value)) in values.iter().enumerate() {
        ensure!(
            *offset == i as i64 && *value == format!("p{id}-s{i}"),
            "{offset}: {value}"
        );
    }
    Ok(())
}

/// Fast failure detection, so each failover takes a few seconds; an acks=all write times out
/// (REQUEST_TIMED_OUT, which the client retries) well before a stuck follower leaves the ISR.
const CLUSTER_CONFIG: &str = "\
[cluster]
broker_heartbeat_interval_ms = 500
broker_session_timeout_ms = 3000

[replication]
replica_lag_time_max_ms = 5000
acks_all_timeout_ms = 1000
";

/// One producer with the client's defaults (idempotent, retrying) sends unique values until
/// `stop`, 20 at a time, recording the acknowledged ones. Returns how many sends failed.
async fn produce_unique(client: Client, acked: Acked, stop: Arc<AtomicBool>) -> Result<usize> {
    let producer = client.producer(ProducerConfig::default());
    let mut next = 0u64;
    let mut failed = 0;
    while !stop.load(Ordering::Relaxed) {
        let sends: Vec<_> = (0..20)
            .map(|_| {
                next += 1;
                let value = format!("value-{next:08}");
                let send = producer.send(ProducerRecord::new(TOPIC, value.clone()).partition(0));
                async move { (value, send.await) }
            })
            .collect();
        for (value, result) in futures::future::join_all(sends).await {
            match result {
                Ok(meta) => {
                    acked.lock().await.insert(value, meta.offset);
                }
                Err(e) => {
                    eprintln!("{value} failed: {e}");
                    failed += 1;
                }
            }
        }
    }
    Ok(failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_across_leader_kills_store_each_value_once() -> Result<()> {
    let mut cluster = TestCluster::start(3, Some(CLUSTER_CONFIG))?;
    cluster.create_replicated_topic(TOPIC, 1).await?;

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = tokio::spawn(produce_unique(
        cluster.client().await?,
        Arc::clone(&acked),
        Arc::clone(&stop),
    ));

    // A follower stuck (SIGSTOP) until the ISR drops it: meanwhile the leader writes the
    // batches in flight but cannot acknowledge them, and the producer retries each of them to
    // the same leader several times; every retry must be answered with the first offsets
    // instead of being written again.
    wait_acked(&acked, 300).await?;
    let leader = cluster.wait_full_isr(TOPIC, 0).await?;
    let controller = cluster.wait_controller(None).await?;
    let stuck = cluster
        .ids()
        .find(|&id| id != leader && id != controller)
        .or_else(|| cluster.ids().find(|&id| id != leader))
        .context("a follower")?;
    cluster.pause(stuck)?;
    wait_for("the ISR to drop the stuck follower", WAIT, || async {
        let isr = cluster.partition_state(leader, TOPIC, 0).await?.isr;
        (!isr.contains(&stuck)).then_some(())
    })
    .await?;
    wait_acked(&acked, 300).await?;
    cluster.resume(stuck)?;
    cluster.wait_full_isr(TOPIC, 0).await?;

    // Twice: SIGKILL the leader mid-stream (batches in flight are retried to the new leader,
    // which must recognise those the old one already wrote), then bring it back in sync.
    for _ in 0..2 {
        wait_acked(&acked, 300).await?;
        let leader = cluster.wait_full_isr(TOPIC, 0).await?;
        cluster.kill(leader);
        cluster.wait_new_leader(TOPIC, 0, leader).await?;
        wait_acked(&acked, 300).await?;
        cluster.restart(leader)?;
        cluster.wait_full_isr(TOPIC, 0).await?;
    }
    wait_acked(&acked, 200).await?;
    stop.store(true, Ordering::Relaxed);
    let failed = producer.await??;
    let acked = acked.lock().await.clone();

    let values = stored(&cluster.client().await?).await?;
    let mut seen: HashMap<&str, i64> = HashMap::new();
    for (i, (offset, value)) in values.iter().enumerate() {
        ensure!(
            *offset == i as i64,
            "offset {offset} at position {i}: not dense"
        );
        if let Some(first) = seen.insert(value, *offset) {
            bail!("{value} is stored twice, at {first} and {offset}");
        }
    }
    for (value, offset) in &acked {
        match seen.get(value.as_str()) {
            Some(o) if o == offset => {}
            Some(o) => bail!("{value} was acknowledged at {offset} but is stored at {o}"),
            None => bail!("{value} was acknowledged at {offset} but is lost"),
        }
    }
    eprintln!(
        "{} acknowledged, {} stored, {failed} sends failed",
        acked.len(),
        values.len()
    );
    Ok(())
}
