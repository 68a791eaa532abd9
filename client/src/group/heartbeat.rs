//! The member's heartbeat task: the async shell around [`Membership`]. It holds the
//! `Groups/Heartbeat` stream to the coordinator, sends what the membership says when it says,
//! passes each answer's meaning to the [`GroupConsumer`](super::GroupConsumer) and keeps
//! the member id and epoch where commits read them.
//!
//! It runs on its own so that heartbeats keep going while the application is busy with a
//! record: a slow application keeps its partitions; only a revocation waits for it.
//!
//! A coordinator that dies, stops or is cut off is noticed within about one heartbeat interval
//! (every call has [`Membership::call_timeout`] as its deadline), and the member goes looking
//! for the new one at once, then with a backoff capped at the heartbeat interval, keeping its
//! member id, epoch and partitions: only a coordinator's refusal loses them.
//!
//! It ends when the member left (or its leave went unanswered for [`LEAVE_WAIT`]), when the
//! consumer is dropped (it then leaves, best effort), or after a fatal refusal.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::v1::{GroupHeartbeatRequest, GroupHeartbeatResponse};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::coordinator::Coordinator;
use super::member::{Membership, Outcome, new_member_id};
use super::{GroupConsumerConfig, TopicPartition};
use crate::error::{Error, Result};

/// How long a leave may take before the task gives up on it (the session timeout then
/// removes the member).
pub(crate) const LEAVE_WAIT: Duration = Duration::from_secs(5);

/// From the consumer to its heartbeat task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Subscribe to these topics (the first one joins).
    Subscribe(Vec<String>),
    /// The consumer owns these partitions now, in its ownership generation `losses`.
    Owned {
        losses: u64,
        owned: BTreeSet<TopicPartition>,
    },
    /// Leave the group; answer once left (or given up).
    Leave(oneshot::Sender<()>),
}

/// From the heartbeat task to its consumer.
#[derive(Debug)]
pub(crate) enum Update {
    /// The complete set of partitions the member may own now.
    Assignment(BTreeSet<TopicPartition>),
    /// Every partition is lost (fenced, or the session ran out); the member is rejoining.
    Lost,
    /// The membership failed for good.
    Fatal(Error),
}

/// The member's id and epoch, written by the heartbeat task, read by commits.
#[derive(Debug, Clone, Default)]
pub(crate) struct Identity {
    pub member_id: String,
    pub epoch: i32,
    /// The deadline of one call to the coordinator ([`Membership::call_timeout`]), once the
    /// heartbeat task knows it: commits use it too, so one to a stopped coordinator is given
    /// up (and retried at the new one) within about a heartbeat interval.
    pub call_timeout: Option<Duration>,
}

pub(crate) type SharedIdentity = Arc<Mutex<Identity>>;

/// An open heartbeat stream.
struct Link {
    requests: mpsc::Sender<GroupHeartbeatRequest>,
    answers: Streaming<GroupHeartbeatResponse>,
}

/// The heartbeat task: the membership, the stream, and the channels to the consumer.
struct Heartbeat {
    membership: Membership,
    coordinator: Arc<Coordinator>,
    identity: SharedIdentity,
    updates: mpsc::UnboundedSender<Update>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// The open stream, if any.
    link: Option<Link>,
    /// Opening a stream (finding the coordinator first), while there is none.
    connecting: Option<BoxFuture<'static, Result<Link>>>,
    /// When the next connect may start.
    retry_at: Instant,
    /// Consecutive failures (connects, refusals), for the back-off.
    failures: u32,
    /// Who waits for the leave to finish.
    leave_replies: Vec<oneshot::Sender<()>>,
    /// When an unanswered leave is given up.
    leave_deadline: Option<Instant>,
}

/// What the task does after an event.
enum Next {
    Continue,
    /// Give the stream up and connect again after this long.
    Reconnect(Duration),
    Stop,
}

/// Starts the heartbeat task of a new member of `config.group_id`: a fresh member id, epoch
/// 0, written to `identity`. Returns the consumer's ends of its channels.
pub(crate) fn spawn(
    config: &GroupConsumerConfig,
    coordinator: &Arc<Coordinator>,
    identity: &SharedIdentity,
) -> (
    mpsc::UnboundedSender<Command>,
    mpsc::UnboundedReceiver<Update>,
) {
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (updates, updates_rx) = mpsc::unbounded_channel();
    let member_id = new_member_id();
    *identity.lock().expect("identity lock poisoned") = Identity {
        member_id: member_id.clone(),
        epoch: 0,
        call_timeout: None,
    };
    let membership = Membership::new(
        config.group_id.clone(),
        member_id,
        config.instance_id.clone(),
        config.session_timeout,
        coordinator.client().config().request_timeout,
        std::time::Instant::now(),
    );
    let task = Heartbeat {
        membership,
        coordinator: Arc::clone(coordinator),
        identity: Arc::clone(identity),
        updates,
        commands,
        link: None,
        connecting: None,
        retry_at: Instant::now(),
        failures: 0,
        leave_replies: Vec::new(),
        leave_deadline: None,
    };
    tokio::spawn(task.run());
    (commands_tx, updates_rx)
}

impl Heartbeat {
    /// Runs until the member left, the consumer is gone, or the membership failed.
    async fn run(mut self) {
        loop {
            if self.leave_deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::debug!(
                    group = self.coordinator.group(),
                    "leave unanswered; giving up"
                );
                break;
            }
            let next = if self.link.is_some() {
                self.step_connected().await
            } else if self.membership.is_leaving() {
                // No coordinator to tell: the session timeout will remove the member.
                Next::Stop
            } else {
                self.step_disconnected().await
            };
            match next {
                Next::Continue => {}
                Next::Reconnect(after) => {
                    self.membership.on_stream_closed();
                    self.link = None;
                    self.connecting = None;
                    self.retry_at = Instant::now() + after;
                }
                Next::Stop => break,
            }
        }
        for reply in self.leave_replies.drain(..) {
            let _ = reply.send(());
        }
    }

    /// Sends the heartbeat due, if any, then waits for a command, an answer or a timer.
    async fn step_connected(&mut self) -> Next {
        let up = self.link.as_mut().expect("called with a stream");
        if let Some(request) = self.membership.request(std::time::Instant::now())
            && up.requests.try_send(request).is_err()
        {
            // The stream's sending half is gone: the call ended.
            return Next::Reconnect(Duration::ZERO);
        }
        let wake = Instant::from_std(self.membership.next_wakeup());
        let listening = !self.membership.is_leaving();
        tokio::select! {
            command = self.commands.recv(), if listening => self.command(command),
            answer = up.answers.next() => self.answer(answer),
            () = sleep_until(wake) => self.tick(),
        }
    }

    /// Waits for the stream to open, or a command.
    async fn step_disconnected(&mut self) -> Next {
        let deadline = self.membership.call_timeout();
        let connect = self.connecting.get_or_insert_with(|| {
            Box::pin(connect(
                Arc::clone(&self.coordinator),
                self.retry_at,
                deadline,
            ))
        });
        tokio::select! {
            command = self.commands.recv() => self.command(command),
            result = connect => {
                self.connecting = None;
                match result {
                    Ok(up) => {
                        self.membership.on_stream_closed();
                        self.link = Some(up);
                        Next::Continue
                    }
                    Err(e) => self.connect_failed(&e),
                }
            }
        }
    }

    fn command(&mut self, command: Option<Command>) -> Next {
        match command {
            Some(Command::Subscribe(topics)) => self.membership.on_subscribe(topics),
            Some(Command::Owned { losses, owned }) => self.membership.on_owned(losses, owned),
            Some(Command::Leave(reply)) => {
                self.leave_replies.push(reply);
                self.start_leaving();
            }
            // The consumer was dropped without closing: leave, best effort.
            None => self.start_leaving(),
        }
        Next::Continue
    }

    fn start_leaving(&mut self) {
        self.membership.leave();
        self.leave_deadline
            .get_or_insert_with(|| Instant::now() + LEAVE_WAIT);
    }

    fn answer(
        &mut self,
        answer: Option<std::result::Result<GroupHeartbeatResponse, tonic::Status>>,
    ) -> Next {
        let now = Instant::now().into_std();
        match answer {
            Some(Ok(answer)) => {
                let outcome = self.membership.on_answer(answer, now);
                self.publish_identity();
                match outcome {
                    Outcome::Answered(assignment) => {
                        self.failures = 0;
                        if let Some(a) = assignment {
                            let _ = self.updates.send(Update::Assignment(a));
                        }
                        Next::Continue
                    }
                    Outcome::Lost => {
                        tracing::info!(
                            group = self.coordinator.group(),
                            "member fenced: its partitions are lost; rejoining"
                        );
                        let _ = self.updates.send(Update::Lost);
                        Next::Continue
                    }
                    Outcome::Retry(e) => {
                        self.failures += 1;
                        tracing::warn!(group = self.coordinator.group(), error = %e, "heartbeat refused; retrying");
                        // At least a moment: the same coordinator refused the same heartbeat.
                        let backoff = self
                            .retry_delay()
                            .max(self.coordinator.client().config().retry_backoff);
                        self.membership.hold((Instant::now() + backoff).into_std());
                        Next::Continue
                    }
                    Outcome::Fatal(e) => {
                        let _ = self.updates.send(Update::Fatal(e));
                        Next::Stop
                    }
                    Outcome::Left => Next::Stop,
                }
            }
            Some(Err(status)) => {
                let e = Error::from_status(status);
                if self.membership.is_leaving() {
                    return Next::Stop;
                }
                self.failures += 1;
                let hinted = self.coordinator.forget(&e);
                tracing::debug!(group = self.coordinator.group(), error = %e, "heartbeat stream failed");
                Next::Reconnect(if hinted {
                    Duration::ZERO
                } else {
                    self.retry_delay()
                })
            }
            None => {
                if self.membership.is_leaving() {
                    return Next::Stop;
                }
                // The coordinator ended the stream (it is shutting down, say): find it again.
                self.coordinator.reset();
                self.failures += 1;
                Next::Reconnect(self.retry_delay())
            }
        }
    }

    fn tick(&mut self) -> Next {
        let now = Instant::now().into_std();
        if self.membership.answer_overdue(now) {
            // Dead, stopped or cut off: look for the coordinator again, at once.
            tracing::debug!(group = self.coordinator.group(), "heartbeat answer overdue");
            self.coordinator.reset();
            self.failures += 1;
            return Next::Reconnect(self.retry_delay());
        }
        Next::Continue
    }

    /// The pause before the next attempt, after `self.failures` failures.
    fn retry_delay(&self) -> Duration {
        let config = self.coordinator.client().config();
        self.membership
            .retry_delay(self.failures, |n| config.backoff(n))
    }

    fn connect_failed(&mut self, e: &Error) -> Next {
        if matches!(e, Error::InvalidArgument { .. }) {
            let _ = self.updates.send(Update::Fatal(e.clone()));
            return Next::Stop;
        }
        self.failures += 1;
        let hinted = self.coordinator.forget(e);
        tracing::debug!(group = self.coordinator.group(), error = %e, "cannot reach the coordinator");
        Next::Reconnect(if hinted {
            Duration::ZERO
        } else {
            self.retry_delay()
        })
    }

    fn publish_identity(&self) {
        let mut identity = self.identity.lock().expect("identity lock poisoned");
        identity.member_id = self.membership.member_id().to_owned();
        identity.epoch = self.membership.epoch();
        identity.call_timeout = Some(self.membership.call_timeout());
    }
}

/// Opens a heartbeat stream to the coordinator, not before `at`; each step (finding the
/// coordinator on one broker, opening the stream) within `deadline`.
async fn connect(coordinator: Arc<Coordinator>, at: Instant, deadline: Duration) -> Result<Link> {
    sleep_until(at).await;
    let addr = coordinator.find_within(deadline).await?;
    let client = coordinator.client();
    let mut groups = client.groups_client(client.channel(&addr)?);
    let (requests, outgoing) = mpsc::channel(4);
    let answers =
        match tokio::time::timeout(deadline, groups.heartbeat(ReceiverStream::new(outgoing))).await
        {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(Error::from_status(status)),
            Err(_) => return Err(Error::Timeout(deadline)),
        };
    Ok(Link { requests, answers })
}
