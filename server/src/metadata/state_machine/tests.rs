//! The state machine: refusals are responses, snapshots survive reopen and install elsewhere.

use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::{Entry, EntryPayload, RaftSnapshotBuilder};
use tempfile::TempDir;

use super::StateMachine;
use crate::metadata::{ApplyError, MetadataCommand, MetadataResponse, TypeConfig};

fn normal(index: u64, cmd: MetadataCommand) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, 1, index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn register(index: u64, id: u32) -> Entry<TypeConfig> {
    normal(
        index,
        MetadataCommand::RegisterBroker {
            id,
            addr: format!("h{id}:9092"),
        },
    )
}

#[tokio::test]
async fn a_refused_command_is_an_error_response_and_still_applied() {
    let dir = TempDir::new().expect("tempdir");
    let mut sm = StateMachine::open(dir.path()).expect("open");
    let out = sm
        .apply(vec![
            register(1, 1),
            normal(2, MetadataCommand::FenceBroker { id: 9 }),
            Entry {
                log_id: log_id(1, 1, 3),
                payload: EntryPayload::Blank,
            },
        ])
        .await
        .expect("apply");
    assert_eq!(
        out,
        vec![
            Ok(MetadataResponse::BrokerRegistered {
                epoch: 1,
                version: 1
            }),
            Err(ApplyError::UnknownBroker(9)),
            Ok(MetadataResponse::Nothing),
        ]
    );
    let (applied, _) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, Some(log_id(1, 1, 3)));
    assert_eq!(sm.state().version(), 1);
}

#[tokio::test]
async fn snapshot_build_then_reopen_gives_the_same_state() {
    let dir = TempDir::new().expect("tempdir");
    let mut sm = StateMachine::open(dir.path()).expect("open");
    sm.apply(vec![register(1, 1), register(2, 2)])
        .await
        .expect("apply");
    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    assert_eq!(snap.meta.last_log_id, Some(log_id(1, 1, 2)));
    let before = sm.state().clone();
    // Applied after the snapshot: not in it, so gone after reopen until the log replays.
    sm.apply(vec![register(3, 3)]).await.expect("apply");
    drop(sm);

    let mut sm = StateMachine::open(dir.path()).expect("reopen");
    assert_eq!(sm.state(), &before);
    let (applied, _) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, Some(log_id(1, 1, 2)));
    let current = sm.get_current_snapshot().await.expect("current");
    assert_eq!(current.map(|s| s.meta), Some(snap.meta));
}

#[tokio::test]
async fn an_installed_snapshot_replaces_the_state_and_survives_reopen() {
    let leader_dir = TempDir::new().expect("tempdir");
    let mut leader = StateMachine::open(leader_dir.path()).expect("open");
    leader.apply(vec![register(1, 7)]).await.expect("apply");
    let snap = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");

    let dir = TempDir::new().expect("tempdir");
    let mut follower = StateMachine::open(dir.path()).expect("open");
    follower.apply(vec![register(1, 99)]).await.expect("apply");
    follower
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .expect("install");
    assert_eq!(follower.state(), leader.state());
    drop(follower);
    let follower = StateMachine::open(dir.path()).expect("reopen");
    assert_eq!(follower.state(), leader.state());
}

#[tokio::test]
async fn a_garbled_snapshot_is_refused() {
    let dir = TempDir::new().expect("tempdir");
    let mut sm = StateMachine::open(dir.path()).expect("open");
    let mut data = sm.begin_receiving_snapshot().await.expect("begin");
    data.get_mut().extend_from_slice(b"not json");
    let meta = openraft::SnapshotMeta::default();
    assert!(sm.install_snapshot(&meta, data).await.is_err());
    assert!(sm.get_current_snapshot().await.expect("current").is_none());
}

/// What openraft does at startup: load the snapshot, then re-apply the committed log after it.
#[tokio::test]
async fn reopen_restores_the_snapshot_then_the_log_replays_to_the_same_state() {
    use openraft::RaftLogReader;
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};

    use crate::metadata::LogStore;

    let dir = TempDir::new().expect("tempdir");
    let mut log = LogStore::open(dir.path()).expect("open log");
    let mut sm = StateMachine::open(dir.path()).expect("open sm");
    let entries: Vec<_> = (1..=5)
        .map(|i| register(i, u32::try_from(i).unwrap_or(0)))
        .collect();
    log.blocking_append(entries.clone()).await.expect("append");
    sm.apply(entries[..3].to_vec()).await.expect("apply");
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    sm.apply(entries[3..].to_vec()).await.expect("apply");
    log.save_committed(Some(log_id(1, 1, 5)))
        .await
        .expect("commit");
    let before = sm.state().clone();
    drop((log, sm));

    let mut log = LogStore::open(dir.path()).expect("reopen log");
    let mut sm = StateMachine::open(dir.path()).expect("reopen sm");
    let (applied, _) = sm.applied_state().await.expect("applied");
    let committed = log.read_committed().await.expect("committed");
    let from = applied.map_or(0, |l| l.index + 1);
    let to = committed.map_or(0, |l| l.index + 1);
    let replay = log.try_get_log_entries(from..to).await.expect("read");
    assert_eq!(replay.len(), 2);
    sm.apply(replay).await.expect("replay");
    assert_eq!(sm.state(), &before);
}
