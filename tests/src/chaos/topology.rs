//! The cluster under test: N brokers on 127.0.0.1, each as its own uid so that
//! [`crate::netfault`] can partition them, with the failure-detection settings of issue 11, and
//! a [`Probe`] that asks the brokers what they know without holding the cluster (the nemesis
//! holds it mutably while the metadata poller runs).

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use cairn_proto::v1::admin_client::AdminClient;
use cairn_proto::v1::{
    DescribeClusterRequest, DescribeClusterResponse, DescribeTopicRequest, PartitionDescription,
};
use tonic::transport::{Channel, Endpoint};

use super::history::{Clock, MetaSample, PartitionView};
use crate::TestCluster;
use crate::cluster::ClusterOptions;
use crate::netfault::NetFaults;

/// The broker settings of every chaos run: issue 11's `broker_session_timeout_ms = 3000` and
/// `replica_lag_time_max_ms = 5000`, a heartbeat well inside the session, and no retention (so
/// that "lost" cannot be confused with "deleted").
pub const BROKER_CONFIG: &str = "\
[topic_defaults]
retention_ms = -1
retention_bytes = -1

[cluster]
broker_heartbeat_interval_ms = 500
broker_session_timeout_ms = 3000

[replication]
replica_lag_time_max_ms = 5000
";

/// The broker session timeout in [`BROKER_CONFIG`].
pub const SESSION: Duration = Duration::from_secs(3);

/// How long one probe call may take: a paused broker never answers.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// The cluster, its partition table and the topic the workload writes.
pub struct ChaosCluster {
    /// The brokers. Declared first so they die before the rules go.
    pub cluster: TestCluster,
    /// The nftables table of this run's partitions.
    pub net: NetFaults,
}

impl ChaosCluster {
    /// Starts `n` brokers as distinct uids with [`BROKER_CONFIG`], their logs in `log_dir`, and
    /// waits until all are alive.
    ///
    /// # Errors
    ///
    /// If the rules table cannot be made or the cluster does not form.
    pub async fn start(n: usize, log_dir: &Path) -> Result<Self> {
        let net = NetFaults::new()?;
        let options = ClusterOptions {
            distinct_uids: true,
            log_dir: Some(log_dir.to_owned()),
        };
        let cluster = TestCluster::start_with_options(n, Some(BROKER_CONFIG), &options)?;
        let ids: Vec<u32> = cluster.ids().collect();
        cluster.wait_brokers_alive(&ids).await?;
        Ok(Self { cluster, net })
    }

    /// A probe of every broker, for `topic`.
    pub fn probe(&self, topic: &str) -> Probe {
        let brokers = self
            .cluster
            .ids()
            .map(|id| {
                let channel = Endpoint::from_shared(self.cluster.broker(id).url())
                    .expect("a broker's url is valid")
                    .connect_timeout(PROBE_TIMEOUT)
                    .connect_lazy();
                (id, AdminClient::new(channel))
            })
            .collect();
        Probe {
            brokers,
            topic: topic.to_owned(),
        }
    }
}

/// Asks brokers what they know, with short timeouts; cheap to clone.
#[derive(Clone)]
pub struct Probe {
    brokers: Vec<(u32, AdminClient<Channel>)>,
    topic: String,
}

/// The controller's view of the cluster and of the topic's partitions.
#[derive(Debug, Clone)]
pub struct ControllerView {
    /// The controller's id.
    pub controller: u32,
    /// Its `DescribeCluster` answer.
    pub cluster: DescribeClusterResponse,
    /// Its description of the topic's partitions (empty if it did not answer).
    pub partitions: Vec<PartitionDescription>,
}

impl Probe {
    /// Broker ids.
    pub fn ids(&self) -> Vec<u32> {
        self.brokers.iter().map(|(id, _)| *id).collect()
    }

    /// The view of the broker that calls itself controller (the highest Raft term wins if two
    /// do); `None` if none answers as controller.
    pub async fn controller_view(&self) -> Option<ControllerView> {
        let calls = self.brokers.iter().map(|(id, admin)| {
            let mut admin = admin.clone();
            async move {
                let call = admin.describe_cluster(DescribeClusterRequest {});
                let answer = tokio::time::timeout(PROBE_TIMEOUT, call).await.ok()?.ok()?;
                Some((*id, answer.into_inner()))
            }
        });
        let answers = futures::future::join_all(calls).await;
        let (controller, cluster) = answers
            .into_iter()
            .flatten()
            .filter(|(id, a)| a.controller_id == *id)
            .max_by_key(|(_, a)| a.raft_term)?;
        let partitions = self.describe_topic(controller).await.unwrap_or_default();
        Some(ControllerView {
            controller,
            cluster,
            partitions,
        })
    }

    /// The topic's partitions as broker `id` describes them.
    pub async fn describe_topic(&self, id: u32) -> Option<Vec<PartitionDescription>> {
        let (_, admin) = self.brokers.iter().find(|(b, _)| *b == id)?;
        let mut admin = admin.clone();
        let call = admin.describe_topic(DescribeTopicRequest {
            name: self.topic.clone(),
        });
        let answer = tokio::time::timeout(PROBE_TIMEOUT, call).await.ok()?.ok()?;
        Some(answer.into_inner().topic?.partitions)
    }

    /// One metadata sample, stamped with `clock` when taken.
    pub async fn sample(&self, clock: Clock) -> MetaSample {
        let t_ns = clock.now();
        let Some(view) = self.controller_view().await else {
            return MetaSample {
                t_ns,
                controller: 0,
                fenced: Vec::new(),
                partitions: Vec::new(),
            };
        };
        MetaSample {
            t_ns,
            controller: view.controller,
            fenced: view
                .cluster
                .brokers
                .iter()
                .filter(|b| !b.alive)
                .map(|b| b.id)
                .collect(),
            partitions: view
                .partitions
                .iter()
                .map(|p| PartitionView {
                    leader: p.leader_id,
                    epoch: p.leader_epoch,
                    isr: p.isr.clone(),
                })
                .collect(),
        }
    }

    /// Whether the controller lists every broker alive and every partition led, with its
    /// whole replica set in sync.
    pub async fn healthy(&self) -> bool {
        let Some(view) = self.controller_view().await else {
            return false;
        };
        let brokers_alive = self
            .ids()
            .iter()
            .all(|id| view.cluster.brokers.iter().any(|b| b.id == *id && b.alive));
        let partitions_whole = !view.partitions.is_empty()
            && view.partitions.iter().all(|p| {
                let mut isr = p.isr.clone();
                let mut replicas = p.replicas.clone();
                isr.sort_unstable();
                replicas.sort_unstable();
                p.leader_id != 0 && isr == replicas
            });
        brokers_alive && partitions_whole
    }

    /// Waits up to `timeout` for [`Probe::healthy`]; returns whether it held.
    pub async fn wait_healthy(&self, timeout: Duration) -> bool {
        crate::wait_for("a healthy cluster", timeout, || async {
            self.healthy().await.then_some(())
        })
        .await
        .is_ok()
    }
}
