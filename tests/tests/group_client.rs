//! Consumer groups through the public client and the CLI, against a real broker with fast group
//! timers: two members split a topic, every record is read once across them, and when one
//! closes the other takes its partitions over from the committed offsets; `topic consume -g`,
//! `group describe`, `group seek` and `group delete` as a script uses them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cairn_client::{
    Client, GroupConsumer, GroupConsumerConfig, GroupEvent, GroupState, NewTopic, OffsetReset,
    ProducerConfig, ProducerRecord, TopicPartition,
};
use cairn_tests::{TestBroker, cairn_bin, run_cli};
use futures::StreamExt;
use serde_json::Value;

/// Members heartbeat every 200 ms and time out after 3 s.
const CONFIG: &str = "\
[groups]
heartbeat_interval_ms = 200
session_timeout_ms = 3000
";

const WAIT: Duration = Duration::from_secs(60);
const PARTITIONS: u32 = 4;

/// A broker started with [`CONFIG`]; the directory holding the config file lives as long.
fn broker() -> Result<(TestBroker, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let path: PathBuf = dir.path().join("cairn.toml");
    std::fs::write(&path, CONFIG)?;
    let broker = TestBroker::start_with(&["--config", path.to_str().context("utf-8 path")?])?;
    Ok((broker, dir))
}

/// Produces `per_partition` records to each partition of `topic`, valued `p-o` by partition
/// and running number.
async fn produce(client: &Client, topic: &str, from: u32, per_partition: u32) -> Result<()> {
    let producer = client.producer(ProducerConfig::default());
    let sends = (0..PARTITIONS).flat_map(|p| {
        let producer = &producer;
        (from..from + per_partition).map(move |i| {
            producer.send(ProducerRecord::new(topic, format!("{p}-{i}")).partition(p))
        })
    });
    for ack in futures::future::join_all(sends).await {
        ack?;
    }
    producer.flush().await?;
    Ok(())
}

/// A group member under test and what its stream gave it.
struct Member {
    name: &'static str,
    consumer: GroupConsumer,
    /// (partition, offset) of every record handed out.
    records: Vec<(u32, i64)>,
    lost: Vec<TopicPartition>,
}

impl Member {
    fn new(client: &Client, name: &'static str, group: &str, topic: &str) -> Self {
        let mut consumer = client.group_consumer(
            GroupConsumerConfig::new(group)
                .offset_reset(OffsetReset::Earliest)
                .auto_commit(Some(Duration::from_millis(300)))
                .session_timeout(Duration::from_secs(3)),
        );
        consumer.subscribe([topic]);
        Self {
            name,
            consumer,
            records: Vec::new(),
            lost: Vec::new(),
        }
    }

    fn owned(&self) -> BTreeSet<u32> {
        self.consumer
            .assignment()
            .into_iter()
            .map(|tp| tp.partition)
            .collect()
    }

    fn take(&mut self, event: Option<cairn_client::Result<GroupEvent>>) -> Result<()> {
        match event.with_context(|| format!("{}'s stream ended", self.name))? {
            Ok(GroupEvent::Record(r)) => self.records.push((r.partition, r.offset)),
            Ok(GroupEvent::Lost(p)) => self.lost.extend(p),
            Ok(_) => {}
            Err(e) => bail!("{}: {e}", self.name),
        }
        Ok(())
    }
}

/// Polls every member's stream until `done` holds of them all.
async fn pump(
    members: &mut [&mut Member],
    what: &str,
    done: impl Fn(&[&mut Member]) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done(members) {
        let (event, i) = {
            let nexts: Vec<_> = members.iter_mut().map(|m| m.consumer.next()).collect();
            let (event, i, _) =
                tokio::time::timeout_at(deadline, futures::future::select_all(nexts))
                    .await
                    .with_context(|| format!("timed out after {WAIT:?} waiting for {what}"))?;
            (event, i)
        };
        members[i].take(event)?;
    }
    Ok(())
}

fn total(members: &[&mut Member]) -> usize {
    members.iter().map(|m| m.records.len()).sum()
}

/// Every (partition, offset) of `records`, checked to hold each offset of `0..end` of every
/// partition exactly once.
fn assert_exactly_once(records: &[(u32, i64)], end: i64) {
    let mut seen: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
    for &(p, o) in records {
        seen.entry(p).or_default().push(o);
    }
    for p in 0..PARTITIONS {
        let mut offsets = seen.remove(&p).unwrap_or_default();
        offsets.sort_unstable();
        let want: Vec<i64> = (0..end).collect();
        assert_eq!(offsets, want, "partition {p}: every offset once");
    }
    assert!(seen.is_empty(), "records of unknown partitions: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_a_topic_and_one_takes_over_from_the_commits() -> Result<()> {
    let (broker, _config) = broker()?;
    let client = Client::connect([broker.addr().to_string()]).await?;
    client
        .admin()
        .create_topic(NewTopic::new("orders", PARTITIONS))
        .await?;
    produce(&client, "orders", 0, 50).await?;

    let mut a = Member::new(&client, "a", "billing", "orders");
    let mut b = Member::new(&client, "b", "billing", "orders");
    pump(&mut [&mut a, &mut b], "a 2/2 split", |m| {
        m.iter().all(|m| m.owned().len() == 2) && m[0].owned().is_disjoint(&m[1].owned())
    })
    .await?;

    // More records once split: each member reads only its own partitions, and across both
    // every record comes exactly once (revoked partitions were committed before release).
    produce(&client, "orders", 50, 50).await?;
    pump(&mut [&mut a, &mut b], "all 400 records", |m| {
        total(m) >= 400
    })
    .await?;
    let (a_owned, b_owned) = (a.owned(), b.owned());
    let all: Vec<(u32, i64)> = a.records.iter().chain(&b.records).copied().collect();
    assert_exactly_once(&all, 100);
    a.consumer.commit().await?;
    b.consumer.commit().await?;
    let admin = client.admin();
    let group = admin.describe_group("billing").await?;
    assert_eq!(group.members.len(), 2, "{group:?}");
    assert_eq!(group.state, GroupState::Stable as i32, "{group:?}");
    for p in &group.partitions {
        assert_eq!((p.committed_offset, p.lag), (100, 0), "{p:?}");
    }

    // a leaves (committing what it read); b takes a's partitions from a's positions.
    let handed_over: BTreeMap<u32, i64> = a_owned
        .iter()
        .map(|&p| (p, a.consumer.position("orders", p).expect("owned")))
        .collect();
    let Member {
        consumer, records, ..
    } = a;
    consumer.close().await?;
    let before = b.records.len();
    produce(&client, "orders", 100, 25).await?;
    pump(&mut [&mut b], "b owning all 4 and reading the rest", |m| {
        m[0].owned().len() == PARTITIONS as usize && total(m) >= before + 100
    })
    .await?;
    for (&p, &from) in &handed_over {
        let first = b.records[before..]
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .min();
        assert_eq!(
            first,
            Some(from),
            "b continues partition {p} where a committed"
        );
    }
    let all: Vec<(u32, i64)> = records.iter().chain(&b.records).copied().collect();
    assert_exactly_once(&all, 125);
    assert!(b.lost.is_empty(), "nothing lost: {:?}", b.lost);
    assert!(b_owned.is_subset(&b.owned()));

    // b closes: everything committed, the group empty.
    b.consumer.close().await?;
    let group = admin.describe_group("billing").await?;
    assert!(group.members.is_empty(), "{group:?}");
    assert_eq!(group.state, GroupState::Empty as i32);
    for p in &group.partitions {
        assert_eq!((p.committed_offset, p.lag), (125, 0), "{p:?}");
    }
    let listed = admin.list_groups().await?;
    assert!(
        listed
            .iter()
            .any(|g| g.group_id == "billing" && g.members == 0)
    );
    Ok(())
}

/// How long any one command may take before the test calls it hung.
const DEADLINE: Duration = Duration::from_secs(120);

fn cli(broker: &TestBroker, args: &[&str]) -> Output {
    run_cli(&broker.addr().to_string(), args, "", DEADLINE)
        .unwrap_or_else(|e| panic!("cairn {args:?}: {e:#}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a command that must succeed; returns its stdout and stderr.
fn ok(broker: &TestBroker, args: &[&str]) -> (String, String) {
    let o = cli(broker, args);
    assert!(
        o.status.success(),
        "cairn {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    (text(&o.stdout), text(&o.stderr))
}

/// Runs a command that must fail; returns its stderr.
fn refused(broker: &TestBroker, args: &[&str]) -> String {
    let o = cli(broker, args);
    assert!(
        !o.status.success(),
        "cairn {args:?} should fail:\nstdout: {}",
        text(&o.stdout)
    );
    text(&o.stderr)
}

fn describe(broker: &TestBroker, group: &str) -> Value {
    let (out, _) = ok(broker, &["group", "describe", group, "--format", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The sum of `field` over the partitions of a group description (-1 counts as 0).
fn partition_sum(group: &Value, field: &str) -> i64 {
    group["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p[field].as_i64().expect("a number").max(0))
        .sum()
}

/// Polls `check` every 50 ms until it holds, for at most `WAIT`.
fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `topic consume -g` in the background, until it is signalled.
fn member_process(broker: &TestBroker, topic: &str, group: &str) -> Child {
    Command::new(cairn_bin())
        .args(["topic", "consume", topic, "-g", group])
        .env("CAIRN_BROKERS", broker.addr().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning cairn topic consume -g")
}

#[test]
fn cli_members_commit_what_they_print_and_seek_waits_for_an_empty_group() {
    let (broker, _config) = broker().unwrap();
    ok(&broker, &["topic", "create", "events", "-p", "2"]);
    let input: String = (0..10).map(|i| format!("e{i}\n")).collect();
    let o = run_cli(
        &broker.addr().to_string(),
        &["topic", "produce", "events"],
        &input,
        DEADLINE,
    )
    .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));

    // Flags a group member cannot honour.
    for flags in [&["-p", "0"][..], &["-o", "5"], &["-o", "-2"], &["-e"]] {
        let args: Vec<&str> = ["topic", "consume", "events", "-g", "readers"]
            .into_iter()
            .chain(flags.iter().copied())
            .collect();
        let e = refused(&broker, &args);
        assert!(e.contains("-g"), "{flags:?}: {e}");
    }

    // Two members in turn read every record once: the first commits the 4 it printed and
    // leaves, the second starts where it stopped.
    let (first, err) = ok(
        &broker,
        &["topic", "consume", "events", "-g", "readers", "-n", "4"],
    );
    assert_eq!(first.lines().count(), 4, "{first}");
    assert!(err.contains("assigned: events-0,events-1"), "{err}");
    let group = describe(&broker, "readers");
    assert_eq!(group["state"], "EMPTY", "{group}");
    assert_eq!(partition_sum(&group, "committed_offset"), 4, "{group}");
    assert_eq!(partition_sum(&group, "lag"), 6, "{group}");
    let (rest, _) = ok(
        &broker,
        &["topic", "consume", "events", "-g", "readers", "-n", "6"],
    );
    let mut all: Vec<&str> = first.lines().chain(rest.lines()).collect();
    all.sort_unstable();
    let mut want: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    want.sort_unstable();
    assert_eq!(all, want, "every record once across the two members");
    let (table, _) = ok(&broker, &["group", "describe", "readers"]);
    assert!(
        table.contains("COMMITTED") && table.contains("LAG-MS"),
        "{table}"
    );
    let (list, _) = ok(&broker, &["group", "list"]);
    assert!(list.lines().any(|l| l.starts_with("readers")), "{list}");

    // A member is active: offsets cannot move, not even in a dry run.
    let mut member = member_process(&broker, "events", "readers");
    until("the member in the group's description", || {
        describe(&broker, "readers")["members"]
            .as_array()
            .is_some_and(|m| m.len() == 1)
    });
    for dry in [true, false] {
        let mut args = vec![
            "group", "seek", "readers", "--topic", "events", "--to", "earliest",
        ];
        if dry {
            args.push("--dry-run");
        }
        let e = refused(&broker, &args);
        assert!(e.contains("active member"), "dry run {dry}: {e}");
    }
    // SIGTERM: it commits, leaves and exits cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &member.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = wait_output(&mut member);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("assigned: events-0,events-1"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "", "nothing new to print");
    assert_eq!(
        describe(&broker, "readers")["members"],
        Value::Array(vec![])
    );

    // A dry run says where the offsets would go and moves nothing; the real seek moves them.
    let (dry, err) = ok(
        &broker,
        &[
            "group",
            "seek",
            "readers",
            "--topic",
            "events",
            "--to",
            "earliest",
            "--dry-run",
            "--format",
            "json",
        ],
    );
    let dry: Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["offsets"].as_array().map(Vec::len), Some(2), "{dry}");
    assert!(
        dry["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["offset"] == 0)
    );
    assert!(err.is_empty(), "json output is quiet: {err}");
    assert_eq!(
        partition_sum(&describe(&broker, "readers"), "committed_offset"),
        10
    );
    ok(
        &broker,
        &[
            "group", "seek", "readers", "--topic", "events", "--to", "earliest",
        ],
    );
    let group = describe(&broker, "readers");
    assert_eq!(partition_sum(&group, "committed_offset"), 0, "{group}");
    assert_eq!(partition_sum(&group, "lag"), 10, "{group}");
    let (again, _) = ok(
        &broker,
        &["topic", "consume", "events", "-g", "readers", "-n", "10"],
    );
    assert_eq!(
        again.lines().count(),
        10,
        "read again from the start: {again}"
    );

    // Deleted, the group is gone.
    ok(&broker, &["group", "delete", "readers"]);
    let e = refused(&broker, &["group", "describe", "readers"]);
    assert!(e.contains("does not exist"), "{e}");
    let (list, _) = ok(&broker, &["group", "list", "--format", "json"]);
    assert_eq!(list.trim(), "[]");
}

/// Waits for a signalled process to exit (at most `DEADLINE`) and collects its output.
fn wait_output(child: &mut Child) -> Output {
    let deadline = std::time::Instant::now() + DEADLINE;
    while child.try_wait().expect("waiting for the member").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the member did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    use std::io::Read;
    child.stdout.take().map(|mut s| s.read_to_end(&mut stdout));
    child.stderr.take().map(|mut s| s.read_to_end(&mut stderr));
    Output {
        status: child.wait().expect("exited"),
        stdout,
        stderr,
    }
}

/// Three `topic consume -g` processes split six partitions; no partition ever has two holders;
/// every record is printed exactly once while members only join; one is SIGKILLed and, after
/// the session timeout, the two left share its partitions and read on from its commits
/// (re-reading at most what it printed after its last commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_members_rebalance_and_outlive_a_killed_one() -> Result<()> {
    use cairn_tests::TestCluster;
    use cairn_tests::group::{GroupMember, GroupView, describe_group};

    const TOPIC: &str = "jobs";
    const GROUP: &str = "workers";
    let cluster = TestCluster::start(1, Some(CONFIG))?;
    cluster.wait_brokers_alive(&[1]).await?;
    let client = cluster.client().await?;
    client.admin().create_topic(NewTopic::new(TOPIC, 6)).await?;
    let producer = client.producer(ProducerConfig::default());
    let produce = |from: u32| {
        let sends: Vec<_> = (0..6u32)
            .flat_map(|p| (from..from + 10).map(move |i| (p, i)))
            .map(|(p, i)| {
                producer.send(ProducerRecord::new(TOPIC, format!("{p}-{i}")).partition(p))
            })
            .collect();
        futures::future::try_join_all(sends)
    };
    produce(0).await?;

    let brokers = cluster.bootstrap_list();
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(GroupMember::start(&brokers, TOPIC, GROUP)?);
    }
    // Watches the group until `done`, checking at every look that no partition has two
    // holders.
    let watch = |what: &'static str, done: &'static (dyn Fn(&GroupView) -> bool + Sync)| {
        let cluster = &cluster;
        async move {
            cairn_tests::wait_for(what, WAIT, || async move {
                let view = describe_group(cluster, 1, GROUP, TOPIC).await?;
                if let Err(twice) = view.holders() {
                    panic!("{twice}");
                }
                done(&view).then_some(view)
            })
            .await
        }
    };
    watch("three members with two partitions each", &|v| {
        v.stable && v.shares() == [2, 2, 2]
    })
    .await?;
    let printed = |members: &[GroupMember]| -> Vec<(u32, i64)> {
        members
            .iter()
            .flat_map(|m| m.records())
            .map(|(p, o, _)| (p, o))
            .collect()
    };
    cairn_tests::wait_for("60 records printed", WAIT, || async {
        (printed(&members).len() >= 60).then_some(())
    })
    .await?;
    let mut seen = printed(&members);
    seen.sort_unstable();
    let before_kill = seen.clone();
    seen.dedup();
    assert_eq!(before_kill, seen, "joins alone print every record once");
    assert_eq!(seen.len(), 60);

    // One member vanishes; the others take its partitions after the session timeout.
    let view = describe_group(&cluster, 1, GROUP, TOPIC)
        .await
        .context("describing")?;
    let killed_before = members[1].records();
    members[1].kill();
    let killed_printed: BTreeSet<(u32, i64)> =
        killed_before.iter().map(|(p, o, _)| (*p, *o)).collect();
    let killed_partitions: BTreeSet<u32> = killed_printed.iter().map(|(p, _)| *p).collect();
    produce(10).await?;
    watch("two members with three partitions each", &|v| {
        v.stable && v.shares() == [3, 3]
    })
    .await?;
    cairn_tests::wait_for("every record of 0..20 printed", WAIT, || async {
        let all: BTreeSet<(u32, i64)> = printed(&members).into_iter().collect();
        (all.len() == 120).then_some(())
    })
    .await?;
    let mut counts: BTreeMap<(u32, i64), usize> = BTreeMap::new();
    for r in printed(&members) {
        *counts.entry(r).or_default() += 1;
    }
    for ((p, o), n) in &counts {
        assert!(
            *n == 1 || (killed_partitions.contains(p) && *n == 2),
            "record {p}@{o} printed {n} times; only the killed member's uncommitted tail may \
             come twice (it held {killed_partitions:?}; group before the kill: {view:?})"
        );
    }

    // The survivors stop cleanly, committing everything.
    for (i, m) in members.iter_mut().enumerate() {
        if i != 1 {
            m.stop()?;
        }
    }
    let view = watch("an empty group", &|v| v.assigned.is_empty()).await?;
    for (p, (committed, end, lag, _)) in &view.progress {
        assert_eq!((*committed, *end, *lag), (20, 20, 0), "partition {p}");
    }
    Ok(())
}
