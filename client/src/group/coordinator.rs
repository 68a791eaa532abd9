//! Finding a group's coordinator, and the calls a member makes to it besides heartbeats:
//! committing offsets and looking up where newly assigned partitions start.
//!
//! Any broker answers `FindCoordinator` (the first call creates `__consumer_offsets`, so the
//! answer may be `COORDINATOR_NOT_AVAILABLE` for a few seconds); the address is cached until a
//! call to it fails with `NOT_COORDINATOR` (whose hint, when it names the new coordinator, is
//! taken at once) or a transport error. Calls retry those, with the client's backoff and
//! attempt budget, like requests to partition leaders.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use cairn_proto::v1::groups_client::GroupsClient;
use cairn_proto::v1::{
    CommitOffsetsRequest, FetchOffsetsRequest, FindCoordinatorRequest, PartitionCommit,
};
use tonic::transport::Channel;
use tonic::{Response, Status};

use super::heartbeat::{Identity, SharedIdentity};
use super::{TopicPartition, by_topic};
use crate::client::{Client, SeekTo, normalize};
use crate::consumer::OffsetReset;
use crate::error::{Error, Result};

/// How many times a commit refused with `STALE_MEMBER_EPOCH` is tried again, each after the
/// client's backoff: the heartbeat in flight brings the member's new epoch meanwhile.
const STALE_EPOCH_RETRIES: u32 = 3;

/// Where a newly assigned partition starts.
#[derive(Debug)]
pub(crate) struct Start {
    pub tp: TopicPartition,
    /// The first offset to read.
    pub next: i64,
    /// The group's committed offset, if it has one.
    pub committed: Option<i64>,
}

/// One group's coordinator, as far as this client knows.
#[derive(Debug)]
pub(crate) struct Coordinator {
    client: Client,
    group: String,
    /// The coordinator's normalised address, once found.
    address: Mutex<Option<String>>,
}

impl Coordinator {
    pub fn new(client: Client, group: String) -> Self {
        Self {
            client,
            group,
            address: Mutex::new(None),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// The coordinator's address: cached, or asked of any broker.
    ///
    /// # Errors
    ///
    /// `FindCoordinator`'s error after the client's retries (`COORDINATOR_NOT_AVAILABLE` while
    /// the offsets topic gets its leaders; `INVALID_ARGUMENT` for a bad group id).
    pub async fn find(&self) -> Result<String> {
        if let Some(addr) = self.cached() {
            return Ok(addr);
        }
        let request = FindCoordinatorRequest {
            group_id: self.group.clone(),
        };
        let found = self
            .client
            .call_groups_any(|mut c| {
                let request = request.clone();
                async move { c.find_coordinator(request).await }
            })
            .await?;
        let addr = normalize(&found.address);
        *self.address.lock().expect("coordinator lock poisoned") = Some(addr.clone());
        Ok(addr)
    }

    /// The coordinator's address, cached or asked of each broker in turn with `deadline` per
    /// call, so a dead or stopped broker costs at most that: for the heartbeat task, which
    /// must find a new coordinator well within a session. A broker that says the coordinator
    /// is not available (no leader yet, or itself cut off) passes the question to the next.
    ///
    /// # Errors
    ///
    /// The last broker's answer when none named the coordinator.
    pub async fn find_within(&self, deadline: std::time::Duration) -> Result<String> {
        if let Some(addr) = self.cached() {
            return Ok(addr);
        }
        let request = FindCoordinatorRequest {
            group_id: self.group.clone(),
        };
        let mut last = None;
        for broker in self.client.any_addresses() {
            let mut groups = self.client.groups_client(self.client.channel(&broker)?);
            let e = match tokio::time::timeout(deadline, groups.find_coordinator(request.clone()))
                .await
            {
                Ok(Ok(found)) => {
                    let addr = normalize(&found.into_inner().address);
                    *self.address.lock().expect("coordinator lock poisoned") = Some(addr.clone());
                    return Ok(addr);
                }
                Ok(Err(status)) => Error::from_status(status),
                Err(_) => Error::Timeout(deadline),
            };
            if !e.is_retriable() {
                return Err(e);
            }
            last = Some(e);
        }
        Err(last.expect("the broker list is never empty: bootstrap is checked"))
    }

    fn cached(&self) -> Option<String> {
        self.address
            .lock()
            .expect("coordinator lock poisoned")
            .clone()
    }

    /// Forgets the coordinator: the next call asks for it again.
    pub fn reset(&self) {
        *self.address.lock().expect("coordinator lock poisoned") = None;
    }

    /// Forgets the coordinator after `e`, taking a `NOT_COORDINATOR` hint that names the new
    /// one. Returns whether the hint gave an address to try at once.
    pub fn forget(&self, e: &Error) -> bool {
        let hint = match e {
            Error::NotCoordinator {
                coordinator: Some(hint),
                ..
            } => hint.addr.as_deref().map(normalize),
            _ => None,
        };
        let found = hint.is_some();
        *self.address.lock().expect("coordinator lock poisoned") = hint;
        found
    }

    /// A `Groups` client on the coordinator.
    ///
    /// # Errors
    ///
    /// As [`Coordinator::find`].
    pub async fn groups(&self) -> Result<GroupsClient<Channel>> {
        let addr = self.find().await?;
        Ok(self.client.groups_client(self.client.channel(&addr)?))
    }

    /// Sends a request to the coordinator, finding it again and retrying on `NOT_COORDINATOR`,
    /// `COORDINATOR_NOT_AVAILABLE` and transport errors, up to the client's retries.
    ///
    /// # Errors
    ///
    /// The call's error when it is not retriable or the retries are spent.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnMut(GroupsClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        self.call_within(self.client.config().request_timeout, call)
            .await
    }

    /// [`Coordinator::call`] with `deadline` on each attempt.
    ///
    /// # Errors
    ///
    /// As [`Coordinator::call`].
    pub async fn call_within<T, F, Fut>(
        &self,
        deadline: std::time::Duration,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut(GroupsClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        let mut attempt = 0;
        loop {
            let result = match self.groups().await {
                Ok(c) => match tokio::time::timeout(deadline, call(c)).await {
                    Ok(Ok(response)) => Ok(response.into_inner()),
                    Ok(Err(status)) => Err(Error::from_status(status)),
                    Err(_) => Err(Error::Timeout(deadline)),
                },
                Err(e) => Err(e),
            };
            let e = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            attempt += 1;
            if !self.client.should_retry(&e, attempt) {
                return Err(e);
            }
            tracing::debug!(group = self.group, attempt, error = %e, "retrying a group call");
            let hinted = match e {
                Error::NotCoordinator { .. } | Error::Transport { .. } | Error::Timeout(_) => {
                    self.forget(&e)
                }
                _ => false,
            };
            if !(hinted && attempt == 1) {
                tokio::time::sleep(self.client.config().backoff(attempt)).await;
            }
        }
    }

    /// Commits `offsets` as the member `identity` holds when each attempt leaves, and returns
    /// them once stored.
    ///
    /// # Errors
    ///
    /// The coordinator's refusal (all or nothing), or transport errors after the retries.
    pub async fn commit(
        self: Arc<Self>,
        identity: SharedIdentity,
        offsets: Vec<(TopicPartition, i64)>,
    ) -> Result<Vec<(TopicPartition, i64)>> {
        let commits: Vec<PartitionCommit> = offsets
            .iter()
            .map(|(tp, offset)| PartitionCommit {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: *offset,
                metadata: String::new(),
            })
            .collect();
        let mut attempt = 0;
        loop {
            let Identity {
                member_id,
                epoch,
                call_timeout,
            } = identity.lock().expect("identity lock poisoned").clone();
            let deadline = call_timeout.unwrap_or(self.client.config().request_timeout);
            let request = CommitOffsetsRequest {
                group_id: self.group().to_owned(),
                member_id,
                member_epoch: epoch,
                offsets: commits.clone(),
            };
            let result = self
                .call_within(deadline, |mut c| {
                    let request = request.clone();
                    async move { c.commit_offsets(request).await }
                })
                .await;
            match result {
                Ok(_) => return Ok(offsets),
                Err(Error::StaleMemberEpoch { .. }) if attempt < STALE_EPOCH_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(self.client().config().backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Where each of `partitions` starts: the group's committed offset, else `reset`.
    ///
    /// # Errors
    ///
    /// `FetchOffsets` or `ListOffsets` errors after the retries.
    pub async fn starts(
        self: Arc<Self>,
        reset: OffsetReset,
        partitions: BTreeSet<TopicPartition>,
    ) -> Result<Vec<Start>> {
        let request = FetchOffsetsRequest {
            group_id: self.group().to_owned(),
            topics: by_topic(&partitions),
        };
        let answer = self
            .call(|mut c| {
                let request = request.clone();
                async move { c.fetch_offsets(request).await }
            })
            .await?;
        let committed: HashMap<TopicPartition, i64> = answer
            .offsets
            .into_iter()
            .filter(|c| c.offset >= 0)
            .map(|c| (TopicPartition::new(c.topic, c.partition), c.offset))
            .collect();
        let mut starts = Vec::with_capacity(partitions.len());
        let mut missing: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for tp in partitions {
            match committed.get(&tp) {
                Some(&offset) => starts.push(Start {
                    tp,
                    next: offset,
                    committed: Some(offset),
                }),
                None => missing.entry(tp.topic).or_default().push(tp.partition),
            }
        }
        let at = match reset {
            OffsetReset::Earliest => SeekTo::Earliest,
            OffsetReset::Latest => SeekTo::Latest,
            OffsetReset::Error => match missing.iter().next() {
                Some((topic, parts)) => {
                    return Err(Error::NoOffset {
                        topic: topic.clone(),
                        partition: parts[0],
                    });
                }
                None => SeekTo::Latest,
            },
        };
        for (topic, parts) in missing {
            for o in self.client().list_offsets(&topic, &parts, at).await? {
                starts.push(Start {
                    tp: TopicPartition::new(topic.clone(), o.partition),
                    next: o.offset,
                    committed: None,
                });
            }
        }
        Ok(starts)
    }
}
