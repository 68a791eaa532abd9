//! Consumer groups' storage with real broker processes (DESIGN.md §6): committed offsets are
//! replicated in `__consumer_offsets`, survive the coordinator's SIGKILL, and the coordinator's
//! cleaning keeps the offsets partition small on the leader and on its followers.

use std::time::Duration;

use anyhow::{Context, Result};
use cairn_proto::v1::{
    CommitOffsetsRequest, DescribeTopicRequest, FetchOffsetsRequest, FindCoordinatorRequest,
    PartitionCommit, PartitionDescription, groups_client::GroupsClient,
};
use cairn_tests::group::{fast_config, find_coordinator};
use cairn_tests::{TestCluster, wait_for};
use tonic::transport::Channel;

/// Fast failure detection; one small offsets partition cleaned early.
fn config() -> String {
    fast_config(
        "offsets_topic_partitions = 1\noffsets_topic_segment_bytes = 1024\noffsets_cleanup_min_records = 50\n",
    )
}

const WAIT: Duration = Duration::from_secs(30);
const GROUP: &str = "ledger-readers";

async fn groups(addr: &str) -> Result<GroupsClient<Channel>> {
    Ok(GroupsClient::connect(format!("http://{addr}")).await?)
}

/// The coordinator `via` names: (id, address).
async fn coordinator(cluster: &TestCluster, via: u32) -> Option<(u32, String)> {
    find_coordinator(cluster, via, GROUP).await
}

/// `__consumer_offsets` partition 0 as broker `id`'s own replica has it.
async fn offsets_replica(cluster: &TestCluster, id: u32) -> Option<PartitionDescription> {
    let topic = cluster
        .admin(id)
        .describe_topic(DescribeTopicRequest {
            name: "__consumer_offsets".into(),
        })
        .await
        .ok()?
        .into_inner()
        .topic?;
    topic.partitions.into_iter().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_survive_cleaning_and_the_coordinators_death() -> Result<()> {
    let mut cluster = TestCluster::start(3, Some(&config()))?;
    cluster.wait_brokers_alive(&[1, 2, 3]).await?;
    let client = cluster.client().await?;
    client
        .admin()
        .create_topic(cairn_client::NewTopic::new("ledger", 1).replication_factor(3))
        .await?;

    let (leader, addr) = wait_for("a coordinator", WAIT, || coordinator(&cluster, 1)).await?;
    let mut coord = groups(&addr).await?;
    const COMMITS: i64 = 300;
    for offset in 1..=COMMITS {
        let commit = CommitOffsetsRequest {
            group_id: GROUP.into(),
            member_id: String::new(),
            member_epoch: -1,
            offsets: vec![PartitionCommit {
                topic: "ledger".into(),
                partition: 0,
                offset,
                metadata: format!("commit {offset}"),
            }],
        };
        // The coordinator may still be loading its partition (UNAVAILABLE): retry that only.
        loop {
            match coord.commit_offsets(commit.clone()).await {
                Err(e) if e.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => {
                    other.with_context(|| format!("commit {offset}"))?;
                    break;
                }
            }
        }
    }

    // The coordinator cleaned its partition, and every replica followed its log start.
    for id in cluster.ids() {
        wait_for(
            &format!("broker {id}'s offsets replica cleaned"),
            WAIT,
            || async {
                let p = offsets_replica(&cluster, id).await?;
                (p.log_start_offset > 0 && p.high_watermark - p.log_start_offset < COMMITS / 2)
                    .then_some(())
            },
        )
        .await?;
    }

    // The coordinator dies; another broker takes the group over with every commit.
    cluster.kill(leader);
    let via = cluster
        .ids()
        .find(|&id| id != leader)
        .expect("two brokers remain");
    let (next, addr) = wait_for("a new coordinator", WAIT, || async {
        coordinator(&cluster, via)
            .await
            .filter(|(id, _)| *id != leader)
    })
    .await?;
    assert_ne!(next, leader);
    let committed = wait_for("the new coordinator's offsets", WAIT, || async {
        let mut client = groups(&addr).await.ok()?;
        let offsets = client
            .fetch_offsets(FetchOffsetsRequest {
                group_id: GROUP.into(),
                topics: vec![],
            })
            .await
            .ok()?
            .into_inner()
            .offsets;
        offsets.into_iter().next()
    })
    .await?;
    assert_eq!(committed.offset, COMMITS);
    assert_eq!(committed.metadata, format!("commit {COMMITS}"));

    // Never backwards, on the new coordinator too.
    let refused = groups(&addr)
        .await?
        .commit_offsets(CommitOffsetsRequest {
            group_id: GROUP.into(),
            member_id: String::new(),
            member_epoch: -1,
            offsets: vec![PartitionCommit {
                topic: "ledger".into(),
                partition: 0,
                offset: 5,
                metadata: String::new(),
            }],
        })
        .await
        .expect_err("a backwards commit is refused");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("backwards"), "{refused:?}");
    Ok(())
}

/// Bad group input gets a clear error with a stable reason and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_input_is_refused_and_changes_nothing() -> Result<()> {
    use cairn_proto::v1::{GroupHeartbeatRequest, Subscription};
    use tonic_types::StatusExt;

    let broker = cairn_tests::TestBroker::start()?;
    let addr = broker.addr().to_string();
    let client = cairn_client::Client::connect([addr.clone()]).await?;
    client
        .admin()
        .create_topic(cairn_client::NewTopic::new("orders", 2))
        .await?;
    let mut groups = groups(&addr).await?;
    let reason = |s: &tonic::Status| {
        s.get_details_error_info()
            .map(|i| i.reason)
            .unwrap_or_default()
    };

    for bad in ["", "../etc", "a b", "ü", &"g".repeat(250)] {
        let e = groups
            .find_coordinator(FindCoordinatorRequest {
                group_id: bad.into(),
            })
            .await
            .expect_err("a bad group id is refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}: {e:?}");
        assert_eq!(reason(&e), "INVALID_GROUP_ID", "{bad:?}");
    }
    wait_for("the coordinator", WAIT, || async {
        groups
            .clone()
            .find_coordinator(FindCoordinatorRequest {
                group_id: "g".into(),
            })
            .await
            .ok()
    })
    .await?;

    let commit = |offsets: Vec<PartitionCommit>| CommitOffsetsRequest {
        group_id: "g".into(),
        member_id: String::new(),
        member_epoch: -1,
        offsets,
    };
    let pc = |topic: &str, partition: u32, offset: i64, metadata: String| PartitionCommit {
        topic: topic.into(),
        partition,
        offset,
        metadata,
    };
    let cases: Vec<(CommitOffsetsRequest, tonic::Code, &str)> = vec![
        (
            commit(vec![pc("nope", 0, 1, String::new())]),
            tonic::Code::NotFound,
            "UNKNOWN_TOPIC",
        ),
        (
            commit(vec![pc("orders", 9, 1, String::new())]),
            tonic::Code::NotFound,
            "UNKNOWN_PARTITION",
        ),
        (
            commit(vec![pc("../x", 0, 1, String::new())]),
            tonic::Code::InvalidArgument,
            "INVALID_TOPIC_NAME",
        ),
        (
            commit(vec![pc("orders", 0, -4, String::new())]),
            tonic::Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            commit(vec![pc("orders", 0, 1, "m".repeat(5000))]),
            tonic::Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            // All or nothing: the good partition 1 is not written either.
            commit(vec![
                pc("orders", 1, 7, String::new()),
                pc("orders", 1, 8, String::new()),
            ]),
            tonic::Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            CommitOffsetsRequest {
                member_id: "ghost".into(),
                member_epoch: 3,
                ..commit(vec![pc("orders", 0, 1, String::new())])
            },
            tonic::Code::NotFound,
            "UNKNOWN_MEMBER_ID",
        ),
    ];
    for (request, code, why) in cases {
        let e = loop {
            match groups.commit_offsets(request.clone()).await {
                Err(e) if e.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => break other.expect_err("refused"),
            }
        };
        assert_eq!((e.code(), reason(&e).as_str()), (code, why), "{e:?}");
    }
    let stored = groups
        .fetch_offsets(FetchOffsetsRequest {
            group_id: "g".into(),
            topics: vec![],
        })
        .await?
        .into_inner()
        .offsets;
    assert!(stored.is_empty(), "refused commits wrote {stored:?}");

    // In the heartbeat stream: refusals come as in-stream errors and the stream goes on.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = groups
        .heartbeat(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let beat = |member_epoch: i32, topics: Option<Vec<&str>>| GroupHeartbeatRequest {
        group_id: "g".into(),
        member_id: "m1".into(),
        member_epoch,
        instance_id: None,
        subscription: topics.map(|t| Subscription {
            topics: t.into_iter().map(Into::into).collect(),
        }),
        owned: None,
    };
    for (request, why) in [
        (beat(0, None), "INVALID_ARGUMENT"),
        (beat(0, Some(vec!["bad topic"])), "INVALID_TOPIC_NAME"),
        (beat(-7, None), "INVALID_ARGUMENT"),
        (beat(5, None), "UNKNOWN_MEMBER_ID"),
    ] {
        tx.send(request).await?;
        let answer = answers.message().await?.context("an answer")?;
        let error = answer.error.context("an in-stream error")?;
        assert_eq!(error.reason, why, "{error:?}");
    }
    tx.send(beat(0, Some(vec!["orders"]))).await?;
    let joined = answers.message().await?.context("an answer")?;
    assert!(joined.error.is_none(), "{joined:?}");
    assert_eq!(joined.member_epoch, 1);
    Ok(())
}

/// Member processes, a fast session timeout, three offsets partitions.
fn members_config() -> String {
    fast_config("offsets_topic_partitions = 3\n")
}

const WORK: &str = "work";

/// One member's heartbeat stream, driven by hand.
struct RawMember {
    group: String,
    id: String,
    epoch: i32,
    instance: Option<String>,
    tx: tokio::sync::mpsc::Sender<cairn_proto::v1::GroupHeartbeatRequest>,
    answers: tonic::Streaming<cairn_proto::v1::GroupHeartbeatResponse>,
    owned: std::collections::BTreeSet<u32>,
}

impl RawMember {
    async fn join(
        addr: &str,
        group: &str,
        id: &str,
        instance: Option<&str>,
        topic: &str,
    ) -> Result<Self> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let answers = groups(addr)
            .await?
            .heartbeat(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut m = Self {
            group: group.into(),
            id: id.into(),
            epoch: 0,
            instance: instance.map(Into::into),
            tx,
            answers,
            owned: Default::default(),
        };
        m.beat(Some(topic)).await?;
        Ok(m)
    }

    /// Sends a heartbeat reporting what it owns, takes the answer's assignment as owned.
    async fn beat(&mut self, subscribe: Option<&str>) -> Result<()> {
        use cairn_proto::v1::{
            GroupHeartbeatRequest, OwnedPartitions, Subscription, TopicPartitions,
        };
        self.tx
            .send(GroupHeartbeatRequest {
                group_id: self.group.clone(),
                member_id: self.id.clone(),
                member_epoch: self.epoch,
                instance_id: self.instance.clone(),
                subscription: subscribe.map(|t| Subscription {
                    topics: vec![t.into()],
                }),
                owned: Some(OwnedPartitions {
                    topics: vec![TopicPartitions {
                        topic: WORK.into(),
                        partitions: self.owned.iter().copied().collect(),
                    }],
                }),
            })
            .await?;
        let answer = self.answers.message().await?.context("an answer")?;
        anyhow::ensure!(answer.error.is_none(), "refused: {:?}", answer.error);
        self.epoch = answer.member_epoch;
        if let Some(a) = answer.assignment {
            self.owned = a
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().copied())
                .collect();
        }
        Ok(())
    }
}

/// A static member (instance id) that leaves for a restart (epoch -2) and comes back under a
/// new member id gets its partitions back at once, and the group epoch does not move: no
/// rebalance, nobody else is disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarts_without_a_rebalance() -> Result<()> {
    use cairn_tests::group::describe_group;

    let cluster = TestCluster::start(1, Some(&members_config()))?;
    cluster.wait_brokers_alive(&[1]).await?;
    let addr = cluster.broker(1).addr().to_string();
    cluster
        .client()
        .await?
        .admin()
        .create_topic(cairn_client::NewTopic::new(WORK, 4))
        .await?;
    wait_for("the coordinator", WAIT, || {
        find_coordinator(&cluster, 1, "statics")
    })
    .await?;
    let mut a = loop {
        match RawMember::join(&addr, "statics", "a-1", Some("instance-a"), WORK).await {
            Ok(m) => break m,
            // The offsets partition may still be loading.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let mut b = RawMember::join(&addr, "statics", "b-1", None, WORK).await?;
    // Heartbeat until both own two partitions each (a revokes two, then b gets them).
    let deadline = std::time::Instant::now() + WAIT;
    while !(a.owned.len() == 2 && b.owned.len() == 2) {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no 2-2 split: {:?} {:?}",
            a.owned,
            b.owned
        );
        a.beat(None).await?;
        b.beat(None).await?;
    }
    let before = describe_group(&cluster, 1, "statics", WORK)
        .await
        .context("describe")?;
    let epoch_before = a.epoch;

    // a leaves for a restart, and its successor joins under the same instance id.
    a.epoch = -2;
    a.beat(None).await?;
    let mut a2 = RawMember::join(&addr, "statics", "a-2", Some("instance-a"), WORK).await?;
    let a_owned = before.assigned["a-1"].clone();
    assert_eq!(
        a2.owned, a_owned,
        "the successor takes the same partitions at once"
    );
    assert_eq!(a2.epoch, epoch_before, "no new group epoch: no rebalance");
    b.beat(None).await?;
    a2.beat(None).await?;
    let after = describe_group(&cluster, 1, "statics", WORK)
        .await
        .context("describe")?;
    assert_eq!(after.assigned.get("a-2"), Some(&a_owned));
    assert_eq!(after.assigned.get("b-1"), before.assigned.get("b-1"));
    assert!(!after.assigned.contains_key("a-1"));
    assert!(after.stable, "{after:?}");
    Ok(())
}
