//! Three metadata Raft nodes in one process, each with its own directory and its own gRPC server
//! on port 0 serving only `cairn.v1.Raft`, talking through the real transport
//! (`metadata::network` on the client side, `service::raft` on the server side).
//!
//! The cluster test elects a leader, replicates commands to every state machine, snapshots and
//! purges the leader's log so that a fourth node joining as a learner must catch up through
//! InstallSnapshot, stops the leader and checks that the two surviving voters elect a new one and
//! keep committing (to the learner too). Smaller tests pin the error mapping: a closed port is
//! `Unreachable`, a garbage payload is `INVALID_ARGUMENT`. Everything waits on conditions
//! (openraft's metrics, with deadlines), never on sleeps.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use cairn_proto::v1::{self as pb, raft_client::RaftClient};
use cairn_server::config::ClusterConfig;
use cairn_server::metadata::election::Election;
use cairn_server::metadata::network::CLUSTER_HEADER;
use cairn_server::metadata::{
    ApplyOutcome, BrokerId, LogStore, MetadataCommand, RaftNetworkClient, SnapshotBuilder,
    StateMachine, TypeConfig,
};
use cairn_server::service::raft::RaftService;
use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{BasicNode, Config, Entry, LogId, Raft, StorageError, StoredMembership, Vote};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::server::TcpIncoming;
use tonic_types::StatusExt;

type NodeId = u64;

/// The cluster fingerprint every node and client of these tests shares.
const CLUSTER: &str = "test-cluster";

/// How long any one condition (an election, a replication) may take on a busy machine.
const WAIT: Duration = Duration::from_secs(15);
/// How long a stopped server may take to close its connections before it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The real [`StateMachine`] behind a lock the test keeps a handle on, so it can read what each
/// node applied (openraft takes the state machine by value).
#[derive(Clone)]
struct SharedSm(Arc<Mutex<StateMachine>>);

impl RaftStateMachine<TypeConfig> for SharedSm {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        self.0.lock().await.applied_state().await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyOutcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        self.0.lock().await.apply(entries).await
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.0.lock().await.get_snapshot_builder().await
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        self.0.lock().await.begin_receiving_snapshot().await
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.0.lock().await.install_snapshot(meta, snapshot).await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        self.0.lock().await.get_current_snapshot().await
    }
}

/// One running node: its Raft, its server and its directory.
struct TestNode {
    id: NodeId,
    addr: String,
    raft: Raft<TypeConfig>,
    sm: SharedSm,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Dropped (and removed) with the node.
    _dir: tempfile::TempDir,
}

impl TestNode {
    async fn start(id: NodeId, config: Arc<Config>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let meta_dir = dir.path().join("metadata");
        let log_store = LogStore::open(&meta_dir)?;
        let sm = SharedSm(Arc::new(Mutex::new(StateMachine::open(&meta_dir)?)));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let raft = Raft::new(
            id,
            config,
            RaftNetworkClient::new(id, CLUSTER),
            log_store,
            sm.clone(),
        )
        .await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    RaftService::new(
                        raft.clone(),
                        Arc::new(Election::new(id, &ClusterConfig::default())),
                        CLUSTER,
                    )
                    .into_server(),
                )
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        Ok(Self {
            id,
            addr,
            raft,
            sm,
            stop: Some(stop),
            server,
            _dir: dir,
        })
    }

    /// Stops the server (bounded: peers' idle connections may hold a graceful stop open) and
    /// shuts Raft down.
    async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(STOP_GRACE, &mut self.server).await {
            Ok(joined) => joined?.context("server failed")?,
            Err(_) => self.server.abort(),
        }
        self.raft.shutdown().await?;
        Ok(())
    }

    /// Waits until this node knows a leader for which `accept` holds, and returns it.
    async fn leader_where(&self, accept: impl Fn(NodeId) -> bool + Send + Sync) -> Result<NodeId> {
        let metrics = self
            .raft
            .wait(Some(WAIT))
            .metrics(
                |m| m.current_leader.is_some_and(&accept),
                format!("node {} sees an acceptable leader", self.id),
            )
            .await?;
        metrics.current_leader.context("leader vanished")
    }

    /// Waits until this node has applied the log up to `index`.
    async fn applied(&self, index: u64) -> Result<()> {
        self.raft
            .wait(Some(WAIT))
            .applied_index_at_least(Some(index), format!("node {} applied {index}", self.id))
            .await?;
        Ok(())
    }

    /// The broker ids in this node's state machine.
    async fn brokers(&self) -> Vec<BrokerId> {
        let sm = self.sm.0.lock().await;
        sm.state().brokers().keys().copied().collect()
    }
}

fn config() -> Result<Arc<Config>> {
    let config = Config {
        cluster_name: "cairn-test".to_owned(),
        heartbeat_interval: 300,
        election_timeout_min: 1500,
        election_timeout_max: 3000,
        ..Config::default()
    }
    .validate()?;
    Ok(Arc::new(config))
}

/// Registers broker `id` through `leader` and returns the log index it was committed at.
async fn register(leader: &TestNode, id: BrokerId) -> Result<u64> {
    let cmd = MetadataCommand::RegisterBroker {
        id,
        addr: format!("broker-{id}:9092"),
    };
    let written = leader.raft.client_write(cmd).await?;
    if let Err(e) = written.data {
        bail!("registering broker {id} was refused: {e}");
    }
    Ok(written.log_id.index)
}

/// Waits until every node in `nodes` applied `index` and holds exactly `want`.
async fn all_hold(nodes: &[&TestNode], index: u64, want: &[BrokerId]) -> Result<()> {
    for node in nodes {
        node.applied(index).await?;
        let got = node.brokers().await;
        ensure!(
            got == want,
            "node {} holds brokers {got:?}, want {want:?}",
            node.id
        );
    }
    Ok(())
}

/// Snapshots and purges the leader's log up to `last`, then adds node `id` as a learner, which
/// can only catch up through InstallSnapshot, and checks it did.
async fn join_from_snapshot(
    leader: &TestNode,
    id: NodeId,
    config: Arc<Config>,
    last: u64,
) -> Result<TestNode> {
    let wait = leader.raft.wait(Some(WAIT));
    leader.raft.trigger().snapshot().await?;
    wait.metrics(
        |m| m.snapshot.is_some_and(|s| s.index >= last),
        "leader built a snapshot",
    )
    .await?;
    leader.raft.trigger().purge_log(last).await?;
    wait.metrics(
        |m| m.purged.is_some_and(|p| p.index >= last),
        "leader purged its log",
    )
    .await?;

    let learner = TestNode::start(id, config).await?;
    leader
        .raft
        .add_learner(id, BasicNode::new(&learner.addr), true)
        .await?;
    all_hold(&[&learner], last, &[1, 2, 3]).await?;
    let installed = learner.raft.metrics().borrow().snapshot;
    ensure!(
        installed.is_some_and(|s| s.index >= last),
        "learner caught up without a snapshot: {installed:?}"
    );
    Ok(learner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_survive_the_leader() -> Result<()> {
    let config = config()?;
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(TestNode::start(id, Arc::clone(&config)).await?);
    }
    let members: BTreeMap<NodeId, BasicNode> = nodes
        .iter()
        .map(|n| (n.id, BasicNode::new(&n.addr)))
        .collect();
    nodes[0].raft.initialize(members).await?;

    let leader_id = nodes[0].leader_where(|_| true).await?;
    let leader = nodes
        .iter()
        .find(|n| n.id == leader_id)
        .context("leader is not a member")?;
    let mut last = 0;
    for broker in 1..=3 {
        last = register(leader, broker).await?;
    }
    all_hold(&nodes.iter().collect::<Vec<_>>(), last, &[1, 2, 3]).await?;
    let learner = join_from_snapshot(leader, 4, Arc::clone(&config), last).await?;
    nodes.push(learner);

    let position = nodes
        .iter()
        .position(|n| n.id == leader_id)
        .context("leader is not a member")?;
    nodes.swap_remove(position).stop().await?;

    let new_leader_id = nodes[0].leader_where(|l| l != leader_id).await?;
    let new_leader = nodes
        .iter()
        .find(|n| n.id == new_leader_id)
        .context("new leader is not a survivor")?;
    let last = register(new_leader, 4).await?;
    all_hold(&nodes.iter().collect::<Vec<_>>(), last, &[1, 2, 3, 4]).await?;

    for node in nodes {
        node.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_closed_port_is_unreachable() -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    drop(listener);
    let mut client = RaftNetworkClient::new(1, CLUSTER)
        .new_client(2, &BasicNode::new(&addr))
        .await;
    let rpc = VoteRequest::new(Vote::new(1, 1), None);
    let result = client
        .vote(rpc, RPCOption::new(Duration::from_secs(5)))
        .await;
    ensure!(
        matches!(result, Err(RPCError::Unreachable(_))),
        "got {result:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_garbage_payload_is_invalid_argument() -> Result<()> {
    let node = TestNode::start(1, config()?).await?;
    let mut client = RaftClient::connect(format!("http://{}", node.addr)).await?;
    let mut request = tonic::Request::new(pb::VoteRequest {
        payload: b"not json".as_slice().into(),
    });
    request
        .metadata_mut()
        .insert(CLUSTER_HEADER, CLUSTER.parse().expect("ascii"));
    let status = match client.vote(request).await {
        Ok(reply) => bail!("garbage accepted: {reply:?}"),
        Err(status) => status,
    };
    ensure!(status.code() == Code::InvalidArgument, "got {status:?}");
    let info = status.get_details_error_info().context("no ErrorInfo")?;
    ensure!(info.reason == "INVALID_ARGUMENT", "got {info:?}");
    node.stop().await
}

/// A call from another cluster (another fingerprint, or none: a peer of another cluster that
/// reached this address) is refused before it reaches Raft: no vote granted, no term change.
#[tokio::test]
async fn a_call_from_another_cluster_is_refused_and_changes_nothing() -> Result<()> {
    let node = TestNode::start(1, config()?).await?;
    let term_before = node.raft.metrics().borrow().current_term;
    let mut client = RaftClient::connect(format!("http://{}", node.addr)).await?;
    let vote = serde_json::to_vec(&VoteRequest::new(Vote::new(1000, 7), None))?;
    for fingerprint in [None, Some("another-cluster")] {
        let mut request = tonic::Request::new(pb::VoteRequest {
            payload: vote.clone().into(),
        });
        if let Some(f) = fingerprint {
            request.metadata_mut().insert(CLUSTER_HEADER, f.parse()?);
        }
        let status = match client.vote(request).await {
            Ok(reply) => bail!("a foreign vote was answered: {reply:?}"),
            Err(status) => status,
        };
        ensure!(status.code() == Code::FailedPrecondition, "got {status:?}");
        let info = status.get_details_error_info().context("no ErrorInfo")?;
        ensure!(info.reason == "WRONG_CLUSTER", "got {info:?}");
    }
    let term_after = node.raft.metrics().borrow().current_term;
    ensure!(
        term_after == term_before,
        "term moved {term_before} -> {term_after}"
    );
    node.stop().await
}
