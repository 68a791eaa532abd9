//! The Raft state machine over [`ClusterState`]: openraft's `RaftStateMachine` and
//! `RaftSnapshotBuilder` for [`TypeConfig`].
//!
//! Applying is in memory and calls [`ClusterState::apply`]; a refused command becomes an error
//! *response* (the entry still counts as applied, since every replica refuses it alike), never a
//! storage error. Durability comes from snapshots: each one is the serialised `ClusterState` plus
//! openraft's snapshot meta (last applied log id and membership), replaced atomically as
//! `snapshot.json` in the metadata directory. On open the latest snapshot is loaded and openraft
//! re-applies the committed log after it. The snapshot data sent to a peer is the JSON of the
//! `ClusterState`; the meta travels beside it. This module knows the state and files, not the
//! log store, the network or the broker.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::fs::{StoreError, io_err, read_json, write_json};
use super::state::{ClusterState, MetadataResponse};
use super::{ApplyOutcome, TypeConfig};

/// Name of the snapshot file in the metadata directory.
pub const SNAPSHOT_FILE: &str = "snapshot.json";

type NodeId = u64;
type Meta = SnapshotMeta<NodeId, BasicNode>;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// The snapshot as stored on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PersistedSnapshot {
    meta: Meta,
    state: ClusterState,
}

/// The current snapshot: its meta and the bytes handed to openraft (JSON of the state).
#[derive(Debug, Clone)]
struct CurrentSnapshot {
    meta: Meta,
    data: Vec<u8>,
}

/// The latest snapshot, shared between the state machine and its snapshot builders; its lock
/// also serialises writes of `snapshot.json` so an older snapshot never replaces a newer one.
#[derive(Debug, Clone, Default)]
struct SnapshotSlot(Arc<Mutex<Option<CurrentSnapshot>>>);

impl SnapshotSlot {
    fn lock(&self) -> MutexGuard<'_, Option<CurrentSnapshot>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Persists and publishes `state` at `meta`, unless a snapshot at least as new is current.
    fn store(
        &self,
        dir: &Path,
        meta: Meta,
        state: &ClusterState,
    ) -> Result<CurrentSnapshot, StoreError> {
        let path = dir.join(SNAPSHOT_FILE);
        let mut current = self.lock();
        if let Some(cur) = current
            .as_ref()
            .filter(|c| c.meta.last_log_id > meta.last_log_id)
        {
            return Ok(cur.clone());
        }
        let persisted = PersistedSnapshot {
            meta,
            state: state.clone(),
        };
        write_json(&path, &persisted)?;
        let data = encode(&path, state)?;
        let fresh = CurrentSnapshot {
            meta: persisted.meta,
            data,
        };
        *current = Some(fresh.clone());
        Ok(fresh)
    }
}

fn encode(path: &Path, state: &ClusterState) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(state).map_err(|source| StoreError::Codec {
        path: path.to_owned(),
        source,
    })
}

/// The metadata as of one applied Raft entry: what the rest of the broker reads. Cheap to clone
/// (the state is shared).
#[derive(Debug, Clone, Default)]
pub struct MetadataView {
    /// The state after the entry.
    pub state: Arc<ClusterState>,
    /// Raft log index of the entry (0 before any).
    pub applied_index: u64,
}

/// The metadata state machine of one node, with its snapshots under a directory.
#[derive(Debug)]
pub struct StateMachine {
    dir: PathBuf,
    /// Copy-on-write: readers hold the published `Arc`, so applying clones the state at most
    /// once per batch of entries.
    state: Arc<ClusterState>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot: SnapshotSlot,
    /// Publishes the state after every applied batch and installed snapshot.
    published: watch::Sender<MetadataView>,
}

impl StateMachine {
    /// Opens the state machine in `dir` (creating it if needed), starting from the latest
    /// snapshot if there is one.
    ///
    /// # Errors
    ///
    /// [`StoreError`] if the directory cannot be created or the snapshot cannot be read.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_owned();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(SNAPSHOT_FILE);
        let mut sm = Self {
            dir,
            state: Arc::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            snapshot: SnapshotSlot::default(),
            published: watch::Sender::new(MetadataView::default()),
        };
        if let Some(p) = read_json::<PersistedSnapshot>(&path)? {
            let data = encode(&path, &p.state)?;
            sm.last_applied = p.meta.last_log_id;
            sm.membership = p.meta.last_membership.clone();
            sm.state = Arc::new(p.state);
            *sm.snapshot.lock() = Some(CurrentSnapshot { meta: p.meta, data });
        }
        sm.publish();
        Ok(sm)
    }

    /// The metadata as of the last applied entry.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Follows the metadata: the receiver sees the state after every applied batch of entries.
    pub fn subscribe(&self) -> watch::Receiver<MetadataView> {
        self.published.subscribe()
    }

    fn publish(&self) {
        self.published.send_replace(MetadataView {
            state: Arc::clone(&self.state),
            applied_index: self.last_applied.map_or(0, |l| l.index),
        });
    }
}

/// Builds a snapshot from a copy of the state taken when openraft asked for a builder.
#[derive(Debug)]
pub struct SnapshotBuilder {
    dir: PathBuf,
    state: ClusterState,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    slot: SnapshotSlot,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{nanos}", l.leader_id.term, l.index),
            None => format!("0-0-{nanos}"),
        };
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let stored = self
            .slot
            .store(&self.dir, meta, &self.state)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<ApplyOutcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Ok(MetadataResponse::Nothing),
                EntryPayload::Normal(cmd) => Arc::make_mut(&mut self.state).apply(&cmd),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    Ok(MetadataResponse::Nothing)
                }
            };
            out.push(outcome);
        }
        self.publish();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            dir: self.dir.clone(),
            state: ClusterState::clone(&self.state),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            slot: self.snapshot.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let signature = Some(meta.signature());
        let state: ClusterState = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), &e))?;
        self.snapshot
            .store(&self.dir, meta.clone(), &state)
            .map_err(|e| StorageIOError::write_snapshot(signature, &e))?;
        self.state = Arc::new(state);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.snapshot.lock().as_ref().map(|c| Snapshot {
            meta: c.meta.clone(),
            snapshot: Box::new(Cursor::new(c.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests;
