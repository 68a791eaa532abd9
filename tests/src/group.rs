//! Consumer group members as real processes (`cairn topic consume -g`), so a test can SIGKILL
//! one, and the group's state as the coordinator describes it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_proto::v1::admin_client::AdminClient;
use cairn_proto::v1::groups_client::GroupsClient;
use cairn_proto::v1::{
    DescribeGroupRequest, DescribeGroupResponse, FindCoordinatorRequest, GroupState,
};
use tonic::transport::Channel;

use crate::{TestCluster, cairn_bin, signal, wait_exit};

/// A broker config for group tests: failures detected in seconds (broker session 3 s, members'
/// session 5 s, heartbeats every 300 ms), plus `groups_extra` lines in the `[groups]` table.
pub fn fast_config(groups_extra: &str) -> String {
    format!(
        "[cluster]\nbroker_heartbeat_interval_ms = 500\nbroker_session_timeout_ms = 3000\n\n\
         [replication]\nreplica_lag_time_max_ms = 5000\n\n\
         [groups]\nheartbeat_interval_ms = 300\nsession_timeout_ms = 5000\n{groups_extra}"
    )
}

/// One `cairn topic consume TOPIC -g GROUP` process printing `partition offset value` lines;
/// killed on drop.
#[derive(Debug)]
pub struct GroupMember {
    child: Option<Child>,
    /// Every stdout line so far, with when it arrived.
    stdout: Arc<Mutex<Vec<(Instant, String)>>>,
    /// Every stderr line so far, with when it arrived.
    stderr: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl GroupMember {
    /// Starts a member of `group` reading `topic` from `brokers` (comma-separated), from the
    /// earliest offset where the group has none committed.
    ///
    /// # Errors
    ///
    /// If the process cannot be spawned.
    pub fn start(brokers: &str, topic: &str, group: &str) -> Result<Self> {
        let mut child = Command::new(cairn_bin())
            .args([
                "topic",
                "consume",
                topic,
                "-g",
                group,
                "-o",
                "start",
                "-f",
                r"%p %o %v\n",
            ])
            .env("CAIRN_BROKERS", brokers)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning a group member")?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().context("stdout")?, Arc::clone(&stdout));
        collect(child.stderr.take().context("stderr")?, Arc::clone(&stderr));
        Ok(Self {
            child: Some(child),
            stdout,
            stderr,
        })
    }

    /// SIGKILL: the member vanishes without leaving its group.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for a clean exit (it commits and leaves).
    ///
    /// # Errors
    ///
    /// If it does not exit within 30 s or exits unsuccessfully.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(&child, "TERM")?;
        let status = wait_exit(&mut child, Duration::from_secs(30))?;
        anyhow::ensure!(
            status.success(),
            "member exited with {status}: {}",
            self.stderr()
        );
        Ok(())
    }

    /// Whether the process still runs (it has not exited on its own, nor been killed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The records printed so far: (partition, offset, value).
    pub fn records(&self) -> Vec<(u32, i64, String)> {
        self.timed_records()
            .into_iter()
            .map(|(_, p, o, v)| (p, o, v))
            .collect()
    }

    /// The records printed so far, with when each line arrived: (arrival, partition, offset,
    /// value).
    pub fn timed_records(&self) -> Vec<(Instant, u32, i64, String)> {
        lock(&self.stdout)
            .iter()
            .filter_map(|(at, line)| {
                let mut parts = line.splitn(3, ' ');
                let p = parts.next()?.parse().ok()?;
                let o = parts.next()?.parse().ok()?;
                Some((*at, p, o, parts.next()?.to_owned()))
            })
            .collect()
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr_since(None)
    }

    /// What was printed on stderr at or after `since` (everything with `None`).
    pub fn stderr_since(&self, since: Option<Instant>) -> String {
        lock(&self.stderr)
            .iter()
            .filter(|(at, _)| since.is_none_or(|s| *at >= s))
            .map(|(_, line)| line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.kill();
    }
}

fn collect(pipe: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<(Instant, String)>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            lock(&into).push((Instant::now(), line));
        }
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A group as the coordinator describes it, reduced to what tests check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupView {
    /// Whether every member owns its target.
    pub stable: bool,
    /// Member id → partitions of the topic it owns.
    pub assigned: BTreeMap<String, BTreeSet<u32>>,
    /// Member id → partitions it was asked to release and still holds.
    pub revoking: BTreeMap<String, BTreeSet<u32>>,
    /// Partition → (committed offset, log end offset, lag, lag ms).
    pub progress: BTreeMap<u32, (i64, i64, i64, i64)>,
}

impl GroupView {
    /// Who holds each partition (owning or revoking); `Err` names a partition two members hold.
    ///
    /// # Errors
    ///
    /// The partition held twice, and by whom.
    pub fn holders(&self) -> Result<BTreeMap<u32, String>, String> {
        let mut holders = BTreeMap::new();
        for (member, parts) in self.assigned.iter().chain(&self.revoking) {
            for p in parts {
                if let Some(other) = holders.insert(*p, member.clone())
                    && other != *member
                {
                    return Err(format!(
                        "partition {p} held by {other} and {member}: {self:?}"
                    ));
                }
            }
        }
        Ok(holders)
    }

    /// How many partitions each member owns, sorted.
    pub fn shares(&self) -> Vec<usize> {
        let mut shares: Vec<usize> = self.assigned.values().map(BTreeSet::len).collect();
        shares.sort_unstable();
        shares
    }
}

/// `DescribeGroup` of `group` through broker `via`, for partitions of `topic`.
pub async fn describe_group(
    cluster: &TestCluster,
    via: u32,
    group: &str,
    topic: &str,
) -> Option<GroupView> {
    describe_group_with(cluster.admin(via), group, topic).await
}

/// `DescribeGroup` of `group` through `admin`, for partitions of `topic`.
pub async fn describe_group_with(
    mut admin: AdminClient<Channel>,
    group: &str,
    topic: &str,
) -> Option<GroupView> {
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        admin.describe_group(DescribeGroupRequest {
            group_id: group.into(),
        }),
    )
    .await
    .ok()?
    .ok()?
    .into_inner();
    Some(view_of(&answer, topic))
}

fn view_of(d: &DescribeGroupResponse, topic: &str) -> GroupView {
    let parts = |tps: &[cairn_proto::v1::TopicPartitions]| -> BTreeSet<u32> {
        tps.iter()
            .filter(|t| t.topic == topic)
            .flat_map(|t| t.partitions.iter().copied())
            .collect()
    };
    GroupView {
        stable: d.state == GroupState::Stable as i32,
        assigned: d
            .members
            .iter()
            .map(|m| (m.member_id.clone(), parts(&m.assigned)))
            .collect(),
        revoking: d
            .members
            .iter()
            .map(|m| (m.member_id.clone(), parts(&m.pending_revocation)))
            .filter(|(_, p)| !p.is_empty())
            .collect(),
        progress: d
            .partitions
            .iter()
            .filter(|p| p.topic == topic)
            .map(|p| {
                (
                    p.partition,
                    (p.committed_offset, p.log_end_offset, p.lag, p.lag_ms),
                )
            })
            .collect(),
    }
}

/// The coordinator of `group` as broker `via` names it: (id, address). Creates the offsets
/// topic on first use, like any `FindCoordinator`.
pub async fn find_coordinator(
    cluster: &TestCluster,
    via: u32,
    group: &str,
) -> Option<(u32, String)> {
    let channel = tonic::transport::Endpoint::from_shared(cluster.broker(via).url())
        .ok()?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .connect()
        .await
        .ok()?;
    let found = GroupsClient::new(channel)
        .find_coordinator(FindCoordinatorRequest {
            group_id: group.into(),
        })
        .await
        .ok()?
        .into_inner();
    Some((found.coordinator_id, found.address))
}
