//! Node-level tests: the data-directory lock, and following the metadata on disk (opening,
//! leading, closing and deleting replicas), driven by a hand-fed metadata channel, without Raft
//! or gRPC.

use super::*;
use crate::metadata::{ClusterState, MetadataCommand as C};

fn config(dir: &Path, id: u32) -> BrokerConfig {
    BrokerConfig {
        node_id: id,
        data_dir: dir.to_owned(),
        ..BrokerConfig::default()
    }
}

/// A metadata channel the test feeds by applying commands.
struct Feed {
    state: ClusterState,
    index: u64,
    tx: watch::Sender<MetadataView>,
}

impl Feed {
    fn new() -> Self {
        let mut feed = Self {
            state: ClusterState::default(),
            index: 0,
            tx: watch::Sender::new(MetadataView::default()),
        };
        for id in 1..=3 {
            feed.apply(C::RegisterBroker {
                id,
                addr: format!("b{id}:9092"),
            });
            feed.apply(C::UnfenceBroker { id });
        }
        feed
    }

    fn apply(&mut self, cmd: C) {
        self.state.apply(&cmd).expect("command applies");
        self.index += 1;
        self.tx.send_replace(MetadataView {
            state: Arc::new(self.state.clone()),
            applied_index: self.index,
        });
    }

    fn create(&mut self, name: &str, id: &str, assignment: Vec<Vec<u32>>) {
        self.apply(C::CreateTopic {
            name: name.into(),
            topic_id: id.into(),
            config: TopicConfig::default(),
            assignment,
        });
    }

    fn node(&self, dir: &Path, id: u32) -> Arc<Node> {
        let lock = lock_data_dir(dir).unwrap();
        Node::new(config(dir, id), lock, self.tx.subscribe())
    }
}

#[test]
fn a_second_broker_cannot_lock_a_locked_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let lock = lock_data_dir(dir.path()).unwrap();
    assert!(matches!(
        lock_data_dir(dir.path()),
        Err(NodeError::DataDirLocked(_))
    ));
    drop(lock);
    lock_data_dir(dir.path()).expect("the lock is released with its holder");
}

#[test]
fn hosts_its_assigned_replicas_and_serves_only_those_it_leads() {
    let dir = tempfile::tempdir().unwrap();
    let mut feed = Feed::new();
    // Partition 0 led by 1, partition 1 led by 2 with 1 following, partition 2 not on 1.
    feed.create("t", "id-t", vec![vec![1, 2], vec![2, 1], vec![2, 3]]);
    let node = feed.node(dir.path(), 1);
    node.reconcile(false);
    assert!(dir.path().join("t-0").is_dir());
    assert!(dir.path().join("t-1").is_dir());
    assert!(!dir.path().join("t-2").exists());
    assert!(node.partition("t", 0).is_ok());
    match node.partition("t", 1) {
        Err(NodeError::NotLeader {
            leader: Some((2, Some(addr))),
            ..
        }) => assert_eq!(addr, "b2:9092"),
        other => panic!("expected NOT_LEADER naming broker 2, got {other:?}"),
    }
    assert!(matches!(
        node.partition("t", 3),
        Err(NodeError::UnknownPartition { count: 3, .. })
    ));
    assert!(matches!(
        node.partition("nope", 0),
        Err(NodeError::UnknownTopic(_))
    ));

    // Broker 2 is fenced: broker 1 takes partition 1 over with a higher epoch.
    feed.apply(C::FenceBroker { id: 2 });
    node.reconcile(false);
    let p1 = node.partition("t", 1).expect("now led here");
    assert_eq!(p1.leader_epoch(), 1);
}

#[test]
fn a_deleted_topic_loses_its_data_and_a_recreated_one_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let mut feed = Feed::new();
    feed.create("t", "old", vec![vec![1]]);
    let node = feed.node(dir.path(), 1);
    node.reconcile(false);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("t-0/partition.json")).unwrap(),
        r#"{"topic_id":"old"}"#
    );
    feed.apply(C::DeleteTopic { name: "t".into() });
    node.reconcile(false);
    assert!(!dir.path().join("t-0").exists());
    assert!(node.hosted("t", 0).is_none());
    feed.create("t", "new", vec![vec![1]]);
    node.reconcile(false);
    assert_eq!(node.hosted("t", 0).unwrap().topic_id, "new");
}

#[test]
fn a_directory_of_an_older_topic_with_the_same_name_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut feed = Feed::new();
    feed.create("t", "old", vec![vec![1]]);
    {
        let node = feed.node(dir.path(), 1);
        node.reconcile(false);
    }
    std::fs::write(dir.path().join("t-0/marker"), b"old data").unwrap();
    // While this broker was away, the topic was deleted and created again.
    feed.apply(C::DeleteTopic { name: "t".into() });
    feed.create("t", "new", vec![vec![1]]);
    let node = feed.node(dir.path(), 1);
    node.reconcile(false);
    assert!(!dir.path().join("t-0/marker").exists());
    assert_eq!(node.hosted("t", 0).unwrap().topic_id, "new");
}

#[test]
fn strays_are_removed_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut feed = Feed::new();
    feed.create("t", "id", vec![vec![1], vec![2]]);
    std::fs::create_dir(dir.path().join("ghost-0")).unwrap();
    std::fs::create_dir(dir.path().join("t-1")).unwrap();
    std::fs::create_dir(dir.path().join("not a partition")).unwrap();
    let node = feed.node(dir.path(), 1);
    node.reconcile(false);
    assert!(dir.path().join("ghost-0").exists());
    node.reconcile(true);
    assert!(!dir.path().join("ghost-0").exists());
    // Partition 1 is assigned to broker 2 only.
    assert!(!dir.path().join("t-1").exists());
    assert!(dir.path().join("t-0").exists());
    // Only names shaped like partition directories are touched.
    assert!(dir.path().join("not a partition").exists());
}

/// A leader replaced while it waits for its ISR to confirm an appended batch says so: the
/// `NOT_LEADER` carries the offset it appended at (the outcome is unknown), unlike a refusal of
/// a broker that wrote nothing.
#[tokio::test]
async fn a_leader_replaced_mid_acks_all_says_it_appended() {
    let dir = tempfile::tempdir().unwrap();
    let mut feed = Feed::new();
    feed.create("t", "id-t", vec![vec![1, 2, 3]]);
    let node = feed.node(dir.path(), 1);
    node.reconcile(false);
    let p = node.partition("t", 0).expect("broker 1 leads t-0");
    let mut builder = cairn_batch::BatchBuilder::new();
    builder.push(&cairn_batch::Record {
        timestamp: 1,
        key: None,
        value: bytes::Bytes::from_static(b"v"),
        headers: Vec::new(),
    });
    let info = p.append(builder.finish()).await.unwrap();
    let epoch = p.leader_epoch();
    let waiting = {
        let p = Arc::clone(&p);
        tokio::spawn(async move {
            p.wait_replicated(info.last_offset, epoch, Duration::from_secs(30))
                .await
        })
    };
    // Followers never fetch here; broker 2 takes over.
    feed.apply(C::ElectLeader {
        topic: "t".into(),
        partition: 0,
        leader: 2,
    });
    node.reconcile(false);
    match waiting.await.unwrap() {
        Err(NodeError::NotLeader {
            appended: Some(offset),
            ..
        }) => assert_eq!(offset, info.last_offset),
        other => panic!("expected NOT_LEADER with the appended offset, got {other:?}"),
    }
    match node.partition("t", 0) {
        Err(NodeError::NotLeader { appended: None, .. }) => {}
        other => panic!("expected NOT_LEADER that wrote nothing, got {other:?}"),
    }
}
