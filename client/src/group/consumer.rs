//! [`GroupConsumer`]: the application's side of a group member. It applies the assignments the
//! heartbeat task passes on (revoke, then assign), reads owned partitions through a simple
//! [`Consumer`], tracks how far the application got, and commits it.
//!
//! Everything happens when the stream is polled (or in [`GroupConsumer::commit`] and
//! [`GroupConsumer::close`]): one step at a time, with the lookup of where new partitions start
//! waited for, and commits running in the background (`committer`): handing out records never
//! waits on the coordinator. Calls in progress are kept in the consumer so that dropping a
//! `next()` future loses nothing.

use std::collections::{BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

use super::committer::{CommitFailure, Committer};
use super::coordinator::Start;
use super::heartbeat::{self, Command, Identity, LEAVE_WAIT, SharedIdentity, Update};
use super::progress::{Progress, diff};
use super::{Coordinator, GroupConsumerConfig, GroupEvent, TopicPartition};
use crate::client::Client;
use crate::consumer::{Consumer, ConsumerConfig};
use crate::error::{Error, Result};

/// A member of a consumer group: subscribe, then read its [`GroupEvent`]s as a [`Stream`].
/// Made by [`Client::group_consumer`]. See the [module docs](crate::group) for what it
/// guarantees.
///
/// Must be used inside a tokio runtime: [`GroupConsumer::subscribe`] starts the heartbeat task.
pub struct GroupConsumer {
    config: GroupConsumerConfig,
    coordinator: Arc<Coordinator>,
    /// The member id and epoch, kept current by the heartbeat task; commits read them.
    identity: SharedIdentity,
    /// The heartbeat task's channels; `None` until the first subscribe, and after a failure.
    member: Option<MemberTask>,
    /// Reads the owned partitions.
    fetcher: Consumer,
    /// Owned partitions, positions, committed offsets.
    progress: Progress,
    /// The latest assignment from the coordinator: what the member should own.
    target: BTreeSet<TopicPartition>,
    /// Losses applied so far: the ownership generation reported with `owned`.
    losses: u64,
    /// Events to yield before anything else.
    events: VecDeque<GroupEvent>,
    /// Partitions whose `Revoked` went out: committed (auto) and released at the next poll.
    revoking: Option<BTreeSet<TopicPartition>>,
    /// The lookup of where new partitions start, if one is in progress: waited for.
    op: Option<Op>,
    /// The commit running in the background, and the revoked partitions waiting for it.
    committer: Committer,
    /// The next auto-commit; `None` without auto-commit or before subscribing.
    auto_commit: Option<Pin<Box<Sleep>>>,
    /// The membership failed for good: the stream has ended.
    failed: bool,
}

impl std::fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("config", &self.config)
            .field("owned", &self.progress)
            .field("target", &self.target)
            .field("revoking", &self.revoking)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// The consumer's ends of its heartbeat task's channels.
struct MemberTask {
    commands: mpsc::UnboundedSender<Command>,
    updates: mpsc::UnboundedReceiver<Update>,
}

/// A call the stream waits for before anything else: looking up where newly assigned
/// partitions start.
struct Op(BoxFuture<'static, Result<Vec<Start>>>);

impl Op {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Vec<Start>>> {
        self.0.poll_unpin(cx)
    }
}

impl Client {
    /// A member of the group `config.group_id`, not yet joined: call
    /// [`GroupConsumer::subscribe`], then poll it.
    pub fn group_consumer(&self, config: GroupConsumerConfig) -> GroupConsumer {
        let fetcher = self.consumer(ConsumerConfig {
            max_wait: config.max_wait,
            max_bytes: config.max_bytes,
            offset_reset: config.offset_reset,
            partition_eof: config.partition_eof,
            ..ConsumerConfig::default()
        });
        GroupConsumer {
            coordinator: Arc::new(Coordinator::new(self.clone(), config.group_id.clone())),
            config,
            identity: SharedIdentity::default(),
            member: None,
            fetcher,
            progress: Progress::default(),
            target: BTreeSet::new(),
            losses: 0,
            events: VecDeque::new(),
            revoking: None,
            op: None,
            committer: Committer::default(),
            auto_commit: None,
            failed: false,
        }
    }
}

impl GroupConsumer {
    /// Subscribes to `topics` (replacing any earlier subscription); the first call joins the
    /// group. Topics that do not exist yet are assigned once they do.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (it starts the heartbeat task).
    pub fn subscribe<I, S>(&mut self, topics: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        topics.sort();
        topics.dedup();
        if self.failed {
            return;
        }
        if self.auto_commit.is_none()
            && let Some(every) = self.config.auto_commit
        {
            self.auto_commit = Some(Box::pin(tokio::time::sleep(every)));
        }
        let member = self.member.get_or_insert_with(|| {
            let (commands, updates) =
                heartbeat::spawn(&self.config, &self.coordinator, &self.identity);
            MemberTask { commands, updates }
        });
        let _ = member.commands.send(Command::Subscribe(topics));
    }

    /// The group this consumer is a member of.
    pub fn group_id(&self) -> &str {
        &self.config.group_id
    }

    /// The member id (chosen by this consumer when it was made, or by the coordinator).
    pub fn member_id(&self) -> String {
        self.identity().member_id
    }

    /// The member epoch: 0 until the coordinator answered the join.
    pub fn member_epoch(&self) -> i32 {
        self.identity().epoch
    }

    /// The partitions this consumer owns now (revoked ones until they are released), in
    /// topic and partition order.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.progress.owned().into_iter().collect()
    }

    /// What a commit of `topic`/`partition` would store, if owned: the offset after the last
    /// record handed out, or with [`GroupConsumerConfig::auto_store`] off, the offset stored.
    pub fn position(&self, topic: &str, partition: u32) -> Option<i64> {
        self.progress.position(topic, partition)
    }

    /// How many records the stream can yield without waiting: an application that buffers
    /// its output can flush when this is 0.
    pub fn buffered_records(&self) -> usize {
        self.fetcher.buffered_len()
    }

    /// Commits, for every owned partition, the offset after the last record the stream
    /// handed out (only partitions whose position moved since their last commit).
    ///
    /// # Errors
    ///
    /// [`Error::GroupConsumerClosed`] after a fatal error; the coordinator's refusal:
    /// [`Error::PartitionNotAssigned`], [`Error::UnknownMemberId`] or
    /// [`Error::FencedMemberEpoch`] when the partitions were lost meanwhile (the stream then
    /// yields [`GroupEvent::Lost`]), [`Error::OffsetBehindCommitted`]; transport errors after
    /// the client's retries. Nothing is committed on error (commits are all or nothing).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled commit may or may not have been stored, and the next commit
    /// sends the same positions or later ones.
    ///
    /// This waits for the coordinator; [`GroupConsumer::commit_in_background`] does not.
    pub async fn commit(&mut self) -> Result<()> {
        self.settle().await;
        if self.failed {
            return Err(Error::GroupConsumerClosed);
        }
        let offsets = self.progress.uncommitted(None);
        if offsets.is_empty() {
            return Ok(());
        }
        let committed = Arc::clone(&self.coordinator)
            .commit(Arc::clone(&self.identity), offsets)
            .await?;
        self.progress.committed(&committed);
        Ok(())
    }

    /// Starts a commit of every owned partition's position (as [`GroupConsumer::commit`]) and
    /// returns at once: the commit runs while the stream is polled, which goes on handing out
    /// records meanwhile. A commit that fails is reported by the stream as
    /// [`GroupEvent::CommitFailed`]. If a commit is already running, another one follows it
    /// with the positions of then.
    pub fn commit_in_background(&mut self) {
        if self.failed {
            return;
        }
        if self.committer.is_running() {
            self.committer.want();
        } else {
            self.start_commit();
        }
    }

    /// Stores, per partition, the offset after the last record the application finished
    /// (Kafka's `store_offsets`): what the next commit, by hand or automatic, stores. Meant for
    /// [`GroupConsumerConfig::auto_store`] off, when records are processed elsewhere. An offset
    /// behind the partition's stored one is ignored (stored offsets only move forward).
    ///
    /// # Errors
    ///
    /// [`Error::PartitionNotAssigned`] for a partition this member does not own (the others
    /// are stored).
    pub fn store_offsets(
        &mut self,
        offsets: impl IntoIterator<Item = (TopicPartition, i64)>,
    ) -> Result<()> {
        let mut refused = None;
        for (tp, next) in offsets {
            if !self.progress.store(&tp, next) {
                refused.get_or_insert(tp);
            }
        }
        match refused {
            Some(tp) => Err(Error::PartitionNotAssigned {
                topic: tp.topic,
                partition: tp.partition,
                status: None,
            }),
            None => Ok(()),
        }
    }

    /// Commits the given offsets now (rdkafka's `commit(tpl)`): for each partition, the
    /// offset after the last record the application finished. They are stored first (see
    /// [`GroupConsumer::store_offsets`]), so a later automatic commit does not move them back.
    ///
    /// # Errors
    ///
    /// As [`GroupConsumer::store_offsets`] (nothing is committed then), and as
    /// [`GroupConsumer::commit`].
    ///
    /// # Cancel safety
    ///
    /// As [`GroupConsumer::commit`].
    pub async fn commit_offsets(
        &mut self,
        offsets: impl IntoIterator<Item = (TopicPartition, i64)>,
    ) -> Result<()> {
        self.settle().await;
        if self.failed {
            return Err(Error::GroupConsumerClosed);
        }
        let offsets: Vec<(TopicPartition, i64)> = offsets.into_iter().collect();
        self.store_offsets(offsets.iter().cloned())?;
        if offsets.is_empty() {
            return Ok(());
        }
        let committed = Arc::clone(&self.coordinator)
            .commit(Arc::clone(&self.identity), offsets)
            .await?;
        self.progress.committed(&committed);
        Ok(())
    }

    /// Commits (with auto-commit on) and leaves the group, so that its partitions move to
    /// other members at once. A static member leaves temporarily: its partitions wait for
    /// its instance id until the session timeout.
    ///
    /// # Errors
    ///
    /// The final commit's error, as [`GroupConsumer::commit`]; the member leaves anyway.
    pub async fn close(mut self) -> Result<()> {
        self.settle().await;
        let committed = if self.config.auto_commit.is_some() && !self.failed {
            self.commit().await
        } else {
            Ok(())
        };
        if let Some(member) = self.member.take() {
            let (reply, left) = oneshot::channel();
            if member.commands.send(Command::Leave(reply)).is_ok() {
                let _ = tokio::time::timeout(LEAVE_WAIT + Duration::from_secs(1), left).await;
            }
        }
        committed
    }

    fn identity(&self) -> Identity {
        self.identity
            .lock()
            .expect("identity lock poisoned")
            .clone()
    }

    /// Finishes the calls in progress and applies what the heartbeat task reported, so that a
    /// commit never names a partition already known lost.
    async fn settle(&mut self) {
        if let Some(op) = self.op.as_mut() {
            let done = futures::future::poll_fn(|cx| op.poll(cx)).await;
            self.op = None;
            if let Err(e) = self.started(done) {
                tracing::debug!(group = self.config.group_id, error = %e, "starting partitions failed; retried on the next poll");
            }
        }
        while self.committer.is_running() {
            let outcome = futures::future::poll_fn(|cx| self.committer.poll(cx)).await;
            self.commit_finished(outcome);
        }
        loop {
            let update = match self.member.as_mut().map(|m| m.updates.try_recv()) {
                Some(Ok(update)) => Some(update),
                Some(Err(mpsc::error::TryRecvError::Disconnected)) => None,
                Some(Err(mpsc::error::TryRecvError::Empty)) | None => break,
            };
            if let Err(e) = self.apply(update) {
                tracing::warn!(group = self.config.group_id, error = %e, "group membership failed");
                break;
            }
        }
    }

    /// One step of the stream: see the module docs for the order.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<GroupEvent>>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(Some(Ok(event)));
            }
            if self.failed {
                return Poll::Ready(None);
            }
            if let Poll::Ready(outcome) = self.committer.poll(cx) {
                self.commit_finished(outcome);
                continue;
            }
            if let Some(op) = self.op.as_mut() {
                let done = ready!(op.poll(cx));
                self.op = None;
                if let Err(e) = self.started(done) {
                    return Poll::Ready(Some(Err(e)));
                }
                continue;
            }
            if self.member.is_none() {
                // Not subscribed: nothing will ever come.
                return Poll::Ready(None);
            }
            if let Err(e) = self.poll_updates(cx) {
                return Poll::Ready(Some(Err(e)));
            }
            if !self.events.is_empty() {
                continue;
            }
            // The application had its chance to finish with revoked partitions.
            if let Some(revoked) = self.revoking.take() {
                self.release(revoked);
                continue;
            }
            if self.reconcile() || self.auto_commit_due(cx) {
                continue;
            }
            return match self.fetcher.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(record))) => {
                    if self.config.auto_store {
                        self.progress
                            .delivered(&record.topic, record.partition, record.offset);
                    }
                    Poll::Ready(Some(Ok(GroupEvent::Record(record))))
                }
                Poll::Ready(Some(Err(Error::PartitionEof {
                    topic,
                    partition,
                    offset,
                }))) => Poll::Ready(Some(Ok(GroupEvent::PartitionEof {
                    partition: TopicPartition::new(topic, partition),
                    offset,
                }))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                // Nothing owned, or nothing fetched yet: the heartbeat task, the fetches and
                // the auto-commit timer wake this task.
                Poll::Ready(None) | Poll::Pending => Poll::Pending,
            };
        }
    }

    /// Applies every update the heartbeat task has sent.
    fn poll_updates(&mut self, cx: &mut Context<'_>) -> Result<()> {
        while let Some(member) = self.member.as_mut() {
            match member.updates.poll_recv(cx) {
                Poll::Ready(update) => self.apply(update)?,
                Poll::Pending => break,
            }
        }
        Ok(())
    }

    /// Applies one update; `None` means the heartbeat task is gone.
    fn apply(&mut self, update: Option<Update>) -> Result<()> {
        match update {
            Some(Update::Assignment(assignment)) => {
                self.target = assignment;
                Ok(())
            }
            Some(Update::Lost) => {
                self.lose();
                Ok(())
            }
            Some(Update::Fatal(e)) => {
                self.fail();
                Err(e)
            }
            None => {
                self.fail();
                Err(Error::GroupConsumerClosed)
            }
        }
    }

    /// Drops every partition without committing (the member was fenced or timed out).
    fn lose(&mut self) {
        let lost = self.progress.clear();
        for tp in &lost {
            self.fetcher.unassign(&tp.topic, [tp.partition]);
        }
        self.revoking = None;
        self.committer.forget_waiting();
        self.target.clear();
        self.losses += 1;
        self.report_owned();
        if !lost.is_empty() {
            self.events
                .push_back(GroupEvent::Lost(lost.into_iter().collect()));
        }
    }

    /// Ends the stream for good.
    fn fail(&mut self) {
        self.failed = true;
        self.member = None;
        for tp in self.progress.clear() {
            self.fetcher.unassign(&tp.topic, [tp.partition]);
        }
        self.revoking = None;
        self.committer.forget_waiting();
    }

    /// Takes the next step towards the target: revoke what is no longer assigned, else start
    /// what is newly assigned. Returns whether it did anything.
    fn reconcile(&mut self) -> bool {
        let mut steps = diff(&self.progress.owned(), &self.target);
        // Revoked already, waiting for their commit before they are released.
        steps
            .revoke
            .retain(|tp| !self.committer.releasing().contains(tp));
        if !steps.revoke.is_empty() {
            for tp in &steps.revoke {
                self.fetcher.unassign(&tp.topic, [tp.partition]);
            }
            self.events
                .push_back(GroupEvent::Revoked(steps.revoke.iter().cloned().collect()));
            self.revoking = Some(steps.revoke);
            return true;
        }
        if !steps.assign.is_empty() {
            self.op = Some(Op(Box::pin(
                Arc::clone(&self.coordinator).starts(self.config.offset_reset, steps.assign),
            )));
            return true;
        }
        false
    }

    /// Releases revoked partitions once the commit carrying their positions finished: the
    /// one running (a commit the application started after `Revoked`, say), or with
    /// auto-commit a new one; without either, at once.
    fn release(&mut self, revoked: BTreeSet<TopicPartition>) {
        self.committer.release_later(revoked);
        if self.committer.is_running() {
            if self.config.auto_commit.is_some() {
                self.committer.want();
            }
        } else if self.config.auto_commit.is_some() {
            // Only the revoked partitions: their release waits for nothing else.
            let revoked = self.committer.releasing().clone();
            self.start_commit_of(Some(&revoked));
        } else {
            self.release_waiting();
        }
    }

    fn release_waiting(&mut self) {
        let revoked = self.committer.take_releasing();
        if !revoked.is_empty() {
            self.progress.remove(&revoked);
            self.report_owned();
        }
    }

    /// Starts a background commit of every owned partition's position, if any moved; with
    /// nothing to commit, releases what waited for a commit.
    fn start_commit(&mut self) {
        self.start_commit_of(None);
    }

    /// [`Self::start_commit`] of the partitions in `only`, when given.
    fn start_commit_of(&mut self, only: Option<&BTreeSet<TopicPartition>>) {
        let offsets = self.progress.uncommitted(only);
        if offsets.is_empty() {
            self.release_waiting();
            return;
        }
        let call = Box::pin(
            Arc::clone(&self.coordinator).commit(Arc::clone(&self.identity), offsets.clone()),
        );
        self.committer.start(call, offsets);
    }

    /// Applies a finished background commit, then starts the one asked for meanwhile or
    /// releases what waited for it.
    fn commit_finished(
        &mut self,
        outcome: std::result::Result<Vec<(TopicPartition, i64)>, CommitFailure>,
    ) {
        match outcome {
            Ok(offsets) => self.progress.committed(&offsets),
            // Not fatal: the positions stay uncommitted and go with the next commit (or, for a
            // revoked partition, the next owner reads them again).
            Err(failure) => {
                tracing::warn!(group = self.config.group_id, %failure, "commit failed");
                self.events.push_back(GroupEvent::CommitFailed(failure));
            }
        }
        if self.committer.take_wanted() {
            self.start_commit();
        } else {
            self.release_waiting();
        }
    }

    /// Starts an auto-commit if one is due (after the running one, if any).
    fn auto_commit_due(&mut self, cx: &mut Context<'_>) -> bool {
        let (Some(timer), Some(every)) = (self.auto_commit.as_mut(), self.config.auto_commit)
        else {
            return false;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        timer.as_mut().reset(Instant::now() + every);
        // Registers the wake-up for the new deadline.
        let _ = timer.as_mut().poll(cx);
        self.commit_in_background();
        // Back to the top of the step, which polls the new commit (registering its wake-up).
        true
    }

    /// Applies a finished lookup of where new partitions start.
    fn started(&mut self, done: Result<Vec<Start>>) -> Result<()> {
        // On error the target still differs, so the next poll tries again.
        let starts = done?;
        let mut assigned = Vec::with_capacity(starts.len());
        for s in starts {
            self.fetcher.seek_to(&s.tp.topic, s.tp.partition, s.next);
            self.progress.start(&s.tp, s.next, s.committed);
            assigned.push(s.tp);
        }
        assigned.sort();
        self.report_owned();
        self.events.push_back(GroupEvent::Assigned(assigned));
        Ok(())
    }

    /// Tells the heartbeat task what is owned now; it heartbeats at once if that changed.
    fn report_owned(&self) {
        if let Some(member) = &self.member {
            let _ = member.commands.send(Command::Owned {
                losses: self.losses,
                owned: self.progress.owned(),
            });
        }
    }
}

impl Stream for GroupConsumer {
    type Item = Result<GroupEvent>;

    /// Yields records and assignment changes. Ends only after a fatal error (a bad group id,
    /// say), or at once when not subscribed. Errors that are not fatal (a fetch that failed
    /// after the client's retries, the lookup of where new partitions start) are yielded and
    /// the stream goes on.
    ///
    /// Cancel safe: state lives in the consumer.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_consumer_can_move_between_tasks() {
        fn send<T: Send>() {}
        send::<GroupConsumer>();
        send::<GroupEvent>();
    }
}
