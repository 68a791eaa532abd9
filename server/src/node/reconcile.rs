//! Following the cluster metadata: the node opens a replica for every partition assigned to this
//! broker, records which ones it leads, and closes the rest, deleting the data of deleted topics.
//!
//! Each partition directory holds `partition.json` with its topic's id (Kafka's
//! `partition.metadata`), so a directory left from a deleted topic is never taken for the
//! partition of a new topic with the same name. A directory without the file predates it and is
//! adopted.
//!
//! Directories that no assignment names ("strays": a topic deleted while this broker was down,
//! or a crash during a delete) are removed only once this broker has applied the metadata up to
//! its own registration, so a broker that starts with an old view never deletes live data.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Node, NodeError, Partition, parse_topic};
use crate::metadata::lease::Registered;
use crate::replication::fetcher::{self, Assignment};
use crate::topic::TopicName;

/// The identity file in each partition directory.
const PARTITION_FILE: &str = "partition.json";

#[derive(Debug, Serialize, Deserialize)]
struct PartitionFile {
    topic_id: String,
}

fn read_topic_id(dir: &Path) -> Option<String> {
    let bytes = std::fs::read(dir.join(PARTITION_FILE)).ok()?;
    serde_json::from_slice::<PartitionFile>(&bytes)
        .ok()
        .map(|f| f.topic_id)
}

fn write_topic_id(dir: &Path, topic_id: &str) -> Result<(), NodeError> {
    let path = dir.join(PARTITION_FILE);
    let tmp = dir.join("partition.json.tmp");
    let json = serde_json::to_vec(&PartitionFile {
        topic_id: topic_id.to_owned(),
    })
    .expect("partition file serialises");
    let mut f = std::fs::File::create(&tmp).map_err(NodeError::io("creating", &tmp))?;
    f.write_all(&json).map_err(NodeError::io("writing", &tmp))?;
    f.sync_all().map_err(NodeError::io("syncing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(NodeError::io("renaming", &tmp))
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove partition directory");
    }
}

impl Node {
    /// Brings the hosted partitions in line with the metadata; with `remove_strays`, also
    /// removes partition directories no assignment to this broker names. Failures to open a
    /// partition are logged and retried on the next pass.
    pub fn reconcile(&self, remove_strays: bool) {
        let _pass = self
            .reconciling
            .lock()
            .expect("reconcile lock is not poisoned");
        let view = self.metadata();
        let me = self.id();

        // Close what the metadata no longer assigns here; delete the data of deleted topics.
        let mut closed = Vec::new();
        {
            let mut map = self
                .partitions
                .write()
                .expect("partition map lock is not poisoned");
            for (name, list) in map.iter_mut() {
                let topic = view.state.topic(name.as_str());
                for (index, slot) in list.iter_mut().enumerate() {
                    let Some(p) = slot.as_ref() else { continue };
                    let same_topic = topic.filter(|t| t.topic_id == p.topic_id);
                    let assigned = same_topic
                        .and_then(|t| t.partitions.get(index))
                        .is_some_and(|r| r.replicas.contains(&me));
                    if !assigned {
                        closed.push((slot.take().expect("slot was Some"), same_topic.is_none()));
                    }
                }
            }
            map.retain(|_, list| list.iter().any(Option::is_some));
        }
        for (p, deleted) in closed {
            self.stop_fetcher(p.topic.as_str(), p.index);
            p.set_leadership(me, false, p.leader_epoch(), &[], &[]);
            if deleted {
                tracing::info!(topic = %p.topic, partition = p.index, "deleting the replica of a deleted topic");
                remove_dir(&p.dir);
            } else {
                tracing::warn!(topic = %p.topic, partition = p.index, "no longer a replica; closing it (data kept)");
            }
        }

        // Open what is assigned here and record leadership.
        for (name, topic) in view.state.topics() {
            for (index, record) in (0u32..).zip(&topic.partitions) {
                if !record.replicas.contains(&me) {
                    continue;
                }
                let leads = record.leader == Some(me);
                let lead = |p: &Arc<Partition>| {
                    p.set_leadership(
                        me,
                        leads,
                        record.leader_epoch,
                        &record.replicas,
                        &record.isr,
                    );
                    let follow = record.leader.filter(|&l| l != me).and_then(|l| {
                        let addr = view.state.brokers().get(&l)?.addr.clone();
                        Some(Assignment {
                            me,
                            leader: l,
                            leader_addr: addr,
                            epoch: record.leader_epoch,
                        })
                    });
                    match follow {
                        Some(a) => self.follow(p, a),
                        None => self.stop_fetcher(name, index),
                    }
                };
                if let Some(p) = self.hosted(name, index) {
                    lead(&p);
                    continue;
                }
                let opened = self.open_replica(
                    name,
                    index,
                    &topic.topic_id,
                    &topic.config,
                    record.replicas.len(),
                );
                match opened {
                    Ok(p) => {
                        lead(&p);
                        let mut map = self
                            .partitions
                            .write()
                            .expect("partition map lock is not poisoned");
                        let list = map.entry(p.topic.clone()).or_default();
                        if list.len() < topic.partitions.len() {
                            list.resize(topic.partitions.len(), None);
                        }
                        list[index as usize] = Some(p);
                    }
                    Err(e) => {
                        tracing::error!(topic = name, partition = index, error = %e, "could not open partition");
                    }
                }
            }
        }

        if remove_strays {
            self.remove_strays(&view.state, me);
        }
    }

    /// Makes sure a fetcher follows `a` for `p`, replacing one that follows another leader or
    /// epoch.
    fn follow(&self, p: &Arc<Partition>, a: Assignment) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        let key = (p.topic.to_string(), p.index);
        let mut fetchers = self
            .fetchers
            .lock()
            .expect("fetcher map lock is not poisoned");
        if let Some(f) = fetchers.get(&key) {
            if f.leader == a.leader && f.epoch == a.epoch && !f.cancel.is_cancelled() {
                return;
            }
            f.cancel.cancel();
        }
        let cancel = CancellationToken::new();
        fetchers.insert(
            key,
            super::Fetcher {
                leader: a.leader,
                epoch: a.epoch,
                cancel: cancel.clone(),
            },
        );
        runtime.spawn(fetcher::run(
            Arc::clone(p),
            a,
            self.config.replication.clone(),
            self.leader_channels.clone(),
            cancel,
        ));
    }

    fn stop_fetcher(&self, topic: &str, index: u32) {
        let mut fetchers = self
            .fetchers
            .lock()
            .expect("fetcher map lock is not poisoned");
        if let Some(f) = fetchers.remove(&(topic.to_owned(), index)) {
            f.cancel.cancel();
        }
    }

    fn open_replica(
        &self,
        name: &str,
        index: u32,
        topic_id: &str,
        config: &crate::topic::TopicConfig,
        replication_factor: usize,
    ) -> Result<Arc<Partition>, NodeError> {
        let topic = parse_topic(name)?;
        let dir = self.partition_dir(name, index);
        match read_topic_id(&dir) {
            Some(id) if id != topic_id => {
                tracing::warn!(dir = %dir.display(), "removing the replica of an older topic of the same name");
                remove_dir(&dir);
            }
            _ => {}
        }
        let p = Partition::open(
            topic,
            index,
            topic_id.to_owned(),
            dir.clone(),
            config.resolve(&self.defaults),
            replication_factor,
        )?;
        if read_topic_id(&dir).is_none() {
            write_topic_id(&dir, topic_id)?;
        }
        Ok(Arc::new(p))
    }

    /// Removes `<topic>-<n>` directories that no assignment to this broker names.
    fn remove_strays(&self, state: &crate::metadata::ClusterState, me: u32) {
        let Ok(entries) = std::fs::read_dir(&self.config.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some((topic, index)) = file_name.to_str().and_then(|n| n.rsplit_once('-')) else {
                continue;
            };
            let (Ok(topic), Ok(index)) = (TopicName::new(topic), index.parse::<u32>()) else {
                continue;
            };
            let assigned = state
                .topic(topic.as_str())
                .and_then(|t| t.partitions.get(index as usize))
                .is_some_and(|r| r.replicas.contains(&me));
            if !assigned && entry.path().is_dir() {
                tracing::warn!(dir = %entry.path().display(), "removing a partition directory no topic assigns here");
                remove_dir(&entry.path());
            }
        }
    }

    /// Reconciles on every metadata change until `shutdown`, starting only once this run of the
    /// broker registered and applied the metadata up to its registration: the view replayed
    /// from disk at start may name this broker leader of partitions long since moved, and a
    /// broker acting on it could acknowledge writes the cluster later truncates (KRaft brokers
    /// likewise wait until they caught up with the metadata log). Strays are removed once, after
    /// registration, when no pre-cluster topic file awaits migration.
    pub async fn run_reconcile(
        self: Arc<Self>,
        mut registered: watch::Receiver<Option<Registered>>,
        shutdown: CancellationToken,
    ) {
        tokio::select! {
            () = shutdown.cancelled() => return,
            r = registered.wait_for(Option::is_some) => if r.is_err() { return },
        }
        tracing::info!("registered and caught up with the metadata: following it");
        let mut metadata = self.metadata.clone();
        let mut strays_done = false;
        loop {
            metadata.borrow_and_update();
            let strays = !strays_done
                && registered.borrow_and_update().is_some()
                && !super::Registry::pending(&self.config.data_dir);
            let node = Arc::clone(&self);
            if tokio::task::spawn_blocking(move || node.reconcile(strays))
                .await
                .is_ok()
            {
                strays_done |= strays;
            }
            // Until strays are done, also look again every second: the migration retires its
            // file without changing the metadata.
            let recheck = if strays_done {
                Duration::MAX
            } else {
                Duration::from_secs(1)
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = metadata.changed() => if r.is_err() { return },
                r = registered.changed() => if r.is_err() { return },
                () = tokio::time::sleep(recheck) => {}
            }
        }
    }
}
