//! Clients ride through outages (issue 11, point 6): a producer, and a `cairn topic consume -g`
//! member, across a whole-cluster stop and start on the same data directories (what
//! `scripts/cluster.sh stop; start` does).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cairn_client::{Client, ClientConfig, Producer, ProducerConfig, ProducerRecord, SeekTo};
use cairn_tests::group::{GroupMember, describe_group};
use cairn_tests::{TestCluster, wait_for};

const TOPIC: &str = "outage";
const GROUP: &str = "riders";
const PARTITIONS: u32 = 3;
const WAIT: Duration = Duration::from_secs(90);

/// How long the cluster stays down: the length of the fault, chosen past what a client with
/// default settings used to spend on retries (10 attempts, about 16 s) before failing a send
/// or ending a consumer.
fn outage() -> Duration {
    let c = ClientConfig::default();
    let budget: Duration = (1..c.retries)
        .map(|a| {
            c.retry_backoff
                .saturating_mul(1 << (a - 1).min(16))
                .min(c.retry_backoff_max)
        })
        .sum();
    budget + Duration::from_secs(4)
}

/// Brokers that notice a dead peer in seconds, with the groups' defaults (a 45 s session, as a
/// new user gets): a member keeps its partitions through the outage and must fetch on.
const CONFIG: &str = "[cluster]\nbroker_heartbeat_interval_ms = 500\nbroker_session_timeout_ms = 3000\n\n\
                      [groups]\noffsets_topic_partitions = 3\n";

async fn three_brokers() -> Result<TestCluster> {
    let cluster = TestCluster::start(3, Some(CONFIG))?;
    cluster.create_replicated_topic(TOPIC, PARTITIONS).await?;
    Ok(cluster)
}

/// Stops every broker, keeps the cluster down for [`outage`], and starts them all again.
async fn whole_cluster_restart(cluster: &mut TestCluster) -> Result<()> {
    for (id, stopped) in tokio::task::block_in_place(|| cluster.stop_all()) {
        stopped.with_context(|| format!("stopping broker {id}"))?;
    }
    tokio::time::sleep(outage()).await;
    tokio::task::block_in_place(|| cluster.restart_many(&[1, 2, 3]))?;
    Ok(())
}

/// Every value stored in `TOPIC`, read from the start up to the high watermarks.
async fn stored_values(client: &Client) -> Result<Vec<String>> {
    let ends: BTreeMap<u32, i64> = client
        .list_offsets(TOPIC, &[], SeekTo::Latest)
        .await?
        .into_iter()
        .map(|o| (o.partition, o.offset))
        .collect();
    let mut consumer = client.consumer(cairn_client::ConsumerConfig::default());
    for p in 0..PARTITIONS {
        consumer.seek(TOPIC, p, SeekTo::Earliest).await?;
    }
    let mut values = Vec::new();
    while (0..PARTITIONS).any(|p| consumer.position(TOPIC, p).unwrap_or(0) < ends[&p]) {
        let batch = tokio::time::timeout(WAIT, consumer.next_batch()).await??;
        values.extend(
            batch
                .iter()
                .filter(|r| r.offset < ends[&r.partition])
                .map(|r| String::from_utf8_lossy(&r.value).into_owned()),
        );
    }
    Ok(values)
}

/// Sends `v{i}` for every `i` in `range`, round-robin over the partitions, and waits for them.
async fn produce(producer: &Producer, range: std::ops::Range<u32>) -> Result<()> {
    let sends: Vec<_> = range
        .map(|i| {
            producer.send(ProducerRecord::new(TOPIC, format!("v{i}")).partition(i % PARTITIONS))
        })
        .collect();
    for ack in futures::future::join_all(sends).await {
        ack?;
    }
    Ok(())
}

/// A producer keeps sending while the whole cluster stops, stays down past the old retry
/// budget, and starts again: every send completes OK once the cluster is back, and each value
/// is stored exactly once (the idempotent producer's retries keep their sequence numbers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_rides_out_a_whole_cluster_restart() -> Result<()> {
    let mut cluster = three_brokers().await?;
    let client = cluster.client().await?;
    let producer = client.producer(ProducerConfig::default());
    produce(&producer, 0..10).await?;

    // One send every 20 ms, before, during and after the outage; each kept to be awaited.
    let sending = Arc::new(AtomicBool::new(true));
    let issued = Arc::new(AtomicU32::new(0));
    let sender = {
        let (producer, sending, issued) =
            (producer.clone(), Arc::clone(&sending), Arc::clone(&issued));
        tokio::spawn(async move {
            let mut sends = Vec::new();
            while sending.load(Ordering::Relaxed) {
                let value = format!("v{}", 10 + issued.fetch_add(1, Ordering::Relaxed));
                let send = producer.send(ProducerRecord::new(TOPIC, value.clone()));
                sends.push(tokio::spawn(async move { (value, send.await) }));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sends
        })
    };
    wait_for("sends issued before the outage", WAIT, || async {
        (issued.load(Ordering::Relaxed) >= 10).then_some(())
    })
    .await?;
    whole_cluster_restart(&mut cluster).await?;
    cluster.wait_brokers_alive(&[1, 2, 3]).await?;
    // Sends made after the restart are acknowledged too.
    produce(&producer, 100_000..100_010).await?;
    sending.store(false, Ordering::Relaxed);

    let mut expected: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    expected.extend((100_000..100_010).map(|i| format!("v{i}")));
    let mut during = 0;
    for send in sender.await? {
        let (value, ack) = send.await?;
        ensure!(ack.is_ok(), "sending {value} failed: {ack:?}");
        expected.push(value);
        during += 1;
    }
    ensure!(
        during > outage().as_millis() / 40,
        "only {during} sends were made around the outage"
    );
    let mut stored = stored_values(&client).await?;
    stored.sort();
    expected.sort();
    assert_eq!(
        stored.len(),
        expected.len(),
        "each value stored exactly once"
    );
    assert_eq!(stored, expected, "each value stored exactly once");
    Ok(())
}

/// A `cairn topic consume -g` member that printed and committed what was there keeps running
/// while the whole cluster stops, stays down past the old retry budget, and starts again; it
/// then carries on from its committed offsets: what it committed is not printed again and
/// every new record is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_group_member_rides_out_a_whole_cluster_restart() -> Result<()> {
    let mut cluster = three_brokers().await?;
    let client = cluster.client().await?;
    let producer = client.producer(ProducerConfig::default());
    produce(&producer, 0..30).await?;
    let mut member = GroupMember::start(&cluster.bootstrap_list(), TOPIC, GROUP)?;
    wait_for(
        "the member committed the first 30 records",
        WAIT,
        || async {
            let view = describe_group(&cluster, 1, GROUP, TOPIC).await?;
            let committed: i64 = view.progress.values().map(|p| p.0.max(0)).sum();
            (committed == 30).then_some(())
        },
    )
    .await?;

    whole_cluster_restart(&mut cluster).await?;
    ensure!(
        member.is_running(),
        "the member exited during the outage: {}",
        member.stderr()
    );
    cluster.wait_brokers_alive(&[1, 2, 3]).await?;
    produce(&producer, 30..60).await?;
    let printed = wait_for(
        "the member printed the records sent after the restart",
        WAIT,
        || {
            let printed = member.records();
            async move {
                let values: std::collections::BTreeSet<&str> =
                    printed.iter().map(|r| r.2.as_str()).collect();
                (30..60)
                    .all(|i| values.contains(format!("v{i}").as_str()))
                    .then_some(printed.clone())
            }
        },
    )
    .await?;
    ensure!(
        member.is_running(),
        "the member exited: {}",
        member.stderr()
    );
    let mut times: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, value) in &printed {
        *times.entry(value.clone()).or_default() += 1;
    }
    for i in 0..30 {
        assert_eq!(
            times.get(&format!("v{i}")),
            Some(&1),
            "v{i} was committed before the outage: printed once, never again ({})",
            member.stderr()
        );
    }
    member.stop()?;
    Ok(())
}

/// A `cairn topic consume` process (no group), killed on drop; its stdout lines collected.
struct Reader {
    child: std::process::Child,
    lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Reader {
    fn start(brokers: &str) -> Result<Self> {
        use std::io::BufRead;
        let mut child = std::process::Command::new(cairn_tests::cairn_bin())
            .args(["topic", "consume", TOPIC, "-o", "start", "-f", r"%v\n"])
            .env("CAIRN_BROKERS", brokers)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let lines: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let (out, into) = (child.stdout.take().context("stdout")?, Arc::clone(&lines));
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                into.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Ok(Self { child, lines })
    }

    fn printed(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain `cairn topic consume` (simple consumer, no group) keeps polling through a
/// whole-cluster restart and prints what is produced after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_consumer_keeps_polling_through_a_whole_cluster_restart() -> Result<()> {
    let mut cluster = three_brokers().await?;
    let client = cluster.client().await?;
    let producer = client.producer(ProducerConfig::default());
    produce(&producer, 0..10).await?;
    let mut reader = Reader::start(&cluster.bootstrap_list())?;
    wait_for("the first 10 records printed", WAIT, || async {
        (reader.printed().len() >= 10).then_some(())
    })
    .await?;

    whole_cluster_restart(&mut cluster).await?;
    ensure!(reader.is_running(), "the consumer exited during the outage");
    cluster.wait_brokers_alive(&[1, 2, 3]).await?;
    produce(&producer, 10..20).await?;
    wait_for(
        "the records sent after the restart printed",
        WAIT,
        || async {
            let printed = reader.printed();
            (10..20)
                .all(|i| printed.contains(&format!("v{i}")))
                .then_some(())
        },
    )
    .await?;
    ensure!(reader.is_running(), "the consumer exited");
    let mut printed = reader.printed();
    printed.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("v{i}")).collect();
    expected.sort();
    assert_eq!(printed, expected, "every record once, in a simple consumer");
    Ok(())
}
