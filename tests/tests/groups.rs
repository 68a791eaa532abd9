//! Consumer groups' storage with real broker processes (DESIGN.md §6): committed offsets are
//! replicated in `__consumer_offsets`, survive the coordinator's SIGKILL, and the coordinator's
//! cleaning keeps the offsets partition small on the leader and on its followers.

use std::time::Duration;

use anyhow::{Context, Result};
use cairn_proto::v1::{
    CommitOffsetsRequest, DescribeTopicRequest, FetchOffsetsRequest, FindCoordinatorRequest,
    PartitionCommit, PartitionDescription, groups_client::GroupsClient,
};
use cairn_tests::{TestCluster, wait_for};
use tonic::transport::Channel;

/// Fast failure detection; one small offsets partition cleaned early.
const CONFIG: &str = "\
[cluster]
broker_heartbeat_interval_ms = 500
broker_session_timeout_ms = 3000

[replication]
replica_lag_time_max_ms = 5000

[groups]
offsets_topic_partitions = 1
offsets_topic_segment_bytes = 1024
offsets_cleanup_min_records = 50
";

const WAIT: Duration = Duration::from_secs(30);
const GROUP: &str = "ledger-readers";

async fn groups(addr: &str) -> Result<GroupsClient<Channel>> {
    Ok(GroupsClient::connect(format!("http://{addr}")).await?)
}

/// The coordinator `via` names: (id, address).
async fn coordinator(cluster: &TestCluster, via: u32) -> Option<(u32, String)> {
    let mut client = groups(&cluster.broker(via).addr().to_string()).await.ok()?;
    let found = client
        .find_coordinator(FindCoordinatorRequest {
            group_id: GROUP.into(),
        })
        .await
        .ok()?
        .into_inner();
    Some((found.coordinator_id, found.address))
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
    let mut cluster = TestCluster::start(3, Some(CONFIG))?;
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
