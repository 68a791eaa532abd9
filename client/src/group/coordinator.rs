//! Finding a group's coordinator and calling it.
//!
//! Any broker answers `FindCoordinator` (the first call creates `__consumer_offsets`, so the
//! answer may be `COORDINATOR_NOT_AVAILABLE` for a few seconds); the address is cached until a
//! call to it fails with `NOT_COORDINATOR` (whose hint, when it names the new coordinator, is
//! taken at once) or a transport error. Calls retry those, with the client's backoff and
//! attempt budget, like requests to partition leaders.

use std::future::Future;
use std::sync::Mutex;

use cairn_proto::v1::FindCoordinatorRequest;
use cairn_proto::v1::groups_client::GroupsClient;
use tonic::transport::Channel;
use tonic::{Response, Status};

use crate::client::{Client, normalize};
use crate::error::{Error, Result};

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
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(GroupsClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        let mut attempt = 0;
        loop {
            let result = match self.groups().await {
                Ok(c) => self.client.timed(call(c)).await,
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
}
