//! The log store across reopen: entries, vote, torn tails, truncation and purge survive.

use std::fs::OpenOptions;
use std::io::Write;

use openraft::storage::{LogState, RaftLogStorage, RaftLogStorageExt};
use openraft::testing::log_id;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};
use tempfile::TempDir;

use super::{LOG_FILE, LogStore};
use crate::metadata::{MetadataCommand, StoreError, TypeConfig};

fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(MetadataCommand::RegisterBroker {
            id: u32::try_from(index).unwrap_or(0),
            addr: format!("h{index}:1"),
        }),
    }
}

/// Appends through openraft's blocking helper, which waits for the flush callback.
async fn append(store: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
    store.blocking_append(entries).await.expect("append");
}

async fn indexes(store: &mut LogStore) -> Vec<u64> {
    let entries = store.try_get_log_entries(..).await.expect("read");
    entries.iter().map(|e| e.log_id.index).collect()
}

fn reopen(dir: &TempDir) -> LogStore {
    LogStore::open(dir.path()).expect("reopen")
}

#[tokio::test]
async fn reopen_keeps_entries_vote_and_committed() {
    let dir = TempDir::new().expect("tempdir");
    let mut s = reopen(&dir);
    append(&mut s, (1..=5).map(|i| entry(1, i)).collect()).await;
    let vote = Vote::new(3, 2);
    s.save_vote(&vote).await.expect("vote");
    s.save_committed(Some(log_id(1, 1, 4)))
        .await
        .expect("committed");
    drop(s);

    let mut s = reopen(&dir);
    assert_eq!(indexes(&mut s).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(s.read_vote().await.expect("vote"), Some(vote));
    assert_eq!(s.read_committed().await.expect("c"), Some(log_id(1, 1, 4)));
    let got = s.try_get_log_entries(3..4).await.expect("read");
    assert_eq!(got[0].payload, entry(1, 3).payload);
}

#[tokio::test]
async fn a_torn_last_entry_is_cut_off_on_open() {
    let dir = TempDir::new().expect("tempdir");
    let mut s = reopen(&dir);
    append(&mut s, (1..=3).map(|i| entry(1, i)).collect()).await;
    drop(s);
    let path = dir.path().join(LOG_FILE);
    let intact = std::fs::metadata(&path).expect("stat").len();
    // Half a frame: a header promising more bytes than follow.
    let mut f = OpenOptions::new().append(true).open(&path).expect("open");
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{'])
        .expect("tear");
    drop(f);

    let mut s = reopen(&dir);
    assert_eq!(indexes(&mut s).await, vec![1, 2, 3]);
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), intact);
    // The log continues cleanly after the cut.
    append(&mut s, vec![entry(1, 4)]).await;
    drop(s);
    assert_eq!(indexes(&mut reopen(&dir)).await, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn a_last_entry_with_a_bad_crc_is_cut_off_on_open() {
    let dir = TempDir::new().expect("tempdir");
    let mut s = reopen(&dir);
    append(&mut s, (1..=3).map(|i| entry(1, i)).collect()).await;
    drop(s);
    let path = dir.path().join(LOG_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 2;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    assert_eq!(indexes(&mut reopen(&dir)).await, vec![1, 2]);
}

#[tokio::test]
async fn truncate_and_purge_survive_reopen() {
    let dir = TempDir::new().expect("tempdir");
    let mut s = reopen(&dir);
    append(&mut s, (1..=10).map(|i| entry(1, i)).collect()).await;
    s.truncate(log_id(1, 1, 8)).await.expect("truncate");
    s.purge(log_id(1, 1, 3)).await.expect("purge");
    append(&mut s, vec![entry(2, 8)]).await;
    drop(s);

    let mut s = reopen(&dir);
    assert_eq!(indexes(&mut s).await, vec![4, 5, 6, 7, 8]);
    let state = s.get_log_state().await.expect("state");
    let want = LogState {
        last_purged_log_id: Some(log_id(1, 1, 3)),
        last_log_id: Some(log_id(2, 1, 8)),
    };
    assert_eq!(state, want);
}

#[tokio::test]
async fn purge_past_the_end_leaves_an_empty_log_at_the_purge_point() {
    let dir = TempDir::new().expect("tempdir");
    let mut s = reopen(&dir);
    append(&mut s, (1..=3).map(|i| entry(1, i)).collect()).await;
    let far = LogId::new(CommittedLeaderId::new(4, 1), 20);
    s.purge(far).await.expect("purge");
    drop(s);
    let mut s = reopen(&dir);
    assert!(indexes(&mut s).await.is_empty());
    let state = s.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id, Some(far));
}

#[tokio::test]
async fn a_purge_interrupted_before_the_rewrite_is_finished_on_open() {
    let dir = TempDir::new().expect("tempdir");
    let mut s = reopen(&dir);
    append(&mut s, (1..=3).map(|i| entry(1, i)).collect()).await;
    drop(s);
    // The purge point reached the disk, the rewrite did not.
    let far = Some(log_id(2, 1, 20));
    crate::metadata::fs::write_json(&dir.path().join(super::PURGED_FILE), &far).expect("write");

    let mut s = reopen(&dir);
    assert!(indexes(&mut s).await.is_empty());
    append(&mut s, vec![entry(2, 21), entry(2, 22)]).await;
    drop(s);
    assert_eq!(indexes(&mut reopen(&dir)).await, vec![21, 22]);
}

/// Flips a byte in the frame of `index` (1-based, entries 1..=n appended in one go).
fn damage_frame(dir: &TempDir, index: usize, n: usize) {
    let path = dir.path().join(LOG_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    // Frames are equal-sized here (same term, one-digit payloads), so the k-th starts at k * size.
    let frame = bytes.len() / n;
    let at = (index - 1) * frame + frame - 2;
    bytes[at] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
}

#[tokio::test]
async fn damage_above_the_committed_index_is_cut_off_like_a_torn_tail() {
    let dir = TempDir::new().expect("tempdir");
    let mut s = reopen(&dir);
    append(&mut s, (1..=5).map(|i| entry(1, i)).collect()).await;
    s.save_committed(Some(log_id(1, 1, 3)))
        .await
        .expect("commit");
    drop(s);
    damage_frame(&dir, 4, 5);
    assert_eq!(indexes(&mut reopen(&dir)).await, vec![1, 2, 3]);
}

#[tokio::test]
async fn damage_at_or_below_the_committed_index_refuses_to_open() {
    let dir = TempDir::new().expect("tempdir");
    let mut s = reopen(&dir);
    append(&mut s, (1..=5).map(|i| entry(1, i)).collect()).await;
    s.save_committed(Some(log_id(1, 1, 4)))
        .await
        .expect("commit");
    drop(s);
    damage_frame(&dir, 3, 5);
    let before = std::fs::read(dir.path().join(LOG_FILE)).expect("read");
    match LogStore::open(dir.path()) {
        Err(StoreError::CommittedEntriesDamaged {
            last, committed, ..
        }) => {
            assert_eq!(last, Some(2));
            assert_eq!(committed, 4);
        }
        other => panic!(
            "expected CommittedEntriesDamaged, got {:?}",
            other.map(|_| ())
        ),
    }
    // Refusing changed nothing on disk: an operator can still inspect or repair the file.
    assert_eq!(
        std::fs::read(dir.path().join(LOG_FILE)).expect("read"),
        before
    );
}
