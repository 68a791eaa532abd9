//! Node-level tests: topic lifecycle on disk, without gRPC.

use super::*;

fn config(dir: &Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_owned(),
        ..BrokerConfig::default()
    }
}

#[test]
fn a_second_node_cannot_open_a_locked_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path())).unwrap();
    assert!(matches!(
        Node::open(config(dir.path())),
        Err(NodeError::DataDirLocked(_))
    ));
    drop(node);
    Node::open(config(dir.path())).expect("the lock is released with the node");
}

#[test]
fn topics_and_partitions_survive_reopen_and_deletion_removes_directories() {
    let dir = tempfile::tempdir().unwrap();
    {
        let node = Node::open(config(dir.path())).unwrap();
        node.create_topic("a", 2, 1, TopicConfig::default())
            .unwrap();
        node.create_topic("b", 1, 1, TopicConfig::default())
            .unwrap();
        node.create_partitions("a", 3).unwrap();
        node.delete_topic("b").unwrap();
    }
    assert!(dir.path().join("a-2").is_dir());
    assert!(!dir.path().join("b-0").exists());
    let node = Node::open(config(dir.path())).unwrap();
    let topics: Vec<_> = node
        .list_topics()
        .into_iter()
        .map(|(n, r)| (n.to_string(), r.partitions))
        .collect();
    assert_eq!(topics, [("a".to_owned(), 3)]);
}

#[test]
fn leftover_directories_of_unregistered_topics_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("ghost-0")).unwrap();
    std::fs::create_dir(dir.path().join("not a partition")).unwrap();
    let _node = Node::open(config(dir.path())).unwrap();
    assert!(!dir.path().join("ghost-0").exists());
    // Only names shaped like partition directories are touched.
    assert!(dir.path().join("not a partition").exists());
}

#[test]
fn refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(config(dir.path())).unwrap();
    node.create_topic("t", 1, 1, TopicConfig::default())
        .unwrap();
    assert!(matches!(
        node.create_topic("t", 1, 1, TopicConfig::default()),
        Err(NodeError::TopicExists(_))
    ));
    assert!(matches!(
        node.create_topic("u", 1, 3, TopicConfig::default()),
        Err(NodeError::InvalidReplicationFactor {
            requested: 3,
            available: 1
        })
    ));
    assert!(matches!(
        node.create_partitions("t", 1),
        Err(NodeError::InvalidArgument { .. })
    ));
    assert_eq!(node.list_topics().len(), 1);
    assert!(!dir.path().join("u-0").exists());
}
