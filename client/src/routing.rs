//! The retry loop: how a request reaches a partition's leader (or any broker, for unrouted
//! calls) and what happens when it fails. Leadership moves during failovers, so a
//! `NOT_LEADER`, an unreachable broker or a briefly unknown topic leads to a metadata refresh
//! (or the error's leader hint), a doubling backoff and another attempt, up to
//! [`ClientConfig::retries`](crate::ClientConfig::retries); anything else is surfaced at once.

use std::future::Future;

use cairn_proto::v1::admin_client::AdminClient;
use cairn_proto::v1::broker_client::BrokerClient;
use cairn_proto::v1::groups_client::GroupsClient;
use tonic::transport::Channel;
use tonic::{Response, Status};

use crate::client::Client;
use crate::error::{Error, Result};

/// How many attempts an `UNKNOWN_TOPIC` / `UNKNOWN_PARTITION` gets: enough to ride out a topic
/// created a moment ago whose metadata has not reached every broker, few enough that a typo
/// fails fast.
const UNKNOWN_TOPIC_ATTEMPTS: u32 = 4;

impl Client {
    /// Sends a request to the leader of `topic`/`partition`, following leadership changes:
    /// on `NOT_LEADER`, an unreachable broker or a briefly unknown topic, it refreshes the
    /// metadata (or takes the error's leader hint), backs off and tries again, up to
    /// [`ClientConfig::retries`] attempts.
    pub(crate) async fn call_leader<T, F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut(BrokerClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        let mut attempt = 0;
        loop {
            let result = match self.leader_address(topic, partition).await {
                Ok(addr) => match self.channel(&addr) {
                    Ok(channel) => self
                        .timed(call(self.broker_client(channel)))
                        .await
                        .map_err(|e| e.at_address(&addr)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            let e = match result {
                Ok(v) => return Ok(v),
                Err(e) => e.at_partition(topic, partition),
            };
            attempt += 1;
            if !self.should_retry(&e, attempt) {
                return Err(e);
            }
            tracing::debug!(topic, partition, attempt, error = %e, "retrying");
            self.recover(topic, partition, &e, attempt).await;
        }
    }

    /// Sends an unrouted request (metadata, admin) to any broker, moving to the next broker and
    /// backing off while they fail with retriable errors.
    pub(crate) async fn call_any<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(BrokerClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        self.call_any_with(|channel| call(self.broker_client(channel)))
            .await
    }

    /// [`Self::call_any`] for the Admin service.
    pub(crate) async fn call_admin<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(AdminClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        self.call_any_with(|channel| call(self.admin_client(channel)))
            .await
    }

    /// [`Self::call_any`] for the Groups service (`FindCoordinator`, which any broker answers).
    pub(crate) async fn call_groups_any<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(GroupsClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        self.call_any_with(|channel| call(self.groups_client(channel)))
            .await
    }

    async fn call_any_with<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        let mut attempt = 0;
        loop {
            let addresses = self.any_addresses();
            let mut last = None;
            for addr in &addresses {
                let result = match self.channel(addr) {
                    Ok(channel) => self
                        .timed(call(channel))
                        .await
                        .map_err(|e| e.at_address(addr)),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(v) => {
                        self.note_answer(addr, true);
                        return Ok(v);
                    }
                    Err(e) if matches!(e, Error::Transport { .. } | Error::Timeout(_)) => {
                        self.note_answer(addr, false);
                        last = Some(e);
                    }
                    Err(e) => {
                        last = Some(e);
                        break;
                    }
                }
            }
            let e = last.expect("the broker list is never empty: bootstrap is checked");
            attempt += 1;
            if !self.should_retry(&e, attempt) {
                return Err(e);
            }
            tokio::time::sleep(self.config().backoff(attempt)).await;
        }
    }

    /// Whether a request that failed `attempt` times with `e` should be tried again.
    pub(crate) fn should_retry(&self, e: &Error, attempt: u32) -> bool {
        attempt < self.config().retries
            && (e.is_retriable()
                || (e.is_unknown_topic_or_partition() && attempt < UNKNOWN_TOPIC_ATTEMPTS))
    }

    /// Prepares the next attempt after `e`: takes a `NOT_LEADER` hint straight into the cache
    /// (retrying at once the first time), or backs off and refreshes the metadata.
    pub(crate) async fn recover(&self, topic: &str, partition: u32, e: &Error, attempt: u32) {
        if let Error::NotLeader {
            leader: Some(hint), ..
        } = e
            && self.apply_hint(topic, partition, hint)
            && attempt == 1
        {
            return;
        }
        tokio::time::sleep(self.config().backoff(attempt)).await;
        if let Err(e) = self.refresh().await {
            tracing::debug!(error = %e, "metadata refresh failed");
        }
    }
}
