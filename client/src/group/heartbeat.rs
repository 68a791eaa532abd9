//! The member's heartbeat task: the async shell around [`Membership`]. It holds the
//! `Groups/Heartbeat` stream to the coordinator, sends what the membership says when it says,
//! passes each answer's meaning to the [`GroupConsumer`](super::GroupConsumer) and keeps
//! the member id and epoch where commits read them.
//!
//! It runs on its own so that heartbeats keep going while the application is busy with a
//! record: a slow application keeps its partitions; only a revocation waits for it.
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

use super::TopicPartition;
use super::coordinator::Coordinator;
use super::member::{Membership, Outcome};
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
}

pub(crate) type SharedIdentity = Arc<Mutex<Identity>>;

/// An open heartbeat stream.
struct Link {
    requests: mpsc::Sender<GroupHeartbeatRequest>,
    answers: Streaming<GroupHeartbeatResponse>,
}

/// The heartbeat task's state.
pub(crate) struct Heartbeat {
    pub membership: Membership,
    pub coordinator: Arc<Coordinator>,
    pub identity: SharedIdentity,
    pub updates: mpsc::UnboundedSender<Update>,
    pub commands: mpsc::UnboundedReceiver<Command>,
}

/// What the task does after an event.
enum Next {
    Continue,
    /// Give the stream up and connect again after this long.
    Reconnect(Duration),
    Stop,
}

impl Heartbeat {
    /// Runs until the member left, the consumer is gone, or the membership failed.
    pub async fn run(mut self) {
        let mut link: Option<Link> = None;
        let mut connecting: Option<BoxFuture<'static, Result<Link>>> = None;
        let mut retry_at = Instant::now();
        // Consecutive failures (connects, refusals), for the back-off.
        let mut failures: u32 = 0;
        let mut leave_replies: Vec<oneshot::Sender<()>> = Vec::new();
        let mut leave_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if leave_deadline.is_some_and(|d| now >= d) {
                tracing::debug!(
                    group = self.coordinator.group(),
                    "leave unanswered; giving up"
                );
                break;
            }
            let next = if let Some(up) = link.as_mut() {
                if let Some(request) = self.membership.request(now.into_std())
                    && up.requests.try_send(request).is_err()
                {
                    // The stream's sending half is gone: the call ended.
                    self.membership.on_stream_closed();
                    link = None;
                    retry_at = now;
                    continue;
                }
                let wake = Instant::from_std(self.membership.next_wakeup());
                let listening = !self.membership.is_leaving();
                tokio::select! {
                    command = self.commands.recv(), if listening => {
                        self.command(command, &mut leave_replies, &mut leave_deadline)
                    }
                    answer = up.answers.next() => self.answer(answer, &mut failures),
                    () = sleep_until(wake) => self.tick(),
                }
            } else {
                if self.membership.is_leaving() {
                    // No coordinator to tell: the session timeout will remove the member.
                    break;
                }
                let connect = connecting.get_or_insert_with(|| {
                    Box::pin(connect(Arc::clone(&self.coordinator), retry_at))
                });
                let session = self.membership.session_deadline().map(Instant::from_std);
                tokio::select! {
                    command = self.commands.recv() => {
                        self.command(command, &mut leave_replies, &mut leave_deadline)
                    }
                    () = sleep_until(session.unwrap_or(now)), if session.is_some() => self.tick(),
                    result = connect => {
                        connecting = None;
                        match result {
                            Ok(up) => {
                                self.membership.on_stream_closed();
                                link = Some(up);
                                Next::Continue
                            }
                            Err(e) => self.connect_failed(&e, &mut failures),
                        }
                    }
                }
            };
            match next {
                Next::Continue => {}
                Next::Reconnect(after) => {
                    self.membership.on_stream_closed();
                    link = None;
                    connecting = None;
                    retry_at = Instant::now() + after;
                }
                Next::Stop => break,
            }
        }
        for reply in leave_replies {
            let _ = reply.send(());
        }
    }

    fn command(
        &mut self,
        command: Option<Command>,
        leave_replies: &mut Vec<oneshot::Sender<()>>,
        leave_deadline: &mut Option<Instant>,
    ) -> Next {
        match command {
            Some(Command::Subscribe(topics)) => self.membership.on_subscribe(topics),
            Some(Command::Owned { losses, owned }) => self.membership.on_owned(losses, owned),
            Some(Command::Leave(reply)) => {
                leave_replies.push(reply);
                self.start_leaving(leave_deadline);
            }
            // The consumer was dropped without closing: leave, best effort.
            None => self.start_leaving(leave_deadline),
        }
        Next::Continue
    }

    fn start_leaving(&mut self, leave_deadline: &mut Option<Instant>) {
        self.membership.leave();
        leave_deadline.get_or_insert_with(|| Instant::now() + LEAVE_WAIT);
    }

    fn answer(
        &mut self,
        answer: Option<std::result::Result<GroupHeartbeatResponse, tonic::Status>>,
        failures: &mut u32,
    ) -> Next {
        let now = Instant::now().into_std();
        match answer {
            Some(Ok(answer)) => {
                let outcome = self.membership.on_answer(answer, now);
                self.publish_identity();
                match outcome {
                    Outcome::Answered(assignment) => {
                        *failures = 0;
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
                        *failures += 1;
                        tracing::warn!(group = self.coordinator.group(), error = %e, "heartbeat refused; retrying");
                        let backoff = self.coordinator.client().config().backoff(*failures);
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
                *failures += 1;
                let hinted = self.coordinator.forget(&e);
                tracing::debug!(group = self.coordinator.group(), error = %e, "heartbeat stream failed");
                Next::Reconnect(if hinted {
                    Duration::ZERO
                } else {
                    self.coordinator.client().config().backoff(*failures)
                })
            }
            None => {
                if self.membership.is_leaving() {
                    return Next::Stop;
                }
                // The coordinator ended the stream (it is shutting down, say): find it again.
                self.coordinator.reset();
                *failures += 1;
                Next::Reconnect(self.coordinator.client().config().backoff(*failures))
            }
        }
    }

    fn tick(&mut self) -> Next {
        let now = Instant::now().into_std();
        if let Some(Outcome::Lost) = self.membership.on_tick(now) {
            tracing::warn!(
                group = self.coordinator.group(),
                "no heartbeat answer for a session timeout: partitions lost; rejoining"
            );
            self.publish_identity();
            let _ = self.updates.send(Update::Lost);
            return Next::Reconnect(Duration::ZERO);
        }
        if self.membership.answer_overdue(now) {
            tracing::debug!(group = self.coordinator.group(), "heartbeat answer overdue");
            self.coordinator.reset();
            return Next::Reconnect(Duration::ZERO);
        }
        Next::Continue
    }

    fn connect_failed(&mut self, e: &Error, failures: &mut u32) -> Next {
        if matches!(e, Error::InvalidArgument { .. }) {
            let _ = self.updates.send(Update::Fatal(e.clone()));
            return Next::Stop;
        }
        *failures += 1;
        let hinted = self.coordinator.forget(e);
        tracing::debug!(group = self.coordinator.group(), error = %e, "cannot reach the coordinator");
        Next::Reconnect(if hinted {
            Duration::ZERO
        } else {
            self.coordinator.client().config().backoff(*failures)
        })
    }

    fn publish_identity(&self) {
        let mut identity = self.identity.lock().expect("identity lock poisoned");
        identity.member_id = self.membership.member_id().to_owned();
        identity.epoch = self.membership.epoch();
    }
}

/// Opens a heartbeat stream to the coordinator, not before `at`.
async fn connect(coordinator: Arc<Coordinator>, at: Instant) -> Result<Link> {
    sleep_until(at).await;
    let mut client = coordinator.groups().await?;
    let (requests, outgoing) = mpsc::channel(4);
    let answers = coordinator
        .client()
        .timed(client.heartbeat(ReceiverStream::new(outgoing)))
        .await?;
    Ok(Link { requests, answers })
}
