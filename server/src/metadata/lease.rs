//! The broker's side of membership: register with the controller, then renew the lease by
//! heartbeat for as long as the broker runs (Kafka's `BrokerLifecycleManager`).
//!
//! The controller is found through this broker's own Raft view, else by asking the configured
//! voters in turn; a broker that is not the controller answers `NOT_CONTROLLER` with the one it
//! knows, which is tried next. A heartbeat refused with `STALE_BROKER_EPOCH` (the controller
//! lost or replaced the registration) makes the broker register again. Every call goes over the
//! internal `cairn.v1.Controller` gRPC service, this broker's own included, so there is one path.

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::v1::{self as pb, controller_client::ControllerClient};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use super::Quorum;
use crate::config::ClusterConfig;
use crate::peers::PeerChannels;

/// How long connecting to a controller may take (each call is also bounded by the lease call
/// timeout, one heartbeat interval).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause after a failed attempt before the next (the next voter, or the hinted controller).
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long a registered broker waits to apply its own registration before trying again.
const CATCH_UP: Duration = Duration::from_secs(30);

/// This broker's registration, once the controller accepted it and this broker applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The broker epoch the controller granted.
    pub epoch: u64,
    /// Raft index of the registration.
    pub index: u64,
}

/// How long a stopping broker keeps asking the controller to fence it.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Registers and heartbeats until `leave` fires, publishing each registration on
/// `registered`; then, if registered, asks the controller to fence this broker now (controlled
/// shutdown: its leaderships move to other in-sync replicas) and returns once the controller
/// did, or after `LEAVE_TIMEOUT` (10 s).
pub async fn run(
    quorum: Arc<Quorum>,
    addr: String,
    cluster: ClusterConfig,
    registered: watch::Sender<Option<Registered>>,
    leave: CancellationToken,
) {
    // Well under the session: a call to a controller that stopped answering (paused, cut off,
    // replaced) must give up in time to find the new one within the new controller's grace.
    let call_timeout = cluster.lease_call_timeout();
    let mut lease = Lease {
        quorum,
        addr,
        interval: Duration::from_millis(cluster.broker_heartbeat_interval_ms),
        channels: PeerChannels::new(|e| e.connect_timeout(CONNECT_TIMEOUT)),
        call_timeout,
        next_voter: 0,
        hint: None,
        last_failed: None,
    };
    let mut epoch: Option<u64> = None;
    loop {
        let pause = match epoch {
            None => match lease.register().await {
                Ok(r) => {
                    tracing::info!(epoch = r.epoch, "registered with the controller");
                    epoch = Some(r.epoch);
                    lease.quorum.set_registered();
                    registered.send_replace(Some(r));
                    // Heartbeat at once: the first one unfences the broker.
                    Duration::ZERO
                }
                Err(e) => {
                    tracing::debug!(error = %e, "registration failed; retrying");
                    RETRY_PAUSE
                }
            },
            Some(e) => match lease.heartbeat(e).await {
                Ok(()) => lease.interval,
                Err(Failure::Stale(message)) => {
                    tracing::warn!(%message, "registration lost; registering again");
                    epoch = None;
                    Duration::ZERO
                }
                Err(err) => {
                    tracing::debug!(error = %err, "heartbeat failed; retrying");
                    RETRY_PAUSE
                }
            },
        };
        tokio::select! {
            () = leave.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    let Some(epoch) = epoch else { return };
    let leaving = async {
        loop {
            match lease.leave(epoch).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "controlled shutdown not acknowledged yet");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    };
    if tokio::time::timeout(LEAVE_TIMEOUT, leaving).await.is_err() {
        tracing::warn!(
            "the controller did not acknowledge the controlled shutdown; stopping anyway"
        );
    }
}

/// A call that outlived the lease call timeout.
fn timed_out() -> tonic::Status {
    tonic::Status::deadline_exceeded("the controller did not answer within the lease call timeout")
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("no controller known")]
    NoTarget,
    #[error("{0}")]
    Stale(String),
    #[error("controller call failed: {0}")]
    Call(String),
    #[error("registration at index {0} not applied locally in time")]
    CatchUp(u64),
}

struct Lease {
    quorum: Arc<Quorum>,
    addr: String,
    interval: Duration,
    channels: PeerChannels,
    /// How long one call may take ([`ClusterConfig::lease_call_timeout`]).
    call_timeout: Duration,
    /// Which configured voter to ask next when no controller is known.
    next_voter: usize,
    /// A controller address learnt from a `NOT_CONTROLLER` answer.
    hint: Option<String>,
    /// The address the last call failed at (refused, timed out or `NOT_CONTROLLER`): the next
    /// call goes elsewhere unless Raft names another controller or there is nowhere else.
    last_failed: Option<String>,
}

impl Lease {
    /// Where to send the next call: the controller this broker's Raft view names, unless the
    /// last call there failed; then a `NOT_CONTROLLER` hint, else the next configured voter.
    fn target(&mut self) -> Option<String> {
        let named = self
            .quorum
            .controller()
            .and_then(|c| self.quorum.broker_addr(c));
        if let Some(addr) = named
            && self.last_failed.as_ref() != Some(&addr)
        {
            return Some(addr);
        }
        if let Some(hint) = self.hint.take() {
            return Some(hint);
        }
        let voters = self.quorum.configured_voters();
        for _ in 0..voters.len() {
            let v = &voters[self.next_voter % voters.len()];
            self.next_voter = self.next_voter.wrapping_add(1);
            if self.last_failed.as_ref() != Some(&v.addr) || voters.len() == 1 {
                return Some(v.addr.clone());
            }
        }
        self.last_failed.clone()
    }

    /// Remembers where a call failed, so the next one tries elsewhere.
    fn call_failed(&mut self, addr: String, status: &tonic::Status) -> Failure {
        let failure = self.failed(status);
        self.last_failed = Some(addr);
        failure
    }

    fn client(&mut self, addr: &str) -> Result<ControllerClient<Channel>, Failure> {
        let channel = self
            .channels
            .get(addr)
            .map_err(|e| Failure::Call(format!("bad controller address {addr}: {e}")))?;
        Ok(ControllerClient::new(channel))
    }

    /// Turns a refusal into a failure, remembering a `NOT_CONTROLLER` hint.
    fn failed(&mut self, status: &tonic::Status) -> Failure {
        if let Some(info) = status.get_details_error_info() {
            match info.reason.as_str() {
                "NOT_CONTROLLER" => {
                    self.hint = info
                        .metadata
                        .get("controller_addr")
                        .filter(|a| !a.is_empty())
                        .cloned();
                }
                "STALE_BROKER_EPOCH" => return Failure::Stale(status.message().to_owned()),
                _ => {}
            }
        }
        Failure::Call(format!("{:?}: {}", status.code(), status.message()))
    }

    async fn register(&mut self) -> Result<Registered, Failure> {
        let target = self.target().ok_or(Failure::NoTarget)?;
        let mut client = self.client(&target)?;
        let request = pb::RegisterBrokerRequest {
            broker_id: self.quorum.id(),
            address: self.addr.clone(),
        };
        let call = tokio::time::timeout(self.call_timeout, client.register_broker(request));
        let reply = match call.await.unwrap_or_else(|_| Err(timed_out())) {
            Ok(r) => {
                self.last_failed = None;
                r.into_inner()
            }
            Err(status) => return Err(self.call_failed(target, &status)),
        };
        // A learner is added to the Raft group just after registering, so it may take a moment
        // to receive the log up to its registration.
        if !self
            .quorum
            .wait_applied(reply.metadata_index, CATCH_UP)
            .await
        {
            return Err(Failure::CatchUp(reply.metadata_index));
        }
        Ok(Registered {
            epoch: reply.broker_epoch,
            index: reply.metadata_index,
        })
    }

    async fn heartbeat(&mut self, epoch: u64) -> Result<(), Failure> {
        self.send_heartbeat(epoch, false).await
    }

    /// Asks to be fenced now (controlled shutdown).
    async fn leave(&mut self, epoch: u64) -> Result<(), Failure> {
        self.send_heartbeat(epoch, true).await
    }

    async fn send_heartbeat(&mut self, epoch: u64, want_shutdown: bool) -> Result<(), Failure> {
        let target = self.target().ok_or(Failure::NoTarget)?;
        let mut client = self.client(&target)?;
        let request = pb::BrokerHeartbeatRequest {
            broker_id: self.quorum.id(),
            broker_epoch: epoch,
            want_shutdown,
        };
        let call = tokio::time::timeout(self.call_timeout, client.broker_heartbeat(request));
        match call.await.unwrap_or_else(|_| Err(timed_out())) {
            Ok(_) => {
                self.last_failed = None;
                Ok(())
            }
            Err(status) => Err(self.call_failed(target, &status)),
        }
    }
}
